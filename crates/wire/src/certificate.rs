//! Certificate shapes: CertificatePolicy (snake_case inside, as Azure writes
//! it), CertificateBundle/Item, DeletedCertificateBundle/Item and
//! CertificateOperation. `cer` and `csr` are standard base64; `x5t` is
//! base64url.

use std::collections::BTreeMap;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use keyhaven_core::certificate::{
    CertificateAction, CertificateCreate, CertificateImport, CertificateMerge, CertificateMeta,
    CertificateOperation, CertificateTrigger, PlatformManaged, PolicyInput, StoredPolicy,
};
use keyhaven_core::object::{DeletedInfo, VersionRecord};
use keyhaven_core::{Error, VaultRecord};
use serde::{Deserialize, Serialize};

use crate::secret::{AttributesIn, AttributesOut};
use crate::urls::VaultUrls;

const COLLECTION: &str = "certificates";
const DELETED_COLLECTION: &str = "deletedcertificates";

#[derive(Serialize, Deserialize, Default)]
struct KeyProps {
    #[serde(skip_serializing_if = "Option::is_none")]
    exportable: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kty: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_size: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reuse_key: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    crv: Option<String>,
}

#[derive(Serialize, Deserialize, Default)]
struct SecretProps {
    #[serde(rename = "contentType", skip_serializing_if = "Option::is_none")]
    content_type: Option<String>,
}

#[derive(Serialize, Deserialize, Default)]
struct Sans {
    #[serde(skip_serializing_if = "Option::is_none")]
    emails: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dns_names: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    upns: Option<Vec<String>>,
    #[serde(rename = "ipAddresses", skip_serializing_if = "Option::is_none")]
    ip_addresses: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uris: Option<Vec<String>>,
}

#[derive(Serialize, Deserialize, Default)]
struct X509Props {
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ekus: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sans: Option<Sans>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_usage: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    validity_months: Option<u32>,
}

#[derive(Serialize, Deserialize, Default)]
struct Trigger {
    #[serde(skip_serializing_if = "Option::is_none")]
    lifetime_percentage: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    days_before_expiry: Option<u32>,
}

#[derive(Serialize, Deserialize, Default)]
struct Action {
    #[serde(skip_serializing_if = "Option::is_none")]
    action_type: Option<String>,
}

#[derive(Serialize, Deserialize, Default)]
struct LifetimeAction {
    #[serde(default)]
    trigger: Option<Trigger>,
    #[serde(default)]
    action: Option<Action>,
}

#[derive(Serialize, Deserialize, Default)]
struct IssuerParameters {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cty: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cert_transparency: Option<bool>,
}

#[derive(Serialize, Deserialize, Default)]
struct PolicyAttributes {
    #[serde(skip_serializing_if = "Option::is_none")]
    enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none", skip_deserializing)]
    created: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", skip_deserializing)]
    updated: Option<i64>,
}

/// CertificatePolicy, in and out.
#[derive(Serialize, Deserialize, Default)]
pub struct CertificatePolicy {
    #[serde(skip_serializing_if = "Option::is_none", skip_deserializing)]
    id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key_props: Option<KeyProps>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret_props: Option<SecretProps>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    x509_props: Option<X509Props>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lifetime_actions: Option<Vec<LifetimeAction>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    issuer: Option<IssuerParameters>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    attributes: Option<PolicyAttributes>,
    #[serde(
        rename = "platformManaged",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    platform_managed: Option<PlatformManagedProps>,
}

/// `platformManaged` (api-version 2026-04-01).
#[derive(Serialize, Deserialize, Default)]
struct PlatformManagedProps {
    #[serde(rename = "certificateUsage", default)]
    certificate_usage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    metadata: Option<serde_json::Value>,
}

