//! Vault records as the data plane needs them: identity, soft-delete settings
//! and the wrapped data key that seals the vault's objects.

/// Default soft-delete retention.
pub const DEFAULT_RETENTION_DAYS: i64 = 90;

use serde::{Deserialize, Serialize};

/// Most access-policy entries a vault may have (Azure's limit).
pub const MAX_ACCESS_POLICIES: usize = 1024;

/// Permissions of an access-policy entry, per object type (wire names).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Permissions {
    /// Key permissions.
    #[serde(default)]
    pub keys: Vec<String>,
    /// Secret permissions.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Certificate permissions.
    #[serde(default)]
    pub certificates: Vec<String>,
    /// Storage permissions.
    #[serde(default)]
    pub storage: Vec<String>,
}

impl Permissions {
    /// The list for a category name (`keys`, `secrets`, …).
    pub fn of(&self, category: &str) -> &[String] {
        match category {
            "keys" => &self.keys,
            "secrets" => &self.secrets,
            "certificates" => &self.certificates,
            "storage" => &self.storage,
            _ => &[],
        }
    }

    /// The mutable list for a category name.
    pub fn of_mut(&mut self, category: &str) -> Option<&mut Vec<String>> {
        match category {
            "keys" => Some(&mut self.keys),
            "secrets" => Some(&mut self.secrets),
            "certificates" => Some(&mut self.certificates),
            "storage" => Some(&mut self.storage),
            _ => None,
        }
    }

    /// True if no permission is granted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
            && self.secrets.is_empty()
            && self.certificates.is_empty()
            && self.storage.is_empty()
    }
}

/// One vault access-policy entry.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessPolicy {
    /// Tenant of the principal.
    #[serde(rename = "tenantId")]
    pub tenant_id: String,
    /// The principal (user, group, service principal, managed identity).
    #[serde(rename = "objectId")]
    pub object_id: String,
    /// Compound identity: the entry matches only through this application.
    #[serde(
        rename = "applicationId",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub application_id: Option<String>,
    /// Permissions.
    pub permissions: Permissions,
}

/// Settings of a vault that authorization and the management plane use.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct VaultProperties {
    /// Azure RBAC decides; access policies are ignored.
    #[serde(rename = "enableRbacAuthorization", default)]
    pub rbac_authorization: bool,
    /// Access policies (used when RBAC is off).
    #[serde(rename = "accessPolicies", default)]
    pub access_policies: Vec<AccessPolicy>,
    /// ARM location (kept as given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// ARM tags.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub tags: std::collections::BTreeMap<String, String>,
    /// `enabledForDeployment`.
    #[serde(rename = "enabledForDeployment", default)]
    pub enabled_for_deployment: bool,
    /// `enabledForDiskEncryption`.
    #[serde(rename = "enabledForDiskEncryption", default)]
    pub enabled_for_disk_encryption: bool,
    /// `enabledForTemplateDeployment`.
    #[serde(rename = "enabledForTemplateDeployment", default)]
    pub enabled_for_template_deployment: bool,
    /// Network rules.
    #[serde(
        rename = "networkAcls",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub network_acls: Option<crate::vault_admin::NetworkAcls>,
    /// `Enabled` (default) or `Disabled`.
    #[serde(
        rename = "publicNetworkAccess",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub public_network_access: Option<String>,
    /// Set while the vault is soft-deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<crate::vault_admin::VaultDeletion>,
    /// Set for a Managed HSM pool (the other container type): what a vault
    /// has not.
    #[serde(
        rename = "managedHsm",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub managed_hsm: Option<ManagedHsmState>,
}

/// The Managed HSM sku (Azure's only one).
pub const MANAGED_HSM_SKU: &str = "Standard_B1";

