//! The management plane at `management.{domain}`, ARM-shaped. So far it
//! serves user-assigned managed identities, workloads (the resources the
//! metadata endpoint identifies callers by) and signing-key rotation; vaults
//! and the rest of ARM come with the management-plane issue. Requests carry a
//! management-audience token; writes need a directory role until RBAC lands.
use std::sync::Arc;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use axum::Router;
use http::StatusCode;
use tower::ServiceExt as _;

use crate::http::extract::query_map;
use crate::http::response::json;
use crate::state::AppState;

pub mod common;
pub mod deployment;
pub mod diagnostics;
pub mod events;
pub mod groups;
pub mod identities;
pub mod network;
pub mod rbac;
pub mod vaults;
pub mod workspaces;

use common::{ArmFailure, Ctx};
use deployment::{check_integrity, master_key_usage, rotate_master_key, rotate_signing_key};
use identities::{
    delete_identity, delete_workload, get_identity, get_workload, put_identity, put_workload,
};

/// The management plane's router (reached only through `handle`).
pub fn router(state: AppState) -> Router {
    const RG: &str = "/subscriptions/{sub}/resourceGroups/{rg}/providers";
    const KV: &str = "/subscriptions/{sub}/providers/Microsoft.KeyVault";
    Router::new()
        .route(
            "/providers/Keyhaven.Identity/rotateSigningKey",
            post(rotate_signing_key),
        )
        .route(
            "/providers/Keyhaven.Security/rotateMasterKey",
            post(rotate_master_key),
        )
        .route(
            "/providers/Keyhaven.Security/checkIntegrity",
            post(check_integrity),
        )
        .route(
            "/providers/Keyhaven.Security/masterKeyUsage",
            post(master_key_usage),
        )
        .route(
            &format!("{RG}/Microsoft.ManagedIdentity/userAssignedIdentities/{{name}}"),
            put(put_identity).get(get_identity).delete(delete_identity),
        )
        .route(
            &format!("{RG}/Keyhaven.Compute/workloads/{{name}}"),
            put(put_workload).get(get_workload).delete(delete_workload),
        )
        .route(
            &format!("{RG}/Microsoft.KeyVault/vaults/{{name}}"),
            axum::routing::get(vaults::get_vault)
                .patch(vaults::patch_vault)
                .put(vaults::put_vault)
                .delete(vaults::delete_vault),
        )
        .route(
            &format!("{RG}/Microsoft.KeyVault/vaults"),
            axum::routing::get(vaults::list_vaults_in_group),
        )
        .route(
            &format!("{RG}/Microsoft.Network/virtualNetworks/{{name}}"),
            put(network::put_vnet)
                .get(network::get_vnet)
                .delete(network::delete_vnet),
        )
        .route(
            &format!("{RG}/Microsoft.Network/virtualNetworks/{{name}}/subnets/{{subnet}}"),
            axum::routing::get(network::get_subnet),
        )
        .route(
            &format!("{RG}/Microsoft.OperationalInsights/workspaces"),
            axum::routing::get(workspaces::list_workspaces),
        )
        .route(
            &format!("{RG}/Microsoft.OperationalInsights/workspaces/{{name}}"),
            put(workspaces::put_workspace)
                .get(workspaces::get_workspace)
                .delete(workspaces::delete_workspace),
        )
        .route(
            &format!("{RG}/Microsoft.Network/privateEndpoints/{{name}}"),
            put(network::put_private_endpoint)
                .get(network::get_private_endpoint)
                .delete(network::delete_private_endpoint),
        )
        .route(
            &format!("{RG}/Microsoft.KeyVault/vaults/{{name}}/providers/Microsoft.EventGrid/eventSubscriptions/{{esub}}"),
            put(events::put_subscription)
                .get(events::get_subscription)
                .delete(events::delete_subscription),
        )
        .route(
            &format!("{RG}/Microsoft.KeyVault/vaults/{{name}}/providers/Microsoft.EventGrid/eventSubscriptions/{{esub}}/deadLetters"),
            axum::routing::get(events::list_dead_letters),
        )
        .route(
            &format!("{RG}/Microsoft.KeyVault/vaults/{{name}}/providers/Microsoft.Insights/diagnosticSettingsCategories"),
            axum::routing::get(diagnostics::categories),
        )
        .route(
            &format!("{RG}/Microsoft.KeyVault/vaults/{{name}}/providers/Microsoft.Insights/diagnosticSettings"),
            axum::routing::get(diagnostics::get_settings),
        )
        .route(
            &format!("{RG}/Microsoft.KeyVault/vaults/{{name}}/providers/Microsoft.Insights/diagnosticSettings/{{esub}}"),
            put(diagnostics::put_setting)
                .get(diagnostics::get_setting)
                .delete(diagnostics::delete_setting),
        )
        .route(
            &format!("{RG}/Microsoft.KeyVault/vaults/{{name}}/providers/Keyhaven.Insights/auditEvents"),
            axum::routing::get(diagnostics::query_audit),
        )
        .route(
            "/tenants",
            axum::routing::get(groups::list_tenants),
        )
        .route(
            "/subscriptions",
            axum::routing::get(groups::list_subscriptions),
        )
        .route(
            "/subscriptions/{sub}",
            axum::routing::get(groups::get_subscription),
        )
        .route(
            "/subscriptions/{sub}/resourceGroups",
            axum::routing::get(groups::list_groups),
        )
        .route(
            "/subscriptions/{sub}/resourceGroups/{rg}",
            put(groups::put_group)
                .get(groups::get_group)
                .head(groups::head_group)
                .delete(groups::delete_group),
        )
        .route(
            "/subscriptions/{sub}/resources",
            axum::routing::get(vaults::list_resources),
        )
        .route(
            &format!("{KV}/vaults"),
            axum::routing::get(vaults::list_vaults_in_subscription),
        )
        .route(
            &format!("{KV}/checkNameAvailability"),
            post(vaults::check_name_availability),
        )
        .route(
            &format!("{KV}/managedHSMs"),
            axum::routing::get(vaults::list_managed_hsms),
        )
        .route(
            &format!("{KV}/deletedManagedHSMs"),
            axum::routing::get(vaults::list_managed_hsms),
        )
        .route(
            &format!("{RG}/Microsoft.KeyVault/managedHSMs"),
            axum::routing::get(vaults::list_managed_hsms_in_group),
        )
        .route(
            &format!("{KV}/deletedVaults"),
            axum::routing::get(vaults::list_deleted_vaults),
        )
        .route(
            &format!("{KV}/locations/{{loc}}/deletedVaults/{{name}}"),
            axum::routing::get(vaults::get_deleted_vault),
        )
        .route(
            &format!("{KV}/locations/{{loc}}/deletedVaults/{{name}}/purge"),
            post(vaults::purge_deleted_vault),
        )
        .route(
            &format!("{RG}/Microsoft.KeyVault/vaults/{{name}}/privateLinkResources"),
            axum::routing::get(vaults::private_link_resources),
        )
        .route(
            &format!("{RG}/Microsoft.KeyVault/vaults/{{name}}/accessPolicies/{{op}}"),
            put(vaults::put_access_policies),
        )
        .fallback(|| async {
            ArmFailure::new(
                StatusCode::NOT_FOUND,
                "NotFound",
                "The requested resource type or operation is not supported.",
            )
        })
        .method_not_allowed_fallback(|| async {
            ArmFailure::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "The requested method is not allowed on this resource.",
            )
        })
        .with_state(state)
}

