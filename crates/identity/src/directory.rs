//! The directory: users, groups, applications, service principals and their
//! credentials, group membership (transitive membership is computed here and
//! nowhere else), and authentication of callers at the token endpoint. Writes
//! need a directory role; the bootstrap principal is a Global Administrator.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use keyhaven_core::directory::{ApplicationRecord, PrincipalRecord};
use keyhaven_core::object::Page;
use keyhaven_core::{Clock, Principal, PrincipalKind, Sensitive, Storage, StoreError};
use serde::{Deserialize, Serialize};

use crate::credentials::{
    burn_verification, hash_secret, verify_password, ClientCredentials, CredentialError,
    FederatedCredential, PasswordCredential, SecretCheck,
};

/// The directory role that may write.
pub const GLOBAL_ADMINISTRATOR: &str = "Global Administrator";
/// Its role template id in Microsoft Graph (`roleDefinitionId`).
pub const GLOBAL_ADMINISTRATOR_TEMPLATE: &str = "62e90394-69f5-4237-9190-012177145e10";
/// Adds (`grant`) or removes `role` in a principal's `directoryRoles`,
/// keeping every other key of its attributes JSON; false if it already was so.
fn edit_roles(p: &mut PrincipalRecord, role: &str, grant: bool) -> DirResult<bool> {
    let unreadable =
        || DirectoryError::BadRequest("The principal's attributes cannot be read.".into());
    let mut attrs: serde_json::Value = if p.attrs.trim().is_empty() {
        serde_json::json!({})
    } else {
        serde_json::from_str(&p.attrs).map_err(|_| unreadable())?
    };
    let obj = attrs.as_object_mut().ok_or_else(unreadable)?;
    let mut roles: Vec<String> = obj
        .get("directoryRoles")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    if roles.iter().any(|r| r == role) == grant {
        return Ok(false);
    }
    if grant {
        roles.push(role.to_owned());
    } else {
        roles.retain(|r| r != role);
    }
    obj.insert("directoryRoles".into(), serde_json::json!(roles));
    p.attrs = attrs.to_string();
    Ok(true)
}

/// Tries of a compare-and-set before giving up with a conflict.
const CAS_ATTEMPTS: usize = 5;
/// Most principals of one kind scanned for a role's holders.
const MAX_LISTED: usize = 10_000;
/// The Azure CLI's well-known public client id (used for user sign-in).
pub const AZURE_CLI_APP_ID: &str = "04b07795-8ddb-461a-bbee-02f9e1bf7b46";
/// The Azure Portal's well-known client id: the Keyhaven Portal signs users
/// in as it (redirecting only to the portal's own callback).
pub const PORTAL_APP_ID: &str = "c44b4083-3bb0-49c1-b47d-974e53cbdf3c";
/// Upper bound on principals visited when expanding group membership.
const MAX_WALK: usize = 10_000;

/// Errors of directory operations, in Graph's terms.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// No such object.
    #[error("Resource '{0}' does not exist or one of its queried reference-property objects are not present.")]
    NotFound(String),
    /// Invalid input or a uniqueness violation.
    #[error("{0}")]
    BadRequest(String),
    /// The caller lacks a directory role.
    #[error("Insufficient privileges to complete the operation.")]
    Forbidden,
    /// The request conflicts with another resource (an address another
    /// workload holds).
    #[error("{0}")]
    Conflict(String),
    /// The store failed.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// Hashing or randomness failed.
    #[error("{0}")]
    Credential(#[from] CredentialError),
}

/// Result alias.
pub type DirResult<T> = Result<T, DirectoryError>;

/// Kind-specific properties of a principal (the `attrs` JSON).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PrincipalAttrs {
    /// Directory roles held.
    #[serde(
        rename = "directoryRoles",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub directory_roles: Vec<String>,
    /// Mail nickname (users, groups).
    #[serde(
        rename = "mailNickname",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub mail_nickname: Option<String>,
    /// Groups: mail enabled.
    #[serde(
        rename = "mailEnabled",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub mail_enabled: Option<bool>,
    /// Groups: security enabled.
    #[serde(
        rename = "securityEnabled",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub security_enabled: Option<bool>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Service principals: `Application` or `ManagedIdentity`.
    #[serde(
        rename = "servicePrincipalType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub service_principal_type: Option<String>,
    /// Users: second-factor methods (kept through every attributes write).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfa: Option<crate::mfa::MfaState>,
}

impl PrincipalAttrs {
    /// Parses a record's attrs (unknown or broken JSON reads as empty).
    pub fn of(p: &PrincipalRecord) -> Self {
        serde_json::from_str(&p.attrs).unwrap_or_default()
    }

    fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }
}

/// Properties of an application (the `attrs` JSON).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApplicationAttrs {
    /// May sign users in without a client credential (like the Azure CLI).
    #[serde(rename = "isFallbackPublicClient", default)]
    pub public_client: bool,
}

impl ApplicationAttrs {
    /// Parses an application's attrs.
    pub fn of(a: &ApplicationRecord) -> Self {
        serde_json::from_str(&a.attrs).unwrap_or_default()
    }
}

#[derive(Serialize, Deserialize, Default)]
struct UserCredentials {
    #[serde(rename = "passwordHash", default)]
    password_hash: String,
}

