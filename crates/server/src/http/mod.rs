//! The HTTP front: one entry point that every request passes through. It
//! resolves the plane from the Host header, runs that plane's pipeline
//! (authentication, api-version, vault lookup for the data plane), hands the
//! request to the plane's router, and stamps the common response headers.

pub mod arm;
pub mod data;
pub mod extract;
pub mod identity;
pub mod logs;
pub mod portal;
pub mod response;
pub mod route;

use std::sync::Arc;

use axum::extract::Request;
use axum::response::Response;
use axum::Router;
use http::{HeaderName, HeaderValue, Method, StatusCode};
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

/// Most state-changing requests running detached at once on a node (see
/// `dispatch`); beyond it they are answered 503.
const DETACHED: u32 = 1024;

/// The state-changing requests in flight, each holding a permit for as long
/// as it runs: they are bounded, and waited for at shutdown.
#[derive(Clone)]
pub struct InFlight(Arc<tokio::sync::Semaphore>);

impl InFlight {
    fn new() -> Self {
        Self(Arc::new(tokio::sync::Semaphore::new(DETACHED as usize)))
    }

    /// Waits, at most `limit`, until no state-changing request is running;
    /// false if some still were. Requests that would start meanwhile are
    /// answered 503 (the waiting shutdown is served first).
    pub async fn drained(&self, limit: std::time::Duration) -> bool {
        matches!(
            tokio::time::timeout(limit, self.0.acquire_many(DETACHED)).await,
            Ok(Ok(_))
        )
    }
}

struct Planes {
    arm: Router,
    data: Router,
    pool: Router,
    login: Router,
    graph: Router,
    in_flight: InFlight,
}

/// The whole application as one router.
pub fn app(state: AppState) -> Router {
    app_in_flight(state).0
}

/// [`app`], and the requests it has in flight (for a shutdown to wait for).
pub fn app_in_flight(state: AppState) -> (Router, InFlight) {
    let in_flight = InFlight::new();
    let planes = Arc::new(Planes {
        arm: arm::router(state.clone()),
        data: data::router(state.clone()),
        pool: data::pool_router(state.clone()),
        login: identity::router(state.clone()),
        graph: identity::graph::router(state.clone()),
        in_flight: in_flight.clone(),
    });
    let router = Router::new().fallback(move |req: Request| {
        let (state, planes) = (state.clone(), Arc::clone(&planes));
        async move { dispatch(state, planes, req).await }
    });
    (router, in_flight)
}

/// Whether a request may change state, judged before routing: anything but
/// GET, HEAD and OPTIONS, except the key operations that only use a key and
/// backups (`POST …/sign`, `…/verify`, `…/encrypt`, `…/decrypt`,
/// `…/wrapkey`, `…/unwrapkey`, `…/backup`), the hot path of a key vault:
/// the operations [`changes_state`] counts as read-only, told apart by their
/// path since the operation is not known yet. A request judged wrongly here
/// is only not detached.
fn may_change_state(req: &Request) -> bool {
    const USE_ONLY: [&str; 7] = [
        "sign",
        "verify",
        "encrypt",
        "decrypt",
        "wrapkey",
        "unwrapkey",
        "backup",
    ];
    match *req.method() {
        Method::GET | Method::HEAD | Method::OPTIONS => false,
        Method::POST => {
            let last = req.uri().path().trim_end_matches('/').rsplit('/').next();
            !last.is_some_and(|l| USE_ONLY.iter().any(|u| l.eq_ignore_ascii_case(u)))
        }
        _ => true,
    }
}

/// Runs a request through the pipeline. A request that may change state
/// runs to its end in a task of its own: should the client go away
/// mid-request (hyper drops a closed connection's handler future), a change
/// the store has committed, or is committing, still gets its audit record.
/// Such tasks are bounded ([`DETACHED`]; 503 beyond, so clients that send
/// and hang up cannot pile up work) and waited for at shutdown. Reads and
/// uses of keys stay on the caller's task: dropping them loses nothing (and
/// a task hand-off costs a signing request ~10% of its throughput). Requests
/// the server makes for the portal come here too.
async fn dispatch(state: AppState, planes: Arc<Planes>, req: Request) -> Response {
    if !may_change_state(&req) {
        return dispatch_here(state, planes, req).await;
    }
    let Ok(permit) = Arc::clone(&planes.in_flight.0).try_acquire_owned() else {
        return unavailable("The server is busy. Retry later.");
    };
    let run = async move {
        let _permit = permit;
        dispatch_here(state, planes, req).await
    };
    match tokio::spawn(run).await {
        Ok(resp) => resp,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => unavailable("The server is shutting down. Retry later."),
    }
}

