//! The embedded SQLite store: one file in the data directory, WAL journal. An
//! acknowledged write survives power loss: commits do not sync by themselves
//! (`synchronous=NORMAL`), and every write waits for a group sync of the WAL
//! that started after its commit (`wal_sync`). Calls run on the blocking
//! pool behind one connection; SQLite serialises writers anyway.

use std::collections::HashMap;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use keyhaven_core::events::ChangeEvent;
use keyhaven_core::ids::{ObjectName, VaultName, Version};
use keyhaven_core::object::{DeletedInfo, ObjectKind, Page, VersionRecord};
use keyhaven_core::store::{
    PolicyChange, PolicyRecord, ScheduledPolicy, Store, StoreError, StoreResult, AUTHZ_GENERATION,
};
use keyhaven_core::vault::VaultRecord;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior};

use crate::migrations;

mod directory;
mod logs;
mod outbox;
mod resource;
mod wal_sync;
use crate::sql::{self, properties_json, with_deleted_info, RowData};

/// Read-only connections kept for point reads.
const READERS: usize = 4;
/// Most objects cached: two generations of up to half this each.
const LATEST_CACHE: usize = 10_000;
/// Most versions cached per object (beyond its latest).
const VERSIONS_CACHED: usize = 16;

type LatestKey = (String, ObjectKind, String);

/// What is cached of one object: its latest version and versions read by id.
#[derive(Default)]
struct CachedObject {
    latest: Option<VersionRecord>,
    versions: HashMap<String, VersionRecord>,
}

impl CachedObject {
    fn get(&self, version: Option<&str>) -> Option<&VersionRecord> {
        match version {
            None => self.latest.as_ref(),
            Some(v) => self
                .versions
                .get(v)
                .or_else(|| self.latest.as_ref().filter(|l| l.version.as_str() == v)),
        }
    }

    fn put(&mut self, version: Option<&str>, rec: VersionRecord) {
        match version {
            None => self.latest = Some(rec),
            Some(v) => {
                if self.versions.len() >= VERSIONS_CACHED {
                    self.versions.clear();
                }
                self.versions.insert(v.to_owned(), rec);
            }
        }
    }
}

/// The cache of recently read objects, bounded without ever emptying at
/// once: new entries go to the young generation; when it is full it becomes
/// the old one and the previous old generation is dropped. An object read
/// again from the old generation is moved back to the young one when it is
/// next written to the cache. Clearing the whole cache when full (as
/// before) made every read after it a miss at once, a latency cliff at
/// stores larger than the cache.
#[derive(Default)]
struct LatestCache {
    young: HashMap<LatestKey, CachedObject>,
    old: HashMap<LatestKey, CachedObject>,
}

impl LatestCache {
    fn get(&self, key: &LatestKey, version: Option<&str>) -> Option<&VersionRecord> {
        self.young
            .get(key)
            .and_then(|o| o.get(version))
            .or_else(|| self.old.get(key).and_then(|o| o.get(version)))
    }

    fn put(&mut self, key: LatestKey, version: Option<&str>, rec: VersionRecord) {
        let object = match self.young.get_mut(&key) {
            Some(o) => o,
            None => {
                let kept = self.old.remove(&key).unwrap_or_default();
                if self.young.len() >= LATEST_CACHE / 2 {
                    self.old = std::mem::take(&mut self.young);
                }
                self.young.entry(key).or_insert(kept)
            }
        };
        object.put(version, rec);
    }

    fn remove(&mut self, key: &LatestKey) {
        self.young.remove(key);
        self.old.remove(key);
    }

    fn clear(&mut self) {
        self.young.clear();
        self.old.clear();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }
}

