//! Managed HSM pools, the second container type: what differs from a vault.
//! A pool is a `VaultRecord` whose properties carry a [`ManagedHsmState`]; it
//! shares the versioned-object core, soft delete and the compare-and-set
//! record writes with vaults. Its own rules live here: the pool's ARM
//! settings, its local RBAC (role assignments and custom role definitions
//! kept in the pool's record, so a change is one compare-and-set on the pool
//! and a full backup carries them), and activation by security domain.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::sensitive::Sensitive;
use crate::service::VaultService;
use crate::vault::{
    ExchangeKey, ManagedHsmState, SdDownload, SdOperation, SecurityDomainState, VaultRecord,
};
use crate::vault_admin::{AdminError, VaultSpec};

/// An exchange key's private half (PKCS#8 DER) and its certificate (DER).
pub type ExchangePair = (Sensitive<Vec<u8>>, Vec<u8>);

/// Skus a pool may have (Azure's).
pub const POOL_SKUS: &[&str] = &["Standard_B1", "Custom_B32", "Custom_B6"];
/// Most local role assignments a pool holds (Azure's limit).
pub const MAX_ROLE_ASSIGNMENTS: usize = 2000;
/// Most custom role definitions a pool holds.
pub const MAX_CUSTOM_ROLES: usize = 50;

fn bad(msg: impl Into<String>) -> Error {
    Error::BadParameter(msg.into())
}

fn is_guid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Applies the pool-only parts of an ARM request (sku, administrators).
pub fn apply_pool_spec(v: &mut VaultRecord, spec: &VaultSpec, create: bool) -> Result<()> {
    if let Some(sku) = &spec.sku {
        let Some(known) = POOL_SKUS.iter().find(|k| k.eq_ignore_ascii_case(sku)) else {
            return Err(bad(format!(
                "The sku '{}' is not valid for a managed HSM; use Standard_B1.",
                sku.chars().take(32).collect::<String>()
            )));
        };
        if !create && !known.eq_ignore_ascii_case(&v.sku) {
            return Err(bad("The sku of a managed HSM cannot be changed."));
        }
        v.sku = (*known).to_owned();
    } else if create {
        return Err(bad("sku is required."));
    }
    let state = v
        .properties
        .managed_hsm
        .get_or_insert_with(ManagedHsmState::default);
    match (&spec.initial_admin_object_ids, create) {
        (Some(ids), true) => {
            if ids.is_empty() || ids.len() > 10 {
                return Err(bad(
                    "initialAdminObjectIds must name between 1 and 10 administrators.",
                ));
            }
            if let Some(bad_id) = ids.iter().find(|i| !is_guid(i)) {
                return Err(bad(format!(
                    "The initial administrator '{}' is not an object id.",
                    bad_id.chars().take(64).collect::<String>()
                )));
            }
            state.initial_admin_object_ids = ids.iter().map(|i| i.to_ascii_lowercase()).collect();
            state.role_assignments = state
                .initial_admin_object_ids
                .iter()
                .map(|oid| LocalAssignment {
                    name: derived_guid(&format!("initial-admin/{oid}")),
                    scope: "/".into(),
                    role_definition_id: roles::ADMINISTRATOR.into(),
                    principal_id: oid.clone(),
                })
                .collect();
        }
        (None, true) => return Err(bad("properties.initialAdminObjectIds is required.")),
        // Azure keeps the administrators given at creation (later ones are
        // made with role assignments); a PUT naming others is refused rather
        // than letting its caller believe it was made an administrator.
        (Some(ids), false) => {
            let mut given: Vec<String> = ids.iter().map(|i| i.to_ascii_lowercase()).collect();
            let mut held = state.initial_admin_object_ids.clone();
            given.sort();
            held.sort();
            if given != held {
                return Err(bad(
                    "initialAdminObjectIds cannot be changed after creation; assign the Managed HSM Administrator role instead.",
                ));
            }
        }
        (None, false) => {}
    }
    Ok(())
}

/// A stable GUID from a string (assignment names made by the service).
fn derived_guid(seed: &str) -> String {
    let d = openssl_free_digest(seed.as_bytes());
    format!(
        "{}-{}-{}-{}-{}",
        &d[..8],
        &d[8..12],
        &d[12..16],
        &d[16..20],
        &d[20..32]
    )
}

/// FNV-1a over the input, widened to 32 hex digits (names, not secrets).
fn openssl_free_digest(data: &[u8]) -> String {
    let mut out = String::with_capacity(32);
    for round in 0u64..2 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ round;
        for b in data {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        out.push_str(&format!("{h:016x}"));
    }
    out
}

