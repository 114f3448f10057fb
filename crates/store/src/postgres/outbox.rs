//! The outbox of change events on PostgreSQL: nodes claim due rows with
//! `FOR UPDATE SKIP LOCKED`, so two nodes never hold one row at once.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use keyhaven_core::events::{ChangeEvent, OutboxItem, OutboxStore, Settle};
use keyhaven_core::store::StoreResult;

use super::{err, PostgresStore};
use crate::sql;

#[async_trait]
impl OutboxStore for PostgresStore {
    async fn enqueue_events(&self, events: &[ChangeEvent]) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(err)?;
        super::record_events(&tx, events).await?;
        tx.commit().await.map_err(err)
    }

    async fn claim_events(
        &self,
        now: i64,
        lease_until: i64,
        claim: &str,
        limit: u32,
    ) -> StoreResult<Vec<OutboxItem>> {
        let c = self.client().await?;
        let stmt = c.prepare_cached(sql::PG_CLAIM_EVENTS).await.map_err(err)?;
        let rows = c
            .query(&stmt, &[&claim, &lease_until, &now, &i64::from(limit)])
            .await
            .map_err(err)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let (id, subscription, body): (String, String, String) = (
                r.try_get(0).map_err(err)?,
                r.try_get(1).map_err(err)?,
                r.try_get(2).map_err(err)?,
            );
            let attempts = r.try_get(3).map_err(err)?;
            match sql::outbox_item(&id, subscription.clone(), &body, attempts, claim) {
                Some(item) => out.push(item),
                None => {
                    c.execute(sql::PARK_EVENT, &[&id, &subscription])
                        .await
                        .map_err(err)?;
                }
            }
        }
        Ok(out)
    }

    async fn settle_event(&self, item: &OutboxItem, outcome: &Settle) -> StoreResult<bool> {
        let (id, sub, claim) = (&item.event.id, &item.subscription, &item.claim);
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(err)?;
        let held = match outcome {
            Settle::Retry { due, last_error } => tx
                .execute(sql::RETRY_EVENT, &[id, sub, claim, due, last_error])
                .await
                .map_err(err)?,
            Settle::Release { due } => tx
                .execute(sql::RELEASE_EVENT, &[id, sub, claim, due])
                .await
                .map_err(err)?,
            _ => tx
                .execute(sql::DELETE_CLAIMED_EVENT, &[id, sub, claim])
                .await
                .map_err(err)?,
        } == 1;
        if held {
            match outcome {
                Settle::FanOut(subs) => {
                    let (body, due) = (item.event.to_json(), sql::event_due(&item.event));
                    let insert = tx.prepare(sql::INSERT_EVENT).await.map_err(err)?;
                    for s in subs {
                        tx.execute(&insert, &[id, s, &body, &due])
                            .await
                            .map_err(err)?;
                    }
                }
                Settle::DeadLetter(r) => super::resource::upsert(&tx, r).await?,
                Settle::Done | Settle::Retry { .. } | Settle::Release { .. } => {}
            }
        }
        tx.commit().await.map_err(err)?;
        Ok(held)
    }

    async fn outbox_len(&self) -> StoreResult<u64> {
        let c = self.client().await?;
        let n: i64 = c
            .query_one(sql::OUTBOX_LEN, &[])
            .await
            .map_err(err)?
            .try_get(0)
            .map_err(err)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
