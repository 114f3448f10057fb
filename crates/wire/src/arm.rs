//! Azure Resource Manager shapes for the resources Keyhaven serves on its
//! management plane so far: user-assigned managed identities, workloads, and
//! the ARM error body.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// ARM's error body: `{"error":{"code","message"}}`.
#[derive(Debug, Serialize)]
pub struct ArmError {
    /// The error.
    pub error: ArmErrorDetail,
}

/// Detail of an ARM error.
#[derive(Debug, Serialize)]
pub struct ArmErrorDetail {
    /// e.g. `ResourceNotFound`, `AuthorizationFailed`.
    pub code: &'static str,
    /// Human-readable message.
    pub message: String,
}

/// A user-assigned identity resource.
#[derive(Debug, Serialize)]
pub struct UserAssignedIdentity {
    /// ARM id.
    pub id: String,
    /// Name.
    pub name: String,
    /// `Microsoft.ManagedIdentity/userAssignedIdentities`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Location.
    pub location: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Properties.
    pub properties: IdentityProperties,
}

/// Properties of a user-assigned identity.
#[derive(Debug, Serialize)]
pub struct IdentityProperties {
    /// Tenant.
    #[serde(rename = "tenantId")]
    pub tenant_id: String,
    /// Principal (object) id.
    #[serde(rename = "principalId")]
    pub principal_id: String,
    /// Client (application) id.
    #[serde(rename = "clientId")]
    pub client_id: String,
}

/// A workload resource.
#[derive(Debug, Serialize)]
pub struct Workload {
    /// ARM id.
    pub id: String,
    /// Name.
    pub name: String,
    /// `Keyhaven.Compute/workloads`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Location.
    pub location: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Properties.
    pub properties: WorkloadProperties,
    /// Managed identities.
    pub identity: ManagedServiceIdentity,
}

/// Properties of a workload.
#[derive(Debug, Serialize, Deserialize, Default)]
pub struct WorkloadProperties {
    /// Source addresses.
    #[serde(default)]
    pub addresses: Vec<String>,
}

/// ARM's `identity` block.
#[derive(Debug, Serialize)]
pub struct ManagedServiceIdentity {
    /// `None`, `SystemAssigned`, `UserAssigned` or `SystemAssigned, UserAssigned`.
    #[serde(rename = "type")]
    pub kind: String,
    /// System-assigned principal id.
    #[serde(rename = "principalId", skip_serializing_if = "Option::is_none")]
    pub principal_id: Option<String>,
    /// Tenant (with a system-assigned identity).
    #[serde(rename = "tenantId", skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// User-assigned identities by ARM id.
    #[serde(
        rename = "userAssignedIdentities",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub user_assigned: BTreeMap<String, UserAssignedRef>,
}

/// A user-assigned identity attached to a resource.
#[derive(Debug, Serialize)]
pub struct UserAssignedRef {
    /// Principal id.
    #[serde(rename = "principalId")]
    pub principal_id: String,
    /// Client id.
    #[serde(rename = "clientId")]
    pub client_id: String,
}

/// `PUT` body of a user-assigned identity.
#[derive(Debug, Deserialize)]
pub struct PutIdentity {
    /// Location (required by ARM).
    pub location: Option<String>,
    /// Tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// `PUT` body of a workload.
#[derive(Debug, Deserialize)]
pub struct PutWorkload {
    /// Location.
    pub location: Option<String>,
    /// Tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Properties.
    #[serde(default)]
    pub properties: WorkloadProperties,
    /// Identity.
    #[serde(default)]
    pub identity: Option<IdentityInput>,
}

/// Requested `identity` block.
#[derive(Debug, Deserialize)]
pub struct IdentityInput {
    /// Comma-separated identity types.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// User-assigned identities by ARM id (values ignored).
    #[serde(rename = "userAssignedIdentities", default)]
    pub user_assigned: BTreeMap<String, serde_json::Value>,
}

impl IdentityInput {
    /// Whether the types include `SystemAssigned`.
    pub fn system_assigned(&self) -> bool {
        self.kinds()
            .any(|k| k.eq_ignore_ascii_case("SystemAssigned"))
    }

