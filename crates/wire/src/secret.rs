//! Secret shapes: SecretSetParameters, SecretUpdateParameters, SecretBundle,
//! SecretItem, DeletedSecretBundle/Item, backup and restore bodies.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use keyhaven_core::object::{AttributesPatch, DeletedInfo, Page, VersionRecord};
use keyhaven_core::secret::{SecretInput, SecretUpdate};
use keyhaven_core::{Error, Sensitive, VaultRecord};
use serde::{Deserialize, Serialize};

use crate::urls::VaultUrls;

const COLLECTION: &str = "secrets";
const DELETED_COLLECTION: &str = "deletedsecrets";

/// Writable attributes in requests.
#[derive(Debug, Default, Deserialize)]
pub struct AttributesIn {
    /// Enabled flag.
    pub enabled: Option<bool>,
    /// Not-before (Unix seconds).
    pub nbf: Option<i64>,
    /// Expiry (Unix seconds).
    pub exp: Option<i64>,
}

impl From<AttributesIn> for AttributesPatch {
    fn from(a: AttributesIn) -> Self {
        Self {
            enabled: a.enabled,
            nbf: a.nbf,
            exp: a.exp,
        }
    }
}

/// `PUT /secrets/{name}` body.
#[derive(Deserialize)]
pub struct SecretSetParameters {
    value: Option<String>,
    #[serde(rename = "contentType")]
    content_type: Option<String>,
    tags: Option<BTreeMap<String, String>>,
    attributes: Option<AttributesIn>,
}

impl TryFrom<SecretSetParameters> for SecretInput {
    type Error = Error;

    fn try_from(p: SecretSetParameters) -> Result<Self, Error> {
        let value = p
            .value
            .ok_or_else(|| Error::BadParameter("The secret value (value) is required.".into()))?;
        Ok(Self {
            value: Sensitive::new(value),
            content_type: p.content_type,
            tags: p.tags,
            attributes: p.attributes.map(Into::into).unwrap_or_default(),
        })
    }
}

/// `PATCH /secrets/{name}/{version}` body.
#[derive(Deserialize)]
pub struct SecretUpdateParameters {
    #[serde(rename = "contentType")]
    content_type: Option<String>,
    tags: Option<BTreeMap<String, String>>,
    attributes: Option<AttributesIn>,
}

impl From<SecretUpdateParameters> for SecretUpdate {
    fn from(p: SecretUpdateParameters) -> Self {
        Self {
            content_type: p.content_type,
            tags: p.tags,
            attributes: p.attributes.map(Into::into).unwrap_or_default(),
        }
    }
}

/// `POST /secrets/restore` body.
#[derive(Deserialize)]
pub struct SecretRestoreParameters {
    value: Option<String>,
}

impl SecretRestoreParameters {
    /// Decodes the base64url backup blob.
    pub fn blob(&self) -> Result<Vec<u8>, Error> {
        let v = self
            .value
            .as_deref()
            .ok_or_else(|| Error::BadParameter("The backup blob (value) is required.".into()))?;
        URL_SAFE_NO_PAD
            .decode(v.trim_end_matches('='))
            .map_err(|_| Error::BadParameter("The backup blob is not valid base64url.".into()))
    }
}

/// `{"value": "<base64url>"}` backup result.
#[derive(Serialize)]
pub struct BackupSecretResult {
    /// The blob.
    pub value: String,
}

impl BackupSecretResult {
    /// Encodes a backup blob.
    pub fn new(blob: &[u8]) -> Self {
        Self {
            value: URL_SAFE_NO_PAD.encode(blob),
        }
    }
}

/// Attributes in responses.
#[derive(Serialize)]
pub struct AttributesOut {
    enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    nbf: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<i64>,
    created: i64,
    updated: i64,
    #[serde(rename = "recoveryLevel")]
    recovery_level: &'static str,
    #[serde(rename = "recoverableDays")]
    recoverable_days: i64,
}

impl AttributesOut {
    pub(crate) fn new(rec: &VersionRecord, vault: &VaultRecord) -> Self {
        let a = &rec.attributes;
        Self {
            enabled: a.enabled,
            nbf: a.nbf,
            exp: a.exp,
            created: a.created,
            updated: a.updated,
            recovery_level: vault.recovery_level(),
            recoverable_days: vault.retention_days,
        }
    }
}

/// SecretBundle (and SecretItem when `value` is absent and `id` unversioned).
#[derive(Serialize)]
pub struct SecretBundle<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a str>,
    id: String,
    #[serde(rename = "contentType", skip_serializing_if = "Option::is_none")]
    content_type: Option<&'a str>,
    attributes: AttributesOut,
    #[serde(skip_serializing_if = "Option::is_none")]
    tags: Option<&'a BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    managed: Option<bool>,
    /// The certificate's key, for a secret that backs a certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    kid: Option<String>,
}

impl<'a> SecretBundle<'a> {
    /// A bundle for `rec`, with `value` when the operation returns it.
    pub fn new(
        rec: &'a VersionRecord,
        value: Option<&'a Sensitive<String>>,
        vault: &VaultRecord,
        urls: &VaultUrls,
    ) -> Self {
        Self::build(
            rec,
            value,
            vault,
            urls,
            urls.versioned(COLLECTION, rec.name.as_str(), rec.version.as_str()),
        )
    }

