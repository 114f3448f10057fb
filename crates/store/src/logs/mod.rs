//! The logs that Log Analytics queries read, and the compiler that turns a
//! KQL syntax tree ([`keyhaven_kql::Query`]) into this store's SQL.
//!
//! Records live in one table, `log_records` (one row per record and
//! workspace), with a term index on the object id and request URI (FTS5 on
//! SQLite, GIN over term arrays on PostgreSQL) for `has`; each KQL table (`AzureDiagnostics`, `AZKVAuditLogs`) is a
//! list of columns, each a SQL expression over that table's columns. A query
//! becomes a `WITH` chain: the first step selects the table's columns for
//! one workspace and time span, and each tabular operator is one more step.

mod compile;
pub(crate) mod run;

pub use compile::{compile, CompileError, Compiled, QueryScope, SqlParam};

/// A KQL column's type (what Log Analytics reports in `columns[].type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KqlType {
    /// `string`
    String,
    /// `long` (also `int`)
    Long,
    /// `real`
    Real,
    /// `bool`
    Bool,
    /// `datetime`: microseconds since the Unix epoch in SQL.
    Datetime,
    /// `timespan`: microseconds in SQL.
    Timespan,
    /// `dynamic`: JSON text in SQL.
    Dynamic,
}

impl KqlType {
    /// The name Log Analytics gives it.
    pub fn name(self) -> &'static str {
        match self {
            KqlType::String => "string",
            KqlType::Long => "long",
            KqlType::Real => "real",
            KqlType::Bool => "bool",
            KqlType::Datetime => "datetime",
            KqlType::Timespan => "timespan",
            KqlType::Dynamic => "dynamic",
        }
    }
}

/// Which SQL the compiler writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite 3.35+.
    Sqlite,
    /// PostgreSQL 12+.
    Postgres,
}

/// The table every KQL table reads, on SQLite (a migration: never edited).
pub const LOG_TABLE_SQLITE: &str = "CREATE TABLE log_records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace TEXT NOT NULL, log_table TEXT NOT NULL, time_us INTEGER NOT NULL,
    category TEXT NOT NULL,
    resource_id TEXT NOT NULL, resource TEXT NOT NULL, resource_group TEXT NOT NULL,
    subscription_id TEXT NOT NULL, resource_type TEXT NOT NULL,
    operation TEXT NOT NULL, operation_version TEXT NOT NULL,
    result_type TEXT NOT NULL, result_signature TEXT NOT NULL, result_description TEXT NOT NULL,
    duration_ms INTEGER NOT NULL, caller_ip TEXT NOT NULL, correlation_id TEXT NOT NULL,
    oid TEXT NOT NULL, appid TEXT NOT NULL, upn TEXT NOT NULL, tid TEXT NOT NULL,
    object_id TEXT NOT NULL, request_uri TEXT NOT NULL, http_status INTEGER NOT NULL,
    client_info TEXT NOT NULL, identity TEXT NOT NULL, properties TEXT NOT NULL);
 CREATE INDEX log_records_by_time ON log_records (workspace, time_us, log_table);
 CREATE INDEX log_records_by_resource ON log_records (resource_id, time_us, log_table);
 CREATE VIRTUAL TABLE log_terms USING fts5(object_id, request_uri,
    content='log_records', content_rowid='seq', tokenize='unicode61 remove_diacritics 0');
 CREATE TRIGGER log_records_terms_insert AFTER INSERT ON log_records BEGIN
    INSERT INTO log_terms (rowid, object_id, request_uri) VALUES (new.seq, new.object_id, new.request_uri);
 END;
 CREATE TRIGGER log_records_terms_delete AFTER DELETE ON log_records BEGIN
    INSERT INTO log_terms (log_terms, rowid, object_id, request_uri)
    VALUES ('delete', old.seq, old.object_id, old.request_uri);
 END;";

