//! The domain service: the one place where object semantics live. Handlers call
//! these methods with an `Authorized` proof; the methods apply Azure's rules and
//! talk to the ports (`Store`, `Barrier`, `Clock`). The generic versioned-object
//! operations are here; each object kind adds its payload in its own module.

use std::sync::Arc;

use crate::auth::{Authorized, Operation};
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::ids::{ObjectName, Version};
use crate::object::{DeletedInfo, ObjectKind, Page, VersionRecord};
use crate::sensitive::Sensitive;
use crate::store::Store;
use crate::vault::VaultRecord;

/// The crypto barrier port: envelope encryption with a master key (root) and
/// per-vault data keys. Implemented in `keyhaven-crypto`.
pub trait Barrier: Send + Sync {
    /// Makes a new vault data key and returns it wrapped by the master key.
    fn new_data_key(&self, vault_id: &str) -> Result<Vec<u8>>;
    /// Seals `plaintext` under the vault's data key, bound to `aad`.
    fn seal(&self, vault: &VaultRecord, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>>;
    /// Opens what `seal` produced with the same `aad`.
    fn open(&self, vault: &VaultRecord, aad: &[u8], sealed: &[u8]) -> Result<Sensitive<Vec<u8>>>;
    /// Seals deployment-level data (signing keys, backups) under the master key.
    fn seal_root(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>>;
    /// Opens what `seal_root` produced with the same `aad`.
    fn open_root(&self, aad: &[u8], sealed: &[u8]) -> Result<Sensitive<Vec<u8>>>;
    /// Seals `plaintext` under a caller's 256-bit key (a managed HSM's
    /// security-domain key), bound to `aad`.
    fn seal_with(&self, key: &[u8], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>>;
    /// Opens what `seal_with` produced with the same key and `aad`.
    fn open_with(&self, key: &[u8], aad: &[u8], sealed: &[u8]) -> Result<Sensitive<Vec<u8>>>;
    /// Drops any cached plaintext data key of a vault (after a purge).
    fn forget(&self, vault_id: &str);
    /// The current master key's id and fingerprint; `None` for a barrier
    /// whose master key does not rotate.
    fn master_key(&self) -> Option<(u32, String)> {
        None
    }
    /// Every master key this barrier holds, `(id, fingerprint)`, oldest
    /// first.
    fn master_keys(&self) -> Vec<(u32, String)> {
        Vec::new()
    }
    /// A newer master key to rotate to — one listed after the current key
    /// (an operator added it), or a new one, saved with the keyring (not
    /// current yet) before it is returned — as `(id, fingerprint)`.
    fn stage_master(&self) -> Result<(u32, String)> {
        Err(Error::Unavailable(
            "this barrier cannot rotate its master key".into(),
        ))
    }
    /// Makes key `id` current if this node holds it with this fingerprint
    /// (re-reading its keyring once if not); false if it does not.
    fn adopt_master(&self, _id: u32, _fingerprint: &str) -> Result<bool> {
        Ok(false)
    }
    /// The id of the master key that sealed `sealed` (a wrapped data key or
    /// root-sealed data), if it is master-sealed.
    fn sealed_by(&self, _sealed: &[u8]) -> Option<u32> {
        None
    }
    /// A vault data key re-wrapped under the current master key; `None` if it
    /// already is.
    fn rewrap_data_key(&self, _vault_id: &str, _wrapped: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }
    /// Root-sealed data re-sealed under the current master key; `None` if it
    /// already is.
    fn rewrap_root(&self, _aad: &[u8], _sealed: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }
    /// Re-reads the master keys from where they are kept, keeping every key
    /// already known (a node told that another node rotated).
    fn reload_master(&self) -> Result<()> {
        Ok(())
    }
}

/// The data-plane service over the ports.
#[derive(Clone)]
pub struct VaultService {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) barrier: Arc<dyn Barrier>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) keys: Arc<dyn crate::key::KeyBackend>,
    pub(crate) certs: Arc<dyn crate::certificate::CertificateBackend>,
    pub(crate) events: Option<Arc<dyn crate::events::EventSink>>,
    pub(crate) gate: Option<Arc<dyn crate::governance::views::WriteGate>>,
}

/// A policy view without what no policy reads of an update (`enabled`,
/// timestamps of the update itself).
fn policy_relevant(mut v: serde_json::Value) -> serde_json::Value {
    if let Some(a) = v
        .get_mut("attributes")
        .and_then(serde_json::Value::as_object_mut)
    {
        a.remove("enabled");
    }
    v
}

impl VaultService {
    /// Builds the service over its ports.
    pub fn new(
        store: Arc<dyn Store>,
        barrier: Arc<dyn Barrier>,
        clock: Arc<dyn Clock>,
        keys: Arc<dyn crate::key::KeyBackend>,
        certs: Arc<dyn crate::certificate::CertificateBackend>,
    ) -> Self {
        Self {
            store,
            barrier,
            clock,
            keys,
            certs,
            events: None,
            gate: None,
        }
    }

