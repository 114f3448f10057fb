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
