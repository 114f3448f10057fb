//! The portal's calls to Keyhaven's public APIs, made as the signed-in user:
//! each goes through the whole request pipeline with the browser's own
//! connection facts (its address, for network rules and audit), exactly as
//! if the browser had called that plane with the user's token.

use std::sync::Arc;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use http::{header, HeaderValue, Method, StatusCode};
use keyhaven_core::Sensitive;

use super::session::Session;
use crate::state::AppState;

/// Largest body the portal forwards (the pipeline's own limit).
const MAX_BODY: usize = super::super::MAX_BODY_BYTES;
/// Renew an access token this long before it expires.
const RENEW_BEFORE: i64 = 300;

/// What a forwarded call needs from the browser's request.
pub(super) struct Ctx {
    state: AppState,
    planes: Arc<super::super::Planes>,
    peer: Option<super::super::PeerAddr>,
    local: Option<super::super::LocalAddr>,
    tls: Option<crate::audit::TlsVersion>,
    /// What a reverse proxy said about the browser, passed on unchanged so
    /// the planes judge the browser's address exactly as for a direct call.
    forwarded_for: Option<String>,
}

impl Ctx {
    pub(super) fn of(state: &AppState, planes: Arc<super::super::Planes>, req: &Request) -> Self {
        let ext = req.extensions();
        Self {
            state: state.clone(),
            planes,
            peer: ext.get().copied(),
            local: ext.get().copied(),
            tls: ext.get().copied(),
            forwarded_for: req
                .headers()
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        }
    }

    /// Sends a request to `host` through the pipeline.
    async fn send(
        &self,
        method: Method,
        host: &str,
        path_and_query: &str,
        headers: &[(header::HeaderName, String)],
        body: Bytes,
    ) -> Response {
        let mut b = http::Request::builder()
            .method(method)
            .uri(path_and_query)
            .header(header::HOST, host);
        for (k, v) in headers {
            b = b.header(k, v);
        }
        if let Some(f) = &self.forwarded_for {
            b = b.header("x-forwarded-for", f);
        }
        let Ok(mut req) = b.body(axum::body::Body::from(body)) else {
            return StatusCode::BAD_REQUEST.into_response();
        };
        let ext = req.extensions_mut();
        if let Some(p) = self.peer {
            ext.insert(p);
        }
        if let Some(l) = self.local {
            ext.insert(l);
        }
        if let Some(t) = self.tls {
            ext.insert(t);
        }
        super::super::dispatch_boxed(self.state.clone(), Arc::clone(&self.planes), req).await
    }
}

/// Tokens from the token endpoint.
pub(super) struct Granted {
    pub(super) access: Sensitive<String>,
    pub(super) refresh: Sensitive<String>,
    pub(super) expires: i64,
    id_token: Option<String>,
}

impl Granted {
    /// The ID token's claims (strings only).
    pub(super) fn id_claims(&self) -> std::collections::HashMap<String, String> {
        self.id_token
            .as_deref()
            .and_then(|t| t.split('.').nth(1))
            .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v.as_object().cloned())
            .map(|m| {
                m.into_iter()
                    .filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_owned())))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Posts a token request (a form) to the tenant's token endpoint.