    /// The same service, emitting change events to `sink`.
    pub fn with_events(mut self, sink: Arc<dyn crate::events::EventSink>) -> Self {
        self.events = Some(sink);
        self
    }

    /// Asks `gate` before every new secret, key or certificate version.
    pub fn with_gate(mut self, gate: Arc<dyn crate::governance::views::WriteGate>) -> Self {
        self.gate = Some(gate);
        self
    }

    /// The policy view of a stored secret or key version.
    pub(crate) async fn object_view(
        &self,
        vault: &VaultRecord,
        name: &ObjectName,
        rec: &VersionRecord,
    ) -> Result<serde_json::Value> {
        Ok(match rec.kind {
            ObjectKind::Key => {
                let meta: crate::key::KeyMeta =
                    serde_json::from_str(&rec.meta).map_err(|_| Error::Integrity)?;
                let rotation = self.next_rotation(vault, name, rec).await?;
                crate::governance::views::key(name, &rec.attributes, &meta, rotation)
            }
            _ => {
                crate::governance::views::secret(name, &rec.attributes, rec.content_type.as_deref())
            }
        })
    }

    /// Asks the gate about a write of the object whose policy view `view`
    /// builds (built only when there is a gate).
    pub(crate) async fn gate_check(
        &self,
        vault: &VaultRecord,
        kind: crate::object::ObjectKind,
        name: &crate::ids::ObjectName,
        view: impl FnOnce() -> serde_json::Value,
    ) -> Result<Option<Arc<dyn crate::governance::views::Committed>>> {
        match &self.gate {
            Some(g) => g.check(vault, kind, name, &view()).await,
            None => Ok(None),
        }
    }

    /// A change event about `rec` (a version of an object of `vault`), to
    /// record with the change; `None` when this service has no event sink.
    pub(crate) fn event(
        &self,
        event_type: crate::events::EventType,
        vault: &VaultRecord,
        rec: &VersionRecord,
    ) -> Option<crate::events::ChangeEvent> {
        let mut e = self.vault_event(event_type, vault)?;
        e.object_type = rec.kind.title();
        e.object_name = rec.name.to_string();
        e.version = rec.version.to_string();
        (e.nbf, e.exp) = (rec.attributes.nbf, rec.attributes.exp);
        Some(e)
    }

    /// A vault-level change event, to record with the change.
    pub(crate) fn vault_event(
        &self,
        event_type: crate::events::EventType,
        vault: &VaultRecord,
    ) -> Option<crate::events::ChangeEvent> {
        self.events.as_ref()?;
        Some(crate::events::ChangeEvent {
            id: uuid::Uuid::new_v4().to_string(),
            event_type,
            vault_name: vault.name.to_string(),
            vault_id: vault.resource_id(),
            object_type: "Vault",
            object_name: String::new(),
            version: String::new(),
            nbf: None,
            exp: None,
            time: self.clock.now(),
        })
    }

    /// Writes a new version of a plain (unmanaged) object with its
    /// `…NewVersionCreated` event, and returns it named as the object is
    /// stored (ids keep the casing the name was created with).
    pub(crate) async fn put_new_version(
        &self,
        vault: &VaultRecord,
        mut record: VersionRecord,
        event_type: crate::events::EventType,
    ) -> Result<VersionRecord> {
        let events: Vec<_> = self.event(event_type, vault, &record).into_iter().collect();
        let stored = self
            .store
            .put_versions_with(&vault.id, std::slice::from_ref(&record), None, &events)
            .await?;
        self.events_committed(!events.is_empty());
        if let Some(name) = stored.into_iter().next() {
            record.name = name;
        }
        Ok(record)
    }

