//! The directory port: principals (users, groups, service principals, managed
//! identities), applications with their credentials, and group membership.
//! Credentials are stored as JSON the identity crate owns (hashes and public
//! keys only, never a secret).

use async_trait::async_trait;

use crate::object::Page;
use crate::store::StoreResult;

/// A stored principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalRecord {
    /// Object id (a GUID).
    pub object_id: String,
    /// Tenant id.
    pub tenant_id: String,
    /// Kind tag (see `PrincipalKind::as_str`).
    pub kind: String,
    /// Application (client) id: service principals and managed identities.
    pub app_id: Option<String>,
    /// User principal name: users only; unique per tenant, case-insensitive.
    pub upn: Option<String>,
    /// Display name.
    pub display_name: String,
    /// Whether the principal may sign in.
    pub enabled: bool,
    /// Credentials JSON (users: password hash), never plaintext.
    pub credentials: String,
    /// Kind-specific properties as JSON.
    pub attrs: String,
    /// Creation time, Unix seconds.
    pub created: i64,
}

/// A stored application registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplicationRecord {
    /// Object id of the application (a GUID).
    pub object_id: String,
    /// Tenant id.
    pub tenant_id: String,
    /// Application (client) id.
    pub app_id: String,
    /// Display name.
    pub display_name: String,
    /// Credentials JSON: secret hashes, certificates, federated credentials.
    pub credentials: String,
    /// Other properties as JSON.
    pub attrs: String,
    /// Creation time, Unix seconds.
    pub created: i64,
}

/// Persistence of the directory.
#[async_trait]
pub trait DirectoryStore: Send + Sync {
    /// Creates a principal; `Duplicate` if its id, appId or UPN is taken.
    async fn create_principal(&self, p: &PrincipalRecord) -> StoreResult<()>;
    /// Finds a principal by object id.
    async fn get_principal(&self, object_id: &str) -> StoreResult<Option<PrincipalRecord>>;
    /// Finds a principal by application (client) id.
    async fn principal_by_app_id(&self, app_id: &str) -> StoreResult<Option<PrincipalRecord>>;
    /// Finds a user by UPN, ignoring case.
    async fn principal_by_upn(
        &self,
        tenant_id: &str,
        upn: &str,
    ) -> StoreResult<Option<PrincipalRecord>>;
    /// Lists principals of a kind by object id.
    async fn list_principals(
        &self,
        tenant_id: &str,
        kind: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<PrincipalRecord>>;
    /// Rewrites a principal only if it still is `old` (its UPN, name,
    /// enabled flag, credentials and attributes): a compare-and-set, false
    /// if it changed meanwhile or is gone; `Duplicate` on a taken UPN. The
    /// only way to rewrite one, so a stale copy never overwrites a change.
    async fn update_principal_if(
        &self,
        p: &PrincipalRecord,
        old: &PrincipalRecord,
    ) -> StoreResult<bool>;
    /// Deletes a principal and its memberships; false if absent.
    async fn delete_principal(&self, object_id: &str) -> StoreResult<bool>;

    /// Creates an application; `Duplicate` if its id or appId is taken.
    async fn create_application(&self, a: &ApplicationRecord) -> StoreResult<()>;
    /// Finds an application by object id.
    async fn get_application(&self, object_id: &str) -> StoreResult<Option<ApplicationRecord>>;
    /// Finds an application by application (client) id.
    async fn application_by_app_id(&self, app_id: &str) -> StoreResult<Option<ApplicationRecord>>;
    /// Lists applications by object id.
    async fn list_applications(
        &self,
        tenant_id: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<ApplicationRecord>>;
    /// Rewrites an application; false if absent.
    async fn update_application(&self, a: &ApplicationRecord) -> StoreResult<bool>;
    /// Deletes an application; false if absent.
    async fn delete_application(&self, object_id: &str) -> StoreResult<bool>;

    /// Adds `member_id` to `group_id`; false if it already was a member.
    async fn add_member(&self, group_id: &str, member_id: &str) -> StoreResult<bool>;
    /// Removes a membership; false if there was none.
    async fn remove_member(&self, group_id: &str, member_id: &str) -> StoreResult<bool>;
    /// Direct members of a group.
    async fn members(&self, group_id: &str) -> StoreResult<Vec<PrincipalRecord>>;
    /// Ids of the groups `member_id` is directly in.
    async fn groups_of(&self, member_id: &str) -> StoreResult<Vec<String>>;
}