/// The caller's claims as an audit record names them.
pub fn claims_of(p: &keyhaven_core::Principal) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    m.insert("oid".into(), p.object_id.clone().into());
    m.insert(
        "http://schemas.microsoft.com/identity/claims/objectidentifier".into(),
        p.object_id.clone().into(),
    );
    m.insert("tid".into(), p.tenant_id.clone().into());
    if let Some(a) = &p.app_id {
        m.insert("appid".into(), a.clone().into());
    }
    m.insert("idtyp".into(), p.kind.as_str().into());
    m
}

/// What the audit record needs from the request, taken before it is handled.
struct RequestFacts {
    started: std::time::Instant,
    /// The health probe (`GET /healthz` exactly), the one request not audited.
    health: bool,
    plane: &'static str,
    vault: String,
    method: String,
    uri: String,
    caller: Option<String>,
    correlation: Option<String>,
    api_version: Option<String>,
    tls: Option<&'static str>,
    user_agent: Option<String>,
}

impl RequestFacts {
    fn of(req: &Request, endpoints: &crate::config::Endpoints) -> Self {
        let (plane, vault) = match route::plane(req, endpoints) {
            Plane::Data(v) | Plane::ManagedHsm(v) => ("data", v),
            Plane::Login => ("login", String::new()),
            Plane::Management => ("management", String::new()),
            Plane::Graph => ("graph", String::new()),
            Plane::Portal => ("portal", String::new()),
            Plane::Logs => ("logs", String::new()),
            Plane::Unknown(_) => ("unknown", String::new()),
        };
        let header = |n: &str| {
            req.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.chars().take(256).collect::<String>())
        };
        let host = header("host").unwrap_or_default();
        Self {
            started: std::time::Instant::now(),
            health: is_health(req),
            plane,
            vault: vault.chars().take(64).collect(),
            method: req.method().to_string(),
            uri: format!("https://{host}{}", req.uri().path()),
            caller: req
                .extensions()
                .get::<PeerAddr>()
                .map(|p| p.0.ip().to_string()),
            correlation: header("x-ms-client-request-id"),
            api_version: req.uri().query().and_then(|q| {
                q.split('&')
                    .find_map(|kv| kv.strip_prefix("api-version="))
                    .map(|v| v.chars().take(32).collect())
            }),
            tls: req
                .extensions()
                .get::<crate::audit::TlsVersion>()
                .map(|t| t.0),
            user_agent: header("user-agent"),
        }
    }
}

/// Writes the request's record; false if the chained log refused it.
async fn audit(
    state: &AppState,
    facts: RequestFacts,
    status: http::StatusCode,
    note: crate::audit::AuditNote,
) -> bool {
    let elapsed = facts.started.elapsed();
    state.metrics.observe(
        facts.plane,
        &facts.vault,
        note.operation.as_deref().unwrap_or("Unknown"),
        status.as_u16(),
        elapsed.as_secs_f64(),
    );
    if facts.plane == "data" {
        if let Some(vault_id) = note.resource_id.as_deref() {
            state.metrics.observe_minute(
                vault_id,
                state.clock.now(),
                note.operation.as_deref().unwrap_or("Unknown"),
                status.as_u16(),
                i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX),
            );
        }
    }
    let Some(log) = state.audit.as_ref() else {
        return true;
    };
    let now_text = keyhaven_wire::oauth::iso8601(state.clock.now());
    let rec = crate::audit::AuditRecord::new(
        &now_text,
        &facts.method,
        &facts.uri,
        status.as_u16(),
        elapsed.as_millis(),
        facts.caller,
        facts.correlation,
        facts.api_version,
        facts.tls,
        facts.user_agent,
        &note,
    );
    // Canonical bytes straight from the record (no JSON value built); the
    // optional destinations below take a value only when configured.
    let body = match serde_json::to_vec(&rec) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "audit record could not be serialized");
            return false;
        }
    };
    let time = state.clock.now();
    let sinks = match note.resource_id.as_deref() {
        Some(vault) => match state.audit_sinks().await {
            Ok(all) => all.get(&vault.to_ascii_lowercase()).cloned(),
            Err(e) => {
                tracing::warn!(error = %e, "diagnostic settings could not be read");
                None
            }
        },
        None => None,
    };
    if let Some(sinks) = sinks {
        let record = serde_json::to_value(&rec).unwrap_or_default();
        let line = record.to_string();
        if sinks.stdout {
            println!("{line}");
        }
        if !sinks.http.is_empty() {
            let shipper = state.shipper.get_or_init(|| {
                crate::audit_ship::Shipper::start(Arc::clone(&state.audit_http_allow))
            });
            for url in &sinks.http {
                shipper.ship(url, &line);
            }
        }
        let needs_queue = !sinks.workspaces.is_empty() || sinks.store;
        if needs_queue {
            let ingest = state
                .log_ingest
                .get_or_init(|| crate::log_ingest::Ingester::start(Arc::clone(&state.store)));
            let time_us = state.clock.now_us();
            for ws in &sinks.workspaces {
                ingest.push(crate::log_ingest::Item::Log(Box::new(
                    crate::log_ingest::log_record(&record, time_us, ws),
                )));
            }
            if sinks.store {
                let text = |k: &str| {
                    record
                        .get(k)
                        .and_then(serde_json::Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                };
                ingest.push(crate::log_ingest::Item::Audit(keyhaven_core::AuditRow {
                    vault: note
                        .resource_id
                        .clone()
                        .unwrap_or_default()
                        .to_ascii_lowercase(),
                    time,
                    operation: text("operationName"),
                    caller: text("callerIpAddress"),
                    result: text("resultType"),
                    record: line,
                }));
            }
        }
    }
    let durable = changes_state(&facts.method, status, note.operation.as_deref());
    match log.append_bytes_async(body, durable).await {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(error = %e, "audit record could not be written");
            false
        }
    }
}