/// One local role assignment of a pool.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LocalAssignment {
    /// The assignment's name (a GUID).
    pub name: String,
    /// `/`, `/keys` or `/keys/{name}`.
    pub scope: String,
    /// The role definition's GUID.
    #[serde(rename = "roleDefinitionId")]
    pub role_definition_id: String,
    /// The principal's object id.
    #[serde(rename = "principalId")]
    pub principal_id: String,
}

/// One permission block of a local role.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct LocalPermission {
    /// Control-plane actions (unused by a pool; kept as given).
    #[serde(default)]
    pub actions: Vec<String>,
    /// Control-plane exclusions.
    #[serde(rename = "notActions", default)]
    pub not_actions: Vec<String>,
    /// Data actions granted.
    #[serde(rename = "dataActions", default)]
    pub data_actions: Vec<String>,
    /// Data actions excluded.
    #[serde(rename = "notDataActions", default)]
    pub not_data_actions: Vec<String>,
}

/// A local role definition (built-in or custom).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct LocalRole {
    /// The role's GUID.
    pub name: String,
    /// Display name.
    #[serde(rename = "roleName")]
    pub role_name: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// `AKVBuiltInRole` or `CustomRole`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Permissions.
    #[serde(default)]
    pub permissions: Vec<LocalPermission>,
    /// Where it can be assigned (`/`, `/keys`).
    #[serde(rename = "assignableScopes", default)]
    pub assignable_scopes: Vec<String>,
}

impl LocalRole {
    /// True if the role grants data action `action`.
    pub fn allows(&self, action: &str) -> bool {
        let m = |pattern: &String| action_matches(pattern, action);
        self.permissions
            .iter()
            .any(|p| p.data_actions.iter().any(m))
            && !self
                .permissions
                .iter()
                .any(|p| p.not_data_actions.iter().any(m))
    }
}

/// Whether an action pattern (with `*` wildcards, any case) matches: a
/// table over pattern × action positions, so no pattern can take long.
pub fn action_matches(pattern: &str, action: &str) -> bool {
    let a = action.as_bytes();
    // row[j]: the pattern so far matches the first j bytes of the action.
    let mut row: Vec<bool> = std::iter::once(true)
        .chain(std::iter::repeat_n(false, a.len()))
        .collect();
    for pc in pattern.bytes() {
        row = if pc == b'*' {
            let mut any = false;
            row.iter()
                .map(|r| {
                    any |= *r;
                    any
                })
                .collect()
        } else {
            std::iter::once(false)
                .chain(
                    row.iter()
                        .zip(a)
                        .map(|(r, c)| *r && c.eq_ignore_ascii_case(&pc)),
                )
                .collect()
        };
    }
    row.last().copied().unwrap_or(false)
}

/// Whether an assignment at local `scope` covers `resource` (`/keys/k`).
pub fn local_scope_covers(scope: &str, resource: &str) -> bool {
    let s = scope.trim_end_matches('/').to_ascii_lowercase();
    let r = resource.trim_end_matches('/').to_ascii_lowercase();
    s.is_empty() || r == s || r.starts_with(&format!("{s}/"))
}

/// Canonical form of a local scope from a path (`/`, `/keys`, `/keys/k`); `None`
/// if it is not one a pool knows.
pub fn canonical_scope(raw: &str) -> Option<String> {
    let parts: Vec<&str> = raw.split('/').filter(|p| !p.is_empty()).collect();
    match parts.as_slice() {
        [] => Some("/".into()),
        [k] if k.eq_ignore_ascii_case("keys") => Some("/keys".into()),
        [k, name] if k.eq_ignore_ascii_case("keys") => {
            name.parse::<crate::ids::ObjectName>().ok()?;
            Some(format!("/keys/{name}"))
        }
        _ => None,
    }
}

pub mod full_backup;
pub mod roles;

/// Every role a pool knows: the built-in ones, then its custom ones.
pub fn roles_of(state: &ManagedHsmState) -> impl Iterator<Item = &LocalRole> {
    roles::builtin().iter().chain(&state.role_definitions)
}

/// The role with GUID (or id ending in) `id`.
pub fn find_role<'a>(state: &'a ManagedHsmState, id: &str) -> Option<&'a LocalRole> {
    let guid = id.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    roles_of(state).find(|r| r.name.eq_ignore_ascii_case(guid))
}

/// True if one of `ids` (the caller and its groups) holds `action` at a scope
/// covering `resource` in the pool.
pub fn allows<S: AsRef<str>>(
    state: &ManagedHsmState,
    ids: &[S],
    resource: &str,
    action: &str,
) -> bool {
    state.role_assignments.iter().any(|a| {
        ids.iter()
            .any(|i| i.as_ref().eq_ignore_ascii_case(&a.principal_id))
            && local_scope_covers(&a.scope, resource)
            && find_role(state, &a.role_definition_id).is_some_and(|r| r.allows(action))
    })
}

