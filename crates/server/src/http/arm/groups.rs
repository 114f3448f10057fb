//! Subscriptions (the one made at bootstrap) and resource groups, as
//! `azure-mgmt-resource` and `az group` use them. Resource groups are ARM
//! resources of type `Microsoft.Resources/resourceGroups`; deleting one
//! soft-deletes the vaults in it, as ARM deletes a group's resources.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::response::Response;
use axum::Extension;
use http::StatusCode;
use keyhaven_core::ResourceRecord;
use keyhaven_wire::arm::{
    ArmList, ProvisioningState, PutResourceGroup, ResourceGroupOut, SubscriptionOut,
    SubscriptionPolicies, TenantOut,
};

use super::common::{domain_failure, parse_body, ArmFailure, Ctx};
use crate::http::response::{json, status_only};
use crate::state::AppState;
use axum::{routing, Router};

/// The ARM type of resource groups.
pub const GROUP_TYPE: &str = "Microsoft.Resources/resourceGroups";

fn group_id(sub: &str, rg: &str) -> String {
    format!("/subscriptions/{sub}/resourceGroups/{rg}")
}

fn subscription_missing(sub: &str) -> ArmFailure {
    ArmFailure::new(
        StatusCode::NOT_FOUND,
        "SubscriptionNotFound",
        format!(
            "The subscription '{}' could not be found.",
            sub.chars().take(64).collect::<String>()
        ),
    )
}

fn group_missing(rg: &str) -> ArmFailure {
    ArmFailure::new(
        StatusCode::NOT_FOUND,
        "ResourceGroupNotFound",
        format!(
            "Resource group '{}' could not be found.",
            rg.chars().take(90).collect::<String>()
        ),
    )
}

fn valid_group_name(rg: &str) -> bool {
    !rg.is_empty()
        && rg.len() <= 90
        && !rg.ends_with('.')
        && rg
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '(' | ')'))
}

fn group_out(r: &ResourceRecord) -> ResourceGroupOut {
    ResourceGroupOut {
        id: group_id(&r.subscription_id, &r.name),
        name: r.name.clone(),
        kind: GROUP_TYPE,
        location: r.location.clone(),
        tags: serde_json::from_str(&r.tags).unwrap_or_default(),
        properties: ProvisioningState {
            provisioning_state: "Succeeded",
        },
    }
}

async fn load_group(
    st: &AppState,
    sub: &str,
    rg: &str,
) -> Result<Option<ResourceRecord>, ArmFailure> {
    if !sub.eq_ignore_ascii_case(&st.subscription_id) {
        return Err(subscription_missing(sub));
    }
    st.store
        .get_resource(&group_id(sub, rg))
        .await
        .map_err(|e| domain_failure(e.into()))
        .map(|r| r.filter(|r| r.kind == GROUP_TYPE))
}

/// Fails with ARM's 404 unless the resource group exists.
pub async fn require_group(st: &AppState, sub: &str, rg: &str) -> Result<(), ArmFailure> {
    match load_group(st, sub, rg).await? {
        Some(_) => Ok(()),
        None => Err(group_missing(rg)),
    }
}

/// Creates the resource group if it is missing (bootstrap).
pub async fn ensure_group(
    store: &Arc<dyn keyhaven_core::Storage>,
    sub: &str,
    rg: &str,
    now: i64,
) -> Result<(), keyhaven_core::StoreError> {
    if store.get_resource(&group_id(sub, rg)).await?.is_none() {
        store
            .put_resource(&ResourceRecord {
                id: group_id(sub, rg),
                kind: GROUP_TYPE.into(),
                subscription_id: sub.into(),
                resource_group: rg.into(),
                name: rg.into(),
                location: crate::config::LOCATION.into(),
                tags: "{}".into(),
                properties: "{}".into(),
                created: now,
                updated: now,
            })
            .await?;
    }
    Ok(())
}

fn subscription_out(st: &AppState) -> SubscriptionOut {
    SubscriptionOut {
        id: format!("/subscriptions/{}", st.subscription_id),
        subscription_id: st.subscription_id.clone(),
        tenant_id: st.tokens.tenant_id().to_owned(),
        display_name: "Keyhaven".into(),
        state: "Enabled",
        subscription_policies: SubscriptionPolicies {
            location_placement_id: "Internal_2014-09-01",
            quota_id: "Internal_2014-09-01",
            spending_limit: "Off",
        },
        authorization_source: "RoleBased",
    }
}

