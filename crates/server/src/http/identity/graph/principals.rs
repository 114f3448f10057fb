//! Graph's directory principals: users (and `/me`), groups with their
//! (transitive) members, and service principals.

use std::collections::BTreeMap;

use axum::extract::{Path, Request, State};
use axum::Extension;
use keyhaven_core::directory::PrincipalRecord;
use keyhaven_core::{PrincipalKind, Sensitive};
use keyhaven_identity::directory::{
    NewGroup, NewUser, PrincipalAttrs, UserPatch, GLOBAL_ADMINISTRATOR,
    GLOBAL_ADMINISTRATOR_TEMPLATE,
};
use keyhaven_wire::graph::{
    self as g, Collection, CreateGroup, CreateServicePrincipal, CreateUser, Reference, UpdateUser,
};

use super::{body, created, list_kind, object_out, ok, GraphResult, C};
use crate::http::response::no_content;
use crate::state::AppState;

// ---------------- users ----------------
pub(super) fn user_out(p: &PrincipalRecord, odata: BTreeMap<&'static str, String>) -> g::User {
    let attrs = PrincipalAttrs::of(p);
    g::User {
        odata,
        id: p.object_id.clone(),
        business_phones: Vec::new(),
        display_name: p.display_name.clone(),
        given_name: None,
        job_title: None,
        mail: None,
        mail_nickname: attrs.mail_nickname,
        mobile_phone: None,
        office_location: None,
        preferred_language: None,
        surname: None,
        user_principal_name: p.upn.clone().unwrap_or_default(),
        account_enabled: p.enabled,
    }
}

pub(super) async fn me(State(st): State<AppState>, Extension(ctx): C) -> GraphResult {
    let p = st
        .directory
        .principal(&ctx.caller.object_id)
        .await
        .map_err(|e| ctx.fail(e))?;
    if p.kind != PrincipalKind::User.as_str() {
        return Err(ctx.bad("/me request is only valid with delegated authentication flow."));
    }
    ok(&user_out(&p, ctx.context("users/$entity")))
}

pub(super) async fn list_users(State(st): State<AppState>, Extension(ctx): C) -> GraphResult {
    list_kind(&st, &ctx, PrincipalKind::User, "/users").await
}

pub(super) async fn create_user(
    State(st): State<AppState>,
    Extension(ctx): C,
    req: Request,
) -> GraphResult {
    let b: CreateUser = body(&ctx, req).await?;
    let password = b
        .password_profile
        .and_then(|p| p.password)
        .map(Sensitive::new)
        .ok_or_else(|| ctx.bad("Property 'passwordProfile' is required."))?;
    let (Some(upn), Some(display_name)) = (b.user_principal_name, b.display_name) else {
        return Err(ctx.bad("Properties 'userPrincipalName' and 'displayName' are required."));
    };
    let user = st
        .directory
        .create_user(
            &ctx.caller,
            NewUser {
                upn,
                display_name,
                mail_nickname: b.mail_nickname,
                password,
                enabled: b.account_enabled.unwrap_or(true),
            },
        )
        .await
        .map_err(|e| ctx.fail(e))?;
    created(&user_out(&user, ctx.context("users/$entity")))
}

pub(super) async fn get_user(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path(id): Path<String>,
) -> GraphResult {
    let u = st.directory.user(&id).await.map_err(|e| ctx.fail(e))?;
    ok(&user_out(&u, ctx.context("users/$entity")))
}

pub(super) async fn update_user(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path(id): Path<String>,
    req: Request,
) -> GraphResult {
    let b: UpdateUser = body(&ctx, req).await?;
    let patch = UserPatch {
        display_name: b.display_name,
        enabled: b.account_enabled,
        password: b
            .password_profile
            .and_then(|p| p.password)
            .map(Sensitive::new),
    };
    st.directory
        .update_user(&ctx.caller, &id, patch)
        .await
        .map_err(|e| ctx.fail(e))?;
    Ok(no_content())
}