/// The same table on PostgreSQL.
pub const LOG_TABLE_POSTGRES: &str = "CREATE TABLE log_records (
    seq BIGSERIAL PRIMARY KEY,
    workspace TEXT NOT NULL, log_table TEXT NOT NULL, time_us BIGINT NOT NULL,
    category TEXT NOT NULL,
    resource_id TEXT NOT NULL, resource TEXT NOT NULL, resource_group TEXT NOT NULL,
    subscription_id TEXT NOT NULL, resource_type TEXT NOT NULL,
    operation TEXT NOT NULL, operation_version TEXT NOT NULL,
    result_type TEXT NOT NULL, result_signature TEXT NOT NULL, result_description TEXT NOT NULL,
    duration_ms BIGINT NOT NULL, caller_ip TEXT NOT NULL, correlation_id TEXT NOT NULL,
    oid TEXT NOT NULL, appid TEXT NOT NULL, upn TEXT NOT NULL, tid TEXT NOT NULL,
    object_id TEXT NOT NULL, request_uri TEXT NOT NULL, http_status BIGINT NOT NULL,
    client_info TEXT NOT NULL, identity TEXT NOT NULL, properties TEXT NOT NULL);
 CREATE INDEX log_records_by_time ON log_records (workspace, time_us, log_table);
 CREATE INDEX log_records_by_resource ON log_records (resource_id, time_us, log_table);
 CREATE FUNCTION keyhaven_terms(text) RETURNS text[] LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT ARRAY(SELECT pg_catalog.left(t, 200) FROM pg_catalog.unnest(pg_catalog.regexp_split_to_array(pg_catalog.lower($1 COLLATE \"C\"), '[^a-z0-9]+')) AS t) $$;
 CREATE INDEX log_records_object_terms ON log_records USING GIN (keyhaven_terms(object_id));
 CREATE INDEX log_records_uri_terms ON log_records USING GIN (keyhaven_terms(request_uri));";

/// PostgreSQL's term array of an indexed column (the expression its GIN
/// index is on, written the same in queries so the index serves them):
/// `keyhaven_terms`, the text lower-cased by bytes (`COLLATE "C"`, whatever
/// the database's locale) and split at every character that is not an
/// ASCII letter or digit, as KQL's `has` splits terms, each term cut to
/// [`TERM_MAX`] characters (a GIN key must stay small: one long term would
/// fail the insert of its whole batch). The store keeps these columns
/// ASCII.
pub fn term_array(column: &str) -> String {
    format!("keyhaven_terms({column})")
}

/// Longest term the PostgreSQL term index keeps (queries cut theirs alike).
pub const TERM_MAX: usize = 200;

/// The `log_records` table in a dialect.
pub fn log_table_ddl(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => LOG_TABLE_SQLITE,
        Dialect::Postgres => LOG_TABLE_POSTGRES,
    }
}

/// The columns of `log_records` that a record fills, in the order
/// [`INSERT_COLUMNS`] names them.
pub const INSERT_COLUMNS: &str = "workspace, log_table, time_us, category, resource_id, resource, resource_group, subscription_id, resource_type, operation, operation_version, result_type, result_signature, result_description, duration_ms, caller_ip, correlation_id, oid, appid, upn, tid, object_id, request_uri, http_status, client_info, identity, properties";

/// One column of a KQL table: its name, type and SQL over `log_records`.
#[derive(Debug, Clone, Copy)]
pub struct CatalogColumn {
    /// The KQL name.
    pub name: &'static str,
    /// Its type.
    pub ty: KqlType,
    /// Its value, as SQL over a `log_records` row.
    pub sql: &'static str,
}

const fn col(name: &'static str, ty: KqlType, sql: &'static str) -> CatalogColumn {
    CatalogColumn { name, ty, sql }
}

use KqlType as T;

/// `AzureDiagnostics`: the legacy wide table, with Key Vault's columns as
/// Azure names them.
pub const AZURE_DIAGNOSTICS: &[CatalogColumn] = &[
    col("TenantId", T::String, "workspace"),
    col("TimeGenerated", T::Datetime, "time_us"),
    col("ResourceId", T::String, "resource_id"),
    col("Category", T::String, "category"),
    col("ResourceGroup", T::String, "resource_group"),
    col("SubscriptionId", T::String, "subscription_id"),
    col("ResourceProvider", T::String, "'MICROSOFT.KEYVAULT'"),
    col("Resource", T::String, "resource"),
    col("ResourceType", T::String, "resource_type"),
    col("OperationName", T::String, "operation"),
    col("OperationVersion", T::String, "operation_version"),
    col("ResultType", T::String, "result_type"),
    col("ResultSignature", T::String, "result_signature"),
    col("ResultDescription", T::String, "result_description"),
    col("DurationMs", T::Long, "duration_ms"),
    col("CallerIPAddress", T::String, "caller_ip"),
    col("CorrelationId", T::String, "correlation_id"),
    col("identity_claim_oid_g", T::String, "oid"),
    col(
        "identity_claim_http_schemas_microsoft_com_identity_claims_objectidentifier_g",
        T::String,
        "oid",
    ),
    col("identity_claim_appid_g", T::String, "appid"),
    col("identity_claim_upn_s", T::String, "upn"),
    col("identity_claim_tid_g", T::String, "tid"),
    col("id_s", T::String, "object_id"),
    col("requestUri_s", T::String, "request_uri"),
    col(
        "httpStatusCode_d",
        T::Real,
        "CAST(http_status AS DOUBLE PRECISION)",
    ),
    col("clientInfo_s", T::String, "client_info"),
    col("SourceSystem", T::String, "'Azure'"),
    col("Type", T::String, "'AzureDiagnostics'"),
    col("_ResourceId", T::String, "lower(resource_id)"),
];

/// `AZKVAuditLogs`: the resource-specific table.
pub const AZKV_AUDIT_LOGS: &[CatalogColumn] = &[
    col("TenantId", T::String, "workspace"),
    col("TimeGenerated", T::Datetime, "time_us"),
    col("Category", T::String, "category"),
    col("OperationName", T::String, "operation"),
    col("OperationVersion", T::String, "operation_version"),
    col("ResultType", T::String, "result_type"),
    col("ResultSignature", T::String, "result_signature"),
    col("ResultDescription", T::String, "result_description"),
    col("DurationMs", T::Long, "duration_ms"),
    col("CallerIpAddress", T::String, "caller_ip"),
    col("CorrelationId", T::String, "correlation_id"),
    col("Identity", T::Dynamic, "identity"),
    col("Id", T::String, "object_id"),
    col("RequestUri", T::String, "request_uri"),
    col("HttpStatusCode", T::Long, "http_status"),
    col("ClientInfo", T::String, "client_info"),
    col("Properties", T::Dynamic, "properties"),
    col("SourceSystem", T::String, "'Azure'"),
    col("Type", T::String, "'AZKVAuditLogs'"),
    col("_ResourceId", T::String, "lower(resource_id)"),
];

/// `AzureMetrics`: a vault's platform metrics by minute, from the request
/// counts every node adds to `metric_minutes` (see
/// [`compile`]'s metrics source: the SQL here is over its rows `m`).
pub const AZURE_METRICS: &[CatalogColumn] = &[
    col("TenantId", T::String, "m.tenant"),
    col("TimeGenerated", T::Datetime, "m.minute * 60000000"),
    col("ResourceId", T::String, "upper(m.vault)"),
    col("ResourceProvider", T::String, "'MICROSOFT.KEYVAULT'"),
    col("Resource", T::String, "upper(m.resource)"),
    col("ResourceGroup", T::String, "upper(m.rg)"),
    col("SubscriptionId", T::String, "upper(m.sub)"),
    col("MetricName", T::String, "m.metric"),
    col("Total", T::Real, "m.total"),
    col("Count", T::Real, "m.cnt"),
    col("Maximum", T::Real, "m.mx"),
    col("Minimum", T::Real, "m.mn"),
    col("Average", T::Real, "m.av"),
    col("TimeGrain", T::String, "'PT1M'"),
    col("UnitName", T::String, "m.unit"),
    col("SourceSystem", T::String, "'Azure'"),
    col("Type", T::String, "'AzureMetrics'"),
    col("_ResourceId", T::String, "m.vault"),
];

/// The tables a query may name (case-sensitive, as KQL's are).
pub fn table(name: &str) -> Option<&'static [CatalogColumn]> {
    match name {
        "AzureDiagnostics" => Some(AZURE_DIAGNOSTICS),
        "AZKVAuditLogs" => Some(AZKV_AUDIT_LOGS),
        "AzureMetrics" => Some(AZURE_METRICS),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