/// `GET /tenants`: the deployment's one tenant (`az login` without
/// `--tenant` lists tenants, then each tenant's subscriptions).
pub async fn list_tenants(State(st): State<AppState>) -> Result<Response, ArmFailure> {
    let tenant = st.tokens.tenant_id().to_owned();
    Ok(json(
        StatusCode::OK,
        &ArmList {
            value: vec![TenantOut {
                id: format!("/tenants/{tenant}"),
                tenant_id: tenant,
                tenant_category: "Home",
                display_name: "Keyhaven".into(),
                domains: vec![st.endpoints.domain().to_owned()],
                default_domain: st.endpoints.domain().to_owned(),
                tenant_type: "AAD",
            }],
        },
    ))
}

/// `GET /subscriptions`: the deployment's subscription.
pub async fn list_subscriptions(State(st): State<AppState>) -> Result<Response, ArmFailure> {
    Ok(json(
        StatusCode::OK,
        &ArmList {
            value: vec![subscription_out(&st)],
        },
    ))
}

/// `GET /subscriptions/{sub}`.
pub async fn get_subscription(
    State(st): State<AppState>,
    Path(sub): Path<String>,
) -> Result<Response, ArmFailure> {
    if !sub.eq_ignore_ascii_case(&st.subscription_id) {
        return Err(subscription_missing(&sub));
    }
    Ok(json(StatusCode::OK, &subscription_out(&st)))
}

/// `PUT /subscriptions/{sub}/resourcegroups/{rg}`: 201 created, 200 updated.
pub async fn put_group(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<Ctx>>,
    Path((sub, rg)): Path<(String, String)>,
    req: Request,
) -> Result<Response, ArmFailure> {
    if !valid_group_name(&rg) {
        return Err(ArmFailure::new(
            StatusCode::BAD_REQUEST,
            "InvalidResourceGroup",
            "The resource group name may hold up to 90 letters, digits, '-', '_', '.', '(' and ')', and must not end in '.'.",
        ));
    }
    let existing = load_group(&st, &sub, &rg).await?;
    st.authz
        .require_action(
            &ctx.caller,
            &group_id(&sub, &rg),
            "Microsoft.Resources/subscriptions/resourceGroups/write",
        )
        .await
        .map_err(domain_failure)?;
    let b: PutResourceGroup = parse_body(req.into_body()).await?;
    let location = super::resource::location(
        b.location.as_deref(),
        existing.as_ref().map(|e| e.location.as_str()),
    )?;
    if let Some(e) = &existing {
        if !e.location.eq_ignore_ascii_case(&location) {
            return Err(ArmFailure::new(
                StatusCode::CONFLICT,
                "InvalidResourceGroupLocation",
                format!(
                    "Invalid resource group location '{location}'. The Resource group already exists in location '{}'.",
                    e.location
                ),
            ));
        }
    }
    let tags: BTreeMap<String, String> = b.tags.unwrap_or_else(|| {
        existing
            .as_ref()
            .and_then(|e| serde_json::from_str(&e.tags).ok())
            .unwrap_or_default()
    });
    let now = st.clock.now();
    let rec = ResourceRecord {
        id: existing
            .as_ref()
            .map_or_else(|| group_id(&sub, &rg), |e| e.id.clone()),
        kind: GROUP_TYPE.into(),
        subscription_id: st.subscription_id.clone(),
        resource_group: existing
            .as_ref()
            .map_or_else(|| rg.clone(), |e| e.name.clone()),
        name: existing
            .as_ref()
            .map_or_else(|| rg.clone(), |e| e.name.clone()),
        location,
        tags: serde_json::to_string(&tags).unwrap_or_else(|_| "{}".into()),
        properties: "{}".into(),
        created: existing.as_ref().map_or(now, |e| e.created),
        updated: now,
    };
    st.store
        .put_resource(&rec)
        .await
        .map_err(|e| domain_failure(e.into()))?;
    Ok(json(
        if existing.is_some() {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        },
        &group_out(&rec),
    ))
}

