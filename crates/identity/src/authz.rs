//! Authorization decisions, behind the core `Authorizer` port: Azure RBAC
//! (role assignments at scopes, built-in and custom roles) or vault access
//! policies, as each vault says. Decisions use a snapshot of assignments,
//! roles and group memberships that is invalidated by a generation counter in
//! the store, moved by the store's own triggers in the same transaction as
//! every change — not by callers, not by a timer — so a change made on any
//! node takes effect on every node at its next request (within a second on
//! PostgreSQL, whose nodes cache the counter; see `postgres/watch.rs`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use keyhaven_core::error::ForbiddenReason;
use keyhaven_core::resource::ResourceRecord;
use keyhaven_core::vault::VaultRecord;
use keyhaven_core::{Authorizer, Error, Operation, Principal, Result, Storage};

use crate::condition::Attributes;
use crate::directory::Directory;
use crate::rbac::{
    self, Conditions, RoleAssignment, RoleDefinition, ROLE_ASSIGNMENT_TYPE, ROLE_DEFINITION_TYPE,
};

/// Settings key of the authorization generation (moved by the store itself).
pub use keyhaven_core::store::AUTHZ_GENERATION;
const GENERATION_KEY: &str = AUTHZ_GENERATION;

struct Snapshot {
    generation: Vec<u8>,
    assignments: Vec<RoleAssignment>,
    roles: HashMap<String, RoleDefinition>,
    groups: Mutex<HashMap<String, Arc<Vec<String>>>>,
}

/// The authorization evaluator.
pub struct Evaluator {
    store: Arc<dyn Storage>,
    directory: Directory,
    subscription_id: String,
    snapshot: RwLock<Option<Arc<Snapshot>>>,
}

impl Evaluator {
    /// An evaluator over the store for the deployment's subscription.
    pub fn new(store: Arc<dyn Storage>, directory: Directory, subscription_id: &str) -> Self {
        Self {
            store,
            directory,
            subscription_id: subscription_id.to_owned(),
            snapshot: RwLock::new(None),
        }
    }

    async fn snapshot(&self) -> Result<Arc<Snapshot>> {
        let generation = self
            .store
            .get_setting(GENERATION_KEY)
            .await?
            .unwrap_or_default();
        if let Ok(guard) = self.snapshot.read() {
            if let Some(s) = guard.as_ref().filter(|s| s.generation == generation) {
                return Ok(Arc::clone(s));
            }
        }
        let mut assignments = Vec::new();
        for r in self
            .store
            .list_resources(ROLE_ASSIGNMENT_TYPE, &self.subscription_id)
            .await?
        {
            if let Some(a) = assignment_of(&r) {
                assignments.push(a);
            }
        }
        let mut roles: HashMap<String, RoleDefinition> = rbac::builtin_roles()
            .into_iter()
            .map(|r| (r.id.to_ascii_lowercase(), r))
            .collect();
        for r in self
            .store
            .list_resources(ROLE_DEFINITION_TYPE, &self.subscription_id)
            .await?
        {
            if let Some(d) = definition_of(&r) {
                roles.insert(d.id.to_ascii_lowercase(), d);
            }
        }
        let snap = Arc::new(Snapshot {
            generation,
            assignments,
            roles,
            groups: Mutex::new(HashMap::new()),
        });
        if let Ok(mut guard) = self.snapshot.write() {
            *guard = Some(Arc::clone(&snap));
        }
        Ok(snap)
    }

    async fn groups_of(&self, snap: &Snapshot, object_id: &str) -> Result<Arc<Vec<String>>> {
        if let Some(g) = snap
            .groups
            .lock()
            .ok()
            .and_then(|m| m.get(object_id).cloned())
        {
            return Ok(g);
        }
        let groups = Arc::new(
            self.directory
                .transitive_groups(object_id)
                .await
                .map_err(|e| Error::Unavailable(e.to_string()))?,
        );
        if let Ok(mut m) = snap.groups.lock() {
            m.insert(object_id.to_owned(), Arc::clone(&groups));
        }
        Ok(groups)
    }

    /// True if some assignment of the principal (or its groups) at a scope
    /// covering `resource` has a role allowing `action`.
    pub async fn rbac_allows(
        &self,
        principal: &Principal,
        resource: &str,
        action: &str,
        data: bool,
    ) -> Result<bool> {
        let none = Attributes::none();
        self.rbac_allows_with(
            principal,
            resource,
            action,
            data,
            Conditions::Evaluate(&none),
        )
        .await
    }

