//! The PostgreSQL store, for several stateless nodes sharing one database.
//! Writes to one object name serialise on its `objects` row (`FOR UPDATE`), so
//! concurrent sets on any node produce distinct versions and none is lost.

use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use keyhaven_core::events::ChangeEvent;
use keyhaven_core::ids::{ObjectName, VaultName, Version};
use keyhaven_core::object::{DeletedInfo, ObjectKind, Page, VersionRecord};
use keyhaven_core::store::{
    PolicyChange, PolicyRecord, ScheduledPolicy, Store, StoreError, StoreResult,
};
use keyhaven_core::vault::VaultRecord;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use crate::migrations;

mod directory;
mod logs;
mod outbox;
mod resource;
mod watch;
use crate::sql::{self, properties_json, with_deleted_info, RowData};

/// Size of the connection pool of one node.
const POOL_SIZE: usize = 16;
/// Advisory lock key that serialises migrations across nodes.
const MIGRATION_LOCK: i64 = 0x6b68_6d69_6772;

/// PostgreSQL implementation of `Store`.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    settings: Arc<watch::SettingsWatch>,
    // Log queries holding a connection at once (see `logs::query_logs`).
    log_slots: Arc<tokio::sync::Semaphore>,
}

pub(crate) type P<'a> = &'a (dyn ToSql + Sync);

fn config_for_listener(url: &str) -> StoreResult<tokio_postgres::Config> {
    tokio_postgres::Config::from_str(url)
        .map_err(|e| StoreError::Unavailable(format!("invalid postgres URL: {e}")))
}

impl PostgresStore {
    /// A version written alone (a secret's SET, a key's new version) with
    /// at most one event: one round trip. BEGIN, the object row's creation
    /// and lock, the checks, one statement writing the version and its
    /// event guarded by those checks (see
    /// [`sql::PG_GUARDED_INSERT_VERSION_SET_LATEST`]) and COMMIT are sent
    /// together. A refused write changes nothing, so the COMMIT behind it
    /// ends an empty transaction; a failed statement aborts the transaction
    /// and the COMMIT behind it rolls back. The write is reported done only
    /// when every statement succeeded and the version was written.
    ///
    /// An event names the object as it is stored, known only once its row
    /// is locked; it is made with the write's own name, and the guard also
    /// requires the row to be stored under it. When it is not (the object
    /// was created with another casing), or there are several events,
    /// nothing is written and `None` sends the write down the
    /// two-round-trip path.
    async fn put_one_version(
        &self,
        vault_id: &str,
        rec: &VersionRecord,
        events: &[ChangeEvent],
    ) -> StoreResult<Option<Vec<ObjectName>>> {
        use futures_util::future::{join, join3};
        if events.len() > 1 {
            return Ok(None);
        }
        let tx = Pipelined::new(self.client().await?);
        let c = tx.client()?;
        let (insert_object, lock_object, latest_managed, guarded) = (
            cached(c, sql::INSERT_OBJECT).await?,
            cached(c, sql::OBJECT_STATE_NAME_FOR_UPDATE).await?,
            cached(c, sql::LATEST_MANAGED).await?,
            cached(c, sql::PG_GUARDED_INSERT_VERSION_SET_LATEST).await?,
        );
        let (kind, key, name) = (rec.kind.as_str(), rec.name.key(), rec.name.as_str());
        let p = VersionParams::new(vault_id, rec);
        let named: Option<&str> = (!events.is_empty()).then_some(name);
        let event = sql::event_bodies(events, &[], |_| Ok(None))?
            .into_iter()
            .next();
        let (event_id, body, under, due) = match &event {
            Some((id, body, under, due)) => (Some(id), Some(body), Some(under), Some(due)),
            None => (None, None, None, None),
        };
        let mut params = p.params().to_vec();
        params.extend([
            &named as &(dyn ToSql + Sync),
            &event_id,
            &body,
            &under,
            &due,
        ]);
        // `join` polls left to right, so the statements are sent in this
        // order.
        let ((begun, (created, state, managed)), (written, committed)) = join(
            join(
                c.batch_execute("BEGIN"),
                join3(
                    c.execute(&insert_object, &[&vault_id, &kind, &key, &name]),
                    c.query_one(&lock_object, &[&vault_id, &kind, &key]),
                    c.query_opt(&latest_managed, &[&vault_id, &kind, &key]),
                ),
            ),
            join(c.execute(&guarded, &params), c.batch_execute("COMMIT")),
        )
        .await;
        // The COMMIT has run: committed, or (after a failed statement)
        // rolled back. Nothing is left open on the connection.
        tx.finish();
        begun.map_err(err)?;
        created.map_err(err)?;
        let state = state.map_err(err)?;
        let managed = managed.map_err(err)?;
        let written = written.map_err(err)?;
        committed.map_err(err)?;
        let stored: Option<String> = state.try_get(1).map_err(err)?;
        if written == 1 {
            // Committed: no error may follow (a caller would undo what it
            // made for a write it believes failed).
            let name = sql::stored_object_name(stored, rec).unwrap_or_else(|_| rec.name.clone());
            return Ok(Some(vec![name]));
        }
        // Refused: the guard saw what the checks read (the row was locked
        // from the check on).
        check_version_write(&state, managed.as_ref(), rec)?;
        if named.is_some() && stored.as_deref() != Some(name) {
            // Stored under another casing: its events need that name.
            return Ok(None);
        }
        Err(StoreError::Corrupt(
            "postgres: a version the checks allowed was not written".into(),
        ))
    }

