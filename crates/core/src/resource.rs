//! The resource port: ARM-shaped resources that Keyhaven keeps as documents
//! (user-assigned managed identities, workloads, and later networks). Ids are
//! ARM resource ids and compare case-insensitively, as in ARM.

use async_trait::async_trait;

use crate::store::StoreResult;

/// A stored ARM resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRecord {
    /// The ARM id as first written.
    pub id: String,
    /// Resource type, e.g. `Microsoft.ManagedIdentity/userAssignedIdentities`.
    pub kind: String,
    /// Subscription id.
    pub subscription_id: String,
    /// Resource group name.
    pub resource_group: String,
    /// Resource name.
    pub name: String,
    /// Location.
    pub location: String,
    /// Tags as JSON.
    pub tags: String,
    /// Properties (and identity) as JSON, in Keyhaven's own shape.
    pub properties: String,
    /// Creation time, Unix seconds.
    pub created: i64,
    /// Last update, Unix seconds.
    pub updated: i64,
}

/// Persistence of ARM resources.
#[async_trait]
pub trait ResourceStore: Send + Sync {
    /// Creates or replaces a resource; true if it was created.
    async fn put_resource(&self, r: &ResourceRecord) -> StoreResult<bool>;
    /// Reads a resource by id (case-insensitive).
    async fn get_resource(&self, id: &str) -> StoreResult<Option<ResourceRecord>>;
    /// Deletes a resource; false if absent.
    async fn delete_resource(&self, id: &str) -> StoreResult<bool>;
    /// Lists resources of a type in a subscription (all groups), by id.
    async fn list_resources(
        &self,
        kind: &str,
        subscription_id: &str,
    ) -> StoreResult<Vec<ResourceRecord>>;
}
