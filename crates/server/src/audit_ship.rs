//! The HTTP audit destination: records for endpoints named by diagnostic
//! settings (`keyhavenHttpEndpoint`) are batched (up to 100 records, or every
//! second) and POSTed as a JSON array; a failed batch is retried with
//! exponential backoff (3 attempts), then dropped with an error in the
//! server log — the chained file keeps every record regardless.
//!
//! A diagnostic setting is written by a vault's contributor, not by the
//! operator, so where it may send is the operator's call: only hosts on the
//! allow-list (`--audit-http-allow`) are accepted, and a connection goes only
//! to addresses that are public or that the list names itself (loopback,
//! link-local and private ranges must be listed as addresses or CIDRs, so a
//! name that resolves there — DNS rebinding included — is refused at
//! connect time). The queue and the sends in flight are bounded; past them,
//! records are dropped from this destination with a warning.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};

const BATCH: usize = 100;
const FLUSH: Duration = Duration::from_secs(1);
const ATTEMPTS: u32 = 3;
/// Records queued for shipping, all destinations together.
const QUEUE: usize = 10_000;
/// Batches being sent (with their retries) at once.
const IN_FLIGHT: usize = 4;

/// Where the HTTP audit destination may send, as the operator configured it.
#[derive(Debug, Clone, Default)]
pub struct AllowList {
    names: Vec<String>,
    nets: Vec<(IpAddr, u8)>,
}

impl AllowList {
    /// Parses entries: a host name (`logs.example.com`, or `*.example.com`
    /// for its subdomains), an IP address, or a CIDR (`10.1.0.0/16`).
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        let mut list = Self::default();
        for e in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            let (addr, bits) = match e.split_once('/') {
                Some((a, b)) => (a, Some(b)),
                None => (e, None),
            };
            match addr.parse::<IpAddr>() {
                Ok(ip) => {
                    let max = if ip.is_ipv4() { 32 } else { 128 };
                    let bits = match bits {
                        Some(b) => b
                            .parse::<u8>()
                            .ok()
                            .filter(|b| *b <= max)
                            .ok_or_else(|| format!("'{e}' is not a valid CIDR"))?,
                        None => max,
                    };
                    list.nets.push((ip, bits));
                }
                Err(_) if bits.is_none() && valid_name(e) => {
                    list.names.push(e.to_ascii_lowercase())
                }
                Err(_) => return Err(format!("'{e}' is not a host name, an IP address or a CIDR")),
            }
        }
        Ok(list)
    }

    /// Checks an endpoint URL: http(s), no credentials in it, and a host the
    /// list allows. The error never repeats the URL.
    pub fn check_url(&self, endpoint: &str) -> Result<(), &'static str> {
        let url = url::Url::parse(endpoint)
            .map_err(|_| "keyhavenHttpEndpoint must be an http(s) URL.")?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("keyhavenHttpEndpoint must be an http(s) URL.");
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("keyhavenHttpEndpoint may not carry credentials.");
        }
        if self.host_allowed(&url) {
            Ok(())
        } else if self.names.is_empty() && self.nets.is_empty() {
            Err("HTTP audit destinations are off: the operator allows hosts with keyhaven serve --audit-http-allow.")
        } else {
            Err("keyhavenHttpEndpoint's host is not on the operator's allow-list (keyhaven serve --audit-http-allow).")
        }
    }

    /// An HTTP client that follows no redirects and connects only where
    /// [`Self::may_connect`] allows (checked on every resolved address, so a
    /// name that resolves somewhere else is refused at connect time).
    pub fn agent(self: &Arc<Self>, timeout: Duration) -> ureq::Agent {
        let allow = Arc::clone(self);
        ureq::AgentBuilder::new()
            .timeout(timeout)
            .redirects(0)
            .resolver(move |netloc: &str| -> std::io::Result<Vec<SocketAddr>> {
                use std::net::ToSocketAddrs as _;
                let ok: Vec<SocketAddr> = netloc
                    .to_socket_addrs()?
                    .filter(|a| allow.may_connect(a.ip()))
                    .collect();
                if ok.is_empty() {
                    Err(std::io::Error::new(
                        std::io::ErrorKind::PermissionDenied,
                        "the host resolves only to addresses the allow-list does not permit",
                    ))
                } else {
                    Ok(ok)
                }
            })
            .build()
    }

    /// True if the list names the URL's host (as a name, an address or a
    /// CIDR covering it).
    pub fn host_allowed(&self, url: &url::Url) -> bool {
        match url.host() {
            Some(url::Host::Ipv4(v4)) => self.covers(IpAddr::V4(v4)),
            Some(url::Host::Ipv6(v6)) => self.covers(IpAddr::V6(v6)),
            Some(url::Host::Domain(d)) => self.names.iter().any(|n| name_matches(n, d)),
            None => false,
        }
    }

    /// True if a connection may go to `ip`: a public address, or one the
    /// list names as an address or CIDR.
    pub fn may_connect(&self, ip: IpAddr) -> bool {
        self.covers(ip) || is_public(ip)
    }

    fn covers(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets
            .iter()
            .any(|(net, bits)| in_net(ip, net.to_canonical(), *bits))
    }
}

fn valid_name(n: &str) -> bool {
    let n = n.strip_prefix("*.").unwrap_or(n);
    !n.is_empty()
        && n.len() <= 253
        && n.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn name_matches(entry: &str, host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    match entry.strip_prefix("*.") {
        Some(parent) => host.len() > parent.len() + 1 && host.ends_with(&format!(".{parent}")),
        None => host == entry,
    }
}

fn in_net(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Not loopback, private, link-local, shared (CGNAT), unspecified,
/// multicast, broadcast or documentation space.
fn is_public(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || o[0] == 0
                || o[0] >= 240
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || (o[0] == 198 && (o[1] & 0xfe) == 18))
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] & 0xffc0) == 0xfec0
                || (s[0] == 0x64 && s[1] == 0xff9b)
                || (s[0] == 0x2001 && s[1] == 0x0db8))
        }
    }
}

