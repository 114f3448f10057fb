//! `keyhaven-storm PLAN OUT`: the timed phases of `scripts/bench-storm`
//! (issue 28's startup storm), driven from a plan that `bench/storm.py`
//! writes after its untimed set-up, so that the same client program drives
//! Keyhaven and OpenBao and costs the shared CPUs as little as it can.
//!
//! storm   one task per client, all released at once: each opens a NEW
//!         TCP connection from its own source address, does the TLS
//!         handshake, sends its sign-in request, takes the token from the
//!         JSON answer, then reads `reads_per_client` secrets on that one
//!         keep-alive connection, checking each answer holds the value.
//! tokens  `token_threads` connections opened before the release sign in
//!         `tokens` times in all (client t uses client t's sign-in).
//!
//! Any error, non-2xx answer, wrong value or connection the server closes
//! fails the run (exit 1, nothing written): no numbers from a run with
//! errors. The answer is written as JSON to OUT: per client the
//! times (seconds after the release) of start, connected, token and done;
//! per token its latency; each phase's wall time, the server's and this
//! process's CPU seconds and the host's TCP counters.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

type Res<T> = Result<T, String>;

/// One HTTP request of the plan.
#[derive(Deserialize, Clone)]
struct Req {
    method: String,
    host: String,
    path: String,
    #[serde(default)]
    headers: Vec<(String, String)>,
    #[serde(default)]
    body: String,
}

/// A secret read and the value its answer must hold.
#[derive(Deserialize)]
struct Read {
    #[serde(flatten)]
    req: Req,
    expect: String,
}

#[derive(Deserialize)]
struct Client {
    source: IpAddr,
    login: Req,
}

#[derive(Deserialize)]
struct Plan {
    addr: IpAddr,
    port: u16,
    /// Server name for SNI and the certificate check.
    sni: String,
    ca: String,
    server_pid: u32,
    /// JSON pointer to the token in the sign-in answer.
    token_pointer: String,
    /// Header carrying the token on reads, and what precedes the token.
    token_header: String,
    #[serde(default)]
    token_prefix: String,
    clients: Vec<Client>,
    reads: Vec<Read>,
    reads_per_client: usize,
    token_threads: usize,
    tokens: usize,
    #[serde(default = "default_settle")]
    settle_secs: f64,
    #[serde(default = "default_timeout")]
    phase_timeout_secs: u64,
}

fn default_settle() -> f64 {
    2.0
}
fn default_timeout() -> u64 {
    300
}

const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// One HTTPS connection; never reconnects.
struct Conn {
    tls: TlsStream<TcpStream>,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(plan: &Plan, tls: &TlsConnector, source: IpAddr) -> Res<Conn> {
        let sock = match plan.addr {
            IpAddr::V4(_) => TcpSocket::new_v4(),
            IpAddr::V6(_) => TcpSocket::new_v6(),
        }
        .map_err(|e| format!("socket: {e}"))?;
        sock.bind(SocketAddr::new(source, 0))
            .map_err(|e| format!("bind {source}: {e}"))?;
        let tcp = tokio::time::timeout(
            IO_TIMEOUT,
            sock.connect(SocketAddr::new(plan.addr, plan.port)),
        )
        .await
        .map_err(|_| "connect: timed out".to_string())?
        .map_err(|e| format!("connect: {e}"))?;
        tcp.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
        let name = rustls::pki_types::ServerName::try_from(plan.sni.clone())
            .map_err(|e| format!("server name {}: {e}", plan.sni))?;
        let tls = tokio::time::timeout(IO_TIMEOUT, tls.connect(name, tcp))
            .await
            .map_err(|_| "TLS handshake: timed out".to_string())?
            .map_err(|e| format!("TLS handshake: {e}"))?;
        Ok(Conn {
            tls,
            buf: Vec::with_capacity(8192),
        })
    }

    async fn fill(&mut self, what: &str) -> Res<()> {
        let mut chunk = [0u8; 16384];
        let n = tokio::time::timeout(IO_TIMEOUT, self.tls.read(&mut chunk))
            .await
            .map_err(|_| format!("{what}: timed out"))?
            .map_err(|e| format!("{what}: {e}"))?;
        if n == 0 {
            return Err(format!("{what}: the server closed the connection"));
        }
        self.buf
            .extend_from_slice(chunk.get(..n).unwrap_or_default());
        Ok(())
    }