/// Most permission blocks and actions a custom role may carry, and the
/// longest action (the pool's record holds every role).
const MAX_PERMISSION_BLOCKS: usize = 4;
const MAX_ACTIONS_PER_ROLE: usize = 100;
const MAX_ACTION_LEN: usize = 200;

/// A custom role's actions: data actions of a managed HSM only (a pattern
/// may end in `*`), none of ARM's.
fn check_permissions(permissions: &[LocalPermission]) -> Result<()> {
    if permissions.len() > MAX_PERMISSION_BLOCKS {
        return Err(bad(format!(
            "A role has at most {MAX_PERMISSION_BLOCKS} permission blocks."
        )));
    }
    let mut count = 0;
    for p in permissions {
        if !p.actions.is_empty() || !p.not_actions.is_empty() {
            return Err(bad(
                "A managed HSM role grants data actions only (dataActions, notDataActions).",
            ));
        }
        for a in p.data_actions.iter().chain(&p.not_data_actions) {
            count += 1;
            let prefixed = a
                .get(..roles::ACTION_PREFIX.len())
                .is_some_and(|h| h.eq_ignore_ascii_case(roles::ACTION_PREFIX));
            if !prefixed || a.len() > MAX_ACTION_LEN || a.contains(char::is_whitespace) {
                return Err(bad(format!(
                    "The data action '{}' is not a managed HSM data action (Microsoft.KeyVault/managedHsm/…).",
                    a.chars().take(100).collect::<String>()
                )));
            }
        }
    }
    if count > MAX_ACTIONS_PER_ROLE {
        return Err(bad(format!(
            "A role has at most {MAX_ACTIONS_PER_ROLE} data actions."
        )));
    }
    Ok(())
}

/// Who changes a pool's state, and the right the change needs: re-checked
/// inside every compare-and-set attempt.
#[derive(Debug, Clone, Copy)]
pub struct PoolCaller<'a> {
    /// The caller's object id and its groups'.
    pub ids: &'a [String],
    /// The local scope the right is needed at.
    pub scope: &'a str,
    /// The data action.
    pub action: &'a str,
}

impl PoolCaller<'_> {
    /// Refuses unless the caller holds the action in `state`.
    pub fn check(&self, state: &ManagedHsmState) -> Result<()> {
        if allows(state, self.ids, self.scope, self.action) {
            Ok(())
        } else {
            Err(access_denied(self.action, self.scope))
        }
    }
}

/// How a local-RBAC edit changes a pool.
pub enum RbacEdit {
    /// Create an assignment (name, scope, role GUID, principal).
    PutAssignment(LocalAssignment),
    /// Delete an assignment at a scope by name.
    DeleteAssignment {
        /// Scope.
        scope: String,
        /// Name.
        name: String,
    },
    /// Create or replace a custom role.
    PutRole(LocalRole),
    /// Delete a custom role by GUID.
    DeleteRole(String),
}

/// What an edit did: the assignment or role it touched.
pub enum RbacOutcome {
    /// An assignment (created or deleted).
    Assignment(LocalAssignment),
    /// A role (created, replaced or deleted).
    Role(LocalRole),
    /// Nothing matched (delete of an absent name).
    Absent,
}

