//! Certificates: a certificate version binds an X.509 certificate to a key and
//! a secret of the same name and the same version id, both `managed`. The key
//! holds the private material (it signs and decrypts like any key); the secret
//! holds the certificate with its chain — and the private key when the policy
//! says it is exportable — as PKCS#12 or PEM. The policy and the latest
//! creation operation live in the object's policy record.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::auth::{Authorized, Operation};
use crate::error::{Error, Result};
use crate::ids::{ObjectName, Version};
use crate::key::{sealed_id, Curve, KeyMeta, KeySpec, KeyType, PublicKey, SealedPrivate};
use crate::object::{
    validate_tags, Attributes, AttributesPatch, DeletedInfo, ObjectKind, Page, VersionRecord,
};
use crate::sensitive::Sensitive;
use crate::service::VaultService;
use crate::store::{PolicyChange, PolicyRecord};
use crate::vault::VaultRecord;

const KIND: ObjectKind = ObjectKind::Certificate;
/// A version to issue now: its id, attributes, and the state change that
/// goes in its transaction.
struct Issue<'a> {
    version: Version,
    enabled: bool,
    tags: BTreeMap<String, String>,
    /// `preserveCertOrder`: the chain keeps the order it was issued in.
    preserve_order: bool,
    state: Option<&'a PolicyChange>,
}

/// The objects a certificate version owns, sharing its name and version.
const COMPANIONS: [ObjectKind; 2] = [ObjectKind::Key, ObjectKind::Secret];
/// The certificate and its companions: what delete, recover and purge change
/// together, in one transaction.
const WITH_COMPANIONS: [ObjectKind; 3] = [KIND, ObjectKind::Key, ObjectKind::Secret];

/// Format of a certificate's secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SecretFormat {
    /// `application/x-pkcs12`: base64 PFX with an empty password.
    Pkcs12,
    /// `application/x-pem-file`: PEM private key then certificates.
    Pem,
}

impl SecretFormat {
    /// Parses a content type.
    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "application/x-pkcs12" => Ok(Self::Pkcs12),
            "application/x-pem-file" => Ok(Self::Pem),
            _ => Err(Error::BadParameter(format!(
                "The content type '{}' is invalid: use application/x-pkcs12 or application/x-pem-file.",
                s.chars().take(40).collect::<String>()
            ))),
        }
    }

    /// The content type.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Pkcs12 => "application/x-pkcs12",
            Self::Pem => "application/x-pem-file",
        }
    }
}

/// What a lifetime action does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CertificateAction {
    /// Renew the certificate (new version).
    AutoRenew,
    /// Tell the contacts.
    EmailContacts,
}

/// When a certificate lifetime action fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CertificateTrigger {
    /// At this percentage (1–99) of the validity period.
    LifetimePercentage(u32),
    /// This many days before expiry.
    DaysBeforeExpiry(u32),
}

/// One certificate lifetime action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateLifetimeAction {
    /// When.
    pub trigger: CertificateTrigger,
    /// What.
    pub action: CertificateAction,
}

/// A certificate policy, complete (defaults applied) and validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificatePolicy {
    /// Key type.
    pub kty: KeyType,
    /// RSA size.
    pub key_size: Option<u32>,
    /// EC curve.
    pub curve: Option<Curve>,
    /// Whether the secret carries the private key.
    pub exportable: bool,
    /// Whether renewal keeps the key.
    pub reuse_key: bool,
    /// Secret format.
    pub format: SecretFormat,
    /// Subject distinguished name, e.g. `CN=example.com, O=Contoso`.
    pub subject: String,
    /// DNS names.
    pub dns_names: Vec<String>,
    /// Email addresses.
    pub emails: Vec<String>,
    /// User principal names.
    pub upns: Vec<String>,
    /// IP addresses (IPv4 or IPv6).
    #[serde(default)]
    pub ip_addresses: Vec<String>,
    /// URIs.
    #[serde(default)]
    pub uris: Vec<String>,
    /// Extended key usages (OIDs).
    pub ekus: Vec<String>,
    /// Key usages (Azure's names).
    pub key_usage: Vec<String>,
    /// Validity in months.
    pub validity_months: u32,
    /// Lifetime actions (at most one).
    pub lifetime_actions: Vec<CertificateLifetimeAction>,
    /// Issuer name: `Self`, `Unknown` or a configured issuer.
    pub issuer: String,
    /// Certificate type for the issuer.
    pub cty: Option<String>,
    /// Certificate transparency flag for the issuer.
    pub cert_transparency: Option<bool>,
    /// Whether new versions are enabled.
    pub enabled: bool,
    /// `platformManaged` (api-version 2026-04-01).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_managed: Option<PlatformManaged>,
}

/// `platformManaged`: on Azure the platform issues such a certificate
/// itself. Keyhaven keeps the policy (a usage and opaque metadata) and, as
/// it cannot reach that issuer, leaves the request pending for a merge like
/// issuer `Unknown`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformManaged {
    /// `certificateUsage`, e.g. `PublicTLSServerAuth`.
    pub certificate_usage: String,
    /// `metadata`: a JSON object whose schema Azure leaves undefined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
}

/// Largest `platformManaged.metadata`, serialised.
const MAX_PLATFORM_METADATA: usize = 16 * 1024;

/// A caller's lifetime action: (lifetime percentage, days before expiry, action type).
pub type LifetimeActionInput = (Option<u32>, Option<u32>, Option<String>);

/// A caller's (partial) policy: what is absent keeps its current or default value.
#[derive(Debug, Clone, Default)]
pub struct PolicyInput {
    /// Key type (`RSA`, `EC`).
    pub kty: Option<String>,
    /// RSA size.
    pub key_size: Option<u32>,
    /// Curve.
    pub curve: Option<String>,
    /// Exportable.
    pub exportable: Option<bool>,
    /// Reuse key on renewal.
    pub reuse_key: Option<bool>,
    /// Secret content type.
    pub content_type: Option<String>,
    /// Subject.
    pub subject: Option<String>,
    /// DNS names (`None` keeps, `Some` replaces).
    pub dns_names: Option<Vec<String>>,
    /// Emails.
    pub emails: Option<Vec<String>>,
    /// UPNs.
    pub upns: Option<Vec<String>>,
    /// IP addresses.
    pub ip_addresses: Option<Vec<String>>,
    /// URIs.
    pub uris: Option<Vec<String>>,
    /// EKUs.
    pub ekus: Option<Vec<String>>,
    /// Key usages.
    pub key_usage: Option<Vec<String>>,
    /// Validity in months.
    pub validity_months: Option<u32>,
    /// Lifetime actions: (percentage, days before expiry, action type).
    pub lifetime_actions: Option<Vec<LifetimeActionInput>>,
    /// Issuer name.
    pub issuer: Option<String>,
    /// Issuer certificate type.
    pub cty: Option<String>,
    /// Certificate transparency.
    pub cert_transparency: Option<bool>,
    /// Enabled.
    pub enabled: Option<bool>,
    /// `platformManaged`.
    pub platform_managed: Option<PlatformManaged>,
}

const KEY_USAGES: &[&str] = &[
    "digitalSignature",
    "nonRepudiation",
    "keyEncipherment",
    "dataEncipherment",
    "keyAgreement",
    "keyCertSign",
    "cRLSign",
    "encipherOnly",
    "decipherOnly",
];
const SERVER_AUTH: &str = "1.3.6.1.5.5.7.3.1";
const CLIENT_AUTH: &str = "1.3.6.1.5.5.7.3.2";
const MAX_SANS: usize = 100;

fn bad(msg: impl Into<String>) -> Error {
    Error::BadParameter(msg.into())
}