    /// Whether the types include `UserAssigned`.
    pub fn user_assigned_enabled(&self) -> bool {
        self.kinds().any(|k| k.eq_ignore_ascii_case("UserAssigned"))
    }

    fn kinds(&self) -> impl Iterator<Item = &str> {
        self.kind.split(',').map(str::trim)
    }
}

/// Result of rotating the token signing key.
#[derive(Debug, Serialize)]
pub struct RotatedKey {
    /// The new key id.
    pub kid: String,
}

/// Result of rotating the master key.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RotatedMasterKey {
    /// The id of the master key that now seals.
    pub key_id: u32,
    /// Its fingerprint.
    pub fingerprint: String,
    /// True when another node had already rotated to `key_id` and this one
    /// adopted it instead of making a rival key.
    pub adopted: bool,
    /// Vault data keys re-wrapped by this rotation.
    pub vault_keys_rewrapped: u64,
    /// Vaults in the deployment (all of whose keys are now under `key_id`).
    pub vaults: u64,
    /// Whether the token signing keys were re-sealed.
    pub signing_keys_rewrapped: bool,
}

/// The master keys and what still uses each (`masterKeyUsage`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MasterKeyUsage {
    /// The id of the key that seals.
    pub current: u32,
    /// Every key in this node's keyring, oldest first.
    pub keys: Vec<MasterKeyUse>,
    /// Master-sealed data in the store under an id this node does not hold.
    pub unknown: Vec<MasterKeyUse>,
}

/// One master key and what in the store is sealed under it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MasterKeyUse {
    /// Its id.
    pub id: u32,
    /// Its fingerprint (empty for an unknown id).
    pub fingerprint: String,
    /// Vault data keys wrapped under it (live and soft-deleted vaults).
    pub vault_keys: u64,
    /// Whether the token signing keys are sealed under it.
    pub signing_keys: bool,
}

/// A role definition resource.
#[derive(Debug, Serialize)]
pub struct RoleDefinitionOut {
    /// ARM id.
    pub id: String,
    /// GUID.
    pub name: String,
    /// `Microsoft.Authorization/roleDefinitions`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Properties.
    pub properties: serde_json::Value,
}

/// A role assignment resource.
#[derive(Debug, Serialize)]
pub struct RoleAssignmentOut {
    /// ARM id.
    pub id: String,
    /// GUID.
    pub name: String,
    /// `Microsoft.Authorization/roleAssignments`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Properties.
    pub properties: RoleAssignmentProps,
}

/// Properties of a role assignment resource.
#[derive(Debug, Serialize, Deserialize)]
pub struct RoleAssignmentProps {
    /// Role definition id.
    #[serde(rename = "roleDefinitionId", default)]
    pub role_definition_id: String,
    /// Principal.
    #[serde(rename = "principalId", default)]
    pub principal_id: String,
    /// Principal type.
    #[serde(
        rename = "principalType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub principal_type: Option<String>,
    /// Scope.
    #[serde(default)]
    pub scope: String,
    /// ABAC condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// Condition language version.
    #[serde(
        rename = "conditionVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub condition_version: Option<String>,
}

/// `PUT …/roleAssignments/{name}` body.
#[derive(Debug, Deserialize)]
pub struct PutRoleAssignment {
    /// Properties.
    pub properties: Option<RoleAssignmentProps>,
}

/// `PUT …/roleDefinitions/{id}` body.
#[derive(Debug, Deserialize)]
pub struct PutRoleDefinition {
    /// Properties (roleName, description, assignableScopes, permissions).
    pub properties: Option<serde_json::Value>,
}

