//! Key shapes: KeyCreateParameters, KeyBundle/KeyItem (public JWK only),
//! DeletedKeyBundle/Item, sign and verify bodies. Binary fields are base64url
//! without padding.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use keyhaven_core::key::{Curve, KeyInput, KeyMeta, KeySpec, KeyType};
use keyhaven_core::object::{DeletedInfo, VersionRecord};
use keyhaven_core::{Error, VaultRecord};
use serde::{Deserialize, Serialize};

use crate::secret::AttributesIn;

/// Key attributes as sent: the common ones plus `exportable`.
#[derive(Deserialize)]
pub struct KeyAttributesIn {
    #[serde(flatten)]
    common: AttributesIn,
    exportable: Option<bool>,
}

impl KeyAttributesIn {
    /// The common attributes, refusing what needs secure key release.
    fn checked(
        attributes: Option<Self>,
        release_policy: Option<&serde_json::Value>,
    ) -> Result<keyhaven_core::object::AttributesPatch, Error> {
        let exportable = attributes.as_ref().and_then(|a| a.exportable) == Some(true);
        if exportable || release_policy.is_some_and(|p| !p.is_null()) {
            return Err(Error::BadParameter(
                "Exportable keys and key release policies (secure key release) are not supported by this vault."
                    .into(),
            ));
        }
        Ok(attributes.map(|a| a.common.into()).unwrap_or_default())
    }
}
use crate::urls::VaultUrls;

const COLLECTION: &str = "keys";
const DELETED_COLLECTION: &str = "deletedkeys";

/// `POST /keys/{name}/create` body.
#[derive(Deserialize)]
pub struct KeyCreateParameters {
    kty: Option<String>,
    key_size: Option<u32>,
    public_exponent: Option<u32>,
    crv: Option<String>,
    key_ops: Option<Vec<String>>,
    attributes: Option<KeyAttributesIn>,
    tags: Option<BTreeMap<String, String>>,
    release_policy: Option<serde_json::Value>,
}

impl TryFrom<KeyCreateParameters> for KeyInput {
    type Error = Error;

    fn try_from(p: KeyCreateParameters) -> Result<Self, Error> {
        let (kty, hsm) = KeyType::parse_protected(
            p.kty
                .as_deref()
                .ok_or_else(|| Error::BadParameter("The key type (kty) is required.".into()))?,
        )?;
        let curve = match (kty, p.crv.as_deref()) {
            (_, Some(c)) => Some(Curve::parse(c)?),
            (KeyType::Ec, None) => Some(Curve::P256),
            (KeyType::Rsa | KeyType::Oct, None) => None,
        };
        Ok(Self {
            spec: KeySpec {
                kty,
                size: p.key_size,
                exponent: p.public_exponent,
                curve,
                hsm,
                label: String::new(),
            },
            attributes: KeyAttributesIn::checked(p.attributes, p.release_policy.as_ref())?,
            key_ops: p.key_ops,
            tags: p.tags,
        })
    }
}

/// A public JSON Web Key as Azure returns it.
#[derive(Serialize)]
pub struct JsonWebKey {
    kid: String,
    kty: &'static str,
    key_ops: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    n: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    e: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    crv: Option<Curve>,
    #[serde(skip_serializing_if = "Option::is_none")]
    x: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    y: Option<String>,
}

/// Key attributes in responses.
#[derive(Serialize)]
pub struct KeyAttributes {
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
    exportable: bool,
}

fn attributes(rec: &VersionRecord, vault: &VaultRecord) -> KeyAttributes {
    let a = &rec.attributes;
    KeyAttributes {
        enabled: a.enabled,
        nbf: a.nbf,
        exp: a.exp,
        created: a.created,
        updated: a.updated,
        recovery_level: vault.recovery_level(),
        recoverable_days: vault.retention_days,
        exportable: false,
    }
}

fn b64(v: &Option<Vec<u8>>) -> Option<String> {
    v.as_ref().map(|b| URL_SAFE_NO_PAD.encode(b))
}

