//! The resource port: ARM-shaped resources that Keyhaven keeps as documents
//! (user-assigned managed identities, workloads, and later networks). Ids are
//! ARM resource ids and compare case-insensitively, as in ARM.

use async_trait::async_trait;

use crate::store::StoreResult;

/// A stored ARM resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRecord {
    /// The ARM id as first written.
    pub id: String,
    /// Resource type, e.g. `Microsoft.ManagedIdentity/userAssignedIdentities`.
    pub kind: String,
    /// Subscription id.
    pub subscription_id: String,
    /// Resource group name.
    pub resource_group: String,
    /// Resource name.
    pub name: String,
    /// Location.
    pub location: String,
    /// Tags as JSON.
    pub tags: String,
    /// Properties (and identity) as JSON, in Keyhaven's own shape.
    pub properties: String,
    /// Creation time, Unix seconds.
    pub created: i64,
    /// Last update, Unix seconds.
    pub updated: i64,
}

/// Persistence of ARM resources.
#[async_trait]
pub trait ResourceStore: Send + Sync {
    /// Creates or replaces a resource; true if it was created.
    async fn put_resource(&self, r: &ResourceRecord) -> StoreResult<bool>;
    /// Reads a resource by id (case-insensitive).
    async fn get_resource(&self, id: &str) -> StoreResult<Option<ResourceRecord>>;
    /// Deletes a resource; false if absent.
    async fn delete_resource(&self, id: &str) -> StoreResult<bool>;
    /// Lists resources of a type in a subscription (all groups), by id.
    async fn list_resources(
        &self,
        kind: &str,
        subscription_id: &str,
    ) -> StoreResult<Vec<ResourceRecord>>;
}

/// One audit record kept in the store (the in-Keyhaven log destination).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    /// The vault's ARM id, lower case.
    pub vault: String,
    /// Unix seconds.
    pub time: i64,
    /// `operationName`.
    pub operation: String,
    /// `callerIpAddress`.
    pub caller: String,
    /// `resultType` (`Success`, `Failure`).
    pub result: String,
    /// The whole record (JSON).
    pub record: String,
}

/// A query of stored audit records (empty strings match anything).
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// The vault's ARM id, lower case.
    pub vault: String,
    /// From (inclusive), Unix seconds.
    pub from: i64,
    /// To (inclusive), Unix seconds.
    pub to: i64,
    /// `operationName`.
    pub operation: String,
    /// `callerIpAddress`.
    pub caller: String,
    /// `resultType`.
    pub result: String,
    /// Most records, newest first.
    pub limit: u32,
}

/// One minute of one vault's data-plane requests of one operation and
/// status: what Azure Monitor's `ServiceApiHit`, `ServiceApiResult`,
/// `ServiceApiLatency` and `Availability` are computed from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricRow {
    /// The vault's ARM id, lower case.
    pub vault: String,
    /// The minute: Unix seconds / 60.
    pub minute: i64,
    /// `ActivityName` (the operation, e.g. `SecretGet`).
    pub activity: String,
    /// HTTP status.
    pub status: i64,
    /// Requests.
    pub count: i64,
    /// Their total latency, milliseconds.
    pub latency_ms: i64,
}

impl MetricRow {
    /// A row of a query's answer (its vault is the query's, left empty).
    pub fn summed(minute: i64, activity: String, status: i64, count: i64, latency_ms: i64) -> Self {
        Self {
            vault: String::new(),
            minute,
            activity,
            status,
            count,
            latency_ms,
        }
    }

    /// The row's key, in the one order every node writes rows in (so two
    /// nodes' concurrent flushes lock rows alike and cannot deadlock).
    pub fn key(&self) -> (&str, i64, &str, i64) {
        (&self.vault, self.minute, &self.activity, self.status)
    }
}

/// The in-Keyhaven audit log destination, and the metrics store.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Keeps records, all in one transaction.
    async fn append_audits(&self, rows: &[AuditRow]) -> StoreResult<()>;
    /// Records matching `q`, newest first.
    async fn query_audit(&self, q: &AuditQuery) -> StoreResult<Vec<String>>;
    /// Adds a node's counts to the stored minutes (a row's count and
    /// latency are added to what other nodes wrote), in one transaction.
    async fn add_metrics(&self, rows: &[MetricRow]) -> StoreResult<()>;
    /// Forgets minutes before `before`.
    async fn forget_metrics(&self, before: i64) -> StoreResult<()>;
    /// The vault's minutes in `[from, to]`, summed over nodes and over
    /// buckets of `grain` minutes counted from `from` (a row's `minute` is
    /// its bucket's first minute; `vault` is left empty).
    async fn query_metrics(
        &self,
        vault: &str,
        from: i64,
        to: i64,
        grain: i64,
    ) -> StoreResult<Vec<MetricRow>>;
}