    /// Says that recorded events are waiting (after their commit).
    pub(crate) fn events_committed(&self, recorded: bool) {
        if let (true, Some(sink)) = (recorded, &self.events) {
            sink.committed();
        }
    }

    /// The store this service writes to.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Current time from the clock port.
    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// Expiry events, each recorded once across every node sharing the
    /// store (a claimed job per event, version and expiry, finished in the
    /// transaction that records the event; a node that stops between
    /// claiming and finishing lets another try again after the lease):
    /// `SecretNearExpiry` when a secret's latest version is within 30
    /// days of its expiry, and `SecretExpired`, `KeyExpired`,
    /// `CertificateExpired` once it has expired (looked for up to two days
    /// back, so a deployment down for less still sends them). The key and
    /// secret of a certificate are left to the certificate's events; key and
    /// certificate near-expiry come from their lifetime actions (rotation
    /// policy `Notify`, certificate `EmailContacts`), as on Azure.
    pub async fn expiry_events(&self) -> Result<u64> {
        use crate::events::EventType;
        const NEAR: i64 = 30 * 86_400;
        const LOOKBACK: i64 = 2 * 86_400;
        const LEASE: i64 = 300;
        const FORGET_AFTER: i64 = 400 * 86_400;
        if self.events.is_none() {
            return Ok(0);
        }
        let now = self.clock.now();
        let mut sent = 0;
        for vault in self.store.list_vaults().await? {
            for (near, from, to) in [
                (true, now + 1, now + NEAR),
                (false, now - LOOKBACK, now + 1),
            ] {
                let mut cursor: Option<String> = None;
                loop {
                    let page = self
                        .store
                        .expiring(&vault.id, from, to, cursor.as_deref(), 200)
                        .await?;
                    // The expiry is part of the job: a version whose expiry
                    // is changed is reported again for the new one.
                    let due: Vec<(EventType, &VersionRecord, String)> = page
                        .items
                        .iter()
                        .filter(|r| !r.managed)
                        .filter_map(|rec| {
                            let event = match (rec.kind, near) {
                                (ObjectKind::Secret, true) => EventType::SecretNearExpiry,
                                (ObjectKind::Secret, false) => EventType::SecretExpired,
                                (ObjectKind::Key, false) => EventType::KeyExpired,
                                (ObjectKind::Certificate, false) => EventType::CertificateExpired,
                                _ => return None,
                            };
                            let job = format!(
                                "expiry-{}/{}/{}/{}/{}/{}",
                                if near { "near" } else { "expired" },
                                vault.id,
                                rec.kind.as_str(),
                                rec.name.key(),
                                rec.version,
                                rec.attributes.exp.unwrap_or_default()
                            );
                            Some((event, rec, job))
                        })
                        .collect();
                    // Reported ones are skipped with one read, not a claim each.
                    let jobs: Vec<String> = due.iter().map(|(_, _, j)| j.clone()).collect();
                    let done = self.store.finished_jobs(&jobs).await?;
                    for (event, rec, job) in due.iter().filter(|(_, _, j)| !done.contains(j)) {
                        if !self.store.claim_job(job, now, now + LEASE).await? {
                            continue;
                        }
                        let events: Vec<_> = self.event(*event, &vault, rec).into_iter().collect();
                        self.store
                            .finish_job(job, now, now - FORGET_AFTER, &events)
                            .await?;
                        self.events_committed(!events.is_empty());
                        sent += 1;
                    }
                    match page.next {
                        Some(next) => cursor = Some(next),
                        None => break,
                    }
                }
            }
        }
        Ok(sent)
    }

    /// Purges every soft-deleted object past its retention; run periodically.
    /// With an HSM attached, due keys go one by one first so the HSM objects
    /// they name are destroyed after their records.
    pub async fn purge_expired(&self) -> Result<u64> {
        let now = self.clock.now();
        let mut n = 0;
        if self.keys.hardware() {
            for vault in self.store.list_vaults().await? {
                let mut cursor: Option<String> = None;
                let mut due = Vec::new();
                loop {
                    let page = self
                        .store
                        .list_deleted(&vault.id, ObjectKind::Key, cursor.as_deref(), 100)
                        .await?;
                    due.extend(
                        page.items
                            .into_iter()
                            .filter(|(_, info)| info.scheduled_purge_date <= now)
                            .map(|(rec, _)| rec.name),
                    );
                    match page.next {
                        Some(next) => cursor = Some(next),
                        None => break,
                    }
                }
                for name in due {
                    let refs = self.hardware_refs(&vault, &name, true).await?;
                    if self
                        .store
                        .purge_object(&vault.id, ObjectKind::Key, &name)
                        .await?
                    {
                        n += 1;
                        self.destroy_hardware(&refs);
                    }
                }
            }
        }
        Ok(n + self.store.purge_expired(now).await?)
    }