/// Whether a request may have changed state, so its audit record must be
/// on disk before it is answered. Reads, refusals (4xx) and the key
/// operations that only use a key (and backups, which only read) change
/// nothing, except sign-ins and the pool exchange key (below). Records of
/// requests that changed nothing are written before the answer and flushed
/// to disk within [`crate::audit::SYNC_EVERY`] by the log's sync thread.
fn changes_state(method: &str, status: StatusCode, operation: Option<&str>) -> bool {
    const READ_ONLY: [&str; 9] = [
        "KeySign",
        "KeyVerify",
        "KeyEncrypt",
        "KeyDecrypt",
        "KeyWrap",
        "KeyUnwrap",
        "KeyBackup",
        "SecretBackup",
        "CertificateBackup",
    ];
    // Sign-ins (the login plane's POSTs) change state whatever their answer
    // (a replayed refresh token revokes its whole family and is answered
    // 400), and the first read of a pool's exchange key creates it.
    match operation {
        Some("Authentication") if method == "POST" => return true,
        Some("SecurityDomainTransferKey") => return true,
        _ => {}
    }
    !(matches!(method, "GET" | "HEAD" | "OPTIONS")
        || status.is_client_error()
        || operation.is_some_and(|o| READ_ONLY.contains(&o)))
}

/// 503 while no audit destination can record requests (fail closed). The
/// request's body may be unread, so the connection cannot carry another
/// request: `Connection: close` tells the client so, instead of letting it
/// send the next request on a connection the server is closing.
fn audit_unavailable() -> Response {
    unavailable("The request was refused: the audit log cannot record it. Retry later.")
}

/// 503 `ServiceUnavailable`, closing the connection.
fn unavailable(message: &str) -> Response {
    let mut resp = response::json(
        http::StatusCode::SERVICE_UNAVAILABLE,
        &keyhaven_wire::ErrorBody::new("ServiceUnavailable", message.to_owned()),
    );
    resp.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    resp
}

