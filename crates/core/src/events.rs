//! Change events (Azure Event Grid's Key Vault events): the domain emits them
//! through the `EventSink` port when a version is created or an object nears
//! expiry; delivery to subscribers is the server's business.

use serde::{Deserialize, Serialize};

/// Key Vault event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    /// A new secret version.
    SecretNewVersionCreated,
    /// A secret nears its expiry.
    SecretNearExpiry,
    /// A secret has expired.
    SecretExpired,
    /// A new key version.
    KeyNewVersionCreated,
    /// A key nears its expiry.
    KeyNearExpiry,
    /// A key has expired.
    KeyExpired,
    /// A new certificate version.
    CertificateNewVersionCreated,
    /// A certificate nears its expiry.
    CertificateNearExpiry,
    /// A certificate has expired.
    CertificateExpired,
    /// A vault's access policies changed.
    VaultAccessPolicyChanged,
}

impl EventType {
    /// Azure's full name, `Microsoft.KeyVault.SecretNewVersionCreated`, ….
    pub fn azure_name(self) -> &'static str {
        match self {
            Self::SecretNewVersionCreated => "Microsoft.KeyVault.SecretNewVersionCreated",
            Self::SecretNearExpiry => "Microsoft.KeyVault.SecretNearExpiry",
            Self::SecretExpired => "Microsoft.KeyVault.SecretExpired",
            Self::KeyNewVersionCreated => "Microsoft.KeyVault.KeyNewVersionCreated",
            Self::KeyNearExpiry => "Microsoft.KeyVault.KeyNearExpiry",
            Self::KeyExpired => "Microsoft.KeyVault.KeyExpired",
            Self::CertificateNewVersionCreated => "Microsoft.KeyVault.CertificateNewVersionCreated",
            Self::CertificateNearExpiry => "Microsoft.KeyVault.CertificateNearExpiry",
            Self::CertificateExpired => "Microsoft.KeyVault.CertificateExpired",
            Self::VaultAccessPolicyChanged => "Microsoft.KeyVault.VaultAccessPolicyChanged",
        }
    }

    /// Every type (for validating subscription filters).
    pub const ALL: [EventType; 10] = [
        Self::SecretNewVersionCreated,
        Self::SecretNearExpiry,
        Self::SecretExpired,
        Self::KeyNewVersionCreated,
        Self::KeyNearExpiry,
        Self::KeyExpired,
        Self::CertificateNewVersionCreated,
        Self::CertificateNearExpiry,
        Self::CertificateExpired,
        Self::VaultAccessPolicyChanged,
    ];
}

/// One change event, as the domain knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeEvent {
    /// What happened.
    pub event_type: EventType,
    /// The vault's name.
    pub vault_name: String,
    /// The vault's ARM id (the event's topic).
    pub vault_id: String,
    /// `Secret`, `Key`, `Certificate` or `Vault`.
    pub object_type: &'static str,
    /// The object's name (empty for vault events).
    pub object_name: String,
    /// The version concerned (empty for vault events).
    pub version: String,
    /// The version's not-before, Unix seconds.
    pub nbf: Option<i64>,
    /// The version's expiry, Unix seconds.
    pub exp: Option<i64>,
    /// When it happened, Unix seconds.
    pub time: i64,
}

/// Where the domain sends change events (non-blocking; delivery is
/// asynchronous and never fails the operation that caused the event).
pub trait EventSink: Send + Sync {
    /// Queues an event.
    fn emit(&self, event: ChangeEvent);
}