/// KeyBundle.
#[derive(Serialize)]
pub struct KeyBundle<'a> {
    key: JsonWebKey,
    attributes: KeyAttributes,
    #[serde(skip_serializing_if = "Option::is_none")]
    tags: Option<&'a BTreeMap<String, String>>,
    /// True for a key that backs a certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    managed: Option<bool>,
}

impl<'a> KeyBundle<'a> {
    /// A bundle for a key version.
    pub fn new(
        rec: &'a VersionRecord,
        meta: &KeyMeta,
        vault: &VaultRecord,
        urls: &VaultUrls,
    ) -> Self {
        let p = &meta.public;
        Self {
            key: JsonWebKey {
                kid: urls.versioned(COLLECTION, rec.name.as_str(), rec.version.as_str()),
                kty: p.kty.as_protected_str(meta.hsm),
                key_ops: meta.key_ops.clone(),
                n: b64(&p.n),
                e: b64(&p.e),
                crv: p.crv,
                x: b64(&p.x),
                y: b64(&p.y),
            },
            attributes: attributes(rec, vault),
            tags: (!rec.tags.is_empty()).then_some(&rec.tags),
            managed: rec.managed.then_some(true),
        }
    }
}

/// KeyItem (list entries).
#[derive(Serialize)]
pub struct KeyItem<'a> {
    kid: String,
    attributes: KeyAttributes,
    #[serde(skip_serializing_if = "Option::is_none")]
    tags: Option<&'a BTreeMap<String, String>>,
}

impl<'a> KeyItem<'a> {
    /// A list item: unversioned kid (list) or versioned (list versions).
    pub fn new(
        rec: &'a VersionRecord,
        vault: &VaultRecord,
        urls: &VaultUrls,
        versioned: bool,
    ) -> Self {
        let kid = if versioned {
            urls.versioned(COLLECTION, rec.name.as_str(), rec.version.as_str())
        } else {
            urls.unversioned(COLLECTION, rec.name.as_str())
        };
        Self {
            kid,
            attributes: attributes(rec, vault),
            tags: (!rec.tags.is_empty()).then_some(&rec.tags),
        }
    }
}

/// DeletedKeyBundle.
#[derive(Serialize)]
pub struct DeletedKeyBundle<'a> {
    #[serde(rename = "recoveryId")]
    recovery_id: String,
    #[serde(rename = "deletedDate")]
    deleted_date: i64,
    #[serde(rename = "scheduledPurgeDate")]
    scheduled_purge_date: i64,
    #[serde(flatten)]
    bundle: KeyBundle<'a>,
}

impl<'a> DeletedKeyBundle<'a> {
    /// A deleted key bundle.
    pub fn new(
        rec: &'a VersionRecord,
        meta: &KeyMeta,
        info: &DeletedInfo,
        vault: &VaultRecord,
        urls: &VaultUrls,
    ) -> Self {
        Self {
            recovery_id: urls.unversioned(DELETED_COLLECTION, rec.name.as_str()),
            deleted_date: info.deleted_date,
            scheduled_purge_date: info.scheduled_purge_date,
            bundle: KeyBundle::new(rec, meta, vault, urls),
        }
    }
}

/// DeletedKeyItem.
#[derive(Serialize)]
pub struct DeletedKeyItem<'a> {
    #[serde(rename = "recoveryId")]
    recovery_id: String,
    #[serde(rename = "deletedDate")]
    deleted_date: i64,
    #[serde(rename = "scheduledPurgeDate")]
    scheduled_purge_date: i64,
    #[serde(flatten)]
    item: KeyItem<'a>,
}

impl<'a> DeletedKeyItem<'a> {
    /// A deleted key list item.
    pub fn new(
        rec: &'a VersionRecord,
        info: &DeletedInfo,
        vault: &VaultRecord,
        urls: &VaultUrls,
    ) -> Self {
        Self {
            recovery_id: urls.unversioned(DELETED_COLLECTION, rec.name.as_str()),
            deleted_date: info.deleted_date,
            scheduled_purge_date: info.scheduled_purge_date,
            item: KeyItem::new(rec, vault, urls, false),
        }
    }
}