/// A Managed HSM pool's own state.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ManagedHsmState {
    /// Object ids made Managed HSM Administrators at `/` when it was created.
    #[serde(rename = "initialAdminObjectIds", default)]
    pub initial_admin_object_ids: Vec<String>,
    /// The security domain, once the pool is activated (downloaded) or
    /// restored (uploaded); `None` before activation.
    #[serde(
        rename = "securityDomain",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub security_domain: Option<SecurityDomainState>,
    /// A security-domain operation (download or upload) and how it ended.
    #[serde(
        rename = "sdOperation",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub sd_operation: Option<SdOperation>,
    /// Local role assignments (the initial administrators' among them).
    #[serde(rename = "roleAssignments", default)]
    pub role_assignments: Vec<crate::managed_hsm::LocalAssignment>,
    /// Custom local role definitions.
    #[serde(rename = "roleDefinitions", default)]
    pub role_definitions: Vec<crate::managed_hsm::LocalRole>,
    /// The security domain as the download returned it (ciphertext to the
    /// customer's certificates only), so a download whose answer was lost is
    /// answered again, identically, when retried with the same certificates.
    #[serde(
        rename = "sdDownload",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub sd_download: Option<SdDownload>,
    /// The exchange key `init-recovery` handed out, until an upload uses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange: Option<ExchangeKey>,
    /// The latest full backup and restore jobs (at most 20), for their
    /// status URLs on any node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<PoolJob>,
    /// Pool settings (`KeyVaultSettingsClient`): name → value.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub settings: std::collections::BTreeMap<String, String>,
}

/// The security domain as the pool keeps it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SecurityDomainState {
    /// The domain's identity (a UUID), shared by every pool that holds it.
    pub id: String,
    /// The domain key (32 bytes), sealed under the master key with associated
    /// data naming the pool; it protects everything a full backup holds.
    #[serde(with = "b64")]
    pub sealed_key: Vec<u8>,
}

/// A full backup or restore of a pool, as its status URL reports it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PoolJob {
    /// 32 hex characters.
    pub id: String,
    /// `backup` or `restore`.
    pub kind: String,
    /// `InProgress`, `Succeeded` or `Failed`.
    pub status: String,
    /// What happened (`statusDetails`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
    /// Why it failed: (code, message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<(String, String)>,
    /// Unix seconds.
    pub start: i64,
    /// Unix seconds.
    pub end: i64,
    /// The backup folder's URL (backups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder_url: Option<String>,
}

/// A security domain download, kept for a retry.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SdDownload {
    /// The wrapping certificates' SHA-256 thumbprints, sorted.
    pub thumbprints: Vec<String>,
    /// The quorum.
    pub required: usize,
    /// The blob (JSON text).
    pub blob: String,
    /// When it was made (Unix seconds): a retry is answered for 15 minutes.
    #[serde(default)]
    pub made: i64,
}

/// The key a security domain upload is wrapped to.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExchangeKey {
    /// The private key (PKCS#8 DER), sealed like the domain key.
    #[serde(with = "b64")]
    pub sealed_private: Vec<u8>,
    /// Its self-signed certificate (DER).
    #[serde(with = "b64")]
    pub cert: Vec<u8>,
}

/// The last security-domain operation of a pool.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SdOperation {
    /// `download` or `upload`.
    pub kind: String,
    /// `Success`, `InProgress` or `Failed`.
    pub status: String,
    /// Why it failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
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

/// A vault as stored.
#[derive(Debug, Clone)]
pub struct VaultRecord {
    /// Stable internal id (a UUID); bound into every ciphertext's associated data.
    pub id: String,
    /// Vault name (lower case).
    pub name: crate::ids::VaultName,
    /// Owning tenant.
    pub tenant_id: String,
    /// ARM subscription the vault belongs to.
    pub subscription_id: String,
    /// Resource group name.
    pub resource_group: String,
    /// `standard` or `premium`.
    pub sku: String,
    /// Soft-delete retention (7–90 days).
    pub retention_days: i64,
    /// Purge protection on.
    pub purge_protection: bool,
    /// The vault's data key, wrapped by the master key.
    pub wrapped_key: Vec<u8>,
    /// Creation time, Unix seconds.
    pub created: i64,
    /// Authorization settings.
    pub properties: VaultProperties,
    /// Row version, moved by every settings write (compare-and-set); 0 for a
    /// record not read from the store.
    pub rev: i64,
}

