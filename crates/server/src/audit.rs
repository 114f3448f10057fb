//! The audit log: one record per request of every plane (and so per token
//! issued or refused), in Azure's `AuditEvent` shape, appended as JSON lines
//! to `<data dir>/audit/audit.jsonl` and rotated by size. Records are
//! hash-chained: each carries `keyhavenChain {seq, prev, hash}` where `hash`
//! is SHA-256 over the previous hash and the record without its chain field
//! (keys sorted), so `keyhaven audit verify` detects an edited, dropped,
//! inserted or reordered record. Records never hold request bodies, secret
//! values, key material or tokens: only ids, URIs, statuses and claims.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::{json, Map, Value};

/// Records per file before rotation (by size).
const ROTATE_BYTES: u64 = 64 * 1024 * 1024;
const CURRENT: &str = "audit.jsonl";
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What a plane tells the audit log about a request it handled.
#[derive(Debug, Clone, Default)]
pub struct AuditNote {
    /// Azure's `operationName` (`SecretGet`, `VaultPut`, `Authentication`, …).
    pub operation: Option<String>,
    /// The resource the request was about (a vault's ARM id).
    pub resource_id: Option<String>,
    /// The object's id (`https://…/secrets/x/ver`), when there is one.
    pub object_id: Option<String>,
    /// The caller's claims: oid, appid, tid, upn.
    pub identity: Option<Map<String, Value>>,
    /// Whether the vault decides with RBAC.
    pub rbac: Option<bool>,
    /// Whether an access policy admitted the caller.
    pub access_policy_match: Option<bool>,
    /// More `properties` (a sign-in's Conditional Access results).
    pub properties: Option<Map<String, Value>>,
}

/// Connection facts the accept loop records (for `tlsVersion`).
#[derive(Debug, Clone, Copy)]
pub struct TlsVersion(pub &'static str);

struct Writer {
    dir: PathBuf,
    /// Shared with the sync thread, which flushes it without the lock.
    file: std::sync::Arc<File>,
    size: u64,
    seq: u64,
    last: String,
    /// Batches written so far (what a sync covers is counted in these).
    written: u64,
    /// A sync failed (here or at rotation): every sync reports failure until
    /// `append` (the recovery record) writes and syncs again. After a failed
    /// `fdatasync` the kernel may report the next one as fine although the
    /// pages it lost are gone.
    sync_failed: bool,
}

/// A request for the records written so far to be on disk.
type SyncWaiter = tokio::sync::oneshot::Sender<std::io::Result<()>>;

/// How long a record may sit in the page cache before the sync thread
/// flushes it (the window an OS crash or power loss can take, for records
/// of requests that changed nothing).
pub const SYNC_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

/// The chained log (see the module doc).
pub struct AuditLog {
    inner: std::sync::Arc<Mutex<Writer>>,
    healthy: std::sync::Arc<std::sync::atomic::AtomicBool>,
    syncs: Mutex<std::sync::mpsc::Sender<Option<SyncWaiter>>>,
    /// Batches known to be on disk; held while syncing, so syncs run one at
    /// a time and a sync reports success only for what it covered.
    synced: std::sync::Arc<Mutex<u64>>,
    /// A flush is already scheduled (a plain write need not wake the sync
    /// thread again).
    scheduled: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditLog")
    }
}

/// SHA-256 over the previous hash and the canonical record.
fn chain_hash(prev: &str, record: &Value) -> String {
    hash_bytes(prev, &serde_json::to_vec(record).unwrap_or_default())
}

/// SHA-256 over the previous hash and a record's canonical bytes.
fn hash_bytes(prev: &str, body: &[u8]) -> String {
    let mut input = Vec::with_capacity(prev.len() + 1 + body.len());
    input.extend_from_slice(prev.as_bytes());
    input.push(b'\n');
    input.extend_from_slice(body);
    keyhaven_crypto::sha256_hex(&input)
}

fn rotated_files(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut out: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = name
                .strip_prefix("audit.")?
                .strip_suffix(".jsonl")?
                .parse::<u64>()
                .ok()?;
            Some((n, e.path()))
        })
        .collect();
    out.sort();
    out
}

