//! The Keyhaven Portal at `https://portal.{domain}[:port]/`: a web console
//! for people. It is a client of Keyhaven's public APIs acting as the
//! signed-in user, with no API or privilege of its own:
//!
//! - sign-in is the tenant's own authorization-code + PKCE flow, as the
//!   Azure Portal's client (`PORTAL_APP_ID`), returning only to the portal's
//!   callback; the portal keeps the refresh token server-side and gives the
//!   browser a `__Host-` session cookie (`Secure; HttpOnly; SameSite=Lax`);
//! - the browser's calls go to `/api/{arm,vault/{name},graph}/…`, which the
//!   portal forwards through the same request pipeline as any client's
//!   (authentication, authorization, firewall with the browser's own
//!   address, throttling, audit), with the user's access token for that
//!   plane; a state-changing call must carry the session's CSRF token;
//! - every page is the same static shell with a strict Content-Security-
//!   Policy: scripts and styles from this host only, no inline script,
//!   nothing framed.

mod proxy;
pub mod session;

use std::sync::Arc;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, Method, StatusCode};

use crate::state::AppState;
use session::{random_token, Session, Tokens};

/// The cookie carrying the session id (host-only, `Secure`, path `/`).
pub const COOKIE: &str = "__Host-kh_portal";
/// The cookie binding a sign-in in progress to the browser that began it.
const SIGNIN_COOKIE: &str = "__Host-kh_portal_signin";

const INDEX: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// Handles one request to the portal host.
pub(super) async fn handle(state: &AppState, planes: Arc<super::Planes>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let mut resp = match (method, path.as_str()) {
        (Method::GET, "/static/app.js") => asset(APP_JS, "text/javascript; charset=utf-8"),
        (Method::GET, "/static/app.css") => asset(APP_CSS, "text/css; charset=utf-8"),
        (Method::GET, "/signin") => sign_in(state, &req),
        (Method::GET, "/signin/callback") => callback(state, planes, req).await,
        (Method::POST, "/signout") => sign_out(state, req).await,
        (Method::GET, "/api/session") => session_info(state, &req),
        (_, p) if p.starts_with("/api/") => proxy::forward(state, planes, req).await,
        (Method::GET, "/") => shell(),
        (Method::GET, p) if p.starts_with("/ui/") => shell(),
        _ => plain(StatusCode::NOT_FOUND, "Not found."),
    };
    secure_headers(state, &mut resp);
    resp.extensions_mut().insert(crate::audit::AuditNote {
        operation: Some("Portal".into()),
        resource_id: Some(format!("/tenants/{}", state.tokens.tenant_id())),
        ..Default::default()
    });
    resp
}

/// The headers of every portal answer: a strict CSP and no framing, no
/// sniffing, no referrer.
fn secure_headers(state: &AppState, resp: &mut Response) {
    let csp = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; form-action 'self' {}; frame-ancestors 'none'; base-uri 'none'",
        state.endpoints.authority_host()
    );
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000"),
    );
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

fn shell() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        INDEX,
    )
        .into_response()
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}

fn redirect(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The value of cookie `name`, if the request has it.
fn named_cookie(req: &Request, name: &str) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name).then(|| v.to_owned())
        })
}

/// The session cookie's value, if the request has one.
fn cookie_of(req: &Request) -> Option<String> {
    named_cookie(req, COOKIE)
}

/// The browser's address as the planes see it (the peer, or what a trusted
/// proxy says in `X-Forwarded-For`).
fn source_of(state: &AppState, req: &Request) -> Option<std::net::IpAddr> {
    let peer = req.extensions().get::<super::PeerAddr>()?.0.ip();
    let forwarded = req
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok());
    Some(keyhaven_core::network::client_address(
        peer,
        forwarded,
        &state.trusted_proxies,
    ))
}

