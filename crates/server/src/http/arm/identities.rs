//! User-assigned managed identities and workloads (the resources the
//! metadata endpoint identifies callers by).

use std::collections::BTreeMap;
use std::net::IpAddr;

use axum::extract::{Path, Request, State};
use axum::Extension;
use http::StatusCode;
use keyhaven_core::resource::ResourceRecord;
use keyhaven_identity::managed::{UamiProps, WorkloadProps, WorkloadSpec};
use keyhaven_wire::arm::{
    IdentityProperties, ManagedServiceIdentity, PutIdentity, PutWorkload, UserAssignedIdentity,
    UserAssignedRef, Workload, WorkloadProperties,
};

use super::common::RG;
use crate::state::AppState;
use axum::{routing, Router};

use super::common::{
    body, domain_failure, fail, location, reply, resource_name, tags_of, ArmFailure, ArmResult, C,
};

/// A user-assigned identity as ARM shows it.
pub fn identity_out(st: &AppState, r: &ResourceRecord, p: &UamiProps) -> UserAssignedIdentity {
    UserAssignedIdentity {
        id: r.id.clone(),
        name: r.name.clone(),
        kind: r.kind.clone(),
        location: r.location.clone(),
        tags: tags_of(r),
        properties: IdentityProperties {
            tenant_id: st.tokens.tenant_id().to_owned(),
            principal_id: p.principal_id.clone(),
            client_id: p.client_id.clone(),
        },
    }
}

/// `PUT …/userAssignedIdentities/{name}`.
pub async fn put_identity(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path((sub, rg, name)): Path<(String, String, String)>,
    req: Request,
) -> ArmResult {
    let at = resource_name(&st, sub, rg, name)?;
    let b: PutIdentity = body(req).await?;
    let loc = location(&b.location)?;
    let tags = serde_json::to_string(&b.tags).unwrap_or_else(|_| "{}".into());
    let scope = at.id(keyhaven_identity::managed::UAMI_TYPE);
    st.authz
        .require_action(
            &ctx.caller,
            &scope,
            "Microsoft.ManagedIdentity/userAssignedIdentities/write",
        )
        .await
        .map_err(domain_failure)?;
    let (r, p, created) = st
        .directory
        .put_user_assigned(&ctx.caller, &at, &loc, &tags)
        .await
        .map_err(|e| {
            fail(
                &ctx,
                "Microsoft.ManagedIdentity/userAssignedIdentities/write",
                &scope,
                e,
            )
        })?;
    reply(created, &identity_out(&st, &r, &p))
}

/// `GET …/userAssignedIdentities/{name}`.
pub async fn get_identity(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path((sub, rg, name)): Path<(String, String, String)>,
) -> ArmResult {
    let at = resource_name(&st, sub, rg, name)?;
    let scope = at.id(keyhaven_identity::managed::UAMI_TYPE);
    st.authz
        .require_action(
            &ctx.caller,
            &scope,
            "Microsoft.ManagedIdentity/userAssignedIdentities/read",
        )
        .await
        .map_err(domain_failure)?;
    let (r, p) = st.directory.user_assigned(&scope).await.map_err(|e| {
        fail(
            &ctx,
            "Microsoft.ManagedIdentity/userAssignedIdentities/read",
            &scope,
            e,
        )
    })?;
    reply(false, &identity_out(&st, &r, &p))
}

/// `DELETE …/userAssignedIdentities/{name}` (its service principal goes with it).
pub async fn delete_identity(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path((sub, rg, name)): Path<(String, String, String)>,
) -> ArmResult {
    let at = resource_name(&st, sub, rg, name)?;
    let scope = at.id(keyhaven_identity::managed::UAMI_TYPE);
    st.authz
        .require_action(
            &ctx.caller,
            &scope,
            "Microsoft.ManagedIdentity/userAssignedIdentities/delete",
        )
        .await
        .map_err(domain_failure)?;
    let deleted = st
        .directory
        .delete_user_assigned(&ctx.caller, &scope)
        .await
        .map_err(|e| {
            fail(
                &ctx,
                "Microsoft.ManagedIdentity/userAssignedIdentities/delete",
                &scope,
                e,
            )
        })?;
    Ok(super::resource::deleted(deleted))
}