    /// As [`Self::rbac_allows`], with the role blocks' conditions treated as
    /// `conditions` says.
    pub async fn rbac_allows_with(
        &self,
        principal: &Principal,
        resource: &str,
        action: &str,
        data: bool,
        conditions: Conditions<'_>,
    ) -> Result<bool> {
        let snap = self.snapshot().await?;
        let groups = self.groups_of(&snap, &principal.object_id).await?;
        let now = self.directory.now();
        Ok(snap.assignments.iter().any(|a| {
            a.active_at(now)
                && (a.principal_id.eq_ignore_ascii_case(&principal.object_id)
                    || groups
                        .iter()
                        .any(|g| g.eq_ignore_ascii_case(&a.principal_id)))
                && rbac::scope_covers(&a.scope, resource)
                && a.condition_holds(action, conditions)
                && snap
                    .roles
                    .get(&a.role_guid().to_ascii_lowercase())
                    .is_some_and(|r| {
                        if data {
                            r.allows_data_action(action)
                        } else {
                            r.allows_action_with(action, conditions)
                        }
                    })
        }))
    }

    /// Requires a control-plane `action` at `scope` (ARM's 403 otherwise).
    pub async fn require_action(
        &self,
        principal: &Principal,
        scope: &str,
        action: &str,
    ) -> Result<()> {
        self.require_action_with(principal, scope, action, &Attributes::none())
            .await
    }

    /// Requires a control-plane `action` at `scope` for a request with
    /// `attrs` (the conditions of role blocks are evaluated against them).
    pub async fn require_action_with(
        &self,
        principal: &Principal,
        scope: &str,
        action: &str,
        attrs: &Attributes,
    ) -> Result<()> {
        if self
            .rbac_allows_with(principal, scope, action, false, Conditions::Evaluate(attrs))
            .await?
        {
            return Ok(());
        }
        Err(denied(principal, scope, action))
    }

    /// True if the caller holds `action` at `scope` through a role block
    /// without a condition (Owner, User Access Administrator: not the
    /// restricted Key Vault Data Access Administrator).
    pub async fn holds_unrestricted(
        &self,
        principal: &Principal,
        scope: &str,
        action: &str,
    ) -> Result<bool> {
        self.rbac_allows_with(principal, scope, action, false, Conditions::Unrestricted)
            .await
    }

    /// True if the caller (or one of its groups) holds data action `action`
    /// at a local scope of the pool covering `scope` (`/`, `/keys`,
    /// `/keys/{name}`). Only the pool's own assignments count: Azure RBAC on
    /// ARM governs the resource, never its keys.
    pub async fn pool_allows(
        &self,
        principal: &Principal,
        pool: &keyhaven_core::vault::ManagedHsmState,
        scope: &str,
        action: &str,
    ) -> Result<bool> {
        let snap = self.snapshot().await?;
        let groups = self.groups_of(&snap, &principal.object_id).await?;
        let mut ids: Vec<&str> = vec![principal.object_id.as_str()];
        ids.extend(groups.iter().map(String::as_str));
        Ok(keyhaven_core::managed_hsm::allows(
            pool, &ids, scope, action,
        ))
    }

    /// The caller's object id and those of its groups (transitively).
    pub async fn principal_ids(&self, principal: &Principal) -> Result<Vec<String>> {
        let snap = self.snapshot().await?;
        let groups = self.groups_of(&snap, &principal.object_id).await?;
        let mut ids = vec![principal.object_id.clone()];
        ids.extend(groups.iter().cloned());
        Ok(ids)
    }

    /// Requires data action `action` at local `scope` of `pool` (the pool's
    /// 403 `AccessDenied` otherwise).
    pub async fn require_pool(
        &self,
        principal: &Principal,
        pool: &VaultRecord,
        scope: &str,
        action: &str,
    ) -> Result<()> {
        let Some(state) = &pool.properties.managed_hsm else {
            return Err(Error::BadParameter("Not a managed HSM.".into()));
        };
        if principal.tenant_id.eq_ignore_ascii_case(&pool.tenant_id)
            && self.pool_allows(principal, state, scope, action).await?
        {
            return Ok(());
        }
        Err(keyhaven_core::managed_hsm::access_denied(action, scope))
    }

    /// Every role definition (built-in and custom).
    pub async fn role_definitions(&self) -> Result<Vec<RoleDefinition>> {
        let snap = self.snapshot().await?;
        let mut roles: Vec<RoleDefinition> = snap.roles.values().cloned().collect();
        roles.sort_by(|a, b| a.role_name.cmp(&b.role_name));
        Ok(roles)
    }

    /// Assignments at, above or below `scope`, not expired (including
    /// time-bound ones not started yet: the decision itself uses only those
    /// in force).
    pub async fn role_assignments(&self, scope: &str) -> Result<Vec<RoleAssignment>> {
        let snap = self.snapshot().await?;
        let now = self.directory.now();
        Ok(snap
            .assignments
            .iter()
            // Expired ones are gone; ones not yet started are listed (so
            // an administrator sees and can remove a scheduled grant).
            .filter(|a| a.ends.is_none_or(|e| now < e))
            .filter(|a| rbac::scope_covers(&a.scope, scope) || rbac::scope_covers(scope, &a.scope))
            .cloned()
            .collect())
    }

    /// The deployment's subscription.
    pub fn subscription_id(&self) -> &str {
        &self.subscription_id
    }

    /// The store (for the management of roles and assignments).
    pub fn store(&self) -> &Arc<dyn Storage> {
        &self.store
    }

