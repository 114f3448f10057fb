//! The `Store` port: persistence of vaults, principals, settings and versioned
//! objects. Implementations (SQLite, PostgreSQL) live in `keyhaven-store` and
//! pass its conformance suite. The store only ever sees ciphertext payloads.

use async_trait::async_trait;

use crate::events::ChangeEvent;
use crate::ids::{ObjectName, VaultName, Version};
use crate::object::{DeletedInfo, ObjectKind, Page, VersionRecord};
use crate::vault::VaultRecord;

/// Errors a store reports, in domain terms.
///
/// Only `Unavailable` may hide a write that committed (its answer lost): any
/// other error from a write means it did not happen, and the service acts
/// on that (it destroys the HSM objects a failed write would have
/// referenced). A store must report a failed or unknown commit as
/// `Unavailable`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or failed the operation.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored rows could not be decoded.
    #[error("store data corrupt: {0}")]
    Corrupt(String),
    /// The object name is held by a soft-deleted object.
    #[error("{name} is deleted")]
    NameDeleted {
        /// Kind of object.
        kind: ObjectKind,
        /// The name.
        name: String,
    },
    /// The object name exists (live or deleted).
    #[error("{name} exists")]
    NameExists {
        /// Kind of object.
        kind: ObjectKind,
        /// The name.
        name: String,
    },
    /// The version changed since it was read: a compare-and-set lost a race
    /// (the caller reads again and retries).
    #[error("{name} changed")]
    Changed {
        /// Kind of object.
        kind: ObjectKind,
        /// The name.
        name: String,
    },
    /// An unmanaged version was written onto an object a certificate owns.
    #[error("{name} is managed by a certificate")]
    Managed {
        /// Kind of object.
        kind: ObjectKind,
        /// The name.
        name: String,
    },
    /// A unique property (id, appId, userPrincipalName, membership) is taken.
    #[error("duplicate {0}")]
    Duplicate(String),
    /// The object or version does not exist.
    #[error("{name} missing")]
    Missing {
        /// Kind of object.
        kind: ObjectKind,
        /// The name.
        name: String,
    },
}

/// A policy attached to an object name (a key's rotation policy, later a
/// certificate's policy): public JSON, kept across versions, purged with the
/// object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRecord {
    /// The policy document (JSON text, kind-specific).
    pub body: String,
    /// When it was first set, Unix seconds.
    pub created: i64,
    /// When it was last set, Unix seconds.
    pub updated: i64,
}

/// A policy of a live object, as the scheduler walks them.
#[derive(Debug, Clone)]
pub struct ScheduledPolicy {
    /// The vault's name.
    pub vault_name: String,
    /// The object's name.
    pub name: ObjectName,
    /// The policy.
    pub policy: PolicyRecord,
}

/// Settings key of the authorization generation: a decimal counter that
/// every store moves, by trigger in the same transaction, whenever vaults,
/// ARM resources, group memberships or a principal's existence or enabled
/// flag change. Caches of authorization data are valid while it stands.
pub const AUTHZ_GENERATION: &str = "authz_generation";

/// A compare-and-set write of an object name's policy document (a
/// certificate's policy and pending operation), alone or with versions.
#[derive(Debug, Clone)]
pub struct PolicyChange {
    /// Kind of the object.
    pub kind: ObjectKind,
    /// Its name.
    pub name: ObjectName,
    /// The body as read (`None`: there was no policy); the write happens
    /// only if the stored body still is this.
    pub expected: Option<String>,
    /// What to write (`created` is kept from an existing row).
    pub record: PolicyRecord,
}

/// Result alias for store calls.
pub type StoreResult<T> = Result<T, StoreError>;

/// Persistence port.
#[async_trait]
pub trait Store: Send + Sync {
    /// Reads a deployment setting.
    async fn get_setting(&self, key: &str) -> StoreResult<Option<Vec<u8>>>;
    /// Writes a deployment setting if absent; returns whether it was written.
    async fn put_setting_if_absent(&self, key: &str, value: &[u8]) -> StoreResult<bool>;
    /// Replaces a setting only if it still holds `expected` (compare-and-set);
    /// returns whether it was written.
    async fn replace_setting(&self, key: &str, expected: &[u8], value: &[u8]) -> StoreResult<bool>;

