//! The management plane at `management.{domain}`, ARM-shaped. So far it
//! serves user-assigned managed identities, workloads (the resources the
//! metadata endpoint identifies callers by) and signing-key rotation; vaults
//! and the rest of ARM come with the management-plane issue. Requests carry a
//! management-audience token; writes need a directory role until RBAC lands.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use axum::{Extension, Router};
use http::StatusCode;
use keyhaven_core::resource::ResourceRecord;
use keyhaven_core::Principal;
use keyhaven_identity::directory::DirectoryError;
use keyhaven_identity::managed::{ResourceName, UamiProps, WorkloadProps, WorkloadSpec};
use keyhaven_wire::arm::{
    ArmError, ArmErrorDetail, IdentityProperties, ManagedServiceIdentity, MasterKeyUsage,
    MasterKeyUse, PutIdentity, PutWorkload, RotatedKey, RotatedMasterKey, UserAssignedIdentity,
    UserAssignedRef, Workload, WorkloadProperties,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tower::ServiceExt as _;

use super::extract::{query_map, read_body};
use super::response::json;
use crate::state::AppState;

/// An ARM failure.
pub struct ArmFailure {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ArmFailure {
    /// A failure with status, ARM code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ArmFailure {
    fn into_response(self) -> Response {
        json(
            self.status,
            &ArmError {
                error: ArmErrorDetail {
                    code: self.code,
                    message: self.message,
                },
            },
        )
    }
}

type ArmResult = Result<Response, ArmFailure>;

/// Maps a domain error to ARM's shape.
pub fn domain_failure(e: keyhaven_core::Error) -> ArmFailure {
    use keyhaven_core::Error as E;
    match e {
        E::Forbidden { message, .. } => {
            ArmFailure::new(StatusCode::FORBIDDEN, "AuthorizationFailed", message)
        }
        E::BadParameter(m) => ArmFailure::new(StatusCode::BAD_REQUEST, "BadRequest", m),
        E::Conflict(m) => ArmFailure::new(StatusCode::CONFLICT, "Conflict", m),
        E::VaultNotFound(_) | E::NotFound { .. } | E::DeletedNotFound { .. } => {
            ArmFailure::new(StatusCode::NOT_FOUND, "ResourceNotFound", e.to_string())
        }
        E::Unavailable(m) => {
            tracing::warn!(error = %m, "management store failed");
            ArmFailure::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "The service is temporarily unavailable.",
            )
        }
        other => ArmFailure::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            other.to_string(),
        ),
    }
}

/// The authenticated caller of a management request.
pub struct Ctx {
    /// Who is calling.
    pub caller: Principal,
}

/// The caller, as handlers extract it.
pub type C = Extension<Arc<Ctx>>;