    /// Index just past the first `\r\n` in the buffer, filling as needed.
    async fn line_end(&mut self, what: &str) -> Res<usize> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                return Ok(i + 2);
            }
            self.fill(what).await?;
        }
    }

    /// Sends `req` (with one extra header) and returns the body of its 2xx answer.
    async fn call(&mut self, req: &Req, extra: Option<(&str, &str)>) -> Res<Vec<u8>> {
        let what = format!(
            "{} {}{}",
            req.method,
            req.host,
            req.path.split('?').next().unwrap_or("")
        );
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\n",
            req.method, req.path, req.host
        );
        for (k, v) in req
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(extra)
        {
            head.push_str(k);
            head.push_str(": ");
            head.push_str(v);
            head.push_str("\r\n");
        }
        if !req.body.is_empty() || matches!(req.method.as_str(), "POST" | "PUT" | "PATCH") {
            head.push_str(&format!("Content-Length: {}\r\n", req.body.len()));
        }
        head.push_str("\r\n");
        head.push_str(&req.body);
        tokio::time::timeout(IO_TIMEOUT, self.tls.write_all(head.as_bytes()))
            .await
            .map_err(|_| format!("{what}: send timed out"))?
            .map_err(|e| format!("{what}: send: {e}"))?;
        let end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            self.fill(&what).await?;
        };
        let head: Vec<u8> = self.buf.drain(..end + 4).collect();
        let head = String::from_utf8_lossy(head.get(..end).unwrap_or_default()).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("{what}: bad status line {status_line:?}"))?;
        let (mut length, mut chunked, mut close) =
            (0usize, false, status_line.starts_with("HTTP/1.0"));
        for l in lines {
            let Some((k, v)) = l.split_once(':') else {
                continue;
            };
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase());
            match k.as_str() {
                "content-length" => {
                    length = v
                        .parse()
                        .map_err(|_| format!("{what}: bad Content-Length"))?
                }
                "transfer-encoding" => chunked = v.contains("chunked"),
                "connection" => close = v == "close",
                _ => {}
            }
        }
        let body = if chunked {
            let mut out = Vec::new();
            loop {
                let e = self.line_end(&what).await?;
                let line: Vec<u8> = self.buf.drain(..e).collect();
                let size = String::from_utf8_lossy(&line);
                let size = size.trim().split(';').next().unwrap_or_default();
                let n = usize::from_str_radix(size, 16)
                    .map_err(|_| format!("{what}: bad chunk size {size:?}"))?;
                if n == 0 {
                    loop {
                        let e = self.line_end(&what).await?;
                        self.buf.drain(..e);
                        if e == 2 {
                            break;
                        }
                    }
                    break out;
                }
                self.take_into(n + 2, &mut out, &what).await?;
                out.truncate(out.len() - 2);
            }
        } else {
            let mut out = Vec::with_capacity(length);
            self.take_into(length, &mut out, &what).await?;
            out
        };
        if !(200..300).contains(&status) {
            let text = String::from_utf8_lossy(body.get(..body.len().min(300)).unwrap_or_default())
                .into_owned();
            return Err(format!("{what}: HTTP {status} {text}"));
        }
        if close {
            return Err(format!("{what}: the server closed the connection"));
        }
        Ok(body)
    }

    async fn take_into(&mut self, n: usize, out: &mut Vec<u8>, what: &str) -> Res<()> {
        while self.buf.len() < n {
            self.fill(what).await?;
        }
        out.extend(self.buf.drain(..n));
        Ok(())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn token_of(plan: &Plan, body: &[u8]) -> Res<String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("sign-in answer: {e}"))?;
    v.pointer(&plan.token_pointer)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| format!("no token at {} in the sign-in answer", plan.token_pointer))
}