pub(super) async fn delete_user(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path(id): Path<String>,
) -> GraphResult {
    st.directory
        .delete_principal(&ctx.caller, &id, PrincipalKind::User)
        .await
        .map_err(|e| ctx.fail(e))?;
    Ok(no_content())
}

// ---------------- groups ----------------
pub(super) fn group_out(p: &PrincipalRecord, odata: BTreeMap<&'static str, String>) -> g::Group {
    let attrs = PrincipalAttrs::of(p);
    g::Group {
        odata,
        id: p.object_id.clone(),
        display_name: p.display_name.clone(),
        description: attrs.description,
        group_types: Vec::new(),
        mail_enabled: attrs.mail_enabled.unwrap_or(false),
        mail_nickname: attrs.mail_nickname,
        security_enabled: attrs.security_enabled.unwrap_or(true),
    }
}

pub(super) async fn list_groups(State(st): State<AppState>, Extension(ctx): C) -> GraphResult {
    list_kind(&st, &ctx, PrincipalKind::Group, "/groups").await
}

pub(super) async fn create_group(
    State(st): State<AppState>,
    Extension(ctx): C,
    req: Request,
) -> GraphResult {
    let b: CreateGroup = body(&ctx, req).await?;
    let display_name = b
        .display_name
        .ok_or_else(|| ctx.bad("Property 'displayName' is required."))?;
    let group = st
        .directory
        .create_group(
            &ctx.caller,
            NewGroup {
                display_name,
                mail_nickname: b.mail_nickname,
                mail_enabled: b.mail_enabled.unwrap_or(false),
                security_enabled: b.security_enabled.unwrap_or(true),
                description: b.description,
            },
        )
        .await
        .map_err(|e| ctx.fail(e))?;
    created(&group_out(&group, ctx.context("groups/$entity")))
}

pub(super) async fn get_group(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path(id): Path<String>,
) -> GraphResult {
    let grp = st
        .directory
        .principal_of_kind(&id, PrincipalKind::Group)
        .await
        .map_err(|e| ctx.fail(e))?;
    ok(&group_out(&grp, ctx.context("groups/$entity")))
}

pub(super) async fn delete_group(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path(id): Path<String>,
) -> GraphResult {
    st.directory
        .delete_principal(&ctx.caller, &id, PrincipalKind::Group)
        .await
        .map_err(|e| ctx.fail(e))?;
    Ok(no_content())
}

pub(super) async fn group_members(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path(id): Path<String>,
) -> GraphResult {
    let members = st.directory.members(&id).await.map_err(|e| ctx.fail(e))?;
    ok(&Collection {
        context: format!("{}/$metadata#directoryObjects", ctx.base),
        value: members.iter().map(object_out).collect::<Vec<_>>(),
        next_link: None,
    })
}

pub(super) async fn group_transitive_members(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path(id): Path<String>,
) -> GraphResult {
    let members = st
        .directory
        .transitive_members(&id)
        .await
        .map_err(|e| ctx.fail(e))?;
    ok(&Collection {
        context: format!("{}/$metadata#directoryObjects", ctx.base),
        value: members.iter().map(object_out).collect::<Vec<_>>(),
        next_link: None,
    })
}

pub(super) async fn add_member(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path(id): Path<String>,
    req: Request,
) -> GraphResult {
    let r: Reference = body(&ctx, req).await?;
    let member = r
        .object_id()
        .ok_or_else(|| ctx.bad("Invalid object identifier in '@odata.id'."))?
        .to_owned();
    st.directory
        .add_member(&ctx.caller, &id, &member)
        .await
        .map_err(|e| ctx.fail(e))?;
    Ok(no_content())
}

pub(super) async fn remove_member(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path((id, member)): Path<(String, String)>,
) -> GraphResult {
    st.directory
        .remove_member(&ctx.caller, &id, &member)
        .await
        .map_err(|e| ctx.fail(e))?;
    Ok(no_content())
}

