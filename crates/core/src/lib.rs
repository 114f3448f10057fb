//! Keyhaven's domain core: typed identifiers, the versioned-object core shared by
//! secrets, keys and certificates, vault records, and the ports the outer crates
//! implement. It knows nothing of HTTP, SQL or concrete cryptography.

pub mod auth;
mod backup;
pub mod certificate;
pub mod clock;
pub mod directory;
pub mod error;
pub mod events;
pub mod governance;
pub mod ids;
pub mod integrity;
pub mod issuer;
pub mod key;
pub mod logs;
pub mod managed_hsm;
pub mod network;
pub mod object;
pub mod resource;
pub mod rotation;
pub mod secret;
pub mod sensitive;
pub mod service;
pub mod store;
pub mod vault;
pub mod vault_admin;

pub use auth::{Authorized, Authorizer, Operation, Principal, PrincipalKind};
pub use clock::{Clock, FixedClock};
pub use directory::{ApplicationRecord, DirectoryStore, PrincipalRecord};
pub use error::{Error, Result};
pub use ids::{ObjectName, VaultName, Version};
pub use logs::{LogQuery, LogQueryError, LogRecord, LogStore, LogTable, LogValue};
pub use object::{Attributes, DeletedInfo, ObjectKind, Page, VersionRecord};
pub use resource::{AuditQuery, AuditRow, AuditStore, MetricRow, ResourceRecord, ResourceStore};
pub use sensitive::Sensitive;
pub use service::{Barrier, VaultService};
pub use store::{PolicyRecord, ScheduledPolicy, Storage, Store, StoreError};
pub use vault::VaultRecord;