/// Every audit file of `dir`, oldest first.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = rotated_files(dir).into_iter().map(|(_, p)| p).collect();
    let current = dir.join(CURRENT);
    if current.exists() {
        out.push(current);
    }
    out
}

/// Audit records name secrets, callers and their addresses: the folder is
/// the owner's only (0700), made so if it already existed wider.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    restrict(dir, 0o700)
}

/// Opens a log file for appending, created 0600.
fn open_private(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    restrict(path, 0o600)?;
    Ok(file)
}

/// Takes group and other permissions off `path` if it has any. Best
/// effort: a file this process cannot change (another owner) is named in a
/// warning rather than stopping the start.
fn restrict(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let current = std::fs::metadata(path)?.permissions().mode();
    if current & 0o077 != 0 {
        if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
            tracing::warn!(path = %path.display(), error = %e, "audit file is readable by others and could not be narrowed");
        }
    }
    Ok(())
}

impl AuditLog {
    /// Opens (or starts) the log in `dir`, continuing the chain; `now` (Unix
    /// seconds) stamps the record of a torn tail cut off, if there was one.
    pub fn open(dir: &Path, now: i64) -> std::io::Result<Self> {
        private_dir(dir)?;
        // A crash mid-write can leave part of a record at the end; appending
        // after it would break the chain for good. Cut back to the last
        // whole record first, and say so in the log once it is open.
        let torn = cut_torn_tail(&dir.join(CURRENT))?;
        // The chain goes on from the last record: the newest file's last
        // line (read from the end: a long history costs nothing at start).
        let (mut seq, mut last) = (0, GENESIS.to_owned());
        for path in files(dir).iter().rev() {
            if let Some((s, h)) = last_chained(path)? {
                (seq, last) = (s, h);
                break;
            }
        }
        let path = dir.join(CURRENT);
        let file = open_private(&path)?;
        for old in files(dir) {
            restrict(&old, 0o600)?;
        }
        let size = file.metadata()?.len();
        let inner = std::sync::Arc::new(Mutex::new(Writer {
            dir: dir.to_owned(),
            file: std::sync::Arc::new(file),
            size,
            seq,
            last,
            written: 0,
            sync_failed: false,
        }));
        let healthy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let scheduled = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let synced = std::sync::Arc::new(Mutex::new(0));
        let (tx, rx) = std::sync::mpsc::channel::<Option<SyncWaiter>>();
        let (w, h, sch, syn) = (
            std::sync::Arc::clone(&inner),
            std::sync::Arc::clone(&healthy),
            std::sync::Arc::clone(&scheduled),
            std::sync::Arc::clone(&synced),
        );
        std::thread::Builder::new()
            .name("audit-sync".into())
            .spawn(move || sync_thread(&w, &syn, &h, &sch, &rx))?;
        let log = Self {
            inner,
            healthy,
            syncs: Mutex::new(tx),
            synced,
            scheduled,
        };
        if torn > 0 {
            tracing::warn!(
                bytes = torn,
                "audit log ended in a torn record: cut back to the last whole one"
            );
            log.append(json!({
                "time": keyhaven_wire::oauth::iso8601(now),
                "operationName": "AuditLogRecovered",
                "category": "AuditEvent",
                "resultType": "Success",
                "resultDescription": format!("The log ended in a partly written record ({torn} bytes), cut off when the log was opened: a write was interrupted (a crash or power loss) before it was acknowledged."),
                "properties": {},
            }))?;
        }
        Ok(log)
    }

    /// Appends a record for a request handler. The record is chained and
    /// written (`write(2)`, so it survives the process) before this
    /// returns; `durable` also waits until it is on disk. Syncs are group
    /// commits on the sync thread, which also flushes every other record
    /// within [`SYNC_EVERY`]: requests that changed state (`durable`) are
    /// answered only once their record is on disk, requests that changed
    /// nothing pay no sync of their own.
    pub async fn append_async(&self, record: Value, durable: bool) -> std::io::Result<()> {
        let body = serde_json::to_vec(&record).map_err(std::io::Error::other)?;
        self.append_bytes_async(body, durable).await
    }