/// A new user.
pub struct NewUser {
    /// User principal name (unique, case-insensitive).
    pub upn: String,
    /// Display name.
    pub display_name: String,
    /// Mail nickname.
    pub mail_nickname: Option<String>,
    /// Initial password.
    pub password: Sensitive<String>,
    /// Whether the account is enabled.
    pub enabled: bool,
}

/// Changes to a user; `None` leaves a field.
#[derive(Default)]
pub struct UserPatch {
    /// New display name.
    pub display_name: Option<String>,
    /// Enable or disable.
    pub enabled: Option<bool>,
    /// New password.
    pub password: Option<Sensitive<String>>,
}

/// A new group.
pub struct NewGroup {
    /// Display name.
    pub display_name: String,
    /// Mail nickname.
    pub mail_nickname: Option<String>,
    /// Mail enabled.
    pub mail_enabled: bool,
    /// Security enabled.
    pub security_enabled: bool,
    /// Description.
    pub description: Option<String>,
}

/// A new certificate credential (public certificate, DER).
pub struct NewKeyCredential {
    /// The DER certificate.
    pub der: Vec<u8>,
    /// Display name.
    pub display_name: Option<String>,
}

/// Who a successful sign-in is, with what goes into the token.
#[derive(Debug, Clone)]
pub struct SignedIn {
    /// The principal.
    pub principal: Principal,
    /// UPN, for users.
    pub upn: Option<String>,
    /// Display name.
    pub name: String,
    /// Transitive group ids.
    pub groups: Vec<String>,
    /// Changes whenever the principal's credentials change; refresh tokens
    /// carry it, so a password reset revokes them.
    pub credential_stamp: String,
    /// How and when the user authenticated (set by the token endpoint and
    /// the sign-in pages; empty for applications).
    pub session: crate::token::Session,
}

/// Why a sign-in failed; the token endpoint maps these to AADSTS codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignInFailure {
    /// No such application, or it has no service principal.
    UnknownClient,
    /// The client secret did not match.
    InvalidSecret,
    /// Only an expired client secret matched.
    ExpiredSecret,
    /// The certificate that signed the assertion is not registered.
    UnknownCertificate,
    /// The client assertion is malformed, badly signed or has wrong claims.
    InvalidAssertion,
    /// The service principal or application is disabled.
    ClientDisabled,
    /// Unknown user or wrong password.
    BadPassword,
    /// The user account is disabled.
    UserDisabled,
    /// The client may not sign users in without its own credential.
    NotPublicClient,
    /// A federated assertion was refused.
    Federation(crate::federation::FederationFailure),
    /// The store failed.
    Unavailable,
}

/// The directory service over the store.
#[derive(Clone)]
pub struct Directory {
    store: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
    tenant_id: String,
    dummy_hash: String,
    trusted: Arc<crate::federation::TrustedIssuers>,
    /// One slow hash per core at a time: unauthenticated callers can make
    /// the server run argon2id (19 MiB each), so they queue here instead of
    /// filling the blocking pool.
    hashing: Arc<tokio::sync::Semaphore>,
    /// Client-assertion `jti`s seen on this node, until their expiry, with
    /// the source that first presented each.
    assertions_seen: Arc<std::sync::Mutex<std::collections::HashMap<String, (i64, String)>>>,
}

/// Most assertion ids remembered; when all are unexpired, assertion
/// sign-ins wait (503) rather than forget one.
const MAX_ASSERTIONS_SEEN: usize = 100_000;

