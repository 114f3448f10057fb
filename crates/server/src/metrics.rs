//! Metrics in Prometheus' text format, on the admin listener: requests by
//! plane, vault, operation and status, latency histograms, and Azure Key
//! Vault's metric names (`ServiceApiHit`, `ServiceApiLatency`,
//! `ServiceApiResult`, `Availability`, `SaturationShoebox`) computed from the
//! same counters. Hand-rolled to keep the dependency tree lean.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// Latency bucket bounds, seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];
/// Distinct label sets kept before new ones fold into `other`.
const MAX_SERIES: usize = 10_000;

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// A vault's (ARM id, lower case) requests of one minute, operation and
/// status: (count, total latency in ms).
type MinuteKey = (String, i64, String, i64);

#[derive(Default)]
struct Inner {
    requests: BTreeMap<(String, String, String, u16), u64>,
    latency: BTreeMap<(String, String), Histogram>,
    /// Data-plane minutes not yet added to the store (Azure Monitor's
    /// metrics API reads them from there, summed over nodes).
    minutes: BTreeMap<MinuteKey, (i64, i64)>,
}

/// The node's metrics.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// Adds `count` requests and their latency to a minute; a key the map has
/// no room for folds into operation `other`.
fn add_minute(
    minutes: &mut BTreeMap<MinuteKey, (i64, i64)>,
    key: MinuteKey,
    count: i64,
    latency_ms: i64,
) {
    let key = if minutes.len() >= MAX_SERIES && !minutes.contains_key(&key) {
        (key.0, key.1, "other".into(), key.3)
    } else {
        key
    };
    let e = minutes.entry(key).or_default();
    e.0 = e.0.saturating_add(count);
    e.1 = e.1.saturating_add(latency_ms);
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// Records one request.
    pub fn observe(&self, plane: &str, vault: &str, operation: &str, status: u16, seconds: f64) {
        let Ok(mut m) = self.inner.lock() else {
            return;
        };
        let key = (
            plane.to_owned(),
            vault.to_owned(),
            operation.to_owned(),
            status,
        );
        let key = if m.requests.len() >= MAX_SERIES && !m.requests.contains_key(&key) {
            (plane.to_owned(), "other".into(), "other".into(), status)
        } else {
            key
        };
        *m.requests.entry(key).or_default() += 1;
        let lkey = (plane.to_owned(), vault.to_owned());
        let lkey = if m.latency.len() >= MAX_SERIES && !m.latency.contains_key(&lkey) {
            (plane.to_owned(), "other".into())
        } else {
            lkey
        };
        let h = m.latency.entry(lkey).or_default();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                if let Some(c) = h.counts.get_mut(i) {
                    *c += 1;
                }
            }
        }
        h.sum += seconds;
        h.count += 1;
    }

    /// Counts one data-plane request of the vault `vault_id` (its ARM id)
    /// in its minute, for the store's metrics.
    pub fn observe_minute(&self, vault_id: &str, now: i64, operation: &str, status: u16, ms: i64) {
        let Ok(mut m) = self.inner.lock() else {
            return;
        };
        let key = (
            vault_id.to_ascii_lowercase(),
            now.div_euclid(60),
            operation.to_owned(),
            i64::from(status),
        );
        add_minute(&mut m.minutes, key, 1, ms);
    }

    /// Takes the minutes counted since the last take, to add to the store.
    pub fn take_minutes(&self) -> Vec<keyhaven_core::MetricRow> {
        let Ok(mut m) = self.inner.lock() else {
            return Vec::new();
        };
        std::mem::take(&mut m.minutes)
            .into_iter()
            .map(|((vault, minute, activity, status), (count, latency_ms))| {
                keyhaven_core::MetricRow {
                    vault,
                    minute,
                    activity,
                    status,
                    count,
                    latency_ms,
                }
            })
            .collect()
    }

    /// Puts back minutes the store did not take, to try again (a key the
    /// map has no room for folds into operation `other`, as new ones do).
    pub fn restore_minutes(&self, rows: Vec<keyhaven_core::MetricRow>) {
        let Ok(mut m) = self.inner.lock() else {
            return;
        };
        for r in rows {
            add_minute(
                &mut m.minutes,
                (r.vault, r.minute, r.activity, r.status),
                r.count,
                r.latency_ms,
            );
        }
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let Ok(m) = self.inner.lock() else {
            return String::new();
        };
        let mut out = String::new();
        render_own(&m, &mut out);
        render_azure(&m, &mut out);
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Keyhaven's own series: requests and the latency histogram.
fn render_own(m: &Inner, out: &mut String) {
    header(
        out,
        "keyhaven_requests_total",
        "counter",
        "Requests by plane, vault, operation and HTTP status.",
    );
    for ((plane, vault, op, status), n) in &m.requests {
        let _ = writeln!(
            out,
            "keyhaven_requests_total{{plane=\"{}\",vault=\"{}\",operation=\"{}\",status=\"{status}\"}} {n}",
            escape(plane),
            escape(vault),
            escape(op)
        );
    }
    header(
        out,
        "keyhaven_request_duration_seconds",
        "histogram",
        "Request latency by plane and vault.",
    );
    for ((plane, vault), h) in &m.latency {
        let labels = format!("plane=\"{}\",vault=\"{}\"", escape(plane), escape(vault));
        for (bound, c) in BUCKETS.iter().zip(h.counts.iter()) {
            let _ = writeln!(
                out,
                "keyhaven_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {c}"
            );
        }
        let _ = writeln!(
            out,
            "keyhaven_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(
            out,
            "keyhaven_request_duration_seconds_sum{{{labels}}} {}",
            h.sum
        );
        let _ = writeln!(
            out,
            "keyhaven_request_duration_seconds_count{{{labels}}} {}",
            h.count
        );
    }
}

/// Azure Key Vault's metric names, computed over the data plane.
fn render_azure(m: &Inner, out: &mut String) {
    let mut hits: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    let mut results: BTreeMap<(&str, &str, u16), u64> = BTreeMap::new();
    let mut per_vault: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for ((plane, vault, op, status), n) in &m.requests {
        if plane != "data" {
            continue;
        }
        *hits.entry((vault, op)).or_default() += n;
        *results.entry((vault, op, *status)).or_default() += n;
        let e = per_vault.entry(vault).or_default();
        e.0 += n;
        if *status < 500 && *status != 429 {
            e.1 += n;
        }
    }
    header(
        out,
        "ServiceApiHit",
        "counter",
        "Number of total service API hits (Azure Key Vault metric).",
    );
    for ((vault, op), n) in &hits {
        let _ = writeln!(
            out,
            "ServiceApiHit{{vault=\"{}\",ActivityName=\"{}\"}} {n}",
            escape(vault),
            escape(op)
        );
    }
    header(
        out,
        "ServiceApiResult",
        "counter",
        "Number of total service API results (Azure Key Vault metric).",
    );
    for ((vault, op, status), n) in &results {
        let _ = writeln!(
            out,
            "ServiceApiResult{{vault=\"{}\",ActivityName=\"{}\",StatusCode=\"{status}\"}} {n}",
            escape(vault),
            escape(op)
        );
    }
    header(
        out,
        "ServiceApiLatency",
        "gauge",
        "Overall latency of service API requests, milliseconds (Azure Key Vault metric).",
    );
    for ((plane, vault), h) in &m.latency {
        if plane == "data" && h.count > 0 {
            let avg = h.sum * 1000.0 / h.count as f64;
            let _ = writeln!(
                out,
                "ServiceApiLatency{{vault=\"{}\"}} {avg:.3}",
                escape(vault)
            );
        }
    }
    header(out, "Availability", "gauge", "Vault requests served without a server error or throttling, percent (Azure Key Vault metric).");
    for (vault, (all, ok)) in &per_vault {
        let pct = if *all == 0 {
            100.0
        } else {
            *ok as f64 * 100.0 / *all as f64
        };
        let _ = writeln!(out, "Availability{{vault=\"{}\"}} {pct:.3}", escape(vault));
    }
    header(
        out,
        "SaturationShoebox",
        "gauge",
        "Vault saturation, percent of requests throttled (Azure Key Vault metric).",
    );
    for (vault, (all, _)) in &per_vault {
        let throttled: u64 = results
            .iter()
            .filter(|((v, _, s), _)| v == vault && *s == 429)
            .map(|(_, n)| n)
            .sum();
        let pct = if *all == 0 {
            0.0
        } else {
            throttled as f64 * 100.0 / *all as f64
        };
        let _ = writeln!(
            out,
            "SaturationShoebox{{vault=\"{}\"}} {pct:.3}",
            escape(vault)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_histograms_and_azure_names_render() {
        let m = Metrics::default();
        m.observe("data", "dev", "SecretGet", 200, 0.002);
        m.observe("data", "dev", "SecretGet", 429, 0.0001);
        m.observe("management", "", "VaultGet", 200, 0.01);
        let text = m.render();
        assert!(text.contains(
            "keyhaven_requests_total{plane=\"data\",vault=\"dev\",operation=\"SecretGet\",status=\"200\"} 1"
        ));
        assert!(text.contains("keyhaven_request_duration_seconds_bucket{plane=\"data\",vault=\"dev\",le=\"0.0025\"} 2"));
        assert!(text.contains("ServiceApiHit{vault=\"dev\",ActivityName=\"SecretGet\"} 2"));
        assert!(text.contains("Availability{vault=\"dev\"} 50.000"));
        assert!(text.contains("SaturationShoebox{vault=\"dev\"} 50.000"));
    }
}