    /// Creates a vault (fails with `NameExists` if the name is taken).
    async fn create_vault(&self, v: &VaultRecord) -> StoreResult<()>;
    /// Finds a vault by name.
    async fn get_vault(&self, name: &VaultName) -> StoreResult<Option<VaultRecord>>;
    /// Rewrites a vault's settings (sku, retention, purge protection,
    /// properties), found by id, if its row version is still `v.rev` (the
    /// one read), moving it; false if the vault changed meanwhile or is
    /// gone (the caller reads again). The wrapped data key is left
    /// as it is: only `replace_wrapped_key` changes it, so a settings write
    /// racing a master-key rotation cannot put back a key wrapped under the
    /// old master key.
    async fn replace_vault(&self, v: &VaultRecord) -> StoreResult<bool> {
        self.replace_vault_with(v, &[]).await
    }
    /// `replace_vault` plus, in the same transaction, change events for
    /// the outbox (recorded only if the vault was written).
    async fn replace_vault_with(
        &self,
        v: &VaultRecord,
        events: &[ChangeEvent],
    ) -> StoreResult<bool>;
    /// Replaces a vault's wrapped data key if it still is `expected` (master
    /// key rotation); false if it changed meanwhile or the vault is gone.
    async fn replace_wrapped_key(
        &self,
        vault_id: &str,
        expected: &[u8],
        wrapped: &[u8],
    ) -> StoreResult<bool>;
    /// Every vault, live or soft-deleted, by name.
    async fn list_vaults(&self) -> StoreResult<Vec<VaultRecord>>;
    /// Removes a vault — its row with the wrapped data key first, then all
    /// its objects, versions and policies — in one transaction, if its row
    /// version is still `rev` (the one read, showing it deleted); false, with
    /// nothing removed, if it changed meanwhile (a recover) or is gone.
    async fn purge_vault(&self, vault_id: &str, rev: i64) -> StoreResult<bool>;