// ---------------- service principals ----------------
pub(super) fn sp_out(
    p: &PrincipalRecord,
    odata: BTreeMap<&'static str, String>,
) -> g::ServicePrincipal {
    let attrs = PrincipalAttrs::of(p);
    let app_id = p.app_id.clone().unwrap_or_default();
    g::ServicePrincipal {
        odata,
        id: p.object_id.clone(),
        app_id: app_id.clone(),
        display_name: p.display_name.clone(),
        account_enabled: p.enabled,
        service_principal_type: attrs
            .service_principal_type
            .unwrap_or_else(|| "Application".into()),
        app_owner_organization_id: p.tenant_id.clone(),
        service_principal_names: vec![app_id],
    }
}

pub(super) async fn list_service_principals(
    State(st): State<AppState>,
    Extension(ctx): C,
) -> GraphResult {
    // `$filter=appId eq '…'` is what the CLI and SDKs use to find an app's
    // SP; `servicePrincipalNames/any(c:c eq '…')` is how the CLI finds the
    // one it is signed in as (an SP's only name is its app id).
    if let Some(filter) = ctx.query.get("$filter") {
        let by_name = filter
            .strip_prefix("servicePrincipalNames/any(")
            .and_then(|r| r.strip_suffix("')"))
            .and_then(|r| r.split_once(" eq '"))
            .map(|(_, v)| v);
        let app_id = filter
            .strip_prefix("appId eq '")
            .and_then(|r| r.strip_suffix('\''))
            .or(by_name)
            .ok_or_else(|| {
                ctx.bad("Only $filter=appId eq '<appId>' or servicePrincipalNames/any(c:c eq '<appId>') is supported.")
            })?;
        let found = st
            .directory
            .service_principal_by_app_id(app_id)
            .await
            .map_err(|e| ctx.fail(e))?;
        return ok(&Collection {
            context: format!("{}/$metadata#servicePrincipals", ctx.base),
            value: found
                .iter()
                .map(|p| sp_out(p, BTreeMap::new()))
                .collect::<Vec<_>>(),
            next_link: None,
        });
    }
    list_kind(
        &st,
        &ctx,
        PrincipalKind::ServicePrincipal,
        "/servicePrincipals",
    )
    .await
}

pub(super) async fn create_service_principal(
    State(st): State<AppState>,
    Extension(ctx): C,
    req: Request,
) -> GraphResult {
    let b: CreateServicePrincipal = body(&ctx, req).await?;
    let app_id = b
        .app_id
        .ok_or_else(|| ctx.bad("Property 'appId' is required."))?;
    let sp = st
        .directory
        .create_service_principal(&ctx.caller, &app_id)
        .await
        .map_err(|e| ctx.fail(e))?;
    created(&sp_out(&sp, ctx.context("servicePrincipals/$entity")))
}

pub(super) async fn get_service_principal(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path(id): Path<String>,
) -> GraphResult {
    let sp = st
        .directory
        .principal_of_kind(&id, PrincipalKind::ServicePrincipal)
        .await
        .map_err(|e| ctx.fail(e))?;
    ok(&sp_out(&sp, ctx.context("servicePrincipals/$entity")))
}

pub(super) async fn delete_service_principal(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path(id): Path<String>,
) -> GraphResult {
    st.directory
        .delete_principal(&ctx.caller, &id, PrincipalKind::ServicePrincipal)
        .await
        .map_err(|e| ctx.fail(e))?;
    Ok(no_content())
}

pub(super) async fn update_service_principal(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path(id): Path<String>,
    req: Request,
) -> GraphResult {
    let b: g::UpdateServicePrincipal = body(&ctx, req).await?;
    if let Some(enabled) = b.account_enabled {
        st.directory
            .set_service_principal_enabled(&ctx.caller, &id, enabled)
            .await
            .map_err(|e| ctx.fail(e))?;
    }
    Ok(no_content())
}

// ---------------- directory roles ----------------
// `roleManagement/directory/roleAssignments`, Microsoft Graph's way to make
// a principal a directory administrator (Global Administrator, the one
// directory role Keyhaven has), at directory scope `/`.

