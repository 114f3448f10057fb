//! Settings (the authorization generation, the signing keys) cached on this
//! node for as long as a `LISTEN keyhaven_settings` connection guarantees it
//! hears of every change: each write notifies in the statement that makes
//! it (`pg_notify` in the same transaction, delivered at commit), so a
//! change on one node reaches every other node's cache within milliseconds,
//! and every request stops paying a round trip to read the generation.
//!
//! While the listening connection is down, reads go to the database (always
//! fresh); when it comes back the cache starts empty. A read racing a
//! notification is not cached (the epoch check), so a stale value is never
//! put back after its invalidation.
//!
//! The "within a second" promise does not trust that every signal arrives:
//! a cached value is used for at most [`MAX_AGE`] after its read began,
//! whatever the listener heard. The listener is also pinged every
//! [`PING_EVERY`] with [`PING_TIMEOUT`] to answer, so a silently dead
//! connection stops the cache altogether.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio_postgres::{AsyncMessage, NoTls};

/// The channel every settings write notifies.
pub(crate) const CHANNEL: &str = "keyhaven_settings";
/// Pause before reconnecting a lost listening connection.
const RECONNECT: Duration = Duration::from_secs(1);
/// How often the listening connection is checked, and how long it may take.
const PING_EVERY: Duration = Duration::from_secs(1);
const PING_TIMEOUT: Duration = Duration::from_millis(900);
/// How long a cached value is used before it is read again, heard of or not.
pub(crate) const MAX_AGE: Duration = Duration::from_secs(1);

type Cached = (Option<Vec<u8>>, Instant);

pub(crate) struct SettingsWatch {
    live: AtomicBool,
    epoch: AtomicU64,
    values: RwLock<HashMap<String, Cached>>,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for SettingsWatch {
    fn drop(&mut self) {
        if let Ok(mut t) = self.task.lock() {
            if let Some(t) = t.take() {
                t.abort();
            }
        }
    }
}

impl SettingsWatch {
    /// Starts listening (in the background, reconnecting as needed).
    pub(crate) fn start(config: tokio_postgres::Config) -> Arc<Self> {
        let watch = Arc::new(Self {
            live: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            values: RwLock::new(HashMap::new()),
            task: std::sync::Mutex::new(None),
        });
        let weak = Arc::downgrade(&watch);
        let task = tokio::spawn(async move {
            loop {
                let Some(w) = weak.upgrade() else { return };
                if let Err(e) = listen(&config, &w).await {
                    tracing::warn!(error = %e, "settings listener lost; reading settings from the database until it is back");
                }
                w.go_dark();
                drop(w);
                tokio::time::sleep(RECONNECT).await;
            }
        });
        if let Ok(mut t) = watch.task.lock() {
            *t = Some(task);
        }
        watch
    }

    /// The cached value, if the cache can be trusted and holds one read
    /// less than [`MAX_AGE`] ago.
    pub(crate) fn get(&self, key: &str) -> Option<Option<Vec<u8>>> {
        if !self.live.load(Ordering::Acquire) {
            return None;
        }
        let m = self.values.read().ok()?;
        let (value, read_at) = m.get(key)?;
        (read_at.elapsed() < MAX_AGE).then(|| value.clone())
    }

    /// The epoch before a database read (for [`Self::put`]).
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Caches a value read from the database by a read that began at
    /// `started`, unless a change was heard (or the listener dropped) since.
    /// Its age counts from the start of the read.
    pub(crate) fn put(&self, key: &str, value: Option<Vec<u8>>, epoch: u64, started: Instant) {
        if !self.live.load(Ordering::Acquire) {
            return;
        }
        if let Ok(mut m) = self.values.write() {
            if self.epoch.load(Ordering::Acquire) == epoch {
                m.insert(key.to_owned(), (value, started));
            }
        }
    }

    /// Forgets one key (a change heard, or made by this node).
    pub(crate) fn forget(&self, key: &str) {
        if let Ok(mut m) = self.values.write() {
            self.epoch.fetch_add(1, Ordering::AcqRel);
            m.remove(key);
        }
    }

    /// Empties the cache; reads in flight will not refill it.
    fn clear(&self) {
        if let Ok(mut m) = self.values.write() {
            self.epoch.fetch_add(1, Ordering::AcqRel);
            m.clear();
        }
    }

    fn go_dark(&self) {
        self.live.store(false, Ordering::Release);
        self.clear();
    }

    fn go_live(&self) {
        self.clear();
        self.live.store(true, Ordering::Release);
    }

    /// A guard for a write that may move the authorization generation (by
    /// trigger): when it drops — the write finished, failed, or its request
    /// was cancelled — this node forgets the generation, so its own next
    /// request sees the change without waiting for the notification.
    pub(crate) fn authz_write(self: &Arc<Self>) -> AuthzWrite {
        AuthzWrite(Arc::clone(self))
    }

    /// Whether the cache is in use (the listener is connected).
    pub(crate) fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }
}

/// See [`SettingsWatch::authz_write`].
pub(crate) struct AuthzWrite(Arc<SettingsWatch>);

impl Drop for AuthzWrite {
    fn drop(&mut self) {
        self.0.forget(keyhaven_core::store::AUTHZ_GENERATION);
    }
}

/// One listening connection's life: LISTEN, then forget each notified key
/// until the connection ends.
async fn listen(
    config: &tokio_postgres::Config,
    w: &SettingsWatch,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Option<String>>();
    let pump = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if tx.send(Some(n.payload().to_owned())).is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    let _ = tx.send(None);
                    return;
                }
            }
        }
    });
    let listening = client.batch_execute(&format!("LISTEN {CHANNEL}")).await;
    if let Err(e) = listening {
        pump.abort();
        return Err(e);
    }
    w.go_live();
    // A connection can die without telling (a partition): a ping each
    // second that does not answer within PING_TIMEOUT ends it, so the cache
    // is never trusted for longer than that without a live listener.
    let mut ping = tokio::time::interval(PING_EVERY);
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(Some(key)) => w.forget(&key),
                Some(None) | None => break,
            },
            _ = ping.tick() => {
                match tokio::time::timeout(PING_TIMEOUT, client.simple_query("")).await {
                    Ok(Ok(_)) => {}
                    _ => break,
                }
            }
        }
    }
    pump.abort();
    drop(client);
    Ok(())
}