fn is_oid(s: &str) -> bool {
    let parts: Vec<_> = s.split('.').collect();
    parts.len() >= 2
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 10 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// An absolute URI as a SAN holds it: a scheme (RFC 3986: a letter, then
/// letters, digits, `+`, `-`, `.`), a colon, and no whitespace or controls.
fn is_uri(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once(':') else {
        return false;
    };
    s.len() <= 2048
        && !rest.is_empty()
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

impl CertificatePolicy {
    /// True if the policy names any subject alternative name.
    pub fn has_sans(&self) -> bool {
        !(self.dns_names.is_empty()
            && self.emails.is_empty()
            && self.upns.is_empty()
            && self.ip_addresses.is_empty()
            && self.uris.is_empty())
    }

    /// Applies `input` over `base` (or Azure's defaults) and validates.
    pub fn merged(base: Option<&Self>, input: PolicyInput) -> Result<Self> {
        let kty = match input.kty.as_deref() {
            Some(k) => KeyType::parse(k)?,
            None => base.map_or(KeyType::Rsa, |b| b.kty),
        };
        let kty_changed = base.is_some_and(|b| b.kty != kty);
        let (key_size, curve) = match kty {
            KeyType::Oct => return Err(bad("A certificate's key is RSA or EC.")),
            KeyType::Rsa => {
                if input.curve.is_some() {
                    return Err(bad("A curve is not valid for RSA keys."));
                }
                let size = input
                    .key_size
                    .or_else(|| base.filter(|_| !kty_changed).and_then(|b| b.key_size))
                    .unwrap_or(2048);
                if ![2048, 3072, 4096].contains(&size) {
                    return Err(bad("RSA key size must be 2048, 3072 or 4096."));
                }
                (Some(size), None)
            }
            KeyType::Ec => {
                if input
                    .key_size
                    .is_some_and(|s| ![256, 384, 521].contains(&s))
                {
                    return Err(bad("key_size is not valid for this curve."));
                }
                let curve = match input.curve.as_deref() {
                    Some(c) => Curve::parse(c)?,
                    None => base
                        .filter(|_| !kty_changed)
                        .and_then(|b| b.curve)
                        .unwrap_or(match input.key_size {
                            Some(384) => Curve::P384,
                            Some(521) => Curve::P521,
                            _ => Curve::P256,
                        }),
                };
                if input.key_size.is_some_and(|s| s != curve.bits()) {
                    return Err(bad("key_size is not valid for this curve."));
                }
                (Some(curve.bits()), Some(curve))
            }
        };
        let format = match input.content_type.as_deref() {
            Some(c) => SecretFormat::parse(c)?,
            None => base.map_or(SecretFormat::Pkcs12, |b| b.format),
        };
        let pick = |v: Option<Vec<String>>, old: Option<&Vec<String>>| {
            v.or_else(|| old.cloned()).unwrap_or_default()
        };
        let subject = input
            .subject
            .or_else(|| base.map(|b| b.subject.clone()))
            .unwrap_or_default();
        let dns_names = pick(input.dns_names, base.map(|b| &b.dns_names));
        let emails = pick(input.emails, base.map(|b| &b.emails));
        let upns = pick(input.upns, base.map(|b| &b.upns));
        let ip_addresses = pick(input.ip_addresses, base.map(|b| &b.ip_addresses));
        let uris = pick(input.uris, base.map(|b| &b.uris));
        let san_count =
            dns_names.len() + emails.len() + upns.len() + ip_addresses.len() + uris.len();
        let platform_managed = input
            .platform_managed
            .or_else(|| base.and_then(|b| b.platform_managed.clone()));
        if let Some(m) = &platform_managed {
            let usage = m.certificate_usage.trim();
            if usage.is_empty() || usage.len() > 128 {
                return Err(bad(
                    "platformManaged.certificateUsage is required (at most 128 characters).",
                ));
            }
            if let Some(meta) = &m.metadata {
                if !meta.is_object() || meta.to_string().len() > MAX_PLATFORM_METADATA {
                    return Err(bad(
                        "platformManaged.metadata must be a JSON object of at most 16 KB.",
                    ));
                }
            }
        }
        let issuer = input
            .issuer
            .or_else(|| base.map(|b| b.issuer.clone()))
            .unwrap_or_else(|| "Unknown".into());
        let issuer = if issuer.eq_ignore_ascii_case("self") {
            "Self".to_owned()
        } else if issuer.eq_ignore_ascii_case("unknown") {
            "Unknown".to_owned()
        } else {
            issuer
        };
        let pending_platform = platform_managed.is_some() && issuer == "Unknown";
        if subject.trim().is_empty() && san_count == 0 && !pending_platform {
            return Err(bad(
                "The policy needs a subject or at least one subject alternative name.",
            ));
        }
        if subject.len() > 1024 || san_count > MAX_SANS {
            return Err(bad(
                "The subject or subject alternative names are too long.",
            ));
        }
        for d in &dns_names {
            let ok = !d.is_empty()
                && d.len() <= 253
                && d.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && (l == "*" || l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
                });
            if !ok {
                return Err(bad(format!(
                    "'{}' is not a valid DNS name.",
                    d.chars().take(64).collect::<String>()
                )));
            }
        }
        for e in emails.iter().chain(&upns) {
            if !e.contains('@') || e.len() > 256 || e.chars().any(char::is_whitespace) {
                return Err(bad(format!(
                    "'{}' is not a valid email address or user principal name.",
                    e.chars().take(64).collect::<String>()
                )));
            }
        }
        if let Some(ip) = ip_addresses
            .iter()
            .find(|ip| ip.parse::<std::net::IpAddr>().is_err())
        {
            return Err(bad(format!(
                "'{}' is not a valid IP address.",
                ip.chars().take(64).collect::<String>()
            )));
        }
        if let Some(u) = uris.iter().find(|u| !is_uri(u)) {
            return Err(bad(format!(
                "'{}' is not a valid URI.",
                u.chars().take(64).collect::<String>()
            )));
        }
        let ekus = input
            .ekus
            .or_else(|| base.map(|b| b.ekus.clone()))
            .unwrap_or_else(|| vec![SERVER_AUTH.into(), CLIENT_AUTH.into()]);
        if let Some(e) = ekus.iter().find(|e| !is_oid(e)) {
            return Err(bad(format!(
                "'{}' is not a valid extended key usage OID.",
                e.chars().take(64).collect::<String>()
            )));
        }
        let key_usage = input
            .key_usage
            .or_else(|| base.filter(|_| !kty_changed).map(|b| b.key_usage.clone()))
            .unwrap_or_else(|| match kty {
                KeyType::Rsa => vec!["digitalSignature".into(), "keyEncipherment".into()],
                KeyType::Ec | KeyType::Oct => vec!["digitalSignature".into()],
            });
        let key_usage = key_usage
            .into_iter()
            .map(|u| {
                KEY_USAGES
                    .iter()
                    .find(|k| k.eq_ignore_ascii_case(&u))
                    .map(|k| (*k).to_owned())
                    .ok_or_else(|| {
                        bad(format!(
                            "The key usage '{}' is invalid.",
                            u.chars().take(32).collect::<String>()
                        ))
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let validity_months = input
            .validity_months
            .or_else(|| base.map(|b| b.validity_months))
            .unwrap_or(12);
        if !(1..=1200).contains(&validity_months) {
            return Err(bad("validity_months must be between 1 and 1200."));
        }
        let lifetime_actions = match input.lifetime_actions {
            Some(list) => list
                .into_iter()
                .map(|(pct, days, action)| {
                    let trigger = match (pct, days) {
                        (Some(p), None) if (1..=99).contains(&p) => {
                            CertificateTrigger::LifetimePercentage(p)
                        }
                        (None, Some(d)) if d >= 1 && d <= validity_months * 27 => {
                            CertificateTrigger::DaysBeforeExpiry(d)
                        }
                        _ => {
                            return Err(bad(
                                "A lifetime action needs either lifetime_percentage (1-99) or days_before_expiry (1 to validity_months × 27).",
                            ))
                        }
                    };
                    let action = match action.as_deref().map(str::to_ascii_lowercase).as_deref() {
                        Some("autorenew") => CertificateAction::AutoRenew,
                        Some("emailcontacts") => CertificateAction::EmailContacts,
                        _ => return Err(bad("The lifetime action type must be AutoRenew or EmailContacts.")),
                    };
                    Ok(CertificateLifetimeAction { trigger, action })
                })
                .collect::<Result<Vec<_>>>()?,
            None => base.map_or_else(
                || {
                    vec![CertificateLifetimeAction {
                        trigger: CertificateTrigger::LifetimePercentage(80),
                        action: if issuer == "Unknown" {
                            CertificateAction::EmailContacts
                        } else {
                            CertificateAction::AutoRenew
                        },
                    }]
                },
                |b| b.lifetime_actions.clone(),
            ),
        };
        if lifetime_actions.len() > 1 {
            return Err(bad("A certificate policy has at most one lifetime action."));
        }
        if issuer == "Unknown"
            && lifetime_actions
                .iter()
                .any(|a| a.action == CertificateAction::AutoRenew)
        {
            return Err(bad(
                "AutoRenew is not possible with issuer Unknown: use EmailContacts.",
            ));
        }
        Ok(Self {
            kty,
            key_size,
            curve,
            exportable: input
                .exportable
                .or_else(|| base.map(|b| b.exportable))
                .unwrap_or(true),
            reuse_key: input
                .reuse_key
                .or_else(|| base.map(|b| b.reuse_key))
                .unwrap_or(false),
            format,
            subject,
            dns_names,
            emails,
            upns,
            ip_addresses,
            uris,
            ekus,
            key_usage,
            validity_months,
            lifetime_actions,
            issuer,
            cty: input.cty.or_else(|| base.and_then(|b| b.cty.clone())),
            cert_transparency: input
                .cert_transparency
                .or_else(|| base.and_then(|b| b.cert_transparency)),
            enabled: input
                .enabled
                .or_else(|| base.map(|b| b.enabled))
                .unwrap_or(true),
            platform_managed,
        })
    }

    fn key_spec(&self) -> KeySpec {
        KeySpec {
            kty: self.kty,
            size: self.key_size,
            exponent: None,
            curve: self.curve,
            hsm: false,
            label: String::new(),
        }
    }

    /// The backing key's operations, from the key usages.
    fn key_ops(&self) -> Vec<String> {
        let mut ops: Vec<&str> = Vec::new();
        for u in &self.key_usage {
            match (u.as_str(), self.kty) {
                ("digitalSignature" | "nonRepudiation" | "keyCertSign" | "cRLSign", _) => {
                    ops.extend(["sign", "verify"]);
                }
                ("keyEncipherment", KeyType::Rsa) => {
                    ops.extend(["encrypt", "decrypt", "wrapKey", "unwrapKey"]);
                }
                ("dataEncipherment", KeyType::Rsa) => ops.extend(["encrypt", "decrypt"]),
                _ => {}
            }
        }
        let mut out: Vec<String> = Vec::new();
        for op in ops {
            if !out.iter().any(|o| o == op) {
                out.push(op.to_owned());
            }
        }
        out
    }
}

/// What the X.509 backend is asked to put into a certificate.
#[derive(Debug)]
pub struct X509Request<'a> {
    /// The policy (subject, SANs, usages, validity).
    pub policy: &'a CertificatePolicy,
    /// Start of validity, Unix seconds.
    pub not_before: i64,
}

/// Facts read from a DER certificate.
#[derive(Debug, Clone)]
pub struct CertificateInfo {
    /// Start of validity, Unix seconds.
    pub not_before: i64,
    /// End of validity, Unix seconds.
    pub not_after: i64,
    /// SHA-1 of the DER (`x5t`).
    pub thumbprint: Vec<u8>,
    /// The certified public key.
    pub public: PublicKey,
    /// Subject as `CN=…, O=…`.
    pub subject: String,
    /// DNS names of the SAN extension.
    pub dns_names: Vec<String>,
    /// Email addresses of the SAN extension.
    pub emails: Vec<String>,
    /// IP addresses of the SAN extension.
    pub ip_addresses: Vec<String>,
    /// URIs of the SAN extension.
    pub uris: Vec<String>,
}

/// An uploaded certificate with its private key.
pub struct Upload {
    /// The private key (PKCS#8 DER).
    pub private: Sensitive<Vec<u8>>,
    /// Its public half.
    pub public: PublicKey,
    /// The chain, the certificate of the private key first.
    pub chain: Vec<Vec<u8>>,
    /// Where the certificate of the private key stood in the upload.
    pub leaf_index: usize,
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Upload")
    }
}

/// The X.509 port: builds, reads and packages certificates. Implemented in
/// `keyhaven-crypto` over the same private-key handles as `KeyBackend`.
pub trait CertificateBackend: Send + Sync {
    /// A self-signed certificate for `key` as `req` describes; DER.
    fn self_signed(&self, req: &X509Request<'_>, key: &SealedPrivate<'_>) -> Result<Vec<u8>>;
    /// A certificate for `subject`'s key as `req` describes, issued by the CA
    /// whose certificate is `ca_der` and whose key is `ca_key`; it never
    /// outlives the CA certificate. DER.
    fn issue(
        &self,
        req: &X509Request<'_>,
        subject: &SealedPrivate<'_>,
        ca_key: &SealedPrivate<'_>,
        ca_der: &[u8],
    ) -> Result<Vec<u8>>;
    /// Reads a DER certificate.
    fn inspect(&self, der: &[u8]) -> Result<CertificateInfo>;
    /// Reads an uploaded PFX (with its password) or PEM (certificates and a
    /// private key). No private key, a wrong password or garbage is a 400.
    fn read_upload(
        &self,
        format: SecretFormat,
        bytes: &[u8],
        password: Option<&str>,
    ) -> Result<Upload>;
    /// A PKCS#10 request (DER) for `key` as the policy describes.
    fn csr(&self, policy: &CertificatePolicy, key: &SealedPrivate<'_>) -> Result<Vec<u8>>;
    /// The secret value: the chain (leaf first), with the private key when
    /// given, as PKCS#12 (base64 text, empty password) or PEM.
    fn package(
        &self,
        format: SecretFormat,
        key: Option<&SealedPrivate<'_>>,
        chain: &[Vec<u8>],
    ) -> Result<Sensitive<Vec<u8>>>;
}

/// Public metadata of a certificate version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CertificateMeta {
    /// The certificate (DER), then the rest of its chain.
    #[serde(with = "b64_chain")]
    pub chain: Vec<Vec<u8>>,
    /// SHA-1 thumbprint.
    #[serde(with = "b64")]
    pub x5t: Vec<u8>,
    /// The secret's content type.
    pub content_type: String,
    /// `preserveCertOrder`: the secret keeps the chain in the order it was
    /// issued or uploaded (`chain` here is leaf first regardless).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub preserve_order: bool,
}

impl CertificateMeta {
    /// The certificate itself (DER).
    pub fn cer(&self) -> &[u8] {
        self.chain.first().map_or(&[], Vec::as_slice)
    }
}

mod b64 {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD.decode(s).map_err(serde::de::Error::custom)
    }
}

mod b64_chain {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|c| STANDARD.encode(c)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        Vec::<String>::deserialize(d)?
            .into_iter()
            .map(|s| STANDARD.decode(s).map_err(serde::de::Error::custom))
            .collect()
    }
}

/// Status of a certificate operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OperationStatus {
    /// Waiting (for a merge).
    InProgress,
    /// Done: a version exists.
    Completed,
    /// Cancelled by the caller.
    Cancelled,
}