/// SQLite implementation of `Store`.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    // The database file (none in memory): log queries open their own
    // read-only connection on it, so a long query holds no pooled reader.
    path: Option<Arc<std::path::PathBuf>>,
    // Idle read-only connections (none for in-memory databases). In WAL mode a
    // reader never waits for the writer, so reads run inline on the caller's
    // thread: a point read takes microseconds, a hop to the blocking pool more.
    readers: Arc<Mutex<Vec<Connection>>>,
    // The settings table, mirrored: this process is the database's only
    // writer (see `lock`), so every change passes through here and the
    // mirror is exact. Reads of hot settings (the authorization generation)
    // then cost no query.
    // Exact for writes made here; the authorization generation, which
    // triggers move inside other writes, is dropped after every write (in
    // the blocking closure, under the connection lock), and a read caches
    // only if no write ended while it ran (`settings_epoch`).
    settings: Arc<RwLock<HashMap<String, Option<Vec<u8>>>>>,
    settings_epoch: Arc<AtomicU64>,
    // The latest version and the versions read by id of recently read
    // objects (sealed payloads only), exact for the same reason: every write
    // passes through this process and drops the whole entry it touches.
    latest: Arc<RwLock<LatestCache>>,
    latest_epoch: Arc<AtomicU64>,
    // An exclusive lock on `<db>.lock`: a second process on the same file is
    // refused instead of silently sharing (and invalidating the mirror).
    _lock: Option<Arc<std::fs::File>>,
    // Group commit of the WAL (none in memory): see `wal_sync`.
    wal: Option<Arc<wal_sync::WalSync>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and applies migrations.
    pub async fn open(path: &Path) -> StoreResult<Self> {
        let path = path.to_owned();
        let db_path = path.clone();
        let conn = tokio::task::spawn_blocking(move || {
            let path = db_path;
            // Created private; SQLite gives its -wal and -shm files the same mode.
            if !path.exists() {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(|e| StoreError::Unavailable(format!("{}: {e}", path.display())))?;
            }
            Connection::open(&path).map_err(err)
        })
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))??;
        let lock_path = path.with_extension("lock");
        let lock = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| StoreError::Unavailable(format!("{}: {e}", lock_path.display())))?;
        lock.try_lock().map_err(|_| {
            StoreError::Unavailable(format!(
                "{} is in use by another keyhaven process (lock {})",
                path.display(),
                lock_path.display()
            ))
        })?;
        let mut store = Self::init(conn).await?;
        store._lock = Some(Arc::new(lock));
        store.path = Some(Arc::new(path_of(&store).await?));
        // From here on a commit does not sync by itself: every write waits
        // for the WAL's group sync before it returns (`run_raw`). Only in
        // WAL mode (SQLite keeps its rollback journal, and FULL, where a
        // file system cannot hold a WAL).
        let mode: String = store
            .run(|c| {
                c.query_row("PRAGMA journal_mode", [], |r| r.get(0))
                    .map_err(err)
            })
            .await?;
        if mode.eq_ignore_ascii_case("wal") {
            if let Some(path) = &store.path {
                store.wal = Some(wal_sync::WalSync::start(path)?);
            }
            store
                .run(|c| c.execute_batch("PRAGMA synchronous = NORMAL;").map_err(err))
                .await?;
        } else {
            tracing::warn!(%mode, "SQLite is not in WAL mode: every write syncs on its own");
        }
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let r = Connection::open_with_flags(
                path_of(&store).await?,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(err)?;
            r.execute_batch("PRAGMA busy_timeout = 5000;")
                .map_err(err)?;
            readers.push(r);
        }
        if let Ok(mut pool) = store.readers.lock() {
            *pool = readers;
        }
        Ok(store)
    }

    /// A private in-memory database (tests).
    pub async fn open_in_memory() -> StoreResult<Self> {
        Self::init(Connection::open_in_memory().map_err(err)?).await
    }

    async fn init(conn: Connection) -> StoreResult<Self> {
        let store = Self {
            conn: Arc::new(Mutex::new(conn)),
            path: None,
            readers: Arc::new(Mutex::new(Vec::new())),
            settings: Arc::new(RwLock::new(HashMap::new())),
            settings_epoch: Arc::new(AtomicU64::new(0)),
            latest: Arc::new(RwLock::new(LatestCache::default())),
            latest_epoch: Arc::new(AtomicU64::new(0)),
            _lock: None,
            wal: None,
        };
        store
            .run(|c| {
                c.execute_batch(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;",
                )
                .map_err(err)?;
                migrate(c)
            })
            .await?;
        Ok(store)
    }

    /// Runs a write on the blocking pool behind the one writer connection.
    /// Right after it, still under the connection lock (so even when the
    /// awaiting request is cancelled), the mirrored authorization generation
    /// is dropped: a trigger may have moved it inside the write.
    async fn run<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let (settings, epoch) = (Arc::clone(&self.settings), Arc::clone(&self.settings_epoch));
        self.run_raw(move |c| {
            let out = f(c);
            forget_setting(&settings, &epoch, AUTHZ_GENERATION);
            out
        })
        .await
    }

    /// Runs a closure on the writer connection with nothing after it.
    async fn run_raw<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let (conn, wal) = (Arc::clone(&self.conn), self.wal.clone());
        if let Some(w) = &wal {
            w.check()?;
        }
        let (out, ticket) = tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| StoreError::Unavailable("sqlite connection poisoned".into()))?;
            let before = guard.total_changes();
            let out = f(&mut guard);
            // A closure that changed rows committed them (or rolled back:
            // a sync then costs a little and harms nothing); one that
            // changed nothing may still have decided on rows a commit not
            // yet durable wrote (a compare-and-set that lost), so it waits
            // for the last commit.
            let ticket = wal.as_ref().map(|w| {
                if guard.total_changes() != before {
                    w.committed()
                } else {
                    w.latest()
                }
            });
            Ok::<_, StoreError>((out, ticket))
        })
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))??;
        // Acknowledged only once durable. A caller cancelled before this
        // wait was never acknowledged; its commit is synced with the next
        // write's, or by SQLite before the next checkpoint.
        if let (Some(w), Some(t)) = (&self.wal, ticket) {
            w.durable(t).await?;
        }
        out
    }
}

/// What a write makes stale in the latest-version cache.
enum Forget {
    /// Some objects.
    Objects(Vec<LatestKey>),
    /// Everything (vault purge, expiry purge).
    All,
}

impl SqliteStore {
    /// Runs a write on the blocking pool and, in the same closure right
    /// after it (committed or not), drops what it made stale and moves the
    /// epoch, so a read that began before the commit does not cache what it
    /// read. The closure runs to its end even when the request awaiting it
    /// is cancelled, so nothing that must follow the commit can be skipped.
    async fn run_forgetting<T, F>(&self, what: Forget, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let (latest, epoch) = (Arc::clone(&self.latest), Arc::clone(&self.latest_epoch));
        // Version writes touch no table a trigger watches, so they leave the
        // mirrored authorization generation alone; vault-wide writes may.
        let vault_wide = matches!(what, Forget::All);
        let f = move |c: &mut Connection| {
            let out = f(c);
            if let Ok(mut m) = latest.write() {
                match what {
                    Forget::Objects(keys) => {
                        for k in &keys {
                            m.remove(k);
                        }
                    }
                    Forget::All => m.clear(),
                }
                epoch.fetch_add(1, Ordering::SeqCst);
            }
            out
        };
        if vault_wide {
            self.run(f).await
        } else {
            self.run_raw(f).await
        }
    }

    /// Caches a setting read from the database, unless a write ended while
    /// the read ran (it may have changed the value read).
    fn remember_setting(&self, key: &str, value: Option<Vec<u8>>, epoch: u64) {
        if let Ok(mut m) = self.settings.write() {
            if self.settings_epoch.load(Ordering::SeqCst) == epoch {
                m.insert(key.to_owned(), value);
            }
        }
    }