    /// Connects with a `postgres://` URL (libpq syntax, including `options`)
    /// and applies migrations.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let config = tokio_postgres::Config::from_str(url)
            .map_err(|e| StoreError::Unavailable(format!("invalid postgres URL: {e}")))?;
        let mgr = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(POOL_SIZE)
            .build()
            .map_err(|e| StoreError::Unavailable(format!("postgres pool: {e}")))?;
        let settings = watch::SettingsWatch::start(config_for_listener(url)?);
        let store = Self {
            pool,
            settings,
            log_slots: Arc::new(tokio::sync::Semaphore::new(logs::LOG_QUERIES)),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Whether settings are served from this node's cache, kept by a live
    /// `LISTEN` connection (otherwise each read goes to the database).
    pub fn listening(&self) -> bool {
        self.settings.is_live()
    }

    async fn client(&self) -> StoreResult<Object> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError::Unavailable(format!("postgres: {e}")))
    }

    async fn migrate(&self) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(err)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(err)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY)",
        )
        .await
        .map_err(err)?;
        for (version, ddl) in migrations::POSTGRES {
            let done = tx
                .query_opt(
                    "SELECT version FROM schema_migrations WHERE version = $1",
                    &[version],
                )
                .await
                .map_err(err)?;
            if done.is_none() {
                tx.batch_execute(ddl).await.map_err(err)?;
                tx.execute(
                    "INSERT INTO schema_migrations (version) VALUES ($1)",
                    &[version],
                )
                .await
                .map_err(err)?;
            }
        }
        tx.commit().await.map_err(err)
    }

    async fn list_names(
        &self,
        vault_id: &str,
        kind: ObjectKind,
        cursor: Option<&str>,
        limit: u32,
        deleted: bool,
    ) -> StoreResult<Page<(VersionRecord, Option<DeletedInfo>)>> {
        let c = self.client().await?;
        let after = cursor.unwrap_or("");
        let rows = query_rows(
            &c,
            &sql::list_latest(deleted),
            &[&vault_id, &kind.as_str(), &after, &(i64::from(limit) + 1)],
        )
        .await?;
        sql::name_page(rows, limit, deleted)
    }
}

/// Whether a version write may go ahead, from its object's locked row
/// ([`sql::OBJECT_STATE_NAME_FOR_UPDATE`]) and its latest version's owner
/// ([`sql::LATEST_MANAGED`]): the object is not soft-deleted, and a
/// certificate's object is written only by its certificate.
fn check_version_write(state: &Row, managed: Option<&Row>, rec: &VersionRecord) -> StoreResult<()> {
    let deleted: Option<i64> = state.try_get(0).map_err(err)?;
    if deleted.is_some() {
        return Err(StoreError::NameDeleted {
            kind: rec.kind,
            name: rec.name.to_string(),
        });
    }
    let managed: Option<bool> = managed.map(|r| r.try_get(0).map_err(err)).transpose()?;
    sql::check_managed(managed, rec)
}

/// Records change events that are not about a version write (those are
/// recorded by `put_versions_with`) in the outbox, inside a transaction.
async fn record_events(
    tx: &deadpool_postgres::Transaction<'_>,
    events: &[ChangeEvent],
) -> StoreResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let bodies = sql::event_bodies(events, &[], |_| Ok(None))?;
    let insert = cached(tx, sql::RECORD_EVENT).await?;
    insert_events(tx, &insert, &bodies).await.map_err(err)
}

/// Inserts `bodies` ([`sql::event_bodies`]) with `insert`
/// ([`sql::RECORD_EVENT`]), sent together: one round trip.
async fn insert_events<C: GenericClient + Sync>(
    c: &C,
    insert: &tokio_postgres::Statement,
    bodies: &[(String, String, String, i64)],
) -> Result<(), tokio_postgres::Error> {
    in_order(bodies.iter().map(|(id, body, under, due)| async move {
        c.execute(insert, &[id, body, under, due]).await
    }))
    .await
    .into_iter()
    .try_for_each(|r| r.map(drop))
}

/// Runs `futs` to the end, all at once, polling them in order: each
/// statement future queues its message on its first poll, so this is the
/// order they reach PostgreSQL in. (`join_all` and `try_join_all` keep that
/// order only up to 30 futures.)
async fn in_order<F: std::future::Future>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    use futures_util::future::{maybe_done, MaybeDone};
    use std::future::Future as _;
    let mut all: Vec<std::pin::Pin<Box<MaybeDone<F>>>> =
        futs.into_iter().map(|f| Box::pin(maybe_done(f))).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for f in all.iter_mut() {
            done &= f.as_mut().poll(cx).is_ready();
        }
        if done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    all.iter_mut()
        .filter_map(|f| f.as_mut().take_output())
        .collect()
}

