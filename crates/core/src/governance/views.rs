//! Vault objects as `Microsoft.KeyVault.Data` policies see them, and the
//! gate the service asks before it writes a new version.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Map, Value};

use super::aliases;
use super::time::iso;
use crate::certificate::{CertificatePolicy, CertificateTrigger};
use crate::ids::ObjectName;
use crate::key::{KeyMeta, KeyType};
use crate::object::{Attributes, ObjectKind};
use crate::vault::VaultRecord;
use crate::Result;

/// What a gate's approval leaves to do once the write has committed
/// (record the object's compliance).
#[async_trait]
pub trait Committed: Send + Sync {
    /// The write committed.
    async fn committed(&self);
}

/// Decides object writes before they happen (Azure Policy's data-plane
/// `Deny`); an approval may carry what to do once the write commits.
#[async_trait]
pub trait WriteGate: Send + Sync {
    /// Refuses the write (`Error::Forbidden` with `AzurePolicy`) or approves
    /// it.
    async fn check(
        &self,
        vault: &VaultRecord,
        kind: ObjectKind,
        name: &ObjectName,
        view: &Value,
    ) -> Result<Option<Arc<dyn Committed>>>;
}

fn attributes(a: &Attributes) -> Value {
    let mut m = Map::new();
    m.insert("createdOn".into(), json!(iso(a.created)));
    m.insert("enabled".into(), json!(a.enabled));
    if let Some(e) = a.exp {
        m.insert("expiresOn".into(), json!(iso(e)));
    }
    if let Some(n) = a.nbf {
        m.insert("notBefore".into(), json!(iso(n)));
    }
    Value::Object(m)
}

/// A secret version about to be written.
pub fn secret(name: &ObjectName, a: &Attributes, content_type: Option<&str>) -> Value {
    let mut v = Map::new();
    v.insert("type".into(), json!(aliases::SECRETS));
    v.insert("name".into(), json!(name.as_str()));
    v.insert("attributes".into(), attributes(a));
    v.insert("managed".into(), json!(false));
    if let Some(ct) = content_type.filter(|c| !c.is_empty()) {
        v.insert("contentType".into(), json!(ct));
    }
    Value::Object(v)
}

/// A key version about to be written; `rotation` is when its rotation
/// policy rotates it next, if it does.
pub fn key(name: &ObjectName, a: &Attributes, meta: &KeyMeta, rotation: Option<i64>) -> Value {
    let p = &meta.public;
    let mut kty = p.kty.as_str().to_owned();
    if meta.hsm {
        kty.push_str("-HSM");
    }
    let mut v = Map::new();
    v.insert("type".into(), json!(aliases::KEYS));
    v.insert("name".into(), json!(name.as_str()));
    v.insert("attributes".into(), attributes(a));
    v.insert("keyType".into(), json!(kty));
    v.insert("managed".into(), json!(false));
    if p.kty == KeyType::Rsa {
        let bits =
            p.n.as_deref()
                .map_or(0, |n| n.iter().skip_while(|b| **b == 0).count() * 8);
        v.insert("keySize".into(), json!(bits));
    }
    if let Some(c) = p.crv {
        v.insert("ellipticCurveName".into(), json!(c.as_str()));
    }
    if let Some(r) = rotation {
        v.insert("scheduledRotationDate".into(), json!(iso(r)));
    }
    Value::Object(v)
}

/// A certificate about to be created or imported under `policy`.
pub fn certificate(name: &ObjectName, policy: &CertificatePolicy, a: &Attributes) -> Value {
    let mut key_props = Map::new();
    key_props.insert("keyType".into(), json!(policy.kty.as_str()));
    if let Some(s) = policy.key_size {
        key_props.insert("keySize".into(), json!(s));
    }
    if let Some(c) = policy.curve {
        key_props.insert("ellipticCurveName".into(), json!(c.as_str()));
    }
    let cn = policy
        .subject
        .split(',')
        .find_map(|p| {
            let (k, v) = p.trim().split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("CN")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_default();
    let mut lifetime = Map::new();
    for la in &policy.lifetime_actions {
        match la.trigger {
            CertificateTrigger::DaysBeforeExpiry(d) => {
                lifetime.insert("daysBeforeExpiry".into(), json!(d));
            }
            CertificateTrigger::LifetimePercentage(p) => {
                lifetime.insert("lifetimePercentage".into(), json!(p));
            }
        }
    }
    json!({
        "type": aliases::CERTIFICATES,
        "name": name.as_str(),
        "attributes": attributes(a),
        "properties": {"validityInMonths": policy.validity_months},
        "keyProperties": Value::Object(key_props),
        "issuer": {"name": policy.issuer, "commonName": if policy.issuer.eq_ignore_ascii_case("Self") { cn } else { String::new() }},
        "lifetimeAction": Value::Object(lifetime),
    })
}