    /// Runs a read on an idle reader connection, inline; falls back to the
    /// writer connection on the blocking pool when none is idle.
    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let idle = self.readers.lock().ok().and_then(|mut pool| pool.pop());
        match idle {
            Some(c) => {
                let out = f(&c);
                if let Ok(mut pool) = self.readers.lock() {
                    pool.push(c);
                }
                out
            }
            None => self.run_raw(move |c| f(c)).await,
        }
    }
}

/// Records change events that are not about a version write (those are
/// recorded by `put_versions_with`) in the outbox, inside a transaction.
fn record_events(c: &Connection, events: &[ChangeEvent]) -> StoreResult<()> {
    insert_events(c, sql::event_bodies(events, &[], |_| Ok(None))?)
}

/// Inserts `bodies` ([`sql::event_bodies`]) with [`sql::RECORD_EVENT`].
fn insert_events(c: &Connection, bodies: Vec<(String, String, String, i64)>) -> StoreResult<()> {
    if bodies.is_empty() {
        return Ok(());
    }
    let mut insert = c.prepare_cached(&q(sql::RECORD_EVENT)).map_err(err)?;
    for (id, body, under, due) in bodies {
        insert.execute(params![id, body, under, due]).map_err(err)?;
    }
    Ok(())
}

/// The name of `rec`'s object as stored (the casing it was created with).
fn stored_name(c: &Connection, vault_id: &str, rec: &VersionRecord) -> StoreResult<Option<String>> {
    c.prepare_cached(&q(sql::OBJECT_NAME))
        .map_err(err)?
        .query_row(params![vault_id, rec.kind.as_str(), rec.name.key()], |r| {
            r.get(0)
        })
        .optional()
        .map_err(err)
}

/// Applies a policy compare-and-set inside a transaction; `Changed` if the
/// stored body is no longer the one read.
fn policy_change(c: &Connection, vault_id: &str, change: &PolicyChange) -> StoreResult<()> {
    let (kind, key, r) = (change.kind.as_str(), change.name.key(), &change.record);
    let n = match &change.expected {
        None => c.execute(
            &q(sql::INSERT_POLICY_NEW),
            params![vault_id, kind, key, r.body, r.created, r.updated],
        ),
        Some(body) => c.execute(
            &q(sql::REPLACE_POLICY_IF),
            params![vault_id, kind, key, r.body, r.updated, body],
        ),
    }
    .map_err(err)?;
    if n == 1 {
        Ok(())
    } else {
        Err(StoreError::Changed {
            kind: change.kind,
            name: change.name.to_string(),
        })
    }
}

/// The cache keys of the objects `recs` belong to.
fn object_keys(vault_id: &str, recs: &[VersionRecord]) -> Vec<LatestKey> {
    recs.iter()
        .map(|r| (vault_id.to_owned(), r.kind, r.name.key()))
        .collect()
}

/// The cache keys of the objects of `kinds` named `key`.
fn kinds_keys(vault_id: &str, kinds: &[ObjectKind], key: &str) -> Vec<LatestKey> {
    kinds
        .iter()
        .map(|k| (vault_id.to_owned(), *k, key.to_owned()))
        .collect()
}

/// Drops one mirrored setting and moves the mirror's epoch.
fn forget_setting(
    settings: &RwLock<HashMap<String, Option<Vec<u8>>>>,
    epoch: &AtomicU64,
    key: &str,
) {
    if let Ok(mut m) = settings.write() {
        epoch.fetch_add(1, Ordering::SeqCst);
        m.remove(key);
    }
}

/// Sets one mirrored setting to what a write just committed (called under
/// the connection lock, so mirror updates happen in commit order).
fn set_setting(
    settings: &RwLock<HashMap<String, Option<Vec<u8>>>>,
    epoch: &AtomicU64,
    key: &str,
    value: Option<Vec<u8>>,
) {
    if let Ok(mut m) = settings.write() {
        epoch.fetch_add(1, Ordering::SeqCst);
        m.insert(key.to_owned(), value);
    }
}

async fn path_of(store: &SqliteStore) -> StoreResult<std::path::PathBuf> {
    store
        .run(|c| {
            c.path()
                .map(std::path::PathBuf::from)
                .ok_or_else(|| StoreError::Unavailable("sqlite database has no file".into()))
        })
        .await
}

fn err(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(format!("sqlite: {e}"))
}

fn q(s: &str) -> String {
    s.replace('$', "?").replace("IS NOT DISTINCT FROM", "IS")
}

fn migrate(c: &mut Connection) -> StoreResult<()> {
    c.execute_batch("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)")
        .map_err(err)?;
    for (version, ddl) in migrations::SQLITE {
        let tx = c
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let done: Option<i64> = tx
            .query_row(
                "SELECT version FROM schema_migrations WHERE version = ?1",
                [version],
                |r| r.get(0),
            )
            .optional()
            .map_err(err)?;
        if done.is_none() {
            tx.execute_batch(ddl).map_err(err)?;
            tx.execute(
                "INSERT INTO schema_migrations (version) VALUES (?1)",
                [version],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)?;
    }
    Ok(())
}

fn row_data(r: &Row<'_>) -> rusqlite::Result<RowData> {
    Ok(RowData {
        name: r.get(0)?,
        version: r.get(1)?,
        enabled: r.get(2)?,
        nbf: r.get(3)?,
        exp: r.get(4)?,
        created: r.get(5)?,
        updated: r.get(6)?,
        content_type: r.get(7)?,
        tags: r.get(8)?,
        managed: r.get(9)?,
        payload: r.get(10)?,
        meta: r.get(11)?,
        seq: r.get(12)?,
        deleted_date: r.get(13)?,
        scheduled_purge_date: r.get(14)?,
        kind: r.get(15)?,
    })
}

fn vault_row(r: &Row<'_>) -> rusqlite::Result<sql::VaultRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
        r.get(10)?,
        r.get(11)?,
    ))
}

