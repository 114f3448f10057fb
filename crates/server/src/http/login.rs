//! The token issuer at `login.{domain}`: OpenID discovery, the JWKS, the user
//! realm, and the OAuth 2.0 token endpoints (v2 and v1) with the grants
//! azure-identity uses: client credentials with a secret or a certificate
//! assertion, resource-owner password, device code, authorization code with
//! PKCE (browser sign-in at the authorization endpoint), and refresh tokens.
//! Shaped like Entra ID so MSAL and azure-identity work as is.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::StatusCode;
use keyhaven_core::{PrincipalKind, Sensitive};
use keyhaven_identity::authcode::{self, RedeemError};
use keyhaven_identity::device::{Poll, DEVICE_CODE_LIFETIME_SECS, POLL_INTERVAL_SECS};
use keyhaven_identity::refresh::{self, RefreshId};
use keyhaven_identity::token::{Extra, TOKEN_LIFETIME_SECS};
use keyhaven_identity::SignInFailure;
use keyhaven_wire::oauth::{
    AuthorizeParams, DeviceCodeRequest, DeviceCodeResponse, DeviceLoginForm, Jwk, Jwks, OAuthError,
    OpenIdConfiguration, TokenRequest, TokenResponse, TokenResponseV1, UserRealm,
};

use std::net::IpAddr;

use super::extract::read_body;
use super::response::{json, ok, ApiError};
use super::PeerAddr;
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

/// The deployment has one tenant; Entra's multi-tenant aliases `common` and
/// `organizations` (which `az login` and `az logout` use before a tenant is
/// known) name it too. Tenant ids compare case-insensitively, like GUIDs.
fn is_our_tenant(st: &AppState, tenant: &str) -> bool {
    tenant.eq_ignore_ascii_case(st.tokens.tenant_id())
        || tenant.eq_ignore_ascii_case("common")
        || tenant.eq_ignore_ascii_case("organizations")
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

async fn keys(State(st): State<AppState>, Path(tenant): Path<String>) -> Response {
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

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// Which token endpoint a request came to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    /// `/oauth2/v2.0/token`: `scope=…/.default`.
    V2,
    /// `/oauth2/token`: `resource=…`.
    V1,
}

type Peer = Option<Extension<PeerAddr>>;

/// The caller's address for sign-in limits: the TCP peer, or what a trusted
/// reverse proxy (`--trusted-proxy`) says in `X-Forwarded-For`, as the data
/// plane's network rules read it, so clients behind a proxy are not all one
/// source.
fn source_of(st: &AppState, peer: &Peer, headers: &http::HeaderMap) -> Option<IpAddr> {
    let peer = peer.as_ref()?.0 .0.ip();
    let forwarded = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
    Some(keyhaven_core::network::client_address(
        peer,
        forwarded,
        &st.trusted_proxies,
    ))
}

async fn token(
    State(st): State<AppState>,
    Path(tenant): Path<String>,
    peer: Peer,
    headers: http::HeaderMap,
    body: Body,
) -> Response {
    let source = source_of(&st, &peer, &headers);
    issue(&st, &tenant, source, body, Endpoint::V2).await
}

async fn token_v1(
    State(st): State<AppState>,
    Path(tenant): Path<String>,
    peer: Peer,
    headers: http::HeaderMap,
    body: Body,
) -> Response {
    let source = source_of(&st, &peer, &headers);
    issue(&st, &tenant, source, body, Endpoint::V1).await
}

async fn user_realm(State(st): State<AppState>, Path(user): Path<String>) -> Response {
    let domain = user
        .rsplit_once('@')
        .map(|(_, d)| d)
        .unwrap_or("")
        .chars()
        .take(100)
        .collect();
    ok(&UserRealm {
        ver: "1.0",
        account_type: "Managed",
        domain_name: domain,
        cloud_instance_name: st.endpoints.domain().to_owned(),
        cloud_audience_urn: "urn:federation:MicrosoftOnline",
    })
}

fn sign_in_error(st: &AppState, f: SignInFailure, client_id: &str) -> Response {
    let shown: String = client_id.chars().take(64).collect();
    let (status, error, code, text) = match f {
        SignInFailure::UnknownClient | SignInFailure::InvalidSecret => (
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            "Invalid client secret provided, or the application was not found in the directory.".to_owned(),
        ),
        SignInFailure::ExpiredSecret => (
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000222,
            format!("The provided client secret keys for app '{shown}' are expired."),
        ),
        SignInFailure::UnknownCertificate => (
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            700027,
            "The certificate with identifier used to sign the client assertion is not registered on application.".to_owned(),
        ),
        SignInFailure::InvalidAssertion => (
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            700021,
            "Client assertion failed signature validation, or its audience, issuer, subject or lifetime is invalid.".to_owned(),
        ),
        SignInFailure::ClientDisabled => (
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000112,
            format!("Application '{shown}' is disabled."),
        ),
        SignInFailure::BadPassword => (
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            50126,
            "Error validating credentials due to invalid username or password.".to_owned(),
        ),
        SignInFailure::UserDisabled => (
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            50057,
            "The user account is disabled.".to_owned(),
        ),
        SignInFailure::NotPublicClient => (
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.".to_owned(),
        ),
        SignInFailure::Federation(f) => {
            use keyhaven_identity::federation::FederationFailure as F;
            let (code, text) = match f {
                F::Issuer => (700211, "No matching federated identity record found for presented assertion issuer."),
                F::Subject => (700213, "No matching federated identity record found for presented assertion subject."),
                F::Audience => (700212, "No matching federated identity record found for presented assertion audience."),
                F::Lifetime => (700024, "Client assertion is not within its valid time range."),
                F::Signature => (700027, "The federated assertion failed signature validation or its signing key is unknown."),
            };
            (StatusCode::UNAUTHORIZED, "invalid_client", code, text.to_owned())
        }
        SignInFailure::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            90033,
            "The service is temporarily unavailable.".to_owned(),
        ),
    };
    oauth_error(st, status, error, code, &text)
}

