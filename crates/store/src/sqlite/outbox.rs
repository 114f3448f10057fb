//! The outbox of change events on SQLite (one writer: a claim is a plain
//! update of due rows).

use async_trait::async_trait;
use keyhaven_core::events::{ChangeEvent, OutboxItem, OutboxStore, Settle};
use keyhaven_core::store::StoreResult;
use rusqlite::{params, TransactionBehavior};

use super::{err, q, SqliteStore};
use crate::sql;

#[async_trait]
impl OutboxStore for SqliteStore {
    async fn enqueue_events(&self, events: &[ChangeEvent]) -> StoreResult<()> {
        let events = events.to_vec();
        self.run_raw(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(err)?;
            super::record_events(&tx, "", &[], &events)?;
            tx.commit().map_err(err)
        })
        .await
    }

    async fn claim_events(
        &self,
        now: i64,
        lease_until: i64,
        claim: &str,
        limit: u32,
    ) -> StoreResult<Vec<OutboxItem>> {
        let claim = claim.to_owned();
        self.run_raw(move |c| {
            let mut stmt = c.prepare_cached(&q(&sql::claim_events(""))).map_err(err)?;
            let rows = stmt
                .query_map(params![claim, lease_until, now, i64::from(limit)], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                })
                .map_err(err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(err)?;
            Ok(rows
                .into_iter()
                .filter_map(|(id, subscription, body, attempts)| {
                    sql::outbox_item(id, subscription, &body, attempts, &claim)
                })
                .collect())
        })
        .await
    }

    async fn settle_event(&self, item: &OutboxItem, outcome: &Settle) -> StoreResult<bool> {
        let (item, outcome) = (item.clone(), outcome.clone());
        let key = (
            item.event.id.clone(),
            item.subscription.clone(),
            item.claim.clone(),
        );
        self.run_raw(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(err)?;
            let held = match &outcome {
                Settle::Retry { due, last_error } => {
                    tx.execute(
                        &q(sql::RETRY_EVENT),
                        params![key.0, key.1, key.2, due, last_error],
                    )
                    .map_err(err)?
                        == 1
                }
                _ => {
                    tx.execute(&q(sql::DELETE_CLAIMED_EVENT), params![key.0, key.1, key.2])
                        .map_err(err)?
                        == 1
                }
            };
            if held {
                match &outcome {
                    Settle::FanOut(subs) => {
                        let body = item.event.to_json();
                        let mut insert = tx.prepare_cached(&q(sql::INSERT_EVENT)).map_err(err)?;
                        for sub in subs {
                            insert
                                .execute(params![key.0, sub, body, 0i64])
                                .map_err(err)?;
                        }
                    }
                    Settle::DeadLetter(r) => super::resource::upsert(&tx, r)?,
                    Settle::Done | Settle::Retry { .. } => {}
                }
            }
            tx.commit().map_err(err)?;
            Ok(held)
        })
        .await
    }

    async fn outbox_len(&self) -> StoreResult<u64> {
        self.read(|c| {
            let n: i64 = c
                .query_row(&q(sql::OUTBOX_LEN), [], |r| r.get(0))
                .map_err(err)?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }
}
