//! The managed HSM pool resource on the management plane
//! (`Microsoft.KeyVault/managedHSMs`), as `azure-mgmt-keyvault` and `az
//! keyvault create --hsm-name` drive it: create or update (PUT, `createMode:
//! recover`), PATCH, GET, DELETE (soft), lists by group and subscription,
//! deleted pools (get, list, purge) and `checkMhsmNameAvailability`. The
//! rules are the vaults' (`keyhaven_core::vault_admin`) plus the pool's own
//! (`keyhaven_core::managed_hsm`). ARM's RBAC governs the resource; the keys
//! inside are governed by the pool's local RBAC only.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::response::Response;
use axum::{routing, Extension, Router};
use http::StatusCode;
use keyhaven_core::vault::VaultRecord;
use keyhaven_core::VaultName;
use keyhaven_wire::arm::{
    ArmList, CheckName, DeletedManagedHsmOut, DeletedManagedHsmProperties, ManagedHsmOut,
    ManagedHsmPropertiesOut, NameAvailability, PutManagedHsm, SecurityDomainProperties, Sku,
};

use super::common::{domain_failure, ArmFailure, Ctx, KV, RG};
use super::vaults::{
    admin_failure, body, check_subscription, find_container, find_deleted_container, location_of,
};
use crate::http::response::{json, status_only};
use crate::state::AppState;

type Where = Path<(String, String, String)>;

/// The live pool `name` in `sub`/`rg`, or ARM's 404.
async fn find(
    st: &AppState,
    sub: &str,
    rg: &str,
    name: &str,
) -> Result<Arc<VaultRecord>, ArmFailure> {
    find_container(st, sub, rg, name, true).await
}

fn scope_of(sub: &str, rg: &str, name: &str) -> String {
    format!(
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.KeyVault/managedHSMs/{name}"
    )
}

/// The pool as ARM shows it.
pub fn pool_out(st: &AppState, v: &VaultRecord) -> ManagedHsmOut {
    let state = v.properties.managed_hsm.clone().unwrap_or_default();
    ManagedHsmOut {
        sku: Sku {
            family: "B",
            name: v.sku.clone(),
        },
        id: v.resource_id(),
        name: v.name.to_string(),
        kind: "Microsoft.KeyVault/managedHSMs",
        location: location_of(v),
        tags: v.properties.tags.clone(),
        properties: ManagedHsmPropertiesOut {
            tenant_id: v.tenant_id.clone(),
            hsm_uri: format!("{}/", st.endpoints.hsm_url(v.name.as_str())),
            initial_admin_object_ids: state.initial_admin_object_ids,
            enable_soft_delete: true,
            soft_delete_retention_in_days: v.retention_days,
            enable_purge_protection: v.purge_protection,
            provisioning_state: "Succeeded",
            status_message: "The Managed HSM is provisioned and ready to use.",
            network_acls: v.properties.network_acls.clone().unwrap_or_else(|| {
                keyhaven_core::vault_admin::NetworkAcls {
                    bypass: "AzureServices".into(),
                    default_action: "Allow".into(),
                    ip_rules: Vec::new(),
                    virtual_network_rules: Vec::new(),
                }
            }),
            public_network_access: v
                .properties
                .public_network_access
                .clone()
                .unwrap_or_else(|| "Enabled".into()),
            regions: Vec::new(),
            security_domain_properties: SecurityDomainProperties::of(v.is_activated()),
        },
    }
}

async fn spec_of(req: Request) -> Result<keyhaven_core::vault_admin::VaultSpec, ArmFailure> {
    let b: PutManagedHsm = body(req).await?;
    b.into_spec()
        .map_err(|m| ArmFailure::new(StatusCode::BAD_REQUEST, "BadRequest", m))
}