impl From<CertificatePolicy> for PolicyInput {
    fn from(p: CertificatePolicy) -> Self {
        let k = p.key_props.unwrap_or_default();
        let x = p.x509_props.unwrap_or_default();
        let sans = x.sans;
        let issuer = p.issuer.unwrap_or_default();
        Self {
            kty: k.kty,
            key_size: k.key_size,
            curve: k.crv,
            exportable: k.exportable,
            reuse_key: k.reuse_key,
            content_type: p.secret_props.and_then(|s| s.content_type),
            subject: x.subject,
            // Replacing the SAN object replaces all its lists.
            dns_names: sans
                .as_ref()
                .map(|s| s.dns_names.clone().unwrap_or_default()),
            emails: sans.as_ref().map(|s| s.emails.clone().unwrap_or_default()),
            upns: sans.as_ref().map(|s| s.upns.clone().unwrap_or_default()),
            ip_addresses: sans
                .as_ref()
                .map(|s| s.ip_addresses.clone().unwrap_or_default()),
            uris: sans.as_ref().map(|s| s.uris.clone().unwrap_or_default()),
            ekus: x.ekus,
            key_usage: x.key_usage,
            validity_months: x.validity_months,
            lifetime_actions: p.lifetime_actions.map(|list| {
                list.into_iter()
                    .map(|a| {
                        let t = a.trigger.unwrap_or_default();
                        (
                            t.lifetime_percentage,
                            t.days_before_expiry,
                            a.action.and_then(|x| x.action_type),
                        )
                    })
                    .collect()
            }),
            issuer: issuer.name,
            cty: issuer.cty,
            cert_transparency: issuer.cert_transparency,
            enabled: p.attributes.and_then(|a| a.enabled),
            platform_managed: p.platform_managed.map(|m| PlatformManaged {
                certificate_usage: m.certificate_usage.unwrap_or_default(),
                metadata: m.metadata,
            }),
        }
    }
}

fn non_empty(v: &[String]) -> Option<Vec<String>> {
    (!v.is_empty()).then(|| v.to_vec())
}

impl CertificatePolicy {
    /// The wire form of a stored policy of certificate `name`.
    pub fn new(stored: &StoredPolicy, name: &str, urls: &VaultUrls) -> Self {
        let p = &stored.policy;
        let sans = p.has_sans().then(|| Sans {
            emails: non_empty(&p.emails),
            dns_names: non_empty(&p.dns_names),
            upns: non_empty(&p.upns),
            ip_addresses: non_empty(&p.ip_addresses),
            uris: non_empty(&p.uris),
        });
        Self {
            id: Some(format!("{}/policy", urls.unversioned(COLLECTION, name))),
            key_props: Some(KeyProps {
                exportable: Some(p.exportable),
                kty: Some(p.kty.as_str().to_owned()),
                // Azure reports an EC policy's size as its curve's.
                key_size: p.key_size.or(p.curve.map(|c| c.bits())),
                reuse_key: Some(p.reuse_key),
                crv: p.curve.map(|c| c.as_str().to_owned()),
            }),
            secret_props: Some(SecretProps {
                content_type: Some(p.format.content_type().to_owned()),
            }),
            x509_props: Some(X509Props {
                subject: Some(p.subject.clone()),
                ekus: Some(p.ekus.clone()),
                sans,
                key_usage: Some(p.key_usage.clone()),
                validity_months: Some(p.validity_months),
            }),
            lifetime_actions: Some(
                p.lifetime_actions
                    .iter()
                    .map(|a| LifetimeAction {
                        trigger: Some(match a.trigger {
                            CertificateTrigger::LifetimePercentage(n) => Trigger {
                                lifetime_percentage: Some(n),
                                days_before_expiry: None,
                            },
                            CertificateTrigger::DaysBeforeExpiry(n) => Trigger {
                                lifetime_percentage: None,
                                days_before_expiry: Some(n),
                            },
                        }),
                        action: Some(Action {
                            action_type: Some(
                                match a.action {
                                    CertificateAction::AutoRenew => "AutoRenew",
                                    CertificateAction::EmailContacts => "EmailContacts",
                                }
                                .to_owned(),
                            ),
                        }),
                    })
                    .collect(),
            ),
            issuer: Some(IssuerParameters {
                name: Some(p.issuer.clone()),
                cty: p.cty.clone(),
                cert_transparency: p.cert_transparency,
            }),
            attributes: Some(PolicyAttributes {
                enabled: Some(p.enabled),
                created: Some(stored.times.0),
                updated: Some(stored.times.1),
            }),
            platform_managed: p.platform_managed.as_ref().map(|m| PlatformManagedProps {
                certificate_usage: Some(m.certificate_usage.clone()),
                metadata: m.metadata.clone(),
            }),
        }
    }
}

/// `POST /certificates/{name}/create` body.
#[derive(Deserialize)]
pub struct CertificateCreateParameters {
    policy: Option<CertificatePolicy>,
    attributes: Option<AttributesIn>,
    tags: Option<BTreeMap<String, String>>,
    #[serde(rename = "preserveCertOrder")]
    preserve_cert_order: Option<bool>,
}

