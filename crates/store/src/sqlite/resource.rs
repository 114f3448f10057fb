//! ARM resources on SQLite.

use async_trait::async_trait;
use keyhaven_core::resource::{ResourceRecord, ResourceStore};
use keyhaven_core::store::StoreResult;
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};

use super::{err, q, SqliteStore};
use crate::sql;

fn resource(r: &Row<'_>) -> rusqlite::Result<ResourceRecord> {
    Ok(ResourceRecord {
        id: r.get(0)?,
        kind: r.get(1)?,
        subscription_id: r.get(2)?,
        resource_group: r.get(3)?,
        name: r.get(4)?,
        location: r.get(5)?,
        tags: r.get(6)?,
        properties: r.get(7)?,
        created: r.get(8)?,
        updated: r.get(9)?,
    })
}

fn resources(
    c: &Connection,
    sql: &str,
    p: &[&dyn rusqlite::ToSql],
) -> StoreResult<Vec<ResourceRecord>> {
    let mut stmt = c.prepare_cached(&q(sql)).map_err(err)?;
    let rows = stmt.query_map(p, resource).map_err(err)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(err)
}

/// Creates or replaces a resource inside a transaction.
pub(super) fn upsert(c: &Connection, r: &ResourceRecord) -> StoreResult<()> {
    c.prepare_cached(&q(sql::UPSERT_RESOURCE))
        .map_err(err)?
        .execute(params![
            r.id.to_ascii_lowercase(),
            r.id,
            r.kind,
            r.subscription_id,
            r.resource_group,
            r.name,
            r.location,
            r.tags,
            r.properties,
            r.created,
            r.updated
        ])
        .map_err(err)?;
    Ok(())
}

#[async_trait]
impl ResourceStore for SqliteStore {
    async fn put_resource(&self, r: &ResourceRecord) -> StoreResult<bool> {
        let r = r.clone();
        self.run(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(err)?;
            let id_lower = r.id.to_ascii_lowercase();
            let existed = tx
                .query_row(&q(sql::RESOURCE_EXISTS), [&id_lower], |_| Ok(()))
                .optional()
                .map_err(err)?
                .is_some();
            upsert(&tx, &r)?;
            tx.commit().map_err(err)?;
            Ok(!existed)
        })
        .await
    }

    async fn get_resource(&self, id: &str) -> StoreResult<Option<ResourceRecord>> {
        let id = id.to_ascii_lowercase();
        self.read(move |c| Ok(resources(c, &sql::select_resources("id_lower = $1"), &[&id])?.pop()))
            .await
    }

    async fn delete_resource(&self, id: &str) -> StoreResult<bool> {
        let id = id.to_ascii_lowercase();
        self.run(move |c| Ok(c.execute(&q(sql::DELETE_RESOURCE), [&id]).map_err(err)? == 1))
            .await
    }

    async fn list_resources(
        &self,
        kind: &str,
        subscription_id: &str,
    ) -> StoreResult<Vec<ResourceRecord>> {
        let (k, s) = (kind.to_owned(), subscription_id.to_owned());
        self.read(move |c| {
            resources(
                c,
                &sql::select_resources("kind = $1 AND subscription_id = $2 ORDER BY id_lower"),
                &[&k, &s],
            )
        })
        .await
    }
}