async fn read(plan: &Plan, conn: &mut Conn, token: &str, k: usize) -> Res<()> {
    let r = plan.reads.get(k).ok_or("no such read")?;
    let auth = format!("{}{token}", plan.token_prefix);
    let body = conn.call(&r.req, Some((&plan.token_header, &auth))).await?;
    if find(&body, r.expect.as_bytes()).is_none() {
        return Err(format!("GET {}: wrong value", r.req.path));
    }
    Ok(())
}

/// User + system CPU seconds of a process (`/proc/PID/stat`, USER_HZ 100).
fn cpu_secs(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (tick(11) + tick(12)) / 100.0
}

const NET_COUNTERS: [&str; 4] = [
    "ListenOverflows",
    "ListenDrops",
    "TCPSynRetrans",
    "SyncookiesSent",
];

/// Host-wide TCP counters: SYNs dropped on a full accept queue, resent SYNs.
fn net_counters() -> Vec<(String, i64)> {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for pair in lines.chunks(2) {
        let (Some(names), Some(values)) = (pair.first(), pair.get(1)) else {
            continue;
        };
        for (k, v) in names
            .split_whitespace()
            .skip(1)
            .zip(values.split_whitespace().skip(1))
        {
            if NET_COUNTERS.contains(&k) {
                out.push((k.to_string(), v.parse().unwrap_or(0)));
            }
        }
    }
    out
}

fn net_delta(before: &[(String, i64)]) -> Value {
    let mut m = serde_json::Map::new();
    for (k, v) in net_counters() {
        let b = before
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| *v)
            .unwrap_or(0);
        m.insert(k, json!(v - b));
    }
    Value::Object(m)
}

/// Runs `n` tasks that each `prepare` (untimed), wait for one release, then
/// run `body`; returns the release instant and the bodies' results, or every
/// error.
async fn phase<S, T, P, PF, B, BF>(
    n: usize,
    timeout: Duration,
    prepare: P,
    body: B,
) -> Res<(Instant, Vec<T>)>
where
    S: Send + 'static,
    T: Send + 'static,
    P: Fn(usize) -> PF,
    PF: std::future::Future<Output = Res<S>> + Send + 'static,
    B: Fn(usize, S) -> BF + Clone + Send + 'static,
    BF: std::future::Future<Output = Res<T>> + Send + 'static,
{
    let (go, wait) = tokio::sync::watch::channel(false);
    let ready = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let (prep, body, mut wait, ready) = (prepare(i), body.clone(), wait.clone(), ready.clone());
        tasks.push(tokio::spawn(async move {
            let state = prep.await;
            ready.fetch_add(1, Ordering::SeqCst);
            let state = state?;
            wait.wait_for(|go| *go)
                .await
                .map_err(|_| "never released".to_string())?;
            body(i, state).await
        }));
    }
    let deadline = Instant::now() + timeout;
    while ready.load(Ordering::SeqCst) < n {
        if Instant::now() > deadline {
            return Err("tasks not ready in time".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Every task is parked on the release (or failed preparing).
    tokio::time::sleep(Duration::from_millis(50)).await;
    let release = Instant::now();
    let _ = go.send(true);
    let mut out = Vec::with_capacity(n);
    let mut errors = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1));
        match tokio::time::timeout(left, t).await {
            Ok(Ok(Ok(v))) => out.push(v),
            Ok(Ok(Err(e))) => errors.push(format!("task {i}: {e}")),
            Ok(Err(e)) => errors.push(format!("task {i}: {e}")),
            Err(_) => errors.push(format!(
                "task {i}: still running after the phase's time-out"
            )),
        }
    }
    if errors.is_empty() {
        Ok((release, out))
    } else {
        let n = errors.len();
        errors.truncate(10);
        Err(format!(
            "{n} errors; refusing to report numbers:\n  {}",
            errors.join("\n  ")
        ))
    }
}

fn secs(a: Instant, b: Instant) -> f64 {
    b.saturating_duration_since(a).as_secs_f64()
}

