//! Azure Monitor's metrics API over a vault (`az monitor metrics list
//! --resource <vault id>`): `ServiceApiHit`, `ServiceApiResult`,
//! `ServiceApiLatency`, `Availability` and `SaturationShoebox`, computed from
//! the per-minute request counts every node adds to the store (so the
//! answer is the deployment's, not one node's), kept 93 days.
//!
//! `GET {vault}/providers/Microsoft.Insights/metrics?metricnames&timespan&interval&aggregation&$filter`
//! and `GET {vault}/providers/Microsoft.Insights/metricDefinitions`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::{routing, Extension, Router};
use http::StatusCode;
use keyhaven_core::MetricRow;
use serde::Deserialize;
use serde_json::{json, Value};

use super::common::RG;
use super::common::{domain_failure, ArmFailure, Ctx};
use crate::http::response::json as reply;
use crate::state::AppState;

/// One of Key Vault's platform metrics.
struct Metric {
    name: &'static str,
    display: &'static str,
    description: &'static str,
    unit: &'static str,
    primary: &'static str,
    dims: &'static [&'static str],
}

const ALL_DIMS: &[&str] = &[
    "ActivityType",
    "ActivityName",
    "StatusCode",
    "StatusCodeClass",
];

const METRICS: &[Metric] = &[
    Metric {
        name: "ServiceApiHit",
        display: "Total Service Api Hits",
        description: "Number of total service api hits",
        unit: "Count",
        primary: "Count",
        dims: &["ActivityType", "ActivityName"],
    },
    Metric {
        name: "ServiceApiLatency",
        display: "Overall Service Api Latency",
        description: "Overall latency of service api requests",
        unit: "MilliSeconds",
        primary: "Average",
        dims: ALL_DIMS,
    },
    Metric {
        name: "ServiceApiResult",
        display: "Total Service Api Results",
        description: "Number of total service api results",
        unit: "Count",
        primary: "Count",
        dims: ALL_DIMS,
    },
    Metric {
        name: "Availability",
        display: "Overall Vault Availability",
        description: "Vault requests availability",
        unit: "Percent",
        primary: "Average",
        dims: ALL_DIMS,
    },
    Metric {
        name: "SaturationShoebox",
        display: "Overall Vault Saturation",
        description: "Vault capacity used",
        unit: "Percent",
        primary: "Average",
        dims: &["ActivityType", "ActivityName"],
    },
];

/// Time grains Azure Monitor offers, seconds.
const GRAINS: &[(&str, i64)] = &[
    ("PT1M", 60),
    ("PT5M", 300),
    ("PT15M", 900),
    ("PT30M", 1800),
    ("PT1H", 3600),
    ("PT6H", 21600),
    ("PT12H", 43200),
    ("P1D", 86400),
];
/// Most data points one series may have.
const MAX_POINTS: i64 = 10_080;
/// Most data points in one answer (all metrics and series).
const MAX_ANSWER_POINTS: usize = 200_000;
/// Most metrics one request may name (Azure Monitor's limit).
const MAX_METRICS: usize = 20;
/// How far back the store keeps minutes (Azure Monitor keeps platform
/// metrics 93 days); the nodes' flush forgets older ones.
pub const RETENTION_MINUTES: i64 = 93 * 24 * 60;

fn bad(msg: impl Into<String>) -> ArmFailure {
    ArmFailure::new(StatusCode::BAD_REQUEST, "BadRequest", msg.into())
}

/// The metrics query's parameters, as Azure Monitor names them.
#[derive(Debug, Deserialize)]
pub struct MetricsParams {
    metricnames: Option<String>,
    timespan: Option<String>,
    interval: Option<String>,
    aggregation: Option<String>,
    #[serde(rename = "$filter")]
    filter: Option<String>,
    top: Option<String>,
}

/// `ActivityType` of an operation name (`SecretGet` → `secret`).
fn activity_type(op: &str) -> &'static str {
    for (prefix, kind) in [
        ("Secret", "secret"),
        ("Key", "key"),
        ("Certificate", "certificate"),
    ] {
        if op.starts_with(prefix) {
            return kind;
        }
    }
    "vault"
}

fn dim_value(dim: &str, r: &MetricRow) -> String {
    match dim {
        "ActivityType" => activity_type(&r.activity).to_owned(),
        "ActivityName" => r.activity.to_ascii_lowercase(),
        "StatusCode" => r.status.to_string(),
        _ => format!("{}xx", r.status / 100),
    }
}