/// A pooled connection in a transaction whose BEGIN and COMMIT travel with
/// its statements (pipelined), so a write is two round trips (tokio-postgres'
/// own `Transaction` waits for BEGIN). Dropped without `finish` (an error, or
/// the request cancelled at any `.await`), it does what `Transaction`'s drop
/// does: ROLLBACK is queued behind whatever was sent, on a task that keeps
/// the connection out of the pool until the ROLLBACK has run (so a write
/// stuck on a lock holds its pool slot, and no session outlives the pool's
/// count), then returns it; if the ROLLBACK fails, or there is no runtime to
/// run it on, the connection is closed instead, and PostgreSQL rolls back
/// whatever was not committed when the session ends.
struct Pipelined(Option<Object>);

impl Pipelined {
    fn new(c: Object) -> Self {
        Self(Some(c))
    }

    fn client(&self) -> StoreResult<&Object> {
        self.0
            .as_ref()
            .ok_or_else(|| StoreError::Unavailable("postgres: connection already released".into()))
    }

    /// Rolls back a refused write and returns `why`; the connection goes
    /// back to the pool (or, if the ROLLBACK failed, is closed).
    async fn refuse(self, why: StoreError) -> StoreError {
        if let Ok(c) = self.client() {
            if c.batch_execute("ROLLBACK").await.is_ok() {
                self.finish();
            }
        }
        why
    }

    /// The transaction has ended: the connection goes back to the pool.
    fn finish(mut self) {
        self.0.take();
    }
}

impl Drop for Pipelined {
    fn drop(&mut self) {
        let Some(c) = self.0.take() else { return };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    if c.batch_execute("ROLLBACK").await.is_err() {
                        drop(Object::take(c));
                    }
                });
            }
            Err(_) => drop(Object::take(c)),
        }
    }
}

/// `q` prepared once per connection and kept (the pool's statement cache):
/// each later use is one round trip, not a prepare and then an execute.
async fn cached<C: GenericClient + Sync>(c: &C, q: &str) -> StoreResult<tokio_postgres::Statement> {
    c.prepare_cached(q).await.map_err(err)
}

fn err(e: tokio_postgres::Error) -> StoreError {
    StoreError::Unavailable(format!("postgres: {e}"))
}

fn row_data(r: &Row) -> StoreResult<RowData> {
    let g = |e: tokio_postgres::Error| StoreError::Corrupt(format!("postgres row: {e}"));
    Ok(RowData {
        name: r.try_get(0).map_err(g)?,
        version: r.try_get(1).map_err(g)?,
        enabled: r.try_get(2).map_err(g)?,
        nbf: r.try_get(3).map_err(g)?,
        exp: r.try_get(4).map_err(g)?,
        created: r.try_get(5).map_err(g)?,
        updated: r.try_get(6).map_err(g)?,
        content_type: r.try_get(7).map_err(g)?,
        tags: r.try_get(8).map_err(g)?,
        managed: r.try_get(9).map_err(g)?,
        payload: r.try_get(10).map_err(g)?,
        meta: r.try_get(11).map_err(g)?,
        seq: r.try_get(12).map_err(g)?,
        deleted_date: r.try_get(13).map_err(g)?,
        scheduled_purge_date: r.try_get(14).map_err(g)?,
        kind: r.try_get(15).map_err(g)?,
    })
}

fn pg_vault_row(r: &tokio_postgres::Row) -> StoreResult<sql::VaultRow> {
    Ok((
        r.try_get(0).map_err(err)?,
        r.try_get(1).map_err(err)?,
        r.try_get(2).map_err(err)?,
        r.try_get(3).map_err(err)?,
        r.try_get(4).map_err(err)?,
        r.try_get(5).map_err(err)?,
        r.try_get(6).map_err(err)?,
        r.try_get(7).map_err(err)?,
        r.try_get(8).map_err(err)?,
        r.try_get(9).map_err(err)?,
        r.try_get(10).map_err(err)?,
        r.try_get(11).map_err(err)?,
    ))
}