impl From<CertificateCreateParameters> for CertificateCreate {
    fn from(p: CertificateCreateParameters) -> Self {
        Self {
            policy: p.policy.map(Into::into),
            attributes: p.attributes.map(Into::into).unwrap_or_default(),
            tags: p.tags,
            preserve_order: p.preserve_cert_order.unwrap_or(false),
        }
    }
}

/// `PATCH /certificates/{name}/{version}` body.
#[derive(Deserialize)]
pub struct CertificateUpdateParameters {
    /// Attributes (enabled).
    pub attributes: Option<AttributesIn>,
    /// Tags.
    pub tags: Option<BTreeMap<String, String>>,
    /// A policy to apply as well (optional).
    pub policy: Option<CertificatePolicy>,
}

/// CertificateBundle (and CertificateItem, without `kid`/`sid`/`cer`/`policy`).
#[derive(Serialize)]
pub struct CertificateBundle<'a> {
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    kid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sid: Option<String>,
    x5t: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    cer: Option<String>,
    #[serde(rename = "contentType", skip_serializing_if = "Option::is_none")]
    content_type: Option<&'a str>,
    attributes: AttributesOut,
    #[serde(skip_serializing_if = "Option::is_none")]
    tags: Option<&'a BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    policy: Option<CertificatePolicy>,
    #[serde(rename = "preserveCertOrder", skip_serializing_if = "Option::is_none")]
    preserve_cert_order: Option<bool>,
}

impl<'a> CertificateBundle<'a> {
    /// The full bundle of a version (with the policy when given).
    pub fn new(
        rec: &'a VersionRecord,
        meta: &'a CertificateMeta,
        policy: Option<&StoredPolicy>,
        vault: &VaultRecord,
        urls: &VaultUrls,
    ) -> Self {
        let (name, version) = (rec.name.as_str(), rec.version.as_str());
        Self {
            id: urls.versioned(COLLECTION, name, version),
            kid: Some(urls.versioned("keys", name, version)),
            sid: Some(urls.versioned("secrets", name, version)),
            x5t: URL_SAFE_NO_PAD.encode(&meta.x5t),
            cer: Some(STANDARD.encode(meta.cer())),
            content_type: Some(&meta.content_type),
            attributes: AttributesOut::new(rec, vault),
            // Empty tags are left out, in bundles and list items alike.
            tags: (!rec.tags.is_empty()).then_some(&rec.tags),
            policy: policy.map(|p| CertificatePolicy::new(p, name, urls)),
            preserve_cert_order: meta.preserve_order.then_some(true),
        }
    }

    /// A list item: unversioned id (list) or versioned (list versions).
    pub fn item(
        rec: &'a VersionRecord,
        vault: &VaultRecord,
        urls: &VaultUrls,
        versioned: bool,
    ) -> Result<Self, Error> {
        let meta = keyhaven_core::certificate::meta_of(rec)?;
        let (name, version) = (rec.name.as_str(), rec.version.as_str());
        Ok(Self {
            id: if versioned {
                urls.versioned(COLLECTION, name, version)
            } else {
                urls.unversioned(COLLECTION, name)
            },
            kid: None,
            sid: None,
            x5t: URL_SAFE_NO_PAD.encode(&meta.x5t),
            cer: None,
            content_type: None,
            attributes: AttributesOut::new(rec, vault),
            tags: (!rec.tags.is_empty()).then_some(&rec.tags),
            policy: None,
            preserve_cert_order: meta.preserve_order.then_some(true),
        })
    }
}

/// DeletedCertificateBundle / DeletedCertificateItem.
#[derive(Serialize)]
pub struct DeletedCertificateBundle<'a> {
    #[serde(rename = "recoveryId")]
    recovery_id: String,
    #[serde(rename = "deletedDate")]
    deleted_date: i64,
    #[serde(rename = "scheduledPurgeDate")]
    scheduled_purge_date: i64,
    #[serde(flatten)]
    bundle: CertificateBundle<'a>,
}

impl<'a> DeletedCertificateBundle<'a> {
    /// Wraps a bundle or item with its deletion info.
    pub fn new(
        bundle: CertificateBundle<'a>,
        rec: &VersionRecord,
        info: &DeletedInfo,
        urls: &VaultUrls,
    ) -> Self {
        Self {
            recovery_id: urls.unversioned(DELETED_COLLECTION, rec.name.as_str()),
            deleted_date: info.deleted_date,
            scheduled_purge_date: info.scheduled_purge_date,
            bundle,
        }
    }
}