impl OperationStatus {
    /// Azure's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "inProgress",
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// The latest creation operation of a certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CertificateOperation {
    /// Issuer name.
    pub issuer: String,
    /// Status.
    pub status: OperationStatus,
    /// Request id.
    pub request_id: String,
    /// The version it produced (or will produce).
    pub version: String,
    /// The CSR (DER) when the issuer is `Unknown`.
    pub csr: Option<Vec<u8>>,
    /// Whether cancellation was requested.
    pub cancellation_requested: bool,
    /// For a pending request: the private key, sealed for the key object of
    /// `version` (base64), and its public half.
    #[serde(default)]
    pub pending_key: Option<String>,
    /// Public half of the pending key.
    #[serde(default)]
    pub pending_public: Option<PublicKey>,
    /// `preserveCertOrder` of the create request, kept for the merge that
    /// completes a pending request.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub preserve_order: bool,
}

impl CertificateOperation {
    /// Azure's `status_details`: for a request waiting on a merge (issuer
    /// `Unknown`), the text that asks for it; none otherwise.
    pub fn status_details(&self) -> Option<&'static str> {
        (self.status == OperationStatus::InProgress && self.csr.is_some())
            .then_some("Pending certificate created. Please Perform Merge to complete the request.")
    }
}

/// What the policy record of a certificate holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CertificateState {
    policy: CertificatePolicy,
    operation: Option<CertificateOperation>,
}

/// A certificate's policy with its timestamps.
#[derive(Debug, Clone)]
pub struct StoredPolicy {
    /// The policy.
    pub policy: CertificatePolicy,
    /// Created, updated.
    pub times: (i64, i64),
}

/// A certificate version.
#[derive(Debug)]
pub struct CertificateBundle {
    /// The version's record.
    pub record: VersionRecord,
    /// Its certificate.
    pub meta: CertificateMeta,
    /// The policy (for the latest version).
    pub policy: Option<StoredPolicy>,
}

/// A soft-deleted certificate.
#[derive(Debug)]
pub struct DeletedCertificate {
    /// Latest version.
    pub record: VersionRecord,
    /// Its certificate.
    pub meta: CertificateMeta,
    /// Deletion bookkeeping.
    pub info: DeletedInfo,
    /// The policy.
    pub policy: Option<StoredPolicy>,
}

/// `POST /certificates/{name}/create`.
#[derive(Debug, Default)]
pub struct CertificateCreate {
    /// Policy (required for the first version).
    pub policy: Option<PolicyInput>,
    /// Attributes (`enabled`).
    pub attributes: AttributesPatch,
    /// Tags.
    pub tags: Option<BTreeMap<String, String>>,
    /// `preserveCertOrder` (api-version 2025-07-01 and later).
    pub preserve_order: bool,
}

