//! ARM role definitions and role assignments at any scope
//! (`{scope}/providers/Microsoft.Authorization/…`), as `az role` and
//! azure-mgmt-authorization use them.

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{Method, StatusCode};
use keyhaven_core::{Error, Principal};
use keyhaven_identity::rbac::{RoleAssignment, RoleDefinition};
use keyhaven_wire::arm::{
    ArmList, PutRoleAssignment, PutRoleDefinition, RoleAssignmentOut, RoleAssignmentProps,
    RoleDefinitionOut,
};

use super::common::{
    domain_failure, method_not_allowed, parse_body, split_at_provider, ArmFailure,
};
use crate::http::extract::query_map;
use crate::http::response::json;
use crate::state::AppState;

const MARKER: &str = "/providers/microsoft.authorization/";

/// Handles a request whose path names `Microsoft.Authorization`, or returns
/// it for the next handler.
pub async fn handle(st: &AppState, caller: &Principal, req: Request) -> Result<Response, Request> {
    let Some((scope, rest)) = split_at_provider(req.uri().path(), MARKER, false) else {
        return Err(req);
    };
    let query = query_map(req.uri().query());
    let method = req.method().clone();
    let mfa =
        crate::http::extract::bearer_token(req.headers()).is_some_and(|t| st.tokens.has_mfa(t));
    let body = req.into_body();
    let who = super::pim::Caller {
        principal: caller,
        mfa,
    };
    let pim_kinds = [
        "roleeligibilityschedulerequests",
        "roleeligibilityschedules",
        "roleeligibilityscheduleinstances",
        "roleassignmentschedulerequests",
        "roleassignmentschedules",
        "roleassignmentscheduleinstances",
        "rolemanagementpolicies",
        "rolemanagementpolicyassignments",
        "roleassignmentapprovals",
    ];
    if rest
        .first()
        .is_some_and(|k| pim_kinds.contains(&k.to_ascii_lowercase().as_str()))
    {
        let out = super::pim::route(st, &who, &scope, &rest, &method, &query, body)
            .await
            .unwrap_or_else(|| {
                Err(ArmFailure::new(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    "Unknown Microsoft.Authorization resource.",
                ))
            });
        return Ok(out.unwrap_or_else(IntoResponse::into_response));
    }
    let out = match (
        rest.first().map(|s| s.to_ascii_lowercase()).as_deref(),
        rest.get(1),
        rest.len(),
    ) {
        (Some("roleassignments"), None, 1) if method == Method::GET => {
            list_assignments(st, caller, &scope, &query).await
        }
        (Some("roleassignments"), Some(name), 2) => match method {
            Method::GET => get_assignment(st, caller, &scope, name).await,
            Method::PUT => put_assignment(st, caller, &scope, name, body).await,
            Method::DELETE => delete_assignment(st, caller, &scope, name).await,
            _ => Err(method_not_allowed()),
        },
        (Some("roledefinitions"), None, 1) if method == Method::GET => {
            list_definitions(st, caller, &scope, &query).await
        }
        (Some("roledefinitions"), Some(id), 2) => match method {
            Method::GET => get_definition(st, caller, &scope, id).await,
            Method::PUT => put_definition(st, caller, id, body).await,
            Method::DELETE => delete_definition(st, caller, id).await,
            _ => Err(method_not_allowed()),
        },
        _ => Err(ArmFailure::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            "Unknown Microsoft.Authorization resource.",
        )),
    };
    Ok(out.unwrap_or_else(IntoResponse::into_response))
}

fn fail(e: Error) -> ArmFailure {
    domain_failure(e)
}

/// The ARM shape of an assignment.
pub fn assignment_out(a: &RoleAssignment) -> RoleAssignmentOut {
    RoleAssignmentOut {
        id: keyhaven_identity::Evaluator::assignment_id(&a.scope, &a.name),
        name: a.name.clone(),
        kind: "Microsoft.Authorization/roleAssignments",
        properties: RoleAssignmentProps {
            role_definition_id: a.role_definition_id.clone(),
            principal_id: a.principal_id.clone(),
            principal_type: Some(a.principal_type.clone()),
            scope: a.scope.clone(),
            condition: a.condition.clone(),
            condition_version: a.condition.as_ref().map(|_| "2.0".to_owned()),
        },
    }
}

