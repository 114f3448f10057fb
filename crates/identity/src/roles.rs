//! Managing RBAC: role assignments at scopes and custom role definitions.
//! Every change needs the matching `Microsoft.Authorization` action at the
//! scope, is validated (the role exists and may be assigned there, the
//! principal exists), and bumps the authorization generation.

use keyhaven_core::error::ForbiddenReason;
use keyhaven_core::resource::ResourceRecord;
use keyhaven_core::{Error, Principal, Result};

use crate::authz::{assignment_of, definition_of, Evaluator};
use crate::condition::Attributes;
use crate::rbac::{
    self, RoleAssignment, RoleDefinition, ROLE_ASSIGNMENT_TYPE, ROLE_DEFINITION_TYPE,
};

/// What a role-assignment write asks for.
#[derive(Debug, Clone, Copy)]
pub struct NewAssignment<'a> {
    /// The role definition (full id or GUID).
    pub role_definition_id: &'a str,
    /// The principal's object id.
    pub principal_id: &'a str,
    /// The principal type the caller claims (the directory decides).
    pub principal_type: Option<&'a str>,
    /// An ABAC condition on the assignment.
    pub condition: Option<&'a str>,
}

impl Evaluator {
    /// The ARM id of an assignment.
    pub fn assignment_id(scope: &str, name: &str) -> String {
        format!(
            "{}/providers/Microsoft.Authorization/roleAssignments/{name}",
            scope.trim_end_matches('/')
        )
    }

    /// The ARM id of a role definition.
    pub fn definition_id(&self, guid: &str) -> String {
        format!(
            "/subscriptions/{}/providers/Microsoft.Authorization/roleDefinitions/{guid}",
            self.subscription_id()
        )
    }

    /// Refuses a scope outside the deployment's subscription.
    pub fn check_scope_of(&self, scope: &str) -> Result<()> {
        self.check_scope(scope)
    }

    fn check_scope(&self, scope: &str) -> Result<()> {
        let sub = format!("/subscriptions/{}", self.subscription_id());
        if rbac::scope_covers(&sub, scope) {
            Ok(())
        } else {
            Err(Error::BadParameter(format!(
                "The scope '{}' is not valid for this deployment; scopes start with {sub}.",
                scope.chars().take(300).collect::<String>()
            )))
        }
    }