/// Whether a state-changing request comes from the portal's own pages: a
/// browser says where a request came from in `Sec-Fetch-Site`; a cross-site
/// one is refused whatever else it carries.
fn same_origin(req: &Request) -> bool {
    req.headers()
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v == "same-origin" || v == "none")
}

fn set_cookie(r: &mut Response, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// Forgets a session and revokes its refresh token family at the issuer, so
/// a copy of the token is worthless too.
async fn end_session(state: &AppState, session: &Session) {
    let tokens = session.tokens.lock().await;
    let now = state.clock.now();
    if let Ok(g) = state.tokens.validate_refresh(
        tokens.refresh.expose(),
        keyhaven_identity::directory::PORTAL_APP_ID,
        now,
    ) {
        if let Err(e) = keyhaven_identity::refresh::revoke(&state.store, &g.id.family).await {
            tracing::warn!(error = %e, "a portal session's refresh tokens could not be revoked");
        }
    }
}

/// The signed-in session of a request.
fn session_of(state: &AppState, req: &Request) -> Option<Arc<Session>> {
    state.portal.get(&cookie_of(req)?, state.clock.now())
}

/// A path of the portal to come back to (`/` unless a safe `/ui/…` path).
fn return_path(req: &Request) -> String {
    req.uri()
        .query()
        .and_then(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "return")
                .map(|(_, v)| v.into_owned())
        })
        .filter(|p| {
            p.starts_with("/ui/")
                && p.len() < 512
                && !p.contains("//")
                && !p.contains('\\')
                && p.chars().all(|c| c.is_ascii_graphic())
        })
        .unwrap_or_else(|| "/".to_owned())
}

/// `GET /signin`: starts the authorization-code + PKCE flow, bound to this
/// browser by a short-lived cookie.
fn sign_in(state: &AppState, req: &Request) -> Response {
    let (st, verifier, browser) = (random_token(), random_token(), random_token());
    let now = state.clock.now();
    if state
        .sign_in_limiter
        .admit(source_of(state, req), now)
        .is_err()
    {
        return plain(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many sign-ins from your address. Try again shortly.",
        );
    }
    if st.is_empty()
        || verifier.is_empty()
        || browser.is_empty()
        || !state
            .portal
            .begin(&st, &browser, verifier.clone(), return_path(req), now)
    {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "Too many sign-ins are in progress. Try again shortly.",
        );
    }
    let e = &state.endpoints;
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("client_id", keyhaven_identity::directory::PORTAL_APP_ID)
        .append_pair("response_type", "code")
        .append_pair("redirect_uri", &e.portal_callback())
        .append_pair("response_mode", "query")
        .append_pair(
            "scope",
            &format!(
                "{}/.default openid profile offline_access",
                e.management_url()
            ),
        )
        .append_pair("state", &st)
        .append_pair("code_challenge", &session::challenge(&verifier))
        .append_pair("code_challenge_method", "S256")
        .finish();
    let mut r = redirect(&format!(
        "{}/{}/oauth2/v2.0/authorize?{query}",
        e.authority_host(),
        state.tokens.tenant_id()
    ));
    set_cookie(
        &mut r,
        &format!("{SIGNIN_COOKIE}={browser}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=600"),
    );
    r
}