/// `PUT …/managedHSMs/{name}`: create, update, or recover. Completes at once
/// with `provisioningState: Succeeded` and 200 (the SDK's poller accepts
/// 200 or 202 here, not 201).
pub async fn put_pool(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<Ctx>>,
    Path((sub, rg, name)): Where,
    req: Request,
) -> Result<Response, ArmFailure> {
    check_subscription(&st, &sub)?;
    let pool_name: VaultName = name.parse().map_err(|e: keyhaven_core::Error| {
        ArmFailure::new(StatusCode::BAD_REQUEST, "BadRequest", e.to_string())
    })?;
    st.authz
        .require_action(
            &ctx.caller,
            &scope_of(&sub, &rg, pool_name.as_str()),
            "Microsoft.KeyVault/managedHSMs/write",
        )
        .await
        .map_err(domain_failure)?;
    super::groups::require_group(&st, &sub, &rg).await?;
    let spec = spec_of(req).await?;
    let (v, _) = st
        .service
        .put_vault(&sub, &rg, &pool_name, st.tokens.tenant_id(), spec)
        .await
        .map_err(admin_failure)?;
    Ok(json(StatusCode::OK, &pool_out(&st, &v)))
}

/// `PATCH …/managedHSMs/{name}`: the given properties only.
pub async fn patch_pool(
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
            "Microsoft.KeyVault/managedHSMs/write",
        )
        .await
        .map_err(domain_failure)?;
    let mut spec = spec_of(req).await?;
    if spec.create_mode.is_some() {
        return Err(ArmFailure::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "createMode is only valid on PUT.",
        ));
    }
    spec.location = None;
    let (updated, _) = st
        .service
        .put_vault(&sub, &rg, &v.name, st.tokens.tenant_id(), spec)
        .await
        .map_err(admin_failure)?;
    Ok(json(StatusCode::OK, &pool_out(&st, &updated)))
}

/// `GET …/managedHSMs/{name}`.
pub async fn get_pool(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<Ctx>>,
    Path((sub, rg, name)): Where,
) -> Result<Response, ArmFailure> {
    let v = find(&st, &sub, &rg, &name).await?;
    st.authz
        .require_action(
            &ctx.caller,
            &v.resource_id(),
            "Microsoft.KeyVault/managedHSMs/read",
        )
        .await
        .map_err(domain_failure)?;
    Ok(json(StatusCode::OK, &pool_out(&st, &v)))
}

/// `DELETE …/managedHSMs/{name}`: soft delete (200), or 204 when absent.
pub async fn delete_pool(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<Ctx>>,
    Path((sub, rg, name)): Where,
) -> Result<Response, ArmFailure> {
    check_subscription(&st, &sub)?;
    st.authz
        .require_action(
            &ctx.caller,
            &scope_of(&sub, &rg, &name),
            "Microsoft.KeyVault/managedHSMs/delete",
        )
        .await
        .map_err(domain_failure)?;
    let Ok(v) = find(&st, &sub, &rg, &name).await else {
        return Ok(status_only(StatusCode::NO_CONTENT));
    };
    st.service.delete_vault(&v).await.map_err(admin_failure)?;
    Ok(status_only(StatusCode::OK))
}

async fn readable_pools(
    st: &AppState,
    ctx: &Ctx,
    sub: &str,
    rg: Option<&str>,
) -> Result<Response, ArmFailure> {
    check_subscription(st, sub)?;
    let mut value = Vec::new();
    for v in st.service.vaults_of(sub).await.map_err(admin_failure)? {
        if !v.is_managed_hsm()
            || v.properties.deleted.is_some()
            || rg.is_some_and(|g| !g.eq_ignore_ascii_case(&v.resource_group))
        {
            continue;
        }
        if st
            .authz
            .require_action(
                &ctx.caller,
                &v.resource_id(),
                "Microsoft.KeyVault/managedHSMs/read",
            )
            .await
            .is_ok()
        {
            value.push(pool_out(st, &v));
        }
    }
    Ok(json(StatusCode::OK, &ArmList { value }))
}

/// `GET /subscriptions/{sub}/providers/Microsoft.KeyVault/managedHSMs`.
pub async fn list_in_subscription(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<Ctx>>,
    Path(sub): Path<String>,
) -> Result<Response, ArmFailure> {
    readable_pools(&st, &ctx, &sub, None).await
}

/// `GET …/resourceGroups/{rg}/providers/Microsoft.KeyVault/managedHSMs`.
pub async fn list_in_group(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<Ctx>>,
    Path((sub, rg)): Path<(String, String)>,
) -> Result<Response, ArmFailure> {
    super::groups::require_group(&st, &sub, &rg).await?;
    readable_pools(&st, &ctx, &sub, Some(&rg)).await
}