/// `POST /keys/{name}/{version}/sign` body.
#[derive(Deserialize)]
pub struct KeySignParameters {
    /// Algorithm.
    pub alg: Option<String>,
    /// The digest, base64url.
    pub value: Option<String>,
}

/// `POST /keys/{name}/{version}/verify` body.
#[derive(Deserialize)]
pub struct KeyVerifyParameters {
    /// Algorithm.
    pub alg: Option<String>,
    /// The digest, base64url.
    pub digest: Option<String>,
    /// The signature, base64url.
    pub value: Option<String>,
}

/// Decodes a required base64url field.
pub fn decode_field(v: Option<&str>, field: &str) -> Result<Vec<u8>, Error> {
    let v = v.ok_or_else(|| Error::BadParameter(format!("The '{field}' field is required.")))?;
    URL_SAFE_NO_PAD
        .decode(v.trim_end_matches('='))
        .map_err(|_| Error::BadParameter(format!("The '{field}' field is not valid base64url.")))
}

/// `{kid, value}`.
#[derive(Serialize)]
pub struct KeyOperationResult {
    kid: String,
    value: String,
}

impl KeyOperationResult {
    /// A result for the key version used.
    pub fn new(rec: &VersionRecord, urls: &VaultUrls, value: &[u8]) -> Self {
        Self {
            kid: urls.versioned(COLLECTION, rec.name.as_str(), rec.version.as_str()),
            value: URL_SAFE_NO_PAD.encode(value),
        }
    }
}

/// `{value: bool}`.
#[derive(Serialize)]
pub struct KeyVerifyResult {
    /// Whether the signature verified.
    pub value: bool,
}

/// `POST /keys/{name}/{version}/encrypt|decrypt|wrapkey|unwrapkey` body.
#[derive(Deserialize)]
pub struct KeyOperationsParameters {
    /// Algorithm.
    pub alg: Option<String>,
    /// The input, base64url.
    pub value: Option<String>,
    /// IV (AES-CBC; AES-GCM decrypt), base64url.
    pub iv: Option<String>,
    /// Additional authenticated data (AES-GCM), base64url.
    pub aad: Option<String>,
    /// Authentication tag (AES-GCM decrypt), base64url.
    pub tag: Option<String>,
}

/// The result of an AES operation: `kid`, `alg`, `value` and, as Azure's
/// managed HSM answers an encryption, `iv`, `tag` (GCM) and `aad` (echoed).
#[derive(Serialize)]
pub struct AesOperationResult {
    kid: String,
    alg: String,
    value: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    iv: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aad: Option<String>,
}

impl AesOperationResult {
    /// A result for the key version used.
    pub fn new(
        rec: &VersionRecord,
        urls: &VaultUrls,
        alg: &str,
        out: &keyhaven_core::key::AesOutput,
        aad: Option<&[u8]>,
    ) -> Self {
        Self {
            kid: urls.versioned(COLLECTION, rec.name.as_str(), rec.version.as_str()),
            alg: alg.to_owned(),
            value: URL_SAFE_NO_PAD.encode(out.value.expose()),
            iv: out.iv.as_deref().map(|v| URL_SAFE_NO_PAD.encode(v)),
            tag: out.tag.as_deref().map(|v| URL_SAFE_NO_PAD.encode(v)),
            aad: aad.map(|v| URL_SAFE_NO_PAD.encode(v)),
        }
    }
}

/// A JWK in an import request (private parts move into `Sensitive` at once).
#[derive(Deserialize)]
pub struct JsonWebKeyIn {
    kty: Option<String>,
    key_ops: Option<Vec<String>>,
    n: Option<String>,
    e: Option<String>,
    d: Option<String>,
    dp: Option<String>,
    dq: Option<String>,
    qi: Option<String>,
    p: Option<String>,
    q: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    k: Option<String>,
}

/// `PUT /keys/{name}` body.
#[derive(Deserialize)]
pub struct KeyImportParameters {
    key: Option<JsonWebKeyIn>,
    #[serde(rename = "Hsm")]
    hsm: Option<bool>,
    attributes: Option<KeyAttributesIn>,
    tags: Option<BTreeMap<String, String>>,
    release_policy: Option<serde_json::Value>,
}

