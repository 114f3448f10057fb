//! The vault resource on the management plane: create or update (PUT, with
//! `createMode: recover`), PATCH, GET, DELETE (soft), lists by resource group,
//! subscription and the generic resources list, access policies
//! (`accessPolicies/{add|replace|remove}`), deleted vaults (get, list, purge)
//! and `checkNameAvailability`. The rules live in `keyhaven_core::vault_admin`.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::response::Response;
use axum::Extension;
use http::StatusCode;
use keyhaven_core::vault::{PolicyEdit, VaultRecord};
use keyhaven_core::vault_admin::AdminError;
use keyhaven_core::{Error, VaultName};
use keyhaven_wire::arm::{
    AccessPoliciesOut, AccessPolicyUpdate, ArmList, CheckName, DeletedVaultOut,
    DeletedVaultProperties, GenericResourceOut, NameAvailability, PutAccessPolicies, PutVault, Sku,
    VaultOut, VaultPropertiesOut,
};

use super::common::{domain_failure, parse_body, ArmFailure, Ctx};
use super::common::{KV, RG};
use crate::http::response::json;
use crate::state::AppState;
use axum::{routing, Router};

type Where = Path<(String, String, String)>;

/// The live vault `name` in `sub`/`rg`, or ARM's 404 `ResourceNotFound`.
pub(crate) async fn find(
    st: &AppState,
    sub: &str,
    rg: &str,
    name: &str,
) -> Result<Arc<VaultRecord>, ArmFailure> {
    find_container(st, sub, rg, name, false).await
}

/// The live vault (or, with `pool`, managed HSM pool) `name` in `sub`/`rg`,
/// or ARM's 404 `ResourceNotFound`.
pub(crate) async fn find_container(
    st: &AppState,
    sub: &str,
    rg: &str,
    name: &str,
    pool: bool,
) -> Result<Arc<VaultRecord>, ArmFailure> {
    let not_found = || {
        ArmFailure::new(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            format!(
                "The Resource 'Microsoft.KeyVault/{}/{}' under resource group '{}' was not found.",
                if pool { "managedHSMs" } else { "vaults" },
                name.chars().take(64).collect::<String>(),
                rg.chars().take(90).collect::<String>()
            ),
        )
    };
    let vault_name: VaultName = name.parse().map_err(|_| not_found())?;
    let v = st
        .vault(&vault_name)
        .await
        .map_err(domain_failure)?
        .ok_or_else(not_found)?;
    if v.subscription_id.eq_ignore_ascii_case(sub)
        && v.resource_group.eq_ignore_ascii_case(rg)
        && v.is_managed_hsm() == pool
    {
        Ok(v)
    } else {
        Err(not_found())
    }
}

pub(crate) fn location_of(v: &VaultRecord) -> String {
    v.properties
        .location
        .clone()
        .unwrap_or_else(|| crate::config::LOCATION.to_owned())
}

/// A vault's ARM `GET` shape as JSON (what policy rules evaluate).
pub(crate) fn vault_json(st: &AppState, v: &VaultRecord) -> serde_json::Value {
    serde_json::to_value(vault_out(st, v)).unwrap_or_default()
}

fn vault_out(st: &AppState, v: &VaultRecord) -> VaultOut {
    let p = &v.properties;
    VaultOut {
        id: v.resource_id(),
        name: v.name.to_string(),
        kind: "Microsoft.KeyVault/vaults",
        location: location_of(v),
        tags: p.tags.clone(),
        properties: VaultPropertiesOut {
            tenant_id: v.tenant_id.clone(),
            sku: Sku {
                family: "A",
                name: v.sku.clone(),
            },
            access_policies: p.access_policies.clone(),
            vault_uri: format!("{}/", st.endpoints.vault_url(v.name.as_str())),
            enabled_for_deployment: p.enabled_for_deployment,
            enabled_for_disk_encryption: p.enabled_for_disk_encryption,
            enabled_for_template_deployment: p.enabled_for_template_deployment,
            enable_rbac_authorization: p.rbac_authorization,
            enable_soft_delete: true,
            soft_delete_retention_in_days: v.retention_days,
            enable_purge_protection: v.purge_protection.then_some(true),
            network_acls: p.network_acls.clone(),
            provisioning_state: "Succeeded",
            public_network_access: p
                .public_network_access
                .clone()
                .unwrap_or_else(|| "Enabled".into()),
            private_endpoint_connections: None,
        },
    }
}

