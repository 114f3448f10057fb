//! The Log Analytics query API's wire shapes (`POST /v1/workspaces/{id}/query`,
//! as `azure-monitor-query`'s `LogsQueryClient` and `az rest` speak it):
//! the request body, its ISO 8601 `timespan`, the `tables` of a result and
//! the errors, worded as Azure words them.

use keyhaven_core::logs::{LogQueryError, LogTable, LogValue};
use serde::Deserialize;
use serde_json::{json, Value};

/// A query's body.
#[derive(Debug, Deserialize)]
pub struct QueryRequest {
    /// The KQL text.
    pub query: Option<String>,
    /// `PT1H`, `start/end`, `start/PT1H` or `PT1H/end` (ISO 8601).
    pub timespan: Option<String>,
    /// More workspaces to read (a cross-workspace query).
    #[serde(default)]
    pub workspaces: Option<Vec<String>>,
}

const US: i64 = 1_000_000;

/// Parses an ISO 8601 date-time with an optional fraction (up to 7 digits)
/// and a `Z` or `±hh:mm` offset (none means UTC), into microseconds.
pub fn parse_datetime_us(s: &str) -> Option<i64> {
    let s = s.trim();
    let (date, rest) = s.split_once(['T', 't', ' ']).unwrap_or((s, "00:00:00Z"));
    let mut d = date.split('-');
    let (y, m, day) = (
        d.next()?.parse::<i64>().ok()?,
        d.next()?.parse::<i64>().ok()?,
        d.next()?.parse::<i64>().ok()?,
    );
    if d.next().is_some() {
        return None;
    }
    // The offset: Z, +hh:mm, -hh:mm, or none (a `+` that a query string
    // decoded as a space is a `+`).
    let (time, offset_s) = if let Some(t) = rest.strip_suffix(['Z', 'z']) {
        (t, 0)
    } else if let Some(i) = rest.rfind(['+', '-', ' ']) {
        let (t, off) = rest.split_at(i);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let off = off.trim_start_matches(' ');
        let off = if off.starts_with(['+', '-']) {
            off.to_owned()
        } else {
            format!("+{off}")
        };
        let (oh, om) = off
            .get(1..)?
            .split_once(':')
            .unwrap_or((off.get(1..)?, "0"));
        let (oh, om) = (oh.parse::<i64>().ok()?, om.parse::<i64>().ok()?);
        if oh > 23 || om > 59 {
            return None;
        }
        (t, sign * (oh * 3600 + om * 60))
    } else {
        (rest, 0)
    };
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.split(':');
    let hh = t.next()?.parse::<i64>().ok()?;
    let mm = t.next().map_or(Some(0), |v| v.parse::<i64>().ok())?;
    let ss = t.next().map_or(Some(0), |v| v.parse::<i64>().ok())?;
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days_in_month = match m {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if t.next().is_some()
        || !(1..=9999).contains(&y)
        || !(1..=12).contains(&m)
        || !(1..=days_in_month).contains(&day)
        || !(0..=23).contains(&hh)
        || !(0..=59).contains(&mm)
        || !(0..=60).contains(&ss)
        || frac.len() > 9
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let micros = format!("{frac:0<6}").get(..6)?.parse::<i64>().ok()?;
    let days = keyhaven_core::clock::days_from_civil(y, m, day);
    Some((days * 86_400 + hh * 3600 + mm * 60 + ss - offset_s) * US + micros)
}

/// Parses an ISO 8601 duration (`P1D`, `PT1H30M`, `PT3600.0S`, `P1W`) into
/// microseconds; years and months are refused (their length varies).
pub fn parse_duration_us(s: &str) -> Option<i64> {
    let s = s.trim();
    let body = s.strip_prefix(['P', 'p'])?;
    if body.is_empty() {
        return None;
    }
    let (date, time) = match body.split_once(['T', 't']) {
        Some((d, t)) if !t.is_empty() => (d, t),
        Some(_) => return None,
        None => (body, ""),
    };
    let mut total: f64 = 0.0;
    let mut take = |part: &str, units: &[(char, f64)]| -> Option<()> {
        let mut num = String::new();
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' {
                num.push(c);
            } else {
                let unit = units.iter().find(|(u, _)| u.eq_ignore_ascii_case(&c))?.1;
                let n: f64 = num.parse().ok()?;
                total += n * unit;
                num.clear();
            }
        }
        num.is_empty().then_some(())
    };
    take(date, &[('W', 604_800.0), ('D', 86_400.0)])?;
    take(time, &[('H', 3600.0), ('M', 60.0), ('S', 1.0)])?;
    let us = total * 1e6;
    (us.is_finite() && us < 1e17).then_some(us as i64)
}