    /// A list item: unversioned id (list) or versioned id (list versions).
    pub fn item(
        rec: &'a VersionRecord,
        vault: &VaultRecord,
        urls: &VaultUrls,
        versioned: bool,
    ) -> Self {
        let id = if versioned {
            urls.versioned(COLLECTION, rec.name.as_str(), rec.version.as_str())
        } else {
            urls.unversioned(COLLECTION, rec.name.as_str())
        };
        Self::build(rec, None, vault, urls, id)
    }

    fn build(
        rec: &'a VersionRecord,
        value: Option<&'a Sensitive<String>>,
        vault: &VaultRecord,
        urls: &VaultUrls,
        id: String,
    ) -> Self {
        Self {
            kid: (rec.managed && value.is_some())
                .then(|| urls.versioned("keys", rec.name.as_str(), rec.version.as_str())),
            value: value.map(|v| v.expose().as_str()),
            id,
            content_type: rec.content_type.as_deref(),
            attributes: AttributesOut::new(rec, vault),
            tags: (!rec.tags.is_empty()).then_some(&rec.tags),
            managed: rec.managed.then_some(true),
        }
    }
}

/// DeletedSecretBundle / DeletedSecretItem.
#[derive(Serialize)]
pub struct DeletedSecretBundle<'a> {
    #[serde(rename = "recoveryId")]
    recovery_id: String,
    #[serde(rename = "deletedDate")]
    deleted_date: i64,
    #[serde(rename = "scheduledPurgeDate")]
    scheduled_purge_date: i64,
    #[serde(flatten)]
    bundle: SecretBundle<'a>,
}

impl<'a> DeletedSecretBundle<'a> {
    /// A deleted bundle (versioned id) or item (`item` = unversioned id).
    pub fn new(
        rec: &'a VersionRecord,
        info: &DeletedInfo,
        vault: &VaultRecord,
        urls: &VaultUrls,
        item: bool,
    ) -> Self {
        Self {
            recovery_id: urls.unversioned(DELETED_COLLECTION, rec.name.as_str()),
            deleted_date: info.deleted_date,
            scheduled_purge_date: info.scheduled_purge_date,
            bundle: if item {
                SecretBundle::item(rec, vault, urls, false)
            } else {
                SecretBundle::new(rec, None, vault, urls)
            },
        }
    }
}

/// `{"value":[…],"nextLink":…}`
#[derive(Serialize)]
pub struct ListResult<T> {
    /// Items of this page.
    pub value: Vec<T>,
    /// Absolute link to the next page, `null` on the last.
    #[serde(rename = "nextLink")]
    pub next_link: Option<String>,
}

impl<T> ListResult<T> {
    /// Builds a list page; `link` turns the store cursor into a nextLink.
    pub fn new<R>(page: &Page<R>, items: Vec<T>, link: impl FnOnce(&str) -> String) -> Self {
        Self {
            value: items,
            next_link: page.next.as_deref().map(link),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyhaven_core::object::{Attributes, ObjectKind};

    fn vault() -> VaultRecord {
        VaultRecord {
            id: "id".into(),
            name: "dev".parse().unwrap(),
            tenant_id: "t".into(),
            subscription_id: "s".into(),
            resource_group: "rg".into(),
            sku: "standard".into(),
            retention_days: 90,
            purge_protection: false,
            wrapped_key: vec![],
            created: 0,
            properties: Default::default(),
            rev: 0,
        }
    }

    fn rec() -> VersionRecord {
        VersionRecord {
            kind: ObjectKind::Secret,
            name: "mysecret".parse().unwrap(),
            version: "4387e9f3d6e14c459867679a90fd0f79".parse().unwrap(),
            attributes: Attributes {
                enabled: true,
                nbf: None,
                exp: None,
                created: 1493938410,
                updated: 1493938410,
            },
            tags: BTreeMap::new(),
            content_type: None,
            managed: false,
            payload: vec![],
            meta: "{}".into(),
        }
    }

    #[test]
    fn deleted_bundle_matches_the_azure_example() {
        let urls = VaultUrls::new("https://myvault.vault.azure.net");
        let r = rec();
        let info = DeletedInfo {
            deleted_date: 1493938433,
            scheduled_purge_date: 1501714433,
        };
        let json =
            serde_json::to_string(&DeletedSecretBundle::new(&r, &info, &vault(), &urls, false))
                .unwrap();
        assert_eq!(
            json,
            r#"{"recoveryId":"https://myvault.vault.azure.net/deletedsecrets/mysecret","deletedDate":1493938433,"scheduledPurgeDate":1501714433,"id":"https://myvault.vault.azure.net/secrets/mysecret/4387e9f3d6e14c459867679a90fd0f79","attributes":{"enabled":true,"created":1493938410,"updated":1493938410,"recoveryLevel":"Recoverable+Purgeable","recoverableDays":90}}"#
        );
    }

    #[test]
    fn set_parameters_require_a_value() {
        let p: SecretSetParameters = serde_json::from_str(r#"{"contentType":"x"}"#).unwrap();
        assert!(SecretInput::try_from(p).is_err());
        assert!(serde_json::from_str::<SecretSetParameters>(r#"{"value":5}"#).is_err());
    }
}