fn apply_edit(state: &mut ManagedHsmState, edit: &RbacEdit) -> Result<RbacOutcome> {
    match edit {
        RbacEdit::PutAssignment(a) => {
            if !is_guid(&a.name) {
                return Err(bad("The role assignment name must be a GUID."));
            }
            let role = find_role(state, &a.role_definition_id)
                .cloned()
                .ok_or_else(|| {
                    bad(format!(
                        "The role definition '{}' does not exist.",
                        a.role_definition_id.chars().take(200).collect::<String>()
                    ))
                })?;
            if !role
                .assignable_scopes
                .iter()
                .any(|s| local_scope_covers(s, &a.scope))
            {
                return Err(bad("The role is not assignable at this scope."));
            }
            let mut a = a.clone();
            a.name = a.name.to_ascii_lowercase();
            a.role_definition_id = role.name.clone();
            if let Some(e) = state
                .role_assignments
                .iter()
                .find(|e| e.name.eq_ignore_ascii_case(&a.name))
            {
                if e.scope.eq_ignore_ascii_case(&a.scope)
                    && e.principal_id.eq_ignore_ascii_case(&a.principal_id)
                    && e.role_definition_id
                        .eq_ignore_ascii_case(&a.role_definition_id)
                {
                    return Ok(RbacOutcome::Assignment(e.clone()));
                }
                return Err(Error::Conflict(
                    "The role assignment already exists with different properties.".into(),
                ));
            }
            if state.role_assignments.iter().any(|e| {
                e.scope.eq_ignore_ascii_case(&a.scope)
                    && e.principal_id.eq_ignore_ascii_case(&a.principal_id)
                    && e.role_definition_id
                        .eq_ignore_ascii_case(&a.role_definition_id)
            }) {
                return Err(Error::Conflict(
                    "The role assignment already exists.".into(),
                ));
            }
            if state.role_assignments.len() >= MAX_ROLE_ASSIGNMENTS {
                return Err(bad(format!(
                    "A managed HSM holds at most {MAX_ROLE_ASSIGNMENTS} role assignments."
                )));
            }
            state.role_assignments.push(a.clone());
            Ok(RbacOutcome::Assignment(a))
        }
        RbacEdit::DeleteAssignment { scope, name } => {
            let at = state.role_assignments.iter().position(|e| {
                e.name.eq_ignore_ascii_case(name) && e.scope.eq_ignore_ascii_case(scope)
            });
            Ok(match at {
                Some(i) => RbacOutcome::Assignment(state.role_assignments.remove(i)),
                None => RbacOutcome::Absent,
            })
        }
        RbacEdit::PutRole(role) => {
            if !is_guid(&role.name) {
                return Err(bad("The role definition name must be a GUID."));
            }
            if roles::builtin()
                .iter()
                .any(|b| b.name.eq_ignore_ascii_case(&role.name))
            {
                return Err(Error::Forbidden {
                    reason: crate::error::ForbiddenReason::Rbac,
                    message: "Built-in role definitions cannot be changed.".into(),
                });
            }
            if role.role_name.trim().is_empty() || role.role_name.len() > 512 {
                return Err(bad("The roleName property is required."));
            }
            if roles_of(state).any(|r| {
                r.role_name.eq_ignore_ascii_case(&role.role_name)
                    && !r.name.eq_ignore_ascii_case(&role.name)
            }) {
                return Err(Error::Conflict(format!(
                    "A role named '{}' exists already.",
                    role.role_name.chars().take(100).collect::<String>()
                )));
            }
            check_permissions(&role.permissions)?;
            let mut role = role.clone();
            role.name = role.name.to_ascii_lowercase();
            role.kind = "CustomRole".into();
            if role.assignable_scopes.is_empty() {
                role.assignable_scopes = vec!["/".into()];
            }
            let mut scopes = Vec::with_capacity(role.assignable_scopes.len());
            for s in &role.assignable_scopes {
                // A role is the pool's: assignable at / or /keys, never at one key.
                match canonical_scope(s) {
                    Some(c) if c == "/" || c == "/keys" => {
                        if !scopes.contains(&c) {
                            scopes.push(c);
                        }
                    }
                    _ => {
                        return Err(bad(format!(
                            "The assignable scope '{}' is not valid; use / or /keys.",
                            s.chars().take(100).collect::<String>()
                        )))
                    }
                }
            }
            role.assignable_scopes = scopes;
            match state
                .role_definitions
                .iter_mut()
                .find(|r| r.name.eq_ignore_ascii_case(&role.name))
            {
                Some(r) => *r = role.clone(),
                None => {
                    if state.role_definitions.len() >= MAX_CUSTOM_ROLES {
                        return Err(bad(format!(
                            "A managed HSM holds at most {MAX_CUSTOM_ROLES} custom roles."
                        )));
                    }
                    state.role_definitions.push(role.clone());
                }
            }
            Ok(RbacOutcome::Role(role))
        }
        RbacEdit::DeleteRole(guid) => {
            if roles::builtin()
                .iter()
                .any(|b| b.name.eq_ignore_ascii_case(guid))
            {
                return Err(Error::Forbidden {
                    reason: crate::error::ForbiddenReason::Rbac,
                    message: "Built-in role definitions cannot be deleted.".into(),
                });
            }
            if state
                .role_assignments
                .iter()
                .any(|a| a.role_definition_id.eq_ignore_ascii_case(guid))
            {
                return Err(bad(
                    "The role definition is in use by a role assignment; delete the assignments first.",
                ));
            }
            let at = state
                .role_definitions
                .iter()
                .position(|r| r.name.eq_ignore_ascii_case(guid));
            Ok(match at {
                Some(i) => RbacOutcome::Role(state.role_definitions.remove(i)),
                None => RbacOutcome::Absent,
            })
        }
    }
}

impl VaultService {
    /// Applies `change` to a pool's state as a compare-and-set on the pool
    /// record, reading it again after a lost race; returns the change's
    /// result and the pool as written.
    pub async fn modify_pool<T>(
        &self,
        pool: &VaultRecord,
        change: impl FnMut(&mut ManagedHsmState) -> Result<T>,
    ) -> std::result::Result<(T, VaultRecord), AdminError> {
        self.modify_pool_as(pool, false, change).await
    }