fn fail(ctx: &Ctx, action: &str, scope: &str, e: DirectoryError) -> ArmFailure {
    match e {
        DirectoryError::NotFound(_) => ArmFailure::new(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            format!("The Resource '{scope}' was not found."),
        ),
        DirectoryError::BadRequest(m) => ArmFailure::new(StatusCode::BAD_REQUEST, "BadRequest", m),
        DirectoryError::Conflict(m) => ArmFailure::new(StatusCode::CONFLICT, "Conflict", m),
        DirectoryError::Forbidden => ArmFailure::new(
            StatusCode::FORBIDDEN,
            "AuthorizationFailed",
            format!(
                "The client '{0}' with object id '{0}' does not have authorization to perform action '{action}' over scope '{scope}' or the scope is invalid.",
                ctx.caller.object_id
            ),
        ),
        DirectoryError::Store(err) => {
            tracing::warn!(error = %err, "management store failed");
            ArmFailure::new(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", "The service is temporarily unavailable.")
        }
        DirectoryError::Credential(_) => ArmFailure::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError", "Internal error."),
    }
}

/// The management plane's router (reached only through `handle`).
pub fn router(state: AppState) -> Router {
    const RG: &str = "/subscriptions/{sub}/resourceGroups/{rg}/providers";
    const KV: &str = "/subscriptions/{sub}/providers/Microsoft.KeyVault";
    Router::new()
        .route(
            "/providers/Keyhaven.Identity/rotateSigningKey",
            post(rotate_signing_key),
        )
        .route(
            "/providers/Keyhaven.Security/rotateMasterKey",
            post(rotate_master_key),
        )
        .route(
            "/providers/Keyhaven.Security/checkIntegrity",
            post(check_integrity),
        )
        .route(
            "/providers/Keyhaven.Security/masterKeyUsage",
            post(master_key_usage),
        )
        .route(
            &format!("{RG}/Microsoft.ManagedIdentity/userAssignedIdentities/{{name}}"),
            put(put_identity).get(get_identity).delete(delete_identity),
        )
        .route(
            &format!("{RG}/Keyhaven.Compute/workloads/{{name}}"),
            put(put_workload).get(get_workload).delete(delete_workload),
        )
        .route(
            &format!("{RG}/Microsoft.KeyVault/vaults/{{name}}"),
            axum::routing::get(super::arm_vault::get_vault)
                .patch(super::arm_vault::patch_vault)
                .put(super::arm_vault::put_vault)
                .delete(super::arm_vault::delete_vault),
        )
        .route(
            &format!("{RG}/Microsoft.KeyVault/vaults"),
            axum::routing::get(super::arm_vault::list_vaults_in_group),
        )
        .route(
            &format!("{RG}/Microsoft.Network/virtualNetworks/{{name}}"),
            put(super::arm_network::put_vnet)
                .get(super::arm_network::get_vnet)
                .delete(super::arm_network::delete_vnet),
        )
        .route(
            &format!("{RG}/Microsoft.Network/virtualNetworks/{{name}}/subnets/{{subnet}}"),
            axum::routing::get(super::arm_network::get_subnet),
        )
        .route(
            &format!("{RG}/Microsoft.OperationalInsights/workspaces"),
            axum::routing::get(super::arm_workspaces::list_workspaces),
        )
        .route(
            &format!("{RG}/Microsoft.OperationalInsights/workspaces/{{name}}"),
            put(super::arm_workspaces::put_workspace)
                .get(super::arm_workspaces::get_workspace)
                .delete(super::arm_workspaces::delete_workspace),
        )
        .route(
            &format!("{RG}/Microsoft.Network/privateEndpoints/{{name}}"),
            put(super::arm_network::put_private_endpoint)
                .get(super::arm_network::get_private_endpoint)
                .delete(super::arm_network::delete_private_endpoint),
        )
        .route(
            &format!("{RG}/Microsoft.KeyVault/vaults/{{name}}/providers/Microsoft.EventGrid/eventSubscriptions/{{esub}}"),
            put(super::arm_events::put_subscription)
                .get(super::arm_events::get_subscription)
                .delete(super::arm_events::delete_subscription),
        )
        .route(
            &format!("{RG}/Microsoft.KeyVault/vaults/{{name}}/providers/Microsoft.EventGrid/eventSubscriptions/{{esub}}/deadLetters"),
            axum::routing::get(super::arm_events::list_dead_letters),
        )
        .route(
            &format!("{RG}/Microsoft.KeyVault/vaults/{{name}}/providers/Microsoft.Insights/diagnosticSettingsCategories"),
            axum::routing::get(super::arm_diagnostics::categories),
        )
        .route(
            &format!("{RG}/Microsoft.KeyVault/vaults/{{name}}/providers/Microsoft.Insights/diagnosticSettings"),
            axum::routing::get(super::arm_diagnostics::get_settings),
        )
        .route(
            &format!("{RG}/Microsoft.KeyVault/vaults/{{name}}/providers/Microsoft.Insights/diagnosticSettings/{{esub}}"),
            put(super::arm_diagnostics::put_setting)
                .get(super::arm_diagnostics::get_setting)
                .delete(super::arm_diagnostics::delete_setting),
        )
        .route(
            &format!("{RG}/Microsoft.KeyVault/vaults/{{name}}/providers/Keyhaven.Insights/auditEvents"),
            axum::routing::get(super::arm_diagnostics::query_audit),
        )
        .route(
            "/tenants",
            axum::routing::get(super::arm_groups::list_tenants),
        )
        .route(
            "/subscriptions",
            axum::routing::get(super::arm_groups::list_subscriptions),
        )
        .route(
            "/subscriptions/{sub}",
            axum::routing::get(super::arm_groups::get_subscription),
        )
        .route(
            "/subscriptions/{sub}/resourceGroups",
            axum::routing::get(super::arm_groups::list_groups),
        )
        .route(
            "/subscriptions/{sub}/resourceGroups/{rg}",
            put(super::arm_groups::put_group)
                .get(super::arm_groups::get_group)
                .head(super::arm_groups::head_group)
                .delete(super::arm_groups::delete_group),
        )
        .route(
            "/subscriptions/{sub}/resources",
            axum::routing::get(super::arm_vault::list_resources),
        )
        .route(
            &format!("{KV}/vaults"),
            axum::routing::get(super::arm_vault::list_vaults_in_subscription),
        )
        .route(
            &format!("{KV}/checkNameAvailability"),
            post(super::arm_vault::check_name_availability),
        )
        .route(
            &format!("{KV}/managedHSMs"),
            axum::routing::get(super::arm_vault::list_managed_hsms),
        )
        .route(
            &format!("{KV}/deletedManagedHSMs"),
            axum::routing::get(super::arm_vault::list_managed_hsms),
        )
        .route(
            &format!("{RG}/Microsoft.KeyVault/managedHSMs"),
            axum::routing::get(super::arm_vault::list_managed_hsms_in_group),
        )
        .route(
            &format!("{KV}/deletedVaults"),
            axum::routing::get(super::arm_vault::list_deleted_vaults),
        )
        .route(
            &format!("{KV}/locations/{{loc}}/deletedVaults/{{name}}"),
            axum::routing::get(super::arm_vault::get_deleted_vault),
        )
        .route(
            &format!("{KV}/locations/{{loc}}/deletedVaults/{{name}}/purge"),
            post(super::arm_vault::purge_deleted_vault),
        )
        .route(
            &format!("{RG}/Microsoft.KeyVault/vaults/{{name}}/privateLinkResources"),
            axum::routing::get(super::arm_vault::private_link_resources),
        )
        .route(
            &format!("{RG}/Microsoft.KeyVault/vaults/{{name}}/accessPolicies/{{op}}"),
            put(super::arm_vault::put_access_policies),
        )
        .fallback(|| async {
            ArmFailure::new(
                StatusCode::NOT_FOUND,
                "NotFound",
                "The requested resource type or operation is not supported.",
            )
        })
        .method_not_allowed_fallback(|| async {
            ArmFailure::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "The requested method is not allowed on this resource.",
            )
        })
        .with_state(state)
}