    /// [`Self::append_async`] of a record already serialized in canonical
    /// form (a JSON object, keys sorted: see [`AuditRecord`]).
    pub async fn append_bytes_async(&self, body: Vec<u8>, durable: bool) -> std::io::Result<()> {
        // Only a failure moves the health flag here: it becomes true again
        // only through `append` (the recovery record), written and synced.
        if let Err(e) = self.write_inner(&body) {
            self.healthy
                .store(false, std::sync::atomic::Ordering::SeqCst);
            return Err(e);
        }
        if !durable {
            if !self
                .scheduled
                .swap(true, std::sync::atomic::Ordering::SeqCst)
            {
                self.poke(None);
            }
            return Ok(());
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.poke(Some(tx));
        rx.await
            .map_err(|_| std::io::Error::other("audit sync thread stopped"))?
    }

    /// Tells the sync thread there is something to flush (and who waits).
    fn poke(&self, waiter: Option<SyncWaiter>) {
        if let Ok(q) = self.syncs.lock() {
            let _ = q.send(waiter);
        }
    }

    /// Whether the last write succeeded.
    pub fn healthy(&self) -> bool {
        self.healthy.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// After failed writes: records that the log recovered (so the gap is
    /// itself on the record) — if that write succeeds, the log is healthy.
    pub fn recover(&self, time: &str) -> std::io::Result<()> {
        self.append(json!({
            "time": time,
            "operationName": "AuditLogRecovered",
            "category": "AuditEvent",
            "resultType": "Success",
            "resultDescription": "Audit writes failed before this record; requests were refused meanwhile.",
            "properties": {},
        }))
    }

    /// Appends a record (its chain field is added here) and syncs it; a
    /// success clears an earlier sync failure (this is how `recover` puts
    /// the log back in service).
    pub fn append(&self, record: Value) -> std::io::Result<()> {
        let out = self.append_inner(record);
        self.healthy
            .store(out.is_ok(), std::sync::atomic::Ordering::SeqCst);
        out
    }

    fn append_inner(&self, record: Value) -> std::io::Result<()> {
        // Serialized once, outside the lock (keys sorted: the canonical form
        // `verify` recomputes); only the hash and the write are serialized.
        let body = serde_json::to_vec(&record).map_err(std::io::Error::other)?;
        self.write_inner(&body)?;
        if let Ok(mut w) = self.inner.lock() {
            w.sync_failed = false;
        }
        sync_now(&self.inner, &self.synced)
    }

    fn write_inner(&self, body: &[u8]) -> std::io::Result<()> {
        let mut w = self
            .inner
            .lock()
            .map_err(|_| std::io::Error::other("audit log poisoned"))?;
        write_record(&mut w, body)
    }
}

/// Flushes what was written so far. Syncs run one at a time (under
/// `synced`); the file and the count it covers are taken under the writer's
/// lock, and the sync runs without it (writers go on meanwhile). Success is
/// reported only for batches a successful sync covered.
fn sync_now(inner: &Mutex<Writer>, synced: &Mutex<u64>) -> std::io::Result<()> {
    let poisoned = || std::io::Error::other("audit log poisoned");
    let mut done = synced.lock().map_err(|_| poisoned())?;
    let (file, target, failed) = {
        let w = inner.lock().map_err(|_| poisoned())?;
        (std::sync::Arc::clone(&w.file), w.written, w.sync_failed)
    };
    if failed {
        return Err(std::io::Error::other(
            "an earlier sync of the audit log failed",
        ));
    }
    if *done >= target {
        return Ok(());
    }
    if let Err(e) = file.sync_data() {
        if let Ok(mut w) = inner.lock() {
            w.sync_failed = true;
        }
        return Err(e);
    }
    *done = target;
    Ok(())
}

/// The sync thread: flushes at once when a request waits for it (everyone
/// waiting then shares one sync), and otherwise within [`SYNC_EVERY`] of a
/// write. A failed sync marks the log unhealthy, so a fail-closed server
/// refuses requests until a record can be written and synced again.
fn sync_thread(
    inner: &Mutex<Writer>,
    synced: &Mutex<u64>,
    healthy: &std::sync::atomic::AtomicBool,
    scheduled: &std::sync::atomic::AtomicBool,
    rx: &std::sync::mpsc::Receiver<Option<SyncWaiter>>,
) {
    use std::sync::mpsc::RecvTimeoutError;
    let mut due: Option<std::time::Instant> = None;
    loop {
        let first = match due {
            None => match rx.recv() {
                Ok(m) => m,
                Err(_) => break,
            },
            Some(at) => {
                match rx.recv_timeout(at.saturating_duration_since(std::time::Instant::now())) {
                    Ok(m) => m,
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
        };
        let mut waiters: Vec<SyncWaiter> = first.into_iter().collect();
        while let Ok(m) = rx.try_recv() {
            waiters.extend(m);
        }
        let now = std::time::Instant::now();
        if waiters.is_empty() && due.is_none_or(|at| now < at) {
            // A plain write: flush it within SYNC_EVERY.
            due.get_or_insert(now + SYNC_EVERY);
            continue;
        }
        // Cleared before the sync takes the file: a write after this point
        // schedules the next flush itself.
        scheduled.store(false, std::sync::atomic::Ordering::SeqCst);
        let result = sync_now(inner, synced);
        due = None;
        if result.is_err() {
            healthy.store(false, std::sync::atomic::Ordering::SeqCst);
        }
        for tx in waiters {
            let answer = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
            };
            let _ = tx.send(answer);
        }
    }
    let _ = sync_now(inner, synced);
}

/// Chains and appends records (canonical JSON bodies) in one write; on a
/// failure nothing of the batch stays in the file and the chain is unchanged.
fn write_record(w: &mut Writer, body: &[u8]) -> std::io::Result<()> {
    {
        if w.size >= ROTATE_BYTES {
            let n = rotated_files(&w.dir).last().map_or(1, |(n, _)| n + 1);
            let (from, to) = (w.dir.join(CURRENT), w.dir.join(format!("audit.{n}.jsonl")));
            if let Err(e) = w.file.sync_data() {
                w.sync_failed = true;
                return Err(e);
            }
            std::fs::rename(from, to)?;
            w.file = std::sync::Arc::new(open_private(&w.dir.join(CURRENT))?);
            // The rename and the new file are durable before records go in.
            File::open(&w.dir)?.sync_all()?;
            w.size = 0;
        }
    }
    let Some((b'}', open)) = body.split_last() else {
        return Err(std::io::Error::other(
            "an audit record must be a JSON object",
        ));
    };
    let seq = w.seq + 1;
    let hash = hash_bytes(&w.last, body);
    let mut out = Vec::with_capacity(body.len() + 200);
    out.extend_from_slice(open);
    if open.len() > 1 {
        out.push(b',');
    }
    out.extend_from_slice(
        format!(
            "\"keyhavenChain\":{{\"hash\":\"{hash}\",\"prev\":\"{}\",\"seq\":{seq}}}}}\n",
            w.last
        )
        .as_bytes(),
    );
    // One write(2) of the whole record (the file is in append mode); the
    // sync is the sync thread's (see `AuditLog::append_async`).
    if let Err(e) = (&*w.file).write_all(&out) {
        // No half-written record: cut the file back to the last whole one.
        let size = w.size;
        let _ = w.file.set_len(size);
        return Err(e);
    }
    w.size += out.len() as u64;
    w.seq = seq;
    w.last = hash;
    w.written += 1;
    Ok(())
}

/// Cuts `path` back to its last complete line (the end of the last whole
/// record); returns how many bytes went. A missing file is no tail.
fn cut_torn_tail(path: &Path) -> std::io::Result<u64> {
    let mut f = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    let whole = match last_newline(&mut f, len)? {
        Some(i) => i + 1,
        None => 0,
    };
    let torn = len - whole;
    if torn > 0 {
        f.set_len(whole)?;
        f.sync_all()?;
    }
    Ok(torn)
}

/// The offset of the last `\n` in `f` before `end` (at most its length),
/// read backwards in growing chunks.
fn last_newline(f: &mut File, end: u64) -> std::io::Result<Option<u64>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut chunk: u64 = 64 * 1024;
    let mut hi = end;
    while hi > 0 {
        let lo = hi.saturating_sub(chunk);
        f.seek(SeekFrom::Start(lo))?;
        let mut buf = Vec::new();
        (&mut *f).take(hi - lo).read_to_end(&mut buf)?;
        if let Some(i) = buf.iter().rposition(|b| *b == b'\n') {
            return Ok(Some(lo + i as u64));
        }
        hi = lo;
        chunk = chunk.saturating_mul(4);
    }
    Ok(None)
}

/// `seq` and `hash` of the last record of `path` (whole lines only: the
/// caller cut any torn tail), or None for an empty file or one whose last
/// line carries no chain (then the file is read whole, as `verify` does).
fn last_chained(path: &Path) -> std::io::Result<Option<(u64, String)>> {
    use std::io::{Read, Seek, SeekFrom};
    let chain = |line: &str| {
        let v = serde_json::from_str::<Value>(line).ok()?;
        Some((
            v.pointer("/keyhavenChain/seq").and_then(Value::as_u64)?,
            v.pointer("/keyhavenChain/hash")
                .and_then(Value::as_str)?
                .to_owned(),
        ))
    };
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let Some(end) = last_newline(&mut f, len)? else {
        return Ok(None);
    };
    let start = last_newline(&mut f, end)?.map_or(0, |i| i + 1);
    f.seek(SeekFrom::Start(start))?;
    let mut line = String::new();
    (&mut f).take(end - start).read_to_string(&mut line)?;
    if let Some(found) = chain(&line) {
        return Ok(Some(found));
    }
    let mut found = None;
    for line in BufReader::new(File::open(path)?).lines() {
        if let Some(c) = chain(&line?) {
            found = Some(c);
        }
    }
    Ok(found)
}

/// The outcome of `verify`.
#[derive(Debug, PartialEq, Eq)]
pub enum Verified {
    /// Every record chains: how many there are.
    Intact(u64),
    /// The first record that does not: file, line (1-based), why.
    Broken(PathBuf, usize, String),
}

/// Re-computes the chain over every file of `dir`.
pub fn verify(dir: &Path) -> std::io::Result<Verified> {
    let (mut prev, mut seq) = (GENESIS.to_owned(), 0u64);
    for path in files(dir) {
        for (i, line) in BufReader::new(File::open(&path)?).lines().enumerate() {
            let line = line?;
            let broken = |why: &str| Ok(Verified::Broken(path.clone(), i + 1, why.to_owned()));
            let Ok(mut v) = serde_json::from_str::<Value>(&line) else {
                return broken("not a JSON record");
            };
            let chain = match v.as_object_mut().and_then(|m| m.remove("keyhavenChain")) {
                Some(c) => c,
                None => return broken("no keyhavenChain"),
            };
            if chain.get("seq").and_then(Value::as_u64) != Some(seq + 1) {
                return broken("sequence gap: a record was dropped, inserted or moved");
            }
            if chain.get("prev").and_then(Value::as_str) != Some(prev.as_str()) {
                return broken("does not follow the previous record");
            }
            let hash = chain_hash(&prev, &v);
            if chain.get("hash").and_then(Value::as_str) != Some(hash.as_str()) {
                return broken("hash mismatch: the record was edited");
            }
            prev = hash;
            seq += 1;
        }
    }
    Ok(Verified::Intact(seq))
}

/// One audit record, serialized straight to its canonical form: the fields
/// are declared in sorted key order (as a `serde_json::Value` object, a
/// `BTreeMap`, would write them and as `verify` recomputes them), so the
/// request path builds no map per record.
#[derive(serde::Serialize)]
pub struct AuditRecord<'a> {
    #[serde(rename = "callerIpAddress")]
    caller_ip: String,
    category: &'static str,
    #[serde(rename = "correlationId")]
    correlation_id: String,
    #[serde(rename = "durationMs")]
    duration_ms: String,
    identity: Option<Claims<'a>>,
    #[serde(rename = "operationName")]
    operation: std::borrow::Cow<'a, str>,
    #[serde(rename = "operationVersion")]
    operation_version: String,
    properties: Properties<'a>,
    #[serde(rename = "resourceId")]
    resource_id: String,
    #[serde(rename = "resultDescription")]
    result_description: &'static str,
    #[serde(rename = "resultSignature")]
    result_signature: &'static str,
    #[serde(rename = "resultType")]
    result_type: &'static str,
    time: &'a str,
}

#[derive(serde::Serialize)]
struct Claims<'a> {
    claim: &'a Map<String, Value>,
}

