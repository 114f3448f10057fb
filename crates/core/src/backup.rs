//! Backup and restore for every object kind: all versions of one object in an
//! opaque blob sealed under the master key, so any vault of this deployment can
//! restore it. The blob is bound to its kind (a key blob never restores as a
//! secret) and carries plaintext payloads only inside the sealed envelope.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::auth::{Authorized, Operation};
use crate::error::{Error, Result};
use crate::ids::{ObjectName, Version};
use crate::object::{Attributes, ObjectKind, VersionRecord};
use crate::sensitive::Sensitive;
use crate::service::VaultService;
use crate::vault::VaultRecord;

/// Associated data of a backup blob of `kind` (`keyhaven/v1/backup/secret`, …).
/// What a managed HSM's backup blob begins with (then the 32-character
/// security-domain identity).
const POOL_BACKUP_MAGIC: &[u8] = b"khsd1";

fn backup_aad(kind: ObjectKind) -> Vec<u8> {
    format!("keyhaven/v1/backup/{}", kind.as_str()).into_bytes()
}

/// The format tag inside the sealed document (`keyhaven-secret-backup-v1`, …).
fn backup_format(kind: ObjectKind) -> String {
    format!("keyhaven-{}-backup-v1", kind.as_str())
}

/// What a backup carries beyond the object's own versions.
#[derive(Default)]
pub(crate) struct BackupExtras<'a> {
    /// Kinds of the objects sharing the name (a certificate's key and secret).
    pub companions: &'a [ObjectKind],
    /// An opaque policy document.
    pub policy: Option<String>,
}

impl VaultService {
    /// Backs up every version of an object into an opaque, encrypted and
    /// authenticated blob.
    pub(crate) async fn backup_object(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        kind: ObjectKind,
        op: Operation,
        name: &ObjectName,
    ) -> Result<Vec<u8>> {
        self.backup_objects(auth, vault, kind, op, name, BackupExtras::default())
            .await
    }

    /// Backs up an object with the objects of other kinds that share its name
    /// (a certificate's key and secret) and an opaque policy document.
    pub(crate) async fn backup_objects(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        kind: ObjectKind,
        op: Operation,
        name: &ObjectName,
        extras: BackupExtras<'_>,
    ) -> Result<Vec<u8>> {
        auth.require_on(vault, op, name)?;
        self.backup_authorized(vault, kind, name, extras).await
    }

    /// `backup_objects` once the caller's right is established (a pool's
    /// full backup holds `PoolBackup` for every key).
    pub(crate) async fn backup_authorized(
        &self,
        vault: &VaultRecord,
        kind: ObjectKind,
        name: &ObjectName,
        extras: BackupExtras<'_>,
    ) -> Result<Vec<u8>> {
        // One read snapshot for the object and its companions: a backup
        // never holds a certificate version without its key or secret.
        let mut kinds = vec![kind];
        kinds.extend_from_slice(extras.companions);
        let records = self.store.all_versions_of(&vault.id, &kinds, name).await?;
        let (display, versions) = self.backup_versions(vault, kind, name, &records)?;
        let mut doc = BackupDoc {
            format: backup_format(kind),
            name: display,
            versions,
            companions: BTreeMap::new(),
            policy: extras.policy,
        };
        for k in extras.companions {
            let (_, versions) = self.backup_versions(vault, *k, name, &records)?;
            doc.companions.insert(k.as_str().to_owned(), versions);
        }
        let plain = Sensitive::new(serde_json::to_vec(&doc).map_err(|_| Error::Integrity)?);
        if vault.is_managed_hsm() {
            return self.seal_pool_backup(vault, kind, plain.expose());
        }
        self.barrier.seal_root(&backup_aad(kind), plain.expose())
    }

