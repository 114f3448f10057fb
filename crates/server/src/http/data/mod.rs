//! The data plane's pipeline. Order matters and is fixed here: authenticate
//! first (the SDK's first request carries neither token nor body and must get
//! the 401 challenge), then api-version, then the vault; only then does the
//! request reach a handler, carrying a `DataCtx`. Every 401 leaving the data
//! plane carries the challenge. The handlers live beside it, one file per
//! object kind (`secrets`, `keys`, `certificates`) and the access-control
//! API (`access_control`).

pub mod access_control;
pub mod certificates;
pub mod keys;
pub mod pool;
pub mod pool_rbac;
pub mod secrets;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::uri::PathAndQuery;
use axum::response::{IntoResponse, Response};
use axum::Router;
use http::{HeaderValue, StatusCode, Uri};
use keyhaven_core::object::page_size;
use keyhaven_core::{
    Authorized, Error, ObjectKind, ObjectName, Operation, Principal, VaultName, VaultRecord,
    Version,
};
use keyhaven_wire::paging::decode_skiptoken;
use keyhaven_wire::{ApiVersion, VaultUrls};
use tower::ServiceExt as _;

use super::extract::{bearer_token, query_map};
use super::response::ApiError;
use crate::state::AppState;

/// What the pipeline established for a data-plane request.
pub struct DataCtx {
    /// The authenticated caller.
    pub principal: Principal,
    /// The vault addressed by the Host header.
    pub vault: Arc<VaultRecord>,
    /// The request's api-version.
    pub api_version: ApiVersion,
    /// Id and link builder for this vault.
    pub urls: VaultUrls,
    /// Query parameters.
    pub query: HashMap<String, String>,
    /// The operation the handler asked authorization for (for the audit log).
    pub operation: std::sync::Mutex<Option<Operation>>,
    /// A managed HSM operation outside the object operations (security
    /// domain, local RBAC, settings), by its audit name.
    pub pool_operation: std::sync::Mutex<Option<&'static str>>,
}

/// Which kind of container a data-plane host names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    /// `{name}.vault.{domain}`.
    Vault,
    /// `{name}.managedhsm.{domain}`.
    Pool,
}

impl DataCtx {
    /// Step 7: asks the authorizer for `operation` on `object`.
    pub async fn authorize(
        &self,
        state: &AppState,
        operation: Operation,
        object: Option<&str>,
    ) -> Result<Authorized, ApiError> {
        if let Ok(mut op) = self.operation.lock() {
            *op = Some(operation);
        }
        let class = if operation.collection() == "keys" {
            crate::throttle::Class::Keys
        } else {
            crate::throttle::Class::Secrets
        };
        state
            .throttle
            .admit(&self.vault.id, class, state.clock.now())
            .map_err(|retry_after| ApiError::Throttled { retry_after })?;
        Ok(Authorized::check(
            &*state.authz,
            &self.principal,
            &self.vault,
            operation,
            object,
        )
        .await?)
    }

    /// Step 7 for a managed HSM's own operations: data action `action` at
    /// local `scope`, recorded in the audit log as `audit_name`.
    pub async fn authorize_pool(
        &self,
        state: &AppState,
        scope: &str,
        action: &str,
        audit_name: &'static str,
    ) -> Result<(), ApiError> {
        if let Ok(mut op) = self.pool_operation.lock() {
            *op = Some(audit_name);
        }
        state
            .throttle
            .admit(
                &self.vault.id,
                crate::throttle::Class::Keys,
                state.clock.now(),
            )
            .map_err(|retry_after| ApiError::Throttled { retry_after })?;
        Ok(state
            .authz
            .require_pool(&self.principal, &self.vault, scope, action)
            .await?)
    }

    /// `maxresults` and `$skiptoken` of a listing: (cursor, page size, the
    /// page size again when the caller chose it).
    pub fn paging(&self) -> Result<(Option<String>, u32, Option<u32>), ApiError> {
        let explicit = match self.query.get("maxresults") {
            Some(m) => Some(m.parse::<i64>().map_err(|_| {
                Error::BadParameter("maxresults must be an integer between 1 and 25.".into())
            })?),
            None => None,
        };
        let limit = page_size(explicit)?;
        let cursor = self
            .query
            .get("$skiptoken")
            .map(|t| decode_skiptoken(t))
            .transpose()?;
        Ok((cursor, limit, explicit.map(|_| limit)))
    }
}

/// An object name from a path segment.
pub fn object_name(raw: &str) -> Result<ObjectName, ApiError> {
    Ok(raw.parse::<ObjectName>()?)
}