#[derive(Serialize)]
struct IssuerRef {
    name: String,
}

/// CertificateOperation.
#[derive(Serialize)]
pub struct CertificateOperationOut {
    id: String,
    issuer: IssuerRef,
    csr: Option<String>,
    cancellation_requested: bool,
    status: &'static str,
    status_details: Option<String>,
    target: String,
    request_id: String,
}

impl CertificateOperationOut {
    /// The wire form of `op` on certificate `name`.
    pub fn new(op: &CertificateOperation, name: &str, urls: &VaultUrls) -> Self {
        Self {
            id: format!("{}/pending", urls.unversioned(COLLECTION, name)),
            issuer: IssuerRef {
                name: op.issuer.clone(),
            },
            csr: op.csr.as_ref().map(|c| STANDARD.encode(c)),
            cancellation_requested: op.cancellation_requested,
            status: op.status.as_str(),
            status_details: op.status_details().map(str::to_owned),
            target: urls.unversioned(COLLECTION, name),
            request_id: op.request_id.clone(),
        }
    }
}

/// `POST /certificates/{name}/import` body.
#[derive(Deserialize)]
pub struct CertificateImportParameters {
    value: Option<String>,
    pwd: Option<String>,
    policy: Option<CertificatePolicy>,
    attributes: Option<AttributesIn>,
    tags: Option<BTreeMap<String, String>>,
    #[serde(rename = "preserveCertOrder")]
    preserve_cert_order: Option<bool>,
}

impl TryFrom<CertificateImportParameters> for CertificateImport {
    type Error = Error;

    fn try_from(p: CertificateImportParameters) -> Result<Self, Error> {
        let value = keyhaven_core::Sensitive::new(p.value.ok_or_else(|| {
            Error::BadParameter("The certificate value (value) is required.".into())
        })?);
        Ok(Self {
            value,
            password: p.pwd.map(keyhaven_core::Sensitive::new),
            policy: p.policy.map(Into::into),
            attributes: p.attributes.map(Into::into).unwrap_or_default(),
            tags: p.tags,
            preserve_order: p.preserve_cert_order.unwrap_or(false),
        })
    }
}

/// `POST /certificates/{name}/pending/merge` body.
#[derive(Deserialize)]
pub struct CertificateMergeParameters {
    x5c: Option<Vec<String>>,
    attributes: Option<AttributesIn>,
    tags: Option<BTreeMap<String, String>>,
}

impl TryFrom<CertificateMergeParameters> for CertificateMerge {
    type Error = Error;

    fn try_from(p: CertificateMergeParameters) -> Result<Self, Error> {
        let x5c = p
            .x5c
            .unwrap_or_default()
            .iter()
            .map(|c| x5c_entry(c))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            x5c,
            attributes: p.attributes.map(Into::into).unwrap_or_default(),
            tags: p.tags,
        })
    }
}

/// One `x5c` entry: base64 of the DER certificate. Azure also takes base64
/// of the certificate's base64 text (PEM armour optional), which is what
/// the SDK sends when given PEM text as bytes: decoded twice here.
fn x5c_entry(entry: &str) -> Result<Vec<u8>, Error> {
    let bad = || Error::BadParameter("x5c entries must be base64 DER certificates.".into());
    let once = STANDARD.decode(entry.trim()).map_err(|_| bad())?;
    if once.first() == Some(&0x30) {
        return Ok(once);
    }
    let text = std::str::from_utf8(&once).map_err(|_| bad())?;
    let body: String = text
        .replace("-----BEGIN CERTIFICATE-----", "")
        .replace("-----END CERTIFICATE-----", "")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    STANDARD.decode(body).map_err(|_| bad())
}

/// `PATCH /certificates/{name}/pending` body.
#[derive(Deserialize)]
pub struct CertificateOperationUpdateParameter {
    /// Must be true.
    pub cancellation_requested: Option<bool>,
}

#[derive(Serialize, Deserialize, Default)]
struct IssuerCredentials {
    #[serde(skip_serializing_if = "Option::is_none")]
    account_id: Option<String>,
    #[serde(skip_serializing)]
    pwd: Option<String>,
}

#[derive(Serialize, Deserialize, Default)]
struct AdminDetails {
    #[serde(skip_serializing_if = "Option::is_none")]
    first_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    phone: Option<String>,
}