    /// A managed HSM's backup: sealed under its security-domain key, headed
    /// by the domain's identity, so only a pool holding that domain (this
    /// one, or one the domain was uploaded into) can restore it.
    fn seal_pool_backup(
        &self,
        pool: &VaultRecord,
        kind: ObjectKind,
        plain: &[u8],
    ) -> Result<Vec<u8>> {
        let (domain, key) = self.pool_domain(pool)?;
        let aad = [
            backup_aad(kind),
            b"/pool/".to_vec(),
            domain.as_bytes().to_vec(),
        ]
        .concat();
        let sealed = self.barrier.seal_with(key.expose(), &aad, plain)?;
        Ok([POOL_BACKUP_MAGIC, domain.as_bytes(), &sealed].concat())
    }

    fn open_pool_backup(
        &self,
        pool: &VaultRecord,
        kind: ObjectKind,
        blob: &[u8],
    ) -> Result<Sensitive<Vec<u8>>> {
        let invalid = || {
            Error::BadParameter(
                "Backup blob contains invalid or corrupt data: a managed HSM restores backups taken from a managed HSM.".into(),
            )
        };
        let rest = blob.strip_prefix(POOL_BACKUP_MAGIC).ok_or_else(invalid)?;
        let (domain, sealed) = rest.split_at_checked(32).ok_or_else(invalid)?;
        let (own, key) = self.pool_domain(pool)?;
        if domain != own.as_bytes() {
            return Err(Error::BadParameter(
                "The backup was taken from a managed HSM with another security domain: only an HSM holding that security domain can restore it.".into(),
            ));
        }
        let aad = [backup_aad(kind), b"/pool/".to_vec(), own.into_bytes()].concat();
        self.barrier
            .open_with(key.expose(), &aad, sealed)
            .map_err(|_| invalid())
    }

    /// The versions of `kind` among `records` with their payloads opened
    /// (an empty payload — a certificate's — stays empty), and the name's
    /// casing.
    fn backup_versions(
        &self,
        vault: &VaultRecord,
        kind: ObjectKind,
        name: &ObjectName,
        records: &[VersionRecord],
    ) -> Result<(String, Vec<BackupVersion>)> {
        let versions: Vec<&VersionRecord> = records.iter().filter(|r| r.kind == kind).collect();
        if versions.is_empty() {
            return Err(Error::NotFound {
                kind,
                name: name.to_string(),
            });
        }
        let mut out = Vec::with_capacity(versions.len());
        let mut display = name.to_string();
        for rec in versions {
            let hsm = kind == ObjectKind::Key && crate::key::meta_of(rec).is_ok_and(|m| m.hsm);
            let value = if rec.payload.is_empty() {
                Sensitive::new(Vec::new())
            } else if hsm {
                // The HSM's own backup key wraps it; the master key seals the
                // blob around it: restoring needs this deployment and that HSM.
                Sensitive::new(
                    self.with_private(vault, rec, true, |key| self.keys.export_hardware(key))?,
                )
            } else {
                self.barrier.open(
                    vault,
                    &Self::payload_aad(vault, kind, &rec.name, &rec.version),
                    &rec.payload,
                )?
            };
            display = rec.name.to_string();
            out.push(BackupVersion::from_record(rec, value.expose()));
        }
        Ok((display, out))
    }

    /// Restores a backup blob of `kind` into `vault`; refused if the name
    /// exists there (live or soft-deleted). Returns the latest version.
    pub(crate) async fn restore_object(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        kind: ObjectKind,
        op: Operation,
        blob: &[u8],
    ) -> Result<VersionRecord> {
        Ok(self.restore_objects(auth, vault, kind, op, blob).await?.0)
    }

    /// Restores an object with its companions (all names checked free
    /// first, then all written in one transaction) and returns its latest
    /// version and the backed-up policy document.
    pub(crate) async fn restore_objects(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        kind: ObjectKind,
        op: Operation,
        blob: &[u8],
    ) -> Result<(VersionRecord, Option<String>)> {
        auth.require(vault, op)?;
        self.restore_authorized(vault, kind, blob, None).await
    }