    /// [`Self::modify_pool`]; `deleted_too`: also a soft-deleted pool (a
    /// job's end is recorded there, so the pool's purge is not held up).
    async fn modify_pool_as<T>(
        &self,
        pool: &VaultRecord,
        deleted_too: bool,
        mut change: impl FnMut(&mut ManagedHsmState) -> Result<T>,
    ) -> std::result::Result<(T, VaultRecord), AdminError> {
        let gone =
            || AdminError::NotFound(format!("The managed HSM '{}' was not found.", pool.name));
        let mut current = pool.clone();
        for _ in 0..crate::service::CAS_ATTEMPTS {
            if current.properties.deleted.is_some() && !deleted_too {
                return Err(gone());
            }
            let mut next = current.clone();
            let state = next
                .properties
                .managed_hsm
                .as_mut()
                .ok_or_else(|| AdminError::Core(bad("Not a managed HSM.")))?;
            let out = change(state)?;
            if let Some(written) = self.replace(next).await? {
                return Ok((out, written));
            }
            match self.reread(&current).await? {
                Some(v) => current = v,
                None => return Err(gone()),
            }
        }
        Err(AdminError::Conflict(
            "Conflict",
            format!(
                "The managed HSM '{}' was changed by another request at the same time; retry.",
                pool.name
            ),
        ))
    }

    fn pool_aad(pool: &VaultRecord, purpose: &str) -> Vec<u8> {
        format!("keyhaven/v1/pool/{purpose}/{}", pool.id).into_bytes()
    }

    /// Activates a pool with a security domain (`origin`: `download` or
    /// `upload`): its identity and 32-byte key, sealed under the pool's data
    /// key. A compare-and-set: a pool already holding a domain is a 409, so
    /// two racing activations cannot both hand out a domain.
    pub async fn activate_pool(
        &self,
        pool: &VaultRecord,
        domain_id: &str,
        key: &[u8],
        download: Option<SdDownload>,
    ) -> std::result::Result<VaultRecord, AdminError> {
        let origin = if download.is_some() {
            "download"
        } else {
            "upload"
        };
        let id_ok = domain_id.len() == 32
            && domain_id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if key.len() != 32 || !id_ok {
            return Err(AdminError::Core(bad("The security domain is malformed.")));
        }
        let sealed = self
            .barrier
            .seal(pool, &Self::pool_aad(pool, "sd"), key)
            .map_err(AdminError::Core)?;
        let (_, written) = self
            .modify_pool(pool, |state| {
                if state.security_domain.is_some() {
                    return Err(Error::Conflict(
                        "The managed HSM is already activated: it holds a security domain.".into(),
                    ));
                }
                state.security_domain = Some(SecurityDomainState {
                    id: domain_id.to_owned(),
                    sealed_key: sealed.clone(),
                });
                state.exchange = None;
                state.sd_download = download.clone();
                state.sd_operation = Some(SdOperation {
                    kind: origin.to_owned(),
                    status: "Success".into(),
                    details: None,
                });
                Ok(())
            })
            .await?;
        Ok(written)
    }

    /// The pool's security domain: (identity, key).
    pub fn pool_domain(&self, pool: &VaultRecord) -> Result<(String, Sensitive<Vec<u8>>)> {
        let sd = pool
            .properties
            .managed_hsm
            .as_ref()
            .and_then(|m| m.security_domain.as_ref())
            .ok_or_else(|| bad("The managed HSM is not activated."))?;
        let key = self
            .barrier
            .open(pool, &Self::pool_aad(pool, "sd"), &sd.sealed_key)?;
        Ok((sd.id.clone(), key))
    }

    /// The pool's exchange key for an upload: the one already handed out,
    /// or `make()`'s (private PKCS#8 DER, certificate DER), kept sealed.
    /// Returns the certificate.
    pub async fn pool_exchange_key(
        &self,
        pool: &VaultRecord,
        make: impl FnOnce() -> Result<ExchangePair>,
    ) -> std::result::Result<Vec<u8>, AdminError> {
        if let Some(x) = pool
            .properties
            .managed_hsm
            .as_ref()
            .and_then(|m| m.exchange.as_ref())
        {
            return Ok(x.cert.clone());
        }
        let (private, cert) = make().map_err(AdminError::Core)?;
        let sealed = self
            .barrier
            .seal(pool, &Self::pool_aad(pool, "exchange"), private.expose())
            .map_err(AdminError::Core)?;
        let (cert, _) = self
            .modify_pool(pool, |state| {
                if state.security_domain.is_some() {
                    return Err(Error::Conflict(
                        "The managed HSM is already activated: it holds a security domain.".into(),
                    ));
                }
                // One made meanwhile by another request wins: both callers
                // get the same key.
                let x = state.exchange.get_or_insert_with(|| ExchangeKey {
                    sealed_private: sealed.clone(),
                    cert: cert.clone(),
                });
                Ok(x.cert.clone())
            })
            .await?;
        Ok(cert)
    }