/// How long a credential check waits for a hashing slot before the caller
/// is told to come back (503 `temporarily_unavailable`).
const HASH_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl Directory {
    /// A directory for `tenant_id`. `dummy_hash` is an argon2 hash spent on
    /// unknown callers so that failures take the same time.
    pub fn new(
        store: Arc<dyn Storage>,
        clock: Arc<dyn Clock>,
        tenant_id: &str,
        dummy_hash: String,
        trusted: Arc<crate::federation::TrustedIssuers>,
    ) -> Self {
        Self {
            store,
            clock,
            tenant_id: tenant_id.to_owned(),
            dummy_hash,
            trusted,
            assertions_seen: Arc::default(),
            hashing: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            )),
        }
    }

    /// Runs slow hashing on the blocking pool, at most one hash per core at
    /// once; `None` if no slot frees within [`HASH_WAIT`] or the task fails.
    /// The slot is held by the blocking task itself, so a cancelled request
    /// does not free it before its hash ends.
    async fn hash_blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let permit = tokio::time::timeout(HASH_WAIT, Arc::clone(&self.hashing).acquire_owned())
            .await
            .ok()?
            .ok()?;
        tokio::task::spawn_blocking(move || {
            let _slot = permit;
            f()
        })
        .await
        .ok()
    }

    /// The tenant.
    pub fn tenant_id(&self) -> &str {
        &self.tenant_id
    }

    /// Current time from the clock port.
    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    pub(crate) fn store(&self) -> &Arc<dyn Storage> {
        &self.store
    }

    pub(crate) fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Refuses callers without a directory role.
    pub async fn require_admin(&self, caller: &Principal) -> DirResult<()> {
        let record = self.store.get_principal(&caller.object_id).await?;
        match record {
            Some(r)
                if r.enabled
                    && r.tenant_id == self.tenant_id
                    && PrincipalAttrs::of(&r)
                        .directory_roles
                        .iter()
                        .any(|role| role == GLOBAL_ADMINISTRATOR) =>
            {
                Ok(())
            }
            _ => Err(DirectoryError::Forbidden),
        }
    }

    // ---------------- principals ----------------

    /// A principal by object id (any kind), in this tenant.
    pub async fn principal(&self, id: &str) -> DirResult<PrincipalRecord> {
        self.store
            .get_principal(id)
            .await?
            .filter(|p| p.tenant_id == self.tenant_id)
            .ok_or_else(|| DirectoryError::NotFound(short(id)))
    }

    /// A principal of `kind` by object id.
    pub async fn principal_of_kind(
        &self,
        id: &str,
        kind: PrincipalKind,
    ) -> DirResult<PrincipalRecord> {
        let p = self.principal(id).await?;
        if p.kind == kind.as_str() {
            Ok(p)
        } else {
            Err(DirectoryError::NotFound(short(id)))
        }
    }

    /// A user by object id or UPN.
    pub async fn user(&self, id_or_upn: &str) -> DirResult<PrincipalRecord> {
        if id_or_upn.contains('@') {
            return self
                .store
                .principal_by_upn(&self.tenant_id, id_or_upn)
                .await?
                .ok_or_else(|| DirectoryError::NotFound(short(id_or_upn)));
        }
        self.principal_of_kind(id_or_upn, PrincipalKind::User).await
    }

    /// Lists principals of a kind.
    pub async fn list(
        &self,
        kind: PrincipalKind,
        cursor: Option<&str>,
        limit: u32,
    ) -> DirResult<Page<PrincipalRecord>> {
        Ok(self
            .store
            .list_principals(&self.tenant_id, kind.as_str(), cursor, limit)
            .await?)
    }

    /// Creates a user.
    pub async fn create_user(
        &self,
        caller: &Principal,
        new: NewUser,
    ) -> DirResult<PrincipalRecord> {
        self.require_admin(caller).await?;
        let upn = new.upn.trim().to_owned();
        validate_upn(&upn)?;
        validate_display_name(&new.display_name)?;
        validate_password(new.password.expose())?;
        let creds = UserCredentials {
            password_hash: hash_secret(new.password.expose())?,
        };
        let record = PrincipalRecord {
            object_id: uuid::Uuid::new_v4().to_string(),
            tenant_id: self.tenant_id.clone(),
            kind: PrincipalKind::User.as_str().to_owned(),
            app_id: None,
            upn: Some(upn),
            display_name: new.display_name,
            enabled: new.enabled,
            credentials: serde_json::to_string(&creds).unwrap_or_default(),
            attrs: PrincipalAttrs {
                mail_nickname: new.mail_nickname,
                ..Default::default()
            }
            .json(),
            created: self.clock.now(),
        };
        self.store
            .create_principal(&record)
            .await
            .map_err(duplicate(
                "Another object with the same value for property userPrincipalName already exists.",
            ))?;
        Ok(record)
    }

    /// Updates a user.
    pub async fn update_user(
        &self,
        caller: &Principal,
        id_or_upn: &str,
        patch: UserPatch,
    ) -> DirResult<PrincipalRecord> {
        self.require_admin(caller).await?;
        if let Some(name) = &patch.display_name {
            validate_display_name(name)?;
        }
        let creds = match &patch.password {
            Some(password) => {
                validate_password(password.expose())?;
                Some(
                    serde_json::to_string(&UserCredentials {
                        password_hash: hash_secret(password.expose())?,
                    })
                    .unwrap_or_default(),
                )
            }
            None => None,
        };
        let id = self.user(id_or_upn).await?.object_id;
        self.modify_principal(&id, |user| {
            if let Some(name) = &patch.display_name {
                user.display_name = name.clone();
            }
            if let Some(enabled) = patch.enabled {
                user.enabled = enabled;
            }
            if let Some(c) = &creds {
                user.credentials = c.clone();
            }
            Ok(true)
        })
        .await
    }

    /// Rewrites principal `id` (of this tenant) by `change`, which says
    /// whether it changed anything: a compare-and-set, read again on a
    /// concurrent change, so no other write (a role granted or removed,
    /// another patch) is ever overwritten by a stale copy. Returns the
    /// principal as written (or as it was, unchanged).
    pub async fn modify_principal<F>(&self, id: &str, mut change: F) -> DirResult<PrincipalRecord>
    where
        F: FnMut(&mut PrincipalRecord) -> DirResult<bool>,
    {
        for _ in 0..CAS_ATTEMPTS {
            let old = self.principal(id).await?;
            let mut p = old.clone();
            if !change(&mut p)? {
                return Ok(old);
            }
            if self.store.update_principal_if(&p, &old).await? {
                return Ok(p);
            }
        }
        Err(DirectoryError::Conflict(
            "The object changed while it was being updated; try again.".into(),
        ))
    }

    /// The principals holding directory role `role` (one principal, or all
    /// users, groups and service principals, at most `MAX_LISTED` of each).
    pub async fn directory_role_holders(
        &self,
        role: &str,
        principal: Option<&str>,
    ) -> DirResult<Vec<PrincipalRecord>> {
        let holds = |p: &PrincipalRecord| {
            PrincipalAttrs::of(p)
                .directory_roles
                .iter()
                .any(|r| r == role)
        };
        if let Some(id) = principal {
            return Ok(match self.principal(id).await {
                Ok(p) if holds(&p) => vec![p],
                Ok(_) | Err(DirectoryError::NotFound(_)) => Vec::new(),
                Err(e) => return Err(e),
            });
        }
        let mut out = Vec::new();
        for kind in [PrincipalKind::User, PrincipalKind::ServicePrincipal] {
            let mut cursor: Option<String> = None;
            let mut seen = 0usize;
            loop {
                let page = self
                    .store
                    .list_principals(&self.tenant_id, kind.as_str(), cursor.as_deref(), 500)
                    .await?;
                seen += page.items.len();
                out.extend(page.items.into_iter().filter(|p| holds(p)));
                match page.next {
                    Some(n) if seen < MAX_LISTED => cursor = Some(n),
                    _ => break,
                }
            }
        }
        Ok(out)
    }

    /// Grants (`grant`) or revokes directory role `role` for a principal;
    /// false if it already was so. Only a directory administrator may (and
    /// one removed meanwhile has a grant undone); the last enabled holder
    /// keeps it. A compare-and-set on the principal's attributes JSON, other
    /// keys kept as they are, so a concurrent change is never lost and a
    /// removal never undone by a stale write.
    pub async fn set_directory_role(
        &self,
        caller: &Principal,
        principal_id: &str,
        role: &str,
        grant: bool,
    ) -> DirResult<bool> {
        self.require_admin(caller).await?;
        let target = self.principal(principal_id).await?;
        if !matches!(target.kind.as_str(), "user" | "servicePrincipal") {
            return Err(DirectoryError::BadRequest(
                "Directory roles go to users and service principals.".into(),
            ));
        }
        if !grant {
            let others = self
                .directory_role_holders(role, None)
                .await?
                .into_iter()
                .filter(|p| p.enabled && p.object_id != target.object_id)
                .count();
            if others == 0 {
                return Err(DirectoryError::BadRequest(
                    "The directory's last enabled administrator keeps the role.".into(),
                ));
            }
        }
        let mut changed = false;
        self.modify_principal(&target.object_id, |p| {
            changed = edit_roles(p, role, grant)?;
            Ok(changed)
        })
        .await?;
        // A caller whose own role went meanwhile does not keep its grant.
        if grant && changed && self.require_admin(caller).await.is_err() {
            let _ = self
                .modify_principal(&target.object_id, |p| edit_roles(p, role, false))
                .await;
            return Err(DirectoryError::Forbidden);
        }
        Ok(changed)
    }

    /// Deletes a principal of `kind` (and its memberships).
    pub async fn delete_principal(
        &self,
        caller: &Principal,
        id: &str,
        kind: PrincipalKind,
    ) -> DirResult<()> {
        self.require_admin(caller).await?;
        let p = if kind == PrincipalKind::User {
            self.user(id).await?
        } else {
            self.principal_of_kind(id, kind).await?
        };
        self.store.delete_principal(&p.object_id).await?;
        Ok(())
    }

    /// Creates a group.
    pub async fn create_group(
        &self,
        caller: &Principal,
        new: NewGroup,
    ) -> DirResult<PrincipalRecord> {
        self.require_admin(caller).await?;
        validate_display_name(&new.display_name)?;
        let record = PrincipalRecord {
            object_id: uuid::Uuid::new_v4().to_string(),
            tenant_id: self.tenant_id.clone(),
            kind: PrincipalKind::Group.as_str().to_owned(),
            app_id: None,
            upn: None,
            display_name: new.display_name,
            enabled: true,
            credentials: "{}".into(),
            attrs: PrincipalAttrs {
                mail_nickname: new.mail_nickname,
                mail_enabled: Some(new.mail_enabled),
                security_enabled: Some(new.security_enabled),
                description: new.description,
                ..Default::default()
            }
            .json(),
            created: self.clock.now(),
        };
        self.store.create_principal(&record).await?;
        Ok(record)
    }

    /// Adds a member (user, group, service principal) to a group.
    pub async fn add_member(
        &self,
        caller: &Principal,
        group_id: &str,
        member_id: &str,
    ) -> DirResult<()> {
        self.require_admin(caller).await?;
        let group = self
            .principal_of_kind(group_id, PrincipalKind::Group)
            .await?;
        let member = self.principal(member_id).await?;
        if group.object_id == member.object_id {
            return Err(DirectoryError::BadRequest(
                "A group cannot be a member of itself.".into(),
            ));
        }
        if self
            .store
            .add_member(&group.object_id, &member.object_id)
            .await?
        {
            Ok(())
        } else {
            Err(DirectoryError::BadRequest(
                "One or more added object references already exist for the following modified properties: 'members'.".into(),
            ))
        }
    }

    /// Removes a member from a group.
    pub async fn remove_member(
        &self,
        caller: &Principal,
        group_id: &str,
        member_id: &str,
    ) -> DirResult<()> {
        self.require_admin(caller).await?;
        let group = self
            .principal_of_kind(group_id, PrincipalKind::Group)
            .await?;
        if self
            .store
            .remove_member(&group.object_id, member_id)
            .await?
        {
            Ok(())
        } else {
            Err(DirectoryError::NotFound(short(member_id)))
        }
    }

    /// Direct members of a group.
    pub async fn members(&self, group_id: &str) -> DirResult<Vec<PrincipalRecord>> {
        let group = self
            .principal_of_kind(group_id, PrincipalKind::Group)
            .await?;
        Ok(self.store.members(&group.object_id).await?)
    }

    /// Every member of a group, through nested groups, each once.
    pub async fn transitive_members(&self, group_id: &str) -> DirResult<Vec<PrincipalRecord>> {
        let group = self
            .principal_of_kind(group_id, PrincipalKind::Group)
            .await?;
        let mut out = Vec::new();
        let mut seen = BTreeSet::from([group.object_id.clone()]);
        let mut queue = VecDeque::from([group.object_id]);
        while let Some(g) = queue.pop_front() {
            for m in self.store.members(&g).await? {
                if seen.len() >= MAX_WALK || !seen.insert(m.object_id.clone()) {
                    continue;
                }
                if m.kind == PrincipalKind::Group.as_str() {
                    queue.push_back(m.object_id.clone());
                }
                out.push(m);
            }
        }
        Ok(out)
    }

    /// Ids of every group `member_id` is in, directly or through nested
    /// groups. This is the one place transitive membership is computed.
    pub async fn transitive_groups(&self, member_id: &str) -> DirResult<Vec<String>> {
        let mut seen = BTreeSet::new();
        let mut queue = VecDeque::from([member_id.to_owned()]);
        while let Some(m) = queue.pop_front() {
            for g in self.store.groups_of(&m).await? {
                if seen.len() < MAX_WALK && g != member_id && seen.insert(g.clone()) {
                    queue.push_back(g);
                }
            }
        }
        Ok(seen.into_iter().collect())
    }

    // ---------------- applications and service principals ----------------

    /// An application by object id.
    pub async fn application(&self, id: &str) -> DirResult<ApplicationRecord> {
        self.store
            .get_application(id)
            .await?
            .filter(|a| a.tenant_id == self.tenant_id)
            .ok_or_else(|| DirectoryError::NotFound(short(id)))
    }

    /// Lists applications.
    pub async fn applications(
        &self,
        cursor: Option<&str>,
        limit: u32,
    ) -> DirResult<Page<ApplicationRecord>> {
        Ok(self
            .store
            .list_applications(&self.tenant_id, cursor, limit)
            .await?)
    }

    /// Registers an application.
    pub async fn create_application(
        &self,
        caller: &Principal,
        display_name: &str,
    ) -> DirResult<ApplicationRecord> {
        self.require_admin(caller).await?;
        validate_display_name(display_name)?;
        let app = ApplicationRecord {
            object_id: uuid::Uuid::new_v4().to_string(),
            tenant_id: self.tenant_id.clone(),
            app_id: uuid::Uuid::new_v4().to_string(),
            display_name: display_name.to_owned(),
            credentials: ClientCredentials::default().to_json(),
            attrs: "{}".into(),
            created: self.clock.now(),
        };
        self.store.create_application(&app).await?;
        Ok(app)
    }

    /// Renames an application.
    pub async fn rename_application(
        &self,
        caller: &Principal,
        id: &str,
        display_name: &str,
    ) -> DirResult<ApplicationRecord> {
        self.require_admin(caller).await?;
        validate_display_name(display_name)?;
        let mut app = self.application(id).await?;
        app.display_name = display_name.to_owned();
        self.store.update_application(&app).await?;
        Ok(app)
    }

    /// Deletes an application and its service principal.
    pub async fn delete_application(&self, caller: &Principal, id: &str) -> DirResult<()> {
        self.require_admin(caller).await?;
        let app = self.application(id).await?;
        if let Some(sp) = self.store.principal_by_app_id(&app.app_id).await? {
            self.store.delete_principal(&sp.object_id).await?;
        }
        self.store.delete_application(&app.object_id).await?;
        Ok(())
    }

    /// Adds a client secret; returns the credential and the secret (once).
    pub async fn add_password(
        &self,
        caller: &Principal,
        id: &str,
        display_name: Option<String>,
        end: Option<i64>,
    ) -> DirResult<(PasswordCredential, Sensitive<String>)> {
        self.require_admin(caller).await?;
        let mut app = self.application(id).await?;
        let mut creds = credentials_of(&app);
        let out = creds.add_password(display_name, self.clock.now(), end)?;
        app.credentials = creds.to_json();
        self.store.update_application(&app).await?;
        Ok(out)
    }

    /// Removes a client secret by key id.
    pub async fn remove_password(
        &self,
        caller: &Principal,
        id: &str,
        key_id: &str,
    ) -> DirResult<()> {
        self.require_admin(caller).await?;
        let mut app = self.application(id).await?;
        let mut creds = credentials_of(&app);
        let before = creds.passwords.len();
        creds.passwords.retain(|p| p.key_id != key_id);
        if creds.passwords.len() == before {
            return Err(DirectoryError::BadRequest(format!(
                "No password credential found with keyId {}.",
                short(key_id)
            )));
        }
        app.credentials = creds.to_json();
        self.store.update_application(&app).await?;
        Ok(())
    }

    /// Replaces the application's certificates.
    pub async fn set_key_credentials(
        &self,
        caller: &Principal,
        id: &str,
        keys: Vec<NewKeyCredential>,
    ) -> DirResult<ApplicationRecord> {
        self.require_admin(caller).await?;
        let mut app = self.application(id).await?;
        let mut creds = credentials_of(&app);
        let mut parsed = Vec::with_capacity(keys.len());
        for k in keys {
            parsed.push(crate::assertion::key_credential(&k.der, k.display_name)?);
        }
        creds.keys = parsed;
        app.credentials = creds.to_json();
        self.store.update_application(&app).await?;
        Ok(app)
    }

    /// Adds a federated identity credential.
    pub async fn add_federated(
        &self,
        caller: &Principal,
        id: &str,
        mut fic: FederatedCredential,
    ) -> DirResult<FederatedCredential> {
        self.require_admin(caller).await?;
        let mut app = self.application(id).await?;
        let mut creds = credentials_of(&app);
        if fic.name.is_empty()
            || fic.issuer.is_empty()
            || fic.subject.is_empty()
            || fic.audiences.is_empty()
        {
            return Err(DirectoryError::BadRequest(
                "name, issuer, subject and audiences are required.".into(),
            ));
        }
        if creds.federated.iter().any(|f| f.name == fic.name) {
            return Err(DirectoryError::BadRequest(format!(
                "A federated identity credential named '{}' already exists.",
                fic.name
            )));
        }
        fic.id = uuid::Uuid::new_v4().to_string();
        creds.federated.push(fic.clone());
        app.credentials = creds.to_json();
        self.store.update_application(&app).await?;
        Ok(fic)
    }

    /// Enables or disables a service principal; a disabled one gets no tokens.
    pub async fn set_service_principal_enabled(
        &self,
        caller: &Principal,
        id: &str,
        enabled: bool,
    ) -> DirResult<()> {
        self.require_admin(caller).await?;
        let sp = self
            .principal_of_kind(id, PrincipalKind::ServicePrincipal)
            .await?;
        self.modify_principal(&sp.object_id, |p| {
            let changed = p.enabled != enabled;
            p.enabled = enabled;
            Ok(changed)
        })
        .await?;
        Ok(())
    }

    /// The service principal of an application, if it has one.
    pub async fn service_principal_by_app_id(
        &self,
        app_id: &str,
    ) -> DirResult<Option<PrincipalRecord>> {
        Ok(self.store.principal_by_app_id(app_id).await?.filter(|p| {
            p.tenant_id == self.tenant_id && p.kind == PrincipalKind::ServicePrincipal.as_str()
        }))
    }

    /// Creates the service principal of an application (by appId).
    pub async fn create_service_principal(
        &self,
        caller: &Principal,
        app_id: &str,
    ) -> DirResult<PrincipalRecord> {
        self.require_admin(caller).await?;
        let app = self
            .store
            .application_by_app_id(app_id)
            .await?
            .filter(|a| a.tenant_id == self.tenant_id)
            .ok_or_else(|| DirectoryError::BadRequest(format!("The appId '{}' of the service principal does not reference a valid application object.", short(app_id))))?;
        let sp = PrincipalRecord {
            object_id: uuid::Uuid::new_v4().to_string(),
            tenant_id: self.tenant_id.clone(),
            kind: PrincipalKind::ServicePrincipal.as_str().to_owned(),
            app_id: Some(app.app_id.clone()),
            upn: None,
            display_name: app.display_name.clone(),
            enabled: true,
            credentials: "{}".into(),
            attrs: PrincipalAttrs {
                service_principal_type: Some("Application".into()),
                ..Default::default()
            }
            .json(),
            created: self.clock.now(),
        };
        self.store.create_principal(&sp).await.map_err(duplicate(
            "A service principal for this application already exists.",
        ))?;
        Ok(sp)
    }

    // ---------------- sign-in ----------------

    /// Client credentials with a secret.
    pub async fn sign_in_with_secret(
        &self,
        client_id: &str,
        secret: Sensitive<String>,
    ) -> Result<SignedIn, SignInFailure> {
        let now = self.clock.now();
        let app = self.application_for_client(client_id).await;
        let creds = app.as_ref().ok().map(credentials_of);
        // Generated secrets are checked with one SHA-256 each, here; only
        // an application still holding an argon2id secret from before
        // needs the slow hash, off the async workers. An unknown client
        // costs what a known one with a generated secret costs.
        let fast = creds.as_ref().is_none_or(|c| {
            c.passwords
                .iter()
                .all(|p| crate::credentials::is_fast(&p.hash))
        });
        let check = if fast {
            match creds {
                Some(c) => c.check(secret.expose(), now),
                None => {
                    crate::credentials::burn_generated(secret.expose());
                    SecretCheck::Invalid
                }
            }
        } else {
            self.hash_blocking(move || match creds {
                Some(c) => c.check(secret.expose(), now),
                None => SecretCheck::Invalid,
            })
            .await
            .ok_or(SignInFailure::Unavailable)?
        };
        let app = app?;
        match check {
            SecretCheck::Valid => self.service_principal_sign_in(&app).await,
            SecretCheck::Expired => Err(SignInFailure::ExpiredSecret),
            SecretCheck::Invalid => Err(SignInFailure::InvalidSecret),
        }
    }

    /// Client credentials with a certificate-signed assertion.
    pub async fn sign_in_with_assertion(
        &self,
        client_id: &str,
        assertion: &str,
        audiences: &[String],
        source: Option<std::net::IpAddr>,
    ) -> Result<SignedIn, SignInFailure> {
        let app = self.application_for_client(client_id).await?;
        let creds = credentials_of(&app);
        let now = self.clock.now();
        let id = crate::assertion::verify_client_assertion(
            assertion,
            client_id,
            &creds.keys,
            audiences,
            now,
        )?;
        self.first_use(client_id, &id, source, now)?;
        self.service_principal_sign_in(&app).await
    }

    /// Records an assertion id and where it came from. MSAL reuses one
    /// assertion for several token requests (minutes), as Entra allows, so
    /// the same source may present it again; another source may not: a
    /// copied assertion is a replay.
    fn first_use(
        &self,
        client_id: &str,
        id: &crate::assertion::AssertionId,
        source: Option<std::net::IpAddr>,
        now: i64,
    ) -> Result<(), SignInFailure> {
        let mut seen = self
            .assertions_seen
            .lock()
            .map_err(|_| SignInFailure::Unavailable)?;
        let key = format!("{}|{}", client_id.to_ascii_lowercase(), id.jti);
        let from = crate::lockout::source_prefix(source);
        remember_once(&mut seen, key, (id.exp, from), now, MAX_ASSERTIONS_SEEN)
    }

    /// Client credentials with an assertion from a trusted external issuer,
    /// matched by one of the application's federated identity credentials.
    pub async fn sign_in_with_federated(
        &self,
        client_id: &str,
        assertion: &str,
    ) -> Result<SignedIn, SignInFailure> {
        let app = self.application_for_client(client_id).await?;
        let creds = credentials_of(&app);
        self.trusted
            .verify(assertion, &creds.federated, self.clock.now())
            .map_err(SignInFailure::Federation)?;
        self.service_principal_sign_in(&app).await
    }

    /// Whether `client_id` is a public client that may sign users in.
    pub async fn is_public_client(&self, client_id: &str) -> Result<bool, SignInFailure> {
        Ok(self
            .application_for_client(client_id)
            .await
            .map(|a| ApplicationAttrs::of(&a).public_client)
            .unwrap_or(false))
    }

    /// Resource-owner password credentials through a public client.
    pub async fn sign_in_with_password(
        &self,
        client_id: &str,
        username: &str,
        password: Sensitive<String>,
    ) -> Result<SignedIn, SignInFailure> {
        let app = self
            .store
            .application_by_app_id(client_id)
            .await
            .map_err(|_| SignInFailure::Unavailable)?
            .filter(|a| a.tenant_id == self.tenant_id);
        match &app {
            Some(a) if ApplicationAttrs::of(a).public_client => {}
            Some(_) => return Err(SignInFailure::NotPublicClient),
            None => return Err(SignInFailure::UnknownClient),
        }
        let user = self
            .store
            .principal_by_upn(&self.tenant_id, username)
            .await
            .map_err(|_| SignInFailure::Unavailable)?
            .filter(|u| u.kind == PrincipalKind::User.as_str());
        let hash = user
            .as_ref()
            .and_then(|u| serde_json::from_str::<UserCredentials>(&u.credentials).ok())
            .map(|c| c.password_hash);
        let dummy = self.dummy_hash.clone();
        let ok = self
            .hash_blocking(move || match hash {
                Some(h) => verify_password(password.expose(), &h),
                None => {
                    burn_verification(&dummy, password.expose());
                    false
                }
            })
            .await
            .ok_or(SignInFailure::Unavailable)?;
        let user = match (user, ok) {
            (Some(u), true) => u,
            _ => return Err(SignInFailure::BadPassword),
        };
        if !user.enabled {
            return Err(SignInFailure::UserDisabled);
        }
        self.signed_in(&user).await
    }

    /// Re-issues for an existing sign-in (refresh): the principal must still
    /// exist, be enabled, and have the credentials it signed in with.
    pub async fn resume(
        &self,
        object_id: &str,
        credential_stamp: &str,
    ) -> Result<SignedIn, SignInFailure> {
        let p = self
            .store
            .get_principal(object_id)
            .await
            .map_err(|_| SignInFailure::Unavailable)?
            .filter(|p| p.tenant_id == self.tenant_id)
            .ok_or(SignInFailure::BadPassword)?;
        if !p.enabled {
            return Err(if p.kind == PrincipalKind::User.as_str() {
                SignInFailure::UserDisabled
            } else {
                SignInFailure::ClientDisabled
            });
        }
        if credential_stamp_of(&p) != credential_stamp {
            return Err(SignInFailure::BadPassword);
        }
        self.signed_in(&p).await
    }

    async fn application_for_client(
        &self,
        client_id: &str,
    ) -> Result<ApplicationRecord, SignInFailure> {
        self.store
            .application_by_app_id(client_id)
            .await
            .map_err(|_| SignInFailure::Unavailable)?
            .filter(|a| a.tenant_id == self.tenant_id)
            .ok_or(SignInFailure::UnknownClient)
    }

    async fn service_principal_sign_in(
        &self,
        app: &ApplicationRecord,
    ) -> Result<SignedIn, SignInFailure> {
        let sp = self
            .store
            .principal_by_app_id(&app.app_id)
            .await
            .map_err(|_| SignInFailure::Unavailable)?
            .filter(|p| p.tenant_id == self.tenant_id)
            .ok_or(SignInFailure::UnknownClient)?;
        if !sp.enabled {
            return Err(SignInFailure::ClientDisabled);
        }
        self.signed_in(&sp).await
    }

    async fn signed_in(&self, p: &PrincipalRecord) -> Result<SignedIn, SignInFailure> {
        let groups = self
            .transitive_groups(&p.object_id)
            .await
            .map_err(|_| SignInFailure::Unavailable)?;
        Ok(SignedIn {
            principal: Principal {
                object_id: p.object_id.clone(),
                tenant_id: p.tenant_id.clone(),
                app_id: p.app_id.clone(),
                kind: PrincipalKind::parse(&p.kind).unwrap_or(PrincipalKind::ServicePrincipal),
            },
            upn: p.upn.clone(),
            name: p.display_name.clone(),
            groups,
            credential_stamp: credential_stamp_of(p),
            session: crate::token::Session::default(),
        })
    }
}

