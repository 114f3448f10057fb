//! Role assignments and definitions on a vault's data plane, as
//! azure-keyvault-administration's `KeyVaultAccessControlClient` calls them:
//! `/{scope}/providers/Microsoft.Authorization/roleAssignments|roleDefinitions`,
//! where scope `/` is the vault and `/keys` its keys. They are the same
//! assignments as on ARM, scoped under the vault's resource id.

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{Method, StatusCode};
use keyhaven_core::{Error, Principal, VaultRecord};
use keyhaven_identity::rbac::{RoleAssignment, RoleDefinition};
use keyhaven_wire::arm::{
    ArmList, PutRoleAssignment, RoleAssignmentOut, RoleAssignmentProps, RoleDefinitionOut,
};

use crate::http::extract::{parse_json, read_body};
use crate::http::response::{json, ok, ApiError};
use crate::state::AppState;

const MARKER: &str = "/providers/microsoft.authorization/";

/// True if the path is an access-control path.
pub fn is_access_control(path: &str) -> bool {
    path.to_ascii_lowercase().contains(MARKER)
}

/// Handles an access-control request on `vault`.
pub async fn handle(
    st: &AppState,
    caller: &Principal,
    vault: &VaultRecord,
    req: Request,
) -> Response {
    match dispatch(st, caller, vault, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// Where an access-control request points: the scope it acts at (under the
/// vault's resource id), that scope as the vault shows it, the resource kind
/// (lower-cased) and the resource name, if any.
struct Target {
    scope: String,
    shown_scope: String,
    kind: Option<String>,
    name: Option<String>,
}

fn target(vault: &VaultRecord, path: &str) -> Target {
    let lower = path.to_ascii_lowercase();
    let at = lower.find(MARKER).unwrap_or(0);
    let local_scope = path
        .get(..at)
        .unwrap_or("")
        .trim_end_matches('/')
        .to_owned();
    let shown_scope = if local_scope.is_empty() {
        "/".to_owned()
    } else {
        local_scope.clone()
    };
    let mut rest = path
        .get(at + MARKER.len()..)
        .unwrap_or("")
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    Target {
        scope: format!("{}{}", vault.resource_id(), local_scope),
        shown_scope,
        kind: rest.next().map(|s| s.to_ascii_lowercase()),
        name: rest.next(),
    }
}

async fn dispatch(
    st: &AppState,
    caller: &Principal,
    vault: &VaultRecord,
    req: Request,
) -> Result<Response, ApiError> {
    let t = target(vault, req.uri().path());
    let method = req.method().clone();
    match t.kind.as_deref() {
        Some("roleassignments") => {
            assignments(st, caller, vault, &t, method, req.into_body()).await
        }
        Some("roledefinitions") => definitions(st, caller, &t, method).await,
        _ => Err(ApiError::not_found("Unknown access-control resource.")),
    }
}

async fn assignments(
    st: &AppState,
    caller: &Principal,
    vault: &VaultRecord,
    t: &Target,
    method: Method,
    body: Body,
) -> Result<Response, ApiError> {
    let scope = &t.scope;
    if method == Method::GET {
        st.authz
            .require_action(
                caller,
                scope,
                "Microsoft.Authorization/roleAssignments/read",
            )
            .await?;
    }
    match (t.name.as_deref(), method) {
        (None, Method::GET) => {
            let value: Vec<RoleAssignmentOut> = st
                .authz
                .role_assignments(scope)
                .await?
                .iter()
                .filter(|a| keyhaven_identity::rbac::scope_covers(&vault.resource_id(), &a.scope))
                .map(|a| local_assignment(vault, a))
                .collect();
            Ok(ok(&ArmList { value }))
        }
        (Some(name), Method::GET) => match st.authz.get_assignment(scope, name).await? {
            Some(a) => Ok(ok(&local_assignment(vault, &a))),
            None => Err(ApiError::not_found("The role assignment was not found.")),
        },
        (Some(name), Method::PUT) => {
            let b: PutRoleAssignment = parse(body).await?;
            let p = b
                .properties
                .ok_or_else(|| Error::BadParameter("properties are required.".into()))?;
            let (a, _) = st
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
                .await?;
            // The SDK accepts only 201 here, as Managed HSM answers.
            Ok(json(StatusCode::CREATED, &local_assignment(vault, &a)))
        }
        (Some(name), Method::DELETE) => {
            match st.authz.delete_assignment(caller, scope, name).await? {
                Some(a) => Ok(ok(&local_assignment(vault, &a))),
                None => Err(ApiError::not_found("The role assignment was not found.")),
            }
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

async fn definitions(
    st: &AppState,
    caller: &Principal,
    t: &Target,
    method: Method,
) -> Result<Response, ApiError> {
    if method != Method::GET {
        return Err(ApiError::method_not_allowed());
    }
    st.authz
        .require_action(
            caller,
            &t.scope,
            "Microsoft.Authorization/roleDefinitions/read",
        )
        .await?;
    let all = st.authz.role_definitions().await?;
    match t.name.as_deref() {
        None => {
            let value: Vec<RoleDefinitionOut> = all
                .iter()
                .map(|d| local_definition(d, &t.shown_scope))
                .collect();
            Ok(ok(&ArmList { value }))
        }
        Some(id) => match all.into_iter().find(|d| d.id.eq_ignore_ascii_case(id)) {
            Some(d) => Ok(ok(&local_definition(&d, &t.shown_scope))),
            None => Err(ApiError::not_found("The role definition was not found.")),
        },
    }
}

fn local_assignment(vault: &VaultRecord, a: &RoleAssignment) -> RoleAssignmentOut {
    let base = vault.resource_id();
    let local = a.scope.get(base.len()..).filter(|_| {
        a.scope
            .to_ascii_lowercase()
            .starts_with(&base.to_ascii_lowercase())
    });
    let scope = match local {
        Some("") | None => "/".to_owned(),
        Some(s) => s.to_owned(),
    };
    let prefix = if scope == "/" {
        String::new()
    } else {
        scope.clone()
    };
    RoleAssignmentOut {
        id: format!(
            "{prefix}/providers/Microsoft.Authorization/roleAssignments/{}",
            a.name
        ),
        name: a.name.clone(),
        kind: "Microsoft.Authorization/roleAssignments",
        properties: RoleAssignmentProps {
            role_definition_id: format!(
                "Microsoft.Authorization/roleDefinitions/{}",
                a.role_guid()
            ),
            principal_id: a.principal_id.clone(),
            principal_type: None,
            scope,
            condition: a.condition.clone(),
            condition_version: a.condition.as_ref().map(|_| "2.0".to_owned()),
        },
    }
}

fn local_definition(d: &RoleDefinition, scope: &str) -> RoleDefinitionOut {
    let mut props = serde_json::to_value(d).unwrap_or_default();
    if let Some(obj) = props.as_object_mut() {
        obj.insert(
            "assignableScopes".into(),
            serde_json::Value::from(vec![scope.to_owned()]),
        );
    }
    RoleDefinitionOut {
        id: format!("Microsoft.Authorization/roleDefinitions/{}", d.id),
        name: d.id.clone(),
        kind: "Microsoft.Authorization/roleDefinitions",
        properties: props,
    }
}

async fn parse<T: serde::de::DeserializeOwned>(body: Body) -> Result<T, ApiError> {
    let bytes = read_body(body).await?;
    parse_json(&bytes)
}