/// `GET /metadata/endpoints`: the cloud's endpoints, unauthenticated as on
/// Azure. `az cloud register --endpoint-resource-manager URL` reads it (it
/// appends the path to the URL as given, so `//metadata/…` answers too).
fn cloud_metadata(state: &AppState, req: &Request) -> Option<Response> {
    let path = req.uri().path().trim_start_matches('/');
    if !path.eq_ignore_ascii_case("metadata/endpoints") {
        return None;
    }
    if req.method() != http::Method::GET {
        return Some(
            ArmFailure::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "The requested method is not allowed on this resource.",
            )
            .into_response(),
        );
    }
    let e = &state.endpoints;
    let management = e.management_url();
    let graph = format!("{}/", e.graph_url());
    Some(json(
        StatusCode::OK,
        &keyhaven_wire::arm::CloudMetadata {
            name: "Keyhaven".into(),
            resource_manager: format!("{management}/"),
            authentication: keyhaven_wire::arm::CloudAuthentication {
                login_endpoint: e.authority_host(),
                audiences: vec![format!("{management}/")],
                tenant: "common".into(),
                identity_provider: "AAD",
            },
            microsoft_graph_resource_id: graph.clone(),
            graph_audience: graph.clone(),
            graph,
            suffixes: keyhaven_wire::arm::CloudSuffixes {
                key_vault_dns: e.vault_host_suffix(),
            },
        },
    ))
}