impl VaultRecord {
    /// True for a Managed HSM pool, false for a vault.
    pub fn is_managed_hsm(&self) -> bool {
        self.properties.managed_hsm.is_some()
    }

    /// ARM's resource type: `Microsoft.KeyVault/vaults` or `…/managedHSMs`.
    pub fn resource_type(&self) -> &'static str {
        if self.is_managed_hsm() {
            "Microsoft.KeyVault/managedHSMs"
        } else {
            "Microsoft.KeyVault/vaults"
        }
    }

    /// True once a Managed HSM pool holds a security domain (vaults: always).
    pub fn is_activated(&self) -> bool {
        self.properties
            .managed_hsm
            .as_ref()
            .is_none_or(|m| m.security_domain.is_some())
    }

    /// The vault's (or pool's) ARM id.
    pub fn resource_id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/{}/{}",
            self.subscription_id,
            self.resource_group,
            self.resource_type(),
            self.name
        )
    }

    /// Azure's `recoveryLevel` for objects in this vault.
    pub fn recovery_level(&self) -> &'static str {
        // Azure: 90-day retention reports the plain forms, shorter the Customized ones.
        match (
            self.retention_days >= DEFAULT_RETENTION_DAYS,
            self.purge_protection,
        ) {
            (true, false) => "Recoverable+Purgeable",
            (true, true) => "Recoverable",
            (false, false) => "CustomizedRecoverable+Purgeable",
            (false, true) => "CustomizedRecoverable",
        }
    }

    /// Retention in seconds.
    pub fn retention_secs(&self) -> i64 {
        self.retention_days * 86_400
    }
}

/// How `accessPolicies/{op}` changes a vault's entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyEdit {
    /// Merge the permissions into the matching entry (or append it).
    Add,
    /// Overwrite the matching entry (or append it).
    Replace,
    /// Remove the listed permissions; drop an entry left with none.
    Remove,
}

const KEY_PERMISSIONS: &[&str] = &[
    "all",
    "encrypt",
    "decrypt",
    "wrapkey",
    "unwrapkey",
    "sign",
    "verify",
    "get",
    "list",
    "create",
    "update",
    "import",
    "delete",
    "backup",
    "restore",
    "recover",
    "purge",
    "release",
    "rotate",
    "getrotationpolicy",
    "setrotationpolicy",
];
const SECRET_PERMISSIONS: &[&str] = &[
    "all", "get", "list", "set", "delete", "backup", "restore", "recover", "purge",
];
const CERTIFICATE_PERMISSIONS: &[&str] = &[
    "all",
    "get",
    "list",
    "delete",
    "create",
    "import",
    "update",
    "managecontacts",
    "getissuers",
    "listissuers",
    "setissuers",
    "deleteissuers",
    "manageissuers",
    "recover",
    "purge",
    "backup",
    "restore",
];
const STORAGE_PERMISSIONS: &[&str] = &[
    "all",
    "get",
    "list",
    "delete",
    "set",
    "update",
    "regeneratekey",
    "getsas",
    "listsas",
    "deletesas",
    "setsas",
    "recover",
    "backup",
    "restore",
    "purge",
];
const CATEGORIES: &[(&str, &[&str])] = &[
    ("keys", KEY_PERMISSIONS),
    ("secrets", SECRET_PERMISSIONS),
    ("certificates", CERTIFICATE_PERMISSIONS),
    ("storage", STORAGE_PERMISSIONS),
];

fn same_identity(a: &AccessPolicy, b: &AccessPolicy) -> bool {
    a.object_id.eq_ignore_ascii_case(&b.object_id)
        && a.tenant_id.eq_ignore_ascii_case(&b.tenant_id)
        && match (&a.application_id, &b.application_id) {
            (None, None) => true,
            (Some(x), Some(y)) => x.eq_ignore_ascii_case(y),
            _ => false,
        }
}