/// `GET /metadata/endpoints`: the cloud's endpoints, unauthenticated as on
/// Azure. `az cloud register --endpoint-resource-manager URL` reads it (it
/// appends the path to the URL as given, so `//metadata/…` answers too).
fn cloud_metadata(state: &AppState, req: &Request) -> Option<Response> {
    let path = req.uri().path().trim_start_matches('/');
    if !path.eq_ignore_ascii_case("metadata/endpoints") {
        return None;
    }
    if req.method() != http::Method::GET {
        return Some(
            ArmFailure::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "The requested method is not allowed on this resource.",
            )
            .into_response(),
        );
    }
    let e = &state.endpoints;
    let management = e.management_url();
    let graph = format!("{}/", e.graph_url());
    Some(json(
        StatusCode::OK,
        &keyhaven_wire::arm::CloudMetadata {
            name: "Keyhaven".into(),
            resource_manager: format!("{management}/"),
            authentication: keyhaven_wire::arm::CloudAuthentication {
                login_endpoint: e.authority_host(),
                audiences: vec![format!("{management}/")],
                tenant: "common".into(),
                identity_provider: "AAD",
            },
            microsoft_graph_resource_id: graph.clone(),
            graph_audience: graph.clone(),
            graph,
            suffixes: keyhaven_wire::arm::CloudSuffixes {
                key_vault_dns: e.vault_host_suffix(),
            },
        },
    ))
}