pub(super) async fn token_request(ctx: &Ctx, form: String) -> Option<Granted> {
    let st = &ctx.state;
    let host = st
        .endpoints
        .authority_host()
        .trim_start_matches("https://")
        .to_owned();
    let path = format!("/{}/oauth2/v2.0/token", st.tokens.tenant_id());
    let resp = ctx
        .send(
            Method::POST,
            &host,
            &path,
            &[(
                header::CONTENT_TYPE,
                "application/x-www-form-urlencoded".to_owned(),
            )],
            Bytes::from(form),
        )
        .await;
    if resp.status() != StatusCode::OK {
        return None;
    }
    let body = axum::body::to_bytes(resp.into_body(), 64 * 1024)
        .await
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
    let s = |k: &str| {
        v.get(k)
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    Some(Granted {
        access: Sensitive::new(s("access_token")?),
        refresh: Sensitive::new(s("refresh_token")?),
        expires: st.clock.now()
            + v.get("expires_in")
                .and_then(serde_json::Value::as_i64)
                .unwrap_or(3600),
        id_token: s("id_token"),
    })
}

/// An access token of the session for `scope`, refreshed when near expiry.
/// The refresh runs on its own task: refresh tokens rotate, so a browser
/// that goes away mid-refresh must not leave the session holding the
/// replaced token (whose reuse would revoke the whole family). A refresh the
/// issuer refuses ends the session.
async fn access_token(
    ctx: Arc<Ctx>,
    session: Arc<Session>,
    scope: String,
) -> Option<Sensitive<String>> {
    tokio::spawn(async move {
        let now = ctx.state.clock.now();
        let mut tokens = session.tokens.lock().await;
        if let Some((t, exp)) = tokens.access.get(&scope) {
            if *exp - RENEW_BEFORE > now {
                return Some(t.clone());
            }
        }
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "refresh_token")
            .append_pair("client_id", keyhaven_identity::directory::PORTAL_APP_ID)
            .append_pair("refresh_token", tokens.refresh.expose())
            .append_pair("scope", &format!("{scope} offline_access"))
            .finish();
        let Some(g) = token_request(&ctx, form).await else {
            drop(tokens);
            ctx.state.portal.close_session(&session);
            return None;
        };
        tokens.refresh = g.refresh;
        tokens.access.insert(scope, (g.access.clone(), g.expires));
        Some(g.access)
    })
    .await
    .ok()
    .flatten()
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

/// Where an `/api/…` path goes: (host, scope, path on that host).
fn target(st: &AppState, path: &str) -> Option<(String, String, String)> {
    let e = &st.endpoints;
    let host_of = |url: String| url.trim_start_matches("https://").to_owned();
    if let Some(rest) = path.strip_prefix("/api/arm/") {
        let url = e.management_url();
        return Some((
            host_of(url.clone()),
            format!("{url}/.default"),
            format!("/{rest}"),
        ));
    }
    if let Some(rest) = path.strip_prefix("/api/graph/") {
        let url = e.graph_url();
        return Some((
            host_of(url.clone()),
            format!("{url}/.default"),
            format!("/{rest}"),
        ));
    }
    let rest = path.strip_prefix("/api/vault/")?;
    let (vault, rest) = rest.split_once('/')?;
    let valid = !vault.is_empty()
        && vault.len() <= 24
        && vault.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    valid.then(|| {
        (
            format!("{vault}.{}", e.vault_host_suffix()),
            format!("{}/.default", e.vault_resource()),
            format!("/{rest}"),
        )
    })
}

/// `/api/{arm,graph}/…` and `/api/vault/{name}/…`: forwarded as the user.
pub(super) async fn forward(
    state: &AppState,
    planes: Arc<super::super::Planes>,
    req: Request,
) -> Response {
    let Some(session) = super::session_of(state, &req) else {
        return error(
            StatusCode::UNAUTHORIZED,
            "SessionExpired",
            "Sign in to the portal again.",
        );
    };
    let safe = matches!(*req.method(), Method::GET | Method::HEAD);
    let csrf = req
        .headers()
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !safe && (!super::same_origin(&req) || !session.csrf_ok(csrf)) {
        return error(
            StatusCode::FORBIDDEN,
            "CsrfTokenMissing",
            "The request lacks the portal's CSRF token.",
        );
    }
    let Some((host, scope, path)) = target(state, req.uri().path()) else {
        return error(StatusCode::NOT_FOUND, "NotFound", "No such portal API.");
    };
    let path_and_query = match req.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let ctx = Arc::new(Ctx::of(state, planes, &req));
    let method = req.method().clone();
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let Ok(body) = axum::body::to_bytes(req.into_body(), MAX_BODY).await else {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestTooLarge",
            "The request body is too large.",
        );
    };
    let Some(token) = access_token(Arc::clone(&ctx), session, scope).await else {
        return error(
            StatusCode::UNAUTHORIZED,
            "SessionExpired",
            "The portal could not get a token for you; sign in again.",
        );
    };
    let mut headers = vec![(header::AUTHORIZATION, format!("Bearer {}", token.expose()))];
    if let Some(ct) = content_type {
        headers.push((header::CONTENT_TYPE, ct));
    }
    let resp = ctx
        .send(method, &host, &path_and_query, &headers, body)
        .await;
    relay(resp)
}

/// The answer to the browser: status, content type, `Retry-After` and body
/// only (no challenge headers or cookies of the inner plane).
fn relay(resp: Response) -> Response {
    let status = resp.status();
    let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
    let retry_after = resp.headers().get(header::RETRY_AFTER).cloned();
    let mut out = Response::new(resp.into_body());
    *out.status_mut() = status;
    if let Some(ct) = content_type {
        out.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    if let Some(ra) = retry_after {
        out.headers_mut().insert(header::RETRY_AFTER, ra);
    }
    out.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    out
}