/// Checks permission names (case-insensitive, Azure's lists) and identities.
pub fn validate_access_policies(entries: &[AccessPolicy]) -> crate::Result<()> {
    for e in entries {
        if e.object_id.trim().is_empty() || e.tenant_id.trim().is_empty() {
            return Err(crate::Error::BadParameter(
                "Each access policy needs tenantId and objectId.".into(),
            ));
        }
        for (category, allowed) in CATEGORIES {
            for p in e.permissions.of(category) {
                if !allowed.iter().any(|a| a.eq_ignore_ascii_case(p)) {
                    return Err(crate::Error::BadParameter(format!(
                        "The {category} permission '{}' is not valid.",
                        p.chars().take(64).collect::<String>()
                    )));
                }
            }
        }
    }
    Ok(())
}

impl VaultProperties {
    /// Applies an `accessPolicies/{op}` request.
    pub fn edit_access_policies(
        &mut self,
        edit: PolicyEdit,
        entries: &[AccessPolicy],
    ) -> crate::Result<()> {
        validate_access_policies(entries)?;
        for e in entries {
            let pos = self
                .access_policies
                .iter()
                .position(|x| same_identity(x, e));
            match (edit, pos) {
                (PolicyEdit::Add, Some(i)) => {
                    if let Some(existing) = self.access_policies.get_mut(i) {
                        for (category, _) in CATEGORIES {
                            if let Some(list) = existing.permissions.of_mut(category) {
                                for p in e.permissions.of(category) {
                                    if !list.iter().any(|x| x.eq_ignore_ascii_case(p)) {
                                        list.push(p.clone());
                                    }
                                }
                            }
                        }
                    }
                }
                (PolicyEdit::Add | PolicyEdit::Replace, None) => {
                    self.access_policies.push(e.clone())
                }
                (PolicyEdit::Replace, Some(i)) => {
                    if let Some(existing) = self.access_policies.get_mut(i) {
                        *existing = e.clone();
                    }
                }
                (PolicyEdit::Remove, Some(i)) => {
                    let mut empty = false;
                    if let Some(existing) = self.access_policies.get_mut(i) {
                        for (category, _) in CATEGORIES {
                            let gone = e.permissions.of(category).to_vec();
                            if let Some(list) = existing.permissions.of_mut(category) {
                                list.retain(|x| !gone.iter().any(|g| g.eq_ignore_ascii_case(x)));
                            }
                        }
                        empty = existing.permissions.is_empty();
                    }
                    if empty {
                        self.access_policies.remove(i);
                    }
                }
                (PolicyEdit::Remove, None) => {}
            }
        }
        if self.access_policies.len() > MAX_ACCESS_POLICIES {
            return Err(crate::Error::BadParameter(format!(
                "A vault may have at most {MAX_ACCESS_POLICIES} access policies."
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(obj: &str, secrets: &[&str]) -> AccessPolicy {
        AccessPolicy {
            tenant_id: "t".into(),
            object_id: obj.into(),
            application_id: None,
            permissions: Permissions {
                secrets: secrets.iter().map(|s| (*s).to_owned()).collect(),
                ..Default::default()
            },
        }
    }

    #[test]
    fn add_merges_remove_subtracts_replace_overwrites() {
        let mut p = VaultProperties::default();
        p.edit_access_policies(PolicyEdit::Add, &[entry("a", &["get"])])
            .unwrap();
        p.edit_access_policies(PolicyEdit::Add, &[entry("A", &["List", "get"])])
            .unwrap();
        assert_eq!(p.access_policies.len(), 1);
        assert_eq!(p.access_policies[0].permissions.secrets, ["get", "List"]);
        p.edit_access_policies(PolicyEdit::Replace, &[entry("a", &["set"])])
            .unwrap();
        assert_eq!(p.access_policies[0].permissions.secrets, ["set"]);
        p.edit_access_policies(PolicyEdit::Remove, &[entry("a", &["SET"])])
            .unwrap();
        assert!(p.access_policies.is_empty());
        assert!(p
            .edit_access_policies(PolicyEdit::Add, &[entry("b", &["fly"])])
            .is_err());
    }
}
