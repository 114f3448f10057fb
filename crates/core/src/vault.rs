//! Vault records as the data plane needs them: identity, soft-delete settings
//! and the wrapped data key that seals the vault's objects.

/// Default soft-delete retention.
pub const DEFAULT_RETENTION_DAYS: i64 = 90;

/// A vault as stored.
#[derive(Debug, Clone)]
pub struct VaultRecord {
    /// Stable internal id (a UUID); bound into every ciphertext's associated data.
    pub id: String,
    /// Vault name (lower case).
    pub name: crate::ids::VaultName,
    /// Owning tenant.
    pub tenant_id: String,
    /// ARM location of the subscription/resource group.
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
}

impl VaultRecord {
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