    /// The exchange key's private half and certificate, if one was handed out.
    pub fn pool_exchange_private(&self, pool: &VaultRecord) -> Result<Option<ExchangePair>> {
        let Some(x) = pool
            .properties
            .managed_hsm
            .as_ref()
            .and_then(|m| m.exchange.as_ref())
        else {
            return Ok(None);
        };
        let private =
            self.barrier
                .open(pool, &Self::pool_aad(pool, "exchange"), &x.sealed_private)?;
        Ok(Some((private, x.cert.clone())))
    }

    /// Records a job that starts now (`InProgress`), unless the pool already
    /// runs [`MAX_RUNNING_JOBS`] (409: the caller retries later). A job whose
    /// node stopped does not count once it is past [`JOB_LIMIT_SECS`].
    pub async fn begin_pool_job(
        &self,
        pool: &VaultRecord,
        job: crate::vault::PoolJob,
    ) -> std::result::Result<(), AdminError> {
        let now = self.clock.now();
        self.modify_pool(pool, |state| {
            let running = running_jobs(state, now);
            if running >= MAX_RUNNING_JOBS {
                return Err(Error::Conflict(format!(
                    "The managed HSM '{}' is already running {running} backup or restore jobs; start this one when they have finished.",
                    pool.name
                )));
            }
            keep_job(state, job.clone(), now);
            Ok(())
        })
        .await
        .map(|_| ())
    }

    /// Records how a job ended (its `InProgress` record is replaced).
    pub async fn record_pool_job(
        &self,
        pool: &VaultRecord,
        job: crate::vault::PoolJob,
    ) -> std::result::Result<(), AdminError> {
        let now = self.clock.now();
        self.modify_pool_as(pool, true, |state| {
            keep_job(state, job.clone(), now);
            Ok(())
        })
        .await
        .map(|_| ())
    }

    /// Applies a local-RBAC edit to a pool (compare-and-set), as `caller`:
    /// the caller's right is checked again against the state each attempt
    /// writes over, so a revocation that lands first is not outrun.
    pub async fn edit_pool_rbac(
        &self,
        pool: &VaultRecord,
        caller: PoolCaller<'_>,
        edit: RbacEdit,
    ) -> std::result::Result<RbacOutcome, AdminError> {
        Ok(self
            .modify_pool(pool, |state| {
                caller.check(state)?;
                apply_edit(state, &edit)
            })
            .await?
            .0)
    }
}

/// The status of a job that has not ended.
pub const JOB_IN_PROGRESS: &str = "InProgress";
/// Jobs a pool runs at once (backups, restores and their checks).
pub const MAX_RUNNING_JOBS: usize = 2;
/// How long a job may run before it is stopped and reported failed.
pub const JOB_LIMIT_SECS: i64 = 30 * 60;
/// Jobs a pool's record keeps (the newest; running ones are never dropped).
const KEPT_JOBS: usize = 20;

/// Jobs of the pool running at `now` (a lost one no longer counts).
pub fn running_jobs(state: &ManagedHsmState, now: i64) -> usize {
    state
        .jobs
        .iter()
        .filter(|j| j.status == JOB_IN_PROGRESS && !j.is_lost(now))
        .count()
}

fn keep_job(state: &mut ManagedHsmState, job: crate::vault::PoolJob, now: i64) {
    state.jobs.retain(|j| j.id != job.id);
    state.jobs.push(job);
    // Ended (or lost) jobs go first, oldest first; a running one keeps its
    // record so its end can be reported.
    while state.jobs.len() > KEPT_JOBS {
        let Some(i) = state
            .jobs
            .iter()
            .position(|j| j.status != JOB_IN_PROGRESS || j.is_lost(now))
        else {
            break;
        };
        state.jobs.remove(i);
    }
}

impl crate::vault::PoolJob {
    /// A job still `InProgress` well past [`JOB_LIMIT_SECS`]: the node
    /// running it stopped (a running job is stopped at the limit and its end
    /// recorded).
    pub fn is_lost(&self, now: i64) -> bool {
        self.status == JOB_IN_PROGRESS && now > self.start + JOB_LIMIT_SECS + 120
    }

    /// The job as its status URL reports it at `now`: a lost job as failed.
    pub fn as_of(&self, now: i64) -> Self {
        if !self.is_lost(now) {
            return self.clone();
        }
        let message = "The job stopped without finishing (the Keyhaven node running it stopped); start it again.".to_owned();
        Self {
            status: "Failed".into(),
            details: Some(message.clone()),
            error: Some(("JobLost".into(), message)),
            end: self.start + JOB_LIMIT_SECS,
            ..self.clone()
        }
    }
}

