//! Authorization decisions. For now one rule: only the bootstrap principal may
//! act, on any vault of its tenant. RBAC and access policies replace this
//! `Authorizer` without touching handlers.

use keyhaven_core::{Authorizer, Error, Operation, Principal, Result, VaultRecord};

/// Allows exactly one principal (the bootstrap service principal).
#[derive(Debug, Clone)]
pub struct BootstrapAuthorizer {
    object_id: String,
}

impl BootstrapAuthorizer {
    /// Allows `object_id` only.
    pub fn new(object_id: &str) -> Self {
        Self {
            object_id: object_id.to_owned(),
        }
    }
}

impl Authorizer for BootstrapAuthorizer {
    fn check(
        &self,
        principal: &Principal,
        vault: &VaultRecord,
        operation: Operation,
        _object: Option<&str>,
    ) -> Result<()> {
        if principal.object_id == self.object_id && principal.tenant_id == vault.tenant_id {
            return Ok(());
        }
        let (category, perm) = operation.permission();
        Err(Error::Forbidden(format!(
            "The user, group or application 'appid={};oid={}' does not have {category} {perm} permission on key vault '{}'.",
            principal.app_id.as_deref().unwrap_or("-"),
            principal.object_id,
            vault.name
        )))
    }
}
