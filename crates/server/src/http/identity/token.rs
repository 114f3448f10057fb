//! The OAuth 2.0 token endpoints (v2 and v1) and their grants: client
//! credentials with a secret, a certificate assertion or a federated token;
//! resource-owner password; device code; authorization code with PKCE; and
//! refresh tokens (rotated, reuse revokes the family).

use axum::body::Body;
use axum::extract::{FromRequestParts, Path, State};
use axum::response::Response;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::request::Parts;
use http::StatusCode;
use keyhaven_core::{PrincipalKind, Sensitive};
use keyhaven_identity::authcode::RedeemError;
use keyhaven_identity::device::Poll;
use keyhaven_identity::refresh::{self, RefreshId};
use keyhaven_identity::token::{Extra, TOKEN_LIFETIME_SECS};
use keyhaven_identity::SignInFailure;
use keyhaven_wire::oauth::{TokenRequest, TokenResponse, TokenResponseV1, UserRealm};

use std::net::IpAddr;

use crate::http::extract::read_body;
use crate::http::response::ok;
use crate::http::PeerAddr;
use crate::state::AppState;

use super::{audience_for, is_our_tenant, oauth_error, oauth_error_with, tenant_not_found};

pub(super) const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
pub(super) const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// Which token endpoint a request came to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Endpoint {
    /// `/oauth2/v2.0/token`: `scope=…/.default`.
    V2,
    /// `/oauth2/token`: `resource=…`.
    V1,
}

/// The caller's address for sign-in limits: the TCP peer, or what a trusted
/// reverse proxy (`--trusted-proxy`) says in `X-Forwarded-For`, as the data
/// plane's network rules read it, so clients behind a proxy are not all one
/// source.
pub(super) struct Source(pub(super) Option<IpAddr>);

impl FromRequestParts<AppState> for Source {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, Self::Rejection> {
        let Some(peer) = parts.extensions.get::<PeerAddr>().map(|p| p.0.ip()) else {
            return Ok(Source(None));
        };
        let forwarded = parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok());
        Ok(Source(Some(keyhaven_core::network::client_address(
            peer,
            forwarded,
            &st.trusted_proxies,
        ))))
    }
}

pub(super) async fn token(
    State(st): State<AppState>,
    Path(tenant): Path<String>,
    Source(source): Source,
    body: Body,
) -> Response {
    issue(&st, &tenant, source, body, Endpoint::V2).await
}

pub(super) async fn token_v1(
    State(st): State<AppState>,
    Path(tenant): Path<String>,
    Source(source): Source,
    body: Body,
) -> Response {
    issue(&st, &tenant, source, body, Endpoint::V1).await
}