/// Authenticates a management request and dispatches it.
pub async fn handle(state: &AppState, router: Router, req: Request) -> Response {
    if let Some(resp) = cloud_metadata(state, &req) {
        return resp;
    }
    let token = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_owned());
    let caller = match token.map(|t| {
        state
            .tokens
            .validate(&t, &state.endpoints.management_url(), state.clock.now())
    }) {
        Some(Ok(p)) => p,
        Some(Err(_)) => {
            return ArmFailure::new(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                "The access token is invalid.",
            )
            .into_response();
        }
        None => {
            let mut r = ArmFailure::new(
                StatusCode::UNAUTHORIZED,
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is missing.",
            )
            .into_response();
            let challenge = format!(
                "Bearer authorization_uri=\"{}/{}\", error=\"invalid_token\", error_description=\"The authentication failed because of missing 'Authorization' header.\"",
                state.endpoints.authority_host(),
                state.tokens.tenant_id()
            );
            if let Ok(v) = http::HeaderValue::from_str(&challenge) {
                r.headers_mut().insert(http::header::WWW_AUTHENTICATE, v);
            }
            return r;
        }
    };
    if !query_map(req.uri().query()).contains_key("api-version") {
        return ArmFailure::new(
            StatusCode::BAD_REQUEST,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )
        .into_response();
    }
    let req = match rbac::handle(state, &caller, req).await {
        Ok(resp) => return resp,
        Err(req) => req,
    };
    let mut req = req;
    let claims = super::claims_of(&caller);
    req.extensions_mut().insert(Arc::new(Ctx { caller }));
    let mut req = req;
    canonicalize_path(&mut req);
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let mut resp = router.oneshot(req).await.unwrap_or_else(|e| match e {});
    resp.extensions_mut().insert(crate::audit::AuditNote {
        operation: Some(management_operation(&method, &path)),
        resource_id: Some(path),
        identity: Some(claims),
        ..Default::default()
    });
    resp
}

/// Azure's operation names for vault calls (`VaultGet`, `VaultPut`, …);
/// other management calls are `Management{Method}`.
fn management_operation(method: &http::Method, path: &str) -> String {
    let verb = match *method {
        http::Method::GET => "Get",
        http::Method::PUT => "Put",
        http::Method::PATCH => "Patch",
        http::Method::DELETE => "Delete",
        http::Method::POST => "Post",
        _ => "Request",
    };
    let segments: Vec<&str> = path.split('/').collect();
    let vault = segments
        .iter()
        .rposition(|s| *s == "vaults")
        .is_some_and(|i| i + 2 == segments.len());
    if vault {
        format!("Vault{verb}")
    } else {
        format!("Management{verb}")
    }
}

/// ARM paths are case-insensitive (`azure-mgmt-resource` writes
/// `resourcegroups`); the router's literal segments are matched in their
/// canonical case.
fn canonicalize_path(req: &mut Request) {
    const LITERALS: [&str; 28] = [
        "tenants",
        "subscriptions",
        "resourceGroups",
        "providers",
        "Microsoft.KeyVault",
        "vaults",
        "deletedVaults",
        "managedHSMs",
        "deletedManagedHSMs",
        "locations",
        "checkNameAvailability",
        "accessPolicies",
        "privateLinkResources",
        "resources",
        "purge",
        "Microsoft.ManagedIdentity",
        "Microsoft.Network",
        "virtualNetworks",
        "subnets",
        "privateEndpoints",
        "Microsoft.EventGrid",
        "eventSubscriptions",
        "deadLetters",
        "Microsoft.Insights",
        "diagnosticSettings",
        "diagnosticSettingsCategories",
        "Microsoft.OperationalInsights",
        "workspaces",
    ];
    let path = req.uri().path();
    let canonical = path
        .split('/')
        .map(|seg| {
            LITERALS
                .iter()
                .find(|l| l.eq_ignore_ascii_case(seg))
                .map_or(seg, |l| *l)
        })
        .collect::<Vec<_>>()
        .join("/");
    if canonical == path {
        return;
    }
    let with_query = match req.uri().query() {
        Some(q) => format!("{canonical}?{q}"),
        None => canonical,
    };
    if let Ok(uri) = with_query.parse() {
        *req.uri_mut() = uri;
    }
}