/// What a new version is made of.
struct NewVersion<'a> {
    policy: &'a CertificatePolicy,
    /// The private key, sealed for the key object of this version.
    key: Vec<u8>,
    public: PublicKey,
    /// Leaf first.
    chain: Vec<Vec<u8>>,
    /// `preserveCertOrder`: where the leaf stood in the chain as issued or
    /// uploaded, so the secret keeps that order; `None` puts the leaf first.
    preserve_order: Option<usize>,
    enabled: bool,
    tags: BTreeMap<String, String>,
}

/// What one certificate scheduler pass did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateRenewal {
    /// The vault's name.
    pub vault: String,
    /// The certificate's name.
    pub name: String,
    /// The version the action was about.
    pub version: String,
    /// AutoRenew or EmailContacts.
    pub action: CertificateAction,
    /// For AutoRenew: the new version.
    pub new_version: Option<String>,
}

/// `POST /certificates/{name}/import`.
#[derive(Debug)]
pub struct CertificateImport {
    /// The upload as sent: base64 PFX, base64 PEM or PEM text.
    pub value: Sensitive<String>,
    /// The PFX password.
    pub password: Option<Sensitive<String>>,
    /// Policy.
    pub policy: Option<PolicyInput>,
    /// Attributes (`enabled`).
    pub attributes: AttributesPatch,
    /// Tags.
    pub tags: Option<BTreeMap<String, String>>,
    /// `preserveCertOrder`: the secret keeps the uploaded chain order.
    pub preserve_order: bool,
}

/// `POST /certificates/{name}/pending/merge`.
#[derive(Debug, Default)]
pub struct CertificateMerge {
    /// The chain, leaf first (DER).
    pub x5c: Vec<Vec<u8>>,
    /// Attributes (`enabled`).
    pub attributes: AttributesPatch,
    /// Tags.
    pub tags: Option<BTreeMap<String, String>>,
}

/// Parses a certificate version's metadata.
pub fn meta_of(rec: &VersionRecord) -> Result<CertificateMeta> {
    serde_json::from_str(&rec.meta).map_err(|_| Error::Integrity)
}

fn check_not_reserved(name: &ObjectName) -> Result<()> {
    if crate::issuer::RESERVED.contains(&name.key().as_str()) {
        return Err(bad(format!(
            "'{name}' is reserved (certificates/{name} is an API path) and cannot name a certificate."
        )));
    }
    Ok(())
}

fn pending_missing(name: &ObjectName) -> Error {
    Error::NotFound {
        kind: KIND,
        name: format!("{name}/pending"),
    }
}

/// Whole months (at least 1) between two instants, for imported certificates.
fn months_between(from: i64, to: i64) -> u32 {
    let days = (to - from).max(0) / 86_400;
    u32::try_from(((days + 15) / 30).clamp(1, 1200)).unwrap_or(12)
}

/// Whether `body` is a certificate's stored state (a restore checks the
/// backed-up one before storing it).
pub(crate) fn check_state(body: &str) -> Result<()> {
    serde_json::from_str::<CertificateState>(body)
        .map(|_| ())
        .map_err(|_| Error::Integrity)
}

fn state_of(rec: &PolicyRecord) -> Result<CertificateState> {
    serde_json::from_str(&rec.body).map_err(|_| Error::Integrity)
}

impl VaultService {
    async fn certificate_state(
        &self,
        vault: &VaultRecord,
        name: &ObjectName,
    ) -> Result<Option<(CertificateState, (i64, i64))>> {
        Ok(self
            .state_record(vault, name)
            .await?
            .map(|(s, r)| (s, (r.created, r.updated))))
    }

    /// The certificate's policy with its timestamps, if it has one.
    async fn stored_policy(
        &self,
        vault: &VaultRecord,
        name: &ObjectName,
    ) -> Result<Option<StoredPolicy>> {
        Ok(self
            .certificate_state(vault, name)
            .await?
            .map(|(s, times)| StoredPolicy {
                policy: s.policy,
                times,
            }))
    }

    /// The state with the record it was read from (the expected value of
    /// a later compare-and-set).
    async fn state_record(
        &self,
        vault: &VaultRecord,
        name: &ObjectName,
    ) -> Result<Option<(CertificateState, PolicyRecord)>> {
        self.store
            .get_policy(&vault.id, KIND, name)
            .await?
            .map(|r| Ok((state_of(&r)?, r)))
            .transpose()
    }

    /// A compare-and-set of the state from `read` (`None`: there was none).
    fn state_change(
        &self,
        name: &ObjectName,
        read: Option<&PolicyRecord>,
        state: &CertificateState,
    ) -> Result<PolicyChange> {
        let now = self.clock.now();
        Ok(PolicyChange {
            kind: KIND,
            name: name.clone(),
            expected: read.map(|r| r.body.clone()),
            record: PolicyRecord {
                body: serde_json::to_string(state).map_err(|_| Error::Integrity)?,
                created: read.map_or(now, |r| r.created),
                updated: now,
            },
        })
    }

    /// Reads the state, lets `change` edit it, and writes it back only if
    /// nobody changed it meanwhile (read again and retried otherwise, then
    /// 409). Returns what `change` returned and the state's times.
    async fn modify_state<T>(
        &self,
        vault: &VaultRecord,
        name: &ObjectName,
        mut change: impl FnMut(&mut CertificateState) -> Result<T> + Send,
    ) -> Result<(T, (i64, i64))> {
        for _ in 0..crate::service::CAS_ATTEMPTS {
            let (mut state, read) = self
                .state_record(vault, name)
                .await?
                .ok_or_else(|| pending_missing(name))?;
            let out = change(&mut state)?;
            let write = self.state_change(name, Some(&read), &state)?;
            if self.store.put_policy_if(&vault.id, &write).await? {
                return Ok((out, (write.record.created, write.record.updated)));
            }
        }
        Err(crate::store::StoreError::Changed {
            kind: KIND,
            name: name.to_string(),
        }
        .into())
    }

    async fn check_name_free(&self, vault: &VaultRecord, name: &ObjectName) -> Result<()> {
        for kind in [ObjectKind::Key, ObjectKind::Secret] {
            if let Some(rec) = self.store.get_version(&vault.id, kind, name, None).await? {
                if !rec.managed {
                    return Err(Error::Conflict(format!(
                        "A {} named {name} already exists and is not managed by a certificate.",
                        kind.noun()
                    )));
                }
            }
            if self
                .store
                .get_deleted(&vault.id, kind, name)
                .await?
                .is_some()
            {
                return Err(Error::Conflict(format!(
                    "A deleted {} named {name} holds the name; recover or purge it first.",
                    kind.noun()
                )));
            }
        }
        Ok(())
    }

    /// Creates a certificate version from its policy. Issuer `Self` completes
    /// at once; the operation is returned as Azure's poller expects.
    pub async fn create_certificate(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        name: &ObjectName,
        input: CertificateCreate,
    ) -> Result<CertificateOperation> {
        auth.require_on(vault, Operation::CertificateCreate, name)?;
        check_not_reserved(name)?;
        let tags = input.tags.unwrap_or_default();
        validate_tags(&tags)?;
        if self
            .store
            .get_deleted(&vault.id, KIND, name)
            .await?
            .is_some()
        {
            return Err(Error::DeletedButRecoverable {
                kind: KIND,
                name: name.to_string(),
            });
        }
        let existing = self.state_record(vault, name).await?;
        let policy = match (input.policy, &existing) {
            (Some(p), e) => CertificatePolicy::merged(e.as_ref().map(|(s, _)| &s.policy), p)?,
            (None, Some((s, _))) => s.policy.clone(),
            (None, None) => {
                return Err(bad(
                    "A policy is required to create the first version of a certificate.",
                ))
            }
        };
        if existing.as_ref().is_some_and(|(s, _)| {
            s.operation
                .as_ref()
                .is_some_and(|o| o.status == OperationStatus::InProgress)
        }) {
            return Err(Error::Conflict(format!(
                "Certificate {name} has a pending operation: merge, cancel or delete it first."
            )));
        }
        self.check_name_free(vault, name).await?;
        let approved = self
            .gate_check(vault, KIND, name, || {
                let a = Attributes::new(self.clock.now(), &input.attributes);
                crate::governance::views::certificate(name, &policy, &a)
            })
            .await?;
        let enabled = input.attributes.enabled.unwrap_or(policy.enabled);
        let read = existing.as_ref().map(|(_, r)| r);
        // The state (policy and completed operation) goes in the version's
        // own transaction, and only if nobody changed it since it was read.
        let version = Version::random();
        let completed = CertificateState {
            policy: policy.clone(),
            operation: Some(CertificateOperation {
                issuer: policy.issuer.clone(),
                status: OperationStatus::Completed,
                request_id: Version::random().to_string(),
                version: version.to_string(),
                csr: None,
                cancellation_requested: false,
                pending_key: None,
                pending_public: None,
                preserve_order: input.preserve_order,
            }),
        };
        let change = self.state_change(name, read, &completed)?;
        let issued = self
            .issue_now(
                vault,
                name,
                &policy,
                version,
                (enabled, tags, input.preserve_order),
                Some(&change),
            )
            .await?;
        let operation = match (issued, completed.operation) {
            (Some(_), Some(done)) => done,
            _ => {
                // Signed elsewhere: only the pending request is stored.
                let pending = self.pending_request(vault, name, &policy, input.preserve_order)?;
                let state = CertificateState {
                    policy,
                    operation: Some(pending.clone()),
                };
                let change = self.state_change(name, read, &state)?;
                if !self.store.put_policy_if(&vault.id, &change).await? {
                    return Err(crate::store::StoreError::Changed {
                        kind: KIND,
                        name: name.to_string(),
                    }
                    .into());
                }
                pending
            }
        };
        if let Some(a) = approved {
            a.committed().await;
        }
        // Azure answers a create before the certificate exists, so its reply
        // always says inProgress; the SDK poller relies on that to poll (it
        // fetches the certificate only after a poll sees `completed`).
        Ok(CertificateOperation {
            status: OperationStatus::InProgress,
            ..operation
        })
    }