pub(super) async fn user_realm(State(st): State<AppState>, Path(user): Path<String>) -> Response {
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

pub(super) fn sign_in_error(st: &AppState, f: SignInFailure, client_id: &str) -> Response {
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

pub(super) fn bad_request(st: &AppState, error: &'static str, code: u32, text: &str) -> Response {
    oauth_error(st, StatusCode::BAD_REQUEST, error, code, text)
}

/// The token endpoint's work for every grant, in a fixed order: the
/// request, the per-source limit, a device or authorization code's approved
/// user, the audience, the subject's lockout, then the grant's own sign-in,
/// the failure count, and the tokens. Each step answers with its error
/// response (`Err`) or hands on.
pub(super) async fn issue(
    st: &AppState,
    tenant: &str,
    source: Option<IpAddr>,
    body: Body,
    endpoint: Endpoint,
) -> Response {
    match issue_steps(st, tenant, source, body, endpoint).await {
        Ok(r) | Err(r) => r,
    }
}

/// A parsed token request with its credentials wrapped.
struct Request {
    form: TokenRequest,
    client_id: String,
    client_secret: Option<Sensitive<String>>,
    password: Option<Sensitive<String>>,
}

/// A user a device code or an authorization code already signed in, with
/// the scope (and nonce) of the request that began it.
struct Approved {
    who: keyhaven_identity::SignedIn,
    scope: String,
    nonce: Option<String>,
}

async fn issue_steps(
    st: &AppState,
    tenant: &str,
    source: Option<IpAddr>,
    body: Body,
    endpoint: Endpoint,
) -> Result<Response, Response> {
    if !is_our_tenant(st, tenant) {
        return Err(tenant_not_found(st, tenant));
    }
    let Request {
        form,
        client_id,
        client_secret,
        password,
    } = parse_request(st, body).await?;
    let now = st.clock.now();
    if let Err(wait) = st.sign_in_limiter.admit(source, now) {
        return Err(too_many(st, wait));
    }
    let grant = form.grant_type.clone().unwrap_or_default();
    let grant = grant.as_str();
    let approved = approved_user(st, grant, &form, &client_id, now)?;
    let requested = match (&approved, endpoint) {
        (Some(a), _) => Some(a.scope.clone()),
        (None, Endpoint::V2) => form.scope.clone(),
        (None, Endpoint::V1) => form
            .resource
            .as_deref()
            .map(|r| format!("{}/.default", r.trim_end_matches('/'))),
    };
    let Some(audience) = requested.as_deref().and_then(|s| audience_for(st, s)) else {
        return Err(bad_request(
            st,
            "invalid_scope",
            1002012,
            "The provided value for scope is not valid. Client credential flows must have one scope value with /.default suffixed to a resource known to this tenant.",
        ));
    };
    // Brute force: user grants are counted and locked by the user (its
    // user name), confidential clients by client id. Public clients share
    // one id among all their users (the Azure CLI's), so a client-credentials
    // request for one fails at once and counts against no one.
    if grant == "client_credentials"
        && matches!(st.directory.is_public_client(&client_id).await, Ok(true))
    {
        return Err(sign_in_error(
            st,
            SignInFailure::NotPublicClient,
            &client_id,
        ));
    }
    let subject = match (grant, form.username.as_deref(), &approved) {
        ("password", Some(u), _) => Some(u.to_owned()),
        ("client_credentials", _, _) => Some(client_id.clone()),
        (_, _, Some(a)) => Some(user_subject(&a.who)),
        _ => None,
    };
    // Only grants that check a guessable credential count failures, and
    // only they are held to a source's quota of new subjects.
    let counted = matches!(grant, "password" | "client_credentials");
    if subject
        .as_deref()
        .is_some_and(|s| st.lockout.is_locked(s, source, now, counted))
    {
        return Err(locked(st, grant));
    }
    // The refresh token this response carries: the next of the presented
    // token's family (rotation), or the first of a new one.
    let mut refresh_next: Option<RefreshId> = None;
    if grant == DEVICE_CODE_GRANT {
        refresh_next = spend_device_code(st, &form, &client_id, endpoint).await?;
    }
    let nonce = approved.as_ref().and_then(|a| a.nonce.clone());
    let client = Client {
        tenant,
        client_id: &client_id,
        client_secret,
        password,
        source,
        endpoint,
        now,
    };
    let (signed_in, azpacr, next) = sign_in(st, grant, &form, client, approved).await?;
    // A refresh token rotates only once the new tokens will be issued: a
    // refusal below leaves the presented token current.
    let mut rotate_from = None;
    if let Some((from, n)) = next {
        refresh_next = Some(n);
        rotate_from = from;
    }
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
            return Err(sign_in_error(st, f, &client_id));
        }
    };
    // How the user authenticated: a password now, or what the session
    // being continued (refresh, or a code a sign-in page issued) says.
    if grant == "password" {
        who.session = keyhaven_identity::token::Session {
            amr: vec!["pwd".into()],
            auth_time: now,
        };
    }
    // A code from a sign-in page is that sign-in, redeemed moments later
    // (codes live minutes and are spent once): its frequency counts from now.
    if matches!(grant, DEVICE_CODE_GRANT | "authorization_code") {
        who.session.auth_time = now;
    }
    let note = sign_in_note(&who);
    let outcome = match crate::sign_in::evaluate(st, &who, &audience, &client_id, source, now).await
    {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(error = %e, "conditional access could not be evaluated");
            return Err(sign_in_error(st, SignInFailure::Unavailable, &client_id));
        }
    };
    let note = crate::audit::AuditNote {
        properties: Some(crate::sign_in::audit_properties(&outcome)),
        ..note
    };
    if let Some(refused) =
        conditional_access_refusal(st, &outcome.decision, &who, &audience, grant).await
    {
        return Err(with_note(refused, note));
    }
    if let (Some(from), Some(next)) = (rotate_from, refresh_next.as_ref()) {
        match refresh::rotate(&st.store, &from, next, now).await {
            Ok(refresh::Rotation::Rotated) => {}
            Ok(refresh::Rotation::Superseded) => return Err(bad_request(st, "invalid_grant", 70043, "The refresh token was replaced by a newer one moments ago; use the newest token.")),
            Ok(refresh::Rotation::Reused) => return Err(bad_request(st, "invalid_grant", 70043, "The refresh token was already used. The sign-in session it belongs to is revoked; sign in again.")),
            Err(_) => return Err(sign_in_error(st, SignInFailure::Unavailable, &client_id)),
        }
    }
    let grant = Granted {
        who,
        client_id,
        audience,
        requested,
        azpacr,
        nonce,
        refresh_next,
    };
    respond(st, grant, endpoint, now)
        .await
        .map(|r| with_note(r, note))
}