/// A workload as ARM shows it.
pub async fn workload_out(st: &AppState, r: &ResourceRecord, p: &WorkloadProps) -> Workload {
    let mut user_assigned = BTreeMap::new();
    for id in &p.user_assigned {
        if let Ok((ur, up)) = st.directory.user_assigned(id).await {
            user_assigned.insert(
                ur.id,
                UserAssignedRef {
                    principal_id: up.principal_id,
                    client_id: up.client_id,
                },
            );
        }
    }
    let kind = match (p.system_principal_id.is_some(), !p.user_assigned.is_empty()) {
        (true, true) => "SystemAssigned, UserAssigned",
        (true, false) => "SystemAssigned",
        (false, true) => "UserAssigned",
        (false, false) => "None",
    };
    Workload {
        id: r.id.clone(),
        name: r.name.clone(),
        kind: r.kind.clone(),
        location: r.location.clone(),
        tags: tags_of(r),
        properties: WorkloadProperties {
            addresses: p.addresses.iter().map(IpAddr::to_string).collect(),
        },
        identity: ManagedServiceIdentity {
            kind: kind.to_owned(),
            principal_id: p.system_principal_id.clone(),
            tenant_id: p
                .system_principal_id
                .as_ref()
                .map(|_| st.tokens.tenant_id().to_owned()),
            user_assigned,
        },
    }
}

/// What attaching a user-assigned identity to a workload needs on it.
pub const ASSIGN_IDENTITY: &str = "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action";

/// `PUT …/Keyhaven.Compute/workloads/{name}`: the caller needs
/// `assign/action` on every identity it names.
pub async fn put_workload(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path((sub, rg, name)): Path<(String, String, String)>,
    req: Request,
) -> ArmResult {
    let at = resource_name(&st, sub, rg, name)?;
    let b: PutWorkload = body(req).await?;
    let loc = location(&b.location)?;
    let mut addresses = Vec::with_capacity(b.properties.addresses.len());
    for a in &b.properties.addresses {
        addresses.push(a.trim().parse::<IpAddr>().map_err(|_| {
            ArmFailure::new(
                StatusCode::BAD_REQUEST,
                "InvalidAddress",
                format!(
                    "'{}' is not an IP address.",
                    a.chars().take(64).collect::<String>()
                ),
            )
        })?);
    }
    let (system_assigned, user_assigned) = match &b.identity {
        Some(i) => {
            let ua: Vec<String> = i.user_assigned.keys().cloned().collect();
            if !ua.is_empty() && !i.user_assigned_enabled() {
                return Err(ArmFailure::new(
                    StatusCode::BAD_REQUEST,
                    "InvalidIdentityType",
                    "userAssignedIdentities requires identity type 'UserAssigned'.",
                ));
            }
            (i.system_assigned(), ua)
        }
        None => (false, Vec::new()),
    };
    let scope = at.id(keyhaven_identity::managed::WORKLOAD_TYPE);
    st.authz
        .require_action(&ctx.caller, &scope, "Keyhaven.Compute/workloads/write")
        .await
        .map_err(domain_failure)?;
    // Azure: attaching a user-assigned identity is a linked access check —
    // whoever attaches it gets its tokens, so the caller needs the assign
    // action on every identity named (Managed Identity Operator, Owner,
    // Contributor), not just write on the workload.
    for ua in &user_assigned {
        st.authz
            .require_action(&ctx.caller, ua, ASSIGN_IDENTITY)
            .await
            .map_err(domain_failure)?;
    }
    let spec = WorkloadSpec {
        addresses,
        system_assigned,
        user_assigned,
        location: loc,
        tags: serde_json::to_string(&b.tags).unwrap_or_else(|_| "{}".into()),
    };
    let (r, p, created) = st
        .directory
        .put_workload(&ctx.caller, &at, spec)
        .await
        .map_err(|e| fail(&ctx, "Keyhaven.Compute/workloads/write", &scope, e))?;
    reply(created, &workload_out(&st, &r, &p).await)
}

/// `GET …/Keyhaven.Compute/workloads/{name}`.
pub async fn get_workload(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path((sub, rg, name)): Path<(String, String, String)>,
) -> ArmResult {
    let at = resource_name(&st, sub, rg, name)?;
    let scope = at.id(keyhaven_identity::managed::WORKLOAD_TYPE);
    st.authz
        .require_action(&ctx.caller, &scope, "Keyhaven.Compute/workloads/read")
        .await
        .map_err(domain_failure)?;
    let (r, p) = st
        .directory
        .workload(&scope)
        .await
        .map_err(|e| fail(&ctx, "Keyhaven.Compute/workloads/read", &scope, e))?;
    reply(false, &workload_out(&st, &r, &p).await)
}