/// Authenticates a management request and dispatches it.
pub async fn handle(state: &AppState, router: Router, req: Request) -> Response {
    if let Some(resp) = cloud_metadata(state, &req) {
        return resp;
    }
    let token = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_owned());
    let caller = match token.map(|t| {
        state
            .tokens
            .validate(&t, &state.endpoints.management_url(), state.clock.now())
    }) {
        Some(Ok(p)) => p,
        Some(Err(_)) => {
            return ArmFailure::new(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                "The access token is invalid.",
            )
            .into_response();
        }
        None => {
            let mut r = ArmFailure::new(
                StatusCode::UNAUTHORIZED,
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is missing.",
            )
            .into_response();
            let challenge = format!(
                "Bearer authorization_uri=\"{}/{}\", error=\"invalid_token\", error_description=\"The authentication failed because of missing 'Authorization' header.\"",
                state.endpoints.authority_host(),
                state.tokens.tenant_id()
            );
            if let Ok(v) = http::HeaderValue::from_str(&challenge) {
                r.headers_mut().insert(http::header::WWW_AUTHENTICATE, v);
            }
            return r;
        }
    };
    if !query_map(req.uri().query()).contains_key("api-version") {
        return ArmFailure::new(
            StatusCode::BAD_REQUEST,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )
        .into_response();
    }
    let req = match super::arm_rbac::handle(state, &caller, req).await {
        Ok(resp) => return resp,
        Err(req) => req,
    };
    let mut req = req;
    let claims = super::claims_of(&caller);
    req.extensions_mut().insert(Arc::new(Ctx { caller }));
    let mut req = req;
    canonicalize_path(&mut req);
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let mut resp = router.oneshot(req).await.unwrap_or_else(|e| match e {});
    resp.extensions_mut().insert(crate::audit::AuditNote {
        operation: Some(management_operation(&method, &path)),
        resource_id: Some(path),
        identity: Some(claims),
        ..Default::default()
    });
    resp
}

/// Azure's operation names for vault calls (`VaultGet`, `VaultPut`, …);
/// other management calls are `Management{Method}`.
fn management_operation(method: &http::Method, path: &str) -> String {
    let verb = match *method {
        http::Method::GET => "Get",
        http::Method::PUT => "Put",
        http::Method::PATCH => "Patch",
        http::Method::DELETE => "Delete",
        http::Method::POST => "Post",
        _ => "Request",
    };
    let segments: Vec<&str> = path.split('/').collect();
    let vault = segments
        .iter()
        .rposition(|s| *s == "vaults")
        .is_some_and(|i| i + 2 == segments.len());
    if vault {
        format!("Vault{verb}")
    } else {
        format!("Management{verb}")
    }
}

/// ARM paths are case-insensitive (`azure-mgmt-resource` writes
/// `resourcegroups`); the router's literal segments are matched in their
/// canonical case.
fn canonicalize_path(req: &mut Request) {
    const LITERALS: [&str; 28] = [
        "tenants",
        "subscriptions",
        "resourceGroups",
        "providers",
        "Microsoft.KeyVault",
        "vaults",
        "deletedVaults",
        "managedHSMs",
        "deletedManagedHSMs",
        "locations",
        "checkNameAvailability",
        "accessPolicies",
        "privateLinkResources",
        "resources",
        "purge",
        "Microsoft.ManagedIdentity",
        "Microsoft.Network",
        "virtualNetworks",
        "subnets",
        "privateEndpoints",
        "Microsoft.EventGrid",
        "eventSubscriptions",
        "deadLetters",
        "Microsoft.Insights",
        "diagnosticSettings",
        "diagnosticSettingsCategories",
        "Microsoft.OperationalInsights",
        "workspaces",
    ];
    let path = req.uri().path();
    let canonical = path
        .split('/')
        .map(|seg| {
            LITERALS
                .iter()
                .find(|l| l.eq_ignore_ascii_case(seg))
                .map_or(seg, |l| *l)
        })
        .collect::<Vec<_>>()
        .join("/");
    if canonical == path {
        return;
    }
    let with_query = match req.uri().query() {
        Some(q) => format!("{canonical}?{q}"),
        None => canonical,
    };
    if let Ok(uri) = with_query.parse() {
        *req.uri_mut() = uri;
    }
}