pub(crate) fn admin_failure(e: AdminError) -> ArmFailure {
    match e {
        AdminError::BadRequest(code, m) => ArmFailure::new(StatusCode::BAD_REQUEST, code, m),
        AdminError::Conflict(code, m) => ArmFailure::new(StatusCode::CONFLICT, code, m),
        AdminError::NotFound(m) => ArmFailure::new(StatusCode::NOT_FOUND, "ResourceNotFound", m),
        AdminError::Disallowed(detail) => {
            ArmFailure::detailed(StatusCode::FORBIDDEN, "RequestDisallowedByPolicy", *detail)
        }
        AdminError::Core(e) => domain_failure(e),
    }
}

pub(crate) fn check_subscription(st: &AppState, sub: &str) -> Result<(), ArmFailure> {
    super::common::check_subscription(st, sub)
}

/// `PUT …/vaults/{name}`: create, update, or recover (`createMode: recover`).
/// Completes at once: `provisioningState` is `Succeeded`, so the SDK's
/// long-running-operation poller finishes on the first response.
pub async fn put_vault(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<Ctx>>,
    Path((sub, rg, name)): Where,
    req: Request,
) -> Result<Response, ArmFailure> {
    check_subscription(&st, &sub)?;
    let vault_name: VaultName = name.parse().map_err(|e: Error| {
        ArmFailure::new(StatusCode::BAD_REQUEST, "VaultNameNotValid", e.to_string())
    })?;
    let scope = format!(
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.KeyVault/vaults/{vault_name}"
    );
    st.authz
        .require_action(&ctx.caller, &scope, "Microsoft.KeyVault/vaults/write")
        .await
        .map_err(domain_failure)?;
    super::groups::require_group(&st, &sub, &rg).await?;
    let api_version = api_version_of(&req);
    let b: PutVault = body(req).await?;
    let mut spec: keyhaven_core::vault_admin::VaultSpec = b.into();
    spec.may_change_permission_model = may_change_model(&st, &ctx, &scope).await?;
    let compiled = st.policies().await.map_err(domain_failure)?;
    let guard = crate::policy::vault_guard(&st, &compiled, &api_version);
    let (v, created) = st
        .service
        .put_vault_guarded(&sub, &rg, &vault_name, st.tokens.tenant_id(), spec, &guard)
        .await
        .map_err(admin_failure)?;
    crate::policy::after_vault_write(&st, &v).await;
    Ok(json(
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        &vault_out(&st, &v),
    ))
}

/// The request's `api-version` (what `requestContext().apiVersion` gives
/// policy rules).
fn api_version_of(req: &Request) -> String {
    crate::http::extract::query_map(req.uri().query())
        .get("api-version")
        .cloned()
        .unwrap_or_default()
}

/// Whether the caller may switch a vault's permission model: Azure asks for
/// `Microsoft.Authorization/roleAssignments/write` at the vault's scope,
/// held without a condition (so not through Key Vault Data Access
/// Administrator).
async fn may_change_model(st: &AppState, ctx: &Ctx, scope: &str) -> Result<bool, ArmFailure> {
    st.authz
        .holds_unrestricted(
            &ctx.caller,
            scope,
            "Microsoft.Authorization/roleAssignments/write",
        )
        .await
        .map_err(domain_failure)
}

/// `DELETE …/vaults/{name}`: soft delete (200), or 204 when absent.
pub async fn delete_vault(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<Ctx>>,
    Path((sub, rg, name)): Where,
) -> Result<Response, ArmFailure> {
    check_subscription(&st, &sub)?;
    let scope = format!(
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.KeyVault/vaults/{name}"
    );
    st.authz
        .require_action(&ctx.caller, &scope, "Microsoft.KeyVault/vaults/delete")
        .await
        .map_err(domain_failure)?;
    let v = match find(&st, &sub, &rg, &name).await {
        Ok(v) => v,
        Err(_) => return Ok(crate::http::response::status_only(StatusCode::NO_CONTENT)),
    };
    st.service.delete_vault(&v).await.map_err(admin_failure)?;
    Ok(crate::http::response::status_only(StatusCode::OK))
}

/// Live vaults of the subscription (optionally one resource group) the
/// caller may read.
async fn readable_vaults(
    st: &AppState,
    ctx: &Ctx,
    sub: &str,
    rg: Option<&str>,
) -> Result<Vec<VaultRecord>, ArmFailure> {
    check_subscription(st, sub)?;
    let mut out = Vec::new();
    for v in st.service.vaults_of(sub).await.map_err(admin_failure)? {
        if v.properties.deleted.is_some()
            || v.is_managed_hsm()
            || rg.is_some_and(|g| !g.eq_ignore_ascii_case(&v.resource_group))
        {
            continue;
        }
        if st
            .authz
            .require_action(
                &ctx.caller,
                &v.resource_id(),
                "Microsoft.KeyVault/vaults/read",
            )
            .await
            .is_ok()
        {
            out.push(v);
        }
    }
    Ok(out)
}