/// The `[from, to]` a `timespan` names, in microseconds, with `now_us` as
/// the end of a bare duration.
pub fn parse_timespan(s: &str, now_us: i64) -> Option<(i64, i64)> {
    match s.split_once('/') {
        None => {
            let d = parse_duration_us(s)?;
            Some((now_us.checked_sub(d)?, now_us))
        }
        Some((a, b)) => {
            let start = parse_datetime_us(a);
            let end = parse_datetime_us(b);
            match (start, end) {
                (Some(f), Some(t)) => Some((f, t)),
                (Some(f), None) => Some((f, f.checked_add(parse_duration_us(b)?)?)),
                (None, Some(t)) => Some((t.checked_sub(parse_duration_us(a)?)?, t)),
                (None, None) => None,
            }
        }
    }
    .filter(|(f, t)| f <= t)
}

/// `2026-12-04T16:00:00Z`, with a fraction when there is one
/// (`…:00.123456Z`), as Log Analytics writes datetimes.
pub fn datetime(us: i64) -> String {
    let secs = us.div_euclid(US);
    let frac = us.rem_euclid(US);
    let whole = crate::oauth::iso8601(secs);
    if frac == 0 {
        whole
    } else {
        let digits = format!("{frac:06}");
        format!(
            "{}.{}Z",
            whole.trim_end_matches('Z'),
            digits.trim_end_matches('0')
        )
    }
}

/// `[-][d.]hh:mm:ss[.fffffff]`, as KQL writes timespans.
pub fn timespan(us: i64) -> String {
    let sign = if us < 0 { "-" } else { "" };
    let us = us.unsigned_abs();
    let frac = us % 1_000_000;
    let secs = us / 1_000_000;
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    let days = if d > 0 {
        format!("{d}.")
    } else {
        String::new()
    };
    let frac = if frac > 0 {
        format!(".{:07}", frac * 10)
    } else {
        String::new()
    };
    format!("{sign}{days}{h:02}:{m:02}:{s:02}{frac}")
}

fn cell(v: &LogValue, ty: &str) -> Value {
    match (v, ty) {
        (LogValue::Null, _) => Value::Null,
        (LogValue::Bool(b), _) => json!(b),
        (LogValue::Long(n), "datetime") => json!(datetime(*n)),
        (LogValue::Long(n), "timespan") => json!(timespan(*n)),
        (LogValue::Long(n), "bool") => json!(*n != 0),
        (LogValue::Long(n), "real") => json!(*n as f64),
        (LogValue::Long(n), _) => json!(n),
        (LogValue::Real(f), _) if f.is_nan() => json!("NaN"),
        (LogValue::Real(f), _) if f.is_infinite() && *f > 0.0 => json!("Infinity"),
        (LogValue::Real(f), _) if f.is_infinite() => json!("-Infinity"),
        (LogValue::Real(f), _) => json!(f),
        (LogValue::Text(s), _) => json!(s),
    }
}

/// A result as the API answers it: one table, `PrimaryResult`.
pub fn result_body(t: &LogTable) -> Value {
    let columns: Vec<Value> = t
        .columns
        .iter()
        .map(|(n, ty)| json!({"name": n, "type": ty}))
        .collect();
    let rows: Vec<Value> = t
        .rows
        .iter()
        .map(|r| {
            Value::Array(
                r.iter()
                    .zip(&t.columns)
                    .map(|(v, (_, ty))| cell(v, ty))
                    .collect(),
            )
        })
        .collect();
    json!({"tables": [{"name": "PrimaryResult", "columns": columns, "rows": rows}]})
}

/// An error body: `{"error": {"message", "code", "correlationId", "innererror"?}}`.
pub fn error_body(code: &str, message: &str, correlation: &str, inner: Option<Value>) -> Value {
    let mut e = json!({"message": message, "code": code, "correlationId": correlation});
    if let (Some(inner), Some(obj)) = (inner, e.as_object_mut()) {
        obj.insert("innererror".into(), inner);
    }
    json!({ "error": e })
}

