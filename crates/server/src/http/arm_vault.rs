//! The vault resource on the management plane, as far as authorization needs
//! it so far: read it, switch its permission model, and edit its access
//! policies (`accessPolicies/{add|replace|remove}`). Creating vaults and the
//! rest of the vault properties come with the management-plane issue.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::response::Response;
use axum::Extension;
use http::StatusCode;
use keyhaven_core::vault::{PolicyEdit, VaultRecord};
use keyhaven_core::{Error, VaultName};
use keyhaven_identity::authz::bump_generation;
use keyhaven_wire::arm::{
    AccessPoliciesOut, AccessPolicyUpdate, PatchVault, PutAccessPolicies, Sku, VaultOut,
    VaultPropertiesOut,
};

use super::arm::{domain_failure, parse_body, ArmFailure, Ctx};
use super::response::json;
use crate::state::AppState;

type Where = Path<(String, String, String)>;

async fn find(
    st: &AppState,
    sub: &str,
    rg: &str,
    name: &str,
) -> Result<Arc<VaultRecord>, ArmFailure> {
    let not_found = || {
        ArmFailure::new(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            format!(
                "The Resource 'Microsoft.KeyVault/vaults/{}' under resource group '{}' was not found.",
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
    if v.subscription_id.eq_ignore_ascii_case(sub) && v.resource_group.eq_ignore_ascii_case(rg) {
        Ok(v)
    } else {
        Err(not_found())
    }
}

fn vault_out(st: &AppState, v: &VaultRecord) -> VaultOut {
    VaultOut {
        id: v.resource_id(),
        name: v.name.to_string(),
        kind: "Microsoft.KeyVault/vaults",
        location: "local".into(),
        tags: BTreeMap::new(),
        properties: VaultPropertiesOut {
            tenant_id: v.tenant_id.clone(),
            sku: Sku {
                family: "A",
                name: v.sku.clone(),
            },
            access_policies: v.properties.access_policies.clone(),
            vault_uri: format!("{}/", st.endpoints.vault_url(v.name.as_str())),
            enable_rbac_authorization: v.properties.rbac_authorization,
            enable_soft_delete: true,
            soft_delete_retention_in_days: v.retention_days,
            enable_purge_protection: v.purge_protection.then_some(true),
            provisioning_state: "Succeeded",
            public_network_access: "Enabled",
        },
    }
}

async fn body<T: serde::de::DeserializeOwned>(req: Request) -> Result<T, ArmFailure> {
    parse_body(req.into_body()).await
}

async fn save(
    st: &AppState,
    v: &VaultRecord,
    props: &keyhaven_core::vault::VaultProperties,
) -> Result<(), ArmFailure> {
    let json = serde_json::to_string(props).map_err(|_| domain_failure(Error::Integrity))?;
    st.store
        .update_vault_properties(&v.id, &json)
        .await
        .map_err(|e| domain_failure(e.into()))?;
    bump_generation(&st.store)
        .await
        .map_err(|e| domain_failure(e.into()))?;
    Ok(())
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
    Ok(json(StatusCode::OK, &vault_out(&st, &v)))
}

/// `PATCH …/vaults/{name}`: the permission model and access policies.
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
    let b: PatchVault = body(req).await?;
    let mut props = v.properties.clone();
    if let Some(p) = b.properties {
        if let Some(rbac) = p.enable_rbac_authorization {
            props.rbac_authorization = rbac;
        }
        if let Some(policies) = p.access_policies {
            keyhaven_core::vault::validate_access_policies(&policies).map_err(domain_failure)?;
            props.access_policies = policies;
        }
    }
    save(&st, &v, &props).await?;
    let mut updated = (*v).clone();
    updated.properties = props;
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
    let b: PutAccessPolicies = body(req).await?;
    let entries = b.properties.map(|p| p.access_policies).unwrap_or_default();
    let mut props = v.properties.clone();
    props
        .edit_access_policies(edit, &entries)
        .map_err(domain_failure)?;
    save(&st, &v, &props).await?;
    Ok(json(
        StatusCode::OK,
        &AccessPoliciesOut {
            id: format!("{}/accessPolicies/", v.resource_id()),
            kind: "Microsoft.KeyVault/vaults/accessPolicies",
            properties: AccessPolicyUpdate {
                access_policies: props.access_policies,
            },
        },
    ))
}