async fn query_rows<C: GenericClient + Sync>(
    c: &C,
    q: &str,
    p: &[P<'_>],
) -> StoreResult<Vec<RowData>> {
    let stmt = c.prepare_cached(q).await.map_err(err)?;
    c.query(&stmt, p)
        .await
        .map_err(err)?
        .iter()
        .map(row_data)
        .collect()
}

/// Applies a policy compare-and-set; `Changed` if the stored body is no
/// longer the one read.
async fn policy_change<C: GenericClient + Sync>(
    c: &C,
    vault_id: &str,
    change: &PolicyChange,
) -> StoreResult<()> {
    let (kind, key, r) = (change.kind.as_str(), change.name.key(), &change.record);
    let n = match &change.expected {
        None => {
            c.execute(
                sql::INSERT_POLICY_NEW,
                &[&vault_id, &kind, &key, &r.body, &r.created, &r.updated],
            )
            .await
        }
        Some(body) => {
            c.execute(
                sql::REPLACE_POLICY_IF,
                &[&vault_id, &kind, &key, &r.body, &r.updated, body],
            )
            .await
        }
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

/// Locks the object rows of `kinds` named `key` (those that exist), in one
/// fixed order, before a multi-object change.
async fn lock_objects<C: GenericClient + Sync>(
    c: &C,
    vault_id: &str,
    kinds: &[ObjectKind],
    key: &str,
) -> StoreResult<()> {
    let mut sorted: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
    sorted.sort_unstable();
    let q = cached(c, sql::OBJECT_STATE_FOR_UPDATE).await?;
    for kind in sorted {
        c.query_opt(&q, &[&vault_id, &kind, &key])
            .await
            .map_err(err)?;
    }
    Ok(())
}

async fn insert_version<C: GenericClient + Sync>(
    c: &C,
    vault_id: &str,
    rec: &VersionRecord,
) -> StoreResult<i64> {
    let q = format!("{} RETURNING seq", sql::INSERT_VERSION);
    let stmt = c.prepare_cached(&q).await.map_err(err)?;
    let p = VersionParams::new(vault_id, rec);
    let row = c.query_one(&stmt, &p.params()).await.map_err(err)?;
    row.try_get(0).map_err(err)
}

/// The parameters ($1…$14) of [`sql::INSERT_VERSION`] for one record.
struct VersionParams<'a> {
    vault_id: &'a str,
    rec: &'a VersionRecord,
    kind: &'static str,
    key: String,
    version: &'a str,
    tags: String,
}

impl<'a> VersionParams<'a> {
    fn new(vault_id: &'a str, rec: &'a VersionRecord) -> Self {
        Self {
            vault_id,
            rec,
            kind: rec.kind.as_str(),
            key: rec.name.key(),
            version: rec.version.as_str(),
            tags: sql::tags_json(&rec.tags),
        }
    }

    fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 14] {
        let (r, a) = (self.rec, &self.rec.attributes);
        [
            &self.vault_id,
            &self.kind,
            &self.key,
            &self.version,
            &a.enabled,
            &a.nbf,
            &a.exp,
            &a.created,
            &a.updated,
            &r.content_type,
            &self.tags,
            &r.managed,
            &r.payload,
            &r.meta,
        ]
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn get_setting(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        if let Some(hit) = self.settings.get(key) {
            return Ok(hit);
        }
        let epoch = self.settings.epoch();
        let started = std::time::Instant::now();
        let c = self.client().await?;
        let row = c.query_opt(sql::GET_SETTING, &[&key]).await.map_err(err)?;
        let value: Option<Vec<u8>> = row.map(|r| r.try_get(0).map_err(err)).transpose()?;
        self.settings.put(key, value.clone(), epoch, started);
        Ok(value)
    }

    async fn put_setting_if_absent(&self, key: &str, value: &[u8]) -> StoreResult<bool> {
        let c = self.client().await?;
        let written = c
            .query(sql::PG_PUT_SETTING, &[&key, &value])
            .await
            .map_err(err)?
            .len()
            == 1;
        self.settings.forget(key);
        Ok(written)
    }

    async fn replace_setting(&self, key: &str, expected: &[u8], value: &[u8]) -> StoreResult<bool> {
        let c = self.client().await?;
        let written = c
            .query(sql::PG_REPLACE_SETTING, &[&key, &expected, &value])
            .await
            .map_err(err)?
            .len()
            == 1;
        self.settings.forget(key);
        Ok(written)
    }

    async fn create_vault(&self, v: &VaultRecord) -> StoreResult<()> {
        let _authz = self.settings.authz_write();
        let c = self.client().await?;
        let q = format!("{} ON CONFLICT DO NOTHING", sql::INSERT_VAULT);
        let n = c
            .execute(
                &q,
                &[
                    &v.name.as_str(),
                    &v.id,
                    &v.tenant_id,
                    &v.subscription_id,
                    &v.resource_group,
                    &v.sku,
                    &v.retention_days,
                    &v.purge_protection,
                    &v.wrapped_key,
                    &v.created,
                    &properties_json(&v.properties),
                ],
            )
            .await
            .map_err(err)?;
        if n == 1 {
            Ok(())
        } else {
            Err(StoreError::NameExists {
                kind: ObjectKind::Secret,
                name: v.name.to_string(),
            })
        }
    }

    async fn get_vault(&self, name: &VaultName) -> StoreResult<Option<VaultRecord>> {
        let c = self.client().await?;
        let stmt = c.prepare_cached(sql::GET_VAULT).await.map_err(err)?;
        let row = c.query_opt(&stmt, &[&name.as_str()]).await.map_err(err)?;
        row.map(|r| sql::vault_record(pg_vault_row(&r)?))
            .transpose()
    }

    async fn list_vaults(&self) -> StoreResult<Vec<VaultRecord>> {
        let c = self.client().await?;
        c.query(sql::LIST_VAULTS, &[])
            .await
            .map_err(err)?
            .iter()
            .map(|r| sql::vault_record(pg_vault_row(r)?))
            .collect()
    }

    async fn replace_vault_with(
        &self,
        v: &VaultRecord,
        events: &[ChangeEvent],
    ) -> StoreResult<bool> {
        let _authz = self.settings.authz_write();
        let props = sql::properties_json(&v.properties);
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(err)?;
        let written = tx
            .execute(
                sql::REPLACE_VAULT,
                &[
                    &v.id,
                    &v.sku,
                    &v.retention_days,
                    &v.purge_protection,
                    &props,
                    &v.rev,
                ],
            )
            .await
            .map_err(err)?
            == 1;
        if written {
            record_events(&tx, events).await?;
        }
        tx.commit().await.map_err(err)?;
        Ok(written)
    }

    async fn replace_wrapped_key(
        &self,
        vault_id: &str,
        expected: &[u8],
        wrapped: &[u8],
    ) -> StoreResult<bool> {
        let _authz = self.settings.authz_write();
        let c = self.client().await?;
        Ok(
            c.execute(sql::REPLACE_WRAPPED_KEY, &[&vault_id, &expected, &wrapped])
                .await
                .map_err(err)?
                == 1,
        )
    }

    async fn purge_vault(&self, vault_id: &str, rev: i64) -> StoreResult<bool> {
        let _authz = self.settings.authz_write();
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(err)?;
        if tx
            .execute(sql::PURGE_VAULT_ROW, &[&vault_id, &rev])
            .await
            .map_err(err)?
            != 1
        {
            return Ok(false);
        }
        for stmt in sql::PURGE_VAULT_DATA {
            tx.execute(stmt, &[&vault_id]).await.map_err(err)?;
        }
        tx.commit().await.map_err(err)?;
        Ok(true)
    }

    async fn put_versions_with(
        &self,
        vault_id: &str,
        recs: &[VersionRecord],
        policy: Option<&PolicyChange>,
        events: &[ChangeEvent],
    ) -> StoreResult<Vec<ObjectName>> {
        use futures_util::future::{join, join3};
        if let ([rec], None) = (recs, policy) {
            if let Some(stored) = self.put_one_version(vault_id, rec, events).await? {
                return Ok(stored);
            }
        }
        let tx = Pipelined::new(self.client().await?);
        let c = tx.client()?;
        // Object rows are created and locked in one fixed order, so two
        // multi-object writes never wait on each other in a circle.
        let mut order: Vec<&VersionRecord> = recs.iter().collect();
        order.sort_by_key(|r| (r.kind.as_str(), r.name.key()));
        let (insert_object, lock_object, latest_managed, insert_latest) = (
            cached(c, sql::INSERT_OBJECT).await?,
            cached(c, sql::OBJECT_STATE_NAME_FOR_UPDATE).await?,
            cached(c, sql::LATEST_MANAGED).await?,
            cached(c, sql::PG_INSERT_VERSION_SET_LATEST).await?,
        );
        // One round trip for BEGIN and the whole write: per object (in lock
        // order) create the row, lock it and read its state, then read
        // whether its latest version is a certificate's (a statement of its
        // own: its snapshot is taken after the lock is granted, so it sees
        // what a writer that held the lock committed; a join in the locking
        // statement would re-check only the locked row); then insert each
        // version and point its object at it. The statements are sent
        // together (pipelined, `in_order`) and run in that order, so each
        // object is locked and checked before anything is written to it;
        // when a check fails the transaction is rolled back, and the
        // optimistic inserts with it. Every statement runs to the end, so a
        // failed check is reported as itself, not as the aborted
        // transaction the inserts then saw.
        let begin = c.batch_execute("BEGIN");
        let checks = in_order(order.iter().map(|rec| {
            let (insert_object, lock_object, latest_managed) =
                (&insert_object, &lock_object, &latest_managed);
            async move {
                let (kind, key, name) = (rec.kind.as_str(), rec.name.key(), rec.name.as_str());
                let (created, state, managed) = join3(
                    c.execute(insert_object, &[&vault_id, &kind, &key, &name]),
                    c.query_one(lock_object, &[&vault_id, &kind, &key]),
                    c.query_opt(latest_managed, &[&vault_id, &kind, &key]),
                )
                .await;
                created?;
                Ok((state?, managed?))
            }
        }));
        let writes = in_order(recs.iter().map(|rec| {
            let insert_latest = &insert_latest;
            async move {
                let p = VersionParams::new(vault_id, rec);
                c.execute(insert_latest, &p.params()).await
            }
        }));
        let (begun, (checks, writes)) = join(begin, join(checks, writes)).await;
        begun.map_err(err)?;
        let mut names = std::collections::HashMap::new();
        for (rec, checked) in order.iter().zip(checks) {
            let (state, managed) = checked.map_err(err)?;
            if let Err(e) = check_version_write(&state, managed.as_ref(), rec) {
                return Err(tx.refuse(e).await);
            }
            let stored = sql::stored_object_name(state.try_get(1).map_err(err)?, rec)?;
            names.insert((rec.kind.as_str(), rec.name.key()), stored);
        }
        for n in writes {
            if n.map_err(err)? != 1 {
                return Err(StoreError::Corrupt(
                    "postgres: a new version's object row is missing".into(),
                ));
            }
        }
        if let Some(change) = policy {
            if let Err(e) = policy_change(c, vault_id, change).await {
                return Err(tx.refuse(e).await);
            }
        }
        let stored = |rec: &VersionRecord| {
            names
                .get(&(rec.kind.as_str(), rec.name.key()))
                .cloned()
                .unwrap_or_else(|| rec.name.clone())
        };
        let stored_names: Vec<ObjectName> = recs.iter().map(stored).collect();
        // The events and COMMIT: one more round trip. Should an insert fail,
        // the COMMIT behind it finds the transaction aborted and rolls back.
        let bodies = sql::event_bodies(events, recs, |rec| Ok(Some(stored(rec).to_string())))?;
        let insert = cached(c, sql::RECORD_EVENT).await?;
        let (recorded, committed) = join(
            insert_events(c, &insert, &bodies),
            c.batch_execute("COMMIT"),
        )
        .await;
        recorded.and(committed).map_err(err)?;
        tx.finish();
        Ok(stored_names)
    }

    async fn get_version(
        &self,
        vault_id: &str,
        kind: ObjectKind,
        name: &ObjectName,
        version: Option<&Version>,
    ) -> StoreResult<Option<VersionRecord>> {
        let c = self.client().await?;
        let key = name.key();
        let rows = match version {
            None => query_rows(&c, &sql::get_latest(), &[&vault_id, &kind.as_str(), &key]).await?,
            Some(v) => {
                query_rows(
                    &c,
                    &sql::get_by_version(),
                    &[&vault_id, &kind.as_str(), &key, &v.as_str()],
                )
                .await?
            }
        };
        rows.into_iter()
            .next()
            .map(RowData::into_record)
            .transpose()
    }

    async fn update_versions(
        &self,
        vault_id: &str,
        changes: &[(VersionRecord, VersionRecord)],
    ) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(err)?;
        let mut order: Vec<&(VersionRecord, VersionRecord)> = changes.iter().collect();
        order.sort_by_key(|(_, w)| (w.kind.as_str(), w.name.key()));
        // The object rows first (fixed order): a DELETE committing during
        // the UPDATE would otherwise not conflict with it, and a PATCH could
        // change a version that was just soft-deleted.
        for (_, write) in &order {
            lock_objects(&tx, vault_id, &[write.kind], &write.name.key()).await?;
        }
        for (read, write) in order {
            let (kind, key) = (write.kind.as_str(), write.name.key());
            let (tags, read_tags) = (sql::tags_json(&write.tags), sql::tags_json(&read.tags));
            let n = tx
                .execute(
                    sql::UPDATE_VERSION,
                    &[
                        &vault_id,
                        &kind,
                        &key,
                        &write.version.as_str(),
                        &write.attributes.enabled,
                        &write.attributes.nbf,
                        &write.attributes.exp,
                        &write.attributes.updated,
                        &write.content_type,
                        &tags,
                        &write.meta,
                        &read.attributes.enabled,
                        &read.attributes.nbf,
                        &read.attributes.exp,
                        &read.attributes.updated,
                        &read.content_type,
                        &read_tags,
                        &read.meta,
                    ],
                )
                .await
                .map_err(err)?;
            if n != 1 {
                let exists = tx
                    .query_opt(
                        sql::VERSION_EXISTS,
                        &[&vault_id, &kind, &key, &write.version.as_str()],
                    )
                    .await
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
        tx.commit().await.map_err(err)
    }

    async fn list_latest(
        &self,
        vault_id: &str,
        kind: ObjectKind,
        cursor: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<VersionRecord>> {
        Ok(self
            .list_names(vault_id, kind, cursor, limit, false)
            .await?
            .map(|(r, _)| r))
    }

    async fn expiring(
        &self,
        vault_id: &str,
        from: i64,
        to: i64,
        cursor: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<VersionRecord>> {
        let c = self.client().await?;
        let after = sql::seq_cursor(cursor);
        let rows = query_rows(
            &c,
            &sql::expiring(),
            &[&vault_id, &from, &to, &after, &(i64::from(limit) + 1)],
        )
        .await?;
        sql::version_page(rows, limit)
    }

    async fn list_versions(
        &self,
        vault_id: &str,
        kind: ObjectKind,
        name: &ObjectName,
        cursor: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<VersionRecord>> {
        let c = self.client().await?;
        let key = name.key();
        let after = sql::seq_cursor(cursor);
        let rows = query_rows(
            &c,
            &sql::list_versions(),
            &[
                &vault_id,
                &kind.as_str(),
                &key,
                &after,
                &(i64::from(limit) + 1),
            ],
        )
        .await?;
        sql::version_page(rows, limit)
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
        let Some(first) = kinds.first() else {
            return Ok(None);
        };
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(err)?;
        let key = name.key();
        lock_objects(&tx, vault_id, kinds, &key).await?;
        for (i, kind) in kinds.iter().enumerate() {
            let n = tx
                .execute(
                    sql::MARK_DELETED,
                    &[
                        &vault_id,
                        &kind.as_str(),
                        &key,
                        &info.deleted_date,
                        &info.scheduled_purge_date,
                    ],
                )
                .await
                .map_err(err)?;
            if i == 0 && n == 0 {
                return Ok(None);
            }
        }
        let rec = query_rows(
            &tx,
            &sql::get_deleted(),
            &[&vault_id, &first.as_str(), &key],
        )
        .await?
        .into_iter()
        .next()
        .map(RowData::into_record)
        .transpose()?;
        tx.commit().await.map_err(err)?;
        Ok(rec)
    }

    async fn get_deleted(
        &self,
        vault_id: &str,
        kind: ObjectKind,
        name: &ObjectName,
    ) -> StoreResult<Option<(VersionRecord, DeletedInfo)>> {
        let c = self.client().await?;
        let key = name.key();
        query_rows(&c, &sql::get_deleted(), &[&vault_id, &kind.as_str(), &key])
            .await?
            .into_iter()
            .next()
            .map(|r| {
                let info = r.deleted_info()?;
                Ok((r.into_record()?, info))
            })
            .transpose()
    }

    async fn list_deleted(
        &self,
        vault_id: &str,
        kind: ObjectKind,
        cursor: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<(VersionRecord, DeletedInfo)>> {
        with_deleted_info(self.list_names(vault_id, kind, cursor, limit, true).await?)
    }

    async fn recover_objects(
        &self,
        vault_id: &str,
        kinds: &[ObjectKind],
        name: &ObjectName,
        now: i64,
    ) -> StoreResult<bool> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(err)?;
        let key = name.key();
        lock_objects(&tx, vault_id, kinds, &key).await?;
        for (i, kind) in kinds.iter().enumerate() {
            let n = tx
                .execute(sql::RECOVER, &[&vault_id, &kind.as_str(), &key, &now])
                .await
                .map_err(err)?;
            if i == 0 && n != 1 {
                return Ok(false);
            }
        }
        tx.commit().await.map_err(err)?;
        Ok(!kinds.is_empty())
    }

    async fn purge_objects(
        &self,
        vault_id: &str,
        kinds: &[ObjectKind],
        name: &ObjectName,
    ) -> StoreResult<bool> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(err)?;
        let key = name.key();
        lock_objects(&tx, vault_id, kinds, &key).await?;
        for (i, kind) in kinds.iter().enumerate() {
            let n = tx
                .execute(
                    sql::DELETE_DELETED_OBJECT,
                    &[&vault_id, &kind.as_str(), &key],
                )
                .await
                .map_err(err)?;
            if n == 1 {
                for stmt in [sql::DELETE_VERSIONS, sql::DELETE_POLICY] {
                    tx.execute(stmt, &[&vault_id, &kind.as_str(), &key])
                        .await
                        .map_err(err)?;
                }
            } else if i == 0 {
                return Ok(false);
            }
        }
        tx.commit().await.map_err(err)?;
        Ok(!kinds.is_empty())
    }

    async fn restore_object_with(
        &self,
        vault_id: &str,
        versions: &[VersionRecord],
        policy: Option<&PolicyChange>,
    ) -> StoreResult<()> {
        let mut objects: Vec<&[VersionRecord]> =
            versions.chunk_by(|a, b| a.kind == b.kind).collect();
        objects.sort_by_key(|o| o.first().map(|r| (r.kind.as_str(), r.name.key())));
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(err)?;
        for object in objects {
            let Some(first) = object.first() else {
                continue;
            };
            let (kind, key) = (first.kind.as_str(), first.name.key());
            let n = tx
                .execute(
                    sql::INSERT_OBJECT,
                    &[&vault_id, &kind, &key, &first.name.as_str()],
                )
                .await
                .map_err(err)?;
            if n == 0 {
                return Err(StoreError::NameExists {
                    kind: first.kind,
                    name: first.name.to_string(),
                });
            }
            let mut seq = 0i64;
            for rec in object {
                seq = insert_version(&tx, vault_id, rec).await?;
            }
            tx.execute(sql::SET_LATEST, &[&vault_id, &kind, &key, &seq])
                .await
                .map_err(err)?;
        }
        if let Some(change) = policy {
            policy_change(&tx, vault_id, change).await?;
        }
        tx.commit().await.map_err(err)
    }

    async fn purge_expired(&self, now: i64) -> StoreResult<u64> {
        let c = self.client().await?;
        let row = c
            .query_one(sql::PG_PURGE_EXPIRED, &[&now])
            .await
            .map_err(err)?;
        let n: i64 = row.try_get(0).map_err(err)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn get_policy(
        &self,
        vault_id: &str,
        kind: ObjectKind,
        name: &ObjectName,
    ) -> StoreResult<Option<PolicyRecord>> {
        let c = self.client().await?;
        let row = c
            .query_opt(sql::GET_POLICY, &[&vault_id, &kind.as_str(), &name.key()])
            .await
            .map_err(err)?;
        row.map(|r| {
            Ok(PolicyRecord {
                body: r.try_get(0).map_err(err)?,
                created: r.try_get(1).map_err(err)?,
                updated: r.try_get(2).map_err(err)?,
            })
        })
        .transpose()
    }

    async fn put_policy(
        &self,
        vault_id: &str,
        kind: ObjectKind,
        name: &ObjectName,
        policy: &PolicyRecord,
    ) -> StoreResult<()> {
        let c = self.client().await?;
        c.execute(
            sql::PUT_POLICY,
            &[
                &vault_id,
                &kind.as_str(),
                &name.key(),
                &policy.body,
                &policy.created,
                &policy.updated,
            ],
        )
        .await
        .map_err(err)?;
        Ok(())
    }

    async fn put_policy_if(&self, vault_id: &str, change: &PolicyChange) -> StoreResult<bool> {
        let c = self.client().await?;
        match policy_change(&c, vault_id, change).await {
            Ok(()) => Ok(true),
            Err(StoreError::Changed { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn list_policies(
        &self,
        kind: ObjectKind,
        cursor: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<ScheduledPolicy>> {
        let c = self.client().await?;
        let (after_vault, after_name) = sql::policy_cursor(cursor);
        let rows = c
            .query(
                sql::LIST_POLICIES,
                &[
                    &kind.as_str(),
                    &after_vault,
                    &after_name,
                    &(i64::from(limit) + 1),
                ],
            )
            .await
            .map_err(err)?
            .iter()
            .map(|r| {
                Ok((
                    r.try_get(0).map_err(err)?,
                    r.try_get(1).map_err(err)?,
                    r.try_get(2).map_err(err)?,
                    r.try_get(3).map_err(err)?,
                    r.try_get(4).map_err(err)?,
                    r.try_get(5).map_err(err)?,
                    r.try_get(6).map_err(err)?,
                ))
            })
            .collect::<StoreResult<Vec<sql::PolicyRow>>>()?;
        sql::policy_page(rows, limit)
    }

    async fn share_usage(
        &self,
        node: &str,
        window: i64,
        counts: &[(String, String, i64)],
    ) -> StoreResult<Vec<(String, String, i64)>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(err)?;
        for (vault, class, count) in counts {
            tx.execute(sql::PUT_USAGE, &[vault, class, &window, &node, count])
                .await
                .map_err(err)?;
        }
        tx.execute(sql::FORGET_USAGE, &[&(window - 1)])
            .await
            .map_err(err)?;
        let totals = tx
            .query(sql::SUM_USAGE, &[&window])
            .await
            .map_err(err)?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect::<Result<Vec<(String, String, i64)>, tokio_postgres::Error>>()
            .map_err(err)?;
        tx.commit().await.map_err(err)?;
        Ok(totals)
    }

    async fn claim_job(&self, job: &str, now: i64, lease_until: i64) -> StoreResult<bool> {
        let c = self.client().await?;
        Ok(c.execute(sql::CLAIM_JOB, &[&job, &lease_until, &now])
            .await
            .map_err(err)?
            == 1)
    }

    async fn finished_jobs(&self, jobs: &[String]) -> StoreResult<Vec<String>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let c = self.client().await?;
        c.query(sql::PG_FINISHED_JOBS, &[&jobs])
            .await
            .map_err(err)?
            .iter()
            .map(|r| r.try_get(0).map_err(err))
            .collect()
    }

    async fn finish_job(
        &self,
        job: &str,
        now: i64,
        forget_before: i64,
        events: &[ChangeEvent],
    ) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(err)?;
        let finished = tx
            .execute(sql::FINISH_JOB, &[&job, &now])
            .await
            .map_err(err)?
            == 1;
        tx.execute(sql::FORGET_JOBS, &[&forget_before])
            .await
            .map_err(err)?;
        if finished {
            record_events(&tx, events).await?;
        }
        tx.commit().await.map_err(err)
    }
}

impl PostgresStore {
    /// Every row `query` (a version listing with the paging parameters)
    /// gives for one object.
    async fn every_version(
        &self,
        query: String,
        vault_id: &str,
        kinds: &[ObjectKind],
        name: &ObjectName,
    ) -> StoreResult<Vec<VersionRecord>> {
        let mut c = self.client().await?;
        // One snapshot for every kind (a certificate's backup).
        let tx = c
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(err)?;
        let key = name.key();
        let mut out = Vec::new();
        for kind in kinds {
            for row in query_rows(
                &tx,
                &query,
                &[&vault_id, &kind.as_str(), &key, &0i64, &i64::MAX],
            )
            .await?
            {
                out.push(row.into_record()?);
            }
        }
        tx.commit().await.map_err(err)?;
        Ok(out)
    }
}
