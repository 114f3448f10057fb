//! The token issuer at `login.{domain}`: OpenID discovery, the JWKS, and the
//! OAuth 2.0 token endpoint (client-credentials grant with a client secret),
//! shaped like Entra ID's v2 endpoints so MSAL and azure-identity work as is.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use http::StatusCode;
use keyhaven_core::{Principal, PrincipalKind, Sensitive};
use keyhaven_identity::credentials::{burn_verification, ClientCredentials};
use keyhaven_wire::oauth::{
    Jwk, Jwks, OAuthError, OpenIdConfiguration, TokenRequest, TokenResponse,
};

use super::extract::read_body;
use super::response::{json, ok, ApiError};
use crate::state::AppState;

/// The login plane's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(openid_configuration),
        )
        .route("/{tenant}/discovery/v2.0/keys", get(keys))
        .route("/{tenant}/oauth2/v2.0/token", post(token))
        .fallback(|| async {
            ApiError::not_found("The requested endpoint does not exist on the token issuer.")
        })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .with_state(state)
}

fn oauth_error(
    state: &AppState,
    status: StatusCode,
    error: &'static str,
    code: u32,
    text: &str,
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
        },
    )
}

fn tenant_not_found(state: &AppState, tenant: &str) -> Response {
    let shown: String = tenant.chars().take(64).collect();
    oauth_error(
        state,
        StatusCode::BAD_REQUEST,
        "invalid_request",
        90002,
        &format!("Tenant '{shown}' not found."),
    )
}

async fn openid_configuration(State(st): State<AppState>, Path(tenant): Path<String>) -> Response {
    if tenant != st.tokens.tenant_id() {
        return tenant_not_found(&st, &tenant);
    }
    let base = format!("{}/{tenant}", st.tokens.authority());
    ok(&OpenIdConfiguration {
        token_endpoint: format!("{base}/oauth2/v2.0/token"),
        token_endpoint_auth_methods_supported: vec!["client_secret_post"],
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

async fn keys(State(st): State<AppState>, Path(tenant): Path<String>) -> Response {
    if tenant != st.tokens.tenant_id() {
        return tenant_not_found(&st, &tenant);
    }
    let key = st.tokens.key();
    let (n, e) = key.public_components();
    ok(&Jwks {
        keys: vec![Jwk {
            kty: "RSA",
            use_: "sig",
            kid: key.kid().to_owned(),
            n: n.to_owned(),
            e: e.to_owned(),
            issuer: st.tokens.issuer(),
        }],
    })
}

/// The resource a scope list asks for, as the canonical audience string.
fn audience_for(st: &AppState, scope: &str) -> Option<String> {
    let known = [
        st.endpoints.vault_resource(),
        st.endpoints.management_url(),
        st.endpoints.graph_url(),
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

async fn token(State(st): State<AppState>, Path(tenant): Path<String>, body: Body) -> Response {
    if tenant != st.tokens.tenant_id() {
        return tenant_not_found(&st, &tenant);
    }
    let Ok(bytes) = read_body(body).await else {
        return oauth_error(
            &st,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body is too large.",
        );
    };
    let Ok(form) = serde_urlencoded::from_bytes::<TokenRequest>(&bytes) else {
        return oauth_error(
            &st,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must be application/x-www-form-urlencoded.",
        );
    };
    let secret = form.client_secret.map(Sensitive::new);
    if form.grant_type.as_deref() != Some("client_credentials") {
        return oauth_error(
            &st,
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        );
    }
    let (Some(client_id), Some(secret)) = (form.client_id, secret) else {
        return oauth_error(
            &st,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameters: 'client_id' and 'client_secret'.",
        );
    };
    let Some(audience) = form.scope.as_deref().and_then(|s| audience_for(&st, s)) else {
        return oauth_error(
            &st,
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            "The provided value for scope is not valid. Client credential flows must have one scope value with /.default suffixed to a resource known to this tenant.",
        );
    };
    let principal = match st.store.principal_by_app_id(&client_id).await {
        Ok(p) => p.filter(|p| p.tenant_id == st.tokens.tenant_id()),
        Err(_) => {
            return oauth_error(
                &st,
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                90033,
                "The service is temporarily unavailable.",
            );
        }
    };
    let now = st.clock.now();
    let dummy = st.dummy_hash.clone();
    let creds = principal
        .as_ref()
        .and_then(|p| ClientCredentials::parse(&p.credentials));
    // argon2 is deliberately slow: keep it off the async workers.
    let verified = tokio::task::spawn_blocking(move || match creds {
        Some(c) => c.verify(secret.expose(), now),
        None => {
            burn_verification(&dummy, secret.expose());
            false
        }
    })
    .await
    .unwrap_or(false);
    let Some(p) = principal.filter(|_| verified) else {
        return oauth_error(
            &st,
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            "Invalid client secret provided, or the application was not found in the directory.",
        );
    };
    let caller = Principal {
        object_id: p.object_id,
        tenant_id: p.tenant_id,
        app_id: p.app_id,
        kind: PrincipalKind::parse(&p.kind).unwrap_or(PrincipalKind::ServicePrincipal),
    };
    match st.tokens.mint(&caller, &audience, now) {
        Ok(access_token) => ok(&TokenResponse {
            token_type: "Bearer",
            expires_in: keyhaven_identity::token::TOKEN_LIFETIME_SECS,
            ext_expires_in: keyhaven_identity::token::TOKEN_LIFETIME_SECS,
            access_token,
        }),
        Err(_) => oauth_error(
            &st,
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            50000,
            "The token could not be issued.",
        ),
    }
}
