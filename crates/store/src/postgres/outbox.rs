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
        super::record_events(&tx, "", &[], events).await?;
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
        let stmt = c
            .prepare_cached(&sql::claim_events("FOR UPDATE SKIP LOCKED"))
            .await
            .map_err(err)?;
        let rows = c
            .query(&stmt, &[&claim, &lease_until, &now, &i64::from(limit)])
            .await
            .map_err(err)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let body: String = r.try_get(2).map_err(err)?;
            out.extend(sql::outbox_item(
                r.try_get(0).map_err(err)?,
                r.try_get(1).map_err(err)?,
                &body,
                r.try_get(3).map_err(err)?,
                claim,
            ));
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
            _ => tx
                .execute(sql::DELETE_CLAIMED_EVENT, &[id, sub, claim])
                .await
                .map_err(err)?,
        } == 1;
        if held {
            match outcome {
                Settle::FanOut(subs) => {
                    let body = item.event.to_json();
                    let insert = tx.prepare(sql::INSERT_EVENT).await.map_err(err)?;
                    for s in subs {
                        tx.execute(&insert, &[id, s, &body, &0i64])
                            .await
                            .map_err(err)?;
                    }
                }
                Settle::DeadLetter(r) => super::resource::upsert(&tx, r).await?,
                Settle::Done | Settle::Retry { .. } => {}
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
