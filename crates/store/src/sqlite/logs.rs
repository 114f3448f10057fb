//! Workspaces' logs on SQLite: records appended in one transaction per
//! batch; a query runs on its own read-only connection on a blocking
//! thread, interrupted at its timeout or when the caller goes away.

use std::time::Duration;

use async_trait::async_trait;
use keyhaven_core::logs::{LogQuery, LogQueryError, LogRecord, LogStore, LogTable, LogValue};
use keyhaven_core::store::{StoreError, StoreResult};
use rusqlite::types::Value;
use rusqlite::{params_from_iter, Connection, OpenFlags, TransactionBehavior};

use super::{err, q, SqliteStore};
use crate::logs::run::{cells, insert_sql, prepare, Cell, Collector, FORGET_BATCH};
use crate::logs::{Dialect, KqlType, SqlParam};

/// Interrupts the query's connection when dropped before it finished: at
/// the timeout, or when the request's future is dropped.
struct InterruptOnDrop(Option<rusqlite::InterruptHandle>);

impl Drop for InterruptOnDrop {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.interrupt();
        }
    }
}

fn run_query(
    c: &Connection,
    sql: &str,
    params: Vec<Value>,
    columns: &[(String, KqlType)],
    mut out: Collector,
) -> Result<LogTable, LogQueryError> {
    let interrupted = |e: &rusqlite::Error| matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::OperationInterrupted);
    let fail = |e: rusqlite::Error| match &e {
        _ if interrupted(&e) => LogQueryError::Timeout,
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::TooBig => {
            LogQueryError::TooLarge(crate::logs::run::MAX_RESULT_BYTES)
        }
        _ => LogQueryError::Store(err(e)),
    };
    let mut stmt = c.prepare(sql).map_err(fail)?;
    let mut rows = stmt.query(params_from_iter(params)).map_err(fail)?;
    while let Some(row) = rows.next().map_err(fail)? {
        let mut cells = Vec::with_capacity(columns.len());
        for (i, (_, ty)) in columns.iter().enumerate() {
            let v: Value = row.get(i).map_err(fail)?;
            cells.push(match (v, ty) {
                (Value::Null, _) => LogValue::Null,
                (Value::Integer(n), KqlType::Bool) => LogValue::Bool(n != 0),
                (Value::Integer(n), KqlType::Real) => LogValue::Real(n as f64),
                (Value::Integer(n), _) => LogValue::Long(n),
                (Value::Real(f), KqlType::Long | KqlType::Datetime | KqlType::Timespan) => {
                    LogValue::Long(f as i64)
                }
                (Value::Real(f), _) => LogValue::Real(f),
                (Value::Text(s), _) => LogValue::Text(s),
                (Value::Blob(b), _) => LogValue::Text(String::from_utf8_lossy(&b).into_owned()),
            });
        }
        out.push(cells)?;
    }
    Ok(out.finish())
}

#[async_trait]
impl LogStore for SqliteStore {
    async fn append_logs(&self, records: &[LogRecord]) -> StoreResult<()> {
        if records.is_empty() {
            return Ok(());
        }
        let records = records.to_vec();
        // No trigger watches this table: the generation mirror stays.
        self.run_raw(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(err)?;
            {
                let mut stmt = tx.prepare_cached(&q(&insert_sql())).map_err(err)?;
                for r in &records {
                    let values: Vec<Value> = cells(r)
                        .iter()
                        .map(|c| match c {
                            Cell::Text(s) => Value::Text(s.to_string()),
                            Cell::Int(n) => Value::Integer(*n),
                        })
                        .collect();
                    stmt.execute(params_from_iter(values)).map_err(err)?;
                }
            }
            tx.commit().map_err(err)
        })
        .await
    }

    async fn query_logs(&self, query: &LogQuery) -> Result<LogTable, LogQueryError> {
        let compiled = prepare(query, Dialect::Sqlite)?;
        let params: Vec<Value> = compiled
            .params
            .iter()
            .map(|p| match p {
                SqlParam::Text(s) => Value::Text(s.clone()),
                SqlParam::Int(n) => Value::Integer(*n),
                SqlParam::Real(f) => Value::Real(*f),
            })
            .collect();
        let out = Collector::new(&compiled);
        let sql = compiled.sql;
        let columns = compiled.columns;
        let timeout = Duration::from_millis(query.timeout_ms);
        let Some(path) = self.path.clone() else {
            // In memory (tests): the one connection.
            return self
                .run_raw(move |c| Ok(run_query(c, &sql, params, &columns, out)))
                .await?;
        };
        let conn = tokio::task::spawn_blocking(move || {
            let c = Connection::open_with_flags(
                path.as_path(),
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(err)?;
            // A query reads much of the table: map it (fewer copies than
            // reads through the page cache) and give it a larger cache.
            c.execute_batch(
                "PRAGMA busy_timeout = 5000; PRAGMA query_only = ON; \
                 PRAGMA mmap_size = 1073741824; PRAGMA cache_size = -65536;",
            )
            .map_err(err)?;
            Ok::<_, StoreError>(c)
        })
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))??;
        let mut guard = InterruptOnDrop(Some(conn.get_interrupt_handle()));
        let task =
            tokio::task::spawn_blocking(move || run_query(&conn, &sql, params, &columns, out));
        match tokio::time::timeout(timeout, task).await {
            Ok(done) => {
                guard.0 = None;
                done.map_err(|e| LogQueryError::Store(StoreError::Unavailable(e.to_string())))?
            }
            // The guard interrupts the statement; the thread ends soon.
            Err(_) => Err(LogQueryError::Timeout),
        }
    }

    async fn forget_logs(&self, workspace: &str, before_us: i64) -> StoreResult<u64> {
        let ws = workspace.to_owned();
        self.run_raw(move |c| {
            let n = c
                .execute(
                    "DELETE FROM log_records WHERE seq IN (SELECT seq FROM log_records WHERE workspace = ?1 AND time_us < ?2 LIMIT ?3)",
                    rusqlite::params![ws, before_us, FORGET_BATCH],
                )
                .map_err(err)?;
            Ok(n as u64)
        })
        .await
    }

    async fn maintain_logs(&self) -> StoreResult<()> {
        // The query plans are fixed by the compiler (the term index leads
        // where it applies); SQLite's own upkeep suffices.
        self.run_raw(|c| c.execute_batch("PRAGMA optimize;").map_err(err))
            .await
    }

    async fn log_workspaces(&self) -> StoreResult<Vec<String>> {
        self.read(|c| {
            let mut stmt = c
                .prepare_cached("SELECT DISTINCT workspace FROM log_records")
                .map_err(err)?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(err)
        })
        .await
    }
}