/// A list of ARM resources.
#[derive(Debug, Serialize)]
pub struct ArmList<T> {
    /// Items.
    pub value: Vec<T>,
}

/// A vault resource (the properties this version of Keyhaven keeps).
#[derive(Debug, Serialize)]
pub struct VaultOut {
    /// ARM id.
    pub id: String,
    /// Name.
    pub name: String,
    /// `Microsoft.KeyVault/vaults`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Location.
    pub location: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Properties.
    pub properties: VaultPropertiesOut,
}

/// Vault properties.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VaultPropertiesOut {
    /// Tenant.
    pub tenant_id: String,
    /// SKU.
    pub sku: Sku,
    /// Access policies.
    pub access_policies: Vec<keyhaven_core::vault::AccessPolicy>,
    /// Data-plane URL.
    pub vault_uri: String,
    /// `enabledForDeployment`.
    pub enabled_for_deployment: bool,
    /// `enabledForDiskEncryption`.
    pub enabled_for_disk_encryption: bool,
    /// `enabledForTemplateDeployment`.
    pub enabled_for_template_deployment: bool,
    /// RBAC on.
    pub enable_rbac_authorization: bool,
    /// Always true.
    pub enable_soft_delete: bool,
    /// Retention.
    pub soft_delete_retention_in_days: i64,
    /// Purge protection (`null` when off, as ARM returns it).
    pub enable_purge_protection: Option<bool>,
    /// Network rules, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_acls: Option<keyhaven_core::vault_admin::NetworkAcls>,
    /// `Succeeded`.
    pub provisioning_state: &'static str,
    /// `Enabled` or `Disabled`.
    pub public_network_access: String,
    /// Private endpoint connections (on GET).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_endpoint_connections: Option<Vec<serde_json::Value>>,
}

/// A SKU.
#[derive(Debug, Serialize)]
pub struct Sku {
    /// `A`.
    pub family: &'static str,
    /// `standard` or `premium`.
    pub name: String,
}

/// `PUT` (VaultCreateOrUpdateParameters) and `PATCH` (VaultPatchParameters)
/// body of a vault.
#[derive(Debug, Deserialize)]
pub struct PutVault {
    /// Location (PUT).
    pub location: Option<String>,
    /// Tags.
    pub tags: Option<BTreeMap<String, String>>,
    /// Properties.
    #[serde(default)]
    pub properties: Option<VaultPropertiesIn>,
}

/// A SKU as sent.
#[derive(Debug, Deserialize)]
pub struct SkuIn {
    /// `standard` or `premium`.
    pub name: Option<String>,
}

/// Vault properties as sent.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct VaultPropertiesIn {
    tenant_id: Option<String>,
    sku: Option<SkuIn>,
    access_policies: Option<Vec<keyhaven_core::vault::AccessPolicy>>,
    enabled_for_deployment: Option<bool>,
    enabled_for_disk_encryption: Option<bool>,
    enabled_for_template_deployment: Option<bool>,
    enable_soft_delete: Option<bool>,
    soft_delete_retention_in_days: Option<i64>,
    enable_rbac_authorization: Option<bool>,
    enable_purge_protection: Option<bool>,
    network_acls: Option<keyhaven_core::vault_admin::NetworkAcls>,
    public_network_access: Option<String>,
    create_mode: Option<String>,
}

impl From<PutVault> for keyhaven_core::vault_admin::VaultSpec {
    fn from(b: PutVault) -> Self {
        let p = b.properties.unwrap_or_default();
        Self {
            location: b.location,
            tags: b.tags,
            tenant_id: p.tenant_id,
            sku: p.sku.and_then(|s| s.name),
            access_policies: p.access_policies,
            enable_rbac_authorization: p.enable_rbac_authorization,
            enable_soft_delete: p.enable_soft_delete,
            soft_delete_retention_in_days: p.soft_delete_retention_in_days,
            enable_purge_protection: p.enable_purge_protection,
            enabled_for_deployment: p.enabled_for_deployment,
            enabled_for_disk_encryption: p.enabled_for_disk_encryption,
            enabled_for_template_deployment: p.enabled_for_template_deployment,
            network_acls: p.network_acls,
            public_network_access: p.public_network_access,
            create_mode: p.create_mode,
            may_change_permission_model: false,
            managed_hsm: false,
            initial_admin_object_ids: None,
        }
    }
}