    /// Creates a role assignment; returns it and whether it was new.
    pub async fn put_assignment(
        &self,
        caller: &Principal,
        scope: &str,
        name: &str,
        new: NewAssignment<'_>,
    ) -> Result<(RoleAssignment, bool)> {
        let NewAssignment {
            role_definition_id,
            principal_id,
            principal_type,
            condition,
        } = new;
        self.check_scope(scope)?;
        let condition = condition.map(str::trim).filter(|c| !c.is_empty());
        if let Some(c) = condition {
            crate::condition::validate(c).map_err(|e| Error::BadParameter(e.0))?;
        }
        // The write is authorized with what it writes: a conditioned grant
        // (Key Vault Data Access Administrator) allows only the roles its
        // condition lists.
        self.require_action_with(
            caller,
            scope,
            "Microsoft.Authorization/roleAssignments/write",
            &Attributes::assignment_write(role_definition_id, principal_id),
        )
        .await?;
        if uuid::Uuid::parse_str(name).is_err() {
            return Err(Error::BadParameter(
                "The role assignment name must be a GUID.".into(),
            ));
        }
        let guid = role_definition_id
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        let role = self
            .role_definitions()
            .await?
            .into_iter()
            .find(|r| r.id.eq_ignore_ascii_case(&guid))
            .ok_or_else(|| {
                Error::BadParameter(format!(
                    "The role definition '{}' does not exist.",
                    role_definition_id.chars().take(200).collect::<String>()
                ))
            })?;
        if role.kind == "CustomRole"
            && !role
                .assignable_scopes
                .iter()
                .any(|s| rbac::scope_covers(s, scope))
        {
            return Err(Error::BadParameter(
                "The role is not assignable at this scope.".into(),
            ));
        }
        let principal = self
            .directory()
            .principal(principal_id)
            .await
            .map_err(|_| {
                Error::BadParameter(format!(
                    "Principal {} does not exist in the directory.",
                    principal_id.chars().take(64).collect::<String>()
                ))
            })?;
        let kind = match principal.kind.as_str() {
            "user" => "User",
            "group" => "Group",
            _ => "ServicePrincipal",
        };
        let id = Self::assignment_id(scope, name);
        let existing = self
            .store()
            .get_resource(&id)
            .await?
            .and_then(|r| assignment_of(&r));
        if let Some(e) = &existing {
            if !e.principal_id.eq_ignore_ascii_case(&principal.object_id)
                || !e.role_guid().eq_ignore_ascii_case(&guid)
                || e.condition.as_deref() != condition
            {
                return Err(Error::Conflict(
                    "The role assignment already exists with different properties.".into(),
                ));
            }
            return Ok((e.clone(), false));
        }
        if self.role_assignments(scope).await?.iter().any(|a| {
            a.scope.eq_ignore_ascii_case(scope.trim_end_matches('/'))
                && a.principal_id.eq_ignore_ascii_case(&principal.object_id)
                && a.role_guid().eq_ignore_ascii_case(&guid)
        }) {
            return Err(Error::Conflict(
                "The role assignment already exists.".into(),
            ));
        }
        let _ = principal_type;
        let a = RoleAssignment {
            name: name.to_ascii_lowercase(),
            role_definition_id: self.definition_id(&role.id),
            principal_id: principal.object_id.clone(),
            principal_type: kind.to_owned(),
            scope: scope.trim_end_matches('/').to_owned(),
            condition: condition.map(str::to_owned),
            starts: None,
            ends: None,
            schedule: None,
        };
        let now = self.directory().now();
        self.store()
            .put_resource(&ResourceRecord {
                id,
                kind: ROLE_ASSIGNMENT_TYPE.into(),
                subscription_id: self.subscription_id().to_owned(),
                resource_group: String::new(),
                name: a.name.clone(),
                location: String::new(),
                tags: "{}".into(),
                properties: serde_json::to_string(&a).unwrap_or_default(),
                created: now,
                updated: now,
            })
            .await?;
        Ok((a, true))
    }

    /// Reads an assignment by scope and name.
    pub async fn get_assignment(&self, scope: &str, name: &str) -> Result<Option<RoleAssignment>> {
        Ok(self
            .store()
            .get_resource(&Self::assignment_id(scope, name))
            .await?
            .and_then(|r| assignment_of(&r)))
    }

    /// Deletes an assignment; returns it, or `None` if absent.
    pub async fn delete_assignment(
        &self,
        caller: &Principal,
        scope: &str,
        name: &str,
    ) -> Result<Option<RoleAssignment>> {
        // The delete is authorized with what it deletes; an absent
        // assignment is authorized with no attributes, so a conditioned
        // grant learns nothing of what exists.
        let found = self.get_assignment(scope, name).await?;
        let attrs = found.as_ref().map_or_else(Attributes::none, |a| {
            Attributes::assignment_delete(&a.role_definition_id, &a.principal_id)
        });
        self.require_action_with(
            caller,
            scope,
            "Microsoft.Authorization/roleAssignments/delete",
            &attrs,
        )
        .await?;
        let Some(a) = found else {
            return Ok(None);
        };
        self.store()
            .delete_resource(&Self::assignment_id(scope, name))
            .await?;
        Ok(Some(a))
    }