fn query_rows(c: &Connection, sql: &str, p: &[&dyn rusqlite::ToSql]) -> StoreResult<Vec<RowData>> {
    let mut stmt = c.prepare_cached(&q(sql)).map_err(err)?;
    let rows = stmt.query_map(p, row_data).map_err(err)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(err)
}

fn insert_version(c: &Connection, vault_id: &str, rec: &VersionRecord) -> StoreResult<i64> {
    c.prepare_cached(&q(sql::INSERT_VERSION))
        .map_err(err)?
        .execute(params![
            vault_id,
            rec.kind.as_str(),
            rec.name.key(),
            rec.version.as_str(),
            rec.attributes.enabled,
            rec.attributes.nbf,
            rec.attributes.exp,
            rec.attributes.created,
            rec.attributes.updated,
            rec.content_type,
            sql::tags_json(&rec.tags),
            rec.managed,
            rec.payload,
            rec.meta,
        ])
        .map_err(err)?;
    Ok(c.last_insert_rowid())
}

fn object_state(
    c: &Connection,
    vault_id: &str,
    kind: ObjectKind,
    key: &str,
) -> StoreResult<Option<Option<i64>>> {
    c.prepare_cached(&q(sql::OBJECT_STATE))
        .map_err(err)?
        .query_row(params![vault_id, kind.as_str(), key], |r| {
            r.get::<_, Option<i64>>(0)
        })
        .optional()
        .map_err(err)
}

#[async_trait]
impl Store for SqliteStore {
    async fn get_setting(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        if let Some(v) = self.settings.read().ok().and_then(|m| m.get(key).cloned()) {
            return Ok(v);
        }
        let epoch = self.settings_epoch.load(Ordering::SeqCst);
        let k = key.to_owned();
        let value: Option<Vec<u8>> = self
            .read(move |c| {
                c.prepare_cached(&q(sql::GET_SETTING))
                    .map_err(err)?
                    .query_row([k], |r| r.get(0))
                    .optional()
                    .map_err(err)
            })
            .await?;
        self.remember_setting(key, value.clone(), epoch);
        Ok(value)
    }

    async fn put_setting_if_absent(&self, key: &str, value: &[u8]) -> StoreResult<bool> {
        let (k, v) = (key.to_owned(), value.to_vec());
        let (settings, epoch) = (Arc::clone(&self.settings), Arc::clone(&self.settings_epoch));
        self.run(move |c| {
            let n = c.execute(&q(sql::PUT_SETTING), params![k, v]).map_err(err);
            let now = c
                .prepare_cached(&q(sql::GET_SETTING))
                .map_err(err)
                .and_then(|mut st| st.query_row([&k], |r| r.get(0)).optional().map_err(err));
            match &now {
                Ok(now) => set_setting(&settings, &epoch, &k, now.clone()),
                Err(_) => forget_setting(&settings, &epoch, &k),
            }
            Ok(n? == 1)
        })
        .await
    }

    async fn replace_setting(&self, key: &str, expected: &[u8], value: &[u8]) -> StoreResult<bool> {
        let (k, expected, v) = (key.to_owned(), expected.to_vec(), value.to_vec());
        let (settings, epoch) = (Arc::clone(&self.settings), Arc::clone(&self.settings_epoch));
        self.run(move |c| {
            let n = c.execute(&q(sql::REPLACE_SETTING), params![k, expected, v]);
            if matches!(n, Ok(1)) {
                set_setting(&settings, &epoch, &k, Some(v));
            } else {
                forget_setting(&settings, &epoch, &k);
            }
            Ok(n.map_err(err)? == 1)
        })
        .await
    }

    async fn create_vault(&self, v: &VaultRecord) -> StoreResult<()> {
        let v = v.clone();
        self.run(move |c| {
            let n = c
                .execute(
                    &q(&sql::INSERT_VAULT.replace("INSERT INTO", "INSERT OR IGNORE INTO")),
                    params![
                        v.name.as_str(),
                        v.id,
                        v.tenant_id,
                        v.subscription_id,
                        v.resource_group,
                        v.sku,
                        v.retention_days,
                        v.purge_protection,
                        v.wrapped_key,
                        v.created,
                        properties_json(&v.properties)
                    ],
                )
                .map_err(err)?;
            if n == 1 {
                Ok(())
            } else {
                Err(StoreError::NameExists {
                    kind: ObjectKind::Secret,
                    name: v.name.to_string(),
                })
            }
        })
        .await
    }

    async fn get_vault(&self, name: &VaultName) -> StoreResult<Option<VaultRecord>> {
        let name = name.as_str().to_owned();
        self.read(move |c| {
            c.prepare_cached(&q(sql::GET_VAULT))
                .map_err(err)?
                .query_row([name], vault_row)
                .optional()
                .map_err(err)?
                .map(sql::vault_record)
                .transpose()
        })
        .await
    }

    async fn list_vaults(&self) -> StoreResult<Vec<VaultRecord>> {
        self.read(move |c| {
            c.prepare_cached(&q(sql::LIST_VAULTS))
                .map_err(err)?
                .query_map([], vault_row)
                .map_err(err)?
                .map(|r| r.map_err(err).and_then(sql::vault_record))
                .collect()
        })
        .await
    }