/// A short digest of a principal's stored credentials (hashes only).
fn credential_stamp_of(p: &PrincipalRecord) -> String {
    openssl::hash::hash(
        openssl::hash::MessageDigest::sha256(),
        p.credentials.as_bytes(),
    )
    .map(|d| d.iter().take(12).map(|b| format!("{b:02x}")).collect())
    .unwrap_or_default()
}

/// Remembers `key` until its expiry with the source that presented it;
/// refuses it from another source while it is remembered (a replay), and
/// refuses to forget a live one when `max` are held.
fn remember_once(
    seen: &mut std::collections::HashMap<String, (i64, String)>,
    key: String,
    (exp, from): (i64, String),
    now: i64,
    max: usize,
) -> Result<(), SignInFailure> {
    let live = |exp: i64| exp + crate::token::CLOCK_SKEW_SECS >= now;
    if let Some((_, first)) = seen.get(&key).filter(|(e, _)| live(*e)) {
        return if *first == from {
            Ok(())
        } else {
            Err(SignInFailure::InvalidAssertion)
        };
    }
    if seen.len() >= max {
        seen.retain(|_, (e, _)| live(*e));
        if seen.len() >= max {
            return Err(SignInFailure::Unavailable);
        }
    }
    seen.insert(key, (exp, from));
    Ok(())
}

