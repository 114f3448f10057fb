//! The token issuer at `login.{domain}`: OpenID discovery, the JWKS, the user
//! realm, and the OAuth 2.0 token endpoints (v2 and v1) with the grants
//! azure-identity uses: client credentials with a secret or a certificate
//! assertion, resource-owner password, device code, authorization code with
//! PKCE (browser sign-in at the authorization endpoint), and refresh tokens.
//! Shaped like Entra ID so MSAL and azure-identity work as is. The router and
//! discovery are here; the token endpoint, the device flow, browser sign-in
//! and the Graph subset each have their file.

use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use http::StatusCode;
use keyhaven_wire::oauth::{Jwk, Jwks, OAuthError, OpenIdConfiguration};

use crate::http::response::{json, ok, ApiError};
use crate::state::AppState;

pub mod authorize;
pub mod device;
pub mod graph;
pub mod imds;
pub mod mfa_prompt;
pub mod token;

use authorize::{authorize_login, authorize_page};
use device::{device_code, device_login, device_page};
use token::{token, token_v1, user_realm};

/// The login plane's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(openid_configuration),
        )
        .route("/{tenant}/discovery/v2.0/keys", get(keys))
        .route("/{tenant}/oauth2/v2.0/token", post(token))
        .route("/{tenant}/oauth2/token", post(token_v1))
        .route("/{tenant}/oauth2/v2.0/devicecode", post(device_code))
        .route("/device", get(device_page).post(device_login))
        .route(
            "/{tenant}/oauth2/v2.0/authorize",
            get(authorize_page).post(authorize_login),
        )
        .route("/common/userrealm/{user}", get(user_realm))
        .fallback(|| async {
            ApiError::not_found("The requested endpoint does not exist on the token issuer.")
        })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .with_state(state)
}

pub(super) fn oauth_error(
    state: &AppState,
    status: StatusCode,
    error: &'static str,
    code: u32,
    text: &str,
) -> Response {
    oauth_error_with(state, status, error, code, text, None, None)
}

/// An Entra error with a `suberror` (what a client should do) and a claims
/// challenge.
pub(super) fn oauth_error_with(
    state: &AppState,
    status: StatusCode,
    error: &'static str,
    code: u32,
    text: &str,
    suberror: Option<&'static str>,
    claims: Option<String>,
) -> Response {
    let id = uuid::Uuid::new_v4().to_string();
    json(
        status,
        &OAuthError {
            error,
            error_description: format!("AADSTS{code}: {text} Trace ID: {id}"),
            error_codes: vec![code],
            timestamp: keyhaven_wire::oauth::iso8601(state.clock.now()),
            trace_id: id.clone(),
            correlation_id: id,
            error_uri: format!("{}/error?code={code}", state.tokens.authority()),
            suberror,
            claims,
        },
    )
}

/// The deployment has one tenant; Entra's multi-tenant aliases `common` and
/// `organizations` (which `az login` and `az logout` use before a tenant is
/// known) name it too. Tenant ids compare case-insensitively, like GUIDs.
pub(super) fn is_our_tenant(st: &AppState, tenant: &str) -> bool {
    tenant.eq_ignore_ascii_case(st.tokens.tenant_id())
        || tenant.eq_ignore_ascii_case("common")
        || tenant.eq_ignore_ascii_case("organizations")
}

pub(super) fn tenant_not_found(state: &AppState, tenant: &str) -> Response {
    let shown: String = tenant.chars().take(64).collect();
    oauth_error(
        state,
        StatusCode::BAD_REQUEST,
        "invalid_request",
        90002,
        &format!("Tenant '{shown}' not found."),
    )
}

pub(super) async fn openid_configuration(
    State(st): State<AppState>,
    Path(tenant): Path<String>,
) -> Response {
    if !is_our_tenant(&st, &tenant) {
        return tenant_not_found(&st, &tenant);
    }
    let base = format!("{}/{tenant}", st.tokens.authority());
    ok(&OpenIdConfiguration {
        token_endpoint: format!("{base}/oauth2/v2.0/token"),
        token_endpoint_auth_methods_supported: vec!["client_secret_post", "private_key_jwt"],
        jwks_uri: format!("{base}/discovery/v2.0/keys"),
        response_modes_supported: vec!["query", "fragment", "form_post"],
        subject_types_supported: vec!["pairwise"],
        id_token_signing_alg_values_supported: vec!["RS256"],
        response_types_supported: vec!["code", "id_token", "code id_token", "id_token token"],
        scopes_supported: vec!["openid", "profile", "email", "offline_access"],
        issuer: st.tokens.issuer(),
        request_uri_parameter_supported: false,
        authorization_endpoint: format!("{base}/oauth2/v2.0/authorize"),
        device_authorization_endpoint: format!("{base}/oauth2/v2.0/devicecode"),
        end_session_endpoint: format!("{base}/oauth2/v2.0/logout"),
        http_logout_supported: true,
        frontchannel_logout_supported: true,
        claims_supported: vec![
            "sub", "iss", "aud", "exp", "iat", "nbf", "oid", "tid", "azp", "ver",
        ],
        tenant_region_scope: None,
        cloud_instance_name: st.endpoints.domain().to_owned(),
        msgraph_host: st
            .endpoints
            .graph_url()
            .trim_start_matches("https://")
            .to_owned(),
    })
}

pub(super) async fn keys(State(st): State<AppState>, Path(tenant): Path<String>) -> Response {
    if !is_our_tenant(&st, &tenant) {
        return tenant_not_found(&st, &tenant);
    }
    // Newest first; previous keys stay published so tokens they signed verify.
    let keys = st
        .tokens
        .keys()
        .iter()
        .rev()
        .map(|key| {
            let (n, e) = key.public_components();
            Jwk {
                kty: "RSA",
                use_: "sig",
                kid: key.kid().to_owned(),
                n: n.to_owned(),
                e: e.to_owned(),
                issuer: st.tokens.issuer(),
            }
        })
        .collect();
    ok(&Jwks { keys })
}

/// The resource a scope list asks for, as the canonical audience string.
pub(crate) fn audience_for(st: &AppState, scope: &str) -> Option<String> {
    let known = [
        st.endpoints.vault_resource(),
        st.endpoints.hsm_resource(),
        st.endpoints.management_url(),
        st.endpoints.graph_url(),
        st.endpoints.logs_url(),
    ];
    let mut requested = scope
        .split_whitespace()
        .filter(|s| !matches!(*s, "openid" | "profile" | "offline_access"));
    let first = requested.next()?;
    if requested.next().is_some() {
        return None;
    }
    let resource = first.strip_suffix("/.default")?.trim_end_matches('/');
    known.into_iter().find(|k| k.eq_ignore_ascii_case(resource))
}