/// A `$filter`'s words and quoted strings (`'it''s'` is `it's`); None
/// for an unterminated string.
fn tokens(f: &str) -> Option<Vec<(bool, String)>> {
    let mut out = Vec::new();
    let mut chars = f.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_whitespace() {
            continue;
        }
        if c == '\'' {
            let mut v = String::new();
            loop {
                match chars.next()? {
                    '\'' if chars.peek() == Some(&'\'') => {
                        chars.next();
                        v.push('\'');
                    }
                    '\'' => break,
                    ch => v.push(ch),
                }
            }
            out.push((true, v));
        } else {
            let mut w = String::from(c);
            while let Some(&n) = chars.peek() {
                if n.is_whitespace() || n == '\'' {
                    break;
                }
                w.push(n);
                chars.next();
            }
            out.push((false, w));
        }
    }
    Some(out)
}

/// A `$filter` as (dimension, value): `*` splits into one series per
/// value; a value keeps only that value. Only `Dimension eq 'value'`
/// clauses joined by `and`.
fn parse_filter(f: &str, metric: &Metric) -> Result<Vec<(&'static str, String)>, ArmFailure> {
    let shape = || bad("$filter takes clauses of the form Dimension eq 'value' joined by 'and'.");
    let toks = tokens(f).ok_or_else(shape)?;
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        let (Some((false, dim)), Some((false, op)), Some((true, value))) =
            (toks.get(i), toks.get(i + 1), toks.get(i + 2))
        else {
            return Err(shape());
        };
        if !op.eq_ignore_ascii_case("eq") {
            return Err(shape());
        }
        let Some(d) = metric.dims.iter().find(|d| d.eq_ignore_ascii_case(dim)) else {
            return Err(bad(format!(
                "Metric {} has no dimension '{dim}'; its dimensions: {}.",
                metric.name,
                metric.dims.join(", ")
            )));
        };
        out.push((*d, value.to_ascii_lowercase()));
        i += 3;
        match toks.get(i) {
            None => return Ok(out),
            Some((false, and)) if and.eq_ignore_ascii_case("and") && i + 1 < toks.len() => i += 1,
            Some(_) => return Err(shape()),
        }
    }
}