/// The credentials of an application (broken JSON reads as none).
pub fn credentials_of(app: &ApplicationRecord) -> ClientCredentials {
    ClientCredentials::parse(&app.credentials).unwrap_or_default()
}

fn duplicate(message: &'static str) -> impl Fn(StoreError) -> DirectoryError {
    move |e| match e {
        StoreError::Duplicate(_) => DirectoryError::BadRequest(message.to_owned()),
        other => DirectoryError::Store(other),
    }
}

fn short(s: &str) -> String {
    s.chars().take(120).collect()
}

fn validate_upn(upn: &str) -> DirResult<()> {
    let ok = upn.len() <= 113
        && upn.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && local
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-'+".contains(c))
                && domain
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-".contains(c))
        });
    if ok {
        Ok(())
    } else {
        Err(DirectoryError::BadRequest(
            "Property userPrincipalName is invalid.".into(),
        ))
    }
}

fn validate_display_name(name: &str) -> DirResult<()> {
    if name.trim().is_empty() || name.chars().count() > 256 {
        Err(DirectoryError::BadRequest(
            "Invalid value specified for property 'displayName'.".into(),
        ))
    } else {
        Ok(())
    }
}

fn validate_password(pw: &str) -> DirResult<()> {
    if pw.chars().count() < 8 || pw.len() > 256 {
        Err(DirectoryError::BadRequest(
            "The specified password does not comply with password complexity requirements. Please provide a different password.".into(),
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Finding 12: a client assertion could be replayed from anywhere until
    /// it expired. MSAL reuses its own for minutes, so the first source may.
    #[test]
    fn a_client_assertion_is_not_accepted_from_a_second_source() {
        let mut seen = std::collections::HashMap::new();
        let ok = |r: Result<(), SignInFailure>| r.is_ok();
        let at = |s: &str| (1_000i64, s.to_owned());
        assert!(ok(remember_once(
            &mut seen,
            "app|j1".into(),
            at("192.0.2.1"),
            900,
            3
        )));
        assert!(ok(remember_once(
            &mut seen,
            "app|j1".into(),
            at("192.0.2.1"),
            950,
            3
        )));
        assert_eq!(
            remember_once(&mut seen, "app|j1".into(), at("198.51.100.9"), 950, 3),
            Err(SignInFailure::InvalidAssertion)
        );
        assert!(ok(remember_once(
            &mut seen,
            "app|j2".into(),
            at("x"),
            950,
            3
        )));
        assert!(ok(remember_once(
            &mut seen,
            "app|j3".into(),
            at("x"),
            950,
            3
        )));
        assert_eq!(
            remember_once(&mut seen, "app|j4".into(), at("x"), 950, 3),
            Err(SignInFailure::Unavailable),
            "a full memory of live ids forgets none"
        );
        // Once expired, ids are forgotten and their slots reused.
        assert!(ok(remember_once(
            &mut seen,
            "app|j4".into(),
            (5_000, "y".into()),
            2_000,
            3
        )));
    }
}