    async fn replace_vault_with(
        &self,
        v: &VaultRecord,
        events: &[ChangeEvent],
    ) -> StoreResult<bool> {
        let props = sql::properties_json(&v.properties);
        let (v, events) = (v.clone(), events.to_vec());
        self.run(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(err)?;
            let written = tx
                .execute(
                    &q(sql::REPLACE_VAULT),
                    params![
                        v.id,
                        v.sku,
                        v.retention_days,
                        v.purge_protection,
                        props,
                        v.rev
                    ],
                )
                .map_err(err)?
                == 1;
            if written {
                record_events(&tx, &events)?;
            }
            tx.commit().map_err(err)?;
            Ok(written)
        })
        .await
    }

    async fn replace_wrapped_key(
        &self,
        vault_id: &str,
        expected: &[u8],
        wrapped: &[u8],
    ) -> StoreResult<bool> {
        let (id, expected, wrapped) = (vault_id.to_owned(), expected.to_vec(), wrapped.to_vec());
        self.run(move |c| {
            Ok(
                c.execute(&q(sql::REPLACE_WRAPPED_KEY), params![id, expected, wrapped])
                    .map_err(err)?
                    == 1,
            )
        })
        .await
    }

    async fn purge_vault(&self, vault_id: &str, rev: i64) -> StoreResult<bool> {
        let id = vault_id.to_owned();
        self.run_forgetting(Forget::All, move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(err)?;
            if tx
                .execute(&q(sql::PURGE_VAULT_ROW), params![id, rev])
                .map_err(err)?
                != 1
            {
                return Ok(false);
            }
            for stmt in sql::PURGE_VAULT_DATA {
                tx.execute(&q(stmt), [&id]).map_err(err)?;
            }
            tx.commit().map_err(err)?;
            Ok(true)
        })
        .await
    }

    async fn put_versions_with(
        &self,
        vault_id: &str,
        recs: &[VersionRecord],
        policy: Option<&PolicyChange>,
        events: &[ChangeEvent],
    ) -> StoreResult<Vec<ObjectName>> {
        let (vault_id, recs, policy) = (vault_id.to_owned(), recs.to_vec(), policy.cloned());
        let events = events.to_vec();
        let forget = object_keys(&vault_id, &recs);
        self.run_forgetting(Forget::Objects(forget), move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(err)?;
            for rec in &recs {
                let key = rec.name.key();
                tx.prepare_cached(&q(sql::INSERT_OBJECT))
                    .map_err(err)?
                    .execute(params![vault_id, rec.kind.as_str(), key, rec.name.as_str()])
                    .map_err(err)?;
                if let Some(Some(_)) = object_state(&tx, &vault_id, rec.kind, &key)? {
                    return Err(StoreError::NameDeleted {
                        kind: rec.kind,
                        name: rec.name.to_string(),
                    });
                }
                let managed: Option<bool> = tx
                    .prepare_cached(&q(sql::LATEST_MANAGED))
                    .map_err(err)?
                    .query_row(params![vault_id, rec.kind.as_str(), key], |r| r.get(0))
                    .optional()
                    .map_err(err)?;
                sql::check_managed(managed, rec)?;
                let seq = insert_version(&tx, &vault_id, rec)?;
                tx.prepare_cached(&q(sql::SET_LATEST))
                    .map_err(err)?
                    .execute(params![vault_id, rec.kind.as_str(), key, seq])
                    .map_err(err)?;
            }
            if let Some(change) = &policy {
                policy_change(&tx, &vault_id, change)?;
            }
            let stored = recs
                .iter()
                .map(|rec| sql::stored_object_name(stored_name(&tx, &vault_id, rec)?, rec))
                .collect::<StoreResult<Vec<ObjectName>>>()?;
            let bodies = sql::event_bodies(&events, &recs, |rec| {
                let i = recs.iter().position(|r| std::ptr::eq(r, rec));
                Ok(i.and_then(|i| stored.get(i)).map(ToString::to_string))
            })?;
            insert_events(&tx, bodies)?;
            tx.commit().map_err(err)?;
            Ok(stored)
        })
        .await
    }

    async fn get_version(
        &self,
        vault_id: &str,
        kind: ObjectKind,
        name: &ObjectName,
        version: Option<&Version>,
    ) -> StoreResult<Option<VersionRecord>> {
        let (vault_id, key) = (vault_id.to_owned(), name.key());
        let cache_key = (vault_id.clone(), kind, key.clone());
        let version = version.map(|v| v.as_str().to_owned());
        if let Some(hit) = self
            .latest
            .read()
            .ok()
            .and_then(|m| m.get(&cache_key, version.as_deref()).cloned())
        {
            return Ok(Some(hit));
        }
        let epoch = self.latest_epoch.load(Ordering::SeqCst);
        let wanted = version.clone();
        let found = self
            .read(move |c| {
                let rows = match &wanted {
                    None => query_rows(c, &sql::get_latest(), &[&vault_id, &kind.as_str(), &key])?,
                    Some(v) => query_rows(
                        c,
                        &sql::get_by_version(),
                        &[&vault_id, &kind.as_str(), &key, v],
                    )?,
                };
                rows.into_iter()
                    .next()
                    .map(RowData::into_record)
                    .transpose()
            })
            .await?;
        if let Some(rec) = &found {
            if let Ok(mut m) = self.latest.write() {
                // A write committed while we read: what we read may be stale.
                if self.latest_epoch.load(Ordering::SeqCst) == epoch {
                    m.put(cache_key, version.as_deref(), rec.clone());
                }
            }
        }
        Ok(found)
    }

    async fn update_versions(
        &self,
        vault_id: &str,
        changes: &[(VersionRecord, VersionRecord)],
    ) -> StoreResult<()> {
        let (vault_id, changes) = (vault_id.to_owned(), changes.to_vec());
        let writes: Vec<VersionRecord> = changes.iter().map(|(_, w)| w.clone()).collect();
        let forget = object_keys(&vault_id, &writes);
        self.run_forgetting(Forget::Objects(forget), move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(err)?;
            for (read, write) in &changes {
                let key = write.name.key();
                let n = tx
                    .execute(
                        &q(sql::UPDATE_VERSION),
                        params![
                            vault_id,
                            write.kind.as_str(),
                            key,
                            write.version.as_str(),
                            write.attributes.enabled,
                            write.attributes.nbf,
                            write.attributes.exp,
                            write.attributes.updated,
                            write.content_type,
                            sql::tags_json(&write.tags),
                            write.meta,
                            read.attributes.enabled,
                            read.attributes.nbf,
                            read.attributes.exp,
                            read.attributes.updated,
                            read.content_type,
                            sql::tags_json(&read.tags),
                            read.meta
                        ],
                    )
                    .map_err(err)?;
                if n != 1 {
                    let exists = tx
                        .query_row(
                            &q(sql::VERSION_EXISTS),
                            params![vault_id, write.kind.as_str(), key, write.version.as_str()],
                            |_| Ok(()),
                        )
                        .optional()
                        .map_err(err)?
                        .is_some();
                    let (kind, name) = (write.kind, write.name.to_string());
                    return Err(if exists {
                        StoreError::Changed { kind, name }
                    } else {
                        StoreError::Missing { kind, name }
                    });
                }
            }
            tx.commit().map_err(err)
        })
        .await
    }

    async fn list_latest(
        &self,
        vault_id: &str,
        kind: ObjectKind,
        cursor: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<VersionRecord>> {
        self.list_names(vault_id, kind, cursor, limit, false)
            .await
            .map(|p| p.map(|(r, _)| r))
    }

    async fn expiring(
        &self,
        vault_id: &str,
        from: i64,
        to: i64,
        cursor: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<VersionRecord>> {
        let vault_id = vault_id.to_owned();
        let after = sql::seq_cursor(cursor);
        self.read(move |c| {
            let rows = query_rows(
                c,
                &sql::expiring(),
                &[&vault_id, &from, &to, &after, &(i64::from(limit) + 1)],
            )?;
            sql::version_page(rows, limit)
        })
        .await
    }

    async fn list_versions(
        &self,
        vault_id: &str,
        kind: ObjectKind,
        name: &ObjectName,
        cursor: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<VersionRecord>> {
        let (vault_id, key) = (vault_id.to_owned(), name.key());
        let after = sql::seq_cursor(cursor);
        self.read(move |c| {
            let rows = query_rows(
                c,
                &sql::list_versions(),
                &[
                    &vault_id,
                    &kind.as_str(),
                    &key,
                    &after,
                    &(i64::from(limit) + 1),
                ],
            )?;
            sql::version_page(rows, limit)
        })
        .await
    }

    async fn all_versions_of(
        &self,
        vault_id: &str,
        kinds: &[ObjectKind],
        name: &ObjectName,
    ) -> StoreResult<Vec<VersionRecord>> {
        self.every_version(sql::list_versions(), vault_id, kinds, name)
            .await
    }

    async fn deleted_versions(
        &self,
        vault_id: &str,
        kind: ObjectKind,
        name: &ObjectName,
    ) -> StoreResult<Vec<VersionRecord>> {
        self.every_version(sql::list_deleted_versions(), vault_id, &[kind], name)
            .await
    }

    async fn delete_objects(
        &self,
        vault_id: &str,
        kinds: &[ObjectKind],
        name: &ObjectName,
        info: DeletedInfo,
    ) -> StoreResult<Option<VersionRecord>> {
        let (vault_id, key, kinds) = (vault_id.to_owned(), name.key(), kinds.to_vec());
        let forget = kinds_keys(&vault_id, &kinds, &key);
        self.run_forgetting(Forget::Objects(forget), move |c| {
            let Some(&first) = kinds.first() else {
                return Ok(None);
            };
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(err)?;
            for (i, kind) in kinds.iter().enumerate() {
                let n = tx
                    .execute(
                        &q(sql::MARK_DELETED),
                        params![
                            vault_id,
                            kind.as_str(),
                            key,
                            info.deleted_date,
                            info.scheduled_purge_date
                        ],
                    )
                    .map_err(err)?;
                if i == 0 && n == 0 {
                    return Ok(None);
                }
            }
            let rec = query_rows(
                &tx,
                &sql::get_deleted(),
                &[&vault_id, &first.as_str(), &key],
            )?
            .into_iter()
            .next()
            .map(RowData::into_record)
            .transpose()?;
            tx.commit().map_err(err)?;
            Ok(rec)
        })
        .await
    }

    async fn get_deleted(
        &self,
        vault_id: &str,
        kind: ObjectKind,
        name: &ObjectName,
    ) -> StoreResult<Option<(VersionRecord, DeletedInfo)>> {
        let (vault_id, key) = (vault_id.to_owned(), name.key());
        self.read(move |c| {
            query_rows(c, &sql::get_deleted(), &[&vault_id, &kind.as_str(), &key])?
                .into_iter()
                .next()
                .map(|r| {
                    let info = r.deleted_info()?;
                    Ok((r.into_record()?, info))
                })
                .transpose()
        })
        .await
    }

    async fn list_deleted(
        &self,
        vault_id: &str,
        kind: ObjectKind,
        cursor: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<(VersionRecord, DeletedInfo)>> {
        let page = self.list_names(vault_id, kind, cursor, limit, true).await?;
        with_deleted_info(page)
    }

    async fn recover_objects(
        &self,
        vault_id: &str,
        kinds: &[ObjectKind],
        name: &ObjectName,
        now: i64,
    ) -> StoreResult<bool> {
        let (vault_id, key, kinds) = (vault_id.to_owned(), name.key(), kinds.to_vec());
        let forget = kinds_keys(&vault_id, &kinds, &key);
        self.run_forgetting(Forget::Objects(forget), move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(err)?;
            for (i, kind) in kinds.iter().enumerate() {
                let n = tx
                    .execute(&q(sql::RECOVER), params![vault_id, kind.as_str(), key, now])
                    .map_err(err)?;
                if i == 0 && n != 1 {
                    return Ok(false);
                }
            }
            tx.commit().map_err(err)?;
            Ok(!kinds.is_empty())
        })
        .await
    }

    async fn purge_objects(
        &self,
        vault_id: &str,
        kinds: &[ObjectKind],
        name: &ObjectName,
    ) -> StoreResult<bool> {
        let (vault_id, key, kinds) = (vault_id.to_owned(), name.key(), kinds.to_vec());
        let forget = kinds_keys(&vault_id, &kinds, &key);
        self.run_forgetting(Forget::Objects(forget), move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(err)?;
            for (i, kind) in kinds.iter().enumerate() {
                let n = tx
                    .execute(
                        &q(sql::DELETE_DELETED_OBJECT),
                        params![vault_id, kind.as_str(), key],
                    )
                    .map_err(err)?;
                if n == 1 {
                    for stmt in [sql::DELETE_VERSIONS, sql::DELETE_POLICY] {
                        tx.execute(&q(stmt), params![vault_id, kind.as_str(), key])
                            .map_err(err)?;
                    }
                } else if i == 0 {
                    return Ok(false);
                }
            }
            tx.commit().map_err(err)?;
            Ok(!kinds.is_empty())
        })
        .await
    }

    async fn restore_object_with(
        &self,
        vault_id: &str,
        versions: &[VersionRecord],
        policy: Option<&PolicyChange>,
    ) -> StoreResult<()> {
        let (vault_id, versions, policy) =
            (vault_id.to_owned(), versions.to_vec(), policy.cloned());
        let forget = object_keys(&vault_id, &versions);
        self.run_forgetting(Forget::Objects(forget), move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(err)?;
            for object in versions.chunk_by(|a, b| a.kind == b.kind) {
                let Some(first) = object.first() else {
                    continue;
                };
                let (kind, key) = (first.kind, first.name.key());
                if object_state(&tx, &vault_id, kind, &key)?.is_some() {
                    return Err(StoreError::NameExists {
                        kind,
                        name: first.name.to_string(),
                    });
                }
                tx.execute(
                    &q(sql::INSERT_OBJECT),
                    params![vault_id, kind.as_str(), key, first.name.as_str()],
                )
                .map_err(err)?;
                let mut seq = 0;
                for rec in object {
                    seq = insert_version(&tx, &vault_id, rec)?;
                }
                tx.execute(
                    &q(sql::SET_LATEST),
                    params![vault_id, kind.as_str(), key, seq],
                )
                .map_err(err)?;
            }
            if let Some(change) = &policy {
                policy_change(&tx, &vault_id, change)?;
            }
            tx.commit().map_err(err)
        })
        .await
    }

    async fn purge_expired(&self, now: i64) -> StoreResult<u64> {
        self.run_forgetting(Forget::All, move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(err)?;
            for stmt in [sql::PURGE_EXPIRED_VERSIONS, sql::PURGE_EXPIRED_POLICIES] {
                tx.execute(&q(stmt), [now]).map_err(err)?;
            }
            let n = tx
                .execute(&q(sql::PURGE_EXPIRED_OBJECTS), [now])
                .map_err(err)?;
            tx.commit().map_err(err)?;
            Ok(n as u64)
        })
        .await
    }

    async fn get_policy(
        &self,
        vault_id: &str,
        kind: ObjectKind,
        name: &ObjectName,
    ) -> StoreResult<Option<PolicyRecord>> {
        let (vault_id, key) = (vault_id.to_owned(), name.key());
        self.read(move |c| {
            c.prepare_cached(&q(sql::GET_POLICY))
                .map_err(err)?
                .query_row(params![vault_id, kind.as_str(), key], |r| {
                    Ok(PolicyRecord {
                        body: r.get(0)?,
                        created: r.get(1)?,
                        updated: r.get(2)?,
                    })
                })
                .optional()
                .map_err(err)
        })
        .await
    }

    async fn put_policy(
        &self,
        vault_id: &str,
        kind: ObjectKind,
        name: &ObjectName,
        policy: &PolicyRecord,
    ) -> StoreResult<()> {
        let (vault_id, key, p) = (vault_id.to_owned(), name.key(), policy.clone());
        // No trigger watches this table: the generation mirror stays.
        self.run_raw(move |c| {
            c.execute(
                &q(sql::PUT_POLICY),
                params![vault_id, kind.as_str(), key, p.body, p.created, p.updated],
            )
            .map_err(err)?;
            Ok(())
        })
        .await
    }

    async fn put_policy_if(&self, vault_id: &str, change: &PolicyChange) -> StoreResult<bool> {
        let (vault_id, change) = (vault_id.to_owned(), change.clone());
        self.run_raw(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(err)?;
            match policy_change(&tx, &vault_id, &change) {
                Ok(()) => {
                    tx.commit().map_err(err)?;
                    Ok(true)
                }
                Err(StoreError::Changed { .. }) => Ok(false),
                Err(e) => Err(e),
            }
        })
        .await
    }

    async fn list_policies(
        &self,
        kind: ObjectKind,
        cursor: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<ScheduledPolicy>> {
        let (after_vault, after_name) = sql::policy_cursor(cursor);
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&q(sql::LIST_POLICIES)).map_err(err)?;
            let rows = stmt
                .query_map(
                    params![kind.as_str(), after_vault, after_name, i64::from(limit) + 1],
                    |r| {
                        Ok((
                            r.get(0)?,
                            r.get(1)?,
                            r.get(2)?,
                            r.get(3)?,
                            r.get(4)?,
                            r.get(5)?,
                            r.get(6)?,
                        ))
                    },
                )
                .map_err(err)?
                .collect::<Result<Vec<sql::PolicyRow>, _>>()
                .map_err(err)?;
            sql::policy_page(rows, limit)
        })
        .await
    }

    async fn share_usage(
        &self,
        node: &str,
        window: i64,
        counts: &[(String, String, i64)],
    ) -> StoreResult<Vec<(String, String, i64)>> {
        let (node, counts) = (node.to_owned(), counts.to_vec());
        // No trigger watches this table: the generation mirror stays.
        self.run_raw(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(err)?;
            for (vault, class, count) in &counts {
                tx.execute(
                    &q(sql::PUT_USAGE),
                    params![vault, class, window, node, count],
                )
                .map_err(err)?;
            }
            tx.execute(&q(sql::FORGET_USAGE), [window - 1])
                .map_err(err)?;
            let totals = {
                let mut stmt = tx.prepare(&q(sql::SUM_USAGE)).map_err(err)?;
                let rows = stmt
                    .query_map([window], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .map_err(err)?;
                rows.collect::<Result<Vec<(String, String, i64)>, _>>()
                    .map_err(err)?
            };
            tx.commit().map_err(err)?;
            Ok(totals)
        })
        .await
    }

    async fn claim_job(&self, job: &str, now: i64, lease_until: i64) -> StoreResult<bool> {
        let job = job.to_owned();
        // No trigger watches this table: the generation mirror stays.
        self.run_raw(move |c| {
            Ok(
                c.execute(&q(sql::CLAIM_JOB), params![job, lease_until, now])
                    .map_err(err)?
                    == 1,
            )
        })
        .await
    }

    async fn finished_jobs(&self, jobs: &[String]) -> StoreResult<Vec<String>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let list = serde_json::to_string(jobs).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(&q(sql::SQLITE_FINISHED_JOBS))
                .map_err(err)?;
            let rows = stmt
                .query_map([list], |r| r.get::<_, String>(0))
                .map_err(err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(err)
        })
        .await
    }

    async fn finish_job(
        &self,
        job: &str,
        now: i64,
        forget_before: i64,
        events: &[ChangeEvent],
    ) -> StoreResult<()> {
        let (job, events) = (job.to_owned(), events.to_vec());
        // No trigger watches these tables: the generation mirror stays.
        self.run_raw(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(err)?;
            let finished = tx
                .execute(&q(sql::FINISH_JOB), params![job, now])
                .map_err(err)?
                == 1;
            tx.execute(&q(sql::FORGET_JOBS), [forget_before])
                .map_err(err)?;
            if finished {
                record_events(&tx, &events)?;
            }
            tx.commit().map_err(err)
        })
        .await
    }
}

