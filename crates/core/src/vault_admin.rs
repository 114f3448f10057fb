//! Vault management (the ARM `Microsoft.KeyVault/vaults` resource): create or
//! update with Azure's validation rules, soft delete of a whole vault,
//! deleted-vault listing, recovery (`createMode: recover`), purge (which
//! destroys the vault's data key first — crypto-shredding — then its rows)
//! and name availability. Authorization is the caller's (the management
//! plane checks the ARM action before calling).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::ids::VaultName;
use crate::service::VaultService;
use crate::vault::{
    validate_access_policies, AccessPolicy, VaultProperties, VaultRecord, MAX_ACCESS_POLICIES,
};

/// Shortest and longest soft-delete retention.
pub const RETENTION_DAYS: std::ops::RangeInclusive<i64> = 7..=90;
const MAX_IP_RULES: usize = 1000;
const MAX_VNET_RULES: usize = 200;

/// An IP firewall rule: an IPv4 address or CIDR range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpRule {
    /// `203.0.113.7` or `203.0.113.0/24`.
    pub value: String,
}

/// A virtual-network rule: a subnet id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualNetworkRule {
    /// The subnet's ARM id.
    pub id: String,
    /// Accept the rule even if the subnet lacks the KeyVault service endpoint.
    #[serde(
        rename = "ignoreMissingVnetServiceEndpoint",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ignore_missing_vnet_service_endpoint: Option<bool>,
}

/// A vault's network rules (stored and validated here; enforced by the
/// network layer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkAcls {
    /// `AzureServices` or `None`.
    #[serde(default = "default_bypass")]
    pub bypass: String,
    /// `Allow` or `Deny`.
    #[serde(rename = "defaultAction", default = "default_action")]
    pub default_action: String,
    /// IP rules.
    #[serde(rename = "ipRules", default)]
    pub ip_rules: Vec<IpRule>,
    /// Virtual-network rules.
    #[serde(rename = "virtualNetworkRules", default)]
    pub virtual_network_rules: Vec<VirtualNetworkRule>,
}

impl NetworkAcls {
    /// Whether an IP rule admits `ip` (IPv4, or IPv4-mapped IPv6).
    pub fn ip_allowed(&self, ip: std::net::IpAddr) -> bool {
        let v4 = match ip {
            std::net::IpAddr::V4(a) => a,
            std::net::IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(m) => m,
                None => return false,
            },
        };
        let ip = u32::from(v4);
        self.ip_rules.iter().any(|r| {
            let (addr, prefix) = match r.value.split_once('/') {
                Some((a, p)) => (a, p.parse::<u32>().unwrap_or(33)),
                None => (r.value.as_str(), 32),
            };
            let Ok(net) = addr.parse::<std::net::Ipv4Addr>() else {
                return false;
            };
            if prefix > 32 {
                return false;
            }
            let mask = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - prefix)
            };
            (ip & mask) == (u32::from(net) & mask)
        })
    }
}

fn default_bypass() -> String {
    "AzureServices".into()
}

fn default_action() -> String {
    "Allow".into()
}

/// A soft-deleted vault's bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaultDeletion {
    /// When it was deleted.
    pub deleted_date: i64,
    /// When it will be purged.
    pub scheduled_purge_date: i64,
}

/// What a caller asks of a vault (`None` keeps the current value, or the
/// default on create).
#[derive(Debug, Default, Clone)]
pub struct VaultSpec {
    /// Location.
    pub location: Option<String>,
    /// Tags.
    pub tags: Option<BTreeMap<String, String>>,
    /// Tenant id (must be the deployment's).
    pub tenant_id: Option<String>,
    /// `standard` or `premium`.
    pub sku: Option<String>,
    /// Access policies.
    pub access_policies: Option<Vec<AccessPolicy>>,
    /// RBAC on.
    pub enable_rbac_authorization: Option<bool>,
    /// Soft delete (cannot be turned off).
    pub enable_soft_delete: Option<bool>,
    /// Retention, 7–90 days.
    pub soft_delete_retention_in_days: Option<i64>,
    /// Purge protection (cannot be turned off).
    pub enable_purge_protection: Option<bool>,
    /// Deployment flags.
    pub enabled_for_deployment: Option<bool>,
    /// Disk encryption flag.
    pub enabled_for_disk_encryption: Option<bool>,
    /// Template deployment flag.
    pub enabled_for_template_deployment: Option<bool>,
    /// Network rules.
    pub network_acls: Option<NetworkAcls>,
    /// `Enabled` or `Disabled`.
    pub public_network_access: Option<String>,
    /// `default` or `recover`.
    pub create_mode: Option<String>,
    /// Whether the caller may switch the vault between RBAC and access
    /// policies: it holds `Microsoft.Authorization/roleAssignments/write`
    /// at the vault's scope without a condition. Not part of the body; the
    /// management plane sets it after its authorization check.
    pub may_change_permission_model: bool,
    /// The request addresses a Managed HSM pool (`managedHSMs`), not a vault.
    pub managed_hsm: bool,
    /// A pool's `initialAdminObjectIds` (required to create one).
    pub initial_admin_object_ids: Option<Vec<String>>,
}