fn deleted_out(v: &VaultRecord) -> Option<DeletedManagedHsmOut> {
    if !v.is_managed_hsm() {
        return None;
    }
    let d = v.properties.deleted?;
    let location = location_of(v);
    Some(DeletedManagedHsmOut {
        id: format!(
            "/subscriptions/{}/providers/Microsoft.KeyVault/locations/{location}/deletedManagedHSMs/{}",
            v.subscription_id, v.name
        ),
        name: v.name.to_string(),
        kind: "Microsoft.KeyVault/deletedManagedHSMs",
        properties: DeletedManagedHsmProperties {
            mhsm_id: v.resource_id(),
            location,
            deletion_date: keyhaven_wire::oauth::iso8601(d.deleted_date),
            scheduled_purge_date: keyhaven_wire::oauth::iso8601(d.scheduled_purge_date),
            purge_protection_enabled: v.purge_protection,
            tags: v.properties.tags.clone(),
        },
    })
}

/// `GET /subscriptions/{sub}/providers/Microsoft.KeyVault/deletedManagedHSMs`.
pub async fn list_deleted(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<Ctx>>,
    Path(sub): Path<String>,
) -> Result<Response, ArmFailure> {
    check_subscription(&st, &sub)?;
    st.authz
        .require_action(
            &ctx.caller,
            &format!("/subscriptions/{sub}"),
            "Microsoft.KeyVault/deletedManagedHSMs/read",
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

async fn find_deleted(
    st: &AppState,
    ctx: &Ctx,
    sub: &str,
    name: &str,
    action: &str,
) -> Result<VaultRecord, ArmFailure> {
    find_deleted_container(st, ctx, sub, name, action, true).await
}

/// `GET …/locations/{loc}/deletedManagedHSMs/{name}`.
pub async fn get_deleted(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<Ctx>>,
    Path((sub, _loc, name)): Path<(String, String, String)>,
) -> Result<Response, ArmFailure> {
    let v = find_deleted(
        &st,
        &ctx,
        &sub,
        &name,
        "Microsoft.KeyVault/deletedManagedHSMs/read",
    )
    .await?;
    Ok(json(StatusCode::OK, &deleted_out(&v)))
}

/// `POST …/locations/{loc}/deletedManagedHSMs/{name}/purge`: 202 (the only
/// status the SDK accepts); the purge is done when it answers.
pub async fn purge_deleted(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<Ctx>>,
    Path((sub, _loc, name)): Path<(String, String, String)>,
) -> Result<Response, ArmFailure> {
    let v = find_deleted(
        &st,
        &ctx,
        &sub,
        &name,
        "Microsoft.KeyVault/locations/deletedManagedHSMs/purge/action",
    )
    .await?;
    st.service.purge_vault(&v).await.map_err(admin_failure)?;
    Ok(status_only(StatusCode::ACCEPTED))
}

/// `POST /subscriptions/{sub}/providers/Microsoft.KeyVault/checkMhsmNameAvailability`.
pub async fn check_name(
    State(st): State<AppState>,
    Path(sub): Path<String>,
    req: Request,
) -> Result<Response, ArmFailure> {
    check_subscription(&st, &sub)?;
    let b: CheckName = body(req).await?;
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
            message: message.map(|m| {
                m.replace("vault name", "managed HSM name")
                    .replace("Vault name", "Managed HSM name")
            }),
        },
    ))
}

/// This kind's routes, merged into the plane's router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            &format!("{RG}/Microsoft.KeyVault/managedHSMs/{{name}}"),
            routing::get(get_pool)
                .patch(patch_pool)
                .put(put_pool)
                .delete(delete_pool),
        )
        .route(
            &format!("{RG}/Microsoft.KeyVault/managedHSMs"),
            routing::get(list_in_group),
        )
        .route(
            &format!("{KV}/managedHSMs"),
            routing::get(list_in_subscription),
        )
        .route(
            &format!("{KV}/deletedManagedHSMs"),
            routing::get(list_deleted),
        )
        .route(
            &format!("{KV}/locations/{{loc}}/deletedManagedHSMs/{{name}}"),
            routing::get(get_deleted),
        )
        .route(
            &format!("{KV}/locations/{{loc}}/deletedManagedHSMs/{{name}}/purge"),
            routing::post(purge_deleted),
        )
        .route(
            &format!("{KV}/checkMhsmNameAvailability"),
            routing::post(check_name),
        )
}