/// `GET /subscriptions/{sub}/resourcegroups/{rg}`.
pub async fn get_group(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<Ctx>>,
    Path((sub, rg)): Path<(String, String)>,
) -> Result<Response, ArmFailure> {
    st.authz
        .require_action(
            &ctx.caller,
            &group_id(&sub, &rg),
            "Microsoft.Resources/subscriptions/resourceGroups/read",
        )
        .await
        .map_err(domain_failure)?;
    let g = load_group(&st, &sub, &rg)
        .await?
        .ok_or_else(|| group_missing(&rg))?;
    Ok(json(StatusCode::OK, &group_out(&g)))
}

/// `HEAD /subscriptions/{sub}/resourcegroups/{rg}`: 204 or 404.
pub async fn head_group(
    State(st): State<AppState>,
    Path((sub, rg)): Path<(String, String)>,
) -> Result<Response, ArmFailure> {
    Ok(status_only(match load_group(&st, &sub, &rg).await? {
        Some(_) => StatusCode::NO_CONTENT,
        None => StatusCode::NOT_FOUND,
    }))
}

/// `GET /subscriptions/{sub}/resourcegroups`: the groups the caller may read.
pub async fn list_groups(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<Ctx>>,
    Path(sub): Path<String>,
) -> Result<Response, ArmFailure> {
    if !sub.eq_ignore_ascii_case(&st.subscription_id) {
        return Err(subscription_missing(&sub));
    }
    let all = st
        .store
        .list_resources(GROUP_TYPE, &st.subscription_id)
        .await
        .map_err(|e| domain_failure(e.into()))?;
    let mut value = Vec::new();
    for g in &all {
        if st
            .authz
            .require_action(
                &ctx.caller,
                &g.id,
                "Microsoft.Resources/subscriptions/resourceGroups/read",
            )
            .await
            .is_ok()
        {
            value.push(group_out(g));
        }
    }
    Ok(json(StatusCode::OK, &ArmList { value }))
}

/// `DELETE /subscriptions/{sub}/resourcegroups/{rg}`: soft-deletes the
/// group's vaults (they can be recovered into a re-created group of the same
/// name), removes its Log Analytics workspaces, then removes the group. Completes at once (200).
pub async fn delete_group(
    State(st): State<AppState>,
    Extension(ctx): Extension<Arc<Ctx>>,
    Path((sub, rg)): Path<(String, String)>,
) -> Result<Response, ArmFailure> {
    let g = load_group(&st, &sub, &rg)
        .await?
        .ok_or_else(|| group_missing(&rg))?;
    st.authz
        .require_action(
            &ctx.caller,
            &g.id,
            "Microsoft.Resources/subscriptions/resourceGroups/delete",
        )
        .await
        .map_err(domain_failure)?;
    let vaults = st
        .service
        .vaults_of(&sub)
        .await
        .map_err(|e| domain_failure(keyhaven_core::Error::Unavailable(e.to_string())))?;
    for v in vaults.iter().filter(|v| {
        v.properties.deleted.is_none() && v.resource_group.eq_ignore_ascii_case(&g.name)
    }) {
        st.service
            .delete_vault(v)
            .await
            .map_err(|e| domain_failure(keyhaven_core::Error::Unavailable(e.to_string())))?;
    }
    super::workspaces::delete_in_group(&st, &sub, &g.name).await?;
    st.store
        .delete_resource(&g.id)
        .await
        .map_err(|e| domain_failure(e.into()))?;
    Ok(status_only(StatusCode::OK))
}

/// This kind's routes, merged into the plane's router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/tenants", routing::get(list_tenants))
        .route("/subscriptions", routing::get(list_subscriptions))
        .route("/subscriptions/{sub}", routing::get(get_subscription))
        .route(
            "/subscriptions/{sub}/resourceGroups",
            routing::get(list_groups),
        )
        .route(
            "/subscriptions/{sub}/resourceGroups/{rg}",
            routing::put(put_group)
                .get(get_group)
                .head(head_group)
                .delete(delete_group),
        )
}