/// `PUT` / `PATCH` body of a managed HSM pool (`Microsoft.KeyVault/managedHSMs`).
#[derive(Debug, Deserialize)]
pub struct PutManagedHsm {
    /// Location (PUT).
    pub location: Option<String>,
    /// Tags.
    pub tags: Option<BTreeMap<String, String>>,
    /// SKU (`Standard_B1`), at the top level as ARM has it for pools.
    pub sku: Option<SkuIn>,
    /// Properties.
    #[serde(default)]
    pub properties: Option<ManagedHsmPropertiesIn>,
}

/// Pool properties as sent.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ManagedHsmPropertiesIn {
    tenant_id: Option<String>,
    initial_admin_object_ids: Option<Vec<String>>,
    enable_soft_delete: Option<bool>,
    /// A number, or (Azure CLI 2.91) the number as a string.
    soft_delete_retention_in_days: Option<serde_json::Value>,
    enable_purge_protection: Option<bool>,
    network_acls: Option<keyhaven_core::vault_admin::NetworkAcls>,
    public_network_access: Option<String>,
    create_mode: Option<String>,
}

impl PutManagedHsm {
    /// The request as the domain's spec; a retention that is no integer is a 400.
    pub fn into_spec(self) -> Result<keyhaven_core::vault_admin::VaultSpec, String> {
        let p = self.properties.unwrap_or_default();
        let retention = match p.soft_delete_retention_in_days {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::Number(n)) => Some(
                n.as_i64()
                    .ok_or("softDeleteRetentionInDays must be an integer.")?,
            ),
            Some(serde_json::Value::String(s)) => Some(
                s.trim()
                    .parse::<i64>()
                    .map_err(|_| "softDeleteRetentionInDays must be an integer.")?,
            ),
            Some(_) => return Err("softDeleteRetentionInDays must be an integer.".into()),
        };
        Ok(keyhaven_core::vault_admin::VaultSpec {
            location: self.location,
            tags: self.tags,
            tenant_id: p.tenant_id,
            sku: self.sku.and_then(|s| s.name),
            enable_soft_delete: p.enable_soft_delete,
            soft_delete_retention_in_days: retention,
            enable_purge_protection: p.enable_purge_protection,
            network_acls: p.network_acls,
            public_network_access: p.public_network_access,
            create_mode: p.create_mode,
            managed_hsm: true,
            initial_admin_object_ids: p.initial_admin_object_ids,
            ..Default::default()
        })
    }
}

/// A managed HSM pool resource.
#[derive(Debug, Serialize)]
pub struct ManagedHsmOut {
    /// SKU (`{"family":"B","name":"Standard_B1"}`).
    pub sku: Sku,
    /// ARM id.
    pub id: String,
    /// Name.
    pub name: String,
    /// `Microsoft.KeyVault/managedHSMs`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Location.
    pub location: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Properties.
    pub properties: ManagedHsmPropertiesOut,
}

/// Pool properties.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ManagedHsmPropertiesOut {
    /// Tenant.
    pub tenant_id: String,
    /// `https://{name}.managedhsm.{domain}[:port]/`.
    pub hsm_uri: String,
    /// The administrators named at creation.
    pub initial_admin_object_ids: Vec<String>,
    /// Always true.
    pub enable_soft_delete: bool,
    /// Retention.
    pub soft_delete_retention_in_days: i64,
    /// Purge protection.
    pub enable_purge_protection: bool,
    /// `Succeeded`.
    pub provisioning_state: &'static str,
    /// What the provisioning state means.
    pub status_message: &'static str,
    /// Network rules.
    pub network_acls: keyhaven_core::vault_admin::NetworkAcls,
    /// `Enabled` or `Disabled`.
    pub public_network_access: String,
    /// Extra regions (none).
    pub regions: Vec<serde_json::Value>,
    /// Activation.
    pub security_domain_properties: SecurityDomainProperties,
}