/// Why a management request is refused, with ARM's error code.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// 400.
    #[error("{1}")]
    BadRequest(&'static str, String),
    /// 409.
    #[error("{1}")]
    Conflict(&'static str, String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// An Azure Policy assignment refused the write: the ARM `error`
    /// object (`RequestDisallowedByPolicy` with its policy details).
    #[error("The request was disallowed by policy.")]
    Disallowed(Box<serde_json::Value>),
    /// Anything else.
    #[error(transparent)]
    Core(#[from] Error),
}

/// Looks at a vault write before it is stored: may change the record (a
/// policy's `Modify`) or refuse it. Its second argument is the request's
/// `createMode`.
pub type VaultGuard<'a> = &'a (dyn Fn(&mut VaultRecord, Option<&str>) -> std::result::Result<(), AdminError>
         + Send
         + Sync);

/// A management refusal where only a domain error can be reported (a
/// background pass, a job): domain errors pass through, the management
/// plane's own refusals become `Unavailable` with their message.
impl From<AdminError> for Error {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::Core(e) => e,
            other => Error::Unavailable(other.to_string()),
        }
    }
}

impl From<crate::store::StoreError> for AdminError {
    fn from(e: crate::store::StoreError) -> Self {
        Self::Core(e.into())
    }
}

type AdminResult<T> = std::result::Result<T, AdminError>;

fn bad(code: &'static str, msg: impl Into<String>) -> AdminError {
    AdminError::BadRequest(code, msg.into())
}

/// The body's tenant, if given (required to create), must be this
/// deployment's.
fn check_tenant(spec: &VaultSpec, tenant_id: &str, required: bool) -> AdminResult<()> {
    match &spec.tenant_id {
        Some(t) if !t.eq_ignore_ascii_case(tenant_id) => Err(bad(
            "BadRequest",
            format!(
                "The tenant '{}' is not this deployment's tenant.",
                t.chars().take(64).collect::<String>()
            ),
        )),
        None if required => Err(bad("BadRequest", "properties.tenantId is required.")),
        _ => Ok(()),
    }
}

fn valid_ipv4_rule(v: &str) -> bool {
    let (addr, prefix) = match v.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (v, None),
    };
    addr.parse::<std::net::Ipv4Addr>().is_ok()
        && prefix.is_none_or(|p| p.parse::<u8>().is_ok_and(|n| n <= 32) && !p.starts_with('+'))
}

fn validate_network_acls(acls: &NetworkAcls) -> AdminResult<()> {
    if !["AzureServices", "None"].contains(&acls.bypass.as_str()) {
        return Err(bad(
            "BadRequest",
            "networkAcls.bypass must be AzureServices or None.",
        ));
    }
    if !["Allow", "Deny"].contains(&acls.default_action.as_str()) {
        return Err(bad(
            "BadRequest",
            "networkAcls.defaultAction must be Allow or Deny.",
        ));
    }
    if acls.ip_rules.len() > MAX_IP_RULES || acls.virtual_network_rules.len() > MAX_VNET_RULES {
        return Err(bad("BadRequest", "Too many network rules."));
    }
    for r in &acls.ip_rules {
        if !valid_ipv4_rule(&r.value) {
            return Err(bad(
                "BadRequest",
                format!(
                    "The IP rule '{}' is not an IPv4 address or CIDR range.",
                    r.value.chars().take(64).collect::<String>()
                ),
            ));
        }
    }
    for r in &acls.virtual_network_rules {
        let lower = r.id.to_ascii_lowercase();
        if !(lower.starts_with("/subscriptions/")
            && lower.contains("/providers/microsoft.network/virtualnetworks/")
            && lower.contains("/subnets/"))
        {
            return Err(bad(
                "BadRequest",
                format!(
                    "The virtual network rule '{}' is not a subnet id.",
                    r.id.chars().take(200).collect::<String>()
                ),
            ));
        }
    }
    Ok(())
}