/// The ARM shape of a role definition.
pub fn definition_out(st: &AppState, d: &RoleDefinition) -> RoleDefinitionOut {
    RoleDefinitionOut {
        id: st.authz.definition_id(&d.id),
        name: d.id.clone(),
        kind: "Microsoft.Authorization/roleDefinitions",
        properties: serde_json::to_value(d).unwrap_or_default(),
    }
}

const READ_ASSIGNMENTS: &str = "Microsoft.Authorization/roleAssignments/read";
const READ_DEFINITIONS: &str = "Microsoft.Authorization/roleDefinitions/read";

/// The scope a request names, or the subscription for none.
fn scope_or_subscription(st: &AppState, scope: &str) -> String {
    if scope.is_empty() {
        format!("/subscriptions/{}", st.subscription_id)
    } else {
        scope.to_owned()
    }
}

/// Assignments at, above or below `scope` that the caller may read: those
/// at a scope where it holds `roleAssignments/read`, and those inherited
/// at `scope` when it holds the read there. A caller with no read anywhere
/// gets an empty list, not the tenant's assignments.
async fn list_assignments(
    st: &AppState,
    caller: &Principal,
    scope: &str,
    q: &std::collections::HashMap<String, String>,
) -> Result<Response, ArmFailure> {
    let scope = scope_or_subscription(st, scope);
    let principal = q
        .get("$filter")
        .and_then(|f| f.strip_prefix("principalId eq '"))
        .and_then(|r| r.strip_suffix('\''))
        .map(str::to_owned);
    let at_scope = q
        .get("$filter")
        .is_some_and(|f| f.eq_ignore_ascii_case("atScope()"));
    // `assignedTo('{id}')`: the principal's own assignments and its
    // groups' (transitively), as the portal's "Check access" shows them.
    let assigned_to = match q.get("$filter").and_then(|f| {
        let f = f.trim();
        let head = f.get(..12)?;
        head.eq_ignore_ascii_case("assignedTo('")
            .then(|| f.get(12..)?.strip_suffix("')"))
            .flatten()
    }) {
        Some(id) => {
            let id = id.to_ascii_lowercase();
            let mut ids = st.directory.transitive_groups(&id).await.map_err(|e| {
                tracing::warn!(error = %e, "group memberships could not be read");
                ArmFailure::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    "The directory could not be read; try again.",
                )
            })?;
            ids.push(id);
            Some(ids)
        }
        None => None,
    };
    let all = st.authz.role_assignments(&scope).await.map_err(fail)?;
    let reads_here = st
        .authz
        .rbac_allows(caller, &scope, READ_ASSIGNMENTS, false)
        .await
        .map_err(fail)?;
    let mut value = Vec::new();
    for a in all.iter().filter(|a| {
        principal
            .as_deref()
            .is_none_or(|p| a.principal_id.eq_ignore_ascii_case(p))
            && assigned_to
                .as_ref()
                .is_none_or(|ids| ids.iter().any(|p| a.principal_id.eq_ignore_ascii_case(p)))
            && (!at_scope || keyhaven_identity::rbac::scope_covers(&a.scope, &scope))
    }) {
        let inherited = keyhaven_identity::rbac::scope_covers(&a.scope, &scope);
        let visible = (inherited && reads_here)
            || st
                .authz
                .rbac_allows(caller, &a.scope, READ_ASSIGNMENTS, false)
                .await
                .map_err(fail)?;
        if visible {
            value.push(assignment_out(a));
        }
    }
    Ok(json(StatusCode::OK, &ArmList { value }))
}

async fn get_assignment(
    st: &AppState,
    caller: &Principal,
    scope: &str,
    name: &str,
) -> Result<Response, ArmFailure> {
    st.authz
        .require_action(caller, &scope_or_subscription(st, scope), READ_ASSIGNMENTS)
        .await
        .map_err(fail)?;
    match st.authz.get_assignment(scope, name).await.map_err(fail)? {
        Some(a) => Ok(json(StatusCode::OK, &assignment_out(&a))),
        None => Err(ArmFailure::new(
            StatusCode::NOT_FOUND,
            "RoleAssignmentNotFound",
            "The role assignment does not exist.",
        )),
    }
}