    /// Creates or updates a custom role; returns it and whether it was new.
    pub async fn put_role_definition(
        &self,
        caller: &Principal,
        guid: &str,
        mut def: RoleDefinition,
    ) -> Result<(RoleDefinition, bool)> {
        let sub = format!("/subscriptions/{}", self.subscription_id());
        self.require_action(
            caller,
            &sub,
            "Microsoft.Authorization/roleDefinitions/write",
        )
        .await?;
        if uuid::Uuid::parse_str(guid).is_err() {
            return Err(Error::BadParameter(
                "The role definition name must be a GUID.".into(),
            ));
        }
        if rbac::builtin_role(guid).is_some() {
            return Err(Error::Forbidden {
                reason: ForbiddenReason::Rbac,
                message: "Built-in role definitions cannot be changed.".into(),
            });
        }
        // Azure: custom roles cannot carry conditions; a condition that was
        // silently dropped would grant more than its author meant.
        if def
            .permissions
            .iter()
            .any(|p| p.condition.is_some() || p.condition_version.is_some())
        {
            return Err(Error::BadParameter(
                "Conditions are not supported in custom role definitions.".into(),
            ));
        }
        if def.role_name.trim().is_empty() {
            return Err(Error::BadParameter(
                "The roleName property is required.".into(),
            ));
        }
        if def.assignable_scopes.is_empty() {
            def.assignable_scopes = vec![sub.clone()];
        }
        for s in &def.assignable_scopes {
            self.check_scope(s)?;
        }
        def.id = guid.to_ascii_lowercase();
        def.kind = "CustomRole".into();
        let id = self.definition_id(&def.id);
        let now = self.directory().now();
        let created = self
            .store()
            .put_resource(&ResourceRecord {
                id,
                kind: ROLE_DEFINITION_TYPE.into(),
                subscription_id: self.subscription_id().to_owned(),
                resource_group: String::new(),
                name: def.id.clone(),
                location: String::new(),
                tags: "{}".into(),
                properties: serde_json::to_string(&def).unwrap_or_default(),
                created: now,
                updated: now,
            })
            .await?;
        Ok((def, created))
    }

    /// Deletes a custom role; returns it, or `None` if absent.
    pub async fn delete_role_definition(
        &self,
        caller: &Principal,
        guid: &str,
    ) -> Result<Option<RoleDefinition>> {
        let sub = format!("/subscriptions/{}", self.subscription_id());
        self.require_action(
            caller,
            &sub,
            "Microsoft.Authorization/roleDefinitions/delete",
        )
        .await?;
        if rbac::builtin_role(guid).is_some() {
            return Err(Error::Forbidden {
                reason: ForbiddenReason::Rbac,
                message: "Built-in role definitions cannot be deleted.".into(),
            });
        }
        let id = self.definition_id(guid);
        let Some(def) = self
            .store()
            .get_resource(&id)
            .await?
            .and_then(|r| definition_of(&r))
        else {
            return Ok(None);
        };
        self.store().delete_resource(&id).await?;
        Ok(Some(def))
    }
}

/// Assigns `role_guid` to `principal_id` at `scope` without a caller check
/// (first start only), idempotently: the assignment's name is derived from
/// its contents.
pub async fn seed_assignment(
    store: &std::sync::Arc<dyn keyhaven_core::Storage>,
    subscription_id: &str,
    scope: &str,
    role_guid: &str,
    principal_id: &str,
    now: i64,
) -> Result<()> {
    let digest = openssl::hash::hash(
        openssl::hash::MessageDigest::sha256(),
        format!("{scope}|{role_guid}|{principal_id}")
            .to_ascii_lowercase()
            .as_bytes(),
    )
    .map_err(|_| Error::Integrity)?;
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(digest.get(..16).ok_or(Error::Integrity)?);
    let name = uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string();
    let id = Evaluator::assignment_id(scope, &name);
    if store.get_resource(&id).await?.is_some() {
        return Ok(());
    }
    let a = RoleAssignment {
        name: name.clone(),
        role_definition_id: format!("/subscriptions/{subscription_id}/providers/Microsoft.Authorization/roleDefinitions/{role_guid}"),
        principal_id: principal_id.to_owned(),
        principal_type: "ServicePrincipal".into(),
        scope: scope.trim_end_matches('/').to_owned(),
        condition: None,
        starts: None,
        ends: None,
        schedule: None,
    };
    store
        .put_resource(&ResourceRecord {
            id,
            kind: ROLE_ASSIGNMENT_TYPE.into(),
            subscription_id: subscription_id.to_owned(),
            resource_group: String::new(),
            name,
            location: String::new(),
            tags: "{}".into(),
            properties: serde_json::to_string(&a).unwrap_or_default(),
            created: now,
            updated: now,
        })
        .await?;
    Ok(())
}