fn role_assignment_out(principal_id: &str) -> serde_json::Value {
    serde_json::json!({
        "id": format!("{GLOBAL_ADMINISTRATOR_TEMPLATE}_{principal_id}"),
        "principalId": principal_id,
        "roleDefinitionId": GLOBAL_ADMINISTRATOR_TEMPLATE,
        "directoryScopeId": "/",
    })
}

/// The assignment id's principal (`{roleDefinitionId}_{principalId}`).
fn assignment_principal(id: &str) -> Option<&str> {
    let (role, principal) = id.split_once('_')?;
    role.eq_ignore_ascii_case(GLOBAL_ADMINISTRATOR_TEMPLATE)
        .then_some(principal)
}

/// `GET /roleManagement/directory/roleAssignments[?$filter=principalId eq '…']`.
pub(super) async fn list_role_assignments(
    State(st): State<AppState>,
    Extension(ctx): C,
) -> GraphResult {
    let principal = match ctx.query.get("$filter") {
        None => None,
        Some(f) => Some(
            f.trim()
                .strip_prefix("principalId eq '")
                .and_then(|r| r.strip_suffix('\''))
                .ok_or_else(|| ctx.bad("Only $filter=principalId eq '{id}' is supported."))?
                .to_owned(),
        ),
    };
    // One principal's is anyone's to read; the whole list (a scan of the
    // directory) is for directory administrators.
    if principal.is_none() {
        st.directory
            .require_admin(&ctx.caller)
            .await
            .map_err(|e| ctx.fail(e))?;
    }
    let holders = st
        .directory
        .directory_role_holders(GLOBAL_ADMINISTRATOR, principal.as_deref())
        .await
        .map_err(|e| ctx.fail(e))?;
    let context = ctx.context("roleManagement/directory/roleAssignments");
    ok(&serde_json::json!({
        "@odata.context": context.get("@odata.context"),
        "value": holders.iter().map(|p| role_assignment_out(&p.object_id)).collect::<Vec<_>>(),
    }))
}

/// `POST /roleManagement/directory/roleAssignments` `{principalId,
/// roleDefinitionId, directoryScopeId: "/"}`: directory administrators only.
pub(super) async fn create_role_assignment(
    State(st): State<AppState>,
    Extension(ctx): C,
    req: Request,
) -> GraphResult {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct NewAssignment {
        principal_id: String,
        role_definition_id: String,
        #[serde(default)]
        directory_scope_id: Option<String>,
    }
    let a: NewAssignment = body(&ctx, req).await?;
    if !a
        .role_definition_id
        .eq_ignore_ascii_case(GLOBAL_ADMINISTRATOR_TEMPLATE)
    {
        return Err(ctx.bad(&format!(
            "Unknown or unsupported roleDefinitionId; Keyhaven's one directory role is Global Administrator ({GLOBAL_ADMINISTRATOR_TEMPLATE})."
        )));
    }
    if a.directory_scope_id.as_deref().is_some_and(|s| s != "/") {
        return Err(ctx.bad("directoryScopeId must be '/'."));
    }
    let changed = st
        .directory
        .set_directory_role(&ctx.caller, &a.principal_id, GLOBAL_ADMINISTRATOR, true)
        .await
        .map_err(|e| ctx.fail(e))?;
    if !changed {
        return Err(ctx.bad("A conflicting object with one or more of the specified property values is present in the directory."));
    }
    created(&role_assignment_out(&a.principal_id))
}

/// `DELETE /roleManagement/directory/roleAssignments/{id}`.
pub(super) async fn delete_role_assignment(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path(id): Path<String>,
) -> GraphResult {
    let Some(principal) = assignment_principal(&id) else {
        return Err(ctx.fail(keyhaven_identity::directory::DirectoryError::NotFound(id)));
    };
    let changed = st
        .directory
        .set_directory_role(&ctx.caller, principal, GLOBAL_ADMINISTRATOR, false)
        .await
        .map_err(|e| ctx.fail(e))?;
    if !changed {
        return Err(ctx.fail(keyhaven_identity::directory::DirectoryError::NotFound(id)));
    }
    Ok(no_content())
}
