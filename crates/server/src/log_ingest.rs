//! Ingestion of audit records into the store: a request's record, for each
//! workspace a diagnostic setting names, becomes a [`LogRecord`], and for
//! the older `Keyhaven.Insights/auditEvents` store an [`AuditRow`]; both are
//! queued here (never waiting: a full queue drops, counted and warned
//! about, while the chained audit file keeps every record), and one task
//! writes what is queued, each kind in one transaction, at least every
//! [`FLUSH_EVERY`], so a record is queryable within about a second and a
//! request never waits for a store write of its record.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keyhaven_core::logs::LogRecord;
use keyhaven_core::{AuditRow, Storage};
use serde_json::{Map, Value};
use tokio::sync::mpsc;

/// Records waiting to be written, all workspaces together.
const QUEUE: usize = 50_000;
/// Their bytes, at most (a record's text fields are capped too).
const QUEUE_BYTES: usize = 64 * 1024 * 1024;
/// Longest text a record's column keeps (a longer one is cut, at a
/// character boundary, and marked with `...`).
const FIELD_MAX: usize = 4096;
/// Most records in one write.
const BATCH: usize = 2_000;
/// How long a record may wait for its batch.
pub const FLUSH_EVERY: Duration = Duration::from_millis(250);
/// Tries of one batch before it is dropped (with an error in the log).
const ATTEMPTS: u32 = 4;
/// Records written between two refreshes of the store's statistics.
const MAINTAIN_EVERY: usize = 100_000;

/// What the queue carries.
#[derive(Debug)]
pub enum Item {
    /// A record for a workspace.
    Log(Box<LogRecord>),
    /// A record for the `auditEvents` store.
    Audit(AuditRow),
}

impl Item {
    /// Roughly the bytes it holds.
    fn size(&self) -> usize {
        match self {
            Item::Log(r) => {
                256 + r.resource_id.len()
                    + r.object_id.len()
                    + r.request_uri.len()
                    + r.client_info.len()
                    + r.identity.len()
                    + r.properties.len()
                    + r.correlation_id.len()
                    + r.caller_ip.len()
            }
            Item::Audit(r) => 128 + r.vault.len() + r.record.len(),
        }
    }
}

/// The queue into the log store.
#[derive(Clone)]
pub struct Ingester {
    tx: mpsc::Sender<(Item, usize)>,
    dropped: Arc<AtomicU64>,
    bytes: Arc<std::sync::atomic::AtomicUsize>,
}

impl std::fmt::Debug for Ingester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ingester")
    }
}

impl Ingester {
    /// Starts the writer task.
    pub fn start(store: Arc<dyn Storage>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let bytes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        tokio::spawn(write_loop(store, rx, Arc::clone(&bytes)));
        Self {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
            bytes,
        }
    }

    /// Queues a record; never waits.
    pub fn push(&self, r: Item) {
        let size = r.size();
        let queued = self.bytes.fetch_add(size, Ordering::Relaxed);
        let full = queued.saturating_add(size) > QUEUE_BYTES;
        if full || self.tx.try_send((r, size)).is_err() {
            self.bytes.fetch_sub(size, Ordering::Relaxed);
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            // Once per thousand, not once per record.
            if n % 1000 == 1 {
                tracing::warn!(
                    dropped = n,
                    "log ingestion queue full: records dropped from workspaces (the audit file keeps them)"
                );
            }
        }
    }

    /// Records dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

async fn write_loop(
    store: Arc<dyn Storage>,
    mut rx: mpsc::Receiver<(Item, usize)>,
    bytes: Arc<std::sync::atomic::AtomicUsize>,
) {
    let mut logs = Vec::with_capacity(BATCH);
    let mut audits = Vec::new();
    let mut since_maintained = 0usize;
    loop {
        // Wait for the first record, then gather for at most FLUSH_EVERY.
        let mut take = |(item, size): (Item, usize)| {
            bytes.fetch_sub(size, Ordering::Relaxed);
            match item {
                Item::Log(r) => logs.push(*r),
                Item::Audit(r) => audits.push(r),
            }
        };
        match rx.recv().await {
            Some(r) => take(r),
            None => return,
        }
        let deadline = tokio::time::Instant::now() + FLUSH_EVERY;
        for _ in 1..BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(r)) => take(r),
                Ok(None) | Err(_) => break,
            }
        }
        // The two kinds are independent writes: at once.
        let (n_logs, n_audits) = (logs.len(), audits.len());
        tokio::join!(
            async {
                if n_logs > 0 {
                    retry("log records", n_logs, || store.append_logs(&logs)).await;
                }
            },
            async {
                if n_audits > 0 {
                    retry("audit events", n_audits, || store.append_audits(&audits)).await;
                }
            }
        );
        since_maintained += n_logs;
        if since_maintained >= MAINTAIN_EVERY {
            since_maintained = 0;
            // Off the write loop: the next batch need not wait for it.
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                if let Err(e) = store.maintain_logs().await {
                    tracing::debug!(error = %e, "log statistics could not be refreshed");
                }
            });
        }
        logs.clear();
        audits.clear();
    }
}

