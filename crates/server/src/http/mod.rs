//! The HTTP front: one entry point that every request passes through. It
//! resolves the plane from the Host header, runs that plane's pipeline
//! (authentication, api-version, vault lookup for the data plane), hands the
//! request to the plane's router, and stamps the common response headers.

pub mod access_control;
pub mod arm;
pub mod arm_groups;
pub mod arm_network;
pub mod arm_rbac;
pub mod arm_vault;
pub mod certificates;
pub mod data;
pub mod extract;
pub mod graph;
pub mod keys;
pub mod login;
pub mod response;
pub mod route;
pub mod secrets;

use std::sync::Arc;

use axum::extract::Request;
use axum::response::Response;
use axum::Router;
use http::{HeaderName, HeaderValue, Method};
use tower::ServiceExt as _;

use crate::state::AppState;
use response::ApiError;
use route::Plane;

/// The peer address of a connection (for lockouts, network rules and audit).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub std::net::SocketAddr);

/// The local address a connection was accepted on (private endpoints).
#[derive(Debug, Clone, Copy)]
pub struct LocalAddr(pub std::net::SocketAddr);

/// Largest request body accepted (backups of many versions are the largest).
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
const SERVICE_VERSION: &str = concat!("keyhaven-", env!("CARGO_PKG_VERSION"));

struct Planes {
    arm: Router,
    data: Router,
    login: Router,
    graph: Router,
}

/// The whole application as one router.
pub fn app(state: AppState) -> Router {
    let planes = Arc::new(Planes {
        arm: arm::router(state.clone()),
        data: data::router(state.clone()),
        login: login::router(state.clone()),
        graph: graph::router(state.clone()),
    });
    Router::new().fallback(move |req: Request| {
        let (state, planes) = (state.clone(), Arc::clone(&planes));
        async move { dispatch(state, planes, req).await }
    })
}

async fn dispatch(state: AppState, planes: Arc<Planes>, req: Request) -> Response {
    let request_id = state.request_ids.next();
    let client_request_id = req
        .headers()
        .get("x-ms-client-request-id")
        .filter(|_| {
            req.headers()
                .get("x-ms-return-client-request-id")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"))
        })
        .cloned();
    let mut resp = if req.method() == Method::GET && req.uri().path() == "/healthz" {
        response::health()
    } else {
        match route::plane(&req, &state.endpoints) {
            Plane::Data(vault) => data::handle(&state, planes.data.clone(), vault, req).await,
            Plane::Login => planes
                .login
                .clone()
                .oneshot(req)
                .await
                .unwrap_or_else(|e| match e {}),
            Plane::Graph => graph::handle(&state, planes.graph.clone(), req).await,
            Plane::Management => arm::handle(&state, planes.arm.clone(), req).await,
            Plane::Unknown(host) => ApiError::not_found(format!(
                "No Keyhaven endpoint is served at host '{}'.",
                host.chars().take(100).collect::<String>()
            ))
            .into_response_with(),
        }
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        h.insert(HeaderName::from_static("x-ms-request-id"), v);
    }
    if let Some(v) = client_request_id {
        h.insert(HeaderName::from_static("x-ms-client-request-id"), v);
    }
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    h.insert(
        HeaderName::from_static("x-ms-keyvault-service-version"),
        HeaderValue::from_static(SERVICE_VERSION),
    );
    h.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    resp
}