/// `GET /signin/callback?code&state`: redeems the code at the token
/// endpoint (through the pipeline, as any client would) and opens a session.
async fn callback(state: &AppState, planes: Arc<super::Planes>, req: Request) -> Response {
    let params: std::collections::HashMap<String, String> = req
        .uri()
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let now = state.clock.now();
    let browser = named_cookie(&req, SIGNIN_COOKIE).unwrap_or_default();
    let Some(pending) = params
        .get("state")
        .and_then(|s| state.portal.finish(s, &browser, now))
    else {
        return plain(
            StatusCode::BAD_REQUEST,
            "This sign-in is unknown or has expired. Start again from the portal.",
        );
    };
    let Some(code) = params.get("code") else {
        return plain(StatusCode::BAD_REQUEST, "The sign-in did not complete.");
    };
    let ctx = proxy::Ctx::of(state, planes, &req);
    let e = &state.endpoints;
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "authorization_code")
        .append_pair("client_id", keyhaven_identity::directory::PORTAL_APP_ID)
        .append_pair("code", code)
        .append_pair("redirect_uri", &e.portal_callback())
        .append_pair("code_verifier", pending.verifier.expose())
        .append_pair(
            "scope",
            &format!(
                "{}/.default openid profile offline_access",
                e.management_url()
            ),
        )
        .finish();
    let Some(granted) = proxy::token_request(&ctx, form).await else {
        return plain(StatusCode::UNAUTHORIZED, "The sign-in was refused.");
    };
    let claims = granted.id_claims();
    let scope = format!("{}/.default", e.management_url());
    let session = Session {
        oid: claims.get("oid").cloned().unwrap_or_default(),
        name: claims.get("name").cloned().unwrap_or_default(),
        upn: claims
            .get("preferred_username")
            .cloned()
            .unwrap_or_default(),
        csrf: random_token(),
        expires: now + session::SESSION_SECS,
        tokens: tokio::sync::Mutex::new(Tokens {
            refresh: granted.refresh,
            access: [(scope, (granted.access, granted.expires))].into(),
        }),
    };
    // A session this browser already had ends: one browser, one session.
    if let Some(old) = cookie_of(&req).and_then(|c| state.portal.close(&c)) {
        end_session(state, &old).await;
    }
    let Some(cookie) = state.portal.open(session, now) else {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "Too many sessions are open. Try again later.",
        );
    };
    let mut r = redirect(&pending.return_to);
    set_cookie(
        &mut r,
        &format!(
            "{COOKIE}={cookie}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={}",
            session::SESSION_SECS
        ),
    );
    set_cookie(
        &mut r,
        &format!("{SIGNIN_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0"),
    );
    r
}

/// `POST /signout` (a form with the CSRF token, from the portal's own page):
/// ends the session and revokes its refresh tokens. Anything else changes
/// nothing, the cookie included.
async fn sign_out(state: &AppState, req: Request) -> Response {
    let cookie = cookie_of(&req);
    let session = session_of(state, &req);
    let cross_site = !same_origin(&req);
    let body = axum::body::to_bytes(req.into_body(), 4096)
        .await
        .unwrap_or_default();
    let token = url::form_urlencoded::parse(&body)
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let (Some(c), Some(s)) = (cookie, session) else {
        return redirect("/");
    };
    if cross_site || !s.csrf_ok(&token) {
        return plain(
            StatusCode::FORBIDDEN,
            "The request lacks the portal's CSRF token.",
        );
    }
    state.portal.close(&c);
    end_session(state, &s).await;
    let mut r = redirect("/");
    set_cookie(
        &mut r,
        &format!("{COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0"),
    );
    r
}

/// `GET /api/session`: who is signed in, and the CSRF token for this page.
fn session_info(state: &AppState, req: &Request) -> Response {
    let body = match session_of(state, req) {
        Some(s) => serde_json::json!({
            "signedIn": true,
            "name": s.name,
            "upn": s.upn,
            "oid": s.oid,
            "csrf": s.csrf,
            "tenantId": state.tokens.tenant_id(),
            "vaultSuffix": state.endpoints.vault_host_suffix(),
            // Graph's base, for the `@odata.id` of a member reference.
            "graphUrl": state.endpoints.graph_url(),
            // The address the vault firewalls see for this browser.
            // IPv4 only: a vault's IP rules are IPv4 (an IPv4-mapped address
            // is shown as the IPv4 address it is).
            "clientIp": source_of(state, req)
                .map(|ip| ip.to_canonical())
                .filter(std::net::IpAddr::is_ipv4)
                .map(|ip| ip.to_string()),
        }),
        None => serde_json::json!({"signedIn": false}),
    };
    let mut r = axum::Json(body).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