/// Tries a write [`ATTEMPTS`] times with growing pauses; then drops it with
/// an error in the server log.
async fn retry<'a, F, Fut>(what: &str, records: usize, mut write: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = keyhaven_core::store::StoreResult<()>> + 'a,
{
    let mut wait = Duration::from_millis(100);
    for attempt in 1..=ATTEMPTS {
        match write().await {
            Ok(()) => return,
            Err(e) if attempt == ATTEMPTS => {
                tracing::error!(error = %e, records, "{what} could not be stored; dropped (the audit file keeps them)");
            }
            Err(e) => {
                tracing::warn!(error = %e, attempt, "{what} could not be stored; retrying");
                tokio::time::sleep(wait).await;
                wait *= 4;
            }
        }
    }
}

/// Most batches one workspace's retention pass removes (the next pass goes
/// on where it stopped).
const FORGET_PASSES: usize = 100;

/// Forgets records past each workspace's retention (`retentionInDays`),
/// in short batches; run hourly by every node (the deletes are
/// idempotent, so nodes need not agree on who runs it).
pub async fn forget_past_retention(state: &crate::state::AppState) {
    let workspaces = match crate::http::arm::workspaces::all_live(state).await {
        Ok(w) => w,
        Err(_) => {
            tracing::debug!("workspaces could not be listed for retention");
            return;
        }
    };
    if let Err(e) = state.store.maintain_logs().await {
        tracing::debug!(error = %e, "log statistics could not be refreshed");
    }
    let now_us = state.clock.now_us();
    for (customer_id, days) in &workspaces {
        let before = now_us.saturating_sub(days.saturating_mul(86_400_000_000));
        forget(state, customer_id, before).await;
    }
    // Records of deleted workspaces (their delete-time cleanup may have
    // stopped short). The holders are listed before the live workspaces,
    // so a workspace made in between is never taken for a deleted one.
    let Ok(held) = state.store.log_workspaces().await else {
        return;
    };
    let Ok(live) = crate::http::arm::workspaces::all_live(state).await else {
        return;
    };
    for ws in held {
        if !live.iter().any(|(c, _)| c.eq_ignore_ascii_case(&ws)) {
            forget(state, &ws, i64::MAX).await;
        }
    }
}

/// Forgets a workspace's records before `before_us`, batch by batch.
pub async fn forget(state: &crate::state::AppState, customer_id: &str, before_us: i64) {
    for _ in 0..FORGET_PASSES {
        match state.store.forget_logs(customer_id, before_us).await {
            Ok(n) if i64::try_from(n).unwrap_or(i64::MAX) >= keyhaven_core::logs::FORGET_BATCH => {
                continue
            }
            Ok(_) => return,
            Err(e) => {
                tracing::debug!(error = %e, "old log records could not be dropped");
                return;
            }
        }
    }
}

/// Where records of one vault go: a workspace's customer id and the table
/// (`AzureDiagnostics`, or `AZKVAuditLogs` for a setting whose
/// `logAnalyticsDestinationType` is `Dedicated`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceSink {
    /// The workspace's customer id.
    pub customer_id: String,
    /// The KQL table.
    pub table: &'static str,
}

/// `s` cut to [`FIELD_MAX`] bytes at a character boundary, marked with `...`.
fn capped(s: &str) -> String {
    if s.len() <= FIELD_MAX {
        return s.to_owned();
    }
    let mut end = FIELD_MAX - 3;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", s.get(..end).unwrap_or_default())
}

/// A JSON object's text with each string in it capped.
fn capped_json(v: &Value) -> String {
    match v {
        Value::String(s) => Value::String(capped(s)).to_string(),
        Value::Object(m) => {
            let m: Map<String, Value> = m
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(s) => Value::String(capped(s)),
                        Value::Object(_) => {
                            serde_json::from_str(&capped_json(v)).unwrap_or(Value::Null)
                        }
                        other => other.clone(),
                    };
                    (capped(k), v)
                })
                .collect();
            Value::Object(m).to_string()
        }
        other => other.to_string(),
    }
}