/// Sends records to HTTP endpoints.
#[derive(Debug, Clone)]
pub struct Shipper {
    tx: mpsc::Sender<(String, String)>,
    dropped: Arc<AtomicU64>,
}

impl Shipper {
    /// Starts the shipping task, sending only where `allow` permits.
    pub fn start(allow: Arc<AllowList>) -> Self {
        let (tx, mut rx) = mpsc::channel::<(String, String)>(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
        let lost = Arc::clone(&dropped);
        let send = move |endpoint: String, batch: Vec<String>| {
            let Ok(permit) = Arc::clone(&in_flight).try_acquire_owned() else {
                let n = batch.len() as u64;
                if lost.fetch_add(n, Ordering::Relaxed) == 0 {
                    tracing::warn!("audit HTTP destination is behind: dropping batches");
                }
                return;
            };
            let allow = Arc::clone(&allow);
            tokio::spawn(async move {
                send(&allow, endpoint, batch).await;
                drop(permit);
            });
        };
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
                                send(endpoint, full);
                            }
                        }
                        None => return,
                    },
                    _ = tick.tick() => {
                        for (endpoint, batch) in pending.drain() {
                            if !batch.is_empty() {
                                send(endpoint, batch);
                            }
                        }
                    }
                }
            }
        });
        Self { tx, dropped }
    }

    /// Queues a record (a JSON line) for `endpoint`; dropped (and counted)
    /// when the queue is full.
    pub fn ship(&self, endpoint: &str, line: &str) {
        if self
            .tx
            .try_send((endpoint.to_owned(), line.to_owned()))
            .is_err()
            && self.dropped.fetch_add(1, Ordering::Relaxed) == 0
        {
            tracing::warn!("audit HTTP destination queue is full: dropping records");
        }
    }

    /// Records dropped so far because the queue or the senders were full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

async fn send(allow: &Arc<AllowList>, endpoint: String, batch: Vec<String>) {
    // A setting stored before the allow-list (or under another one) is
    // checked again here.
    if allow.check_url(&endpoint).is_err() {
        tracing::warn!(
            records = batch.len(),
            "audit records not shipped: the HTTP destination is not allowed"
        );
        return;
    }
    let body = format!("[{}]", batch.join(","));
    let mut wait = Duration::from_secs(1);
    for attempt in 1..=ATTEMPTS {
        let (e, b) = (endpoint.clone(), body.clone());
        let allow = Arc::clone(allow);
        let ok = tokio::task::spawn_blocking(move || {
            allow
                .agent(Duration::from_secs(10))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> AllowList {
        AllowList::parse(&entries.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap()
    }

    /// Finding 9: any http(s) URL was accepted, so a vault contributor could
    /// make the server POST to internal addresses.
    #[test]
    fn only_listed_hosts_and_public_addresses_are_reached() {
        let none = list(&[]);
        assert!(none.check_url("https://logs.example.com/in").is_err());
        let l = list(&[
            "logs.example.com",
            "*.corp.example",
            "127.0.0.1",
            "10.9.0.0/16",
        ]);
        assert!(l.check_url("https://logs.example.com/in").is_ok());
        assert!(l.check_url("https://LOGS.example.com.:8443/in").is_ok());
        assert!(l.check_url("https://a.corp.example/x").is_ok());
        assert!(l.check_url("https://corp.example/x").is_err());
        assert!(l.check_url("http://127.0.0.1:9000/in").is_ok());
        assert!(l.check_url("http://127.0.0.2:9000/in").is_err());
        assert!(l
            .check_url("http://169.254.169.254/latest/meta-data")
            .is_err());
        assert!(l.check_url("http://[::ffff:169.254.169.254]/").is_err());
        assert!(l.check_url("http://10.9.3.4/").is_ok());
        assert!(l.check_url("http://user:pw@logs.example.com/").is_err());
        assert!(l.check_url("file:///etc/passwd").is_err());
        assert!(l.check_url("http://logs.example.com.evil.test/").is_err());
        // A listed name that resolves to a private address is refused at
        // connect time; listed addresses and public ones pass.
        assert!(!l.may_connect("192.168.1.1".parse().unwrap()));
        assert!(!l.may_connect("::1".parse().unwrap()));
        assert!(!l.may_connect("100.64.0.1".parse().unwrap()));
        assert!(
            !l.may_connect("64:ff9b::a00:1".parse().unwrap()),
            "NAT64 of 10.0.0.1"
        );
        assert!(!l.may_connect("198.18.0.1".parse().unwrap()));
        assert!(l.may_connect("127.0.0.1".parse().unwrap()));
        assert!(l.may_connect("::ffff:127.0.0.1".parse().unwrap()));
        assert!(l.may_connect("10.9.200.1".parse().unwrap()));
        assert!(l.may_connect("8.8.8.8".parse().unwrap()));
        assert!(AllowList::parse(&["10.0.0.0/40".into()]).is_err());
        assert!(AllowList::parse(&["bad host".into()]).is_err());
    }

    #[tokio::test]
    async fn the_queue_is_bounded() {
        let s = Shipper::start(Arc::new(list(&[])));
        for _ in 0..QUEUE + 500 {
            s.ship("http://127.0.0.1:1/", "{}");
        }
        assert!(
            s.dropped() >= 1,
            "past the queue, records are dropped, not held"
        );
    }
}