async fn put_assignment(
    st: &AppState,
    caller: &Principal,
    scope: &str,
    name: &str,
    body: Body,
) -> Result<Response, ArmFailure> {
    let b: PutRoleAssignment = parse_body(body).await?;
    let p = b.properties.ok_or_else(|| {
        ArmFailure::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
            "properties are required.",
        )
    })?;
    let (a, created) = st
        .authz
        .put_assignment(
            caller,
            scope,
            name,
            keyhaven_identity::roles::NewAssignment {
                role_definition_id: &p.role_definition_id,
                principal_id: &p.principal_id,
                principal_type: p.principal_type.as_deref(),
                condition: p.condition.as_deref(),
            },
        )
        .await
        .map_err(|e| match e {
            Error::Conflict(m) => ArmFailure::new(StatusCode::CONFLICT, "RoleAssignmentExists", m),
            other => fail(other),
        })?;
    Ok(json(
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        &assignment_out(&a),
    ))
}

async fn delete_assignment(
    st: &AppState,
    caller: &Principal,
    scope: &str,
    name: &str,
) -> Result<Response, ArmFailure> {
    match st
        .authz
        .delete_assignment(caller, scope, name)
        .await
        .map_err(fail)?
    {
        Some(a) => Ok(json(StatusCode::OK, &assignment_out(&a))),
        None => Ok(crate::http::response::status_only(StatusCode::NO_CONTENT)),
    }
}

async fn list_definitions(
    st: &AppState,
    caller: &Principal,
    scope: &str,
    q: &std::collections::HashMap<String, String>,
) -> Result<Response, ArmFailure> {
    st.authz
        .require_action(caller, &scope_or_subscription(st, scope), READ_DEFINITIONS)
        .await
        .map_err(fail)?;
    let name = q
        .get("$filter")
        .and_then(|f| f.strip_prefix("roleName eq '"))
        .and_then(|r| r.strip_suffix('\''))
        .map(str::to_owned);
    let value = st
        .authz
        .role_definitions()
        .await
        .map_err(fail)?
        .iter()
        .filter(|d| {
            name.as_deref()
                .is_none_or(|n| d.role_name.eq_ignore_ascii_case(n))
        })
        .map(|d| definition_out(st, d))
        .collect();
    Ok(json(StatusCode::OK, &ArmList { value }))
}

async fn get_definition(
    st: &AppState,
    caller: &Principal,
    scope: &str,
    id: &str,
) -> Result<Response, ArmFailure> {
    st.authz
        .require_action(caller, &scope_or_subscription(st, scope), READ_DEFINITIONS)
        .await
        .map_err(fail)?;
    let found = st
        .authz
        .role_definitions()
        .await
        .map_err(fail)?
        .into_iter()
        .find(|d| d.id.eq_ignore_ascii_case(id));
    match found {
        Some(d) => Ok(json(StatusCode::OK, &definition_out(st, &d))),
        None => Err(ArmFailure::new(
            StatusCode::NOT_FOUND,
            "RoleDefinitionDoesNotExist",
            "The specified role definition does not exist.",
        )),
    }
}

async fn put_definition(
    st: &AppState,
    caller: &Principal,
    id: &str,
    body: Body,
) -> Result<Response, ArmFailure> {
    let b: PutRoleDefinition = parse_body(body).await?;
    let props = b.properties.ok_or_else(|| {
        ArmFailure::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
            "properties are required.",
        )
    })?;
    let def: RoleDefinition = serde_json::from_value(props).map_err(|_| {
        ArmFailure::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
            "The role definition properties are invalid.",
        )
    })?;
    let (d, created) = st
        .authz
        .put_role_definition(caller, id, def)
        .await
        .map_err(fail)?;
    Ok(json(
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        &definition_out(st, &d),
    ))
}

async fn delete_definition(
    st: &AppState,
    caller: &Principal,
    id: &str,
) -> Result<Response, ArmFailure> {
    match st
        .authz
        .delete_role_definition(caller, id)
        .await
        .map_err(fail)?
    {
        Some(d) => Ok(json(StatusCode::OK, &definition_out(st, &d))),
        None => Ok(crate::http::response::status_only(StatusCode::NO_CONTENT)),
    }
}