fn with_note(mut r: Response, note: crate::audit::AuditNote) -> Response {
    r.extensions_mut().insert(note);
    r
}

/// Who signed in, for the sign-in's audit record.
fn sign_in_note(who: &keyhaven_identity::SignedIn) -> crate::audit::AuditNote {
    let mut claims = serde_json::Map::new();
    claims.insert("oid".into(), who.principal.object_id.clone().into());
    claims.insert("tid".into(), who.principal.tenant_id.clone().into());
    if let Some(a) = &who.principal.app_id {
        claims.insert("appid".into(), a.clone().into());
    }
    if let Some(u) = &who.upn {
        claims.insert("upn".into(), u.clone().into());
    }
    crate::audit::AuditNote {
        identity: Some(claims),
        ..Default::default()
    }
}

/// The error for a sign-in Conditional Access refuses, as Entra words it:
/// 53003 blocked (with the blocking policies as a claims challenge), 50079
/// when a second factor is required and the user has none registered, 50076
/// when the user has one but this grant cannot ask for it, 70044 when the
/// session is older than a sign-in frequency allows. `None`: allowed.
pub(super) async fn conditional_access_refusal(
    st: &AppState,
    decision: &keyhaven_identity::conditional_access::Decision,
    who: &keyhaven_identity::SignedIn,
    audience: &str,
    grant: &str,
) -> Option<Response> {
    use keyhaven_identity::conditional_access::Decision;
    // A password sign-in could not have been asked; a continued session
    // must go back to an interactive sign-in.
    let error = if grant == "password" {
        "invalid_grant"
    } else {
        "interaction_required"
    };
    let app = crate::sign_in::resource_app(st, audience);
    match decision {
        Decision::Allow => None,
        Decision::Block(ids) => Some(oauth_error_with(
            st,
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            53003,
            "Access has been blocked by Conditional Access policies. The access policy does not allow token issuance.",
            Some("message_only"),
            Some(serde_json::json!({"access_token": {"capolids": {"essential": true, "values": ids}}}).to_string()),
        )),
        Decision::Reauthenticate(_) => Some(oauth_error_with(
            st,
            StatusCode::BAD_REQUEST,
            "interaction_required",
            70044,
            "The session has expired or is invalid due to sign-in frequency checks by conditional access.",
            Some("basic_action"),
            None,
        )),
        Decision::RequireMfa(_) => {
            let registered = crate::sign_in::has_method(st, &who.principal.object_id)
                .await
                .unwrap_or(true);
            Some(if registered {
                oauth_error_with(
                    st,
                    StatusCode::BAD_REQUEST,
                    error,
                    50076,
                    &format!("Due to a configuration change made by your administrator, or because you moved to a new location, you must use multi-factor authentication to access '{app}'."),
                    Some("basic_action"),
                    None,
                )
            } else {
                oauth_error_with(
                    st,
                    StatusCode::BAD_REQUEST,
                    error,
                    50079,
                    &format!("Due to a configuration change made by your administrator, or because you moved to a new location, you must enroll in multi-factor authentication to access '{app}'."),
                    Some("basic_action"),
                    None,
                )
            })
        }
    }
}

/// Who is asking and with what, as `sign_in` needs it.
struct Client<'a> {
    tenant: &'a str,
    client_id: &'a str,
    client_secret: Option<Sensitive<String>>,
    password: Option<Sensitive<String>>,
    source: Option<IpAddr>,
    endpoint: Endpoint,
    now: i64,
}

/// The grant's own sign-in: the signed-in subject or why not, the client
/// authentication class (`azpacr`), and the refresh token a rotated grant
/// carries on to.
async fn sign_in(
    st: &AppState,
    grant: &str,
    form: &TokenRequest,
    c: Client<'_>,
    approved: Option<Approved>,
) -> Result<
    (
        Result<keyhaven_identity::SignedIn, SignInFailure>,
        &'static str,
        Option<(Option<RefreshId>, RefreshId)>,
    ),
    Response,