#[derive(Serialize, Deserialize, Default)]
struct OrgDetails {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    admin_details: Option<Vec<AdminDetails>>,
}

/// `PUT|PATCH /certificates/issuers/{name}` body.
#[derive(Deserialize)]
pub struct CertificateIssuerParameters {
    provider: Option<String>,
    credentials: Option<IssuerCredentials>,
    org_details: Option<OrgDetails>,
    attributes: Option<PolicyAttributes>,
}

impl From<CertificateIssuerParameters> for keyhaven_core::issuer::IssuerInput {
    fn from(p: CertificateIssuerParameters) -> Self {
        let creds = p.credentials.unwrap_or_default();
        let org = p.org_details;
        Self {
            provider: p.provider,
            account_id: creds.account_id,
            password: creds.pwd.map(keyhaven_core::Sensitive::new),
            organization_id: org.as_ref().and_then(|o| o.id.clone()),
            admins: org.and_then(|o| o.admin_details).map(|list| {
                list.into_iter()
                    .map(|a| keyhaven_core::issuer::AdminContact {
                        first_name: a.first_name,
                        last_name: a.last_name,
                        email: a.email,
                        phone: a.phone,
                    })
                    .collect()
            }),
            enabled: p.attributes.and_then(|a| a.enabled),
        }
    }
}

/// IssuerBundle (the password is never returned).
#[derive(Serialize)]
pub struct IssuerBundle {
    id: String,
    provider: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    credentials: Option<IssuerCredentials>,
    #[serde(skip_serializing_if = "Option::is_none")]
    org_details: Option<OrgDetails>,
    attributes: PolicyAttributes,
}

fn issuer_id(urls: &VaultUrls, name: &str) -> String {
    format!("{}/{name}", urls.unversioned(COLLECTION, "issuers"))
}

impl IssuerBundle {
    /// The wire form of an issuer.
    pub fn new(i: &keyhaven_core::issuer::Issuer, urls: &VaultUrls) -> Self {
        Self {
            id: issuer_id(urls, &i.name),
            provider: i.provider.clone(),
            credentials: i.account_id.as_ref().map(|a| IssuerCredentials {
                account_id: Some(a.clone()),
                pwd: None,
            }),
            org_details: (i.organization_id.is_some() || i.admins.is_some()).then(|| OrgDetails {
                id: i.organization_id.clone(),
                admin_details: i.admins.as_ref().map(|list| {
                    list.iter()
                        .map(|a| AdminDetails {
                            first_name: a.first_name.clone(),
                            last_name: a.last_name.clone(),
                            email: a.email.clone(),
                            phone: a.phone.clone(),
                        })
                        .collect()
                }),
            }),
            attributes: PolicyAttributes {
                enabled: Some(i.enabled),
                created: Some(i.created),
                updated: Some(i.updated),
            },
        }
    }
}

/// CertificateIssuerItem.
#[derive(Serialize)]
pub struct IssuerItem {
    id: String,
    provider: String,
}

impl IssuerItem {
    /// The list form of an issuer.
    pub fn new(i: &keyhaven_core::issuer::Issuer, urls: &VaultUrls) -> Self {
        Self {
            id: issuer_id(urls, &i.name),
            provider: i.provider.clone(),
        }
    }
}

#[derive(Serialize, Deserialize, Default)]
struct ContactWire {
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    phone: Option<String>,
}

/// Contacts, in and out.
#[derive(Serialize, Deserialize)]
pub struct Contacts {
    #[serde(skip_serializing_if = "Option::is_none", skip_deserializing)]
    id: Option<String>,
    #[serde(default)]
    contacts: Option<Vec<ContactWire>>,
}

impl Contacts {
    /// The wire form of the vault's contacts.
    pub fn new(list: &[keyhaven_core::issuer::Contact], urls: &VaultUrls) -> Self {
        Self {
            id: Some(urls.unversioned(COLLECTION, "contacts")),
            contacts: Some(
                list.iter()
                    .map(|c| ContactWire {
                        email: c.email.clone(),
                        name: c.name.clone(),
                        phone: c.phone.clone(),
                    })
                    .collect(),
            ),
        }
    }

    /// The caller's contacts.
    pub fn into_contacts(self) -> Vec<keyhaven_core::issuer::Contact> {
        self.contacts
            .unwrap_or_default()
            .into_iter()
            .map(|c| keyhaven_core::issuer::Contact {
                email: c.email,
                name: c.name,
                phone: c.phone,
            })
            .collect()
    }
}