impl VaultService {
    /// Creates a vault or updates one in `sub`/`rg` (`createMode: recover`
    /// brings back a soft-deleted vault). Returns the vault and whether it is
    /// new.
    pub async fn put_vault(
        &self,
        sub: &str,
        rg: &str,
        name: &VaultName,
        tenant_id: &str,
        spec: VaultSpec,
    ) -> AdminResult<(VaultRecord, bool)> {
        self.put_vault_guarded(sub, rg, name, tenant_id, spec, &|_, _| Ok(()))
            .await
    }

    /// `put_vault`, with `guard` looking at each attempt's resulting record
    /// just before it is written (so what it approves is what is stored).
    pub async fn put_vault_guarded(
        &self,
        sub: &str,
        rg: &str,
        name: &VaultName,
        tenant_id: &str,
        spec: VaultSpec,
        guard: VaultGuard<'_>,
    ) -> AdminResult<(VaultRecord, bool)> {
        for _ in 0..crate::service::CAS_ATTEMPTS {
            if let Some(done) = self
                .put_vault_once(sub, rg, name, tenant_id, spec.clone(), guard)
                .await?
            {
                return Ok(done);
            }
        }
        Err(changed_meanwhile(name))
    }

    /// One attempt of `put_vault` from a fresh read; `None` if the vault
    /// changed between the read and the write (compare-and-set lost).
    async fn put_vault_once(
        &self,
        sub: &str,
        rg: &str,
        name: &VaultName,
        tenant_id: &str,
        spec: VaultSpec,
        guard: VaultGuard<'_>,
    ) -> AdminResult<Option<(VaultRecord, bool)>> {
        let existing = self.store.get_vault(name).await?;
        let recover = spec
            .create_mode
            .as_deref()
            .is_some_and(|m| m.eq_ignore_ascii_case("recover"));
        if let Some(mode) = spec.create_mode.as_deref() {
            if !mode.eq_ignore_ascii_case("recover") && !mode.eq_ignore_ascii_case("default") {
                return Err(bad("BadRequest", "createMode must be default or recover."));
            }
        }
        if let Some(v) = &existing {
            if v.is_managed_hsm() != spec.managed_hsm {
                return Err(AdminError::Conflict(
                    "ConflictError",
                    format!(
                        "The name '{name}' is already in use by a {} of this deployment.",
                        if v.is_managed_hsm() {
                            "managed HSM"
                        } else {
                            "vault"
                        }
                    ),
                ));
            }
        }
        match &existing {
            Some(v) if v.properties.deleted.is_some() => {
                if !recover {
                    return Err(AdminError::Conflict(
                        "ConflictError",
                        format!("A vault with the same name already exists in deleted state. You need to either recover or purge existing key vault '{name}'."),
                    ));
                }
                if !same_place(v, sub, rg) {
                    return Err(AdminError::Conflict(
                        "ConflictError",
                        "The deleted vault belongs to another resource group; recover it there."
                            .into(),
                    ));
                }
                // A recovered vault comes back as it was deleted: the body's
                // other properties (clients send a default sku and model, as
                // `az keyvault recover` does) are not applied.
                check_tenant(&spec, tenant_id, false)?;
                let mut v = v.clone();
                v.properties.deleted = None;
                guard(&mut v, Some("recover"))?;
                Ok(self.replace(v).await?.map(|v| (v, false)))
            }
            Some(v) => {
                if !same_place(v, sub, rg) {
                    return Err(AdminError::Conflict(
                        "VaultAlreadyExists",
                        format!("The vault name '{name}' is already in use."),
                    ));
                }
                if recover {
                    return Err(AdminError::NotFound(format!(
                        "No deleted vault '{name}' to recover."
                    )));
                }
                let mut v = v.clone();
                let mode = spec.create_mode.clone();
                self.apply(&mut v, tenant_id, spec, false)?;
                guard(&mut v, mode.as_deref())?;
                Ok(self.replace(v).await?.map(|v| (v, false)))
            }
            None => {
                if recover {
                    return Err(AdminError::NotFound(format!(
                        "No deleted vault '{name}' to recover."
                    )));
                }
                let id = crate::ids::Version::random().to_string();
                let id = format!(
                    "{}-{}-{}-{}-{}",
                    &id[..8],
                    &id[8..12],
                    &id[12..16],
                    &id[16..20],
                    &id[20..]
                );
                let mut v = VaultRecord {
                    id: id.clone(),
                    name: name.clone(),
                    tenant_id: tenant_id.to_owned(),
                    subscription_id: sub.to_owned(),
                    resource_group: rg.to_owned(),
                    sku: "standard".into(),
                    retention_days: crate::vault::DEFAULT_RETENTION_DAYS,
                    purge_protection: false,
                    wrapped_key: self.barrier.new_data_key(&id)?,
                    created: self.clock.now(),
                    properties: VaultProperties::default(),
                    rev: 0,
                };
                if spec.managed_hsm {
                    v.sku = crate::vault::MANAGED_HSM_SKU.into();
                    v.properties.managed_hsm = Some(crate::vault::ManagedHsmState::default());
                }
                let mode = spec.create_mode.clone();
                self.apply(&mut v, tenant_id, spec, true)?;
                guard(&mut v, mode.as_deref())?;
                match self.store.create_vault(&v).await {
                    Ok(()) => Ok(Some((v, true))),
                    // Created by a racing PUT: read again (an update if it
                    // is in the same place, a conflict if not).
                    Err(crate::store::StoreError::NameExists { .. }) => Ok(None),
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    /// Applies a spec to a vault, with Azure's rules.
    fn apply(
        &self,
        v: &mut VaultRecord,
        tenant_id: &str,
        spec: VaultSpec,
        create: bool,
    ) -> AdminResult<()> {
        check_tenant(&spec, tenant_id, create)?;
        if v.is_managed_hsm() {
            crate::managed_hsm::apply_pool_spec(v, &spec, create).map_err(AdminError::Core)?;
        } else if let Some(sku) = &spec.sku {
            let sku = sku.to_ascii_lowercase();
            if sku != "standard" && sku != "premium" {
                return Err(bad("BadRequest", "sku.name must be standard or premium."));
            }
            v.sku = sku;
        } else if create {
            return Err(bad("BadRequest", "properties.sku is required."));
        }
        if spec.enable_soft_delete == Some(false) {
            return Err(bad(
                "BadRequest",
                "Soft delete cannot be disabled: every vault keeps deleted objects for its retention period.",
            ));
        }
        if let Some(days) = spec.soft_delete_retention_in_days {
            if !RETENTION_DAYS.contains(&days) {
                return Err(bad(
                    "BadRequest",
                    "The property \"softDeleteRetentionInDays\" must be between 7 and 90.",
                ));
            }
            if !create && days != v.retention_days && v.purge_protection {
                return Err(bad(
                    "BadRequest",
                    "softDeleteRetentionInDays cannot change once purge protection is on.",
                ));
            }
            v.retention_days = days;
        }
        match spec.enable_purge_protection {
            Some(false) if v.purge_protection => {
                return Err(bad(
                    "BadRequest",
                    "The property \"enablePurgeProtection\" cannot be set to false. Enabling the purge protection for a vault is an irreversible action.",
                ))
            }
            Some(false) => {
                return Err(bad(
                    "BadRequest",
                    "The property \"enablePurgeProtection\" can only be set to true or omitted.",
                ))
            }
            Some(true) => v.purge_protection = true,
            None => {}
        }
        if let Some(policies) = spec.access_policies {
            if policies.len() > MAX_ACCESS_POLICIES {
                return Err(bad("BadRequest", "Too many access policies."));
            }
            validate_access_policies(&policies).map_err(AdminError::Core)?;
            v.properties.access_policies = policies;
        }
        let p = &mut v.properties;
        if let Some(r) = spec.enable_rbac_authorization {
            // Azure: switching the permission model is a change of who can
            // read the vault's data, so it needs the right to grant access
            // (Owner, User Access Administrator), not just vaults/write.
            if !create && r != p.rbac_authorization && !spec.may_change_permission_model {
                return Err(bad(
                    "InsufficientPermissions",
                    "Caller is not allowed to change permission model. The caller needs the action 'Microsoft.Authorization/roleAssignments/write' at the vault's scope through a role without conditions (Owner or User Access Administrator).",
                ));
            }
            p.rbac_authorization = r;
        }
        if let Some(l) = spec.location {
            if l.trim().is_empty() || l.len() > 64 {
                return Err(bad("LocationRequired", "A location is required."));
            }
            p.location = Some(l);
        } else if create {
            return Err(bad(
                "LocationRequired",
                "The location property is required for this definition.",
            ));
        }
        if let Some(tags) = spec.tags {
            if tags.len() > 50 || tags.iter().any(|(k, val)| k.len() > 512 || val.len() > 256) {
                return Err(bad(
                    "InvalidTag",
                    "At most 50 tags; names up to 512, values up to 256 characters.",
                ));
            }
            p.tags = tags;
        }
        if let Some(b) = spec.enabled_for_deployment {
            p.enabled_for_deployment = b;
        }
        if let Some(b) = spec.enabled_for_disk_encryption {
            p.enabled_for_disk_encryption = b;
        }
        if let Some(b) = spec.enabled_for_template_deployment {
            p.enabled_for_template_deployment = b;
        }
        if let Some(acls) = spec.network_acls {
            validate_network_acls(&acls)?;
            p.network_acls = Some(acls);
        }
        if let Some(pna) = spec.public_network_access {
            let canonical = if pna.eq_ignore_ascii_case("enabled") {
                "Enabled"
            } else if pna.eq_ignore_ascii_case("disabled") {
                "Disabled"
            } else {
                return Err(bad(
                    "BadRequest",
                    "publicNetworkAccess must be Enabled or Disabled.",
                ));
            };
            p.public_network_access = Some(canonical.to_owned());
        }
        Ok(())
    }

    /// Writes `v` if the vault is still at the row version it was read at;
    /// the written record (its row version moved), or `None` on a lost race.
    pub(crate) async fn replace(&self, v: VaultRecord) -> AdminResult<Option<VaultRecord>> {
        self.replace_reporting(v, None).await
    }

    /// `replace`, recording `event` with the write.
    async fn replace_reporting(
        &self,
        mut v: VaultRecord,
        event: Option<crate::events::EventType>,
    ) -> AdminResult<Option<VaultRecord>> {
        let events: Vec<_> = event
            .and_then(|e| self.vault_event(e, &v))
            .into_iter()
            .collect();
        if !self.store.replace_vault_with(&v, &events).await? {
            return Ok(None);
        }
        self.events_committed(!events.is_empty());
        v.rev += 1;
        Ok(Some(v))
    }

    /// Reads the vault again (by name, the same vault id), for a retry.
    pub(crate) async fn reread(&self, v: &VaultRecord) -> AdminResult<Option<VaultRecord>> {
        Ok(self
            .store
            .get_vault(&v.name)
            .await?
            .filter(|now| now.id == v.id))
    }

    /// Soft-deletes a vault: its objects become unreachable with it, and come
    /// back on recovery. A compare-and-set: a vault changed meanwhile is read
    /// again (one already deleted or gone is left as it is).
    pub async fn delete_vault(&self, v: &VaultRecord) -> AdminResult<()> {
        let mut current = Some(v.clone());
        for _ in 0..crate::service::CAS_ATTEMPTS {
            let Some(mut v) = current.filter(|v| v.properties.deleted.is_none()) else {
                return Ok(());
            };
            let now = self.clock.now();
            v.properties.deleted = Some(VaultDeletion {
                deleted_date: now,
                scheduled_purge_date: now + v.retention_secs(),
            });
            if self.replace(v.clone()).await?.is_some() {
                return Ok(());
            }
            current = self.reread(&v).await?;
        }
        Err(changed_meanwhile(&v.name))
    }

    /// Edits a vault's access policies (`accessPolicies/{add|replace|remove}`)
    /// as a compare-and-set on the vault read, read again after a lost race,
    /// so two concurrent edits both land and a stale read never undoes a
    /// change of permission model. Returns the vault as written.
    pub async fn edit_access_policies(
        &self,
        v: &VaultRecord,
        edit: crate::vault::PolicyEdit,
        entries: &[crate::vault::AccessPolicy],
        guard: VaultGuard<'_>,
    ) -> AdminResult<VaultRecord> {
        let mut current = v.clone();
        for _ in 0..crate::service::CAS_ATTEMPTS {
            let mut next = current.clone();
            next.properties.edit_access_policies(edit, entries)?;
            guard(&mut next, None)?;
            let changed = Some(crate::events::EventType::VaultAccessPolicyChanged);
            if let Some(written) = self.replace_reporting(next, changed).await? {
                return Ok(written);
            }
            current = self
                .reread(&current)
                .await?
                .filter(|v| v.properties.deleted.is_none())
                .ok_or_else(|| {
                    AdminError::NotFound(format!("Vault '{}' was not found.", v.name))
                })?;
        }
        Err(changed_meanwhile(&v.name))
    }

    /// Every vault of a subscription (live or deleted), by name.
    pub async fn vaults_of(&self, sub: &str) -> AdminResult<Vec<VaultRecord>> {
        Ok(self
            .store
            .list_vaults()
            .await?
            .into_iter()
            .filter(|v| v.subscription_id.eq_ignore_ascii_case(sub))
            .collect())
    }

    /// Purges a soft-deleted vault: its row with the wrapped data key
    /// (crypto-shredding: every ciphertext of the vault becomes unreadable
    /// at once) and its objects and policies, in one transaction, only while
    /// it is still the deleted vault read — a recover racing the purge wins
    /// or loses whole, never leaving a live vault without its key.
    pub async fn purge_vault(&self, v: &VaultRecord) -> AdminResult<()> {
        let not_found =
            || AdminError::NotFound(format!("Deleted vault '{}' was not found.", v.name));
        let mut current = v.clone();
        for _ in 0..crate::service::CAS_ATTEMPTS {
            if current.properties.deleted.is_none() {
                return Err(not_found());
            }
            let now = self.clock.now();
            if current.purge_protection
                && current
                    .properties
                    .deleted
                    .is_some_and(|d| now < d.scheduled_purge_date)
            {
                return Err(AdminError::Conflict(
                    "ConflictError",
                    format!(
                        "Vault '{}' has purge protection: it is purged automatically at the end of its retention period.",
                        current.name
                    ),
                ));
            }
            if running_pool_jobs(&current, now) > 0 {
                return Err(AdminError::Conflict(
                    "Conflict",
                    format!(
                        "The managed HSM '{}' is running a backup or restore job; purge it when the job has ended.",
                        current.name
                    ),
                ));
            }
            if self.purge_row(&current).await? {
                return Ok(());
            }
            current = self.reread(&current).await?.ok_or_else(not_found)?;
        }
        Err(changed_meanwhile(&v.name))
    }

    /// Purges `v` if it is still at the row version read, then forgets its
    /// key and destroys its HSM keys; whether it was purged.
    async fn purge_row(&self, v: &VaultRecord) -> AdminResult<bool> {
        let doomed = self.vault_hardware_refs(v).await?;
        if !self.store.purge_vault(&v.id, v.rev).await? {
            return Ok(false);
        }
        self.barrier.forget(&v.id);
        self.destroy_hardware(&doomed);
        Ok(true)
    }

    /// Re-wraps every vault's data key under the barrier's current master
    /// key (after `Barrier::rotate_master`), online: each swap is a
    /// compare-and-set, and passes repeat (at most five) until one finds
    /// nothing left, so a vault created or changed meanwhile is caught too.
    /// Returns `(rewrapped, vaults seen)`.
    pub async fn rewrap_vault_keys(&self) -> crate::error::Result<(u64, u64)> {
        let mut rewrapped = 0;
        for _ in 0..5 {
            // A pass that found nothing to do ends it; anything swapped (or
            // lost to a concurrent change) is looked at once more.
            let mut pending = false;
            let vaults = self.store.list_vaults().await?;
            let seen = vaults.len() as u64;
            let mut unopened = 0u64;
            for v in vaults {
                if v.wrapped_key.is_empty() {
                    continue; // shredded: purged a moment ago
                }
                // One key that does not open (under a key this node lacks)
                // must not stop the others from moving: it is counted and
                // reported after the pass.
                let new = match self.barrier.rewrap_data_key(&v.id, &v.wrapped_key) {
                    Ok(Some(new)) => new,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(vault = %v.name, error = %e, "vault data key does not open; not re-wrapped");
                        unopened += 1;
                        continue;
                    }
                };
                pending = true;
                if self
                    .store
                    .replace_wrapped_key(&v.id, &v.wrapped_key, &new)
                    .await?
                {
                    rewrapped += 1;
                }
            }
            if unopened > 0 {
                return Err(crate::error::Error::Unavailable(format!(
                    "{unopened} vault data keys do not open with this node's master keys; the rest were re-wrapped"
                )));
            }
            if !pending {
                return Ok((rewrapped, seen));
            }
        }
        Err(crate::error::Error::Unavailable(
            "vault keys kept changing during master key rotation; run it again".into(),
        ))
    }

    /// Purges every soft-deleted vault past its retention; run periodically.
    pub async fn purge_expired_vaults(&self) -> crate::error::Result<u64> {
        let now = self.clock.now();
        let mut n = 0;
        for v in self.store.list_vaults().await? {
            // A pool running a job is purged on a pass after the job ends
            // (the job writes into the pool until then).
            if v.properties
                .deleted
                .is_some_and(|d| d.scheduled_purge_date <= now)
                && running_pool_jobs(&v, now) == 0
            {
                // A vault recovered since the listing is left alone; one
                // otherwise changed is purged on the next pass.
                if self.purge_row(&v).await? {
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// Whether a vault name can be used: `(available, reason, message)`.
    pub async fn vault_name_availability(
        &self,
        name: &str,
    ) -> AdminResult<(bool, Option<&'static str>, Option<String>)> {
        let Ok(vname) = name.parse::<VaultName>() else {
            return Ok((
                false,
                Some("AccountNameInvalid"),
                Some(format!(
                    "Vault name '{}' is invalid. A vault name must be between 3-24 alphanumeric characters. The name must begin with a letter, end with a letter or digit, and not contain consecutive hyphens.",
                    name.chars().take(64).collect::<String>()
                )),
            ));
        };
        Ok(match self.store.get_vault(&vname).await? {
            None => (true, None, None),
            Some(_) => (
                false,
                Some("AlreadyExists"),
                Some(format!("The vault name '{vname}' is already in use. Vault names are globally unique so it is possible that the name is already taken. If you are sure that the vault name was not taken then it is possible that a vault with the same name was recently deleted but not purged after being placed in a recoverable state. If the vault is in a recoverable state then the vault will need to be explicitly purged before reusing the name.")),
            ),
        })
    }
}

/// 409 after a vault kept changing under a compare-and-set.
fn changed_meanwhile(name: &VaultName) -> AdminError {
    AdminError::Conflict(
        "Conflict",
        format!("The vault '{name}' was changed by another request at the same time; retry."),
    )
}

fn same_place(v: &VaultRecord, sub: &str, rg: &str) -> bool {
    v.subscription_id.eq_ignore_ascii_case(sub) && v.resource_group.eq_ignore_ascii_case(rg)
}

/// Backup or restore jobs a managed HSM pool runs (0 for a vault): a pool
/// is not purged under a running job, which writes into it.
fn running_pool_jobs(v: &VaultRecord, now: i64) -> usize {
    v.properties
        .managed_hsm
        .as_ref()
        .map_or(0, |m| crate::managed_hsm::running_jobs(m, now))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deny(rules: &[&str]) -> VaultProperties {
        VaultProperties {
            network_acls: Some(NetworkAcls {
                bypass: "None".into(),
                default_action: "Deny".into(),
                ip_rules: rules
                    .iter()
                    .map(|r| IpRule { value: (*r).into() })
                    .collect(),
                virtual_network_rules: Vec::new(),
            }),
            ..VaultProperties::default()
        }
    }

    #[test]
    fn firewall_matches_addresses_and_ranges() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let acls = |rules: &[&str]| deny(rules).network_acls.unwrap_or_else(|| unreachable!());
        let p = acls(&["203.0.113.0/24", "198.51.100.7", "192.0.2.128/25"]);
        assert!(p.ip_allowed(ip("203.0.113.200")));
        assert!(p.ip_allowed(ip("198.51.100.7")));
        assert!(p.ip_allowed(ip("::ffff:198.51.100.7")));
        assert!(p.ip_allowed(ip("192.0.2.129")));
        assert!(!p.ip_allowed(ip("192.0.2.127")));
        assert!(!p.ip_allowed(ip("198.51.100.8")));
        assert!(!p.ip_allowed(ip("::1")));
        assert!(acls(&["0.0.0.0/0"]).ip_allowed(ip("10.1.2.3")));
        for bad in ["1.2.3", "1.2.3.4/33", "1.2.3.4/+8", "::1", "a.b.c.d"] {
            assert!(!valid_ipv4_rule(bad), "{bad}");
        }
    }
}