> {
    let signed_in = match grant {
        "client_credentials" => {
            let (result, acr) =
                client_credentials(st, c.tenant, c.client_id, c.client_secret, form, c.source)
                    .await?;
            return Ok((result, acr, None));
        }
        "password" => {
            let (Some(username), Some(password)) = (form.username.clone(), c.password) else {
                return Err(bad_request(st, "invalid_request", 900144, "The request body must contain the following parameters: 'username' and 'password'."));
            };
            st.directory
                .sign_in_with_password(c.client_id, &username, password)
                .await
        }
        "refresh_token" => {
            let (result, rotation) =
                refresh_grant(st, form, c.client_id, c.source, c.endpoint, c.now).await?;
            return Ok((result, "0", rotation.map(|(from, next)| (Some(from), next))));
        }
        DEVICE_CODE_GRANT | "authorization_code" => {
            approved.map(|a| a.who).ok_or(SignInFailure::Unavailable)
        }
        _ => {
            return Err(bad_request(
                st,
                "unsupported_grant_type",
                70003,
                "The app requested an unsupported grant type.",
            ));
        }
    };
    Ok((signed_in, "0", None))
}

/// Reads and parses the form; the credentials it carries are wrapped at once.
async fn parse_request(st: &AppState, body: Body) -> Result<Request, Response> {
    let Ok(bytes) = read_body(body).await else {
        return Err(bad_request(
            st,
            "invalid_request",
            900144,
            "The request body is too large.",
        ));
    };
    let Ok(mut form) = serde_urlencoded::from_bytes::<TokenRequest>(&bytes) else {
        return Err(bad_request(
            st,
            "invalid_request",
            900144,
            "The request body must be application/x-www-form-urlencoded.",
        ));
    };
    let client_secret = form.client_secret.take().map(Sensitive::new);
    let password = form.password.take().map(Sensitive::new);
    let Some(client_id) = form.client_id.clone() else {
        return Err(bad_request(
            st,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        ));
    };
    Ok(Request {
        form,
        client_id,
        client_secret,
        password,
    })
}

/// The user a device code (polled, not yet spent: a locked user must not
/// spend it) or an authorization code (redeemed) carries; `None` for other
/// grants.
#[allow(clippy::result_large_err)] // the Err is the response, returned at once
fn approved_user(
    st: &AppState,
    grant: &str,
    form: &TokenRequest,
    client_id: &str,
    now: i64,
) -> Result<Option<Approved>, Response> {
    match grant {
        DEVICE_CODE_GRANT => {
            let Some(code) = form.device_code.as_deref() else {
                return Err(bad_request(
                    st,
                    "invalid_request",
                    900144,
                    "The request body must contain the following parameter: 'device_code'.",
                ));
            };
            match st.device_codes.poll(code, client_id, now) {
                Poll::Approved(who, scope) => Ok(Some(Approved {
                    who: *who,
                    scope,
                    nonce: None,
                })),
                Poll::Pending => Err(bad_request(
                    st,
                    "authorization_pending",
                    70016,
                    "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
                )),
                Poll::Expired => Err(bad_request(st, "expired_token", 70020, "The provided value for the input parameter 'device_code' is not valid. This device code has expired.")),
                Poll::Unknown => Err(bad_request(
                    st,
                    "invalid_grant",
                    70000,
                    "The provided value for the input parameter 'device_code' is not valid.",
                )),
            }
        }
        "authorization_code" => {
            let (Some(code), Some(redirect_uri), Some(verifier)) = (
                form.code.as_deref(),
                form.redirect_uri.as_deref(),
                form.code_verifier.as_deref(),
            ) else {
                return Err(bad_request(
                    st,
                    "invalid_request",
                    900144,
                    "The request body must contain the following parameters: 'code', 'redirect_uri' and 'code_verifier'.",
                ));
            };
            match st
                .auth_codes
                .redeem(code, client_id, redirect_uri, verifier, now)
            {
                Ok(r) => Ok(Some(Approved {
                    who: r.who,
                    scope: r.scope,
                    nonce: r.nonce,
                })),
                Err(e) => {
                    let (code, text) = match e {
                        RedeemError::Expired => (70008, "The provided authorization code or refresh token has expired."),
                        RedeemError::RedirectMismatch => (500117, "The reply URL specified in the request does not match the reply URL of the authorization request."),
                        RedeemError::VerifierMismatch => (501481, "The code_verifier does not match the code_challenge supplied in the authorization request for PKCE."),
                        RedeemError::Unknown => (9002313, "The provided authorization code is not valid: it is unknown, was issued to another client, or was already redeemed."),
                    };
                    Err(bad_request(st, "invalid_grant", code, text))
                }
            }
        }
        _ => Ok(None),
    }
}

