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
pub struct VaultPropertiesOut {
    /// Tenant.
    #[serde(rename = "tenantId")]
    pub tenant_id: String,
    /// SKU.
    pub sku: Sku,
    /// Access policies.
    #[serde(rename = "accessPolicies")]
    pub access_policies: Vec<keyhaven_core::vault::AccessPolicy>,
    /// Data-plane URL.
    #[serde(rename = "vaultUri")]
    pub vault_uri: String,
    /// RBAC on.
    #[serde(rename = "enableRbacAuthorization")]
    pub enable_rbac_authorization: bool,
    /// Always true.
    #[serde(rename = "enableSoftDelete")]
    pub enable_soft_delete: bool,
    /// Retention.
    #[serde(rename = "softDeleteRetentionInDays")]
    pub soft_delete_retention_in_days: i64,
    /// Purge protection (`null` when off, as ARM returns it).
    #[serde(rename = "enablePurgeProtection")]
    pub enable_purge_protection: Option<bool>,
    /// `Succeeded`.
    #[serde(rename = "provisioningState")]
    pub provisioning_state: &'static str,
    /// `Enabled`.
    #[serde(rename = "publicNetworkAccess")]
    pub public_network_access: &'static str,
}

/// A SKU.
#[derive(Debug, Serialize)]
pub struct Sku {
    /// `A`.
    pub family: &'static str,
    /// `standard` or `premium`.
    pub name: String,
}

/// `PATCH` body of a vault (the properties handled so far).
#[derive(Debug, Deserialize)]
pub struct PatchVault {
    /// Properties.
    #[serde(default)]
    pub properties: Option<PatchVaultProperties>,
}

/// Patchable vault properties.
#[derive(Debug, Deserialize)]
pub struct PatchVaultProperties {
    /// Switch the permission model.
    #[serde(rename = "enableRbacAuthorization")]
    pub enable_rbac_authorization: Option<bool>,
    /// Replace all access policies.
    #[serde(rename = "accessPolicies")]
    pub access_policies: Option<Vec<keyhaven_core::vault::AccessPolicy>>,
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