/// `dispatch` for a request the server makes on a user's behalf (the
/// portal's calls): the same pipeline, boxed for the recursion.
fn dispatch_boxed(
    state: AppState,
    planes: Arc<Planes>,
    req: Request,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response> + Send>> {
    Box::pin(dispatch(state, planes, req))
}

async fn dispatch_here(state: AppState, planes: Arc<Planes>, req: Request) -> Response {
    let facts = RequestFacts::of(&req, &state.endpoints);
    if state.audit_fail_closed && !facts.health {
        if let Some(log) = state.audit.as_ref() {
            if !log.healthy() {
                let time = keyhaven_wire::oauth::iso8601(state.clock.now());
                if let Err(e) = log.recover(&time) {
                    tracing::error!(error = %e, "audit log still cannot be written; request refused");
                    return audit_unavailable();
                }
                tracing::warn!("audit log writable again");
            }
        }
    }
    let resp = handle_request(&state, planes, req).await;
    // Health probes are not audited; every other request is.
    if !facts.health {
        let note = resp
            .extensions()
            .get::<crate::audit::AuditNote>()
            .cloned()
            .unwrap_or_default();
        let recorded = audit(&state, facts, resp.status(), note).await;
        if !recorded && state.audit_fail_closed {
            // The operation ran but its record is lost: the caller is told
            // the request failed, and further requests are refused until the
            // log can be written again.
            return audit_unavailable();
        }
    }
    resp
}

fn title_case(method: &str) -> String {
    let lower = method.to_ascii_lowercase();
    let mut c = lower.chars();
    c.next()
        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
        .unwrap_or_default()
}

/// Hands a request whose envelope passed to its plane.
async fn route_plane(state: &AppState, planes: Arc<Planes>, req: Request) -> Response {
    match route::plane(&req, &state.endpoints) {
        Plane::Data(vault) => {
            data::handle(
                state,
                planes.data.clone(),
                vault,
                data::Container::Vault,
                req,
            )
            .await
        }
        Plane::ManagedHsm(pool) => {
            data::handle(state, planes.pool.clone(), pool, data::Container::Pool, req).await
        }
        Plane::Login => {
            let mut r = planes
                .login
                .clone()
                .oneshot(req)
                .await
                .unwrap_or_else(|e| match e {});
            // The token endpoint notes who signed in and what Conditional
            // Access decided; the operation and resource are the plane's.
            let note = r
                .extensions()
                .get::<crate::audit::AuditNote>()
                .cloned()
                .unwrap_or_default();
            r.extensions_mut().insert(crate::audit::AuditNote {
                operation: Some("Authentication".into()),
                resource_id: Some(format!("/tenants/{}", state.tokens.tenant_id())),
                ..note
            });
            r
        }
        Plane::Graph => {
            let op = format!("Graph{}", title_case(req.method().as_str()));
            let mut r = identity::graph::handle(state, planes.graph.clone(), req).await;
            r.extensions_mut().insert(crate::audit::AuditNote {
                operation: Some(op),
                resource_id: Some(format!("/tenants/{}", state.tokens.tenant_id())),
                ..Default::default()
            });
            r
        }
        Plane::Management => {
            let op = format!("Management{}", title_case(req.method().as_str()));
            let mut r = arm::handle(state, planes.arm.clone(), req).await;
            if r.extensions().get::<crate::audit::AuditNote>().is_none() {
                r.extensions_mut().insert(crate::audit::AuditNote {
                    operation: Some(op),
                    ..Default::default()
                });
            }
            r
        }
        Plane::Portal => portal::handle(state, planes, req).await,
        Plane::Logs => logs::handle(state, req).await,
        Plane::Unknown(host) => ApiError::not_found(format!(
            "No Keyhaven endpoint is served at host '{}'.",
            host.chars().take(100).collect::<String>()
        ))
        .into_response_with(),
    }
}

/// `GET /healthz` exactly (any host): the health probe.
fn is_health(req: &Request) -> bool {
    req.method() == Method::GET && req.uri().path() == "/healthz"
}

/// Largest request header section (request line and headers), as Azure's
/// front ends allow; hyper's own limits sit above it so this check answers.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Most request headers.
pub const MAX_HEADERS: usize = 100;
/// How long a request body may take to arrive.
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Checks a request's envelope before any plane sees it, and reads its body
/// whole. A body the `Content-Length` declares too large is refused at once
/// (413), not after it arrives. One `Host`, agreeing with an absolute-form
/// target, is required (400): otherwise which vault or plane a request is
/// for would depend on which header a component reads. A header section
/// over 16 KB or more than 100 headers is 431, a target over 16 KB 414,
/// each with Azure's error body. Reading the body here means an early
/// answer (401, 404 for an unknown subscription) never leaves part of a
/// request unread, which would close a connection the client still uses.
async fn envelope(req: Request) -> Result<Request, response::ApiError> {
    let error = |status: StatusCode, code: &'static str, message: &str| response::ApiError::Http {
        status,
        code,
        message: message.to_owned(),
    };
    let target = req.uri().to_string().len();
    if target > MAX_HEADER_BYTES {
        return Err(error(
            StatusCode::URI_TOO_LONG,
            "RequestUriTooLong",
            "The request target is longer than 16 KB.",
        ));
    }
    let head: usize = target
        + req
            .headers()
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum::<usize>();
    if head > MAX_HEADER_BYTES || req.headers().len() > MAX_HEADERS {
        return Err(error(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "RequestHeaderFieldsTooLarge",
            "The request's headers exceed 16 KB or 100 fields.",
        ));
    }
    let hosts: Vec<&http::HeaderValue> = req.headers().get_all(http::header::HOST).iter().collect();
    let authority = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_ascii_lowercase());
    match (hosts.as_slice(), &authority) {
        ([], None) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "The request has no Host header.",
            ))
        }
        ([_, _, ..], _) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "The request has more than one Host header.",
            ))
        }
        ([host], Some(target)) if !host.to_str().is_ok_and(|h| h.eq_ignore_ascii_case(target)) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "The request target's host does not match the Host header.",
            ))
        }
        _ => {}
    }
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(response::ApiError::too_large());
    }
    let (parts, body) = req.into_parts();
    // A body that trickles in is given up on: the buffer is held before
    // the caller is authenticated.
    let bytes = tokio::time::timeout(BODY_TIMEOUT, extract::read_body(body))
        .await
        .map_err(|_| {
            error(
                StatusCode::REQUEST_TIMEOUT,
                "RequestTimeout",
                "The request body did not arrive in time.",
            )
        })??;
    Ok(Request::from_parts(parts, axum::body::Body::from(bytes)))
}