    /// The HSM references of every key of a vault, live or deleted (before
    /// the vault is purged).
    pub(crate) async fn vault_hardware_refs(
        &self,
        vault: &VaultRecord,
    ) -> Result<Vec<crate::sensitive::Sensitive<Vec<u8>>>> {
        let mut refs = Vec::new();
        if !self.keys.hardware() {
            return Ok(refs);
        }
        for deleted in [false, true] {
            for name in self.object_names(vault, ObjectKind::Key, deleted).await? {
                refs.extend(self.hardware_refs(vault, &name, deleted).await?);
            }
        }
        Ok(refs)
    }

    // ---- the versioned-object core, shared by every kind ----

    /// Associated data binding a payload to its vault, kind, name and version.
    pub(crate) fn payload_aad(
        vault: &VaultRecord,
        kind: ObjectKind,
        name: &ObjectName,
        version: &Version,
    ) -> Vec<u8> {
        format!(
            "keyhaven/v1/{}/{}/{}/{}",
            kind.as_str(),
            vault.id,
            name.key(),
            version
        )
        .into_bytes()
    }

    pub(crate) async fn live_version(
        &self,
        vault: &VaultRecord,
        kind: ObjectKind,
        name: &ObjectName,
        version: Option<&Version>,
    ) -> Result<VersionRecord> {
        self.store
            .get_version(&vault.id, kind, name, version)
            .await?
            .ok_or_else(|| Error::NotFound {
                kind,
                name: match version {
                    Some(v) => format!("{name}/{v}"),
                    None => name.to_string(),
                },
            })
    }