/// `GET /subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.KeyVault/vaults`.
pub async fn list_vaults_in_group(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<Ctx>>,
    Path((sub, rg)): Path<(String, String)>,
) -> Result<Response, ArmFailure> {
    super::groups::require_group(&st, &sub, &rg).await?;
    vault_list(&st, &readable_vaults(&st, &ctx, &sub, Some(&rg)).await?)
}

fn vault_list(st: &AppState, list: &[VaultRecord]) -> Result<Response, ArmFailure> {
    Ok(json(
        StatusCode::OK,
        &ArmList {
            value: list.iter().map(|v| vault_out(st, v)).collect(),
        },
    ))
}

/// `GET /subscriptions/{sub}/providers/Microsoft.KeyVault/vaults`.
pub async fn list_vaults_in_subscription(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<Ctx>>,
    Path(sub): Path<String>,
) -> Result<Response, ArmFailure> {
    vault_list(&st, &readable_vaults(&st, &ctx, &sub, None).await?)
}

/// `GET /subscriptions/{sub}/resources` (what `vaults.list()` calls, with a
/// `resourceType eq 'Microsoft.KeyVault/vaults'` filter): the vaults.
pub async fn list_resources(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<Ctx>>,
    Path(sub): Path<String>,
) -> Result<Response, ArmFailure> {
    let list = readable_vaults(&st, &ctx, &sub, None).await?;
    Ok(json(
        StatusCode::OK,
        &ArmList {
            value: list
                .iter()
                .map(|v| GenericResourceOut {
                    id: v.resource_id(),
                    name: v.name.to_string(),
                    kind: "Microsoft.KeyVault/vaults",
                    location: location_of(v),
                    tags: v.properties.tags.clone(),
                })
                .collect(),
        },
    ))
}

fn deleted_out(v: &VaultRecord) -> Option<DeletedVaultOut> {
    if v.is_managed_hsm() {
        return None;
    }
    let d = v.properties.deleted?;
    let location = location_of(v);
    Some(DeletedVaultOut {
        id: format!(
            "/subscriptions/{}/providers/Microsoft.KeyVault/locations/{location}/deletedVaults/{}",
            v.subscription_id, v.name
        ),
        name: v.name.to_string(),
        kind: "Microsoft.KeyVault/deletedVaults",
        properties: DeletedVaultProperties {
            vault_id: v.resource_id(),
            location,
            deletion_date: keyhaven_wire::oauth::iso8601(d.deleted_date),
            scheduled_purge_date: keyhaven_wire::oauth::iso8601(d.scheduled_purge_date),
            tags: v.properties.tags.clone(),
            purge_protection_enabled: v.purge_protection,
        },
    })
}

/// A deleted vault of the subscription, by name (any location answers).
async fn find_deleted(
    st: &AppState,
    ctx: &Ctx,
    sub: &str,
    name: &str,
    action: &str,
) -> Result<VaultRecord, ArmFailure> {
    find_deleted_container(st, ctx, sub, name, action, false).await
}

/// A deleted vault (or, with `pool`, managed HSM pool) of the subscription,
/// by name, once the caller holds `action` on the subscription.
pub(crate) async fn find_deleted_container(
    st: &AppState,
    ctx: &Ctx,
    sub: &str,
    name: &str,
    action: &str,
    pool: bool,
) -> Result<VaultRecord, ArmFailure> {
    check_subscription(st, sub)?;
    let not_found = || {
        ArmFailure::new(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            format!(
                "The deleted {} '{}' was not found.",
                if pool { "managed HSM" } else { "vault" },
                name.chars().take(64).collect::<String>()
            ),
        )
    };
    st.authz
        .require_action(&ctx.caller, &format!("/subscriptions/{sub}"), action)
        .await
        .map_err(domain_failure)?;
    let vname: VaultName = name.parse().map_err(|_| not_found())?;
    st.store
        .get_vault(&vname)
        .await
        .map_err(|e| domain_failure(e.into()))?
        .filter(|v| {
            v.properties.deleted.is_some()
                && v.is_managed_hsm() == pool
                && v.subscription_id.eq_ignore_ascii_case(sub)
        })
        .ok_or_else(not_found)
}

/// `GET /subscriptions/{sub}/providers/Microsoft.KeyVault/locations/{loc}/deletedVaults/{name}`.
pub async fn get_deleted_vault(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<Ctx>>,
    Path((sub, _loc, name)): Path<(String, String, String)>,
) -> Result<Response, ArmFailure> {
    let v = find_deleted(
        &st,
        &ctx,
        &sub,
        &name,
        "Microsoft.KeyVault/deletedVaults/read",
    )
    .await?;
    Ok(json(StatusCode::OK, &deleted_out(&v)))
}

