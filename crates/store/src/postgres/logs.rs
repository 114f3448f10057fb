//! Workspaces' logs on PostgreSQL: a batch of records is one `INSERT … SELECT
//! FROM UNNEST(…)`; a query runs in a read-only transaction with a statement
//! timeout and the session's time zone pinned to UTC.

use std::sync::Arc;

use async_trait::async_trait;
use futures_util::TryStreamExt;
use keyhaven_core::logs::{LogQuery, LogQueryError, LogRecord, LogStore, LogTable, LogValue};
use keyhaven_core::store::{StoreError, StoreResult};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use super::{err, PostgresStore};
use crate::logs::run::{cells, prepare, Cell, Collector, FORGET_BATCH};
use crate::logs::{Compiled, Dialect, KqlType, SqlParam, INSERT_COLUMNS};

/// Log queries holding a connection at once per node (of the pool's 16).
pub(crate) const LOG_QUERIES: usize = 4;

fn query_failure(e: tokio_postgres::Error) -> LogQueryError {
    match e.code().map(SqlState::code) {
        Some(c) if c == SqlState::QUERY_CANCELED.code() => LogQueryError::Timeout,
        // A data exception (a cast of text that is no number, an overflow):
        // the query's own doing, said without the SQL or the values (which
        // could be any row's, in whatever order PostgreSQL tests them).
        Some(c) if c.starts_with("22") => LogQueryError::Semantic(
            "The query could not be evaluated: a value could not be converted, or is out of range."
                .into(),
        ),
        // Too complex (stack depth, program limits) or a construct the
        // database refuses: the query's doing too, not worth a retry.
        Some(c) if c.starts_with("54") || c.starts_with("42") => {
            // 42xxx may be the compiler's own mistake: say so in the log.
            tracing::warn!(error = %e, "a log query's SQL was refused");
            LogQueryError::Semantic(
                "The query could not be run: it is too complex for Keyhaven.".into(),
            )
        }
        _ => LogQueryError::Store(err(e)),
    }
}