    /// Adds a version; it becomes the latest. Fails with `NameDeleted` when the
    /// name is soft-deleted.
    async fn put_version(&self, vault_id: &str, rec: &VersionRecord) -> StoreResult<()> {
        self.put_versions(vault_id, std::slice::from_ref(rec)).await
    }
    /// Adds one version to each of several objects (a certificate's key,
    /// secret and certificate) in one transaction, each becoming its object's
    /// latest; nothing is written if any name is soft-deleted (`NameDeleted`),
    /// or if a version's `managed` flag differs from the object's latest
    /// (`Managed` for a plain write onto a certificate's key or secret,
    /// `NameExists` for a certificate onto a plain one).
    async fn put_versions(&self, vault_id: &str, recs: &[VersionRecord]) -> StoreResult<()> {
        self.put_versions_with(vault_id, recs, None, &[])
            .await
            .map(drop)
    }
    /// `put_versions` plus, in the same transaction, a compare-and-set of
    /// a policy document (`Changed`, nothing written, if it lost) and the
    /// change events the versions cause, recorded in the outbox. An event
    /// about one of `recs` carries the object's name as stored (the casing
    /// it was created with). Returns those stored names, one per record in
    /// the order of `recs`.
    async fn put_versions_with(
        &self,
        vault_id: &str,
        recs: &[VersionRecord],
        policy: Option<&PolicyChange>,
        events: &[ChangeEvent],
    ) -> StoreResult<Vec<ObjectName>>;
    /// Reads a live version (`None` = latest).
    async fn get_version(
        &self,
        vault_id: &str,
        kind: ObjectKind,
        name: &ObjectName,
        version: Option<&Version>,
    ) -> StoreResult<Option<VersionRecord>>;
    /// Rewrites the attributes, tags, content type and public metadata of a
    /// live version (never its payload) from `read` to `write`, if it still
    /// holds what `read` holds in every one of those fields (compare-and-set):
    /// `Changed` if another write got there first, `Missing` if it is gone.
    async fn update_version(
        &self,
        vault_id: &str,
        read: &VersionRecord,
        write: &VersionRecord,
    ) -> StoreResult<()> {
        self.update_versions(vault_id, &[(read.clone(), write.clone())])
            .await
    }
    /// Several `update_version`s (a certificate version's key, secret and
    /// certificate), each a `(read, write)` pair, in one transaction: nothing
    /// is written unless every one still holds what was read.
    async fn update_versions(
        &self,
        vault_id: &str,
        changes: &[(VersionRecord, VersionRecord)],
    ) -> StoreResult<()>;
    /// Lists live objects (their latest versions) by name.
    async fn list_latest(
        &self,
        vault_id: &str,
        kind: ObjectKind,
        cursor: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<VersionRecord>>;
    /// The latest versions of `vault_id`'s live objects (every kind) whose
    /// expiry is in `[from, to)`, in write order, a page at a time.
    async fn expiring(
        &self,
        vault_id: &str,
        from: i64,
        to: i64,
        cursor: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<VersionRecord>>;
    /// Lists all versions of a live object, oldest first.
    async fn list_versions(
        &self,
        vault_id: &str,
        kind: ObjectKind,
        name: &ObjectName,
        cursor: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<VersionRecord>>;
    /// All versions of a live object, oldest first (for backup).
    async fn all_versions(
        &self,
        vault_id: &str,
        kind: ObjectKind,
        name: &ObjectName,
    ) -> StoreResult<Vec<VersionRecord>> {
        self.all_versions_of(vault_id, &[kind], name).await
    }
    /// All versions of the live objects of `kinds` named `name`, read from
    /// one snapshot: each kind's versions oldest first, kinds in the order
    /// given (a certificate's backup).
    async fn all_versions_of(
        &self,
        vault_id: &str,
        kinds: &[ObjectKind],
        name: &ObjectName,
    ) -> StoreResult<Vec<VersionRecord>>;
    /// All versions of a soft-deleted object, oldest first (what a purge
    /// is about to erase: HSM key references to destroy afterwards).
    async fn deleted_versions(
        &self,
        vault_id: &str,
        kind: ObjectKind,
        name: &ObjectName,
    ) -> StoreResult<Vec<VersionRecord>>;
    /// Soft-deletes a live object; returns its latest version, `None` if absent.
    async fn delete_object(
        &self,
        vault_id: &str,
        kind: ObjectKind,
        name: &ObjectName,
        info: DeletedInfo,
    ) -> StoreResult<Option<VersionRecord>> {
        self.delete_objects(vault_id, &[kind], name, info).await
    }
    /// Soft-deletes the live object of `kinds[0]` named `name` and, in the
    /// same transaction, the live objects of the other kinds with that name
    /// (a certificate's key and secret); returns the first's latest version,
    /// or `None` (nothing changed) if it is not live.
    async fn delete_objects(
        &self,
        vault_id: &str,
        kinds: &[ObjectKind],
        name: &ObjectName,
        info: DeletedInfo,
    ) -> StoreResult<Option<VersionRecord>>;
    /// Reads a soft-deleted object's latest version.
    async fn get_deleted(
        &self,
        vault_id: &str,
        kind: ObjectKind,
        name: &ObjectName,
    ) -> StoreResult<Option<(VersionRecord, DeletedInfo)>>;
    /// Lists soft-deleted objects by name.
    async fn list_deleted(
        &self,
        vault_id: &str,
        kind: ObjectKind,
        cursor: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<(VersionRecord, DeletedInfo)>>;
    /// Makes a soft-deleted object live again; false if it was not deleted,
    /// or if its scheduled purge date is at or before `now` (it is the
    /// purge's now, and recovering it would race the purge).
    async fn recover_object(
        &self,
        vault_id: &str,
        kind: ObjectKind,
        name: &ObjectName,
        now: i64,
    ) -> StoreResult<bool> {
        self.recover_objects(vault_id, &[kind], name, now).await
    }
    /// Recovers the object of `kinds[0]` as `recover_object` does and, in the
    /// same transaction, the deleted objects of the other kinds with that
    /// name; false (nothing changed) if the first cannot be recovered.
    async fn recover_objects(
        &self,
        vault_id: &str,
        kinds: &[ObjectKind],
        name: &ObjectName,
        now: i64,
    ) -> StoreResult<bool>;
    /// Removes a soft-deleted object for good; false if it was not deleted.
    async fn purge_object(
        &self,
        vault_id: &str,
        kind: ObjectKind,
        name: &ObjectName,
    ) -> StoreResult<bool> {
        self.purge_objects(vault_id, &[kind], name).await
    }
    /// Purges the deleted object of `kinds[0]` and, in the same transaction,
    /// the deleted objects of the other kinds with that name; false (nothing
    /// changed) if the first is not deleted.
    async fn purge_objects(
        &self,
        vault_id: &str,
        kinds: &[ObjectKind],
        name: &ObjectName,
    ) -> StoreResult<bool>;
    /// Inserts whole objects with all their versions, keeping their ids, in
    /// one transaction: `versions` holds one or more objects of one name
    /// (a certificate's key, secret and certificate), each kind's versions
    /// together and oldest first. Fails with `NameExists`, writing nothing,
    /// if any of them exists, live or deleted.
    async fn restore_object(&self, vault_id: &str, versions: &[VersionRecord]) -> StoreResult<()> {
        self.restore_object_with(vault_id, versions, None).await
    }
    /// `restore_object` plus the objects' policy document, in the same
    /// transaction.
    async fn restore_object_with(
        &self,
        vault_id: &str,
        versions: &[VersionRecord],
        policy: Option<&PolicyChange>,
    ) -> StoreResult<()>;
    /// Purges every deleted object whose scheduled purge date is at or before `now`.
    async fn purge_expired(&self, now: i64) -> StoreResult<u64>;

    /// Reads the policy of an object name (live or deleted).
    async fn get_policy(
        &self,
        vault_id: &str,
        kind: ObjectKind,
        name: &ObjectName,
    ) -> StoreResult<Option<PolicyRecord>>;
    /// Creates or replaces the policy of an object name; a replacement keeps
    /// the first `created`.
    async fn put_policy(
        &self,
        vault_id: &str,
        kind: ObjectKind,
        name: &ObjectName,
        policy: &PolicyRecord,
    ) -> StoreResult<()>;
    /// A compare-and-set write of a policy document; false if the stored
    /// body is no longer the one read.
    async fn put_policy_if(&self, vault_id: &str, change: &PolicyChange) -> StoreResult<bool>;
    /// Pages over the policies of live objects of `kind` in every vault, in a
    /// stable order; `cursor` is the previous page's `next`.
    async fn list_policies(
        &self,
        kind: ObjectKind,
        cursor: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<ScheduledPolicy>>;
    /// Records this node's request counts in a throttling window (`(vault
    /// id, class, count)`), forgets windows before the previous one, and
    /// returns every node's totals for the window.
    async fn share_usage(
        &self,
        node: &str,
        window: i64,
        counts: &[(String, String, i64)],
    ) -> StoreResult<Vec<(String, String, i64)>>;
    /// Claims a background job by its id: true when this caller now holds it,
    /// because nobody claimed it before or an unfinished claim's lease ended
    /// at or before `now`. Atomic across every node sharing the store.
    async fn claim_job(&self, job: &str, now: i64, lease_until: i64) -> StoreResult<bool>;
    /// Which of `jobs` are finished (a read: a scan that meets the same jobs
    /// every pass skips the done ones without a write each).
    async fn finished_jobs(&self, jobs: &[String]) -> StoreResult<Vec<String>>;
    /// Marks a claimed job done so that it is never claimed again, and forgets
    /// jobs finished before `forget_before`; `events` (what the job reports)
    /// go to the outbox in the same transaction, so a job that finished
    /// has reported and one that did not finish will be run and report again.
    /// A job already finished (by a node that took over after this caller's
    /// lease ended) stays as it is and records nothing.
    async fn finish_job(
        &self,
        job: &str,
        now: i64,
        forget_before: i64,
        events: &[ChangeEvent],
    ) -> StoreResult<()>;
}

/// Everything a deployment persists: objects, the directory, ARM resources.
pub trait Storage:
    Store
    + crate::events::OutboxStore
    + crate::directory::DirectoryStore
    + crate::resource::ResourceStore
    + crate::resource::AuditStore
    + crate::logs::LogStore
    + crate::governance::states::PolicyStateStore
{
}

impl<
        T: Store
            + crate::events::OutboxStore
            + crate::directory::DirectoryStore
            + crate::resource::ResourceStore
            + crate::resource::AuditStore
            + crate::logs::LogStore
            + crate::governance::states::PolicyStateStore,
    > Storage for T
{
}