fn bad_request(st: &AppState, error: &'static str, code: u32, text: &str) -> Response {
    oauth_error(st, StatusCode::BAD_REQUEST, error, code, text)
}

async fn issue(
    st: &AppState,
    tenant: &str,
    source: Option<IpAddr>,
    body: Body,
    endpoint: Endpoint,
) -> Response {
    if !is_our_tenant(st, tenant) {
        return tenant_not_found(st, tenant);
    }
    let Ok(bytes) = read_body(body).await else {
        return bad_request(
            st,
            "invalid_request",
            900144,
            "The request body is too large.",
        );
    };
    let Ok(form) = serde_urlencoded::from_bytes::<TokenRequest>(&bytes) else {
        return bad_request(
            st,
            "invalid_request",
            900144,
            "The request body must be application/x-www-form-urlencoded.",
        );
    };
    let client_secret = form.client_secret.map(Sensitive::new);
    let password = form.password.map(Sensitive::new);
    let Some(client_id) = form.client_id else {
        return bad_request(
            st,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        );
    };
    let now = st.clock.now();
    if let Err(wait) = st.sign_in_limiter.admit(source, now) {
        return too_many(st, wait);
    }
    let grant = form.grant_type.as_deref().unwrap_or("");
    // A device code carries the scope the device asked for when it began; an
    // authorization code the scope and nonce of its request.
    let mut nonce = None;
    let device = match grant {
        DEVICE_CODE_GRANT => {
            let Some(code) = form.device_code.as_deref() else {
                return bad_request(
                    st,
                    "invalid_request",
                    900144,
                    "The request body must contain the following parameter: 'device_code'.",
                );
            };
            match st.device_codes.poll(code, &client_id, now) {
                // Not consumed yet: a locked user must not spend it.
                Poll::Approved(who, scope) => Some((*who, scope)),
                Poll::Pending => {
                    return bad_request(
                        st,
                        "authorization_pending",
                        70016,
                        "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
                    );
                }
                Poll::Expired => {
                    return bad_request(st, "expired_token", 70020, "The provided value for the input parameter 'device_code' is not valid. This device code has expired.");
                }
                Poll::Unknown => {
                    return bad_request(
                        st,
                        "invalid_grant",
                        70000,
                        "The provided value for the input parameter 'device_code' is not valid.",
                    );
                }
            }
        }
        "authorization_code" => {
            let (Some(code), Some(redirect_uri), Some(verifier)) = (
                form.code.as_deref(),
                form.redirect_uri.as_deref(),
                form.code_verifier.as_deref(),
            ) else {
                return bad_request(
                    st,
                    "invalid_request",
                    900144,
                    "The request body must contain the following parameters: 'code', 'redirect_uri' and 'code_verifier'.",
                );
            };
            match st
                .auth_codes
                .redeem(code, &client_id, redirect_uri, verifier, now)
            {
                Ok(r) => {
                    nonce = r.nonce;
                    Some((r.who, r.scope))
                }
                Err(e) => {
                    let (code, text) = match e {
                        RedeemError::Expired => (70008, "The provided authorization code or refresh token has expired."),
                        RedeemError::RedirectMismatch => (500117, "The reply URL specified in the request does not match the reply URL of the authorization request."),
                        RedeemError::VerifierMismatch => (501481, "The code_verifier does not match the code_challenge supplied in the authorization request for PKCE."),
                        RedeemError::Unknown => (9002313, "The provided authorization code is not valid: it is unknown, was issued to another client, or was already redeemed."),
                    };
                    return bad_request(st, "invalid_grant", code, text);
                }
            }
        }
        _ => None,
    };
    let requested = match (&device, endpoint) {
        (Some((_, scope)), _) => Some(scope.clone()),
        (None, Endpoint::V2) => form.scope.clone(),
        (None, Endpoint::V1) => form
            .resource
            .as_deref()
            .map(|r| format!("{}/.default", r.trim_end_matches('/'))),
    };
    let Some(audience) = requested.as_deref().and_then(|s| audience_for(st, s)) else {
        return bad_request(
            st,
            "invalid_scope",
            1002012,
            "The provided value for scope is not valid. Client credential flows must have one scope value with /.default suffixed to a resource known to this tenant.",
        );
    };
    // Brute force: user grants are counted and locked by the user (its
    // user name), confidential clients by client id. Public clients share
    // one id among all their users (the Azure CLI's), so a client-credentials
    // request for one fails at once and counts against no one.
    if grant == "client_credentials"
        && matches!(st.directory.is_public_client(&client_id).await, Ok(true))
    {
        return sign_in_error(st, SignInFailure::NotPublicClient, &client_id);
    }
    let subject = match (grant, form.username.as_deref(), &device) {
        ("password", Some(u), _) => Some(u.to_owned()),
        ("client_credentials", _, _) => Some(client_id.clone()),
        (_, _, Some((who, _))) => Some(user_subject(who)),
        _ => None,
    };
    // Only grants that check a guessable credential count failures, and
    // only they are held to a source's quota of new subjects.
    let counted = matches!(grant, "password" | "client_credentials");
    if subject
        .as_deref()
        .is_some_and(|s| st.lockout.is_locked(s, source, now, counted))
    {
        return locked(st, grant);
    }
    // The refresh token this response carries: the next of the presented
    // token's family (rotation), or the first of a new one.
    let mut refresh_next: Option<RefreshId> = None;
    if grant == DEVICE_CODE_GRANT {
        // Everything that can fail for want of the store comes before the
        // approval is spent.
        if endpoint == Endpoint::V2 {
            let first = RefreshId::new_family();
            if refresh::start(&st.store, &first).await.is_err() {
                return sign_in_error(st, SignInFailure::Unavailable, &client_id);
            }
            refresh_next = Some(first);
        }
        if !form
            .device_code
            .as_deref()
            .is_some_and(|c| st.device_codes.take(c))
        {
            return bad_request(
                st,
                "invalid_grant",
                70000,
                "The provided value for the input parameter 'device_code' is not valid.",
            );
        }
    }
    let mut azpacr = "0";
    let signed_in = match grant {
        "client_credentials" => match (client_secret, form.client_assertion) {
            (_, Some(assertion)) => {
                if form.client_assertion_type.as_deref() != Some(JWT_BEARER) {
                    return bad_request(st, "invalid_request", 50027, "The client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer.");
                }
                let assertion = assertion.trim();
                azpacr = "2";
                // The client signs its own assertion (iss = client id); anything
                // else is a token from an external issuer, to be federated.
                if keyhaven_identity::federation::unverified_issuer(assertion).as_deref()
                    == Some(client_id.as_str())
                {
                    let base = format!("{}/{tenant}", st.tokens.authority());
                    let audiences = [
                        format!("{base}/oauth2/v2.0/token"),
                        format!("{base}/oauth2/token"),
                    ];
                    st.directory
                        .sign_in_with_assertion(&client_id, assertion, &audiences, source)
                        .await
                } else {
                    st.directory
                        .sign_in_with_federated(&client_id, assertion)
                        .await
                }
            }
            (Some(secret), None) => {
                azpacr = "1";
                st.directory.sign_in_with_secret(&client_id, secret).await
            }
            (None, None) => Err(SignInFailure::NotPublicClient),
        },
        "password" => {
            let (Some(username), Some(password)) = (form.username, password) else {
                return bad_request(st, "invalid_request", 900144, "The request body must contain the following parameters: 'username' and 'password'.");
            };
            st.directory
                .sign_in_with_password(&client_id, &username, password)
                .await
        }
        "refresh_token" => {
            let Some(rt) = form.refresh_token else {
                return bad_request(
                    st,
                    "invalid_request",
                    900144,
                    "The request body must contain the following parameter: 'refresh_token'.",
                );
            };
            match st.tokens.validate_refresh(&rt, &client_id, now) {
                Ok(g) => {
                    let resumed = st.directory.resume(&g.object_id, &g.stamp).await;
                    if let Ok(who) = &resumed {
                        if st.lockout.is_locked(&user_subject(who), source, now, false) {
                            return locked(st, grant);
                        }
                        // Only the family's current token refreshes; the
                        // v1 endpoint returns no new one, so there the
                        // token is checked and stays current.
                        let next = match endpoint {
                            Endpoint::V2 => g.id.next(),
                            Endpoint::V1 => g.id.clone(),
                        };
                        match refresh::rotate(&st.store, &g.id, &next, now).await {
                            Ok(refresh::Rotation::Rotated) => refresh_next = Some(next),
                            Ok(refresh::Rotation::Superseded) => {
                                return bad_request(st, "invalid_grant", 70043, "The refresh token was replaced by a newer one moments ago; use the newest token.");
                            }
                            Ok(refresh::Rotation::Reused) => {
                                return bad_request(st, "invalid_grant", 70043, "The refresh token was already used. The sign-in session it belongs to is revoked; sign in again.");
                            }
                            Err(_) => {
                                return sign_in_error(st, SignInFailure::Unavailable, &client_id)
                            }
                        }
                    }
                    resumed
                }
                Err(_) => {
                    return bad_request(st, "invalid_grant", 9002313, "Invalid request. The refresh token is malformed, expired or was not issued to this client.");
                }
            }
        }
        DEVICE_CODE_GRANT | "authorization_code" => {
            device.map(|(who, _)| who).ok_or(SignInFailure::Unavailable)
        }
        _ => {
            return bad_request(
                st,
                "unsupported_grant_type",
                70003,
                "The app requested an unsupported grant type.",
            );
        }
    };
    let mut who = match signed_in {
        Ok(w) => {
            if let Some(s) = subject.as_deref().filter(|_| counted) {
                st.lockout.record_success(s, source);
            }
            w
        }
        Err(f) => {
            if let Some(s) = subject.as_deref().filter(|_| counted) {
                if guessed_wrong(f) {
                    st.lockout.record_failure(s, source, now);
                }
            }
            return sign_in_error(st, f, &client_id);
        }
    };
    if who.principal.kind == PrincipalKind::User {
        // A user's token names the application they signed in through.
        who.principal.app_id = Some(client_id.clone());
    }
    let extra = Extra {
        upn: who.upn.as_deref(),
        name: Some(&who.name),
        groups: &who.groups,
        azpacr: Some(azpacr),
        mirid: None,
    };
    let Ok(access_token) = st.tokens.mint_with(&who.principal, &extra, &audience, now) else {
        return server_error(st);
    };
    if endpoint == Endpoint::V1 {
        return ok(&TokenResponseV1 {
            token_type: "Bearer",
            expires_in: TOKEN_LIFETIME_SECS.to_string(),
            expires_on: (now + TOKEN_LIFETIME_SECS).to_string(),
            not_before: now.to_string(),
            resource: audience,
            access_token,
        });
    }
    let user = who.principal.kind == PrincipalKind::User;
    let (refresh_token, id_token, client_info) = if user {
        let family = match refresh_next {
            Some(next) => next,
            None => {
                let first = RefreshId::new_family();
                if refresh::start(&st.store, &first).await.is_err() {
                    return sign_in_error(st, SignInFailure::Unavailable, &client_id);
                }
                first
            }
        };
        let (Ok(rt), Ok(idt)) = (
            st.tokens.mint_refresh(
                &who.principal,
                &client_id,
                &who.credential_stamp,
                &family,
                now,
            ),
            st.tokens
                .mint_id_token(&who.principal, &extra, &client_id, nonce.as_deref(), now),
        ) else {
            return server_error(st);
        };
        let info = format!(
            r#"{{"uid":"{}","utid":"{}"}}"#,
            who.principal.object_id, who.principal.tenant_id
        );
        (Some(rt), Some(idt), Some(URL_SAFE_NO_PAD.encode(info)))
    } else {
        (None, None, None)
    };
    ok(&TokenResponse {
        token_type: "Bearer",
        scope: requested,
        expires_in: TOKEN_LIFETIME_SECS,
        ext_expires_in: TOKEN_LIFETIME_SECS,
        access_token,
        refresh_token,
        id_token,
        client_info,
    })
}

