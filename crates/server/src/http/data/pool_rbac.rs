//! A managed HSM pool's local RBAC on its data plane, as
//! `KeyVaultAccessControlClient` and `az keyvault role … --hsm-name` call it:
//! `/{scope}/providers/Microsoft.Authorization/roleAssignments|roleDefinitions`
//! with scopes `/`, `/keys` and `/keys/{name}`. The assignments and custom
//! roles live in the pool's record (`keyhaven_core::managed_hsm`); Azure RBAC
//! on ARM plays no part here.

use std::sync::Arc;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{Method, StatusCode};
use keyhaven_core::managed_hsm::{
    self as mhsm, LocalAssignment, LocalPermission, LocalRole, PoolCaller, RbacEdit, RbacOutcome,
};
use keyhaven_core::Error;
use serde::{Deserialize, Serialize};

use super::pool::admin_error;
use super::DataCtx;
use crate::http::extract::{parse_json, read_body};
use crate::http::response::{json, ok, ApiError};
use crate::state::AppState;

const MARKER: &str = "/providers/microsoft.authorization/";
const ACTIONS: &str = "Microsoft.KeyVault/managedHsm/";
const DEFINITION_PREFIX: &str =
    "Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/";

/// Handles a local-RBAC request on the pool.
pub async fn handle(st: &AppState, ctx: &Arc<DataCtx>, req: Request) -> Response {
    match dispatch(st, ctx, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

struct Target {
    scope: String,
    kind: Option<String>,
    name: Option<String>,
}

fn target(path: &str) -> Result<Target, ApiError> {
    let lower = path.to_ascii_lowercase();
    let at = lower.find(MARKER).unwrap_or(0);
    let raw_scope = path.get(..at).unwrap_or("");
    let scope = mhsm::canonical_scope(raw_scope).ok_or_else(|| {
        Error::BadParameter(format!(
            "The scope '{}' is not valid for a managed HSM; use /, /keys or /keys/{{name}}.",
            raw_scope.chars().take(200).collect::<String>()
        ))
    })?;
    let mut rest = path
        .get(at + MARKER.len()..)
        .unwrap_or("")
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    let kind = rest.next().map(|s| s.to_ascii_lowercase());
    let name = rest.next();
    if rest.next().is_some() {
        return Err(ApiError::not_found("Unknown access-control resource."));
    }
    Ok(Target { scope, kind, name })
}

async fn dispatch(st: &AppState, ctx: &Arc<DataCtx>, req: Request) -> Result<Response, ApiError> {
    let t = target(req.uri().path())?;
    let method = req.method().clone();
    let body = read_body(req.into_body()).await?;
    match t.kind.as_deref() {
        Some("roleassignments") => assignments(st, ctx, &t, method, &body).await,
        Some("roledefinitions") => definitions(st, ctx, &t, method, &body).await,
        _ => Err(ApiError::not_found("Unknown access-control resource.")),
    }
}

#[derive(Serialize)]
struct AssignmentOut {
    id: String,
    name: String,
    #[serde(rename = "type")]
    kind: &'static str,
    properties: AssignmentProps,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AssignmentProps {
    scope: String,
    role_definition_id: String,
    principal_id: String,
}

fn assignment_out(a: &LocalAssignment) -> AssignmentOut {
    let prefix = if a.scope == "/" { "" } else { a.scope.as_str() };
    AssignmentOut {
        id: format!(
            "{prefix}/providers/Microsoft.Authorization/roleAssignments/{}",
            a.name
        ),
        name: a.name.clone(),
        kind: "Microsoft.Authorization/roleAssignments",
        properties: AssignmentProps {
            scope: a.scope.clone(),
            role_definition_id: format!("{DEFINITION_PREFIX}{}", a.role_definition_id),
            principal_id: a.principal_id.clone(),
        },
    }
}

#[derive(Serialize)]
struct DefinitionOut {
    id: String,
    name: String,
    #[serde(rename = "type")]
    kind: &'static str,
    properties: DefinitionProps,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DefinitionProps {
    assignable_scopes: Vec<String>,
    description: String,
    permissions: Vec<LocalPermission>,
    role_name: String,
    #[serde(rename = "type")]
    kind: String,
}

fn definition_out(r: &LocalRole) -> DefinitionOut {
    DefinitionOut {
        id: format!("{DEFINITION_PREFIX}{}", r.name),
        name: r.name.clone(),
        kind: "Microsoft.Authorization/roleDefinitions",
        properties: DefinitionProps {
            assignable_scopes: r.assignable_scopes.clone(),
            description: r.description.clone(),
            permissions: r.permissions.clone(),
            role_name: r.role_name.clone(),
            kind: r.kind.clone(),
        },
    }
}

/// `$filter` of a list: `atScope()`, `principalId eq '…'`, `roleName eq '…'`
/// (joined by `and`); anything else is a 400.
#[derive(Default)]
struct Filter {
    at_scope: bool,
    principal: Option<String>,
    role_name: Option<String>,
}

fn filter(ctx: &DataCtx) -> Result<Filter, ApiError> {
    let mut f = Filter::default();
    let Some(raw) = ctx.query.get("$filter") else {
        return Ok(f);
    };
    for clause in raw.split(" and ") {
        let c = clause.trim();
        let quoted = |prefix: &str| {
            c.get(..prefix.len())
                .filter(|p| p.eq_ignore_ascii_case(prefix))
                .and_then(|_| c.get(prefix.len()..))
                .map(|v| v.trim().trim_matches('\'').to_owned())
        };
        if c.eq_ignore_ascii_case("atScope()") {
            f.at_scope = true;
        } else if let Some(v) = quoted("principalId eq ") {
            f.principal = Some(v);
        } else if let Some(v) = quoted("roleName eq ") {
            f.role_name = Some(v);
        } else {
            return Err(Error::BadParameter(format!(
                "The filter '{}' is not supported.",
                raw.chars().take(200).collect::<String>()
            ))
            .into());
        }
    }
    Ok(f)
}

#[derive(Deserialize)]
struct PutAssignment {
    properties: Option<PutAssignmentProps>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PutAssignmentProps {
    role_definition_id: String,
    principal_id: String,
}

/// Authorizes a write and returns the caller's ids, for the re-check inside
/// the pool's compare-and-set.
async fn authorize_write(
    st: &AppState,
    ctx: &DataCtx,
    scope: &str,
    action: &str,
    audit: &'static str,
) -> Result<Vec<String>, ApiError> {
    ctx.authorize_pool(st, scope, action, audit).await?;
    Ok(st.authz.principal_ids(&ctx.principal).await?)
}

fn is_guid(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok() && s.len() == 36
}

async fn assignments(
    st: &AppState,
    ctx: &Arc<DataCtx>,
    t: &Target,
    method: Method,
    body: &[u8],
) -> Result<Response, ApiError> {
    let state = ctx
        .vault
        .properties
        .managed_hsm
        .as_ref()
        .ok_or(Error::Integrity)?;
    match (t.name.as_deref(), method) {
        (None, Method::GET) => {
            ctx.authorize_pool(
                st,
                &t.scope,
                &format!("{ACTIONS}roleAssignments/read/action"),
                "RoleAssignmentList",
            )
            .await?;
            let f = filter(ctx)?;
            let value: Vec<AssignmentOut> = state
                .role_assignments
                .iter()
                .filter(|a| {
                    let above = mhsm::local_scope_covers(&a.scope, &t.scope);
                    let below = mhsm::local_scope_covers(&t.scope, &a.scope);
                    (above || (below && !f.at_scope))
                        && f.principal
                            .as_deref()
                            .is_none_or(|p| p.eq_ignore_ascii_case(&a.principal_id))
                })
                .map(assignment_out)
                .collect();
            Ok(ok(&serde_json::json!({ "value": value })))
        }
        (Some(name), Method::GET) => {
            ctx.authorize_pool(
                st,
                &t.scope,
                &format!("{ACTIONS}roleAssignments/read/action"),
                "RoleAssignmentGet",
            )
            .await?;
            state
                .role_assignments
                .iter()
                .find(|a| {
                    a.name.eq_ignore_ascii_case(name) && a.scope.eq_ignore_ascii_case(&t.scope)
                })
                .map(|a| ok(&assignment_out(a)))
                .ok_or_else(|| ApiError::not_found("The role assignment was not found."))
        }
        (Some(name), Method::PUT) => {
            let action = format!("{ACTIONS}roleAssignments/write/action");
            let ids = authorize_write(st, ctx, &t.scope, &action, "RoleAssignmentCreate").await?;
            let caller = PoolCaller {
                ids: &ids,
                scope: &t.scope,
                action: &action,
            };
            let b: PutAssignment = parse_json(body)?;
            let p = b
                .properties
                .ok_or_else(|| Error::BadParameter("properties are required.".into()))?;
            if !is_guid(&p.principal_id) {
                return Err(Error::BadParameter(format!(
                    "The principal id '{}' is not an object id.",
                    p.principal_id.chars().take(64).collect::<String>()
                ))
                .into());
            }
            let outcome = st
                .service
                .edit_pool_rbac(
                    &ctx.vault,
                    caller,
                    RbacEdit::PutAssignment(LocalAssignment {
                        name: name.to_owned(),
                        scope: t.scope.clone(),
                        role_definition_id: p.role_definition_id,
                        principal_id: p.principal_id.to_ascii_lowercase(),
                    }),
                )
                .await
                .map_err(admin_error)?;
            match outcome {
                RbacOutcome::Assignment(a) => Ok(json(StatusCode::CREATED, &assignment_out(&a))),
                _ => Err(Error::Integrity.into()),
            }
        }
        (Some(name), Method::DELETE) => {
            let action = format!("{ACTIONS}roleAssignments/delete/action");
            let ids = authorize_write(st, ctx, &t.scope, &action, "RoleAssignmentDelete").await?;
            let caller = PoolCaller {
                ids: &ids,
                scope: &t.scope,
                action: &action,
            };
            let outcome = st
                .service
                .edit_pool_rbac(
                    &ctx.vault,
                    caller,
                    RbacEdit::DeleteAssignment {
                        scope: t.scope.clone(),
                        name: name.to_owned(),
                    },
                )
                .await
                .map_err(admin_error)?;
            match outcome {
                RbacOutcome::Assignment(a) => Ok(ok(&assignment_out(&a))),
                _ => Err(ApiError::not_found("The role assignment was not found.")),
            }
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

#[derive(Deserialize)]
struct PutDefinition {
    properties: Option<PutDefinitionProps>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct PutDefinitionProps {
    #[serde(default)]
    role_name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    permissions: Vec<LocalPermission>,
    #[serde(default)]
    assignable_scopes: Vec<String>,
}

async fn definitions(
    st: &AppState,
    ctx: &Arc<DataCtx>,
    t: &Target,
    method: Method,
    body: &[u8],
) -> Result<Response, ApiError> {
    let state = ctx
        .vault
        .properties
        .managed_hsm
        .as_ref()
        .ok_or(Error::Integrity)?;
    match (t.name.as_deref(), method) {
        (None, Method::GET) => {
            ctx.authorize_pool(
                st,
                &t.scope,
                &format!("{ACTIONS}roleDefinitions/read/action"),
                "RoleDefinitionList",
            )
            .await?;
            let f = filter(ctx)?;
            let value: Vec<DefinitionOut> = mhsm::roles_of(state)
                .filter(|r| {
                    f.role_name
                        .as_deref()
                        .is_none_or(|n| n.eq_ignore_ascii_case(&r.role_name))
                })
                .map(definition_out)
                .collect();
            Ok(ok(&serde_json::json!({ "value": value })))
        }
        (Some(name), Method::GET) => {
            ctx.authorize_pool(
                st,
                &t.scope,
                &format!("{ACTIONS}roleDefinitions/read/action"),
                "RoleDefinitionGet",
            )
            .await?;
            mhsm::find_role(state, name)
                .map(|r| ok(&definition_out(r)))
                .ok_or_else(|| ApiError::not_found("The role definition was not found."))
        }
        (Some(name), Method::PUT) => {
            // A custom role is the pool's, wherever it is assigned: changing
            // one needs the right at `/`, and definitions live at `/` only.
            let action = format!("{ACTIONS}roleDefinitions/write/action");
            let ids = authorize_write(st, ctx, "/", &action, "RoleDefinitionCreate").await?;
            if t.scope != "/" {
                return Err(Error::BadParameter(
                    "Role definitions of a managed HSM are made at scope / only.".into(),
                )
                .into());
            }
            let caller = PoolCaller {
                ids: &ids,
                scope: "/",
                action: &action,
            };
            let b: PutDefinition = parse_json(body)?;
            let p = b.properties.unwrap_or_default();
            if p.description.len() > 2048 {
                return Err(Error::BadParameter("The description is too long.".into()).into());
            }
            let role = LocalRole {
                name: name.to_owned(),
                role_name: p.role_name,
                description: p.description,
                kind: "CustomRole".into(),
                permissions: p.permissions,
                assignable_scopes: if p.assignable_scopes.is_empty() {
                    vec!["/".into()]
                } else {
                    p.assignable_scopes
                },
            };
            match st
                .service
                .edit_pool_rbac(&ctx.vault, caller, RbacEdit::PutRole(role))
                .await
                .map_err(admin_error)?
            {
                RbacOutcome::Role(r) => Ok(json(StatusCode::CREATED, &definition_out(&r))),
                _ => Err(Error::Integrity.into()),
            }
        }
        (Some(name), Method::DELETE) => {
            // A custom role is the pool's, wherever it is assigned: changing
            // one needs the right at `/`, and definitions live at `/` only.
            let action = format!("{ACTIONS}roleDefinitions/delete/action");
            let ids = authorize_write(st, ctx, "/", &action, "RoleDefinitionDelete").await?;
            if t.scope != "/" {
                return Err(Error::BadParameter(
                    "Role definitions of a managed HSM are made at scope / only.".into(),
                )
                .into());
            }
            let caller = PoolCaller {
                ids: &ids,
                scope: "/",
                action: &action,
            };
            match st
                .service
                .edit_pool_rbac(&ctx.vault, caller, RbacEdit::DeleteRole(name.to_owned()))
                .await
                .map_err(admin_error)?
            {
                RbacOutcome::Role(r) => Ok(ok(&definition_out(&r))),
                _ => Err(ApiError::not_found("The role definition was not found.")),
            }
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}