/// The local data action a pool requires for a data-plane operation; `None`
/// for what a pool does not hold (secrets, certificates).
pub fn pool_action(op: crate::auth::Operation) -> Option<&'static str> {
    use crate::auth::Operation as O;
    Some(match op {
        O::KeyCreate => "Microsoft.KeyVault/managedHsm/keys/create",
        O::KeyGet | O::KeyList | O::KeyListVersions | O::KeyGetRotationPolicy => {
            "Microsoft.KeyVault/managedHsm/keys/read/action"
        }
        O::KeyGetDeleted | O::KeyListDeleted => {
            "Microsoft.KeyVault/managedHsm/keys/deletedKeys/read/action"
        }
        O::KeyDelete => "Microsoft.KeyVault/managedHsm/keys/delete",
        O::KeyRecover => "Microsoft.KeyVault/managedHsm/keys/deletedKeys/recover/action",
        O::KeyPurge => "Microsoft.KeyVault/managedHsm/keys/deletedKeys/delete",
        O::KeySign => "Microsoft.KeyVault/managedHsm/keys/sign/action",
        O::KeyVerify => "Microsoft.KeyVault/managedHsm/keys/verify/action",
        O::KeyEncrypt => "Microsoft.KeyVault/managedHsm/keys/encrypt/action",
        O::KeyDecrypt => "Microsoft.KeyVault/managedHsm/keys/decrypt/action",
        O::KeyWrap => "Microsoft.KeyVault/managedHsm/keys/wrap/action",
        O::KeyUnwrap => "Microsoft.KeyVault/managedHsm/keys/unwrap/action",
        O::KeyUpdate | O::KeySetRotationPolicy => "Microsoft.KeyVault/managedHsm/keys/write/action",
        O::KeyImport => "Microsoft.KeyVault/managedHsm/keys/import/action",
        O::KeyBackup => "Microsoft.KeyVault/managedHsm/keys/backup/action",
        O::KeyRestore => "Microsoft.KeyVault/managedHsm/keys/restore/action",
        O::KeyRotate => "Microsoft.KeyVault/managedHsm/keys/rotate/action",
        O::PoolBackup => "Microsoft.KeyVault/managedHsm/backup/start/action",
        O::PoolRestore => "Microsoft.KeyVault/managedHsm/restore/start/action",
        _ => return None,
    })
}

/// The local scope a data-plane operation acts on: `/keys/{name}` or
/// `/keys`; a full backup or restore acts on the whole pool (`/`).
pub fn pool_scope(operation: crate::auth::Operation, object: Option<&str>) -> String {
    use crate::auth::Operation as O;
    match (operation, object) {
        (O::PoolBackup | O::PoolRestore, _) => "/".into(),
        (_, Some(name)) => format!("/keys/{name}"),
        (_, None) => "/keys".into(),
    }
}

