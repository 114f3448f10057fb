//! ARM resources on PostgreSQL.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use keyhaven_core::resource::{ResourceRecord, ResourceStore};
use keyhaven_core::store::StoreResult;
use tokio_postgres::Row;

use super::{err, PostgresStore, P};
use crate::sql;

fn resource(r: &Row) -> StoreResult<ResourceRecord> {
    Ok(ResourceRecord {
        id: r.try_get(0).map_err(err)?,
        kind: r.try_get(1).map_err(err)?,
        subscription_id: r.try_get(2).map_err(err)?,
        resource_group: r.try_get(3).map_err(err)?,
        name: r.try_get(4).map_err(err)?,
        location: r.try_get(5).map_err(err)?,
        tags: r.try_get(6).map_err(err)?,
        properties: r.try_get(7).map_err(err)?,
        created: r.try_get(8).map_err(err)?,
        updated: r.try_get(9).map_err(err)?,
    })
}

/// Creates or replaces a resource inside a transaction.
pub(super) async fn upsert(
    tx: &tokio_postgres::Transaction<'_>,
    r: &ResourceRecord,
) -> StoreResult<()> {
    tx.execute(
        sql::UPSERT_RESOURCE,
        &[
            &r.id.to_ascii_lowercase(),
            &r.id,
            &r.kind,
            &r.subscription_id,
            &r.resource_group,
            &r.name,
            &r.location,
            &r.tags,
            &r.properties,
            &r.created,
            &r.updated,
        ],
    )
    .await
    .map_err(err)?;
    Ok(())
}

impl PostgresStore {
    async fn resources(&self, q: &str, p: &[P<'_>]) -> StoreResult<Vec<ResourceRecord>> {
        let c = self.client().await?;
        let stmt = c.prepare_cached(q).await.map_err(err)?;
        c.query(&stmt, p)
            .await
            .map_err(err)?
            .iter()
            .map(resource)
            .collect()
    }
}

#[async_trait]
impl ResourceStore for PostgresStore {
    async fn put_resource(&self, r: &ResourceRecord) -> StoreResult<bool> {
        let _authz = self.settings.authz_write();
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(err)?;
        let id_lower = r.id.to_ascii_lowercase();
        let existed = tx
            .query_opt(
                &format!("{} FOR UPDATE", sql::RESOURCE_EXISTS),
                &[&id_lower],
            )
            .await
            .map_err(err)?
            .is_some();
        upsert(&tx, r).await?;
        tx.commit().await.map_err(err)?;
        Ok(!existed)
    }

    async fn get_resource(&self, id: &str) -> StoreResult<Option<ResourceRecord>> {
        let id = id.to_ascii_lowercase();
        Ok(self
            .resources(&sql::select_resources("id_lower = $1"), &[&id])
            .await?
            .pop())
    }

    async fn delete_resource(&self, id: &str) -> StoreResult<bool> {
        let _authz = self.settings.authz_write();
        let c = self.client().await?;
        let id = id.to_ascii_lowercase();
        Ok(c.execute(sql::DELETE_RESOURCE, &[&id]).await.map_err(err)? == 1)
    }

    async fn list_resources(
        &self,
        kind: &str,
        subscription_id: &str,
    ) -> StoreResult<Vec<ResourceRecord>> {
        self.resources(
            &sql::select_resources("kind = $1 AND subscription_id = $2 ORDER BY id_lower"),
            &[&kind, &subscription_id],
        )
        .await
    }
}

#[async_trait]
impl keyhaven_core::AuditStore for PostgresStore {
    async fn append_audits(&self, rows: &[keyhaven_core::AuditRow]) -> StoreResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        // One statement for the batch: column-wise arrays.
        let vaults: Vec<&str> = rows.iter().map(|r| r.vault.as_str()).collect();
        let times: Vec<i64> = rows.iter().map(|r| r.time).collect();
        let ops: Vec<&str> = rows.iter().map(|r| r.operation.as_str()).collect();
        let callers: Vec<&str> = rows.iter().map(|r| r.caller.as_str()).collect();
        let results: Vec<&str> = rows.iter().map(|r| r.result.as_str()).collect();
        let records: Vec<&str> = rows.iter().map(|r| r.record.as_str()).collect();
        let c = self.client().await?;
        c.execute(
            sql::APPEND_AUDITS,
            &[&vaults, &times, &ops, &callers, &results, &records],
        )
        .await
        .map_err(err)?;
        Ok(())
    }

    async fn query_audit(&self, q: &keyhaven_core::AuditQuery) -> StoreResult<Vec<String>> {
        let c = self.client().await?;
        c.query(
            sql::QUERY_AUDIT,
            &[
                &q.vault,
                &q.from,
                &q.to,
                &q.operation,
                &q.caller,
                &q.result,
                &i64::from(q.limit),
            ],
        )
        .await
        .map_err(err)?
        .iter()
        .map(|r| r.try_get::<_, String>(0).map_err(err))
        .collect()
    }