/// The status and body of a query that gave no result.
pub fn query_error(e: &LogQueryError, correlation: &str) -> (u16, Value) {
    let invalid = "The request had some invalid properties";
    match e {
        LogQueryError::Syntax {
            line, pos, token, ..
        } => (
            400,
            error_body(
                "BadArgumentError",
                invalid,
                correlation,
                Some(json!({
                    "code": "SyntaxError",
                    "message": "A recognition error occurred in the query.",
                    "innererror": {
                        "code": "SYN0002",
                        "message": e.to_string(),
                        "line": line,
                        "pos": pos,
                        "token": token,
                    }
                })),
            ),
        ),
        LogQueryError::Semantic(m) => (
            400,
            error_body(
                "BadArgumentError",
                invalid,
                correlation,
                Some(json!({
                    "code": "SemanticError",
                    "message": "A semantic error occurred.",
                    "innererror": {"code": "SEM0100", "message": m}
                })),
            ),
        ),
        LogQueryError::Timeout => (
            504,
            error_body(
                "GatewayTimeout",
                "The query exceeded its time limit. Narrow the time span or the query.",
                correlation,
                None,
            ),
        ),
        LogQueryError::TooLarge(_) => (
            400,
            error_body(
                "BadArgumentError",
                invalid,
                correlation,
                Some(json!({
                    "code": "ResultTooLarge",
                    "message": e.to_string(),
                })),
            ),
        ),
        LogQueryError::Store(_) => (
            503,
            error_body(
                "ServiceUnavailable",
                "The logs could not be read. Retry later.",
                correlation,
                None,
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timespans_parse_as_the_sdk_writes_them() {
        let now = 1_800_000_000 * US;
        assert_eq!(parse_timespan("PT1H", now), Some((now - 3600 * US, now)));
        assert_eq!(
            parse_timespan("PT3600.0S", now),
            Some((now - 3600 * US, now))
        );
        assert_eq!(parse_timespan("P1D", now), Some((now - 86_400 * US, now)));
        assert_eq!(
            parse_timespan("P1DT2H", now),
            Some((now - 93_600 * US, now))
        );
        let a = parse_datetime_us("2026-12-04T16:00:00Z").unwrap_or_default();
        assert_eq!(
            parse_datetime_us("2026-12-04T17:30:00+01:30"),
            Some(a),
            "an offset is subtracted"
        );
        assert_eq!(
            parse_datetime_us("2026-12-04T16:00:00.25+00:00"),
            Some(a + 250_000)
        );
        assert_eq!(
            parse_timespan("2026-12-04T16:00:00+00:00/2026-12-04T17:00:00+00:00", now),
            Some((a, a + 3600 * US))
        );
        assert_eq!(
            parse_timespan("2026-12-04T16:00:00Z/PT1H", now),
            Some((a, a + 3600 * US))
        );
        assert_eq!(
            parse_datetime_us("2026-12-04T17:30:00 01:30"),
            Some(a),
            "a query string's + read as a space"
        );
        assert!(parse_datetime_us("2028-02-29T00:00:00Z").is_some());
        for bad in [
            "2026-02-29T00:00:00Z/PT1H",
            "2026-04-31T00:00:00Z/PT1H",
            "",
            "P",
            "PT",
            "1H",
            "P1Y",
            "PTxS",
            "2026-13-01T00:00:00Z/PT1H",
            "b/a",
        ] {
            assert_eq!(parse_timespan(bad, now), None, "{bad}");
        }
        assert_eq!(
            parse_timespan("2026-12-04T17:00:00Z/2026-12-04T16:00:00Z", now),
            None,
            "an end before the start"
        );
    }

    #[test]
    fn cells_are_written_as_log_analytics_writes_them() {
        let a = parse_datetime_us("2026-12-04T16:00:00Z").unwrap_or_default();
        assert_eq!(datetime(a), "2026-12-04T16:00:00Z");
        assert_eq!(datetime(a + 123_400), "2026-12-04T16:00:00.1234Z");
        assert_eq!(timespan(3_600 * US), "01:00:00");
        assert_eq!(timespan(90_061 * US + 500_000), "1.01:01:01.5000000");
        assert_eq!(timespan(-60 * US), "-00:01:00");
    }
}
