//! Change events (Azure Event Grid's Key Vault events). The domain records
//! them in the store's outbox in the same transaction as the change they
//! describe (a new version, a finished expiry job, an access-policy edit),
//! so a committed change always has its event and a rolled-back one never
//! does; it then tells the `EventSink` that there is something to deliver.
//! Delivery from the outbox to subscribers is the server's business, through
//! the `OutboxStore` port: any node may claim a due entry, and an entry is
//! removed only once delivered or dead-lettered (at least once).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::resource::ResourceRecord;
use crate::store::StoreResult;

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
    /// Keyhaven: a just-in-time role was activated (or a time-bound
    /// assignment began) at the vault.
    RoleAssignmentActivated,
    /// Keyhaven: such an assignment ended.
    RoleAssignmentExpired,
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
            Self::RoleAssignmentActivated => "Keyhaven.Authorization.RoleAssignmentActivated",
            Self::RoleAssignmentExpired => "Keyhaven.Authorization.RoleAssignmentExpired",
        }
    }

    /// Every type (for validating subscription filters).
    pub const ALL: [EventType; 12] = [
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
        Self::RoleAssignmentActivated,
        Self::RoleAssignmentExpired,
    ];
}

/// One change event, as the domain knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeEvent {
    /// The event's id (a GUID): Event Grid's `id`, the same on every
    /// delivery attempt so that subscribers can drop duplicates.
    pub id: String,
    /// What happened.
    pub event_type: EventType,
    /// The vault's name.
    pub vault_name: String,
    /// The vault's ARM id (the event's topic).
    pub vault_id: String,
    /// `Secret`, `Key`, `Certificate`, `Vault` or `RoleAssignment`.
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

impl EventType {
    /// The type named by `azure_name` (as stored).
    pub fn from_azure_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.azure_name() == name)
    }
}

impl ChangeEvent {
    /// The stored form (JSON text), as the outbox keeps it.
    pub fn to_json(&self) -> String {
        json!({
            "id": self.id,
            "eventType": self.event_type.azure_name(),
            "vaultName": self.vault_name,
            "vaultId": self.vault_id,
            "objectType": self.object_type,
            "objectName": self.object_name,
            "version": self.version,
            "nbf": self.nbf,
            "exp": self.exp,
            "time": self.time,
        })
        .to_string()
    }

    /// Reads the stored form back; `None` if it is not one.
    pub fn from_json(text: &str) -> Option<Self> {
        let v: Value = serde_json::from_str(text).ok()?;
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        let object_type = match v.get("objectType")?.as_str()? {
            "Secret" => "Secret",
            "Key" => "Key",
            "Certificate" => "Certificate",
            "Vault" => "Vault",
            "RoleAssignment" => "RoleAssignment",
            _ => return None,
        };
        Some(Self {
            id: s("id")?,
            event_type: EventType::from_azure_name(v.get("eventType")?.as_str()?)?,
            vault_name: s("vaultName")?,
            vault_id: s("vaultId")?,
            object_type,
            object_name: s("objectName")?,
            version: s("version")?,
            nbf: v.get("nbf").and_then(Value::as_i64),
            exp: v.get("exp").and_then(Value::as_i64),
            time: v.get("time")?.as_i64()?,
        })
    }
}

/// The ARM type of event subscriptions. A store records an event only
/// while its vault has one: a resource of this type whose id is under the
/// vault's ARM id (checked in the recording transaction), so vaults nobody
/// listens to cost no outbox traffic.
pub const SUBSCRIPTION_TYPE: &str = "Microsoft.EventGrid/eventSubscriptions";

/// What the domain tells about recorded events. Recording is the store's,
/// in the transaction of the change; this only says when to look.
pub trait EventSink: Send + Sync {
    /// Events were committed to the outbox: deliver them soon. Never
    /// blocks and never fails the operation.
    fn committed(&self);
}

/// One entry of the outbox, as claimed for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxItem {
    /// The event.
    pub event: ChangeEvent,
    /// Empty for an event not yet matched to subscriptions; otherwise the
    /// ARM id of the one subscription this entry is a delivery to.
    pub subscription: String,
    /// Failed delivery attempts so far.
    pub attempts: u32,
    /// The claim this copy was handed out under: a settlement counts only
    /// while the entry is still under it.
    pub claim: String,
}

/// How a claimed entry ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settle {
    /// Delivered, or nothing to deliver: the entry goes.
    Done,
    /// An event becomes one delivery per subscription id (none: it goes).
    FanOut(Vec<String>),
    /// A failed attempt: tried again from `due` (the store's clock unit,
    /// milliseconds), by any node.
    Retry {
        /// When the next attempt is due, Unix milliseconds.
        due: i64,
        /// What went wrong (kept for the dead letter; never the URL).
        last_error: String,
    },
    /// Given up: the entry goes and the dead letter is written, in one
    /// transaction.
    DeadLetter(ResourceRecord),
    /// Not attempted (its subscription already has enough in flight):
    /// handed back, due again from `due`, its attempts unchanged.
    Release {
        /// When it is due again, Unix milliseconds.
        due: i64,
    },
}

/// The outbox of change events, shared by every node.
#[async_trait]
pub trait OutboxStore: Send + Sync {
    /// Records events outside any other change (idempotent by event id;
    /// only for vaults with a subscription, as with a change).
    async fn enqueue_events(&self, events: &[ChangeEvent]) -> StoreResult<()>;
    /// Claims up to `limit` entries due at `now` (Unix milliseconds) and not
    /// under another unexpired claim, for `claim` until `lease_until`,
    /// oldest due first. Across nodes, an entry is handed to one claim at a
    /// time. An entry that is not an event this node can read is set aside
    /// (never due again), not returned.
    async fn claim_events(
        &self,
        now: i64,
        lease_until: i64,
        claim: &str,
        limit: u32,
    ) -> StoreResult<Vec<OutboxItem>>;
    /// Settles a claimed entry; false (nothing written) if it is no longer
    /// under `item.claim` (the lease ended and another node took it).
    async fn settle_event(&self, item: &OutboxItem, outcome: &Settle) -> StoreResult<bool>;
    /// How many entries the outbox holds (events and deliveries).
    async fn outbox_len(&self) -> StoreResult<u64>;
}