    /// Makes the key, the certificate and the secret of a new version.
    async fn issue_self_signed(
        &self,
        vault: &VaultRecord,
        name: &ObjectName,
        policy: &CertificatePolicy,
        issue: Issue<'_>,
    ) -> Result<Version> {
        let Issue {
            version,
            enabled,
            tags,
            preserve_order,
            state,
        } = issue;
        let (private, public) = self.version_key(vault, name, policy).await?;
        let key = self.seal_key(vault, name, &version, &private)?;
        drop(private);
        let now = self.clock.now();
        let der = self.with_sealed(vault, name, &version, &key, |sealed| {
            self.certs.self_signed(
                &X509Request {
                    policy,
                    not_before: now,
                },
                sealed,
            )
        })?;
        self.write_version(
            vault,
            name,
            &version,
            NewVersion {
                policy,
                key,
                public,
                chain: vec![der],
                preserve_order: preserve_order.then_some(0),
                enabled,
                tags,
            },
            state,
        )
        .await?;
        Ok(version)
    }

    /// Issues a version from a configured issuer. Only Keyhaven's private CA
    /// can be reached: a CA certificate of this vault signs with its key.
    async fn issue_from_ca(
        &self,
        vault: &VaultRecord,
        name: &ObjectName,
        policy: &CertificatePolicy,
        issuer_name: &str,
        issue: Issue<'_>,
    ) -> Result<Version> {
        let Issue {
            version,
            enabled,
            tags,
            preserve_order,
            state,
        } = issue;
        let issuer = self.find_issuer(vault, issuer_name).await.map_err(|_| {
            bad(format!(
                "The issuer '{}' is not configured in this vault.",
                issuer_name.chars().take(64).collect::<String>()
            ))
        })?;
        if !issuer
            .provider
            .eq_ignore_ascii_case(crate::issuer::PRIVATE_CA_PROVIDER)
        {
            return Err(bad(format!(
                "The issuer provider '{}' cannot be reached from this deployment; use {}.",
                issuer.provider.chars().take(64).collect::<String>(),
                crate::issuer::PRIVATE_CA_PROVIDER
            )));
        }
        if !issuer.enabled {
            return Err(bad(format!("The issuer '{issuer_name}' is disabled.")));
        }
        let ca_name: ObjectName = issuer
            .account_id
            .as_deref()
            .unwrap_or_default()
            .parse()
            .map_err(|_| bad("The issuer names no CA certificate."))?;
        let unusable = |why: &str| {
            bad(format!(
                "The CA certificate '{ca_name}' of issuer '{issuer_name}' cannot issue: {why}."
            ))
        };
        let ca = self
            .load_certificate(vault, &ca_name, None)
            .await
            .map_err(|_| unusable("it does not exist"))?;
        let now = self.clock.now();
        let a = &ca.record.attributes;
        if !a.enabled || a.nbf.is_some_and(|n| now < n) || a.exp.is_some_and(|e| now >= e) {
            return Err(unusable("it is disabled, not yet valid or expired"));
        }
        let ca_policy = ca.policy.as_ref().map(|p| &p.policy);
        if !ca_policy.is_some_and(|p| p.key_usage.iter().any(|u| u == "keyCertSign")) {
            return Err(unusable("its policy lacks the keyCertSign key usage"));
        }
        if ca_name.key() == name.key() {
            return Err(unusable("a certificate cannot issue itself"));
        }
        let ca_key = self
            .store
            .get_version(
                &vault.id,
                ObjectKind::Key,
                &ca_name,
                Some(&ca.record.version),
            )
            .await?
            .ok_or_else(|| unusable("its key is missing"))?;
        let (private, public) = self.version_key(vault, name, policy).await?;
        let key = self.seal_key(vault, name, &version, &private)?;
        drop(private);
        let der = self.with_sealed(vault, name, &version, &key, |subject| {
            self.with_sealed(
                vault,
                &ca_name,
                &ca.record.version,
                &ca_key.payload,
                |ca_sealed| {
                    self.certs.issue(
                        &X509Request {
                            policy,
                            not_before: now,
                        },
                        subject,
                        ca_sealed,
                        ca.meta.cer(),
                    )
                },
            )
        })?;
        let mut chain = vec![der];
        chain.extend(ca.meta.chain.iter().cloned());
        self.write_version(
            vault,
            name,
            &version,
            NewVersion {
                policy,
                key,
                public,
                chain,
                preserve_order: preserve_order.then_some(0),
                enabled,
                tags,
            },
            state,
        )
        .await?;
        Ok(version)
    }

    /// The key of a new version: the current version's when the policy
    /// says `reuse_key` (and the key type still fits), otherwise a new one.
    async fn version_key(
        &self,
        vault: &VaultRecord,
        name: &ObjectName,
        policy: &CertificatePolicy,
    ) -> Result<(Sensitive<Vec<u8>>, PublicKey)> {
        if policy.reuse_key {
            if let Some(current) = self
                .store
                .get_version(&vault.id, ObjectKind::Key, name, None)
                .await?
                .filter(|r| r.managed)
            {
                let meta: KeyMeta =
                    serde_json::from_str(&current.meta).map_err(|_| Error::Integrity)?;
                let same_shape = meta.public.kty == policy.kty
                    && (policy.kty != KeyType::Ec || meta.public.crv == policy.curve);
                if same_shape {
                    let aad = Self::payload_aad(vault, ObjectKind::Key, name, &current.version);
                    let private = self.barrier.open(vault, &aad, &current.payload)?;
                    return Ok((private, meta.public));
                }
            }
        }
        self.keys.generate(&policy.key_spec())
    }

    /// One scheduler pass over certificate policies: AutoRenew makes a new
    /// version (issuer `Self` or a private-CA issuer), EmailContacts is
    /// reported for the observability issue's events. Each action on a
    /// version is claimed in the store, so it runs once across nodes.
    pub async fn run_certificate_renewals(&self) -> Result<Vec<CertificateRenewal>> {
        let mut done = Vec::new();
        for p in self.scheduled_policies(KIND).await? {
            match self.renew_one(&p.vault_name, &p.name, &p.policy).await {
                Ok(Some(r)) => done.push(r),
                Ok(None) => {}
                Err(e) => tracing::warn!(
                    vault = %p.vault_name, certificate = %p.name, error = %e,
                    "certificate lifetime action could not be carried out"
                ),
            }
        }
        Ok(done)
    }

