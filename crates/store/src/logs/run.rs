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
            // A whole real is written as an integer (SQLite writes 2.0
            // where PostgreSQL writes 2).
            for v in &mut items {
                if let Some(f) = v
                    .as_f64()
                    .filter(|f| v.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15)
                {
                    *v = Value::from(f as i64);
                }
            }
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
    Text(std::borrow::Cow<'a, str>),
    /// Integer.
    Int(i64),
}

/// `s` with every character outside ASCII percent-encoded, as in a URI:
/// the term index splits the indexed columns' terms exactly as `has` does
/// only when they are ASCII, so the store keeps them so.
pub fn ascii_text(s: &str) -> std::borrow::Cow<'_, str> {
    if s.is_ascii() {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() * 3);
    for c in s.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The record's cells in insert order (the term-indexed columns ASCII).
pub fn cells(r: &LogRecord) -> [Cell<'_>; 27] {
    fn t(s: &str) -> Cell<'_> {
        Cell::Text(std::borrow::Cow::Borrowed(s))
    }
    use Cell::Int;
    [
        t(&r.workspace),
        t(&r.log_table),
        Int(r.time_us),
        t(&r.category),
        t(&r.resource_id),
        t(&r.resource),
        t(&r.resource_group),
        t(&r.subscription_id),
        t(&r.resource_type),
        t(&r.operation),
        t(&r.operation_version),
        t(&r.result_type),
        t(&r.result_signature),
        t(&r.result_description),
        Int(r.duration_ms),
        t(&r.caller_ip),
        t(&r.correlation_id),
        t(&r.oid),
        t(&r.appid),
        t(&r.upn),
        t(&r.tid),
        Cell::Text(ascii_text(&r.object_id)),
        Cell::Text(ascii_text(&r.request_uri)),
        Int(r.http_status),
        t(&r.client_info),
        t(&r.identity),
        t(&r.properties),
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

#[cfg(test)]
mod tests {
    #[test]
    fn indexed_text_is_kept_ascii() {
        assert_eq!(
            super::ascii_text("https://v/secrets/a-b"),
            "https://v/secrets/a-b"
        );
        assert_eq!(super::ascii_text("/caféx/é"), "/caf%C3%A9x/%C3%A9");
    }

    #[test]
    fn arrays_are_one_text_on_both_stores() {
        assert_eq!(
            super::canonical_dynamic(r#"["b", 2.0, "a", 1, 2]"#),
            "[1,2,\"a\",\"b\"]"
        );
        assert_eq!(super::canonical_dynamic(r#"{"a": 1}"#), r#"{"a":1}"#);
    }
}