/// The log record of an audit record (`record` as `audit::record` makes
/// it) for one workspace; text columns are capped at [`FIELD_MAX`] bytes.
pub fn log_record(record: &Value, time_us: i64, sink: &WorkspaceSink) -> LogRecord {
    let s = |v: Option<&Value>| capped(v.and_then(Value::as_str).unwrap_or_default());
    let get = |k: &str| s(record.get(k));
    let props = record.get("properties").and_then(Value::as_object);
    let prop = |k: &str| s(props.and_then(|p| p.get(k)));
    let claims: Option<&Map<String, Value>> =
        record.pointer("/identity/claim").and_then(Value::as_object);
    let claim = |k: &str| s(claims.and_then(|c| c.get(k)));
    let resource_id = get("resourceId").to_ascii_uppercase();
    let parts = keyhaven_core::ids::ArmIdParts::of(&resource_id);
    LogRecord {
        workspace: sink.customer_id.clone(),
        log_table: sink.table.to_owned(),
        time_us,
        category: get("category"),
        resource: parts.name.to_owned(),
        resource_group: parts.resource_group.to_owned(),
        subscription_id: parts.subscription.to_owned(),
        resource_type: parts.resource_type.to_owned(),
        resource_id: resource_id.clone(),
        operation: get("operationName"),
        operation_version: get("operationVersion"),
        result_type: get("resultType"),
        result_signature: get("resultSignature"),
        result_description: get("resultDescription"),
        duration_ms: get("durationMs").parse().unwrap_or(0),
        caller_ip: get("callerIpAddress"),
        correlation_id: get("correlationId"),
        oid: claim("oid"),
        appid: claim("appid"),
        upn: claim("upn"),
        tid: claim("tid"),
        // (The store keeps these two ASCII for its term index.)
        object_id: prop("id"),
        request_uri: prop("requestUri"),
        http_status: props
            .and_then(|p| p.get("httpStatusCode"))
            .and_then(Value::as_i64)
            .unwrap_or(0),
        client_info: prop("clientInfo"),
        identity: record
            .get("identity")
            .filter(|v| !v.is_null())
            .map_or_else(|| "{}".to_owned(), capped_json),
        properties: props.map_or_else(
            || "{}".to_owned(),
            |p| capped_json(&Value::Object(p.clone())),
        ),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn a_record_fills_the_columns_azure_fills() {
        let rec = json!({
            "time": "t",
            "resourceId": "/subscriptions/s1/resourceGroups/rg1/providers/Microsoft.KeyVault/vaults/v1",
            "operationName": "SecretGet",
            "operationVersion": "7.5",
            "category": "AuditEvent",
            "resultType": "Success",
            "resultSignature": "OK",
            "resultDescription": "",
            "durationMs": "12",
            "callerIpAddress": "10.0.0.1",
            "correlationId": "c1",
            "identity": {"claim": {"oid": "o1", "appid": "a1", "tid": "t1", "upn": "u@x"}},
            "properties": {"requestUri": "https://v1.vault/secrets/s?api-version=7.5", "httpStatusCode": 200, "id": "https://v1.vault/secrets/s/1", "clientInfo": "ua"},
        });
        let sink = WorkspaceSink {
            customer_id: "w".into(),
            table: "AzureDiagnostics",
        };
        let r = log_record(&rec, 5, &sink);
        assert_eq!(
            r.resource_id,
            "/SUBSCRIPTIONS/S1/RESOURCEGROUPS/RG1/PROVIDERS/MICROSOFT.KEYVAULT/VAULTS/V1"
        );
        assert_eq!(
            (
                r.resource.as_str(),
                r.resource_group.as_str(),
                r.subscription_id.as_str(),
                r.resource_type.as_str()
            ),
            ("V1", "RG1", "S1", "VAULTS")
        );
        assert_eq!(
            (
                r.oid.as_str(),
                r.appid.as_str(),
                r.upn.as_str(),
                r.tid.as_str()
            ),
            ("o1", "a1", "u@x", "t1")
        );
        assert_eq!((r.http_status, r.duration_ms), (200, 12));
        assert_eq!(r.object_id, "https://v1.vault/secrets/s/1");
        assert_eq!(r.client_info, "ua");
        assert_eq!(r.workspace, "w");
        assert!(r.identity.contains("\"oid\":\"o1\""));
        // Long text is cut, at a character boundary, in JSON too.
        let long = format!("https://v1.vault/secrets/{}", "é".repeat(5000));
        let rec = json!({"resourceId": "/x", "properties": {"requestUri": long, "id": long}});
        let r = log_record(&rec, 5, &sink);
        assert!(r.request_uri.len() <= FIELD_MAX && r.request_uri.ends_with("..."));
        assert!(r.object_id.starts_with("https://v1.vault/secrets/éé"));
        assert!(r.properties.len() < 3 * FIELD_MAX, "{}", r.properties.len());
        assert!(serde_json::from_str::<Value>(&r.properties).is_ok());
    }
}