fn opt_b64(v: Option<String>, field: &str) -> Result<Option<Vec<u8>>, Error> {
    v.map(|s| decode_field(Some(&s), field)).transpose()
}

fn secret_b64(
    v: Option<String>,
    field: &str,
) -> Result<Option<keyhaven_core::Sensitive<Vec<u8>>>, Error> {
    let v = v.map(keyhaven_core::Sensitive::new);
    v.map(|s| decode_field(Some(s.expose()), field).map(keyhaven_core::Sensitive::new))
        .transpose()
}

/// A parsed import: the key, its operations, tags, attributes and whether it
/// goes into the HSM (`"Hsm": true` or an `-HSM` kty).
pub type KeyImport = (
    keyhaven_core::key::PrivateJwk,
    Option<Vec<String>>,
    Option<BTreeMap<String, String>>,
    keyhaven_core::object::AttributesPatch,
    bool,
);

impl KeyImportParameters {
    /// Parses and decodes the request.
    pub fn into_import(self) -> Result<KeyImport, Error> {
        let k = self
            .key
            .ok_or_else(|| Error::BadParameter("The key (key) is required.".into()))?;
        let (kty, hsm_kty) = KeyType::parse_protected(
            k.kty
                .as_deref()
                .ok_or_else(|| Error::BadParameter("The key type (kty) is required.".into()))?,
        )?;
        let crv = k.crv.as_deref().map(Curve::parse).transpose()?;
        let jwk = keyhaven_core::key::PrivateJwk {
            kty,
            n: opt_b64(k.n, "n")?,
            e: opt_b64(k.e, "e")?,
            d: secret_b64(k.d, "d")?,
            p: secret_b64(k.p, "p")?,
            q: secret_b64(k.q, "q")?,
            dp: secret_b64(k.dp, "dp")?,
            dq: secret_b64(k.dq, "dq")?,
            qi: secret_b64(k.qi, "qi")?,
            crv,
            x: opt_b64(k.x, "x")?,
            y: opt_b64(k.y, "y")?,
            k: secret_b64(k.k, "k")?,
        };
        Ok((
            jwk,
            k.key_ops,
            self.tags,
            KeyAttributesIn::checked(self.attributes, self.release_policy.as_ref())?,
            hsm_kty || self.hsm == Some(true),
        ))
    }
}

/// `PATCH /keys/{name}/{version}` body.
#[derive(Deserialize)]
pub struct KeyUpdateParameters {
    key_ops: Option<Vec<String>>,
    attributes: Option<KeyAttributesIn>,
    tags: Option<BTreeMap<String, String>>,
    release_policy: Option<serde_json::Value>,
}

impl TryFrom<KeyUpdateParameters> for keyhaven_core::key::KeyUpdate {
    type Error = Error;

    fn try_from(p: KeyUpdateParameters) -> Result<Self, Error> {
        Ok(Self {
            attributes: KeyAttributesIn::checked(p.attributes, p.release_policy.as_ref())?,
            tags: p.tags,
            key_ops: p.key_ops,
        })
    }
}

/// `POST /rng` body.
#[derive(Deserialize)]
pub struct GetRandomBytesRequest {
    /// How many bytes (1–128).
    pub count: Option<i64>,
}

/// `POST /rng` response.
#[derive(Serialize)]
pub struct RandomBytes {
    value: String,
}

impl RandomBytes {
    /// Encodes random bytes.
    pub fn new(bytes: &[u8]) -> Self {
        Self {
            value: URL_SAFE_NO_PAD.encode(bytes),
        }
    }
}

/// `KeyRestoreParameters`: `{"value": "<base64url backup blob>"}`, the same
/// shape as a secret restore.
pub type KeyRestoreParameters = crate::secret::SecretRestoreParameters;

/// `BackupKeyResult`: `{"value": "<base64url backup blob>"}`.
pub type BackupKeyResult = crate::secret::BackupSecretResult;