/// `securityDomainProperties` of a pool.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityDomainProperties {
    /// `Active` or `NotActivated`.
    pub activation_status: &'static str,
    /// What it means.
    pub activation_status_message: &'static str,
}

impl SecurityDomainProperties {
    /// Azure's texts for an activated pool or one that is not.
    pub fn of(active: bool) -> Self {
        if active {
            Self {
                activation_status: "Active",
                activation_status_message:
                    "Your HSM has been activated and can be used for cryptographic operations.",
            }
        } else {
            Self {
                activation_status: "NotActivated",
                activation_status_message: "Your HSM has been provisioned, but cannot be used for cryptographic operations until it is activated. To activate the HSM, download the security domain.",
            }
        }
    }
}

/// A soft-deleted pool.
#[derive(Debug, Serialize)]
pub struct DeletedManagedHsmOut {
    /// `/subscriptions/{sub}/providers/Microsoft.KeyVault/locations/{loc}/deletedManagedHSMs/{name}`.
    pub id: String,
    /// Name.
    pub name: String,
    /// `Microsoft.KeyVault/deletedManagedHSMs`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Properties.
    pub properties: DeletedManagedHsmProperties,
}

/// Properties of a soft-deleted pool.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeletedManagedHsmProperties {
    /// The pool's resource id.
    pub mhsm_id: String,
    /// Location.
    pub location: String,
    /// ISO 8601.
    pub deletion_date: String,
    /// ISO 8601.
    pub scheduled_purge_date: String,
    /// Purge protection.
    pub purge_protection_enabled: bool,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

/// A soft-deleted vault.
#[derive(Debug, Serialize)]
pub struct DeletedVaultOut {
    /// `/subscriptions/{sub}/providers/Microsoft.KeyVault/locations/{loc}/deletedVaults/{name}`.
    pub id: String,
    /// Name.
    pub name: String,
    /// `Microsoft.KeyVault/deletedVaults`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Properties.
    pub properties: DeletedVaultProperties,
}

/// Properties of a soft-deleted vault.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeletedVaultProperties {
    /// The vault's resource id.
    pub vault_id: String,
    /// Location.
    pub location: String,
    /// ISO 8601.
    pub deletion_date: String,
    /// ISO 8601.
    pub scheduled_purge_date: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Purge protection.
    pub purge_protection_enabled: bool,
}

/// `checkNameAvailability` body.
#[derive(Debug, Deserialize)]
pub struct CheckName {
    /// The name.
    pub name: Option<String>,
    /// `Microsoft.KeyVault/vaults`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

/// `checkNameAvailability` result.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NameAvailability {
    /// Whether the name can be used.
    pub name_available: bool,
    /// `AccountNameInvalid` or `AlreadyExists`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// Why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A resource group.
#[derive(Debug, Serialize)]
pub struct ResourceGroupOut {
    /// `/subscriptions/{sub}/resourceGroups/{name}`.
    pub id: String,
    /// Name.
    pub name: String,
    /// `Microsoft.Resources/resourceGroups`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Location.
    pub location: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// `{"provisioningState":"Succeeded"}`.
    pub properties: ProvisioningState,
}

/// `{"provisioningState": …}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProvisioningState {
    /// `Succeeded` or `Deleting`.
    pub provisioning_state: &'static str,
}

/// `PUT` body of a resource group.
#[derive(Debug, Deserialize)]
pub struct PutResourceGroup {
    /// Location.
    pub location: Option<String>,
    /// Tags.
    pub tags: Option<BTreeMap<String, String>>,
}