/// Decodes `%XX` escapes: the Azure CLI quotes the timespan itself before
/// its HTTP layer encodes the query, so it arrives encoded once more (Azure
/// Monitor takes it either way).
fn percent_decoded(t: &str) -> String {
    let b = t.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b.get(i),
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (Some(b'%'), Some(h), Some(l)) => {
                out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                i += 3;
            }
            (Some(c), _, _) => {
                out.push(*c);
                i += 1;
            }
            (None, _, _) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `start/end` (ISO 8601; no offset means UTC, as the CLI's `isoformat()`
/// sends); none: the last hour.
fn parse_timespan(t: Option<&str>, now: i64) -> Result<(i64, i64), ArmFailure> {
    let Some(t) = t.filter(|t| !t.is_empty()) else {
        return Ok((now - 3600, now));
    };
    let t = if t.contains('%') {
        percent_decoded(t)
    } else {
        t.to_owned()
    };
    let (a, b) = t
        .split_once('/')
        .ok_or_else(|| bad("timespan is 'start/end', ISO 8601 times."))?;
    let parse = |s: &str| {
        keyhaven_wire::graph::parse_iso8601(s)
            .ok_or_else(|| bad(format!("'{s}' in timespan is not an ISO 8601 time.")))
    };
    let (start, end) = (parse(a)?, parse(b)?);
    if end <= start {
        return Err(bad("The timespan's end must be after its start."));
    }
    Ok((start, end))
}

#[derive(Default, Clone, Copy)]
struct Acc {
    count: i64,
    latency_ms: i64,
    unavailable: i64,
    throttled: i64,
}

impl Acc {
    fn add(&mut self, r: &MetricRow) {
        self.count = self.count.saturating_add(r.count);
        self.latency_ms = self.latency_ms.saturating_add(r.latency_ms);
        if r.status >= 500 || r.status == 429 {
            self.unavailable = self.unavailable.saturating_add(r.count);
        }
        if r.status == 429 {
            self.throttled = self.throttled.saturating_add(r.count);
        }
    }

    /// The data point's aggregations (an empty interval has counts of 0 and
    /// no average, as Azure Monitor answers).
    fn point(&self, metric: &str, time: i64, aggs: &[String]) -> Value {
        let mut p = serde_json::Map::new();
        p.insert(
            "timeStamp".into(),
            json!(keyhaven_wire::oauth::iso8601(time)),
        );
        let n = self.count as f64;
        let (total, average) = match metric {
            "ServiceApiLatency" => (
                self.latency_ms as f64,
                (self.count > 0).then(|| self.latency_ms as f64 / n),
            ),
            "Availability" => (
                0.0,
                (self.count > 0).then(|| 100.0 * (n - self.unavailable as f64) / n),
            ),
            "SaturationShoebox" => (
                0.0,
                (self.count > 0).then(|| 100.0 * self.throttled as f64 / n),
            ),
            _ => (n, (self.count > 0).then_some(1.0)),
        };
        for a in aggs {
            match a.as_str() {
                "count" => {
                    p.insert("count".into(), json!(n));
                }
                "total" => {
                    p.insert("total".into(), json!(total));
                }
                "average" => {
                    if let Some(v) = average {
                        p.insert("average".into(), json!(v));
                    }
                }
                _ => {}
            }
        }
        Value::Object(p)
    }
}

/// `GET {vault}/providers/Microsoft.Insights/metrics`.
pub async fn metrics(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<Ctx>>,
    Path((sub, rg, vault)): Path<(String, String, String)>,
    Query(p): Query<MetricsParams>,
) -> Result<Response, ArmFailure> {
    let v = super::vaults::find(&st, &sub, &rg, &vault).await?;
    let id = v.resource_id();
    st.authz
        .require_action(&ctx.caller, &id, "Microsoft.Insights/metrics/read")
        .await
        .map_err(domain_failure)?;
    let names = p.metricnames.as_deref().unwrap_or("ServiceApiHit");
    let mut chosen: Vec<&Metric> = Vec::new();
    for n in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let Some(m) = METRICS.iter().find(|m| m.name.eq_ignore_ascii_case(n)) else {
            return Err(bad(format!(
                "Failed to find metric configuration for provider: Microsoft.KeyVault, resource Type: vaults, metric: {n}, Valid metrics: {}",
                METRICS.iter().map(|m| m.name).collect::<Vec<_>>().join(",")
            )));
        };
        if !chosen.iter().any(|c| c.name == m.name) {
            chosen.push(m);
        }
    }
    if chosen.len() > MAX_METRICS {
        return Err(bad(format!("At most {MAX_METRICS} metrics per request.")));
    }
    let top = match p.top.as_deref() {
        None => 10,
        Some(t) => t
            .parse::<usize>()
            .ok()
            .filter(|t| (1..=1000).contains(t))
            .ok_or_else(|| bad("top is a number from 1 to 1000."))?,
    };
    let now = st.clock.now();
    let (start, end) = parse_timespan(p.timespan.as_deref(), now)?;
    let interval = p.interval.as_deref().unwrap_or("PT1H");
    let Some(&(grain_name, grain)) = GRAINS
        .iter()
        .find(|(g, _)| g.eq_ignore_ascii_case(interval))
    else {
        return Err(bad(format!(
            "Invalid interval '{interval}'. Supported: {}.",
            GRAINS.iter().map(|g| g.0).collect::<Vec<_>>().join(", ")
        )));
    };
    if start < now - RETENTION_MINUTES * 60 {
        return Err(bad(
            "Metrics are kept 93 days: the timespan starts before that.",
        ));
    }
    // Points start at the interval boundary at or before the start, as
    // Azure Monitor's do, and cover that whole interval.
    let first = start.div_euclid(grain) * grain;
    let points = (end - first + grain - 1) / grain;
    if points > MAX_POINTS {
        return Err(bad(format!(
            "The timespan and interval ask for {points} data points; at most {MAX_POINTS}."
        )));
    }
    let npoints = usize::try_from(points).unwrap_or(0);
    let mut budget = MAX_ANSWER_POINTS;
    let rows = st
        .store
        .query_metrics(
            &id.to_ascii_lowercase(),
            first.div_euclid(60),
            (end - 1).div_euclid(60),
            grain / 60,
        )
        .await
        .map_err(|e| domain_failure(e.into()))?;
    let mut value = Vec::new();
    for m in chosen {
        let mut aggs: Vec<String> = Vec::new();
        for a in p.aggregation.as_deref().unwrap_or(m.primary).split(',') {
            let a = a.trim().to_ascii_lowercase();
            match a.as_str() {
                "" => {}
                "count" | "total" | "average" => aggs.push(a),
                "minimum" | "maximum" => {
                    return Err(bad(format!(
                        "Aggregation '{a}' is not kept by Keyhaven; use Average, Count or Total."
                    )))
                }
                _ => return Err(bad(format!("Unknown aggregation '{a}'."))),
            }
        }
        let filter = match p.filter.as_deref().filter(|f| !f.trim().is_empty()) {
            Some(f) => parse_filter(f, m)?,
            None => Vec::new(),
        };
        // A row's series (its split dimensions' values), or None if the
        // filter drops it.
        let key_of = |r: &MetricRow| -> Option<Vec<(&'static str, String)>> {
            let mut key = Vec::new();
            for (d, want) in &filter {
                let got = dim_value(d, r);
                if want != "*" && &got != want {
                    return None;
                }
                key.push((*d, got));
            }
            Some(key)
        };
        // The `top` series by requests, then their points.
        let mut totals: BTreeMap<Vec<(&'static str, String)>, i64> = BTreeMap::new();
        for r in &rows {
            if let Some(k) = key_of(r) {
                let t = totals.entry(k).or_default();
                *t = t.saturating_add(r.count);
            }
        }
        let mut keys: Vec<_> = totals.into_iter().collect();
        keys.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        keys.truncate(top);
        if keys.is_empty() && filter.iter().all(|(_, v)| v != "*") {
            keys.push((filter.iter().map(|(d, v)| (*d, v.clone())).collect(), 0));
        }
        let cost = keys.len().saturating_mul(npoints);
        if cost > budget {
            return Err(bad(format!(
                "The request asks for more than {MAX_ANSWER_POINTS} data points; narrow the timespan, the metrics or top."
            )));
        }
        budget -= cost;
        let mut series: BTreeMap<Vec<(&'static str, String)>, Vec<Acc>> = keys
            .into_iter()
            .map(|(k, _)| (k, vec![Acc::default(); npoints]))
            .collect();
        for r in &rows {
            let Some(k) = key_of(r) else { continue };
            let Some(buckets) = series.get_mut(&k) else {
                continue;
            };
            if let Some(b) = usize::try_from((r.minute * 60 - first) / grain)
                .ok()
                .and_then(|i| buckets.get_mut(i))
            {
                b.add(r);
            }
        }
        let timeseries: Vec<Value> = series
            .iter()
            .map(|(key, buckets)| {
                json!({
                    "metadatavalues": key.iter().map(|(d, v)| json!({
                        "name": {"value": d.to_ascii_lowercase(), "localizedValue": d.to_ascii_lowercase()},
                        "value": v,
                    })).collect::<Vec<_>>(),
                    "data": buckets.iter().enumerate().map(|(i, b)| b.point(m.name, first + grain * i as i64, &aggs)).collect::<Vec<_>>(),
                })
            })
            .collect();
        value.push(json!({
            "id": format!("{id}/providers/Microsoft.Insights/metrics/{}", m.name),
            "type": "Microsoft.Insights/metrics",
            "name": {"value": m.name, "localizedValue": m.display},
            "displayDescription": m.description,
            "unit": m.unit,
            "timeseries": timeseries,
            "errorCode": "Success",
        }));
    }
    Ok(reply(
        StatusCode::OK,
        &json!({
            "cost": 0,
            "timespan": format!("{}/{}", keyhaven_wire::oauth::iso8601(start), keyhaven_wire::oauth::iso8601(end)),
            "interval": grain_name,
            "value": value,
            "namespace": "Microsoft.KeyVault/vaults",
            "resourceregion": super::vaults::location_of(&v),
        }),
    ))
}

/// `GET {vault}/providers/Microsoft.Insights/metricDefinitions`.
pub async fn definitions(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<Ctx>>,
    Path((sub, rg, vault)): Path<(String, String, String)>,
) -> Result<Response, ArmFailure> {
    let id = super::vaults::find(&st, &sub, &rg, &vault)
        .await?
        .resource_id();
    st.authz
        .require_action(
            &ctx.caller,
            &id,
            "Microsoft.Insights/metricDefinitions/read",
        )
        .await
        .map_err(domain_failure)?;
    let value: Vec<Value> = METRICS
        .iter()
        .map(|m| {
            json!({
                "id": format!("{id}/providers/microsoft.insights/metricdefinitions/{}", m.name),
                "resourceId": id,
                "namespace": "Microsoft.KeyVault/vaults",
                "name": {"value": m.name, "localizedValue": m.display},
                "displayDescription": m.description,
                "isDimensionRequired": false,
                "unit": m.unit,
                "primaryAggregationType": m.primary,
                "supportedAggregationTypes": ["Average", "Count", "Total"],
                "metricAvailabilities": GRAINS.iter().map(|(g, _)| json!({"timeGrain": g, "retention": "P93D"})).collect::<Vec<_>>(),
                "dimensions": m.dims.iter().map(|d| json!({"value": d, "localizedValue": d})).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(reply(StatusCode::OK, &json!({"value": value})))
}

/// This kind's routes, merged into the plane's router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            &format!("{RG}/Microsoft.KeyVault/vaults/{{name}}/providers/Microsoft.Insights/metrics"),
            routing::get(metrics),
        )
        .route(
            &format!("{RG}/Microsoft.KeyVault/vaults/{{name}}/providers/Microsoft.Insights/metricDefinitions"),
            routing::get(definitions),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(activity: &str, status: i64) -> MetricRow {
        MetricRow {
            activity: activity.into(),
            status,
            count: 1,
            ..MetricRow::default()
        }
    }

    #[test]
    fn filters_split_or_keep_one_value() {
        let hit = &METRICS[0];
        let f = parse_filter("ActivityName eq '*'", hit).ok().unwrap();
        assert_eq!(f, vec![("ActivityName", "*".to_owned())]);
        let result = &METRICS[2];
        let f = parse_filter("activityname eq 'SecretGet' and StatusCode eq '*'", result)
            .ok()
            .unwrap();
        assert_eq!(
            f,
            vec![
                ("ActivityName", "secretget".to_owned()),
                ("StatusCode", "*".to_owned())
            ]
        );
        assert!(
            parse_filter("StatusCode eq '*'", hit).is_err(),
            "ServiceApiHit has no StatusCode"
        );
        assert!(parse_filter("ActivityName ne 'x'", hit).is_err());
        assert!(parse_filter("ActivityName eq x", hit).is_err());
        assert!(parse_filter("ActivityName eq 'a' or ActivityName eq 'b'", hit).is_err());
        assert!(parse_filter("ActivityName eq 'a' and", hit).is_err());
        assert!(parse_filter("ActivityName eq 'unterminated", hit).is_err());
        let f = parse_filter("ActivityName eq 'it''s and  more'", hit)
            .ok()
            .unwrap();
        assert_eq!(f, vec![("ActivityName", "it's and  more".to_owned())]);
        assert_eq!(dim_value("StatusCodeClass", &row("SecretGet", 403)), "4xx");
        assert_eq!(dim_value("ActivityType", &row("KeySign", 200)), "key");
    }

    #[test]
    fn points_aggregate_as_azure_monitor_does() {
        let mut a = Acc::default();
        for (s, ms) in [(200, 10), (200, 30), (503, 20), (429, 0)] {
            a.add(&MetricRow {
                status: s,
                count: 1,
                latency_ms: ms,
                ..MetricRow::default()
            });
        }
        let aggs = ["average".to_owned(), "count".to_owned(), "total".to_owned()];
        let lat = a.point("ServiceApiLatency", 0, &aggs);
        assert_eq!(
            (
                lat["average"].as_f64(),
                lat["count"].as_f64(),
                lat["total"].as_f64()
            ),
            (Some(15.0), Some(4.0), Some(60.0))
        );
        assert_eq!(
            a.point("Availability", 0, &aggs)["average"].as_f64(),
            Some(50.0)
        );
        assert_eq!(
            a.point("SaturationShoebox", 0, &aggs)["average"].as_f64(),
            Some(25.0)
        );
        let empty = Acc::default().point("ServiceApiHit", 60, &aggs);
        assert_eq!(empty["count"].as_f64(), Some(0.0));
        assert!(
            empty.get("average").is_none(),
            "an empty interval has no average"
        );
        assert_eq!(empty["timeStamp"], "1970-01-01T00:01:00Z");
    }

    #[test]
    fn timespans_are_start_slash_end() {
        assert_eq!(parse_timespan(None, 7200).ok().unwrap(), (3600, 7200));
        let (start, end) = parse_timespan(Some("2026-12-04T13:00:00Z/2026-12-04T14:00:00Z"), 0)
            .ok()
            .unwrap();
        assert_eq!(end - start, 3600);
        assert!(parse_timespan(Some("2026-12-04T14:00:00Z/2026-12-04T13:00:00Z"), 0).is_err());
        assert!(parse_timespan(Some("PT1H"), 0).is_err());
        // The Azure CLI's: naive isoformat() times, quoted once more.
        let (s2, e2) = parse_timespan(
            Some("2026-12-04T13%3A00%3A00.123456%2F2026-12-04T14%3A00%3A00.5"),
            0,
        )
        .ok()
        .unwrap();
        assert_eq!((s2, e2), (start, end));
    }
}