async fn handle_request(state: &AppState, planes: Arc<Planes>, req: Request) -> Response {
    let state = state.clone();
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
    let mut resp = if is_health(&req) {
        response::health()
    } else {
        match envelope(req).await {
            Err(e) => e.into_response_with(),
            Ok(req) => route_plane(&state, planes, req).await,
        }
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        h.insert(HeaderName::from_static("x-ms-request-id"), v);
    }
    if let Some(v) = client_request_id {
        h.insert(HeaderName::from_static("x-ms-client-request-id"), v);
    }
    // A handler may ask for more (the sign-in pages: no-store).
    h.entry(http::header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-cache"));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, path: &str) -> Request {
        Request::builder()
            .method(method)
            .uri(path)
            .body(axum::body::Body::empty())
            .unwrap()
    }

    /// Writes run detached (to their end and their audit record); reads and
    /// uses of keys stay inline.
    #[test]
    fn writes_are_detached_and_key_uses_are_not() {
        for (m, p) in [
            ("PUT", "/secrets/s"),
            ("PATCH", "/keys/k/0123"),
            ("DELETE", "/certificates/c"),
            ("POST", "/keys/k/create"),
            ("POST", "/keys/sign/rotate"),
            ("POST", "/keys/k/0123/release"),
            ("POST", "/tenant/oauth2/v2.0/token"),
            ("POST", "/secrets/restore"),
        ] {
            assert!(may_change_state(&req(m, p)), "{m} {p}");
        }
        for (m, p) in [
            ("GET", "/secrets/s"),
            ("HEAD", "/"),
            ("POST", "/keys/k/0123/sign"),
            ("POST", "/keys/k//Decrypt"),
            ("POST", "/keys/k/0123/wrapkey/"),
            ("POST", "/secrets/s/backup"),
        ] {
            assert!(!may_change_state(&req(m, p)), "{m} {p}");
        }
    }

    /// Review of issue 22: the audit skip matched any URI ending in
    /// `/healthz`, so reading a secret named `healthz` went unaudited.
    #[test]
    fn only_the_health_probe_itself_goes_unaudited() {
        assert!(is_health(&req("GET", "/healthz")));
        assert!(!is_health(&req("GET", "/secrets/healthz")));
        assert!(!is_health(&req("GET", "/secrets/healthz?api-version=7.5")));
        assert!(!is_health(&req("DELETE", "/healthz")));
    }

    #[test]
    fn records_of_requests_that_change_state_wait_for_the_disk() {
        let ok = StatusCode::OK;
        assert!(changes_state("PUT", ok, Some("SecretSet")));
        assert!(changes_state("DELETE", ok, Some("SecretDelete")));
        assert!(changes_state("POST", ok, Some("KeyCreate")));
        assert!(changes_state("POST", ok, Some("Authentication")));
        assert!(changes_state(
            "POST",
            StatusCode::INTERNAL_SERVER_ERROR,
            None
        ));
        assert!(!changes_state("GET", ok, Some("SecretGet")));
        assert!(!changes_state("POST", ok, Some("KeySign")));
        assert!(!changes_state("POST", ok, Some("KeyBackup")));
        assert!(!changes_state(
            "PUT",
            StatusCode::FORBIDDEN,
            Some("SecretSet")
        ));
    }
}