    async fn renew_one(
        &self,
        vault_name: &str,
        name: &ObjectName,
        rec: &PolicyRecord,
    ) -> Result<Option<CertificateRenewal>> {
        let state = state_of(rec)?;
        let Ok(vname) = vault_name.parse() else {
            return Ok(None);
        };
        let Some(vault) = self.store.get_vault(&vname).await? else {
            return Ok(None);
        };
        let Some(latest) = self.store.get_version(&vault.id, KIND, name, None).await? else {
            return Ok(None);
        };
        let (Some(nbf), Some(exp)) = (latest.attributes.nbf, latest.attributes.exp) else {
            return Ok(None);
        };
        let now = self.clock.now();
        for a in &state.policy.lifetime_actions {
            let due = match a.trigger {
                CertificateTrigger::LifetimePercentage(p) => {
                    nbf + (exp - nbf).saturating_mul(i64::from(p)) / 100
                }
                CertificateTrigger::DaysBeforeExpiry(d) => exp - i64::from(d) * 86_400,
            };
            if now < due {
                continue;
            }
            let job = format!(
                "certificate-{}/{}/{}/{}",
                match a.action {
                    CertificateAction::AutoRenew => "renew",
                    CertificateAction::EmailContacts => "notify",
                },
                vault.id,
                name.key(),
                latest.version
            );
            if !self.store.claim_job(&job, now, now + 300).await? {
                continue;
            }
            let mut events = Vec::new();
            let new_version = match a.action {
                CertificateAction::AutoRenew => self
                    .issue_now(
                        &vault,
                        name,
                        &state.policy,
                        Version::random(),
                        (
                            state.policy.enabled,
                            latest.tags.clone(),
                            meta_of(&latest).is_ok_and(|m| m.preserve_order),
                        ),
                        None,
                    )
                    .await?
                    .map(|v| v.to_string()),
                CertificateAction::EmailContacts => {
                    events.extend(self.event(
                        crate::events::EventType::CertificateNearExpiry,
                        &vault,
                        &latest,
                    ));
                    None
                }
            };
            self.store
                .finish_job(&job, now, now - 400 * 86_400, &events)
                .await?;
            self.events_committed(!events.is_empty());
            tracing::info!(
                vault = %vault.name, certificate = %name, version = %latest.version,
                new_version = new_version.as_deref().unwrap_or(""),
                "certificate lifetime action carried out"
            );
            return Ok(Some(CertificateRenewal {
                vault: vault.name.to_string(),
                name: name.to_string(),
                version: latest.version.to_string(),
                action: a.action,
                new_version,
            }));
        }
        Ok(None)
    }

    /// Issues a version now when the issuer can (`Self`, a private-CA
    /// issuer); `None` for `Unknown`, whose certificate is signed elsewhere.
    async fn issue_now(
        &self,
        vault: &VaultRecord,
        name: &ObjectName,
        policy: &CertificatePolicy,
        version: Version,
        (enabled, tags, preserve_order): (bool, BTreeMap<String, String>, bool),
        state: Option<&PolicyChange>,
    ) -> Result<Option<Version>> {
        let issued = Issue {
            version,
            enabled,
            tags,
            preserve_order,
            state,
        };
        Ok(Some(match policy.issuer.as_str() {
            "Self" => self.issue_self_signed(vault, name, policy, issued).await?,
            "Unknown" => return Ok(None),
            other => {
                self.issue_from_ca(vault, name, policy, other, issued)
                    .await?
            }
        }))
    }

    fn seal_key(
        &self,
        vault: &VaultRecord,
        name: &ObjectName,
        version: &Version,
        private: &Sensitive<Vec<u8>>,
    ) -> Result<Vec<u8>> {
        let aad = Self::payload_aad(vault, ObjectKind::Key, name, version);
        self.barrier.seal(vault, &aad, private.expose())
    }