/// `GET /subscriptions/{sub}/providers/Microsoft.KeyVault/deletedVaults`.
pub async fn list_deleted_vaults(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<Ctx>>,
    Path(sub): Path<String>,
) -> Result<Response, ArmFailure> {
    check_subscription(&st, &sub)?;
    st.authz
        .require_action(
            &ctx.caller,
            &format!("/subscriptions/{sub}"),
            "Microsoft.KeyVault/deletedVaults/read",
        )
        .await
        .map_err(domain_failure)?;
    let list = st.service.vaults_of(&sub).await.map_err(admin_failure)?;
    Ok(json(
        StatusCode::OK,
        &ArmList {
            value: list.iter().filter_map(deleted_out).collect(),
        },
    ))
}

/// `POST …/locations/{loc}/deletedVaults/{name}/purge`: destroys the vault's
/// data key, then its data. Completes at once (200).
pub async fn purge_deleted_vault(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<Ctx>>,
    Path((sub, _loc, name)): Path<(String, String, String)>,
) -> Result<Response, ArmFailure> {
    let v = find_deleted(
        &st,
        &ctx,
        &sub,
        &name,
        "Microsoft.KeyVault/locations/deletedVaults/purge/action",
    )
    .await?;
    st.service.purge_vault(&v).await.map_err(admin_failure)?;
    Ok(crate::http::response::status_only(StatusCode::OK))
}

/// `POST /subscriptions/{sub}/providers/Microsoft.KeyVault/checkNameAvailability`.
pub async fn check_name_availability(
    State(st): State<AppState>,
    Extension(_ctx): Extension<Arc<Ctx>>,
    Path(sub): Path<String>,
    req: Request,
) -> Result<Response, ArmFailure> {
    check_subscription(&st, &sub)?;
    let b: CheckName = body(req).await?;
    if !b
        .kind
        .as_deref()
        .is_some_and(|k| k.eq_ignore_ascii_case("Microsoft.KeyVault/vaults"))
    {
        return Err(ArmFailure::new(
            StatusCode::BAD_REQUEST,
            "InvalidResourceType",
            "type must be Microsoft.KeyVault/vaults.",
        ));
    }
    let (available, reason, message) = st
        .service
        .vault_name_availability(b.name.as_deref().unwrap_or_default())
        .await
        .map_err(admin_failure)?;
    Ok(json(
        StatusCode::OK,
        &NameAvailability {
            name_available: available,
            reason,
            message,
        },
    ))
}

pub(crate) async fn body<T: serde::de::DeserializeOwned>(req: Request) -> Result<T, ArmFailure> {
    parse_body(req.into_body()).await
}

/// `GET …/vaults/{name}`.
pub async fn get_vault(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<Ctx>>,
    Path((sub, rg, name)): Where,
) -> Result<Response, ArmFailure> {
    let v = find(&st, &sub, &rg, &name).await?;
    st.authz
        .require_action(
            &ctx.caller,
            &v.resource_id(),
            "Microsoft.KeyVault/vaults/read",
        )
        .await
        .map_err(domain_failure)?;
    let mut out = vault_out(&st, &v);
    let network = st.network().await.map_err(domain_failure)?;
    out.properties.private_endpoint_connections =
        Some(super::network::connections_of(&network, &v.resource_id()));
    Ok(json(StatusCode::OK, &out))
}

/// `GET …/vaults/{name}/privateLinkResources`: the one group a private
/// endpoint can connect to a vault with (`vault`), as
/// `az keyvault private-link-resource list` reads it.
pub async fn private_link_resources(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<Ctx>>,
    Path((sub, rg, name)): Where,
) -> Result<Response, ArmFailure> {
    let v = find(&st, &sub, &rg, &name).await?;
    let id = v.resource_id();
    st.authz
        .require_action(&ctx.caller, &id, "Microsoft.KeyVault/vaults/read")
        .await
        .map_err(domain_failure)?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({"value": [{
            "id": format!("{id}/privateLinkResources/vault"),
            "name": "vault",
            "type": "Microsoft.KeyVault/vaults/privateLinkResources",
            "properties": {
                "groupId": "vault",
                "requiredMembers": ["default"],
                "requiredZoneNames": [format!("privatelink.{}", st.endpoints.vault_parent())],
            },
        }]}),
    ))
}

