//! The HTTP audit destination: records for endpoints named by diagnostic
//! settings (`keyhavenHttpEndpoint`) are batched (up to 100 records, or every
//! second) and POSTed as a JSON array; a failed batch is retried with
//! exponential backoff (3 attempts), then dropped with an error in the
//! server log — the chained file keeps every record regardless.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::mpsc;

const BATCH: usize = 100;
const FLUSH: Duration = Duration::from_secs(1);
const ATTEMPTS: u32 = 3;

/// Sends records to HTTP endpoints.
#[derive(Debug, Clone)]
pub struct Shipper {
    tx: mpsc::UnboundedSender<(String, String)>,
}

impl Shipper {
    /// Starts the shipping task.
    pub fn start() -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<(String, String)>();
        tokio::spawn(async move {
            let mut pending: HashMap<String, Vec<String>> = HashMap::new();
            let mut tick = tokio::time::interval(FLUSH);
            loop {
                tokio::select! {
                    item = rx.recv() => match item {
                        Some((endpoint, line)) => {
                            let batch = pending.entry(endpoint.clone()).or_default();
                            batch.push(line);
                            if batch.len() >= BATCH {
                                let full = std::mem::take(batch);
                                tokio::spawn(send(endpoint, full));
                            }
                        }
                        None => return,
                    },
                    _ = tick.tick() => {
                        for (endpoint, batch) in pending.drain() {
                            if !batch.is_empty() {
                                tokio::spawn(send(endpoint, batch));
                            }
                        }
                    }
                }
            }
        });
        Self { tx }
    }

    /// Queues a record (a JSON line) for `endpoint`.
    pub fn ship(&self, endpoint: &str, line: &str) {
        let _ = self.tx.send((endpoint.to_owned(), line.to_owned()));
    }
}

async fn send(endpoint: String, batch: Vec<String>) {
    let body = format!("[{}]", batch.join(","));
    let mut wait = Duration::from_secs(1);
    for attempt in 1..=ATTEMPTS {
        let (e, b) = (endpoint.clone(), body.clone());
        let ok = tokio::task::spawn_blocking(move || {
            ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(10))
                .redirects(0)
                .build()
                .post(&e)
                .set("Content-Type", "application/json")
                .send_string(&b)
                .is_ok()
        })
        .await
        .unwrap_or(false);
        if ok {
            return;
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
    }
    tracing::error!(
        records = batch.len(),
        "audit records could not be shipped to an HTTP destination"
    );
}