/// Spends an approved device code, after everything that can fail for
/// want of the store (the refresh family of a v2 response); returns that
/// family.
async fn spend_device_code(
    st: &AppState,
    form: &TokenRequest,
    client_id: &str,
    endpoint: Endpoint,
) -> Result<Option<RefreshId>, Response> {
    let mut first = None;
    if endpoint == Endpoint::V2 {
        let family = RefreshId::new_family();
        if refresh::start(&st.store, &family).await.is_err() {
            return Err(sign_in_error(st, SignInFailure::Unavailable, client_id));
        }
        first = Some(family);
    }
    if !form
        .device_code
        .as_deref()
        .is_some_and(|c| st.device_codes.take(c))
    {
        return Err(bad_request(
            st,
            "invalid_grant",
            70000,
            "The provided value for the input parameter 'device_code' is not valid.",
        ));
    }
    Ok(first)
}

/// The client-credentials grant: a secret (`azpacr` 1), the client's own
/// signed assertion or a federated token (`azpacr` 2).
async fn client_credentials(
    st: &AppState,
    tenant: &str,
    client_id: &str,
    client_secret: Option<Sensitive<String>>,
    form: &TokenRequest,
    source: Option<IpAddr>,
) -> Result<
    (
        Result<keyhaven_identity::SignedIn, SignInFailure>,
        &'static str,
    ),
    Response,
> {
    Ok(match (client_secret, form.client_assertion.as_deref()) {
        (_, Some(assertion)) => {
            if form.client_assertion_type.as_deref() != Some(JWT_BEARER) {
                return Err(bad_request(st, "invalid_request", 50027, "The client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer."));
            }
            let assertion = assertion.trim();
            // The client signs its own assertion (iss = client id); anything
            // else is a token from an external issuer, to be federated.
            let result = if keyhaven_identity::federation::unverified_issuer(assertion).as_deref()
                == Some(client_id)
            {
                let base = format!("{}/{tenant}", st.tokens.authority());
                let audiences = [
                    format!("{base}/oauth2/v2.0/token"),
                    format!("{base}/oauth2/token"),
                ];
                st.directory
                    .sign_in_with_assertion(client_id, assertion, &audiences, source)
                    .await
            } else {
                st.directory
                    .sign_in_with_federated(client_id, assertion)
                    .await
            };
            (result, "2")
        }
        (Some(secret), None) => (
            st.directory.sign_in_with_secret(client_id, secret).await,
            "1",
        ),
        (None, None) => (Err(SignInFailure::NotPublicClient), "0"),
    })
}

/// The refresh-token grant: only the family's current token refreshes (the
/// v1 endpoint returns no new one, so there the token is checked and stays
/// current); a reused one revokes the family. Returns the sign-in, and the
/// presented token's id with the family's next: the rotation is made by the
/// caller once nothing can refuse the request any more.
async fn refresh_grant(
    st: &AppState,
    form: &TokenRequest,
    client_id: &str,
    source: Option<IpAddr>,
    endpoint: Endpoint,
    now: i64,
) -> Result<
    (
        Result<keyhaven_identity::SignedIn, SignInFailure>,
        Option<(RefreshId, RefreshId)>,
    ),
    Response,
