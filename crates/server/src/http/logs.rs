//! The Log Analytics query plane (`loganalytics.{domain}`, Azure's
//! `api.loganalytics.io`): `POST|GET /v1/workspaces/{customerId}/query` and
//! the resource-context `…/v1/{resource id}/query`, as `LogsQueryClient`
//! and `az rest` call them. The ARM-routed form
//! (`…/workspaces/{name}/api/query`) lands in [`run_query`] too. A query
//! reads one workspace's records (or one resource's) and cannot write: the
//! store runs it read-only, with a timeout and a cap on the result.

use axum::extract::Request;
use axum::response::Response;
use http::{Method, StatusCode};
use keyhaven_core::logs::LogQuery;
use keyhaven_core::Principal;
use keyhaven_wire::logs as wire;
use serde_json::Value;

use super::extract::{bearer_token, query_map, read_body};
use super::response::json;
use crate::state::AppState;

/// What a query may read.
#[derive(Debug, Clone)]
pub enum Target {
    /// A workspace, by customer id.
    Workspace(String),
    /// A resource's records in every workspace (resource context).
    Resource(String),
}

/// The action a workspace query needs on the workspace (Reader and Log
/// Analytics Reader hold it through `*/read`).
pub const QUERY_ACTION: &str = "Microsoft.OperationalInsights/workspaces/query/read";
/// The action a resource-context query needs on the resource.
pub const RESOURCE_QUERY_ACTION: &str = "Microsoft.Insights/logs/read";
/// Queries running at once on a node; past it, 429 `ThrottledError`.
const QUERIES_AT_ONCE: usize = 4;
static QUERY_SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(QUERIES_AT_ONCE);
/// How long a query runs unless `Prefer: wait=N` says otherwise.
const DEFAULT_WAIT_S: u64 = 30;
/// The longest `Prefer: wait` honoured.
const MAX_WAIT_S: u64 = 120;

fn correlation() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn failure(status: StatusCode, code: &str, message: &str) -> Response {
    json(
        status,
        &wire::error_body(code, message, &correlation(), None),
    )
}

fn note(resource: Option<String>, caller: Option<&Principal>) -> crate::audit::AuditNote {
    crate::audit::AuditNote {
        operation: Some("LogsQuery".into()),
        resource_id: resource,
        identity: caller.map(super::claims_of),
        ..Default::default()
    }
}

/// Serves a request for the query plane.
pub async fn handle(state: &AppState, req: Request) -> Response {
    let mut resp = serve(state, req).await;
    if resp.extensions().get::<crate::audit::AuditNote>().is_none() {
        resp.extensions_mut().insert(note(None, None));
    }
    resp
}

async fn serve(state: &AppState, req: Request) -> Response {
    let now = state.clock.now();
    let caller = match bearer_token(req.headers())
        .map(|t| state.tokens.validate(t, &state.endpoints.logs_url(), now))
    {
        Some(Ok(p)) => p,
        _ => {
            return failure(
                StatusCode::UNAUTHORIZED,
                "AuthorizationRequiredError",
                "Valid authentication was not provided",
            )
        }
    };
    let path = req.uri().path().to_owned();
    let target = match path
        .strip_prefix("/v1/workspaces/")
        .and_then(|p| p.strip_suffix("/query"))
    {
        Some(id) if !id.is_empty() && !id.contains('/') => Target::Workspace(id.to_owned()),
        _ => match path
            .strip_prefix("/v1/")
            .and_then(|p| p.strip_suffix("/query"))
        {
            Some(rid)
                if rid.to_ascii_lowercase().starts_with("subscriptions/")
                    && rid.split('/').count() >= 8 =>
            {
                Target::Resource(format!("/{rid}"))
            }
            _ => {
                return failure(
                    StatusCode::NOT_FOUND,
                    "PathNotFoundError",
                    "The requested path does not exist",
                )
            }
        },
    };
    let prefer = prefer_of(&req);
    let body = match *req.method() {
        Method::POST => match read_body(req.into_body()).await {
            Ok(b) => match serde_json::from_slice::<wire::QueryRequest>(&b) {
                Ok(q) => q,
                Err(_) => {
                    return failure(
                        StatusCode::BAD_REQUEST,
                        "BadArgumentError",
                        "The request body is not a valid query: {\"query\": \"…\", \"timespan\": \"…\"}.",
                    )
                }
            },
            Err(_) => {
                return failure(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "BadArgumentError",
                    "The request body is too large.",
                )
            }
        },
        Method::GET => request_in_uri(&req),
        _ => {
            return failure(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "The requested method is not allowed on this resource.",
            )
        }
    };
    run_query(state, &caller, target, body, prefer.as_deref()).await
}