/// Parses an ARM request body; ARM's 400 `InvalidRequestContent` on failure,
/// naming the position, never the content.
pub async fn parse_body<T: DeserializeOwned>(body: axum::body::Body) -> Result<T, ArmFailure> {
    let bytes = read_body(body).await.map_err(|_| {
        ArmFailure::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            "The request body is too large.",
        )
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ArmFailure::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
            format!(
                "The request content was invalid and could not be deserialized (line {}, column {}).",
                e.line(),
                e.column()
            ),
        )
    })
}

async fn body<T: DeserializeOwned>(req: Request) -> Result<T, ArmFailure> {
    parse_body(req.into_body()).await
}

fn reply<T: Serialize>(created: bool, v: &T) -> ArmResult {
    Ok(json(
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        v,
    ))
}

fn location(raw: &Option<String>) -> Result<String, ArmFailure> {
    match raw.as_deref().map(str::trim) {
        Some(l) if !l.is_empty() && l.len() <= 64 => Ok(l.to_owned()),
        _ => Err(ArmFailure::new(
            StatusCode::BAD_REQUEST,
            "LocationRequired",
            "The location property is required for this definition.",
        )),
    }
}

fn resource_name(
    st: &AppState,
    sub: String,
    rg: String,
    name: String,
) -> Result<ResourceName, ArmFailure> {
    if !sub.eq_ignore_ascii_case(&st.subscription_id) {
        return Err(ArmFailure::new(
            StatusCode::NOT_FOUND,
            "SubscriptionNotFound",
            format!(
                "The subscription '{}' could not be found.",
                sub.chars().take(64).collect::<String>()
            ),
        ));
    }
    if rg.is_empty() || rg.len() > 90 {
        return Err(ArmFailure::new(
            StatusCode::BAD_REQUEST,
            "InvalidResourceGroup",
            "The resource group name is invalid.",
        ));
    }
    Ok(ResourceName {
        subscription_id: st.subscription_id.clone(),
        resource_group: rg,
        name,
    })
}

fn tags_of(r: &ResourceRecord) -> BTreeMap<String, String> {
    serde_json::from_str(&r.tags).unwrap_or_default()
}

fn identity_out(st: &AppState, r: &ResourceRecord, p: &UamiProps) -> UserAssignedIdentity {
    UserAssignedIdentity {
        id: r.id.clone(),
        name: r.name.clone(),
        kind: r.kind.clone(),
        location: r.location.clone(),
        tags: tags_of(r),
        properties: IdentityProperties {
            tenant_id: st.tokens.tenant_id().to_owned(),
            principal_id: p.principal_id.clone(),
            client_id: p.client_id.clone(),
        },
    }
}

async fn rotate_signing_key(State(st): State<AppState>, Extension(ctx): C) -> ArmResult {
    const ACTION: &str = "Keyhaven.Identity/rotateSigningKey/action";
    st.directory
        .require_admin(&ctx.caller)
        .await
        .map_err(|e| fail(&ctx, ACTION, "/", e))?;
    let keys = crate::signing::rotate(&st.store, &st.barrier)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "signing key rotation failed");
            ArmFailure::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "The signing key could not be rotated; try again.",
            )
        })?;
    let kid = keys.last().map(|k| k.kid().to_owned()).unwrap_or_default();
    st.tokens.replace_keys(keys);
    tracing::info!(%kid, "token signing key rotated");
    Ok(json(StatusCode::OK, &RotatedKey { kid }))
}

