//! The compliance port: the latest policy state of each (assignment, member,
//! resource, component), as `Microsoft.PolicyInsights/policyStates` shows it.

use async_trait::async_trait;

use crate::store::StoreResult;

/// One policy state. Ids are stored lower case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateRow {
    /// The assignment's id.
    pub assignment_id: String,
    /// The initiative member's reference id (empty: not through one).
    pub reference_id: String,
    /// The evaluated resource's ARM id (a vault, for its objects).
    pub resource_id: String,
    /// The vault object (`secrets/name`), empty for the resource itself.
    pub component: String,
    /// `Compliant`, `NonCompliant` or `Exempt`.
    pub compliance: String,
    /// When it was evaluated, Unix seconds.
    pub time: i64,
    /// The whole PolicyState (JSON).
    pub record: String,
}

/// Persistence of policy states.
#[async_trait]
pub trait PolicyStateStore: Send + Sync {
    /// Writes states (each replacing the one with its key), in one
    /// transaction.
    async fn put_policy_states(&self, rows: &[StateRow]) -> StoreResult<()>;
    /// Replaces every resource-level state (empty component) of an
    /// assignment with `rows`, in one transaction (a full scan).
    async fn replace_policy_states(
        &self,
        assignment_id: &str,
        rows: &[StateRow],
    ) -> StoreResult<()>;
    /// States of resources at or beneath `scope`, or of the assignment whose
    /// id is `scope`, in key order, at most `limit`.
    async fn list_policy_states(&self, scope: &str, limit: u32) -> StoreResult<Vec<StateRow>>;
    /// Forgets an assignment's states.
    async fn forget_policy_states(&self, assignment_id: &str) -> StoreResult<()>;
}
