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
            super::record_events(&tx, &events)?;
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
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(err)?;
            let rows = tx
                .prepare_cached(&q(sql::SQLITE_DUE_EVENTS))
                .map_err(err)?
                .query_map(params![now, i64::from(limit)], |r| {
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
            let mut out = Vec::with_capacity(rows.len());
            for (id, subscription, body, attempts) in rows {
                let (stmt, p) =
                    match sql::outbox_item(&id, subscription.clone(), &body, attempts, &claim) {
                        Some(item) => {
                            out.push(item);
                            (
                                sql::SQLITE_CLAIM_EVENT,
                                params![id, subscription, claim, lease_until],
                            )
                        }
                        None => (sql::PARK_EVENT, params![id, subscription]),
                    };
                tx.prepare_cached(&q(stmt))
                    .map_err(err)?
                    .execute(p)
                    .map_err(err)?;
            }
            tx.commit().map_err(err)?;
            Ok(out)
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
                Settle::Release { due } => {
                    tx.execute(&q(sql::RELEASE_EVENT), params![key.0, key.1, key.2, due])
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
                        let (body, due) = (item.event.to_json(), sql::event_due(&item.event));
                        let mut insert = tx.prepare_cached(&q(sql::INSERT_EVENT)).map_err(err)?;
                        for sub in subs {
                            insert
                                .execute(params![key.0, sub, body, due])
                                .map_err(err)?;
                        }
                    }
                    Settle::DeadLetter(r) => super::resource::upsert(&tx, r)?,
                    Settle::Done | Settle::Retry { .. } | Settle::Release { .. } => {}
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