/// A version segment that is not 32 hex characters can match no version: the
/// object's not-found error, naming at most 64 characters of it.
pub fn object_version(kind: ObjectKind, name: &ObjectName, raw: &str) -> Result<Version, ApiError> {
    raw.parse::<Version>().map_err(|_| {
        Error::NotFound {
            kind,
            name: format!("{name}/{}", raw.chars().take(64).collect::<String>()),
        }
        .into()
    })
}

/// The data plane's routes (reached only through `handle`).
pub fn router(state: AppState) -> Router {
    secrets::routes()
        .merge(keys::routes())
        .merge(certificates::routes())
        .fallback(|| async {
            ApiError::not_found("The requested resource does not exist on the vault.")
        })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .with_state(state)
}

/// The data plane's routes of a managed HSM pool (reached only through
/// `handle`): keys, and the pool's own APIs.
pub fn pool_router(state: AppState) -> Router {
    keys::routes()
        .merge(pool::routes())
        .fallback(|| async {
            ApiError::not_found(
                "The requested resource does not exist on the managed HSM (a managed HSM holds keys only).",
            )
        })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .with_state(state)
}

/// Runs the pipeline for a request to vault or pool `vault` and dispatches it.
pub async fn handle(
    state: &AppState,
    router: Router,
    vault: String,
    container: Container,
    req: Request,
) -> Response {
    let path = req.uri().path().to_owned();
    let (resp, ctx) = match prepare(state, vault.clone(), container, req).await {
        Ok(req) => {
            let ctx = req.extensions().get::<Arc<DataCtx>>().cloned();
            let rbac = access_control::is_access_control(req.uri().path());
            let resp = match (&ctx, container, rbac) {
                (Some(ctx), Container::Pool, _)
                    if !ctx.vault.is_activated()
                        && !pool::allowed_before_activation(req.uri().path()) =>
                {
                    pool::not_activated(&ctx.vault).into_response()
                }
                (Some(ctx), Container::Pool, true) => pool_rbac::handle(state, ctx, req).await,
                (Some(ctx), Container::Vault, true) => {
                    access_control::handle(state, &ctx.principal, &ctx.vault, req).await
                }
                (None, _, true) => ApiError::from(Error::Integrity).into_response(),
                (_, _, false) => router.oneshot(req).await.unwrap_or_else(|e| match e {}),
            };
            (resp, ctx)
        }
        Err(e) => (e.into_response(), None),
    };
    let mut resp = with_challenge(state, container, resp);
    let note = match ctx {
        Some(ctx) => crate::audit::AuditNote {
            operation: ctx
                .pool_operation
                .lock()
                .ok()
                .and_then(|o| *o)
                .map(str::to_owned)
                .or_else(|| {
                    ctx.operation
                        .lock()
                        .ok()
                        .and_then(|o| *o)
                        .map(|o| o.name().to_owned())
                }),
            resource_id: Some(ctx.vault.resource_id()),
            object_id: Some(format!("{}{}", ctx.urls.base(), path.trim_end_matches('/'))),
            identity: Some(super::claims_of(&ctx.principal)),
            rbac: Some(ctx.vault.properties.rbac_authorization),
            access_policy_match: (!ctx.vault.properties.rbac_authorization)
                .then_some(resp.status().is_success()),
            properties: None,
        },
        // Refused before authentication (no token, firewall, bad token).
        None => crate::audit::AuditNote {
            operation: Some("VaultAccess".into()),
            resource_id: match vault.parse::<VaultName>() {
                Ok(n) => state
                    .vault(&n)
                    .await
                    .ok()
                    .flatten()
                    .map(|v| v.resource_id()),
                Err(_) => None,
            },
            ..Default::default()
        },
    };
    resp.extensions_mut().insert(note);
    resp
}