/// True for the failures that a guess can cause: a wrong secret or
/// password of a subject that has one. Unknown clients, bad assertions
/// (signed, not guessable) and outages count against no one, so junk
/// requests cannot lock a client out.
fn guessed_wrong(f: SignInFailure) -> bool {
    matches!(f, SignInFailure::InvalidSecret | SignInFailure::BadPassword)
}

/// The lockout subject of a signed-in user: its user name, as the password
/// grant counts it, or its object id for a user without one.
fn user_subject(who: &keyhaven_identity::SignedIn) -> String {
    who.upn
        .clone()
        .unwrap_or_else(|| who.principal.object_id.clone())
}

fn locked(st: &AppState, grant: &str) -> Response {
    let (status, error) = if grant == "client_credentials" {
        (StatusCode::UNAUTHORIZED, "invalid_client")
    } else {
        (StatusCode::BAD_REQUEST, "invalid_grant")
    };
    oauth_error(
        st,
        status,
        error,
        50053,
        "The account is locked because of too many sign-in attempts with an incorrect credential. Try again later.",
    )
}

/// 429 with `Retry-After`: one source asked too often.
fn too_many(st: &AppState, wait_secs: i64) -> Response {
    let mut r = oauth_error(
        st,
        StatusCode::TOO_MANY_REQUESTS,
        "temporarily_unavailable",
        50196,
        "Too many requests from this address. Retry after the time the Retry-After header gives.",
    );
    if let Ok(v) = http::HeaderValue::from_str(&wait_secs.max(1).to_string()) {
        r.headers_mut().insert(http::header::RETRY_AFTER, v);
    }
    r
}