async fn run(plan: Arc<Plan>, tls: TlsConnector) -> Res<Value> {
    if plan.reads.is_empty() || plan.clients.len() < plan.token_threads.max(1) {
        return Err("the plan needs reads and at least token_threads clients".into());
    }
    let timeout = Duration::from_secs(plan.phase_timeout_secs);
    let pid = plan.server_pid.to_string();

    // storm
    let (net, cpu_s, cpu_c) = (net_counters(), cpu_secs(&pid), cpu_secs("self"));
    let (p, t) = (plan.clone(), tls.clone());
    let (release, res) = phase(
        plan.clients.len(),
        timeout,
        |_| async { Ok(()) },
        move |i, ()| {
            let (plan, tls) = (p.clone(), t.clone());
            async move {
                let client = plan.clients.get(i).ok_or("no such client")?;
                let t0 = Instant::now();
                let mut conn = Conn::open(&plan, &tls, client.source).await?;
                let t1 = Instant::now();
                let body = conn.call(&client.login, None).await?;
                let token = token_of(&plan, &body)?;
                let t2 = Instant::now();
                for k in 0..plan.reads_per_client {
                    read(&plan, &mut conn, &token, (i + k) % plan.reads.len()).await?;
                }
                Ok([t0, t1, t2, Instant::now()])
            }
        },
    )
    .await?;
    let storm = json!({
        "clients": res.iter().map(|r| r.map(|t| secs(release, t))).collect::<Vec<_>>(),
        "server_cpu": cpu_secs(&pid) - cpu_s,
        "client_cpu": cpu_secs("self") - cpu_c,
        "net": net_delta(&net),
    });

    tokio::time::sleep(Duration::from_secs_f64(plan.settle_secs)).await;

    // tokens
    let per = (plan.tokens / plan.token_threads.max(1)).max(1);
    let (p, t) = (plan.clone(), tls.clone());
    let (cpu_s, cpu_c) = (cpu_secs(&pid), cpu_secs("self"));
    let (release, res) = phase(
        plan.token_threads,
        timeout,
        move |i| {
            let (plan, tls) = (p.clone(), t.clone());
            async move {
                let client = plan.clients.get(i).ok_or("no such client")?;
                Conn::open(&plan, &tls, client.source).await
            }
        },
        {
            let plan = plan.clone();
            move |i, mut conn: Conn| {
                let plan = plan.clone();
                async move {
                    let client = plan.clients.get(i).ok_or("no such client")?;
                    let mut lat = Vec::with_capacity(per);
                    for _ in 0..per {
                        let a = Instant::now();
                        let body = conn.call(&client.login, None).await?;
                        token_of(&plan, &body)?;
                        lat.push(a.elapsed().as_secs_f64());
                    }
                    Ok((Instant::now(), lat))
                }
            }
        },
    )
    .await?;
    let wall = res
        .iter()
        .map(|(t, _)| secs(release, *t))
        .fold(0.0, f64::max);
    let tokens = json!({
        "tokens": per * plan.token_threads,
        "wall": wall,
        "lat": res.iter().flat_map(|(_, l)| l.iter().copied()).collect::<Vec<_>>(),
        "server_cpu": cpu_secs(&pid) - cpu_s,
        "client_cpu": cpu_secs("self") - cpu_c,
    });
    Ok(json!({"storm": storm, "tokens": tokens}))
}

fn load(path: &str) -> Res<(Plan, TlsConnector)> {
    let text = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    let plan: Plan = serde_json::from_slice(&text).map_err(|e| format!("{path}: {e}"))?;
    let pem = std::fs::read(&plan.ca).map_err(|e| format!("{}: {e}", plan.ca))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| format!("{}: {e}", plan.ca))?;
        roots.add(cert).map_err(|e| format!("{}: {e}", plan.ca))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok((plan, TlsConnector::from(Arc::new(config))))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(plan_path), Some(out_path)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: keyhaven-storm PLAN.json OUT.json");
        std::process::exit(2);
    };
    let result = load(plan_path).and_then(|(plan, tls)| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("runtime: {e}"))?;
        rt.block_on(run(Arc::new(plan), tls))
    });
    match result.and_then(|v| {
        std::fs::write(out_path, v.to_string()).map_err(|e| format!("{out_path}: {e}"))
    }) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("keyhaven-storm: {e}");
            std::process::exit(1);
        }
    }
}
