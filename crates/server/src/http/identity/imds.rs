//! The managed-identity endpoint: Azure's instance metadata service path
//! (`/metadata/identity/oauth2/token`, header `Metadata: true`) and the App
//! Service form (`/msi/token`, header `X-IDENTITY-HEADER`), on a plain-HTTP
//! listener of its own, as on Azure. The caller's real source address picks
//! the workload; its query picks among that workload's identities.

use std::net::IpAddr;

use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Router};
use http::{HeaderMap, StatusCode, Uri};
use keyhaven_identity::managed::IdentitySelector;
use keyhaven_identity::token::{Extra, TOKEN_LIFETIME_SECS};
use keyhaven_wire::oauth::{AppServiceToken, ImdsError, ImdsToken};

use crate::http::extract::query_map;
use crate::http::response::json;
use crate::http::PeerAddr;
use crate::state::AppState;

/// The metadata endpoint's router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metadata/identity/oauth2/token", get(imds_token))
        .route("/msi/token", get(app_service_token))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "invalid_request", "Not found.") })
        .with_state(state)
}

fn error(status: StatusCode, error: &'static str, text: &str) -> Response {
    json(
        status,
        &ImdsError {
            error,
            error_description: text.to_owned(),
        },
    )
}

/// Which form of the endpoint answered.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Form {
    Imds,
    AppService,
}

async fn imds_token(
    State(st): State<AppState>,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let metadata = headers
        .get("metadata")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
    if !metadata {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required metadata header not specified",
        );
    }
    issue(&st, peer.map(|p| p.0 .0.ip()), uri.query(), Form::Imds).await
}

async fn app_service_token(
    State(st): State<AppState>,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let header = headers
        .get("x-identity-header")
        .is_some_and(|v| !v.as_bytes().is_empty());
    if !header {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "The X-IDENTITY-HEADER header is required.",
        );
    }
    issue(
        &st,
        peer.map(|p| p.0 .0.ip()),
        uri.query(),
        Form::AppService,
    )
    .await
}

async fn issue(st: &AppState, source: Option<IpAddr>, query: Option<&str>, form: Form) -> Response {
    let q = query_map(query);
    let Some(resource) = q
        .get("resource")
        .map(|r| r.trim_end_matches('/').to_owned())
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required query variable 'resource' is missing",
        );
    };
    let Some(audience) = crate::http::identity::audience_for(st, &format!("{resource}/.default"))
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_resource",
            &format!(
                "AADSTS500011: The resource principal named {} was not found in the tenant.",
                resource.chars().take(200).collect::<String>()
            ),
        );
    };
    let selector = match (
        q.get("client_id"),
        q.get("object_id").or_else(|| q.get("principal_id")),
        q.get("msi_res_id").or_else(|| q.get("mi_res_id")),
    ) {
        (Some(c), _, _) => IdentitySelector::ClientId(c.clone()),
        (_, Some(o), _) => IdentitySelector::ObjectId(o.clone()),
        (_, _, Some(r)) => IdentitySelector::ResourceId(r.clone()),
        _ => IdentitySelector::System,
    };
    let not_found = || {
        error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Identity not found",
        )
    };
    let Some(source) = source else {
        return not_found();
    };
    let found = match st
        .directory
        .managed_sign_in(&st.subscription_id, source, &selector)
        .await
    {
        Ok(Some(f)) => f,
        Ok(None) => return not_found(),
        Err(e) => {
            tracing::warn!(error = %e, "managed identity lookup failed");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "The service is temporarily unavailable.",
            );
        }
    };
    let now = st.clock.now();
    // Workload Conditional Access policies (locations, block) apply to
    // managed identities too.
    let client = found.signed_in.principal.app_id.clone().unwrap_or_default();
    match crate::sign_in::evaluate(st, &found.signed_in, &audience, &client, Some(source), now)
        .await
    {
        Ok(o) if o.decision == keyhaven_identity::conditional_access::Decision::Allow => {}
        Ok(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "AADSTS53003: Access has been blocked by Conditional Access policies. The access policy does not allow token issuance.",
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, "conditional access could not be evaluated");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "The service is temporarily unavailable.",
            );
        }
    }
    let extra = Extra {
        upn: None,
        name: Some(&found.signed_in.name),
        groups: &found.signed_in.groups,
        azpacr: Some("2"),
        mirid: Some(&found.resource_id),
        amr: &[],
    };
    let Ok(access_token) = st
        .tokens
        .mint_with(&found.signed_in.principal, &extra, &audience, now)
    else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "The token could not be issued.",
        );
    };
    match form {
        Form::Imds => json(
            StatusCode::OK,
            &ImdsToken {
                access_token,
                client_id: found.client_id,
                expires_in: TOKEN_LIFETIME_SECS.to_string(),
                expires_on: (now + TOKEN_LIFETIME_SECS).to_string(),
                ext_expires_in: TOKEN_LIFETIME_SECS.to_string(),
                not_before: now.to_string(),
                resource: audience,
                token_type: "Bearer",
            },
        ),
        Form::AppService => json(
            StatusCode::OK,
            &AppServiceToken {
                access_token,
                expires_on: (now + TOKEN_LIFETIME_SECS).to_string(),
                resource: audience,
                token_type: "Bearer",
                client_id: found.client_id,
            },
        ),
    }
}