/// A subscription.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionOut {
    /// `/subscriptions/{id}`.
    pub id: String,
    /// The id.
    pub subscription_id: String,
    /// The tenant.
    pub tenant_id: String,
    /// Display name.
    pub display_name: String,
    /// `Enabled`.
    pub state: &'static str,
    /// Policies.
    pub subscription_policies: SubscriptionPolicies,
    /// `Legacy`.
    pub authorization_source: &'static str,
}

/// Subscription policies (fixed).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionPolicies {
    /// `local`.
    pub location_placement_id: &'static str,
    /// `Internal_2014-09-01`.
    pub quota_id: &'static str,
    /// `Off`.
    pub spending_limit: &'static str,
}

/// A generic resource (for `/subscriptions/{sub}/resources`).
#[derive(Debug, Serialize)]
pub struct GenericResourceOut {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Type.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Location.
    pub location: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

/// `PUT …/accessPolicies/{op}` body and response properties.
#[derive(Debug, Deserialize, Serialize)]
pub struct AccessPolicyUpdate {
    /// The entries.
    #[serde(rename = "accessPolicies", default)]
    pub access_policies: Vec<keyhaven_core::vault::AccessPolicy>,
}

/// `PUT …/accessPolicies/{op}` body.
#[derive(Debug, Deserialize)]
pub struct PutAccessPolicies {
    /// Properties.
    pub properties: Option<AccessPolicyUpdate>,
}

/// `…/accessPolicies/{op}` response.
#[derive(Debug, Serialize)]
pub struct AccessPoliciesOut {
    /// `{vault id}/accessPolicies/`.
    pub id: String,
    /// `Microsoft.KeyVault/vaults/accessPolicies`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The vault's access policies after the change.
    pub properties: AccessPolicyUpdate,
}

/// ARM's cloud metadata (`GET /metadata/endpoints?api-version=2022-09-01`),
/// the document `az cloud register --endpoint-resource-manager` reads to learn
/// every other endpoint of a cloud (as Azure Stack serves it).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CloudMetadata {
    /// The cloud's name.
    pub name: String,
    /// The ARM endpoint.
    pub resource_manager: String,
    /// How to get a token for ARM.
    pub authentication: CloudAuthentication,
    /// The Microsoft Graph endpoint (and token audience).
    pub microsoft_graph_resource_id: String,
    /// Legacy AAD Graph audience (Keyhaven has only Microsoft Graph).
    pub graph_audience: String,
    /// Legacy AAD Graph endpoint.
    pub graph: String,
    /// The Log Analytics query API (endpoint and token audience).
    pub log_analytics_resource_id: String,
    /// Host suffixes.
    pub suffixes: CloudSuffixes,
}

/// `authentication` of [`CloudMetadata`].
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CloudAuthentication {
    /// The authority host.
    pub login_endpoint: String,
    /// Accepted ARM token audiences; the CLI asks for the first.
    pub audiences: Vec<String>,
    /// `common`.
    pub tenant: String,
    /// `AAD`.
    pub identity_provider: &'static str,
}

/// `suffixes` of [`CloudMetadata`].
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CloudSuffixes {
    /// `vault.{domain}[:port]`: vault hosts are `{name}.` + this.
    pub key_vault_dns: String,
    /// `managedhsm.{domain}[:port]`: pool hosts are `{name}.` + this.
    pub mhsm_dns: String,
}

/// A tenant of `GET /tenants`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantOut {
    /// `/tenants/{id}`.
    pub id: String,
    /// The tenant id.
    pub tenant_id: String,
    /// `Home`.
    pub tenant_category: &'static str,
    /// Display name.
    pub display_name: String,
    /// Verified domains.
    pub domains: Vec<String>,
    /// The default domain.
    pub default_domain: String,
    /// `AAD`.
    pub tenant_type: &'static str,
}