    /// `restore_objects` once the caller's right is established (a pool's
    /// full or selective restore holds `PoolRestore`); `expected_name`: the
    /// name the blob must hold (a full backup's manifest names each blob).
    pub(crate) async fn restore_authorized(
        &self,
        vault: &VaultRecord,
        kind: ObjectKind,
        blob: &[u8],
        expected_name: Option<&str>,
    ) -> Result<(VersionRecord, Option<String>)> {
        let invalid =
            || Error::BadParameter("Backup blob contains invalid or corrupt data.".into());
        let plain = if vault.is_managed_hsm() {
            self.open_pool_backup(vault, kind, blob)?
        } else {
            self.barrier
                .open_root(&backup_aad(kind), blob)
                .map_err(|_| invalid())?
        };
        let doc: BackupDoc = serde_json::from_slice(plain.expose()).map_err(|_| invalid())?;
        if doc.format != backup_format(kind) || doc.versions.is_empty() {
            return Err(invalid());
        }
        let name: ObjectName = doc.name.parse().map_err(|_| invalid())?;
        if expected_name.is_some_and(|e| !e.eq_ignore_ascii_case(name.as_str())) {
            return Err(invalid());
        }
        let mut kinds = Vec::with_capacity(doc.companions.len() + 1);
        for k in doc.companions.keys() {
            kinds.push(ObjectKind::parse(k).ok_or_else(invalid)?);
        }
        kinds.push(kind);
        // Names first: an HSM key is taken back into the HSM only for a restore
        // that will happen.
        // A certificate's policy must be one (an authenticated blob of this
        // deployment, but checked before it is stored all the same).
        if let (ObjectKind::Certificate, Some(body)) = (kind, &doc.policy) {
            crate::certificate::check_state(body).map_err(|_| invalid())?;
        }
        // A name holding only a policy (a pending or cancelled create) is
        // taken too.
        if self
            .store
            .get_policy(&vault.id, kind, &name)
            .await?
            .is_some()
        {
            return Err(Error::AlreadyExists {
                kind,
                name: name.to_string(),
            });
        }
        for k in &kinds {
            let taken = self
                .store
                .get_version(&vault.id, *k, &name, None)
                .await?
                .is_some()
                || self
                    .store
                    .get_deleted(&vault.id, *k, &name)
                    .await?
                    .is_some();
            if taken {
                return Err(Error::AlreadyExists {
                    kind: *k,
                    name: name.to_string(),
                });
            }
        }
        // HSM objects taken into the token for this restore: destroyed again
        // if the restore fails for certain before or in its commit.
        let mut imported = Vec::new();
        let mut records = Vec::new();
        let built: Result<()> = (|| {
            for (k, versions) in &doc.companions {
                let k = ObjectKind::parse(k).ok_or_else(invalid)?;
                records.extend(self.restore_records(vault, k, &name, versions, &mut imported)?);
            }
            records.extend(self.restore_records(
                vault,
                kind,
                &name,
                &doc.versions,
                &mut imported,
            )?);
            Ok(())
        })();
        if let Err(e) = built {
            self.destroy_hardware(&imported);
            return Err(e);
        }
        // The restored object is evaluated as a new one would be.
        let approved = match self
            .restore_view(vault, kind, &name, &records, doc.policy.as_deref())
            .await
        {
            Ok(Some(view)) => match self.gate_check(vault, kind, &name, || view).await {
                Ok(a) => a,
                Err(e) => {
                    self.destroy_hardware(&imported);
                    return Err(e);
                }
            },
            Ok(None) => None,
            Err(e) => {
                self.destroy_hardware(&imported);
                return Err(e);
            }
        };
        // One transaction, with the policy document: a crash or cancel
        // leaves all of them or none.
        let now = self.clock.now();
        let policy = doc.policy.as_ref().map(|body| crate::store::PolicyChange {
            kind,
            name: name.clone(),
            expected: None,
            record: crate::store::PolicyRecord {
                body: body.clone(),
                created: now,
                updated: now,
            },
        });
        let committed = self
            .store
            .restore_object_with(&vault.id, &records, policy.as_ref())
            .await
            .map_err(Error::from);
        self.undo_hardware_unless_committed(&committed, &imported);
        committed?;
        if let Some(a) = approved {
            a.committed().await;
        }
        let latest = self.live_version(vault, kind, &name, None).await?;
        Ok((latest, doc.policy.clone()))
    }

