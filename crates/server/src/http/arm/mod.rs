//! The management plane at `management.{domain}`, ARM-shaped: this module
//! authenticates each request (a management-audience token) and merges the
//! routes of each resource kind, which live in their own files with their
//! handlers. What handlers share is in `common`, never imported from here.
use std::sync::Arc;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::Router;
use http::StatusCode;
use tower::ServiceExt as _;

use crate::http::extract::{bearer_token, query_map};
use crate::http::response::json;
use crate::state::AppState;

pub mod common;
pub mod deployment;
pub mod diagnostics;
pub mod events;
pub mod groups;
pub mod identities;
pub mod managed_hsms;
pub mod monitor;
pub mod network;
pub mod pim;
pub mod policy;
pub mod policy_insights;
pub mod rbac;
pub mod resource;
pub mod vaults;
pub mod workspaces;

use common::{ArmFailure, Ctx};

/// The management plane's router (reached only through `handle`).
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(deployment::routes())
        .merge(identities::routes())
        .merge(vaults::routes())
        .merge(managed_hsms::routes())
        .merge(network::routes())
        .merge(workspaces::routes())
        .merge(events::routes())
        .merge(diagnostics::routes())
        .merge(monitor::routes())
        .merge(groups::routes())
        .fallback(|| async { common::not_supported() })
        .method_not_allowed_fallback(|| async { common::method_not_allowed() })
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
            log_analytics_resource_id: e.logs_url(),
            suffixes: keyhaven_wire::arm::CloudSuffixes {
                key_vault_dns: e.vault_host_suffix(),
                mhsm_dns: e.hsm_host_suffix(),
            },
        },
    ))
}

/// Authenticates a management request and dispatches it.
pub async fn handle(state: &AppState, router: Router, req: Request) -> Response {
    if let Some(resp) = cloud_metadata(state, &req) {
        return resp;
    }
    let token = bearer_token(req.headers()).map(str::to_owned);
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
    let method_path = (req.method().clone(), req.uri().path().to_owned());
    let req = match policy_insights::handle(state, &caller, req).await {
        Ok(resp) => return audited(resp, &caller, &method_path),
        Err(req) => req,
    };
    let req = match policy::handle(state, &caller, req).await {
        Ok(resp) => return audited(resp, &caller, &method_path),
        Err(req) => req,
    };
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

/// A response of a handler outside the router, with its audit note.
fn audited(
    mut resp: Response,
    caller: &keyhaven_core::Principal,
    (method, path): &(http::Method, String),
) -> Response {
    resp.extensions_mut().insert(crate::audit::AuditNote {
        operation: Some(management_operation(method, path)),
        resource_id: Some(path.clone()),
        identity: Some(super::claims_of(caller)),
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
    const LITERALS: [&str; 35] = [
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
        "metrics",
        "metricDefinitions",
        "Keyhaven.Insights",
        "auditEvents",
        "Microsoft.OperationalInsights",
        "workspaces",
        "logs",
        "api",
        "query",
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