    async fn add_metrics(&self, rows: &[keyhaven_core::MetricRow]) -> StoreResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut rows = rows.to_vec();
        // One statement, rows in key order.
        rows.sort_by(|a, b| a.key().cmp(&b.key()));
        let vaults: Vec<&str> = rows.iter().map(|r| r.vault.as_str()).collect();
        let minutes: Vec<i64> = rows.iter().map(|r| r.minute).collect();
        let activities: Vec<&str> = rows.iter().map(|r| r.activity.as_str()).collect();
        let statuses: Vec<i64> = rows.iter().map(|r| r.status).collect();
        let counts: Vec<i64> = rows.iter().map(|r| r.count).collect();
        let latencies: Vec<i64> = rows.iter().map(|r| r.latency_ms).collect();
        let c = self.client().await?;
        c.execute(
            sql::ADD_METRICS_BATCH,
            &[
                &vaults,
                &minutes,
                &activities,
                &statuses,
                &counts,
                &latencies,
            ],
        )
        .await
        .map_err(err)?;
        Ok(())
    }

    async fn forget_metrics(&self, before: i64) -> StoreResult<()> {
        let c = self.client().await?;
        c.execute(sql::FORGET_METRICS, &[&before])
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn query_metrics(
        &self,
        vault: &str,
        from: i64,
        to: i64,
        grain: i64,
    ) -> StoreResult<Vec<keyhaven_core::MetricRow>> {
        let c = self.client().await?;
        c.query(sql::QUERY_METRICS, &[&vault, &from, &to, &grain.max(1)])
            .await
            .map_err(err)?
            .iter()
            .map(|r| {
                Ok(keyhaven_core::MetricRow::summed(
                    r.try_get(0)?,
                    r.try_get(1)?,
                    r.try_get(2)?,
                    r.try_get(3)?,
                    r.try_get(4)?,
                ))
            })
            .collect::<Result<Vec<_>, tokio_postgres::Error>>()
            .map_err(err)
    }
}

#[async_trait]
impl keyhaven_core::governance::states::PolicyStateStore for PostgresStore {
    async fn put_policy_states(
        &self,
        rows: &[keyhaven_core::governance::states::StateRow],
    ) -> StoreResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        self.write_states(None, rows).await
    }

    async fn replace_policy_states(
        &self,
        assignment_id: &str,
        rows: &[keyhaven_core::governance::states::StateRow],
    ) -> StoreResult<()> {
        self.write_states(Some(assignment_id), rows).await
    }

    async fn list_policy_states(
        &self,
        scope: &str,
        limit: u32,
    ) -> StoreResult<Vec<keyhaven_core::governance::states::StateRow>> {
        let c = self.client().await?;
        c.query(
            sql::LIST_POLICY_STATES,
            &[&scope.to_ascii_lowercase(), &i64::from(limit)],
        )
        .await
        .map_err(err)?
        .iter()
        .map(|r| {
            Ok(keyhaven_core::governance::states::StateRow {
                assignment_id: r.try_get(0).map_err(err)?,
                reference_id: r.try_get(1).map_err(err)?,
                resource_id: r.try_get(2).map_err(err)?,
                component: r.try_get(3).map_err(err)?,
                compliance: r.try_get(4).map_err(err)?,
                time: r.try_get(5).map_err(err)?,
                record: r.try_get(6).map_err(err)?,
            })
        })
        .collect()
    }

    async fn forget_policy_states(&self, assignment_id: &str) -> StoreResult<()> {
        let c = self.client().await?;
        c.execute(sql::FORGET_POLICY_STATES, &[&assignment_id])
            .await
            .map_err(err)?;
        Ok(())
    }
}

impl PostgresStore {
    /// Writes states in one transaction, first clearing an assignment's
    /// resource-level states when `clear` names it. Rows go in key order so
    /// two nodes' writes lock alike.
    async fn write_states(
        &self,
        clear: Option<&str>,
        rows: &[keyhaven_core::governance::states::StateRow],
    ) -> StoreResult<()> {
        let mut rows = rows.to_vec();
        rows.sort_by(|a, b| {
            (
                &a.assignment_id,
                &a.reference_id,
                &a.resource_id,
                &a.component,
            )
                .cmp(&(
                    &b.assignment_id,
                    &b.reference_id,
                    &b.resource_id,
                    &b.component,
                ))
        });
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(err)?;
        if let Some(id) = clear {
            tx.execute(sql::CLEAR_POLICY_STATES, &[&id])
                .await
                .map_err(err)?;
        }
        let stmt = tx.prepare(sql::PUT_POLICY_STATE).await.map_err(err)?;
        for r in &rows {
            tx.execute(
                &stmt,
                &[
                    &r.assignment_id,
                    &r.reference_id,
                    &r.resource_id,
                    &r.component,
                    &r.compliance,
                    &r.time,
                    &r.record,
                ],
            )
            .await
            .map_err(err)?;
        }
        tx.commit().await.map_err(err)
    }
}