#[async_trait]
impl keyhaven_core::AuditStore for SqliteStore {
    async fn append_audits(&self, rows: &[keyhaven_core::AuditRow]) -> StoreResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let rows = rows.to_vec();
        // No trigger watches this table: the generation mirror stays.
        self.run_raw(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(err)?;
            {
                let mut stmt = tx.prepare_cached(&q(sql::APPEND_AUDIT)).map_err(err)?;
                for r in &rows {
                    stmt.execute(rusqlite::params![
                        r.vault,
                        r.time,
                        r.operation,
                        r.caller,
                        r.result,
                        r.record
                    ])
                    .map_err(err)?;
                }
            }
            tx.commit().map_err(err)
        })
        .await
    }

    async fn query_audit(&self, query: &keyhaven_core::AuditQuery) -> StoreResult<Vec<String>> {
        let f = query.clone();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&q(sql::QUERY_AUDIT)).map_err(err)?;
            let rows = stmt
                .query_map(
                    rusqlite::params![
                        f.vault,
                        f.from,
                        f.to,
                        f.operation,
                        f.caller,
                        f.result,
                        i64::from(f.limit)
                    ],
                    |r| r.get::<_, String>(0),
                )
                .map_err(err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(err)
        })
        .await
    }

    async fn add_metrics(&self, rows: &[keyhaven_core::MetricRow]) -> StoreResult<()> {
        let mut rows = rows.to_vec();
        rows.sort_by(|a, b| a.key().cmp(&b.key()));
        // No trigger watches this table: the generation mirror stays.
        self.run_raw(move |c| {
            let tx = c
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(err)?;
            {
                let mut stmt = tx.prepare_cached(&q(sql::ADD_METRICS)).map_err(err)?;
                for r in &rows {
                    stmt.execute(rusqlite::params![
                        r.vault,
                        r.minute,
                        r.activity,
                        r.status,
                        r.count,
                        r.latency_ms
                    ])
                    .map_err(err)?;
                }
            }
            tx.commit().map_err(err)
        })
        .await
    }

    async fn forget_metrics(&self, before: i64) -> StoreResult<()> {
        self.run_raw(move |c| {
            c.execute(&q(sql::FORGET_METRICS), [before]).map_err(err)?;
            Ok(())
        })
        .await
    }

    async fn query_metrics(
        &self,
        vault: &str,
        from: i64,
        to: i64,
        grain: i64,
    ) -> StoreResult<Vec<keyhaven_core::MetricRow>> {
        let vault = vault.to_owned();
        let grain = grain.max(1);
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&q(sql::QUERY_METRICS)).map_err(err)?;
            let rows = stmt
                .query_map(rusqlite::params![vault, from, to, grain], |r| {
                    Ok(keyhaven_core::MetricRow::summed(
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                    ))
                })
                .map_err(err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(err)
        })
        .await
    }
}

fn state_row(r: &Row<'_>) -> rusqlite::Result<keyhaven_core::governance::states::StateRow> {
    Ok(keyhaven_core::governance::states::StateRow {
        assignment_id: r.get(0)?,
        reference_id: r.get(1)?,
        resource_id: r.get(2)?,
        component: r.get(3)?,
        compliance: r.get(4)?,
        time: r.get(5)?,
        record: r.get(6)?,
    })
}

fn put_states(
    c: &Connection,
    rows: &[keyhaven_core::governance::states::StateRow],
) -> StoreResult<()> {
    let mut stmt = c.prepare_cached(&q(sql::PUT_POLICY_STATE)).map_err(err)?;
    for r in rows {
        stmt.execute(params![
            r.assignment_id,
            r.reference_id,
            r.resource_id,
            r.component,
            r.compliance,
            r.time,
            r.record
        ])
        .map_err(err)?;
    }
    Ok(())
}

#[async_trait]
impl keyhaven_core::governance::states::PolicyStateStore for SqliteStore {
    async fn put_policy_states(
        &self,
        rows: &[keyhaven_core::governance::states::StateRow],
    ) -> StoreResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let rows = rows.to_vec();
        // No trigger watches this table: the generation mirror stays.
        self.run_raw(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(err)?;
            put_states(&tx, &rows)?;
            tx.commit().map_err(err)
        })
        .await
    }

    async fn replace_policy_states(
        &self,
        assignment_id: &str,
        rows: &[keyhaven_core::governance::states::StateRow],
    ) -> StoreResult<()> {
        let rows = rows.to_vec();
        let id = assignment_id.to_owned();
        self.run_raw(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(err)?;
            tx.execute(&q(sql::CLEAR_POLICY_STATES), [&id])
                .map_err(err)?;
            put_states(&tx, &rows)?;
            tx.commit().map_err(err)
        })
        .await
    }

    async fn list_policy_states(
        &self,
        scope: &str,
        limit: u32,
    ) -> StoreResult<Vec<keyhaven_core::governance::states::StateRow>> {
        let scope = scope.to_ascii_lowercase();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&q(sql::LIST_POLICY_STATES)).map_err(err)?;
            let rows = stmt
                .query_map(params![scope, i64::from(limit)], state_row)
                .map_err(err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(err)
        })
        .await
    }

    async fn forget_policy_states(&self, assignment_id: &str) -> StoreResult<()> {
        let id = assignment_id.to_owned();
        self.run_raw(move |c| {
            c.execute(&q(sql::FORGET_POLICY_STATES), [&id])
                .map_err(err)?;
            Ok(())
        })
        .await
    }
}