/// The request's `Prefer` header, as sent.
pub fn prefer_of(req: &Request) -> Option<String> {
    req.headers()
        .get("prefer")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// A GET's query: `?query=…&timespan=…`.
pub fn request_in_uri(req: &Request) -> wire::QueryRequest {
    let q = query_map(req.uri().query());
    wire::QueryRequest {
        query: q.get("query").cloned(),
        timespan: q.get("timespan").cloned(),
        workspaces: None,
    }
}

/// The seconds `Prefer: wait=N` asks for, bounded.
fn wait_seconds(prefer: Option<&str>) -> u64 {
    prefer
        .into_iter()
        .flat_map(|p| p.split(','))
        .filter_map(|p| p.trim().strip_prefix("wait="))
        .filter_map(|n| n.trim().parse::<u64>().ok())
        .next()
        .unwrap_or(DEFAULT_WAIT_S)
        .clamp(1, MAX_WAIT_S)
}

/// Authorizes and runs a query for `caller`; the answer is the API's.
pub async fn run_query(
    state: &AppState,
    caller: &Principal,
    target: Target,
    body: wire::QueryRequest,
    prefer: Option<&str>,
) -> Response {
    let now_us = state.clock.now_us();
    let earliest = |days: i64| now_us.saturating_sub(days.saturating_mul(86_400_000_000));
    // Who may read what: the workspace's ARM id, or the resource's. A
    // resource's own records are never where its log queries are recorded
    // (a refused query included: a caller names any resource it likes).
    let (workspaces, resource, scope, action, note_scope) = match &target {
        Target::Workspace(customer_id) => {
            match crate::http::arm::workspaces::by_customer_id(state, customer_id).await {
                Ok(Some((rec, stored, days))) => (
                    vec![(stored, earliest(days))],
                    None,
                    rec.id.clone(),
                    QUERY_ACTION,
                    Some(rec.id),
                ),
                Ok(None) => {
                    return with_note(
                        failure(
                            StatusCode::NOT_FOUND,
                            "WorkspaceNotFoundError",
                            &format!(
                                "The workspace {} could not be found",
                                customer_id.chars().take(64).collect::<String>()
                            ),
                        ),
                        None,
                        caller,
                    )
                }
                Err(_) => {
                    return failure(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "ServiceUnavailable",
                        "The workspace could not be read. Retry later.",
                    )
                }
            }
        }
        Target::Resource(id) => {
            // Every live workspace, each within its own retention: the
            // records of deleted workspaces are read by no one.
            match crate::http::arm::workspaces::all_live(state).await {
                Ok(live) => (
                    live.into_iter()
                        .map(|(c, days)| (c, earliest(days)))
                        .collect(),
                    Some(id.clone()),
                    id.clone(),
                    RESOURCE_QUERY_ACTION,
                    None,
                ),
                Err(_) => {
                    return failure(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "ServiceUnavailable",
                        "The workspaces could not be read. Retry later.",
                    )
                }
            }
        }
    };
    if state
        .authz
        .require_action(caller, &scope, action)
        .await
        .is_err()
    {
        // The same answer whether or not the caller may know it exists.
        return with_note(
            failure(
                StatusCode::FORBIDDEN,
                "InsufficientAccessError",
                "The provided credentials have insufficient access to perform the requested operation",
            ),
            note_scope,
            caller,
        );
    }
    let bad = |message: &str| {
        with_note(
            failure(StatusCode::BAD_REQUEST, "BadArgumentError", message),
            note_scope.clone(),
            caller,
        )
    };
    if body.workspaces.as_ref().is_some_and(|w| !w.is_empty()) {
        return bad(
            "Cross-workspace queries (additional workspaces) are not supported by Keyhaven.",
        );
    }
    let Some(text) = body.query.filter(|q| !q.trim().is_empty()) else {
        return bad("The query is missing: the body needs {\"query\": \"…\"}.");
    };
    if text.len() > 100_000 {
        return bad("The query is longer than 100,000 characters.");
    }
    let (from_us, to_us) = match body.timespan.as_deref() {
        None => (i64::MIN, i64::MAX),
        Some(t) => match wire::parse_timespan(t, now_us) {
            Some(span) => span,
            None => {
                return bad(&format!(
                    "The timespan '{}' is not an ISO 8601 duration or interval.",
                    t.chars().take(100).collect::<String>()
                ))
            }
        },
    };
    // With no workspace there are no records; the query still compiles
    // (its errors and its columns are the answer's) against one that
    // matches nothing.
    let workspaces = if workspaces.is_empty() {
        vec![(String::new(), i64::MAX)]
    } else {
        workspaces
    };
    // The vaults whose metrics go to the workspaces in scope.
    let metric_vaults = match crate::http::arm::diagnostics::metric_routes(state).await {
        Ok(routes) => routes
            .into_iter()
            .filter(|(vault, customer)| {
                workspaces
                    .iter()
                    .any(|(w, _)| w.eq_ignore_ascii_case(customer))
                    && resource
                        .as_deref()
                        .is_none_or(|r| r.eq_ignore_ascii_case(vault))
            })
            .collect::<Vec<_>>(),
        Err(_) => {
            return failure(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "The diagnostic settings could not be read. Retry later.",
            )
        }
    };
    // One vault once (two settings may send its metrics to two workspaces
    // in scope).
    let mut metric_vaults = metric_vaults;
    metric_vaults.sort();
    metric_vaults.dedup_by(|a, b| a.0 == b.0);
    // A few queries at a time per node: they share the store's connections
    // with every request.
    let Ok(_slot) = QUERY_SLOTS.try_acquire() else {
        let mut r = with_note(
            failure(
                StatusCode::TOO_MANY_REQUESTS,
                "ThrottledError",
                "Too many queries are running. Retry in a few seconds.",
            ),
            note_scope,
            caller,
        );
        r.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("2"),
        );
        return r;
    };
    let q = LogQuery {
        text,
        workspaces,
        from_us,
        to_us,
        now_us,
        resource,
        metric_vaults,
        timeout_ms: wait_seconds(prefer) * 1000,
    };
    let resp = match state.store.query_logs(&q).await {
        Ok(table) => json(StatusCode::OK, &wire::result_body(&table)),
        Err(e) => {
            if let keyhaven_core::logs::LogQueryError::Store(se) = &e {
                tracing::warn!(error = %se, "log query failed in the store");
            }
            let (status, body) = wire::query_error(&e, &correlation());
            json(
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                &body,
            )
        }
    };
    with_note(resp, note_scope, caller)
}

fn with_note(mut resp: Response, resource: Option<String>, caller: &Principal) -> Response {
    resp.extensions_mut().insert(note(resource, Some(caller)));
    resp
}

/// The `Value` of a request body, for the ARM-routed form.
pub fn request_of(v: Value) -> Option<wire::QueryRequest> {
    serde_json::from_value(v).ok()
}
