//! A pool's full backup and its full or selective restore, to and from a
//! folder of blobs (`BackupStorage`: Azure Blob storage in the server).
//!
//! A folder holds one blob per key (`key-{n}`: the key's backup, as
//! `backupkey` makes it — every version, the HSM material wrapped by the
//! token's backup key, sealed under the security-domain key) and a
//! `manifest` naming them, sealed under the security-domain key and headed
//! by the domain's identity. Only a pool holding that security domain opens
//! it. Live keys are backed up; soft-deleted ones are not. Role assignments
//! and settings are not part of a backup.

use serde::{Deserialize, Serialize};

use crate::auth::{Authorized, Operation};
use crate::error::{Error, Result};
use crate::ids::ObjectName;
use crate::object::ObjectKind;
use crate::service::VaultService;
use crate::vault::VaultRecord;

/// Where a backup folder's blobs are written and read.
#[async_trait::async_trait]
pub trait BackupStorage: Send + Sync {
    /// Writes blob `name` of the folder.
    async fn put(&self, name: &str, data: Vec<u8>) -> Result<()>;
    /// Reads blob `name` of the folder.
    async fn get(&self, name: &str) -> Result<Vec<u8>>;
}

const MANIFEST: &str = "manifest";
const MANIFEST_MAGIC: &[u8] = b"khsdm1";
const FORMAT: &str = "keyhaven-managed-hsm-backup-v1";
/// Most keys a backup holds (bounds a restore's work).
const MAX_KEYS: usize = 100_000;

#[derive(Serialize, Deserialize)]
struct Manifest {
    format: String,
    pool: String,
    created: i64,
    keys: Vec<ManifestKey>,
}

#[derive(Serialize, Deserialize)]
struct ManifestKey {
    name: String,
    blob: String,
}

/// What a restore did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RestoreCount {
    /// Keys restored.
    pub restored: usize,
    /// Keys left alone because the name is taken (live or soft-deleted).
    pub skipped: usize,
}

fn manifest_aad(domain: &str) -> Vec<u8> {
    format!("keyhaven/v1/pool-backup-manifest/{domain}").into_bytes()
}

impl VaultService {
    /// Backs every live key of `pool` up into the folder; returns how many.
    pub async fn backup_pool(
        &self,
        auth: &Authorized,
        pool: &VaultRecord,
        storage: &dyn BackupStorage,
    ) -> Result<usize> {
        auth.require(pool, Operation::PoolBackup)?;
        let (domain, key) = self.pool_domain(pool)?;
        let mut names = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self
                .store
                .list_latest(&pool.id, ObjectKind::Key, cursor.as_deref(), 100)
                .await?;
            names.extend(page.items.into_iter().map(|r| r.name));
            if names.len() > MAX_KEYS {
                return Err(Error::BadParameter(format!(
                    "A managed HSM backup holds at most {MAX_KEYS} keys."
                )));
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let mut keys = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            // A key deleted since the listing is left out.
            let blob = match self
                .backup_authorized(pool, ObjectKind::Key, name, Default::default())
                .await
            {
                Ok(b) => b,
                Err(Error::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            };
            let blob_name = format!("key-{i}");
            storage.put(&blob_name, blob).await?;
            keys.push(ManifestKey {
                name: name.to_string(),
                blob: blob_name,
            });
        }
        let count = keys.len();
        let manifest = Manifest {
            format: FORMAT.into(),
            pool: pool.name.to_string(),
            created: self.clock.now(),
            keys,
        };
        let plain = serde_json::to_vec(&manifest).map_err(|_| Error::Integrity)?;
        let sealed = self
            .barrier
            .seal_with(key.expose(), &manifest_aad(&domain), &plain)?;
        storage
            .put(
                MANIFEST,
                [MANIFEST_MAGIC, domain.as_bytes(), &sealed].concat(),
            )
            .await?;
        Ok(count)
    }

    /// Checks that a folder holds a backup this pool can restore (its
    /// manifest opens with the pool's security domain), restoring nothing.
    pub async fn check_pool_backup(
        &self,
        auth: &Authorized,
        pool: &VaultRecord,
        storage: &dyn BackupStorage,
    ) -> Result<()> {
        auth.require(pool, Operation::PoolRestore)?;
        self.open_manifest(pool, storage).await.map(|_| ())
    }

    async fn open_manifest(
        &self,
        pool: &VaultRecord,
        storage: &dyn BackupStorage,
    ) -> Result<Manifest> {
        let invalid = || {
            Error::BadParameter(
                "The folder holds no managed HSM backup Keyhaven can read (manifest missing or corrupt).".into(),
            )
        };
        let raw = storage.get(MANIFEST).await?;
        let rest = raw.strip_prefix(MANIFEST_MAGIC).ok_or_else(invalid)?;
        let (domain, sealed) = rest.split_at_checked(32).ok_or_else(invalid)?;
        let (own, key) = self.pool_domain(pool)?;
        if domain != own.as_bytes() {
            return Err(Error::BadParameter(
                "The backup was taken from a managed HSM with another security domain: only an HSM holding that security domain can restore it.".into(),
            ));
        }
        let plain = self
            .barrier
            .open_with(key.expose(), &manifest_aad(&own), sealed)
            .map_err(|_| invalid())?;
        let manifest: Manifest = serde_json::from_slice(plain.expose()).map_err(|_| invalid())?;
        if manifest.format != FORMAT || manifest.keys.len() > MAX_KEYS {
            return Err(invalid());
        }
        Ok(manifest)
    }

    /// Restores the keys of a backup folder into `pool` (only `only`, for a
    /// selective restore). A key whose name is taken is left as it is and
    /// counted as skipped, as Azure's managed HSM reports "could not
    /// overwrite".
    pub async fn restore_pool(
        &self,
        auth: &Authorized,
        pool: &VaultRecord,
        storage: &dyn BackupStorage,
        only: Option<&ObjectName>,
    ) -> Result<RestoreCount> {
        auth.require(pool, Operation::PoolRestore)?;
        let invalid = || {
            Error::BadParameter(
                "The folder holds no managed HSM backup Keyhaven can read (manifest missing or corrupt).".into(),
            )
        };
        let manifest = self.open_manifest(pool, storage).await?;
        let mut count = RestoreCount::default();
        let mut found = false;
        for k in &manifest.keys {
            if only.is_some_and(|o| !o.as_str().eq_ignore_ascii_case(&k.name)) {
                continue;
            }
            found = true;
            if !k.blob.starts_with("key-") || k.blob.contains('/') {
                return Err(invalid());
            }
            // The pool is read again before each key: a pool deleted
            // meanwhile gets nothing more.
            if self
                .reread(pool)
                .await?
                .is_none_or(|p| p.properties.deleted.is_some())
            {
                return Err(Error::BadParameter(format!(
                    "The managed HSM '{}' was deleted during the restore; {} keys were restored before.",
                    pool.name, count.restored
                )));
            }
            let blob = storage.get(&k.blob).await?;
            // The blob must hold the key the manifest names (blobs can be
            // swapped in storage; a selective restore's grant names one key).
            match self
                .restore_authorized(pool, ObjectKind::Key, &blob, Some(&k.name))
                .await
            {
                Ok(_) => count.restored += 1,
                Err(Error::AlreadyExists { .. }) => count.skipped += 1,
                Err(e) => return Err(e),
            }
        }
        if let (Some(name), false) = (only, found) {
            return Err(Error::NotFound {
                kind: ObjectKind::Key,
                name: format!("{name} (in the backup)"),
            });
        }
        Ok(count)
    }
}