impl SqliteStore {
    /// Pages over live or deleted objects by name; returns each latest version
    /// with its deletion info (for deleted listings).
    async fn list_names(
        &self,
        vault_id: &str,
        kind: ObjectKind,
        cursor: Option<&str>,
        limit: u32,
        deleted: bool,
    ) -> StoreResult<Page<(VersionRecord, Option<DeletedInfo>)>> {
        let vault_id = vault_id.to_owned();
        let after = cursor.unwrap_or("").to_owned();
        self.read(move |c| {
            let rows = query_rows(
                c,
                &sql::list_latest(deleted),
                &[&vault_id, &kind.as_str(), &after, &(i64::from(limit) + 1)],
            )?;
            sql::name_page(rows, limit, deleted)
        })
        .await
    }
}

impl SqliteStore {
    /// Every row `query` (a version listing with the paging parameters)
    /// gives for one object.
    /// Every version of the objects of `kinds` named `name`, read on the
    /// writer connection in one closure: no write can land between kinds.
    async fn every_version(
        &self,
        query: String,
        vault_id: &str,
        kinds: &[ObjectKind],
        name: &ObjectName,
    ) -> StoreResult<Vec<VersionRecord>> {
        let (vault_id, key, kinds) = (vault_id.to_owned(), name.key(), kinds.to_vec());
        self.run_raw(move |c| {
            let mut out = Vec::new();
            for kind in kinds {
                for row in query_rows(
                    c,
                    &query,
                    &[&vault_id, &kind.as_str(), &key, &0i64, &i64::MAX],
                )? {
                    out.push(row.into_record()?);
                }
            }
            Ok(out)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::{LatestCache, LatestKey, LATEST_CACHE};
    use crate::conformance::rec;
    use keyhaven_core::object::ObjectKind;

    fn key(i: usize) -> LatestKey {
        ("v".to_owned(), ObjectKind::Secret, format!("s{i}"))
    }

    /// Past its size the cache drops its oldest generation, never
    /// everything: the most recent half is always there, and a read of an
    /// old entry keeps it when it is cached again.
    #[test]
    fn the_latest_cache_forgets_a_generation_at_a_time() {
        let mut c = LatestCache::default();
        let half = LATEST_CACHE / 2;
        for i in 0..5 * half + 7 {
            c.put(key(i), None, rec(ObjectKind::Secret, "s", 1, &[1]));
            assert!(c.len() <= LATEST_CACHE, "bounded");
            assert!(c.len() > half.min(i), "never emptied at once");
            let recent = i.saturating_sub(half - 1);
            assert!(c.get(&key(recent), None).is_some(), "the last half stays");
        }
        // A version read by id of an entry in the old generation: the
        // entry moves back to the young one with what it held.
        let old = 4 * half + 10;
        assert!(c.old.contains_key(&key(old)));
        c.put(key(old), Some("v1"), rec(ObjectKind::Secret, "s", 2, &[2]));
        assert!(c.young.contains_key(&key(old)) && !c.old.contains_key(&key(old)));
        assert!(c.get(&key(old), None).is_some() && c.get(&key(old), Some("v1")).is_some());
        // A write's removal reaches both generations.
        c.remove(&key(old));
        c.remove(&key(4 * half + 11));
        assert!(c.get(&key(old), None).is_none());
        assert!(c.get(&key(4 * half + 11), None).is_none());
        c.clear();
        assert_eq!(c.len(), 0);
    }
}
