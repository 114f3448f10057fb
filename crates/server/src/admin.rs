//! The admin listener (plain HTTP, meant for loopback or an operations
//! network): `/metrics` in Prometheus' text format, `/healthz` (the process
//! answers) and `/readyz` (the store answers too).

use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use http::{HeaderValue, StatusCode};

use crate::state::AppState;

/// The admin routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/metrics",
            get({
                let state = state.clone();
                move || async move {
                    let mut r = state.metrics.render().into_response();
                    r.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                    );
                    r
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let state = state.clone();
                async move { ready(&state).await }
            }),
        )
}

async fn ready(state: &AppState) -> Response {
    match state.store.get_setting("tenant_id").await {
        Ok(_) => (StatusCode::OK, "ready").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check: the store does not answer");
            (StatusCode::SERVICE_UNAVAILABLE, "store unavailable").into_response()
        }
    }
}