/// `DELETE …/Keyhaven.Compute/workloads/{name}`.
pub async fn delete_workload(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path((sub, rg, name)): Path<(String, String, String)>,
) -> ArmResult {
    let at = resource_name(&st, sub, rg, name)?;
    let scope = at.id(keyhaven_identity::managed::WORKLOAD_TYPE);
    st.authz
        .require_action(&ctx.caller, &scope, "Keyhaven.Compute/workloads/delete")
        .await
        .map_err(domain_failure)?;
    let deleted = st
        .directory
        .delete_workload(&ctx.caller, &scope)
        .await
        .map_err(|e| fail(&ctx, "Keyhaven.Compute/workloads/delete", &scope, e))?;
    Ok(super::resource::deleted(deleted))
}

/// The group's resources of `kind` that the caller may `read`.
async fn readable_in_group(
    st: &AppState,
    ctx: &super::common::Ctx,
    (sub, rg): (String, String),
    kind: &str,
    read: &str,
) -> Result<Vec<String>, ArmFailure> {
    // Validates the subscription and group as a single resource's path does.
    let at = resource_name(st, sub, rg, "x".into())?;
    let prefix = at.id(kind);
    let prefix = prefix
        .strip_suffix("/x")
        .unwrap_or(&prefix)
        .to_ascii_lowercase();
    let all = st
        .store
        .list_resources(kind, &st.subscription_id)
        .await
        .map_err(|e| domain_failure(e.into()))?;
    let mut out = Vec::new();
    for r in all {
        let id = r.id.to_ascii_lowercase();
        let in_group = id
            .strip_prefix(&prefix)
            .is_some_and(|rest| rest.starts_with('/') && !rest[1..].contains('/'));
        if !in_group {
            continue;
        }
        // Only a refusal hides an item; any other failure fails the list
        // (never a silently partial answer).
        match st.authz.require_action(&ctx.caller, &r.id, read).await {
            Ok(()) => out.push(r.id),
            Err(keyhaven_core::Error::Forbidden { .. }) => {}
            Err(e) => return Err(domain_failure(e)),
        }
    }
    Ok(out)
}

/// `GET {group}/providers/Microsoft.ManagedIdentity/userAssignedIdentities`:
/// those the caller may read.
pub async fn list_identities(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path((sub, rg)): Path<(String, String)>,
) -> ArmResult {
    let read = "Microsoft.ManagedIdentity/userAssignedIdentities/read";
    let ids = readable_in_group(
        &st,
        &ctx,
        (sub, rg),
        keyhaven_identity::managed::UAMI_TYPE,
        read,
    )
    .await?;
    let mut value = Vec::new();
    for id in ids {
        if let Ok((r, p)) = st.directory.user_assigned(&id).await {
            value.push(identity_out(&st, &r, &p));
        }
    }
    reply(false, &serde_json::json!({ "value": value }))
}

/// `GET {group}/providers/Keyhaven.Compute/workloads`: those the caller may
/// read.
pub async fn list_workloads(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path((sub, rg)): Path<(String, String)>,
) -> ArmResult {
    let read = "Keyhaven.Compute/workloads/read";
    let ids = readable_in_group(
        &st,
        &ctx,
        (sub, rg),
        keyhaven_identity::managed::WORKLOAD_TYPE,
        read,
    )
    .await?;
    let mut value = Vec::new();
    for id in ids {
        if let Ok((r, p)) = st.directory.workload(&id).await {
            value.push(workload_out(&st, &r, &p).await);
        }
    }
    reply(false, &serde_json::json!({ "value": value }))
}

/// This kind's routes, merged into the plane's router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            &format!("{RG}/Microsoft.ManagedIdentity/userAssignedIdentities"),
            routing::get(list_identities),
        )
        .route(
            &format!("{RG}/Keyhaven.Compute/workloads"),
            routing::get(list_workloads),
        )
        .route(
            &format!("{RG}/Microsoft.ManagedIdentity/userAssignedIdentities/{{name}}"),
            routing::put(put_identity)
                .get(get_identity)
                .delete(delete_identity),
        )
        .route(
            &format!("{RG}/Keyhaven.Compute/workloads/{{name}}"),
            routing::put(put_workload)
                .get(get_workload)
                .delete(delete_workload),
        )
}