/// Makes a new master key current (or adopts one an operator added to the
/// keyring file) and re-wraps every vault data key and the token signing
/// keys under it, while requests keep being served. Safe to run again: it
/// re-wraps whatever is not under the current key.
async fn rotate_master_key(State(st): State<AppState>, Extension(ctx): C) -> ArmResult {
    const ACTION: &str = "Keyhaven.Security/rotateMasterKey/action";
    st.directory
        .require_admin(&ctx.caller)
        .await
        .map_err(|e| fail(&ctx, ACTION, "/", e))?;
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        tracing::warn!(error = %e, "master key rotation failed at {what}");
        ArmFailure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "The master key rotation did not finish; run it again (it resumes where it stopped).",
        )
    };
    // The whole rotation runs in its own task: a client that disconnects
    // after the store agreed to the new key cannot stop this node from
    // adopting it and re-wrapping under it.
    let (store, barrier) = (Arc::clone(&st.store), Arc::clone(&st.barrier));
    let rotation = tokio::spawn(async move { crate::masterkey::rotate(&store, &barrier).await })
        .await
        .map_err(|e| failed("the rotation task", &e))?
        .map_err(|e| match e {
            crate::masterkey::MasterKeyError::NotHeld { .. } => {
                tracing::warn!(error = %e, "master key rotation refused");
                ArmFailure::new(StatusCode::CONFLICT, "Conflict", e.to_string())
            }
            other => failed("the keyring", &other),
        })?;
    let key_id = rotation.key_id();
    let fingerprint = st
        .barrier
        .master_key()
        .map(|(_, fp)| fp)
        .unwrap_or_default();
    let st2 = st.clone();
    let rewrap = tokio::spawn(async move {
        let vaults = st2.service.rewrap_vault_keys().await;
        let signing = crate::signing::rewrap(&st2.store, &st2.barrier).await;
        (vaults, signing)
    })
    .await
    .map_err(|e| failed("the rotation task", &e))?;
    let (rewrapped, vaults) = rewrap.0.map_err(|e| failed("the vault keys", &e))?;
    let signing = rewrap.1.map_err(|e| failed("the signing keys", &e))?;
    tracing::info!(key_id, rewrapped, vaults, "master key rotated");
    Ok(json(
        StatusCode::OK,
        &RotatedMasterKey {
            key_id,
            fingerprint,
            adopted: matches!(rotation, crate::masterkey::Rotation::Adopted(_)),
            vault_keys_rewrapped: rewrapped,
            vaults,
            signing_keys_rewrapped: signing,
        },
    ))
}

/// Lists the master keys and what in the store each still seals, so an
/// operator knows which old keys may be retired (backup blobs made before a
/// rotation are outside the store and still need the key they name).
async fn master_key_usage(State(st): State<AppState>, Extension(ctx): C) -> ArmResult {
    const ACTION: &str = "Keyhaven.Security/masterKeyUsage/action";
    st.directory
        .require_admin(&ctx.caller)
        .await
        .map_err(|e| fail(&ctx, ACTION, "/", e))?;
    let unavailable = |e: keyhaven_core::StoreError| {
        tracing::warn!(error = %e, "master key usage could not be read");
        ArmFailure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "The master key usage could not be read; try again.",
        )
    };
    let mut keys: Vec<MasterKeyUse> = st
        .barrier
        .master_keys()
        .into_iter()
        .map(|(id, fingerprint)| MasterKeyUse {
            id,
            fingerprint,
            vault_keys: 0,
            signing_keys: false,
        })
        .collect();
    let mut unknown: Vec<MasterKeyUse> = Vec::new();
    let mut tally = |id: u32, vault: bool| {
        let entry = match keys.iter_mut().find(|k| k.id == id) {
            Some(k) => k,
            None => {
                if !unknown.iter().any(|k| k.id == id) {
                    unknown.push(MasterKeyUse {
                        id,
                        fingerprint: String::new(),
                        vault_keys: 0,
                        signing_keys: false,
                    });
                }
                match unknown.iter_mut().find(|k| k.id == id) {
                    Some(k) => k,
                    None => return,
                }
            }
        };
        if vault {
            entry.vault_keys += 1;
        } else {
            entry.signing_keys = true;
        }
    };
    for v in st.store.list_vaults().await.map_err(unavailable)? {
        if let Some(id) = st.barrier.sealed_by(&v.wrapped_key) {
            tally(id, true);
        }
    }
    if let Some(sealed) = st
        .store
        .get_setting(crate::signing::SETTING)
        .await
        .map_err(unavailable)?
    {
        if let Some(id) = st.barrier.sealed_by(&sealed) {
            tally(id, false);
        }
    }
    let current = st.barrier.master_key().map_or(0, |(id, _)| id);
    Ok(json(
        StatusCode::OK,
        &MasterKeyUsage {
            current,
            keys,
            unknown,
        },
    ))
}