> {
    let Some(rt) = form.refresh_token.as_deref() else {
        return Err(bad_request(
            st,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'refresh_token'.",
        ));
    };
    let Ok(g) = st.tokens.validate_refresh(rt, client_id, now) else {
        return Err(bad_request(st, "invalid_grant", 9002313, "Invalid request. The refresh token is malformed, expired or was not issued to this client."));
    };
    let mut session = g.session.clone();
    // A second factor stands only while an app confirmed by then is still
    // registered: an administrator's reset ends it for every session.
    if session.mfa() {
        let stands = match st.store.get_principal(&g.object_id).await {
            Ok(Some(p)) => keyhaven_identity::mfa::still_stands(&p, session.auth_time),
            Ok(None) => false,
            Err(_) => return Err(sign_in_error(st, SignInFailure::Unavailable, client_id)),
        };
        if !stands {
            session.amr.retain(|a| a != "mfa");
        }
    }
    let resumed = st
        .directory
        .resume(&g.object_id, &g.stamp)
        .await
        .map(|mut w| {
            w.session = session;
            w
        });
    let Ok(who) = &resumed else {
        return Ok((resumed, None));
    };
    if st.lockout.is_locked(&user_subject(who), source, now, false) {
        return Err(locked(st, "refresh_token"));
    }
    let next = match endpoint {
        Endpoint::V2 => g.id.next(),
        Endpoint::V1 => g.id.clone(),
    };
    Ok((resumed, Some((g.id, next))))
}

/// Who signed in and what their tokens say.
struct Granted<'a> {
    who: keyhaven_identity::SignedIn,
    client_id: String,
    audience: String,
    requested: Option<String>,
    azpacr: &'a str,
    nonce: Option<String>,
    refresh_next: Option<RefreshId>,
}

/// The token response: an access token, and for a user on v2 a refresh
/// token (the family's next, or the first of a new one), an ID token and
/// client info.
async fn respond(
    st: &AppState,
    g: Granted<'_>,
    endpoint: Endpoint,
    now: i64,
) -> Result<Response, Response> {
    let Granted {
        mut who,
        client_id,
        audience,
        requested,
        azpacr,
        nonce,
        refresh_next,
    } = g;
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
        amr: &who.session.amr,
    };
    let Ok(access_token) = st.tokens.mint_with(&who.principal, &extra, &audience, now) else {
        return Err(server_error(st));
    };
    if endpoint == Endpoint::V1 {
        return Ok(ok(&TokenResponseV1 {
            token_type: "Bearer",
            expires_in: TOKEN_LIFETIME_SECS.to_string(),
            expires_on: (now + TOKEN_LIFETIME_SECS).to_string(),
            not_before: now.to_string(),
            resource: audience,
            access_token,
        }));
    }
    let user = who.principal.kind == PrincipalKind::User;
    let (refresh_token, id_token, client_info) = if user {
        let family = match refresh_next {
            Some(next) => next,
            None => {
                let first = RefreshId::new_family();
                if refresh::start(&st.store, &first).await.is_err() {
                    return Err(sign_in_error(st, SignInFailure::Unavailable, &client_id));
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
                &who.session,
                now,
            ),
            st.tokens
                .mint_id_token(&who.principal, &extra, &client_id, nonce.as_deref(), now),
        ) else {
            return Err(server_error(st));
        };
        let info = format!(
            r#"{{"uid":"{}","utid":"{}"}}"#,
            who.principal.object_id, who.principal.tenant_id
        );
        (Some(rt), Some(idt), Some(URL_SAFE_NO_PAD.encode(info)))
    } else {
        (None, None, None)
    };
    Ok(ok(&TokenResponse {
        token_type: "Bearer",
        scope: requested,
        expires_in: TOKEN_LIFETIME_SECS,
        ext_expires_in: TOKEN_LIFETIME_SECS,
        access_token,
        refresh_token,
        id_token,
        client_info,
    }))
}

/// True for the failures that a guess can cause: a wrong secret or
/// password of a subject that has one. Unknown clients, bad assertions
/// (signed, not guessable) and outages count against no one, so junk
/// requests cannot lock a client out.
pub(super) fn guessed_wrong(f: SignInFailure) -> bool {
    matches!(f, SignInFailure::InvalidSecret | SignInFailure::BadPassword)
}

/// The lockout subject of a signed-in user: its user name, as the password
/// grant counts it, or its object id for a user without one.
pub(super) fn user_subject(who: &keyhaven_identity::SignedIn) -> String {
    who.upn
        .clone()
        .unwrap_or_else(|| who.principal.object_id.clone())
}

pub(super) fn locked(st: &AppState, grant: &str) -> Response {
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
pub(super) fn too_many(st: &AppState, wait_secs: i64) -> Response {
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

pub(super) fn server_error(st: &AppState) -> Response {
    oauth_error(
        st,
        StatusCode::INTERNAL_SERVER_ERROR,
        "server_error",
        50000,
        "The token could not be issued.",
    )
}