    /// Reads a live version, lets `change` modify (and check) it, and writes
    /// it back only if nobody changed it meanwhile; a lost race reads again
    /// and retries, so concurrent PATCHes of different fields all land and a
    /// stale read never puts back what another request changed.
    pub(crate) async fn modify_version<F>(
        &self,
        vault: &VaultRecord,
        kind: ObjectKind,
        name: &ObjectName,
        version: Option<&Version>,
        mut change: F,
    ) -> Result<VersionRecord>
    where
        F: FnMut(&mut VersionRecord) -> Result<()> + Send,
    {
        let mut lost = None;
        for _ in 0..CAS_ATTEMPTS {
            let read = self.live_version(vault, kind, name, version).await?;
            let mut write = read.clone();
            change(&mut write)?;
            // A changed version is evaluated as a new one would be (an
            // expiry removed by PATCH must not slip past a Deny).
            // Only a change of what policies read is evaluated: disabling a
            // non-compliant version (incident response) stays possible.
            let approved = match (&self.gate, kind, write.managed) {
                (Some(_), ObjectKind::Secret | ObjectKind::Key, false) => {
                    let before = policy_relevant(self.object_view(vault, name, &read).await?);
                    let view = self.object_view(vault, name, &write).await?;
                    if policy_relevant(view.clone()) == before {
                        None
                    } else {
                        self.gate_check(vault, kind, name, || view).await?
                    }
                }
                _ => None,
            };
            match self.store.update_version(&vault.id, &read, &write).await {
                Ok(()) => {
                    // An older version's verdict is not the object's state.
                    if let (Some(a), None) = (approved, version) {
                        a.committed().await;
                    }
                    return Ok(write);
                }
                Err(e @ crate::store::StoreError::Changed { .. }) => lost = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(lost.map_or(Error::Integrity, Error::from))
    }

    /// Refuses `operation` on a key or secret owned by a certificate: they
    /// change only through the certificate (delete, recover and purge
    /// cascade from it).
    pub(crate) async fn refuse_managed(
        &self,
        vault: &VaultRecord,
        kind: ObjectKind,
        name: &ObjectName,
        operation: &'static str,
    ) -> Result<()> {
        // Recover and purge act on the deleted object; the rest on the live one
        // (a deleted name refuses new versions anyway).
        let managed = if matches!(operation, "recover" | "purge") {
            self.store
                .get_deleted(&vault.id, kind, name)
                .await?
                .is_some_and(|(r, _)| r.managed)
        } else {
            self.store
                .get_version(&vault.id, kind, name, None)
                .await?
                .is_some_and(|r| r.managed)
        };
        if managed {
            return Err(Error::ManagedByCertificate { kind, operation });
        }
        Ok(())
    }

    pub(crate) async fn list_objects(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        kind: ObjectKind,
        op: Operation,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page<VersionRecord>> {
        auth.require(vault, op)?;
        Ok(self
            .store
            .list_latest(&vault.id, kind, cursor, limit)
            .await?)
    }

    pub(crate) async fn list_object_versions(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        kind: ObjectKind,
        op: Operation,
        name: &ObjectName,
        page: (Option<&str>, u32),
    ) -> Result<Page<VersionRecord>> {
        auth.require_on(vault, op, name)?;
        let (cursor, limit) = page;
        Ok(self
            .store
            .list_versions(&vault.id, kind, name, cursor, limit)
            .await?)
    }

    /// Soft-deletes the object of `kinds[0]` and, in the same transaction,
    /// the objects of the other kinds sharing its name (a certificate's key
    /// and secret).
    pub(crate) async fn delete_object(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        kinds: &[ObjectKind],
        op: Operation,
        name: &ObjectName,
    ) -> Result<(VersionRecord, DeletedInfo)> {
        auth.require_on(vault, op, name)?;
        let kind = primary(kinds)?;
        let now = self.clock.now();
        let info = DeletedInfo {
            deleted_date: now,
            scheduled_purge_date: now + vault.retention_secs(),
        };
        let rec = self
            .store
            .delete_objects(&vault.id, kinds, name, info)
            .await?
            .ok_or_else(|| Error::NotFound {
                kind,
                name: name.to_string(),
            })?;
        Ok((rec, info))
    }

    pub(crate) async fn get_deleted_object(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        kind: ObjectKind,
        op: Operation,
        name: &ObjectName,
    ) -> Result<(VersionRecord, DeletedInfo)> {
        auth.require_on(vault, op, name)?;
        self.store
            .get_deleted(&vault.id, kind, name)
            .await?
            .ok_or_else(|| Error::DeletedNotFound {
                kind,
                name: name.to_string(),
            })
    }

    pub(crate) async fn list_deleted_objects(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        kind: ObjectKind,
        op: Operation,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page<(VersionRecord, DeletedInfo)>> {
        auth.require(vault, op)?;
        Ok(self
            .store
            .list_deleted(&vault.id, kind, cursor, limit)
            .await?)
    }

    /// Recovers the object of `kinds[0]` with the deleted objects of the
    /// other kinds sharing its name, in one transaction.
    pub(crate) async fn recover_object(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        kinds: &[ObjectKind],
        op: Operation,
        name: &ObjectName,
    ) -> Result<VersionRecord> {
        auth.require_on(vault, op, name)?;
        let kind = primary(kinds)?;
        if !self
            .store
            .recover_objects(&vault.id, kinds, name, self.clock.now())
            .await?
        {
            return Err(Error::DeletedNotFound {
                kind,
                name: name.to_string(),
            });
        }
        self.live_version(vault, kind, name, None).await
    }

    /// Purges the object of `kinds[0]` with the deleted objects of the
    /// other kinds sharing its name, in one transaction.
    pub(crate) async fn purge_object(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        kinds: &[ObjectKind],
        op: Operation,
        name: &ObjectName,
    ) -> Result<()> {
        auth.require_on(vault, op, name)?;
        let kind = primary(kinds)?;
        if vault.purge_protection {
            return Err(Error::PurgeProtected);
        }
        if self.store.purge_objects(&vault.id, kinds, name).await? {
            Ok(())
        } else {
            Err(Error::DeletedNotFound {
                kind,
                name: name.to_string(),
            })
        }
    }
}

/// The kind an operation on `kinds` is about (the first; the rest share its
/// name and follow it).
fn primary(kinds: &[ObjectKind]) -> Result<ObjectKind> {
    kinds.first().copied().ok_or(Error::Integrity)
}

/// How many times a read-modify-write is tried before a 409.
pub(crate) const CAS_ATTEMPTS: usize = 8;