/// Opens every stored payload of every vault and reports what does not
/// (`keyhaven check`).
async fn check_integrity(State(st): State<AppState>, Extension(ctx): C) -> ArmResult {
    const ACTION: &str = "Keyhaven.Security/checkIntegrity/action";
    st.directory
        .require_admin(&ctx.caller)
        .await
        .map_err(|e| fail(&ctx, ACTION, "/", e))?;
    let report = st.service.check_integrity().await.map_err(|e| {
        tracing::warn!(error = %e, "integrity check could not finish");
        ArmFailure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "The integrity check could not finish; try again.",
        )
    })?;
    if report.problem_count > 0 {
        tracing::warn!(
            problems = report.problem_count,
            "integrity check found problems"
        );
    }
    Ok(json(StatusCode::OK, &report))
}

async fn put_identity(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path((sub, rg, name)): Path<(String, String, String)>,
    req: Request,
) -> ArmResult {
    let at = resource_name(&st, sub, rg, name)?;
    let b: PutIdentity = body(req).await?;
    let loc = location(&b.location)?;
    let tags = serde_json::to_string(&b.tags).unwrap_or_else(|_| "{}".into());
    let scope = at.id(keyhaven_identity::managed::UAMI_TYPE);
    st.authz
        .require_action(
            &ctx.caller,
            &scope,
            "Microsoft.ManagedIdentity/userAssignedIdentities/write",
        )
        .await
        .map_err(domain_failure)?;
    let (r, p, created) = st
        .directory
        .put_user_assigned(&ctx.caller, &at, &loc, &tags)
        .await
        .map_err(|e| {
            fail(
                &ctx,
                "Microsoft.ManagedIdentity/userAssignedIdentities/write",
                &scope,
                e,
            )
        })?;
    reply(created, &identity_out(&st, &r, &p))
}

async fn get_identity(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path((sub, rg, name)): Path<(String, String, String)>,
) -> ArmResult {
    let at = resource_name(&st, sub, rg, name)?;
    let scope = at.id(keyhaven_identity::managed::UAMI_TYPE);
    st.authz
        .require_action(
            &ctx.caller,
            &scope,
            "Microsoft.ManagedIdentity/userAssignedIdentities/read",
        )
        .await
        .map_err(domain_failure)?;
    let (r, p) = st.directory.user_assigned(&scope).await.map_err(|e| {
        fail(
            &ctx,
            "Microsoft.ManagedIdentity/userAssignedIdentities/read",
            &scope,
            e,
        )
    })?;
    reply(false, &identity_out(&st, &r, &p))
}

async fn delete_identity(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path((sub, rg, name)): Path<(String, String, String)>,
) -> ArmResult {
    let at = resource_name(&st, sub, rg, name)?;
    let scope = at.id(keyhaven_identity::managed::UAMI_TYPE);
    st.authz
        .require_action(
            &ctx.caller,
            &scope,
            "Microsoft.ManagedIdentity/userAssignedIdentities/delete",
        )
        .await
        .map_err(domain_failure)?;
    let deleted = st
        .directory
        .delete_user_assigned(&ctx.caller, &scope)
        .await
        .map_err(|e| {
            fail(
                &ctx,
                "Microsoft.ManagedIdentity/userAssignedIdentities/delete",
                &scope,
                e,
            )
        })?;
    Ok(super::response::status_only(if deleted {
        StatusCode::OK
    } else {
        StatusCode::NO_CONTENT
    }))
}

async fn workload_out(st: &AppState, r: &ResourceRecord, p: &WorkloadProps) -> Workload {
    let mut user_assigned = BTreeMap::new();
    for id in &p.user_assigned {
        if let Ok((ur, up)) = st.directory.user_assigned(id).await {
            user_assigned.insert(
                ur.id,
                UserAssignedRef {
                    principal_id: up.principal_id,
                    client_id: up.client_id,
                },
            );
        }
    }
    let kind = match (p.system_principal_id.is_some(), !p.user_assigned.is_empty()) {
        (true, true) => "SystemAssigned, UserAssigned",
        (true, false) => "SystemAssigned",
        (false, true) => "UserAssigned",
        (false, false) => "None",
    };
    Workload {
        id: r.id.clone(),
        name: r.name.clone(),
        kind: r.kind.clone(),
        location: r.location.clone(),
        tags: tags_of(r),
        properties: WorkloadProperties {
            addresses: p.addresses.iter().map(IpAddr::to_string).collect(),
        },
        identity: ManagedServiceIdentity {
            kind: kind.to_owned(),
            principal_id: p.system_principal_id.clone(),
            tenant_id: p
                .system_principal_id
                .as_ref()
                .map(|_| st.tokens.tenant_id().to_owned()),
            user_assigned,
        },
    }
}