/// Runs a compiled query on `c` in a read-only transaction.
async fn run_query(
    c: &mut deadpool_postgres::Object,
    compiled: &Compiled,
    timeout_ms: u64,
) -> Result<LogTable, LogQueryError> {
    let params: Vec<Box<dyn ToSql + Sync + Send>> = compiled
        .params
        .iter()
        .map(|p| -> Box<dyn ToSql + Sync + Send> {
            match p {
                SqlParam::Text(s) => Box::new(s.clone()),
                SqlParam::Int(n) => Box::new(*n),
                SqlParam::Real(f) => Box::new(*f),
            }
        })
        .collect();
    let refs: Vec<&(dyn ToSql + Sync)> = params
        .iter()
        .map(|b| b.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let tx = c
        .build_transaction()
        .read_only(true)
        .start()
        .await
        .map_err(err)?;
    // The timeout is a number this code makes, never caller text. No JIT:
    // compiling a plan costs more than it saves on a log query's scans.
    tx.batch_execute(&format!(
        "SET LOCAL statement_timeout = {timeout_ms}; SET LOCAL TimeZone = 'UTC'; SET LOCAL jit = off"
    ))
    .await
    .map_err(err)?;
    // Rows are read as they come, so the result's byte cap bounds what is
    // held, not the whole answer.
    let rows = tx
        .query_raw(&compiled.sql, refs)
        .await
        .map_err(query_failure)?;
    futures_util::pin_mut!(rows);
    let mut out = Collector::new(compiled);
    let g = |e: tokio_postgres::Error| {
        LogQueryError::Store(StoreError::Corrupt(format!("postgres row: {e}")))
    };
    while let Some(row) = rows.try_next().await.map_err(query_failure)? {
        let mut cells = Vec::with_capacity(compiled.columns.len());
        for (i, (_, ty)) in compiled.columns.iter().enumerate() {
            cells.push(match ty {
                KqlType::Long | KqlType::Datetime | KqlType::Timespan => row
                    .try_get::<_, Option<i64>>(i)
                    .map_err(g)?
                    .map_or(LogValue::Null, LogValue::Long),
                KqlType::Real => row
                    .try_get::<_, Option<f64>>(i)
                    .map_err(g)?
                    .map_or(LogValue::Null, LogValue::Real),
                KqlType::Bool => row
                    .try_get::<_, Option<bool>>(i)
                    .map_err(g)?
                    .map_or(LogValue::Null, LogValue::Bool),
                KqlType::String | KqlType::Dynamic => row
                    .try_get::<_, Option<String>>(i)
                    .map_err(g)?
                    .map_or(LogValue::Null, LogValue::Text),
            });
        }
        out.push(cells)?;
    }
    tx.commit().await.map_err(err)?;
    Ok(out.finish())
}

#[async_trait]
impl LogStore for PostgresStore {
    async fn append_logs(&self, records: &[LogRecord]) -> StoreResult<()> {
        if records.is_empty() {
            return Ok(());
        }
        // Column-wise arrays: one statement for the batch.
        let mut texts: Vec<Vec<String>> = Vec::new();
        let mut ints: Vec<Vec<i64>> = Vec::new();
        let mut kinds: Vec<bool> = Vec::new(); // true: text
        for (i, r) in records.iter().enumerate() {
            for (j, c) in cells(r).into_iter().enumerate() {
                if i == 0 {
                    kinds.push(matches!(c, Cell::Text(_)));
                    texts.push(Vec::new());
                    ints.push(Vec::new());
                }
                match c {
                    Cell::Text(s) => texts.get_mut(j).map(|v| v.push(s.into_owned())),
                    Cell::Int(n) => ints.get_mut(j).map(|v| v.push(n)),
                };
            }
        }
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(kinds.len());
        let mut casts = Vec::with_capacity(kinds.len());
        for (j, text) in kinds.iter().enumerate() {
            let n = j + 1;
            if *text {
                if let Some(v) = texts.get(j) {
                    params.push(v);
                }
                casts.push(format!("${n}::text[]"));
            } else {
                if let Some(v) = ints.get(j) {
                    params.push(v);
                }
                casts.push(format!("${n}::bigint[]"));
            }
        }
        let sql = format!(
            "INSERT INTO log_records ({INSERT_COLUMNS}) SELECT * FROM UNNEST({})",
            casts.join(", ")
        );
        let c = self.client().await?;
        c.execute(&sql, &params).await.map_err(err)?;
        Ok(())
    }

    async fn query_logs(&self, query: &LogQuery) -> Result<LogTable, LogQueryError> {
        let compiled = prepare(query, Dialect::Postgres)?;
        let timeout_ms = query.timeout_ms.clamp(1, 600_000);
        let pool = self.pool.clone();
        let slots = Arc::clone(&self.log_slots);
        // The query runs on a task of its own that holds a slot and owns
        // its connection until the statement has ended, whether or not
        // the caller waits: a caller that goes away has the statement
        // cancelled on that connection, and a connection whose statement
        // did not end cleanly leaves the pool for good (a late cancel, or
        // rows still streaming, must never meet the next request).
        let (abandoned_tx, mut abandoned) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let gone = || LogQueryError::Timeout;
            let _slot = tokio::select! {
                biased;
                _ = &mut abandoned => return Err(gone()),
                s = slots.acquire_owned() => s.map_err(|_| gone())?,
            };
            let mut c = tokio::select! {
                biased;
                _ = &mut abandoned => return Err(gone()),
                c = pool.get() => c.map_err(|e| StoreError::Unavailable(format!("postgres: {e}")))?,
            };
            let token = c.cancel_token();
            let (out, cancelled) = {
                let work = run_query(&mut c, &compiled, timeout_ms);
                tokio::pin!(work);
                tokio::select! {
                    out = &mut work => (out, false),
                    _ = &mut abandoned => {
                        // A cancel that reaches the backend between two
                        // statements is ignored: repeat it until the
                        // work ends (the connection is discarded anyway).
                        let mut every = tokio::time::interval(std::time::Duration::from_millis(200));
                        loop {
                            tokio::select! {
                                out = &mut work => break (out, true),
                                _ = every.tick() => {
                                    let _ = token.cancel_query(tokio_postgres::NoTls).await;
                                }
                            }
                        }
                    }
                }
            };
            if cancelled || out.is_err() {
                if !cancelled {
                    // Rows may still stream (a result past its cap).
                    let _ = token.cancel_query(tokio_postgres::NoTls).await;
                }
                drop(deadpool_postgres::Object::take(c));
            }
            out
        });
        let result = task.await;
        drop(abandoned_tx);
        result.map_err(|e| LogQueryError::Store(StoreError::Unavailable(e.to_string())))?
    }

    async fn forget_logs(&self, workspace: &str, before_us: i64) -> StoreResult<u64> {
        let c = self.client().await?;
        c.execute(
            "DELETE FROM log_records WHERE seq IN (SELECT seq FROM log_records WHERE workspace = $1 AND time_us < $2 LIMIT $3)",
            &[&workspace, &before_us, &FORGET_BATCH],
        )
        .await
        .map_err(err)
    }

    async fn maintain_logs(&self) -> StoreResult<()> {
        // What autovacuum's analyze does, for deployments where it is off
        // or behind: without statistics the planner scans the table for a
        // term the GIN index would find at once.
        let c = self.client().await?;
        c.batch_execute("ANALYZE log_records").await.map_err(err)
    }

    async fn log_workspaces(&self) -> StoreResult<Vec<String>> {
        let c = self.client().await?;
        c.query("SELECT DISTINCT workspace FROM log_records", &[])
            .await
            .map_err(err)?
            .iter()
            .map(|r| r.try_get::<_, String>(0).map_err(err))
            .collect()
    }
}