/// `properties`: the fixed fields (sorted), or a map when a plane added
/// its own (`AuditNote::properties`), merged without overriding.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum Properties<'a> {
    Fixed(FixedProperties<'a>),
    Merged(Map<String, Value>),
}

#[derive(serde::Serialize)]
struct FixedProperties<'a> {
    #[serde(rename = "clientInfo", skip_serializing_if = "Option::is_none")]
    client_info: Option<String>,
    #[serde(rename = "httpStatusCode")]
    http_status_code: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(
        rename = "isAccessPolicyMatch",
        skip_serializing_if = "Option::is_none"
    )]
    is_access_policy_match: Option<bool>,
    #[serde(rename = "isRbacAuthorized", skip_serializing_if = "Option::is_none")]
    is_rbac_authorized: Option<bool>,
    #[serde(rename = "requestUri")]
    request_uri: &'a str,
    #[serde(rename = "tlsVersion", skip_serializing_if = "Option::is_none")]
    tls_version: Option<&'a str>,
}

impl<'a> AuditRecord<'a> {
    /// The record of a request, in Azure's `AuditEvent` shape.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        time: &'a str,
        method: &str,
        request_uri: &'a str,
        status: u16,
        duration_ms: u128,
        caller_ip: Option<String>,
        correlation_id: Option<String>,
        api_version: Option<String>,
        tls: Option<&'a str>,
        user_agent: Option<String>,
        note: &'a AuditNote,
    ) -> Self {
        let operation = match &note.operation {
            Some(o) => std::borrow::Cow::Borrowed(o.as_str()),
            None => std::borrow::Cow::Owned(format!("Unknown{method}")),
        };
        let fixed = FixedProperties {
            client_info: user_agent,
            http_status_code: status,
            id: note.object_id.as_deref(),
            is_access_policy_match: note.access_policy_match,
            is_rbac_authorized: note.rbac.map(|b| b && status < 400),
            request_uri,
            tls_version: tls,
        };
        let properties = match &note.properties {
            Some(more) => {
                let mut props = match serde_json::to_value(&fixed) {
                    Ok(Value::Object(m)) => m,
                    _ => Map::new(),
                };
                for (k, v) in more {
                    props.entry(k.clone()).or_insert_with(|| v.clone());
                }
                Properties::Merged(props)
            }
            None => Properties::Fixed(fixed),
        };
        Self {
            caller_ip: caller_ip.unwrap_or_default(),
            category: "AuditEvent",
            correlation_id: correlation_id.unwrap_or_default(),
            duration_ms: duration_ms.to_string(),
            identity: note.identity.as_ref().map(|claim| Claims { claim }),
            operation,
            operation_version: api_version.unwrap_or_default(),
            properties,
            resource_id: note
                .resource_id
                .as_deref()
                .map(str::to_ascii_uppercase)
                .unwrap_or_default(),
            result_description: "",
            result_signature: http::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or(""),
            result_type: if status < 400 { "Success" } else { "Failure" },
            time,
        }
    }
}

