//! Running a log query: parse, compile for the store's dialect, and turn
//! the rows into a [`LogTable`]; what both stores share.

use keyhaven_core::logs::{LogQuery, LogQueryError, LogRecord, LogTable, LogValue};

use super::{compile, Compiled, Dialect, KqlType, QueryScope};

/// Most bytes a result may hold (cells' text and numbers, roughly as the
/// response will carry them); Log Analytics stops at 64 MB.
pub const MAX_RESULT_BYTES: usize = 16 * 1024 * 1024;

pub use keyhaven_core::logs::FORGET_BATCH;

/// Parses and compiles a query for `dialect`.
pub fn prepare(q: &LogQuery, dialect: Dialect) -> Result<Compiled, LogQueryError> {
    let parsed = keyhaven_kql::parse(&q.text).map_err(|e| {
        let (line, pos) = e.line_pos(&q.text);
        LogQueryError::Syntax {
            message: e.message.clone(),
            line,
            pos,
            token: e.token.clone(),
        }
    })?;
    let scope = QueryScope {
        workspaces: q.workspaces.clone(),
        metric_vaults: q.metric_vaults.clone(),
        resource: q.resource.clone(),
        from_us: q.from_us,
        to_us: q.to_us,
        now_us: q.now_us,
    };
    compile(&parsed, &scope, dialect).map_err(|e| LogQueryError::Semantic(e.message))
}

/// The type's name in a result.
pub fn type_name(t: KqlType) -> &'static str {
    t.name()
}

/// Adds rows to a table, keeping count of the bytes; refuses past
/// [`MAX_RESULT_BYTES`].
pub struct Collector {
    table: LogTable,
    bytes: usize,
}

impl Collector {
    /// A table with the compiled query's columns.
    pub fn new(c: &Compiled) -> Self {
        Self {
            table: LogTable {
                columns: c
                    .columns
                    .iter()
                    .map(|(n, t)| (n.clone(), type_name(*t)))
                    .collect(),
                rows: Vec::new(),
            },
            bytes: 0,
        }
    }

    /// Adds one row.
    pub fn push(&mut self, mut row: Vec<LogValue>) -> Result<(), LogQueryError> {
        for (cell, (_, ty)) in row.iter_mut().zip(&self.table.columns) {
            if *ty == "dynamic" {
                if let LogValue::Text(t) = cell {
                    *t = canonical_dynamic(t);
                }
            }
        }
        self.bytes += row
            .iter()
            .map(|v| match v {
                // Escapes can make JSON text longer than its value.
                LogValue::Text(s) => s.len() + s.len() / 4 + 3,
                _ => 8,
            })
            .sum::<usize>();
        if self.bytes > MAX_RESULT_BYTES {
            return Err(LogQueryError::TooLarge(MAX_RESULT_BYTES));
        }
        self.table.rows.push(row);
        Ok(())
    }

    /// The table.
    pub fn finish(self) -> LogTable {
        self.table
    }
}

/// A `dynamic` value as one text on both stores: JSON written compactly,
/// and an array (only `make_set` makes arrays: the tables' dynamic columns
/// hold objects) sorted (numbers before text; numbers by value, text by
/// bytes) without repeats.
pub(crate) fn canonical_dynamic(text: &str) -> String {
    use serde_json::Value;
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(mut items)) => {
            let rank = |v: &Value| match v {
                Value::Null => 0,
                Value::Bool(_) => 1,
                Value::Number(_) => 2,
                Value::String(_) => 3,
                _ => 4,
            };
            items.sort_by(|a, b| {
                rank(a).cmp(&rank(b)).then_with(|| match (a, b) {
                    (Value::Number(x), Value::Number(y)) => x
                        .as_f64()
                        .unwrap_or(0.0)
                        .total_cmp(&y.as_f64().unwrap_or(0.0)),
                    (Value::String(x), Value::String(y)) => x.as_bytes().cmp(y.as_bytes()),
                    _ => a.to_string().cmp(&b.to_string()),
                })
            });
            items.dedup();
            Value::Array(items).to_string()
        }
        Ok(v) => v.to_string(),
        Err(_) => text.to_owned(),
    }
}

/// A record's values in [`super::INSERT_COLUMNS`] order, for the SQL
/// `INSERT` of either store: `(text, integer)` slots in column order.
pub enum Cell<'a> {
    /// Text.
    Text(&'a str),
    /// Integer.
    Int(i64),
}

/// The record's cells in insert order.
pub fn cells(r: &LogRecord) -> [Cell<'_>; 27] {
    use Cell::{Int, Text};
    [
        Text(&r.workspace),
        Text(&r.log_table),
        Int(r.time_us),
        Text(&r.category),
        Text(&r.resource_id),
        Text(&r.resource),
        Text(&r.resource_group),
        Text(&r.subscription_id),
        Text(&r.resource_type),
        Text(&r.operation),
        Text(&r.operation_version),
        Text(&r.result_type),
        Text(&r.result_signature),
        Text(&r.result_description),
        Int(r.duration_ms),
        Text(&r.caller_ip),
        Text(&r.correlation_id),
        Text(&r.oid),
        Text(&r.appid),
        Text(&r.upn),
        Text(&r.tid),
        Text(&r.object_id),
        Text(&r.request_uri),
        Int(r.http_status),
        Text(&r.client_info),
        Text(&r.identity),
        Text(&r.properties),
    ]
}

/// `INSERT INTO log_records (…) VALUES ($1, …, $27)`.
pub fn insert_sql() -> String {
    let marks: Vec<String> = (1..=27).map(|i| format!("${i}")).collect();
    format!(
        "INSERT INTO log_records ({}) VALUES ({})",
        super::INSERT_COLUMNS,
        marks.join(", ")
    )
}