/// What attaching a user-assigned identity to a workload needs on it.
const ASSIGN_IDENTITY: &str = "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action";

async fn put_workload(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path((sub, rg, name)): Path<(String, String, String)>,
    req: Request,
) -> ArmResult {
    let at = resource_name(&st, sub, rg, name)?;
    let b: PutWorkload = body(req).await?;
    let loc = location(&b.location)?;
    let mut addresses = Vec::with_capacity(b.properties.addresses.len());
    for a in &b.properties.addresses {
        addresses.push(a.trim().parse::<IpAddr>().map_err(|_| {
            ArmFailure::new(
                StatusCode::BAD_REQUEST,
                "InvalidAddress",
                format!(
                    "'{}' is not an IP address.",
                    a.chars().take(64).collect::<String>()
                ),
            )
        })?);
    }
    let (system_assigned, user_assigned) = match &b.identity {
        Some(i) => {
            let ua: Vec<String> = i.user_assigned.keys().cloned().collect();
            if !ua.is_empty() && !i.user_assigned_enabled() {
                return Err(ArmFailure::new(
                    StatusCode::BAD_REQUEST,
                    "InvalidIdentityType",
                    "userAssignedIdentities requires identity type 'UserAssigned'.",
                ));
            }
            (i.system_assigned(), ua)
        }
        None => (false, Vec::new()),
    };
    let scope = at.id(keyhaven_identity::managed::WORKLOAD_TYPE);
    st.authz
        .require_action(&ctx.caller, &scope, "Keyhaven.Compute/workloads/write")
        .await
        .map_err(domain_failure)?;
    // Azure: attaching a user-assigned identity is a linked access check —
    // whoever attaches it gets its tokens, so the caller needs the assign
    // action on every identity named (Managed Identity Operator, Owner,
    // Contributor), not just write on the workload.
    for ua in &user_assigned {
        st.authz
            .require_action(&ctx.caller, ua, ASSIGN_IDENTITY)
            .await
            .map_err(domain_failure)?;
    }
    let spec = WorkloadSpec {
        addresses,
        system_assigned,
        user_assigned,
        location: loc,
        tags: serde_json::to_string(&b.tags).unwrap_or_else(|_| "{}".into()),
    };
    let (r, p, created) = st
        .directory
        .put_workload(&ctx.caller, &at, spec)
        .await
        .map_err(|e| fail(&ctx, "Keyhaven.Compute/workloads/write", &scope, e))?;
    reply(created, &workload_out(&st, &r, &p).await)
}

async fn get_workload(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path((sub, rg, name)): Path<(String, String, String)>,
) -> ArmResult {
    let at = resource_name(&st, sub, rg, name)?;
    let scope = at.id(keyhaven_identity::managed::WORKLOAD_TYPE);
    st.authz
        .require_action(&ctx.caller, &scope, "Keyhaven.Compute/workloads/read")
        .await
        .map_err(domain_failure)?;
    let (r, p) = st
        .directory
        .workload(&scope)
        .await
        .map_err(|e| fail(&ctx, "Keyhaven.Compute/workloads/read", &scope, e))?;
    reply(false, &workload_out(&st, &r, &p).await)
}

async fn delete_workload(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path((sub, rg, name)): Path<(String, String, String)>,
) -> ArmResult {
    let at = resource_name(&st, sub, rg, name)?;
    let scope = at.id(keyhaven_identity::managed::WORKLOAD_TYPE);
    st.authz
        .require_action(&ctx.caller, &scope, "Keyhaven.Compute/workloads/delete")
        .await
        .map_err(domain_failure)?;
    let deleted = st
        .directory
        .delete_workload(&ctx.caller, &scope)
        .await
        .map_err(|e| fail(&ctx, "Keyhaven.Compute/workloads/delete", &scope, e))?;
    Ok(super::response::status_only(if deleted {
        StatusCode::OK
    } else {
        StatusCode::NO_CONTENT
    }))
}
