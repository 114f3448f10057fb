//! Secrets: the versioned-object core plus a sealed string value. Azure rules
//! that are specific to secrets (value size, content type, disabled reads,
//! backup blobs) live here.

use std::collections::BTreeMap;

use crate::auth::{Authorized, Operation};
use crate::error::{Error, Result};
use crate::ids::{ObjectName, Version};
use crate::object::{
    validate_tags, Attributes, AttributesPatch, DeletedInfo, ObjectKind, Page, VersionRecord,
};
use crate::sensitive::Sensitive;
use crate::service::VaultService;
use crate::vault::VaultRecord;

/// Largest secret value Azure accepts: 25 KB.
pub const MAX_SECRET_VALUE_BYTES: usize = 25 * 1024;
/// Longest content type.
pub const MAX_CONTENT_TYPE_CHARS: usize = 255;

const KIND: ObjectKind = ObjectKind::Secret;

/// What a caller sends to set a secret.
#[derive(Debug)]
pub struct SecretInput {
    /// The value.
    pub value: Sensitive<String>,
    /// Content type.
    pub content_type: Option<String>,
    /// Tags (replaced as a whole).
    pub tags: Option<BTreeMap<String, String>>,
    /// Attribute choices.
    pub attributes: AttributesPatch,
}

/// What a caller sends to update a secret version's properties.
#[derive(Debug, Default)]
pub struct SecretUpdate {
    /// New content type.
    pub content_type: Option<String>,
    /// New tags (replace as a whole).
    pub tags: Option<BTreeMap<String, String>>,
    /// Attribute changes.
    pub attributes: AttributesPatch,
}

/// A secret version, with its value when the operation returns one.
#[derive(Debug)]
pub struct SecretBundle {
    /// The version's properties.
    pub record: VersionRecord,
    /// The value (only for set and get).
    pub value: Option<Sensitive<String>>,
}

/// A soft-deleted secret.
#[derive(Debug)]
pub struct DeletedSecret {
    /// Latest version's properties.
    pub record: VersionRecord,
    /// Deletion bookkeeping.
    pub info: DeletedInfo,
}

impl VaultService {
    /// Sets a secret: always a new version, which becomes the latest.
    pub async fn set_secret(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        name: &ObjectName,
        input: SecretInput,
    ) -> Result<SecretBundle> {
        auth.require_on(vault, Operation::SecretSet, name)?;
        // A certificate's secret is refused by the store, in the write's
        // transaction (`StoreError::Managed`): no read before the write.
        if input.value.expose().len() > MAX_SECRET_VALUE_BYTES {
            return Err(Error::BadParameter(format!(
                "The secret value exceeds the maximum size of {MAX_SECRET_VALUE_BYTES} bytes."
            )));
        }
        validate_content_type(input.content_type.as_deref())?;
        let tags = input.tags.unwrap_or_default();
        validate_tags(&tags)?;
        validate_window(&input.attributes)?;
        let now = self.clock.now();
        let version = Version::random();
        let aad = Self::payload_aad(vault, KIND, name, &version);
        let payload = self
            .barrier
            .seal(vault, &aad, input.value.expose().as_bytes())?;
        let record = VersionRecord {
            kind: KIND,
            name: name.clone(),
            version,
            attributes: Attributes::new(now, &input.attributes),
            tags,
            content_type: input.content_type,
            managed: false,
            payload,
            meta: String::from("{}"),
        };
        let approved = self
            .gate_check(vault, KIND, name, || {
                crate::governance::views::secret(
                    name,
                    &record.attributes,
                    record.content_type.as_deref(),
                )
            })
            .await?;
        let record = self
            .put_new_version(
                vault,
                record,
                crate::events::EventType::SecretNewVersionCreated,
            )
            .await?;
        if let Some(a) = approved {
            a.committed().await;
        }
        Ok(SecretBundle {
            record,
            value: Some(input.value),
        })
    }

    /// Gets a secret version's value (`None` = latest). Disabled versions are
    /// refused; nbf/exp are informational for secrets, as in Azure.
    pub async fn get_secret(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        name: &ObjectName,
        version: Option<&Version>,
    ) -> Result<SecretBundle> {
        auth.require_on(vault, Operation::SecretGet, name)?;
        let record = self.live_version(vault, KIND, name, version).await?;
        if !record.attributes.enabled {
            return Err(Error::Disabled {
                kind: KIND,
                operation: "get",
            });
        }
        let value = self.open_value(vault, &record)?;
        Ok(SecretBundle {
            record,
            value: Some(value),
        })
    }