    fn restore_records(
        &self,
        vault: &VaultRecord,
        kind: ObjectKind,
        name: &ObjectName,
        versions: &[BackupVersion],
        imported: &mut Vec<Sensitive<Vec<u8>>>,
    ) -> Result<Vec<VersionRecord>> {
        let invalid =
            || Error::BadParameter("Backup blob contains invalid or corrupt data.".into());
        let mut records = Vec::with_capacity(versions.len());
        for v in versions {
            let version: Version = v.version.parse().map_err(|_| invalid())?;
            let value = Sensitive::new(STANDARD.decode(&v.value).map_err(|_| invalid())?);
            let aad = Self::payload_aad(vault, kind, name, &version);
            let hsm_meta = (kind == ObjectKind::Key)
                .then(|| serde_json::from_str::<crate::key::KeyMeta>(&v.meta).ok())
                .flatten()
                .filter(|m| m.hsm);
            let payload = if value.expose().is_empty() {
                Vec::new()
            } else if hsm_meta.is_none() && vault.is_managed_hsm() {
                return Err(Error::BadParameter(
                    "A managed HSM restores HSM key backups only; this backup holds a software key or another object type.".into(),
                ));
            } else if let Some(meta) = hsm_meta {
                self.check_hardware(vault)?;
                let reference = self.keys.import_hardware_backup(
                    value.expose(),
                    &meta.public,
                    &crate::key::hardware_label(vault, name),
                )?;
                let sealed = self.barrier.seal(vault, &aad, reference.expose());
                imported.push(reference);
                sealed?
            } else {
                self.barrier.seal(vault, &aad, value.expose())?
            };
            records.push(VersionRecord {
                kind,
                name: name.clone(),
                version,
                attributes: Attributes {
                    enabled: v.enabled,
                    nbf: v.nbf,
                    exp: v.exp,
                    created: v.created,
                    updated: v.updated,
                },
                tags: v.tags.clone(),
                content_type: v.content_type.clone(),
                managed: v.managed,
                payload,
                meta: v.meta.clone(),
            });
        }
        Ok(records)
    }
}

#[derive(Serialize, Deserialize)]
struct BackupDoc {
    format: String,
    name: String,
    versions: Vec<BackupVersion>,
    /// Objects of other kinds with the same name, by kind.
    #[serde(default)]
    companions: BTreeMap<String, Vec<BackupVersion>>,
    /// The object's policy document, opaque here.
    #[serde(default)]
    policy: Option<String>,
}

/// Plaintext payloads are wiped however the document goes out of scope,
/// including on the early returns of a corrupt restore.
impl Drop for BackupDoc {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        for v in self
            .versions
            .iter_mut()
            .chain(self.companions.values_mut().flatten())
        {
            v.value.zeroize();
        }
    }
}

#[derive(Serialize, Deserialize)]
struct BackupVersion {
    version: String,
    enabled: bool,
    nbf: Option<i64>,
    exp: Option<i64>,
    created: i64,
    updated: i64,
    tags: BTreeMap<String, String>,
    content_type: Option<String>,
    managed: bool,
    meta: String,
    /// Standard base64 of the plaintext payload; only ever inside a sealed blob.
    value: String,
}

impl BackupVersion {
    fn from_record(rec: &VersionRecord, value: &[u8]) -> Self {
        Self {
            version: rec.version.to_string(),
            enabled: rec.attributes.enabled,
            nbf: rec.attributes.nbf,
            exp: rec.attributes.exp,
            created: rec.attributes.created,
            updated: rec.attributes.updated,
            tags: rec.tags.clone(),
            content_type: rec.content_type.clone(),
            managed: rec.managed,
            meta: rec.meta.clone(),
            value: STANDARD.encode(value),
        }
    }
}
