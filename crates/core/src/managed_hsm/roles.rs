//! The Managed HSM built-in local roles, exactly as the service lists them
//! (`builtin_roles.json`: names, GUIDs, data actions and order taken from
//! recorded responses of Azure's Managed HSM, api-version 2025-07-01).

use std::sync::OnceLock;

use serde::Deserialize;

use super::{LocalPermission, LocalRole};

/// Managed HSM Administrator.
pub const ADMINISTRATOR: &str = "a290e904-7015-4bba-90c8-60543313cdb4";
/// Managed HSM Crypto Officer.
pub const CRYPTO_OFFICER: &str = "515eb02d-2335-4d2d-92f2-b1cbdf9c3778";
/// Managed HSM Crypto User.
pub const CRYPTO_USER: &str = "21dbd100-6940-42c2-9190-5d6cb909625b";

/// Prefix of every Managed HSM data action.
pub const ACTION_PREFIX: &str = "Microsoft.KeyVault/managedHsm/";

#[derive(Deserialize)]
struct Wire {
    name: String,
    properties: WireProps,
}

#[derive(Deserialize)]
struct WireProps {
    #[serde(rename = "assignableScopes")]
    assignable_scopes: Vec<String>,
    description: String,
    permissions: Vec<LocalPermission>,
    #[serde(rename = "roleName")]
    role_name: String,
    #[serde(rename = "type")]
    kind: String,
}

/// The built-in roles, in the service's order.
pub fn builtin() -> &'static [LocalRole] {
    static ROLES: OnceLock<Vec<LocalRole>> = OnceLock::new();
    ROLES.get_or_init(|| {
        let wire: Vec<Wire> =
            serde_json::from_str(include_str!("builtin_roles.json")).unwrap_or_default();
        wire.into_iter()
            .map(|w| LocalRole {
                name: w.name,
                role_name: w.properties.role_name,
                description: w.properties.description,
                kind: w.properties.kind,
                permissions: w.properties.permissions,
                assignable_scopes: w.properties.assignable_scopes,
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_roles_parse_with_their_actions() {
        let roles = builtin();
        assert_eq!(roles.len(), 10);
        let admin = roles.iter().find(|r| r.name == ADMINISTRATOR).unwrap();
        assert_eq!(admin.role_name, "Managed HSM Administrator");
        assert!(admin.allows("Microsoft.KeyVault/managedHsm/securitydomain/download/action"));
        assert!(!admin.allows("Microsoft.KeyVault/managedHsm/keys/encrypt/action"));
        let user = roles.iter().find(|r| r.name == CRYPTO_USER).unwrap();
        assert!(user.allows("Microsoft.KeyVault/managedHsm/keys/encrypt/action"));
        assert!(user.allows("Microsoft.KeyVault/managedHsm/rng/action"));
        assert!(!user.allows("Microsoft.KeyVault/managedHsm/keys/deletedKeys/delete"));
        assert!(roles.iter().any(|r| r.name == CRYPTO_OFFICER));
    }
}