    /// Updates a version's content type, tags and attributes (never its value).
    pub async fn update_secret(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        name: &ObjectName,
        version: Option<&Version>,
        update: SecretUpdate,
    ) -> Result<SecretBundle> {
        auth.require_on(vault, Operation::SecretUpdate, name)?;
        self.refuse_managed(vault, KIND, name, "update").await?;
        validate_content_type(update.content_type.as_deref())?;
        if let Some(tags) = &update.tags {
            validate_tags(tags)?;
        }
        let now = self.clock.now();
        let record = self
            .modify_version(vault, KIND, name, version, |record| {
                record.attributes.apply(&update.attributes, now);
                validate_window(&AttributesPatch {
                    enabled: None,
                    nbf: record.attributes.nbf,
                    exp: record.attributes.exp,
                })?;
                if let Some(tags) = &update.tags {
                    record.tags = tags.clone();
                }
                if update.content_type.is_some() {
                    record.content_type = update.content_type.clone();
                }
                Ok(())
            })
            .await?;
        Ok(SecretBundle {
            record,
            value: None,
        })
    }

    /// Lists secrets (latest version of each, no values).
    pub async fn list_secrets(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page<VersionRecord>> {
        self.list_objects(auth, vault, KIND, Operation::SecretList, cursor, limit)
            .await
    }

    /// Lists the versions of a secret (no values).
    pub async fn list_secret_versions(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        name: &ObjectName,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page<VersionRecord>> {
        self.list_object_versions(
            auth,
            vault,
            KIND,
            Operation::SecretListVersions,
            name,
            (cursor, limit),
        )
        .await
    }

    /// Soft-deletes a secret with all its versions.
    pub async fn delete_secret(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        name: &ObjectName,
    ) -> Result<DeletedSecret> {
        auth.require_on(vault, Operation::SecretDelete, name)?;
        self.refuse_managed(vault, KIND, name, "delete").await?;
        let (record, info) = self
            .delete_object(auth, vault, &[KIND], Operation::SecretDelete, name)
            .await?;
        Ok(DeletedSecret { record, info })
    }

    /// Reads a deleted secret's properties.
    pub async fn get_deleted_secret(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        name: &ObjectName,
    ) -> Result<DeletedSecret> {
        let (record, info) = self
            .get_deleted_object(auth, vault, KIND, Operation::SecretGetDeleted, name)
            .await?;
        Ok(DeletedSecret { record, info })
    }

    /// Lists deleted secrets.
    pub async fn list_deleted_secrets(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page<DeletedSecret>> {
        Ok(self
            .list_deleted_objects(
                auth,
                vault,
                KIND,
                Operation::SecretListDeleted,
                cursor,
                limit,
            )
            .await?
            .map(|(record, info)| DeletedSecret { record, info }))
    }

    /// Recovers a deleted secret; returns its latest version (no value).
    pub async fn recover_deleted_secret(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        name: &ObjectName,
    ) -> Result<SecretBundle> {
        auth.require_on(vault, Operation::SecretRecover, name)?;
        self.refuse_managed(vault, KIND, name, "recover").await?;
        let record = self
            .recover_object(auth, vault, &[KIND], Operation::SecretRecover, name)
            .await?;
        Ok(SecretBundle {
            record,
            value: None,
        })
    }

    /// Purges a deleted secret for good.
    pub async fn purge_deleted_secret(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        name: &ObjectName,
    ) -> Result<()> {
        auth.require_on(vault, Operation::SecretPurge, name)?;
        self.refuse_managed(vault, KIND, name, "purge").await?;
        self.purge_object(auth, vault, &[KIND], Operation::SecretPurge, name)
            .await
    }

    /// Backs up every version of a secret into an opaque, encrypted and
    /// authenticated blob that any vault of this deployment can restore.
    pub async fn backup_secret(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        name: &ObjectName,
    ) -> Result<Vec<u8>> {
        self.backup_object(auth, vault, KIND, Operation::SecretBackup, name)
            .await
    }

    /// Restores a backup blob into `vault`; refused if the name exists.
    pub async fn restore_secret(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        blob: &[u8],
    ) -> Result<SecretBundle> {
        let record = self
            .restore_object(auth, vault, KIND, Operation::SecretRestore, blob)
            .await?;
        Ok(SecretBundle {
            record,
            value: None,
        })
    }

    fn open_value(&self, vault: &VaultRecord, rec: &VersionRecord) -> Result<Sensitive<String>> {
        let aad = Self::payload_aad(vault, KIND, &rec.name, &rec.version);
        let bytes = self.barrier.open(vault, &aad, &rec.payload)?;
        let text = std::str::from_utf8(bytes.expose()).map_err(|_| Error::Integrity)?;
        Ok(Sensitive::new(text.to_owned()))
    }
}

fn validate_content_type(ct: Option<&str>) -> Result<()> {
    match ct {
        Some(ct) if ct.chars().count() > MAX_CONTENT_TYPE_CHARS => Err(Error::BadParameter(
            format!("The content type must be at most {MAX_CONTENT_TYPE_CHARS} characters."),
        )),
        _ => Ok(()),
    }
}

fn validate_window(a: &AttributesPatch) -> Result<()> {
    match (a.nbf, a.exp) {
        (Some(nbf), Some(exp)) if exp < nbf => Err(Error::BadParameter(
            "The expiration time (exp) must be later than the not-before time (nbf).".into(),
        )),
        _ => Ok(()),
    }
}