/// [`AuditRecord::new`] as a JSON value (for the optional destinations and
/// callers outside the request path).
#[allow(clippy::too_many_arguments)]
pub fn record(
    time: &str,
    method: &str,
    request_uri: &str,
    status: u16,
    duration_ms: u128,
    caller_ip: Option<String>,
    correlation_id: Option<String>,
    api_version: Option<String>,
    tls: Option<&str>,
    user_agent: Option<String>,
    note: &AuditNote,
) -> Value {
    serde_json::to_value(AuditRecord::new(
        time,
        method,
        request_uri,
        status,
        duration_ms,
        caller_ip,
        correlation_id,
        api_version,
        tls,
        user_agent,
        note,
    ))
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note() -> AuditNote {
        AuditNote {
            operation: Some("SecretGet".into()),
            ..AuditNote::default()
        }
    }

    /// The record of a plain request (`SecretGet` note, no caller details).
    fn request(method: &str, uri: &str, status: u16) -> Value {
        record(
            "t",
            method,
            uri,
            status,
            1,
            None,
            None,
            None,
            None,
            None,
            &note(),
        )
    }

    /// A fresh log directory `kh-audit-{name}-{pid}` holding `n` records of
    /// GETs of secrets `s0`, `s1`, …, closed.
    fn log_of_gets(name: &str, n: usize) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kh-audit-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let log = AuditLog::open(&dir, 0).unwrap();
        for i in 0..n {
            log.append(request("GET", &format!("https://v/secrets/s{i}"), 200))
                .unwrap();
        }
        dir
    }

    #[test]
    fn the_chain_catches_edits_drops_and_reorders() {
        let dir = log_of_gets("chain", 3);
        // Reopening continues the chain.
        AuditLog::open(&dir, 0)
            .unwrap()
            .append(request("GET", "https://v/x", 404))
            .unwrap();
        let path = dir.join(CURRENT);
        assert_eq!(verify(&dir).unwrap(), Verified::Intact(4));
        let original = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = original.lines().collect();

        std::fs::write(&path, original.replace("/secrets/s1", "/secrets/s9")).unwrap();
        assert!(matches!(verify(&dir).unwrap(), Verified::Broken(_, 2, _)));
        std::fs::write(&path, format!("{}\n{}\n{}\n", lines[0], lines[2], lines[3])).unwrap();
        assert!(matches!(verify(&dir).unwrap(), Verified::Broken(_, 2, _)));
        std::fs::write(
            &path,
            format!("{}\n{}\n{}\n{}\n", lines[1], lines[0], lines[2], lines[3]),
        )
        .unwrap();
        assert!(matches!(verify(&dir).unwrap(), Verified::Broken(_, 1, _)));
        std::fs::write(&path, format!("{}\n{}\n{}\n", lines[0], lines[1], lines[2])).unwrap();
        assert_eq!(
            verify(&dir).unwrap(),
            Verified::Intact(3),
            "a truncated tail still chains"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Issue 22, outside review 1: the folder was 0755 and the log 0644,
    /// readable by every local user; a folder made wider before is narrowed.
    #[test]
    fn the_audit_folder_and_files_are_the_owners_only() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = std::env::temp_dir().join(format!("kh-audit-mode-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let log = AuditLog::open(&dir, 0).unwrap();
            log.append(request("GET", "https://v/secrets/s", 200))
                .unwrap();
        }
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(CURRENT)), 0o600);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(dir.join(CURRENT), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        drop(AuditLog::open(&dir, 0).unwrap());
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(CURRENT)), 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Issue 29, item 9: a crash mid-write left part of a record at the
    /// end, `open` appended after it, and `verify` failed forever.
    #[test]
    fn a_torn_last_record_is_cut_off_and_the_chain_goes_on() {
        let dir = log_of_gets("torn", 3);
        // The power went out in the middle of the fourth record.
        let path = dir.join(CURRENT);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"category":"AuditEvent","time":"2026-01-0"#)
            .unwrap();
        drop(f);
        assert!(matches!(verify(&dir).unwrap(), Verified::Broken(..)));
        let log = AuditLog::open(&dir, 1_800_000_000).unwrap();
        log.append(request("PUT", "https://v/secrets/s", 200))
            .unwrap();
        assert_eq!(verify(&dir).unwrap(), Verified::Intact(5));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("AuditLogRecovered"),
            "the cut is on the record"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_are_group_committed_into_one_chain() {
        let dir = std::env::temp_dir().join(format!("kh-audit-async-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let log = std::sync::Arc::new(AuditLog::open(&dir, 0).unwrap());
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let log = std::sync::Arc::clone(&log);
                tokio::spawn(async move {
                    let uri = format!("https://v/secrets/s{i}");
                    log.append_async(request("GET", &uri, 200), i % 2 == 0)
                        .await
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(verify(&dir).unwrap(), Verified::Intact(200));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_durable_record_is_synced_before_its_answer_and_others_soon_after() {
        let dir = std::env::temp_dir().join(format!("kh-audit-sync-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let log = AuditLog::open(&dir, 0).unwrap();
        let dirty = |log: &AuditLog| {
            let written = log.inner.lock().unwrap().written;
            let synced = *log.synced.lock().unwrap();
            written > synced
        };
        log.append_async(request("PUT", "https://v/secrets/a", 200), true)
            .await
            .unwrap();
        assert!(!dirty(&log), "a durable append returns after the sync");
        log.append_async(request("GET", "https://v/secrets/a", 200), false)
            .await
            .unwrap();
        // The sync thread flushes it within SYNC_EVERY (bounded wait).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while dirty(&log) && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(!dirty(&log), "a plain append is flushed by the sync thread");
        assert_eq!(verify(&dir).unwrap(), Verified::Intact(2));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The request path writes the record's bytes straight from the struct:
    /// they must be the canonical form `verify` recomputes (keys sorted).
    #[test]
    fn a_record_serializes_to_its_canonical_form() {
        let mut claims = Map::new();
        claims.insert("oid".into(), json!("o-1"));
        claims.insert("appid".into(), json!("a-1"));
        let mut extra = Map::new();
        extra.insert("zeta".into(), json!(1));
        extra.insert("httpStatusCode".into(), json!("not this one"));
        extra.insert("Alpha".into(), json!(true));
        for properties in [None, Some(extra)] {
            let note = AuditNote {
                operation: Some("SecretGet".into()),
                resource_id: Some(
                    "/subscriptions/s/resourceGroups/g/providers/Microsoft.KeyVault/vaults/v"
                        .into(),
                ),
                object_id: Some("https://v.vault.localhost/secrets/a".into()),
                identity: Some(claims.clone()),
                rbac: Some(true),
                access_policy_match: Some(false),
                properties,
            };
            let rec = AuditRecord::new(
                "2026-12-05T00:00:00Z",
                "GET",
                "https://v.vault.localhost/secrets/a",
                200,
                3,
                Some("10.0.0.1".into()),
                Some("c\"1".into()),
                Some("7.5".into()),
                Some("TLS1_3"),
                Some("ua/1".into()),
                &note,
            );
            let direct = serde_json::to_vec(&rec).unwrap();
            let value: Value = serde_json::from_slice(&direct).unwrap();
            assert_eq!(
                direct,
                serde_json::to_vec(&value).unwrap(),
                "keys in sorted order"
            );
            assert_eq!(value["properties"]["httpStatusCode"], json!(200));
            assert_eq!(value["identity"]["claim"]["oid"], json!("o-1"));
        }
    }

    /// Opening reads only the newest file's last record: the chain goes on
    /// after a long history, and after a rotation left the current file empty.
    #[test]
    fn reopening_continues_the_chain_from_the_last_record() {
        let dir = log_of_gets("reopen", 1500);
        {
            let log = AuditLog::open(&dir, 0).unwrap();
            log.append(request("PUT", "https://v/secrets/a", 200))
                .unwrap();
        }
        assert_eq!(verify(&dir).unwrap(), Verified::Intact(1501));
        // As a rotation leaves it: the records in audit.1.jsonl, an empty
        // current file.
        std::fs::rename(dir.join(CURRENT), dir.join("audit.1.jsonl")).unwrap();
        std::fs::write(dir.join(CURRENT), b"").unwrap();
        {
            let log = AuditLog::open(&dir, 0).unwrap();
            log.append(request("PUT", "https://v/secrets/b", 200))
                .unwrap();
        }
        assert_eq!(verify(&dir).unwrap(), Verified::Intact(1502));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