    /// The directory.
    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    fn policy_allows(
        &self,
        principal: &Principal,
        groups: &[String],
        vault: &VaultRecord,
        operation: Operation,
    ) -> bool {
        let (category, permission) = operation.permission();
        vault.properties.access_policies.iter().any(|p| {
            let identity = match &p.application_id {
                // Compound identity: this user through this application only.
                Some(app) => {
                    p.object_id.eq_ignore_ascii_case(&principal.object_id)
                        && principal
                            .app_id
                            .as_deref()
                            .is_some_and(|a| a.eq_ignore_ascii_case(app))
                }
                None => {
                    p.object_id.eq_ignore_ascii_case(&principal.object_id)
                        || groups.iter().any(|g| g.eq_ignore_ascii_case(&p.object_id))
                }
            };
            identity
                && p.tenant_id.eq_ignore_ascii_case(&principal.tenant_id)
                && p.permissions
                    .of(category)
                    .iter()
                    .any(|x| x.eq_ignore_ascii_case(permission) || x.eq_ignore_ascii_case("all"))
        })
    }
}

/// The ARM scope of a data-plane operation: the object, or the vault.
pub fn resource_scope(vault: &VaultRecord, operation: Operation, object: Option<&str>) -> String {
    match object {
        Some(name) => format!("{}/{}/{name}", vault.resource_id(), operation.collection()),
        None => vault.resource_id(),
    }
}

#[async_trait::async_trait]
impl Authorizer for Evaluator {
    async fn check(
        &self,
        principal: &Principal,
        vault: &VaultRecord,
        operation: Operation,
        object: Option<&str>,
    ) -> Result<()> {
        if let Some(pool) = &vault.properties.managed_hsm {
            let scope = keyhaven_core::managed_hsm::pool_scope(operation, object);
            let Some(action) = keyhaven_core::managed_hsm::pool_action(operation) else {
                return Err(Error::BadParameter(
                    "A managed HSM holds keys only: secrets and certificates are kept in vaults."
                        .into(),
                ));
            };
            if principal.tenant_id.eq_ignore_ascii_case(&vault.tenant_id)
                && self.pool_allows(principal, pool, &scope, action).await?
            {
                return Ok(());
            }
            return Err(keyhaven_core::managed_hsm::access_denied(action, &scope));
        }
        if !principal.tenant_id.eq_ignore_ascii_case(&vault.tenant_id) {
            return Err(policy_denied(principal, vault, operation));
        }
        if vault.properties.rbac_authorization {
            let scope = resource_scope(vault, operation, object);
            let action = operation.data_action();
            if self.rbac_allows(principal, &scope, action, true).await? {
                return Ok(());
            }
            return Err(Error::Forbidden {
                reason: ForbiddenReason::Rbac,
                message: format!(
                    "Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\nCaller: appid={};oid={}\r\nAction: '{action}'\r\nResource: '{}'\r\nAssignment: (not found)\r\nDecisionReason: 'DeniedWithNoValidRBAC' \r\nVault: {};location={}\r\n",
                    principal.app_id.as_deref().unwrap_or("-"),
                    principal.object_id,
                    scope.to_ascii_lowercase(),
                    vault.name,
                    vault.properties.location.as_deref().unwrap_or("local")
                ),
            });
        }
        let snap = self.snapshot().await?;
        let groups = self.groups_of(&snap, &principal.object_id).await?;
        if self.policy_allows(principal, &groups, vault, operation) {
            Ok(())
        } else {
            Err(policy_denied(principal, vault, operation))
        }
    }
}

/// ARM's 403 `AuthorizationFailed` text for a missing control-plane action.
fn denied(principal: &Principal, scope: &str, action: &str) -> Error {
    Error::Forbidden {
        reason: ForbiddenReason::Rbac,
        message: format!(
            "The client '{0}' with object id '{0}' does not have authorization to perform action '{action}' over scope '{scope}' or the scope is invalid. If access was recently granted, please refresh your credentials.",
            principal.object_id
        ),
    }
}

fn policy_denied(principal: &Principal, vault: &VaultRecord, operation: Operation) -> Error {
    let (category, permission) = operation.permission();
    Error::Forbidden {
        reason: ForbiddenReason::Policy,
        message: format!(
            "The user, group or application 'appid={};oid={}' does not have {category} {permission} permission on key vault '{};location=local'. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125287",
            principal.app_id.as_deref().unwrap_or("-"),
            principal.object_id,
            vault.name
        ),
    }
}

/// Reads a stored assignment.
pub fn assignment_of(r: &ResourceRecord) -> Option<RoleAssignment> {
    let mut a: RoleAssignment = serde_json::from_str(&r.properties).ok()?;
    a.name = r.name.clone();
    Some(a)
}

/// Reads a stored custom role.
pub fn definition_of(r: &ResourceRecord) -> Option<RoleDefinition> {
    let mut d: RoleDefinition = serde_json::from_str(&r.properties).ok()?;
    d.id = r.name.clone();
    Some(d)
}