async fn prepare(
    state: &AppState,
    vault: String,
    container: Container,
    mut req: Request,
) -> Result<Request, ApiError> {
    // The order matters: no token → the 401 challenge; then the vault's
    // firewall, on the TCP peer's address, before the token is validated or
    // used for anything; then the token.
    let token = bearer(&req)?;
    let record = match vault.parse::<VaultName>() {
        Ok(name) => state.vault(&name).await?,
        Err(_) => None,
    }
    // A vault's name under the managedhsm host (or a pool's under the vault
    // host) names nothing.
    .filter(|r| r.is_managed_hsm() == (container == Container::Pool));
    let Some(record) = record else {
        validate(state, token, container)?;
        return Err(Error::VaultNotFound(vault).into());
    };
    let mut trusted = None;
    if let Some(peer) = req.extensions().get::<super::PeerAddr>() {
        let forwarded = req
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok());
        let at = keyhaven_core::network::Arrival {
            peer: keyhaven_core::network::client_address(
                peer.0.ip(),
                forwarded,
                &state.trusted_proxies,
            ),
            local: req.extensions().get::<super::LocalAddr>().map(|l| l.0.ip()),
        };
        let network = state.network().await?;
        let refused = |why: &str| {
            tracing::info!(vault = %record.name, client = %at.peer, reason = why, "refused by the vault's network rules");
            ApiError::from(Error::ForbiddenByFirewall {
                client: at.peer.to_string(),
                vault: record.name.to_string(),
            })
        };
        match keyhaven_core::network::decide(&record, at, &*network) {
            keyhaven_core::network::Verdict::Allow => {}
            keyhaven_core::network::Verdict::Deny(why) => return Err(refused(why)),
            keyhaven_core::network::Verdict::DenyUnlessTrusted(why) => {
                // Only here is the token looked at before the firewall has
                // admitted the caller: to see whether it is a trusted service.
                // An invalid token is simply not a trusted service: the
                // firewall's refusal stands.
                let Ok(p) = validate(state, token, container) else {
                    return Err(refused(why));
                };
                let is_trusted = p.app_id.as_deref().is_some_and(|a| {
                    state
                        .trusted_services
                        .iter()
                        .any(|t| t.eq_ignore_ascii_case(a))
                });
                if !is_trusted {
                    return Err(refused(why));
                }
                trusted = Some(p);
            }
        }
    }
    let principal = match trusted {
        Some(p) => p,
        None => validate(state, token, container)?,
    };
    let name = record.name.clone();
    let query = query_map(req.uri().query());
    let api_version = match query.get("api-version") {
        // A pool's job status URL is polled as given, without a version.
        None if container == Container::Pool && pool::is_job_status(req.uri().path()) => {
            ApiVersion::parse(Some("7.5"))?
        }
        v => ApiVersion::parse(v.map(String::as_str))?,
    };
    normalise_path(&mut req);
    let urls = VaultUrls::new(&match container {
        Container::Vault => state.endpoints.vault_url(name.as_str()),
        Container::Pool => state.endpoints.hsm_url(name.as_str()),
    });
    req.extensions_mut().insert(Arc::new(DataCtx {
        principal,
        vault: record,
        api_version,
        urls,
        query,
        operation: std::sync::Mutex::new(None),
        pool_operation: std::sync::Mutex::new(None),
    }));
    Ok(req)
}

/// The bearer token of a request (not yet validated).
fn bearer(req: &Request) -> Result<&str, ApiError> {
    Ok(bearer_token(req.headers()).ok_or_else(|| {
        Error::Unauthorized("AKV10000: Request is missing a Bearer or PoP token.".into())
    })?)
}

fn resource_of(state: &AppState, container: Container) -> String {
    match container {
        Container::Vault => state.endpoints.vault_resource(),
        Container::Pool => state.endpoints.hsm_resource(),
    }
}

fn validate(state: &AppState, token: &str, container: Container) -> Result<Principal, ApiError> {
    let audience = resource_of(state, container);
    Ok(state
        .tokens
        .validate(token, &audience, state.clock.now())
        .map_err(Error::from)?)
}

/// `/secrets/x/` means `/secrets/x`; `//` collapses. Keeps the query.
fn normalise_path(req: &mut Request) {
    let path = req.uri().path();
    if !path.ends_with('/') && !path.contains("//") {
        return;
    }
    let mut clean = String::with_capacity(path.len());
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        clean.push('/');
        clean.push_str(seg);
    }
    if clean.is_empty() {
        clean.push('/');
    }
    if let Some(q) = req.uri().query() {
        clean.push('?');
        clean.push_str(q);
    }
    let mut parts = req.uri().clone().into_parts();
    if let Ok(pq) = PathAndQuery::try_from(clean) {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
}

fn with_challenge(state: &AppState, container: Container, mut resp: Response) -> Response {
    if resp.status() == StatusCode::UNAUTHORIZED {
        // Azure: the authorization URI's path is exactly `/{tenant}` and the
        // resource is the parent of every vault host, port included.
        let challenge = format!(
            "Bearer authorization=\"{}/{}\", resource=\"{}\"",
            state.endpoints.authority_host(),
            state.tokens.tenant_id(),
            resource_of(state, container)
        );
        if let Ok(v) = HeaderValue::from_str(&challenge) {
            resp.headers_mut().insert(http::header::WWW_AUTHENTICATE, v);
        }
    }
    resp
}