fn server_error(st: &AppState) -> Response {
    oauth_error(
        st,
        StatusCode::INTERNAL_SERVER_ERROR,
        "server_error",
        50000,
        "The token could not be issued.",
    )
}

async fn device_code(
    State(st): State<AppState>,
    Path(tenant): Path<String>,
    peer: Peer,
    headers: http::HeaderMap,
    body: Body,
) -> Response {
    if !is_our_tenant(&st, &tenant) {
        return tenant_not_found(&st, &tenant);
    }
    let source = source_of(&st, &peer, &headers);
    if let Err(wait) = st.sign_in_limiter.admit(source, st.clock.now()) {
        return too_many(&st, wait);
    }
    let Ok(bytes) = read_body(body).await else {
        return bad_request(
            &st,
            "invalid_request",
            900144,
            "The request body is too large.",
        );
    };
    let Ok(form) = serde_urlencoded::from_bytes::<DeviceCodeRequest>(&bytes) else {
        return bad_request(
            &st,
            "invalid_request",
            900144,
            "The request body must be application/x-www-form-urlencoded.",
        );
    };
    let Some(client_id) = form.client_id else {
        return bad_request(
            &st,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        );
    };
    let Some(scope) = form.scope.filter(|s| audience_for(&st, s).is_some()) else {
        return bad_request(
            &st,
            "invalid_scope",
            70011,
            "The provided value for the input parameter 'scope' is not valid.",
        );
    };
    match st.directory.is_public_client(&client_id).await {
        Ok(true) => {}
        Ok(false) => {
            return bad_request(
                &st,
                "invalid_client",
                7000218,
                "The application must be a public client to use the device code flow.",
            );
        }
        Err(f) => return sign_in_error(&st, f, &client_id),
    }
    let Some(issued) = st
        .device_codes
        .issue(&client_id, &scope, st.clock.now(), source)
    else {
        return oauth_error(
            &st,
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            90033,
            "Too many pending device codes; try again later.",
        );
    };
    let verification_uri = format!("{}/device", st.tokens.authority());
    ok(&DeviceCodeResponse {
        message: format!(
            "To sign in, use a web browser to open the page {verification_uri} and enter the code {} to authenticate.",
            issued.user_code
        ),
        user_code: issued.user_code,
        device_code: issued.device_code,
        verification_uri,
        expires_in: DEVICE_CODE_LIFETIME_SECS,
        interval: POLL_INTERVAL_SECS,
    })
}