/// `PATCH …/vaults/{name}`: the given properties and tags change, the rest stay.
pub async fn patch_vault(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<Ctx>>,
    Path((sub, rg, name)): Where,
    req: Request,
) -> Result<Response, ArmFailure> {
    let v = find(&st, &sub, &rg, &name).await?;
    st.authz
        .require_action(
            &ctx.caller,
            &v.resource_id(),
            "Microsoft.KeyVault/vaults/write",
        )
        .await
        .map_err(domain_failure)?;
    let api_version = api_version_of(&req);
    let b: PutVault = body(req).await?;
    let mut spec: keyhaven_core::vault_admin::VaultSpec = b.into();
    if spec.create_mode.is_some() {
        return Err(ArmFailure::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "createMode is only valid on PUT.",
        ));
    }
    spec.location = None;
    spec.may_change_permission_model = may_change_model(&st, &ctx, &v.resource_id()).await?;
    let compiled = st.policies().await.map_err(domain_failure)?;
    let guard = crate::policy::vault_guard(&st, &compiled, &api_version);
    let (updated, _) = st
        .service
        .put_vault_guarded(&sub, &rg, &v.name, st.tokens.tenant_id(), spec, &guard)
        .await
        .map_err(admin_failure)?;
    crate::policy::after_vault_write(&st, &updated).await;
    Ok(json(StatusCode::OK, &vault_out(&st, &updated)))
}

/// `PUT …/vaults/{name}/accessPolicies/{add|replace|remove}`.
pub async fn put_access_policies(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<Ctx>>,
    Path((sub, rg, name, op)): Path<(String, String, String, String)>,
    req: Request,
) -> Result<Response, ArmFailure> {
    let edit = match op.to_ascii_lowercase().as_str() {
        "add" => PolicyEdit::Add,
        "replace" => PolicyEdit::Replace,
        "remove" => PolicyEdit::Remove,
        _ => {
            return Err(ArmFailure::new(
                StatusCode::BAD_REQUEST,
                "InvalidOperation",
                "The access policy operation must be add, replace or remove.",
            ))
        }
    };
    let v = find(&st, &sub, &rg, &name).await?;
    st.authz
        .require_action(
            &ctx.caller,
            &v.resource_id(),
            "Microsoft.KeyVault/vaults/accessPolicies/write",
        )
        .await
        .map_err(domain_failure)?;
    let api_version = api_version_of(&req);
    let b: PutAccessPolicies = body(req).await?;
    let entries = b.properties.map(|p| p.access_policies).unwrap_or_default();
    let compiled = st.policies().await.map_err(domain_failure)?;
    let guard = crate::policy::vault_guard(&st, &compiled, &api_version);
    let v = st
        .service
        .edit_access_policies(&v, edit, &entries, &guard)
        .await
        .map_err(admin_failure)?;
    crate::policy::after_vault_write(&st, &v).await;
    let props = &v.properties;
    Ok(json(
        StatusCode::OK,
        &AccessPoliciesOut {
            id: format!("{}/accessPolicies/", v.resource_id()),
            kind: "Microsoft.KeyVault/vaults/accessPolicies",
            properties: AccessPolicyUpdate {
                access_policies: props.access_policies.clone(),
            },
        },
    ))
}

/// This kind's routes, merged into the plane's router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            &format!("{RG}/Microsoft.KeyVault/vaults/{{name}}"),
            routing::get(get_vault)
                .patch(patch_vault)
                .put(put_vault)
                .delete(delete_vault),
        )
        .route(
            &format!("{RG}/Microsoft.KeyVault/vaults"),
            routing::get(list_vaults_in_group),
        )
        .route(
            "/subscriptions/{sub}/resources",
            routing::get(list_resources),
        )
        .route(
            &format!("{KV}/vaults"),
            routing::get(list_vaults_in_subscription),
        )
        .route(
            &format!("{KV}/checkNameAvailability"),
            routing::post(check_name_availability),
        )
        .route(
            &format!("{KV}/deletedVaults"),
            routing::get(list_deleted_vaults),
        )
        .route(
            &format!("{KV}/locations/{{loc}}/deletedVaults/{{name}}"),
            routing::get(get_deleted_vault),
        )
        .route(
            &format!("{KV}/locations/{{loc}}/deletedVaults/{{name}}/purge"),
            routing::post(purge_deleted_vault),
        )
        .route(
            &format!("{RG}/Microsoft.KeyVault/vaults/{{name}}/privateLinkResources"),
            routing::get(private_link_resources),
        )
        .route(
            &format!("{RG}/Microsoft.KeyVault/vaults/{{name}}/accessPolicies/{{op}}"),
            routing::put(put_access_policies),
        )
}