    /// Runs `f` with the sealed private key of `version` (synchronously: the
    /// handle never lives across an await).
    fn with_sealed<T>(
        &self,
        vault: &VaultRecord,
        name: &ObjectName,
        version: &Version,
        key_payload: &[u8],
        f: impl FnOnce(&SealedPrivate<'_>) -> Result<T>,
    ) -> Result<T> {
        let aad = Self::payload_aad(vault, ObjectKind::Key, name, version);
        let id = sealed_id(&aad, key_payload);
        let open = || self.barrier.open(vault, &aad, key_payload);
        f(&SealedPrivate {
            id: &id,
            open: &open,
            hsm: false,
        })
    }

    /// Writes the key, the secret and then the certificate of a version whose
    /// chain (leaf first) is known.
    async fn write_version(
        &self,
        vault: &VaultRecord,
        name: &ObjectName,
        version: &Version,
        v: NewVersion<'_>,
        state: Option<&PolicyChange>,
    ) -> Result<()> {
        let now = self.clock.now();
        let leaf = v.chain.first().ok_or(Error::Integrity)?;
        let info = self.certs.inspect(leaf)?;
        if info.public != v.public {
            return Err(bad(
                "The certificate's public key does not match the certificate's key.",
            ));
        }
        // Only PEM can keep an order: a PFX names the leaf in its own bag.
        let secret_chain = match v.preserve_order {
            Some(at) if at > 0 && v.policy.format == SecretFormat::Pem => {
                let mut c = v.chain.clone();
                let leaf = c.remove(0);
                c.insert(at.min(c.len()), leaf);
                c
            }
            _ => v.chain.clone(),
        };
        let value = self.with_sealed(vault, name, version, &v.key, |sealed| {
            self.certs.package(
                v.policy.format,
                v.policy.exportable.then_some(sealed),
                &secret_chain,
            )
        })?;
        let secret_aad = Self::payload_aad(vault, ObjectKind::Secret, name, version);
        let secret_payload = self.barrier.seal(vault, &secret_aad, value.expose())?;
        drop(value);
        let attributes = Attributes {
            enabled: v.enabled,
            nbf: Some(info.not_before),
            exp: Some(info.not_after),
            created: now,
            updated: now,
        };
        let meta = CertificateMeta {
            chain: v.chain,
            x5t: info.thumbprint,
            content_type: v.policy.format.content_type().to_owned(),
            preserve_order: v.preserve_order.is_some(),
        };
        let records = [
            VersionRecord {
                kind: ObjectKind::Key,
                name: name.clone(),
                version: version.clone(),
                attributes: attributes.clone(),
                tags: v.tags.clone(),
                content_type: None,
                managed: true,
                payload: v.key,
                meta: serde_json::to_string(&KeyMeta {
                    public: v.public,
                    key_ops: v.policy.key_ops(),
                    hsm: false,
                })
                .map_err(|_| Error::Integrity)?,
            },
            VersionRecord {
                kind: ObjectKind::Secret,
                name: name.clone(),
                version: version.clone(),
                attributes: attributes.clone(),
                tags: v.tags.clone(),
                content_type: Some(meta.content_type.clone()),
                managed: true,
                payload: secret_payload,
                meta: String::from("{}"),
            },
            VersionRecord {
                kind: KIND,
                name: name.clone(),
                version: version.clone(),
                attributes,
                tags: v.tags,
                content_type: None,
                managed: false,
                payload: Vec::new(),
                meta: serde_json::to_string(&meta).map_err(|_| Error::Integrity)?,
            },
        ];
        // One transaction, with the state change (a merge's completed
        // operation, an import's policy): a cancelled or failed write leaves
        // no key or secret of a version the certificate does not have, and
        // no version whose operation still says pending.
        let events: Vec<_> = records
            .last()
            .and_then(|cert| {
                self.event(
                    crate::events::EventType::CertificateNewVersionCreated,
                    vault,
                    cert,
                )
            })
            .into_iter()
            .collect();
        self.store
            .put_versions_with(&vault.id, &records, state, &events)
            .await?;
        self.events_committed(!events.is_empty());
        Ok(())
    }

    /// A new key and a CSR for it, kept as the pending operation until a
    /// signed certificate is merged.
    fn pending_request(
        &self,
        vault: &VaultRecord,
        name: &ObjectName,
        policy: &CertificatePolicy,
        preserve_order: bool,
    ) -> Result<CertificateOperation> {
        use base64::Engine as _;
        let version = Version::random();
        let (private, public) = self.keys.generate(&policy.key_spec())?;
        let key = self.seal_key(vault, name, &version, &private)?;
        drop(private);
        let csr = self.with_sealed(vault, name, &version, &key, |sealed| {
            self.certs.csr(policy, sealed)
        })?;
        Ok(CertificateOperation {
            issuer: policy.issuer.clone(),
            status: OperationStatus::InProgress,
            request_id: Version::random().to_string(),
            version: version.to_string(),
            csr: Some(csr),
            cancellation_requested: false,
            pending_key: Some(base64::engine::general_purpose::STANDARD.encode(&key)),
            pending_public: Some(public),
            preserve_order,
        })
    }

    /// Merges a certificate signed elsewhere into the pending request.
    pub async fn merge_certificate(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        name: &ObjectName,
        merge: CertificateMerge,
    ) -> Result<CertificateBundle> {
        use base64::Engine as _;
        auth.require_on(vault, Operation::CertificateCreate, name)?;
        let tags = merge.tags.unwrap_or_default();
        validate_tags(&tags)?;
        let (mut state, read) = self
            .state_record(vault, name)
            .await?
            .ok_or_else(|| pending_missing(name))?;
        let op = state
            .operation
            .as_mut()
            .filter(|o| o.status == OperationStatus::InProgress)
            .ok_or_else(|| pending_missing(name))?;
        let (Some(key), Some(public)) = (op.pending_key.as_deref(), op.pending_public.clone())
        else {
            return Err(pending_missing(name));
        };
        let key = base64::engine::general_purpose::STANDARD
            .decode(key)
            .map_err(|_| Error::Integrity)?;
        if merge.x5c.is_empty() {
            return Err(bad("x5c must hold the signed certificate (leaf first)."));
        }
        for der in &merge.x5c {
            self.certs.inspect(der)?;
        }
        let version: Version = op.version.parse().map_err(|_| Error::Integrity)?;
        self.check_name_free(vault, name).await?;
        let enabled = merge.attributes.enabled.unwrap_or(state.policy.enabled);
        // The operation completes in the version's own transaction, and only
        // if nobody changed the state since it was read (a cancel, a policy
        // update): a retried or racing merge cannot write a version twice or
        // overwrite their change.
        let policy = state.policy.clone();
        let preserve_order = op.preserve_order.then_some(0);
        op.status = OperationStatus::Completed;
        op.pending_key = None;
        op.csr = None;
        let change = self.state_change(name, Some(&read), &state)?;
        self.write_version(
            vault,
            name,
            &version,
            NewVersion {
                policy: &policy,
                key,
                public,
                chain: merge.x5c,
                preserve_order,
                enabled,
                tags,
            },
            Some(&change),
        )
        .await?;
        self.load_certificate(vault, name, None).await
    }

    /// Requests cancellation of the pending operation: the pending key is
    /// dropped and the operation reports `cancelled`.
    pub async fn cancel_certificate_operation(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        name: &ObjectName,
    ) -> Result<CertificateOperation> {
        auth.require_on(vault, Operation::CertificateUpdate, name)?;
        let (out, _) = self
            .modify_state(vault, name, |state| {
                let op = state
                    .operation
                    .as_mut()
                    .ok_or_else(|| pending_missing(name))?;
                op.cancellation_requested = true;
                if op.status == OperationStatus::InProgress {
                    op.status = OperationStatus::Cancelled;
                    op.pending_key = None;
                }
                Ok(op.clone())
            })
            .await?;
        Ok(out)
    }

    /// Deletes the operation record (and a pending key with it).
    pub async fn delete_certificate_operation(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        name: &ObjectName,
    ) -> Result<CertificateOperation> {
        auth.require_on(vault, Operation::CertificateDelete, name)?;
        let (op, _) = self
            .modify_state(vault, name, |state| {
                state.operation.take().ok_or_else(|| pending_missing(name))
            })
            .await?;
        Ok(op)
    }

    /// Imports a certificate with its private key (PFX or PEM) as a new version.
    pub async fn import_certificate(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        name: &ObjectName,
        import: CertificateImport,
    ) -> Result<CertificateBundle> {
        use base64::Engine as _;
        auth.require_on(vault, Operation::CertificateImport, name)?;
        check_not_reserved(name)?;
        let tags = import.tags.unwrap_or_default();
        validate_tags(&tags)?;
        if self
            .store
            .get_deleted(&vault.id, KIND, name)
            .await?
            .is_some()
        {
            return Err(Error::DeletedButRecoverable {
                kind: KIND,
                name: name.to_string(),
            });
        }
        let raw = import.value.expose().trim();
        let bytes = if raw.starts_with("-----BEGIN") {
            Sensitive::new(raw.as_bytes().to_vec())
        } else {
            Sensitive::new(
                base64::engine::general_purpose::STANDARD
                    .decode(raw.replace(['\r', '\n'], ""))
                    .map_err(|_| {
                        bad("The certificate value must be a base64 PFX, or PEM (base64 or text).")
                    })?,
            )
        };
        let detected = if bytes.expose().starts_with(b"-----BEGIN") {
            SecretFormat::Pem
        } else {
            SecretFormat::Pkcs12
        };
        let upload = self.certs.read_upload(
            detected,
            bytes.expose(),
            import.password.as_ref().map(|p| p.expose().as_str()),
        )?;
        drop(bytes);
        let leaf = upload.chain.first().ok_or(Error::Integrity)?;
        let info = self.certs.inspect(leaf)?;
        let existing = self.state_record(vault, name).await?;
        let base = match &existing {
            Some((s, _)) => s.policy.clone(),
            None => CertificatePolicy::merged(
                None,
                PolicyInput {
                    kty: Some(upload.public.kty.as_str().to_owned()),
                    key_size: (upload.public.kty == KeyType::Rsa).then(|| {
                        let n = upload.public.n.as_deref().unwrap_or_default();
                        let bits = n.iter().skip_while(|b| **b == 0).count() * 8;
                        u32::try_from(bits).unwrap_or(0)
                    }),
                    curve: upload.public.crv.map(|c| c.as_str().to_owned()),
                    content_type: Some(detected.content_type().to_owned()),
                    subject: Some(info.subject.clone()),
                    dns_names: Some(info.dns_names.clone()),
                    emails: Some(info.emails.clone()),
                    ip_addresses: Some(info.ip_addresses.clone()),
                    uris: Some(info.uris.clone()),
                    validity_months: Some(months_between(info.not_before, info.not_after)),
                    issuer: Some("Unknown".into()),
                    ..PolicyInput::default()
                },
            )?,
        };
        let policy = match import.policy {
            Some(p) => CertificatePolicy::merged(Some(&base), p)?,
            None => base,
        };
        if policy.kty != upload.public.kty {
            return Err(bad(
                "The policy's key type does not match the imported private key.",
            ));
        }
        self.check_name_free(vault, name).await?;
        let approved = self
            .gate_check(vault, KIND, name, || {
                let a = Attributes {
                    enabled: import.attributes.enabled.unwrap_or(policy.enabled),
                    nbf: Some(info.not_before),
                    exp: Some(info.not_after),
                    created: self.clock.now(),
                    updated: self.clock.now(),
                };
                crate::governance::views::certificate(name, &policy, &a)
            })
            .await?;
        let version = Version::random();
        let key = self.seal_key(vault, name, &version, &upload.private)?;
        let enabled = import.attributes.enabled.unwrap_or(policy.enabled);
        let state = CertificateState {
            policy: policy.clone(),
            operation: existing.as_ref().and_then(|(s, _)| s.operation.clone()),
        };
        let change = self.state_change(name, existing.as_ref().map(|(_, r)| r), &state)?;
        self.write_version(
            vault,
            name,
            &version,
            NewVersion {
                policy: &policy,
                key,
                public: upload.public,
                chain: upload.chain,
                preserve_order: import.preserve_order.then_some(upload.leaf_index),
                enabled,
                tags,
            },
            Some(&change),
        )
        .await?;
        if let Some(a) = approved {
            a.committed().await;
        }
        self.load_certificate(vault, name, None).await
    }

    /// Backs up a certificate with its key, secret and policy (not a pending
    /// request: its key is bound to this vault's pending state).
    pub async fn backup_certificate(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        name: &ObjectName,
    ) -> Result<Vec<u8>> {
        auth.require_on(vault, Operation::CertificateBackup, name)?;
        let policy = self
            .certificate_state(vault, name)
            .await?
            .map(|(s, _)| {
                serde_json::to_string(&CertificateState {
                    policy: s.policy,
                    operation: None,
                })
                .map_err(|_| Error::Integrity)
            })
            .transpose()?;
        self.backup_objects(
            auth,
            vault,
            KIND,
            Operation::CertificateBackup,
            name,
            crate::backup::BackupExtras {
                companions: &COMPANIONS,
                policy,
            },
        )
        .await
    }

    /// Restores a certificate backup (certificate, key, secret, policy);
    /// refused while any of the three names exists.
    pub async fn restore_certificate(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        blob: &[u8],
    ) -> Result<CertificateBundle> {
        // The policy is restored with the objects, in their transaction.
        let (record, _) = self
            .restore_objects(auth, vault, KIND, Operation::CertificateRestore, blob)
            .await?;
        self.load_certificate(vault, &record.name, None).await
    }

    /// Gets a certificate version (`None` = latest, which carries the policy).
    pub async fn get_certificate(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        name: &ObjectName,
        version: Option<&Version>,
    ) -> Result<CertificateBundle> {
        auth.require_on(vault, Operation::CertificateGet, name)?;
        self.load_certificate(vault, name, version).await
    }

    async fn load_certificate(
        &self,
        vault: &VaultRecord,
        name: &ObjectName,
        version: Option<&Version>,
    ) -> Result<CertificateBundle> {
        let record = self.live_version(vault, KIND, name, version).await?;
        let meta = meta_of(&record)?;
        let policy = if version.is_none() {
            self.stored_policy(vault, name).await?
        } else {
            None
        };
        Ok(CertificateBundle {
            record,
            meta,
            policy,
        })
    }

    /// Lists certificates (latest versions).
    pub async fn list_certificates(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page<VersionRecord>> {
        self.list_objects(auth, vault, KIND, Operation::CertificateList, cursor, limit)
            .await
    }

    /// Lists a certificate's versions.
    pub async fn list_certificate_versions(
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
            Operation::CertificateList,
            name,
            (cursor, limit),
        )
        .await
    }

    /// The certificate's policy.
    pub async fn get_certificate_policy(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        name: &ObjectName,
    ) -> Result<StoredPolicy> {
        auth.require_on(vault, Operation::CertificateGet, name)?;
        // A certificate still waiting for its first version (issuer
        // `Unknown`, platform-managed) has a policy already, as on Azure.
        let live = self.live_version(vault, KIND, name, None).await;
        let state = self.certificate_state(vault, name).await?;
        let pending_first = |s: &CertificateState| {
            s.operation
                .as_ref()
                .is_some_and(|o| o.status == OperationStatus::InProgress)
        };
        let deleted = match &live {
            Err(Error::NotFound { .. }) => self
                .store
                .get_deleted(&vault.id, KIND, name)
                .await?
                .is_some(),
            _ => false,
        };
        let (state, times) = match (live, state) {
            (Ok(_), Some(found)) => found,
            (Err(Error::NotFound { .. }), Some(found)) if pending_first(&found.0) && !deleted => {
                found
            }
            (Err(e), _) => return Err(e),
            (Ok(_), None) => return Err(Error::Integrity),
        };
        Ok(StoredPolicy {
            policy: state.policy,
            times,
        })
    }

    /// Updates the certificate's policy (fields absent keep their values).
    pub async fn update_certificate_policy(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        name: &ObjectName,
        input: PolicyInput,
    ) -> Result<StoredPolicy> {
        auth.require_on(vault, Operation::CertificateUpdate, name)?;
        let latest = self.live_version(vault, KIND, name, None).await?;
        // The policy future versions are issued under is evaluated as a new
        // certificate's would be (renewals must not slip past a Deny).
        let evaluated = match (&self.gate, self.certificate_state(vault, name).await?) {
            (Some(_), Some((state, _))) => {
                let next = CertificatePolicy::merged(Some(&state.policy), input.clone())?;
                let approved = self
                    .gate_check(vault, KIND, name, || {
                        crate::governance::views::certificate(name, &next, &latest.attributes)
                    })
                    .await?;
                Some((next, approved))
            }
            _ => None,
        };
        let (policy, times) = self
            .modify_state(vault, name, |state| {
                state.policy = CertificatePolicy::merged(Some(&state.policy), input.clone())?;
                // Only the policy that was evaluated may be stored: one
                // changed meanwhile would merge into something unchecked.
                if let Some((next, _)) = &evaluated {
                    if *next != state.policy {
                        return Err(Error::Conflict(format!(
                            "The policy of certificate {name} changed meanwhile; read it and try again."
                        )));
                    }
                }
                Ok(state.policy.clone())
            })
            .await?;
        let approved = evaluated.and_then(|(_, a)| a);
        if let Some(a) = approved {
            a.committed().await;
        }
        Ok(StoredPolicy { policy, times })
    }

    /// The policy view of an object about to be restored (its latest
    /// version of `kind`); `None` without a gate.
    pub(crate) async fn restore_view(
        &self,
        vault: &VaultRecord,
        kind: ObjectKind,
        name: &ObjectName,
        records: &[VersionRecord],
        policy: Option<&str>,
    ) -> Result<Option<serde_json::Value>> {
        if self.gate.is_none() {
            return Ok(None);
        }
        // The store makes the last record of the kind the latest version.
        let Some(latest) = records.iter().rfind(|r| r.kind == kind) else {
            return Ok(None);
        };
        Ok(Some(match kind {
            ObjectKind::Certificate => {
                let Some(body) = policy else { return Ok(None) };
                let state: CertificateState =
                    serde_json::from_str(body).map_err(|_| Error::Integrity)?;
                crate::governance::views::certificate(name, &state.policy, &latest.attributes)
            }
            _ => self.object_view(vault, name, latest).await?,
        }))
    }

    /// The certificate's latest creation operation.
    pub async fn get_certificate_operation(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        name: &ObjectName,
    ) -> Result<CertificateOperation> {
        auth.require_on(vault, Operation::CertificateGet, name)?;
        self.certificate_state(vault, name)
            .await?
            .and_then(|(s, _)| s.operation)
            .ok_or_else(|| Error::NotFound {
                kind: KIND,
                name: format!("{name}/pending"),
            })
    }

    /// Updates a certificate version's attributes and tags, mirrored onto its
    /// key and secret.
    pub async fn update_certificate(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        name: &ObjectName,
        version: Option<&Version>,
        attributes: AttributesPatch,
        tags: Option<BTreeMap<String, String>>,
    ) -> Result<CertificateBundle> {
        auth.require_on(vault, Operation::CertificateUpdate, name)?;
        if let Some(t) = &tags {
            validate_tags(t)?;
        }
        if attributes.nbf.is_some() || attributes.exp.is_some() {
            return Err(bad(
                "A certificate's nbf and exp come from the certificate and cannot be changed.",
            ));
        }
        let now = self.clock.now();
        let patch = |r: &mut VersionRecord| {
            r.attributes.apply(&attributes, now);
            if let Some(t) = &tags {
                r.tags = t.clone();
            }
        };
        // Compare-and-set on all three, read again after a lost race.
        let mut lost = None;
        let mut done = None;
        for _ in 0..crate::service::CAS_ATTEMPTS {
            let read = self.live_version(vault, KIND, name, version).await?;
            let mut changes = Vec::with_capacity(3);
            for kind in COMPANIONS {
                if let Some(r) = self
                    .store
                    .get_version(&vault.id, kind, name, Some(&read.version))
                    .await?
                {
                    let mut w = r.clone();
                    patch(&mut w);
                    changes.push((r, w));
                }
            }
            let mut record = read.clone();
            patch(&mut record);
            changes.push((read, record.clone()));
            match self.store.update_versions(&vault.id, &changes).await {
                Ok(()) => {
                    done = Some(record);
                    break;
                }
                Err(e @ crate::store::StoreError::Changed { .. }) => lost = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        let Some(record) = done else {
            return Err(lost.map_or(Error::Integrity, Error::from));
        };
        let meta = meta_of(&record)?;
        // Azure's answer to an update carries the certificate's policy.
        let policy = self.stored_policy(vault, name).await?;
        Ok(CertificateBundle {
            record,
            meta,
            policy,
        })
    }

    /// Soft-deletes a certificate with its key and secret.
    pub async fn delete_certificate(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        name: &ObjectName,
    ) -> Result<DeletedCertificate> {
        let (record, info) = self
            .delete_object(
                auth,
                vault,
                &WITH_COMPANIONS,
                Operation::CertificateDelete,
                name,
            )
            .await?;
        let meta = meta_of(&record)?;
        let policy = self.stored_policy(vault, name).await?;
        Ok(DeletedCertificate {
            record,
            meta,
            info,
            policy,
        })
    }

    /// Reads a soft-deleted certificate.
    pub async fn get_deleted_certificate(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        name: &ObjectName,
    ) -> Result<DeletedCertificate> {
        let (record, info) = self
            .get_deleted_object(auth, vault, KIND, Operation::CertificateGetDeleted, name)
            .await?;
        let meta = meta_of(&record)?;
        Ok(DeletedCertificate {
            record,
            meta,
            info,
            policy: None,
        })
    }

    /// Lists soft-deleted certificates.
    pub async fn list_deleted_certificates(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page<(VersionRecord, DeletedInfo)>> {
        self.list_deleted_objects(
            auth,
            vault,
            KIND,
            Operation::CertificateListDeleted,
            cursor,
            limit,
        )
        .await
    }

    /// Recovers a soft-deleted certificate with its key and secret.
    pub async fn recover_deleted_certificate(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        name: &ObjectName,
    ) -> Result<CertificateBundle> {
        let record = self
            .recover_object(
                auth,
                vault,
                &WITH_COMPANIONS,
                Operation::CertificateRecover,
                name,
            )
            .await?;
        let meta = meta_of(&record)?;
        Ok(CertificateBundle {
            record,
            meta,
            policy: None,
        })
    }

    /// Purges a soft-deleted certificate with its key, secret and policy.
    pub async fn purge_deleted_certificate(
        &self,
        auth: &Authorized,
        vault: &VaultRecord,
        name: &ObjectName,
    ) -> Result<()> {
        self.purge_object(
            auth,
            vault,
            &WITH_COMPANIONS,
            Operation::CertificatePurge,
            name,
        )
        .await
    }
}