const DEVICE_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Keyhaven sign-in</title>
<style>body{font-family:sans-serif;max-width:28em;margin:4em auto}label{display:block;margin:.8em 0 .2em}input{width:100%;padding:.4em}button{margin-top:1em;padding:.5em 1.5em}.msg{padding:.6em;background:#eef}</style></head>
<body><h1>Sign in to a device</h1>{message}
<form method="post" action="/device">
<label for="code">Code shown on the device</label><input id="code" name="code" autocomplete="off" required>
<button type="submit">Next</button></form></body></html>"#;

/// The second step: what is being approved, then the credentials.
const DEVICE_CONFIRM_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Keyhaven sign-in</title>
<style>body{font-family:sans-serif;max-width:28em;margin:4em auto}label{display:block;margin:.8em 0 .2em}input{width:100%;padding:.4em}button{margin-top:1em;padding:.5em 1.5em}.msg{padding:.6em;background:#eef}.ask{padding:.6em;border:1px solid #99a}</style></head>
<body><h1>Sign in to a device</h1>{message}
<p class="ask">The application <strong>{app}</strong> ({client}) on the device asks to act as you on <strong>{resource}</strong>. Sign in only if you started this on a device you trust.</p>
<form method="post" action="/device"><input type="hidden" name="code" value="{code}"><input type="hidden" name="confirm" value="yes">
<label for="username">User name</label><input id="username" name="username" autocomplete="username" required>
<label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">Sign in and approve</button></form></body></html>"#;

/// An HTML page of the login plane, with its content security policy; never
/// framed.
fn html_page(status: StatusCode, body: String, csp: http::HeaderValue) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert("x-frame-options", http::HeaderValue::from_static("DENY"));
    h.insert("content-security-policy", csp);
    r
}

fn html(status: StatusCode, message: &str) -> Response {
    // The page takes a password: its form posts only here.
    html_page(
        status,
        DEVICE_PAGE.replace("{message}", message),
        http::HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"),
    )
}

/// The page naming the application and resource a device code asks for.
async fn device_confirm_page(st: &AppState, code: &str, client_id: &str, scope: &str) -> Response {
    let app = match st.store.application_by_app_id(client_id).await {
        Ok(Some(a)) => a.display_name,
        _ => "an unnamed application".to_owned(),
    };
    let resource = audience_for(st, scope).unwrap_or_else(|| scope.to_owned());
    html_page(
        StatusCode::OK,
        DEVICE_CONFIRM_PAGE
            .replace("{message}", "")
            .replace("{app}", &escape_html(&app))
            .replace("{client}", &escape_html(client_id))
            .replace("{resource}", &escape_html(&resource))
            .replace("{code}", &escape_html(code)),
        http::HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"),
    )
}

async fn device_page() -> Response {
    html(StatusCode::OK, "")
}

async fn device_login(
    State(st): State<AppState>,
    peer: Peer,
    headers: http::HeaderMap,
    body: Body,
) -> Response {
    let fail = |text: &str| {
        html(
            StatusCode::BAD_REQUEST,
            &format!(r#"<p class="msg">{text}</p>"#),
        )
    };
    // Before the code is looked up: user codes are short, so guessing them
    // is limited per source like sign-ins are.
    let source = source_of(&st, &peer, &headers);
    if st.sign_in_limiter.admit(source, st.clock.now()).is_err() {
        return fail("Too many requests from this address. Try again later.");
    }
    let Ok(bytes) = read_body(body).await else {
        return fail("The form is too large.");
    };
    let Ok(form) = serde_urlencoded::from_bytes::<DeviceLoginForm>(&bytes) else {
        return fail("The form could not be read.");
    };
    let password = form.password.map(Sensitive::new);
    let Some(code) = form.code else {
        return fail("Enter the code shown on the device.");
    };
    let now = st.clock.now();
    let Some((client_id, scope)) = st.device_codes.request_of(&code, now) else {
        return fail(
            "That code is not valid or has expired. Check the code on the device and try again.",
        );
    };
    // First the page says which application asks for what; credentials
    // are taken only on the page that said it.
    let confirmed = form.confirm.as_deref() == Some("yes");
    let (true, Some(username), Some(password)) = (confirmed, form.username, password) else {
        return device_confirm_page(&st, &code, &client_id, &scope).await;
    };
    match form_sign_in(&st, &client_id, &username, password, source, now).await {
        Ok(who) => {
            if st.device_codes.approve(&code, who, now) {
                html(
                    StatusCode::OK,
                    r#"<p class="msg">You have signed in. You can close this window and return to the device.</p>"#,
                )
            } else {
                fail("That code is not valid or has expired.")
            }
        }
        Err(text) => fail(text),
    }
}

/// Signs a user in from a sign-in page's form (device verification or
/// authorization), with the password grant's lockout; on failure, the
/// sentence the page shows.
async fn form_sign_in(
    st: &AppState,
    client_id: &str,
    username: &str,
    password: Sensitive<String>,
    source: Option<IpAddr>,
    now: i64,
) -> Result<keyhaven_identity::directory::SignedIn, &'static str> {
    if st.sign_in_limiter.admit(source, now).is_err() {
        return Err("Too many requests from this address. Try again later.");
    }
    if st.lockout.is_locked(username, source, now, true) {
        return Err("Too many failed sign-ins. Try again later.");
    }
    match st
        .directory
        .sign_in_with_password(client_id, username, password)
        .await
    {
        Ok(mut who) => {
            st.lockout.record_success(username, source);
            who.principal.app_id = Some(client_id.to_owned());
            Ok(who)
        }
        Err(f) => {
            if guessed_wrong(f) {
                st.lockout.record_failure(username, source, now);
            }
            Err(match f {
                SignInFailure::UserDisabled => "Your account is disabled.",
                _ => "The user name or password is incorrect.",
            })
        }
    }
}

// ---------------- authorization code (browser sign-in) ----------------

const AUTHORIZE_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Keyhaven sign-in</title>
<style>body{font-family:sans-serif;max-width:28em;margin:4em auto}label{display:block;margin:.8em 0 .2em}input{width:100%;padding:.4em}button{margin-top:1em;padding:.5em 1.5em}.msg{padding:.6em;background:#eef}</style></head>
<body><h1>Sign in</h1>{message}
<form method="post" action="{action}">{hidden}
<label for="username">User name</label><input id="username" name="username" value="{hint}" autocomplete="username" required>
<label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">Sign in</button></form></body></html>"#;

fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// An HTML page that takes a password: never framed or cached; its form may
/// post only here, and the redirect after it only to a loopback listener.
fn sign_in_page(status: StatusCode, body: String) -> Response {
    no_store(html_page(
        status,
        body,
        http::HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; form-action 'self' http://localhost:* http://127.0.0.1:* http://[::1]:*; frame-ancestors 'none'"),
    ))
}

fn no_store(mut r: Response) -> Response {
    r.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    r
}

fn authorize_error(text: &str) -> Response {
    sign_in_page(
        StatusCode::BAD_REQUEST,
        format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Keyhaven sign-in</title></head><body><h1>Sign-in request refused</h1><p>{}</p></body></html>",
            escape_html(text)
        ),
    )
}

/// A checked authorization request.
struct Authorize {
    request: authcode::Request,
    state: Option<String>,
    form_post: bool,
}

/// Checks an authorization request. Nothing is redirected until the client
/// and its redirect URI are known good, so a bad request is an error page.
async fn check_authorize(
    st: &AppState,
    tenant: &str,
    p: &AuthorizeParams,
) -> Result<Authorize, Response> {
    if !is_our_tenant(st, tenant) {
        return Err(authorize_error(&format!(
            "AADSTS90002: Tenant '{}' not found.",
            tenant.chars().take(64).collect::<String>()
        )));
    }
    let Some(client_id) = p.client_id.as_deref() else {
        return Err(authorize_error(
            "AADSTS900144: The request must contain 'client_id'.",
        ));
    };
    match st.directory.is_public_client(client_id).await {
        Ok(true) => {}
        Ok(false) => {
            return Err(authorize_error(
                "AADSTS7000218: Only public client applications sign users in here.",
            ))
        }
        Err(_) => {
            return Err(authorize_error(
                "AADSTS700016: The application was not found in the directory.",
            ))
        }
    }
    let Some(redirect_uri) = p
        .redirect_uri
        .as_deref()
        .filter(|r| authcode::loopback_redirect(r))
    else {
        return Err(authorize_error("AADSTS50011: The redirect URI must be a loopback address (http://localhost:PORT) of the application on this machine."));
    };
    if p.response_type.as_deref() != Some("code") {
        return Err(authorize_error(
            "AADSTS70007: Only response_type=code is supported.",
        ));
    }
    let Some(challenge) = p.code_challenge.as_deref().filter(|c| {
        authcode::challenge_well_formed(c) && p.code_challenge_method.as_deref() == Some("S256")
    }) else {
        return Err(authorize_error(
            "AADSTS9002325: Proof Key for Code Exchange (S256) is required.",
        ));
    };
    let Some(scope) = p.scope.as_deref().filter(|s| audience_for(st, s).is_some()) else {
        return Err(authorize_error(
            "AADSTS70011: The provided value for the input parameter 'scope' is not valid.",
        ));
    };
    let form_post = match p.response_mode.as_deref() {
        None | Some("query") => false,
        Some("form_post") => true,
        Some(_) => {
            return Err(authorize_error(
                "AADSTS900144: response_mode must be query or form_post.",
            ))
        }
    };
    let bounded = |v: &Option<String>| v.as_deref().filter(|s| s.len() <= 1024).map(str::to_owned);
    Ok(Authorize {
        request: authcode::Request {
            client_id: client_id.to_owned(),
            redirect_uri: redirect_uri.to_owned(),
            code_challenge: challenge.to_owned(),
            scope: scope.to_owned(),
            nonce: bounded(&p.nonce),
        },
        state: bounded(&p.state),
        form_post,
    })
}

fn authorize_form(tenant: &str, a: &Authorize, hint: &str, message: &str) -> String {
    let mut hidden = String::new();
    let mut field = |name: &str, value: &str| {
        hidden.push_str(&format!(
            r#"<input type="hidden" name="{name}" value="{}">"#,
            escape_html(value)
        ));
    };
    field("client_id", &a.request.client_id);
    field("response_type", "code");
    field("redirect_uri", &a.request.redirect_uri);
    field("scope", &a.request.scope);
    field("code_challenge", &a.request.code_challenge);
    field("code_challenge_method", "S256");
    if let Some(n) = &a.request.nonce {
        field("nonce", n);
    }
    if let Some(s) = &a.state {
        field("state", s);
    }
    if a.form_post {
        field("response_mode", "form_post");
    }
    AUTHORIZE_PAGE
        .replace(
            "{action}",
            &escape_html(&format!("/{tenant}/oauth2/v2.0/authorize")),
        )
        .replace("{hidden}", &hidden)
        .replace("{hint}", &escape_html(hint))
        .replace("{message}", message)
}

/// `GET /{tenant}/oauth2/v2.0/authorize`: the sign-in page.
async fn authorize_page(
    State(st): State<AppState>,
    Path(tenant): Path<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let p: AuthorizeParams =
        serde_urlencoded::from_str(query.as_deref().unwrap_or("")).unwrap_or_default();
    match check_authorize(&st, &tenant, &p).await {
        Ok(a) => sign_in_page(
            StatusCode::OK,
            authorize_form(&tenant, &a, p.login_hint.as_deref().unwrap_or(""), ""),
        ),
        Err(r) => r,
    }
}

/// `POST /{tenant}/oauth2/v2.0/authorize`: signs the user in and redirects to
/// the client's loopback listener with a code (or shows the form again).
async fn authorize_login(
    State(st): State<AppState>,
    Path(tenant): Path<String>,
    peer: Peer,
    headers: http::HeaderMap,
    body: Body,
) -> Response {
    let source = source_of(&st, &peer, &headers);
    let Ok(bytes) = read_body(body).await else {
        return authorize_error("The form is too large.");
    };
    let Ok(mut p) = serde_urlencoded::from_bytes::<AuthorizeParams>(&bytes) else {
        return authorize_error("The form could not be read.");
    };
    let a = match check_authorize(&st, &tenant, &p).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let password = p.password.take().map(Sensitive::new);
    let username = p.username.take().unwrap_or_default();
    let again = |text: &str| {
        sign_in_page(
            StatusCode::OK,
            authorize_form(
                &tenant,
                &a,
                &username,
                &format!(r#"<p class="msg">{text}</p>"#),
            ),
        )
    };
    let Some(password) = password.filter(|_| !username.is_empty()) else {
        return again("Enter your user name and your password.");
    };
    let now = st.clock.now();
    let who = match form_sign_in(&st, &a.request.client_id, &username, password, source, now).await
    {
        Ok(who) => who,
        Err(text) => return again(text),
    };
    let redirect_uri = a.request.redirect_uri.clone();
    let (state, form_post) = (a.state.clone(), a.form_post);
    let Some(code) = st.auth_codes.issue(a.request, who, now) else {
        return authorize_error("Too many sign-ins in progress; try again later.");
    };
    let mut query = vec![("code", code.as_str())];
    if let Some(s) = state.as_deref() {
        query.push(("state", s));
    }
    if form_post {
        return form_post_page(&redirect_uri, &query);
    }
    let Ok(q) = serde_urlencoded::to_string(&query) else {
        return authorize_error("The response could not be built.");
    };
    let location = format!("{redirect_uri}?{q}");
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::FOUND;
    match http::HeaderValue::from_str(&location) {
        Ok(v) => {
            r.headers_mut().insert(http::header::LOCATION, v);
        }
        Err(_) => return authorize_error("The response could not be built."),
    }
    no_store(r)
}

/// The inline script of the form_post page (allowed by its hash, nothing else).
const FORM_POST_SCRIPT: &str = "document.forms[0].submit()";

/// `response_mode=form_post`: a page whose form posts the response to the
/// client's loopback listener at once (a button if scripts are off).
fn form_post_page(redirect_uri: &str, fields: &[(&str, &str)]) -> Response {
    let inputs: String = fields
        .iter()
        .map(|(k, v)| {
            format!(
                r#"<input type="hidden" name="{k}" value="{}">"#,
                escape_html(v)
            )
        })
        .collect();
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Keyhaven sign-in</title></head><body><p>Signed in. Returning to the application\u{2026}</p><form method=\"post\" action=\"{}\">{inputs}<noscript><button type=\"submit\">Continue</button></noscript></form><script>{FORM_POST_SCRIPT}</script></body></html>",
        escape_html(redirect_uri)
    );
    no_store(html_page(StatusCode::OK, body, FORM_POST_CSP.clone()))
}

/// The form_post page's policy: its one script, allowed by hash, may post only
/// to a loopback listener. Computed once.
static FORM_POST_CSP: std::sync::LazyLock<http::HeaderValue> = std::sync::LazyLock::new(|| {
    let hash = openssl::hash::hash(
        openssl::hash::MessageDigest::sha256(),
        FORM_POST_SCRIPT.as_bytes(),
    )
    .map(|d| base64::engine::general_purpose::STANDARD.encode(d))
    .unwrap_or_default();
    http::HeaderValue::from_str(&format!(
        "default-src 'none'; script-src 'sha256-{hash}'; form-action http://localhost:* http://127.0.0.1:* http://[::1]:*; frame-ancestors 'none'"
    ))
    .unwrap_or_else(|_| http::HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"))
});
