//! The log port: audit records kept per Log Analytics workspace, and the
//! queries (KQL text) that read them. The store owns the query engine (it
//! compiles KQL to its own SQL); this module holds what crosses the port.

use async_trait::async_trait;

use crate::store::{StoreError, StoreResult};

/// One record in a workspace's logs: a row of `AzureDiagnostics` or
/// `AZKVAuditLogs` (`log_table`), the columns Azure fills for Key Vault.
/// Never holds a secret value, key material or a token (the audit record it
/// comes from holds none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogRecord {
    /// The workspace's customer id.
    pub workspace: String,
    /// `AzureDiagnostics` or `AZKVAuditLogs`.
    pub log_table: String,
    /// `TimeGenerated`, microseconds since the Unix epoch.
    pub time_us: i64,
    /// `AuditEvent`.
    pub category: String,
    /// The vault's ARM id, upper case as Azure writes it.
    pub resource_id: String,
    /// The vault's name, upper case.
    pub resource: String,
    /// Its resource group, upper case.
    pub resource_group: String,
    /// Its subscription, upper case.
    pub subscription_id: String,
    /// `VAULTS` or `MANAGEDHSMS`.
    pub resource_type: String,
    /// `SecretGet`, `VaultPut`, …
    pub operation: String,
    /// The request's api-version.
    pub operation_version: String,
    /// `Success` or `Failure`.
    pub result_type: String,
    /// The status's reason phrase (`OK`, `Forbidden`).
    pub result_signature: String,
    /// Empty, or what went wrong.
    pub result_description: String,
    /// Milliseconds.
    pub duration_ms: i64,
    /// The caller's address.
    pub caller_ip: String,
    /// The request's correlation id.
    pub correlation_id: String,
    /// The caller's object id.
    pub oid: String,
    /// The caller's application id.
    pub appid: String,
    /// The caller's user principal name.
    pub upn: String,
    /// The caller's tenant.
    pub tid: String,
    /// The object's id (`https://…/secrets/x/ver`), or empty.
    pub object_id: String,
    /// The request's URI.
    pub request_uri: String,
    /// The HTTP status.
    pub http_status: i64,
    /// The caller's user agent.
    pub client_info: String,
    /// `{"claim": {…}}` as JSON text.
    pub identity: String,
    /// The record's `properties` as JSON text.
    pub properties: String,
}

/// A query of one workspace's logs.
#[derive(Debug, Clone)]
pub struct LogQuery {
    /// The KQL text.
    pub text: String,
    /// The workspaces (customer ids) whose records the query can see, each
    /// with the earliest time (µs) it may read (its retention): one for a
    /// workspace query, every live workspace for a resource-context query.
    pub workspaces: Vec<(String, i64)>,
    /// Records at or after this time (µs since the epoch).
    pub from_us: i64,
    /// Records at or before this time.
    pub to_us: i64,
    /// The query's `now()` (µs).
    pub now_us: i64,
    /// When only one resource's records may be read (a resource-context
    /// query): its ARM id, compared without regard to case.
    pub resource: Option<String>,
    /// The vaults whose metrics the query's `AzureMetrics` holds (ARM ids,
    /// lower case), each with the customer id of the workspace that
    /// receives them.
    pub metric_vaults: Vec<(String, String)>,
    /// How long the query may run, milliseconds.
    pub timeout_ms: u64,
}

/// One cell of a result.
#[derive(Debug, Clone, PartialEq)]
pub enum LogValue {
    /// No value.
    Null,
    /// `bool`.
    Bool(bool),
    /// `long`, and `datetime`/`timespan` as microseconds.
    Long(i64),
    /// `real`.
    Real(f64),
    /// `string`, and `dynamic` as JSON text.
    Text(String),
}

/// A query's result: Log Analytics' `PrimaryResult`.
#[derive(Debug, Clone, Default)]
pub struct LogTable {
    /// Column names and KQL types (`string`, `long`, `real`, `bool`,
    /// `datetime`, `timespan`, `dynamic`).
    pub columns: Vec<(String, &'static str)>,
    /// Rows, each as long as `columns`.
    pub rows: Vec<Vec<LogValue>>,
}

/// Why a query gave no result.
#[derive(Debug, thiserror::Error)]
pub enum LogQueryError {
    /// The text does not parse (Azure's `SyntaxError`): `line` 1-based,
    /// `pos` 0-based, `token` the text found there.
    #[error("Query could not be parsed at '{token}' on line [{line},{pos}]")]
    Syntax {
        /// What the parser says.
        message: String,
        /// The line.
        line: usize,
        /// The position in the line.
        pos: usize,
        /// The text there.
        token: String,
    },
    /// It parses but means nothing here (Azure's `SemanticError`).
    #[error("{0}")]
    Semantic(String),
    /// It ran longer than its timeout.
    #[error("The query ran longer than its timeout.")]
    Timeout,
    /// Its result is larger than a response may be.
    #[error("The query's result is larger than {0} bytes.")]
    TooLarge(usize),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Most records one [`LogStore::forget_logs`] call removes (one short
/// transaction; the caller calls again while it removes this many).
pub const FORGET_BATCH: i64 = 10_000;

/// Persistence and querying of workspaces' logs.
#[async_trait]
pub trait LogStore: Send + Sync {
    /// Keeps records, all in one transaction.
    async fn append_logs(&self, records: &[LogRecord]) -> StoreResult<()>;
    /// Runs a query, read-only.
    async fn query_logs(&self, q: &LogQuery) -> Result<LogTable, LogQueryError>;
    /// Forgets some of a workspace's records older than `before_us` (all
    /// of them with `i64::MAX`), at most [`FORGET_BATCH`] records in
    /// one short transaction; how many went. Call again while it returns
    /// a full batch.
    async fn forget_logs(&self, workspace: &str, before_us: i64) -> StoreResult<u64>;
    /// The workspaces that hold records (to find those of deleted ones).
    async fn log_workspaces(&self) -> StoreResult<Vec<String>>;
    /// Refreshes the planner's statistics of the records (after much has
    /// been added), so a rare term is found through its index.
    async fn maintain_logs(&self) -> StoreResult<()>;
}