/// Managed HSM's 403 for a missing data action.
pub fn access_denied(action: &str, scope: &str) -> Error {
    Error::Forbidden {
        reason: crate::error::ForbiddenReason::LocalRbac,
        message: format!("Not authorized to access {action} on {scope}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_match_with_wildcards_in_any_case() {
        let a = "Microsoft.KeyVault/managedHsm/keys/encrypt/action";
        assert!(action_matches(a, a));
        assert!(action_matches("microsoft.keyvault/managedhsm/keys/*", a));
        assert!(action_matches(
            "Microsoft.KeyVault/managedHsm/*/encrypt/*",
            a
        ));
        assert!(action_matches("*", a));
        assert!(!action_matches(
            "Microsoft.KeyVault/managedHsm/keys/decrypt/action",
            a
        ));
        assert!(!action_matches("Microsoft.KeyVault/managedHsm/keys", a));
        assert!(!action_matches("", a));
    }

    #[test]
    fn local_scopes_cover_what_is_below_them() {
        assert!(local_scope_covers("/", "/keys/k1"));
        assert!(local_scope_covers("/keys", "/keys/k1"));
        assert!(local_scope_covers("/keys/K1", "/keys/k1"));
        assert!(!local_scope_covers("/keys/k1", "/keys/k10"));
        assert!(!local_scope_covers("/keys/k1", "/keys"));
        assert_eq!(canonical_scope("").as_deref(), Some("/"));
        assert_eq!(canonical_scope("//keys/").as_deref(), Some("/keys"));
        assert_eq!(canonical_scope("/keys/k1").as_deref(), Some("/keys/k1"));
        assert_eq!(canonical_scope("/secrets"), None);
        assert_eq!(canonical_scope("/keys/a/b"), None);
    }

    #[test]
    fn an_assignment_grants_its_role_at_its_scope_only() {
        let mut state = ManagedHsmState::default();
        let user = "11111111-1111-1111-1111-111111111111";
        let put = |scope: &str, role: &str| {
            RbacEdit::PutAssignment(LocalAssignment {
                name: derived_guid(&format!("{scope}{role}")),
                scope: scope.into(),
                role_definition_id: format!(
                    "Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/{role}"
                ),
                principal_id: user.into(),
            })
        };
        apply_edit(&mut state, &put("/keys/k1", roles::CRYPTO_USER)).unwrap();
        let enc = "Microsoft.KeyVault/managedHsm/keys/encrypt/action";
        assert!(allows(&state, &[user], "/keys/k1", enc));
        assert!(!allows(&state, &[user], "/keys/k2", enc));
        assert!(!allows(
            &state,
            &["22222222-2222-2222-2222-222222222222"],
            "/keys/k1",
            enc
        ));
        // The same grant twice is the same assignment; a different role at
        // the same name is a conflict.
        assert!(apply_edit(&mut state, &put("/keys/k1", roles::CRYPTO_USER)).is_ok());
        assert_eq!(state.role_assignments.len(), 1);
        // A custom role in use cannot be deleted; a built-in one never.
        let custom = LocalRole {
            name: "33333333-3333-3333-3333-333333333333".into(),
            role_name: "sign only".into(),
            permissions: vec![LocalPermission {
                data_actions: vec!["Microsoft.KeyVault/managedHsm/keys/*".into()],
                not_data_actions: vec!["Microsoft.KeyVault/managedHsm/keys/encrypt/action".into()],
                ..Default::default()
            }],
            ..Default::default()
        };
        apply_edit(&mut state, &RbacEdit::PutRole(custom.clone())).unwrap();
        apply_edit(&mut state, &put("/", &custom.name)).unwrap();
        assert!(allows(
            &state,
            &[user],
            "/keys/k2",
            "Microsoft.KeyVault/managedHsm/keys/sign/action"
        ));
        assert!(!allows(&state, &[user], "/keys/k2", enc));
        assert!(apply_edit(&mut state, &RbacEdit::DeleteRole(custom.name.clone())).is_err());
        assert!(apply_edit(
            &mut state,
            &RbacEdit::DeleteRole(roles::ADMINISTRATOR.into())
        )
        .is_err());
        assert!(apply_edit(
            &mut state,
            &put("/", "44444444-4444-4444-4444-444444444444")
        )
        .is_err());
    }

    #[test]
    fn custom_roles_are_the_pools_and_grant_managed_hsm_data_actions_only() {
        let mut state = ManagedHsmState::default();
        let role = |name: &str, scopes: &[&str], action: &str| LocalRole {
            name: "55555555-5555-5555-5555-555555555555".into(),
            role_name: name.into(),
            assignable_scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            permissions: vec![LocalPermission {
                data_actions: vec![action.into()],
                ..Default::default()
            }],
            ..Default::default()
        };
        let ok_action = "Microsoft.KeyVault/managedHsm/keys/read/action";
        for bad_role in [
            role("one key", &["/keys/k1"], ok_action),
            role(
                "vault",
                &["/"],
                "Microsoft.KeyVault/vaults/secrets/getSecret/action",
            ),
            role("everything", &["/"], "*"),
            role("Managed HSM Crypto User", &["/"], ok_action),
        ] {
            assert!(
                apply_edit(&mut state, &RbacEdit::PutRole(bad_role.clone())).is_err(),
                "{}",
                bad_role.role_name
            );
        }
        let RbacOutcome::Role(made) = apply_edit(
            &mut state,
            &RbacEdit::PutRole(role("reader", &["//keys/", "/"], ok_action)),
        )
        .unwrap() else {
            panic!("no role")
        };
        assert_eq!(
            made.assignable_scopes,
            vec!["/keys".to_owned(), "/".to_owned()]
        );
    }

    #[test]
    fn a_caller_is_checked_against_the_state_it_writes_over() {
        let user = "66666666-6666-6666-6666-666666666666".to_owned();
        let mut state = ManagedHsmState::default();
        let caller = PoolCaller {
            ids: std::slice::from_ref(&user),
            scope: "/",
            action: "Microsoft.KeyVault/managedHsm/roleAssignments/write/action",
        };
        assert!(caller.check(&state).is_err());
        state.role_assignments.push(LocalAssignment {
            name: derived_guid("x"),
            scope: "/".into(),
            role_definition_id: roles::ADMINISTRATOR.into(),
            principal_id: user.clone(),
        });
        assert!(caller.check(&state).is_ok());
    }
}
