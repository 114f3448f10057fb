//! A managed HSM pool's own data-plane APIs: activation by security domain
//! (`/securitydomain/…`, in the formats of the Azure CLI's
//! `security-domain` commands) and settings (`/settings`). Keys are the
//! vault's key routes; local RBAC is `pool_rbac`.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use http::{HeaderValue, StatusCode};
use keyhaven_core::vault::VaultRecord;
use keyhaven_core::vault_admin::AdminError;
use keyhaven_core::Error;
use keyhaven_crypto::security_domain as sd;
use serde::{Deserialize, Serialize};

use super::DataCtx;
use crate::http::extract::{parse_json, read_body, AzPath};
use crate::http::response::{json, ok, ApiError, ApiResult};
use crate::state::AppState;

type Ctx = Extension<Arc<DataCtx>>;

const SD: &str = "Microsoft.KeyVault/managedHsm/securitydomain/";
const SETTINGS: &str = "Microsoft.KeyVault/managedHsm/settings/";
/// What the security domain's one data item is tagged.
const DOMAIN_TAG: &str = "hsm_backup";
/// The one setting a pool has, and its default.
pub const ARM_KEY_MANAGEMENT: &str = "AllowKeyManagementOperationsThroughARM";

/// The pool's own routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/securitydomain/download", post(download))
        .route("/securitydomain/download/pending", get(download_pending))
        .route("/securitydomain/upload", get(transfer_key).post(upload))
        .route("/securitydomain/upload/pending", get(upload_pending))
        .route("/settings", get(list_settings))
        .route("/settings/{name}", get(get_setting).patch(update_setting))
}

/// What a pool answers before it is activated: only the security domain.
pub fn allowed_before_activation(path: &str) -> bool {
    path.to_ascii_lowercase().starts_with("/securitydomain/")
}

/// The refusal of everything else before activation.
pub fn not_activated(pool: &VaultRecord) -> ApiError {
    ApiError::Http {
        status: StatusCode::FORBIDDEN,
        code: "Forbidden",
        message: format!(
            "The managed HSM '{}' is not activated: it cannot be used until its security domain is downloaded (az keyvault security-domain download) or uploaded.",
            pool.name
        ),
    }
}

/// The management rules' refusals on the data plane.
pub fn admin_error(e: AdminError) -> ApiError {
    match e {
        AdminError::BadRequest(code, message) => ApiError::Http {
            status: StatusCode::BAD_REQUEST,
            code,
            message,
        },
        AdminError::Conflict(code, message) => ApiError::Http {
            status: StatusCode::CONFLICT,
            code,
            message,
        },
        AdminError::NotFound(m) => ApiError::not_found(m),
        AdminError::Core(e) => e.into(),
    }
}

fn bad(e: sd::SdError) -> ApiError {
    Error::BadParameter(e.0).into()
}

#[derive(Deserialize)]
struct DownloadRequest {
    #[serde(default)]
    certificates: Vec<serde_json::Value>,
    required: Option<usize>,
}

#[derive(Serialize, Deserialize)]
struct DomainState {
    keyhaven: u32,
    id: String,
    key: String,
}

#[derive(Serialize)]
struct OperationStatus {
    status: String,
    status_details: String,
}

fn with_async_operation(mut resp: Response, ctx: &DataCtx, which: &str) -> Response {
    let url = format!(
        "{}/securitydomain/{which}/pending?api-version={}",
        ctx.urls.base(),
        ctx.api_version.as_str()
    );
    if let Ok(v) = HeaderValue::from_str(&url) {
        resp.headers_mut().insert("azure-asyncoperation", v);
    }
    resp.headers_mut()
        .insert("retry-after", HeaderValue::from_static("1"));
    resp
}

fn already_active(pool: &VaultRecord) -> ApiError {
    ApiError::Http {
        status: StatusCode::CONFLICT,
        code: "Conflict",
        message: format!(
            "The managed HSM '{}' is already activated: it holds a security domain.",
            pool.name
        ),
    }
}

/// `POST /securitydomain/download`: activates the pool with a new security
/// domain and returns it, split to the caller's wrapping certificates.
async fn download(
    State(st): State<AppState>,
    Extension(ctx): Ctx,
    body: axum::body::Body,
) -> ApiResult {
    ctx.authorize_pool(
        &st,
        "/",
        &format!("{SD}download/action"),
        "SecurityDomainDownload",
    )
    .await?;
    let req: DownloadRequest = parse_json(&read_body(body).await?)?;
    if !(sd::MIN_CERTS..=sd::MAX_CERTS).contains(&req.certificates.len()) {
        return Err(Error::BadParameter(format!(
            "Between {} and {} wrapping certificates are required.",
            sd::MIN_CERTS,
            sd::MAX_CERTS
        ))
        .into());
    }
    let certs = req
        .certificates
        .iter()
        .map(sd::wrapping_cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(bad)?;
    let required = req
        .required
        .ok_or_else(|| Error::BadParameter("'required' (the quorum) is required.".into()))?;
    let mut thumbprints: Vec<String> = certs.iter().map(|c| sd::x5t_256(c)).collect();
    thumbprints.sort();
    if ctx.vault.is_activated() {
        // A retry of the download that activated the pool (its answer was
        // lost) gets the same security domain; anything else, 409.
        let stored = ctx
            .vault
            .properties
            .managed_hsm
            .as_ref()
            .and_then(|m| m.sd_download.as_ref())
            .filter(|d| d.thumbprints == thumbprints && d.required == required);
        return match stored {
            Some(d) => {
                let resp = json(
                    StatusCode::ACCEPTED,
                    &serde_json::json!({ "value": d.blob }),
                );
                Ok(with_async_operation(resp, &ctx, "download"))
            }
            None => Err(already_active(&ctx.vault)),
        };
    }
    let key = keyhaven_core::sensitive::Sensitive::new({
        let mut k = vec![0u8; 32];
        openssl::rand::rand_bytes(&mut k).map_err(|_| Error::Integrity)?;
        k
    });
    let id = keyhaven_core::Version::random().to_string();
    let state = keyhaven_core::sensitive::Sensitive::new(
        serde_json::to_vec(&DomainState {
            keyhaven: 1,
            id: id.clone(),
            key: base64::Engine::encode(&base64::engine::general_purpose::STANDARD, key.expose()),
        })
        .map_err(|_| Error::Integrity)?,
    );
    let blob = sd::make_download(&certs, required, &[(DOMAIN_TAG, state.expose())]).map_err(bad)?;
    // The domain is the pool's only once this write lands: a racing
    // download gets the 409, and its blob (never returned) is dropped.
    let download = keyhaven_core::vault::SdDownload {
        thumbprints,
        required,
        blob: blob.clone(),
    };
    st.service
        .activate_pool(&ctx.vault, &id, key.expose(), Some(download))
        .await
        .map_err(admin_error)?;
    let resp = json(StatusCode::ACCEPTED, &serde_json::json!({ "value": blob }));
    Ok(with_async_operation(resp, &ctx, "download"))
}

fn status_of(pool: &VaultRecord, kind: &str) -> OperationStatus {
    let op = pool
        .properties
        .managed_hsm
        .as_ref()
        .and_then(|m| m.sd_operation.as_ref());
    match op {
        Some(o) if o.kind == kind => OperationStatus {
            status: o.status.clone(),
            status_details: o
                .details
                .clone()
                .unwrap_or_else(|| "The resource is active.".into()),
        },
        _ if pool.is_activated() => OperationStatus {
            status: "Success".into(),
            status_details: "The resource is active.".into(),
        },
        _ => OperationStatus {
            status: "Failed".into(),
            status_details: format!("No security domain {kind} was made on this managed HSM."),
        },
    }
}

async fn download_pending(State(st): State<AppState>, Extension(ctx): Ctx) -> ApiResult {
    ctx.authorize_pool(
        &st,
        "/",
        &format!("{SD}download/read"),
        "SecurityDomainDownloadStatus",
    )
    .await?;
    Ok(ok(&status_of(&ctx.vault, "download")))
}

async fn upload_pending(State(st): State<AppState>, Extension(ctx): Ctx) -> ApiResult {
    ctx.authorize_pool(
        &st,
        "/",
        &format!("{SD}upload/read"),
        "SecurityDomainUploadStatus",
    )
    .await?;
    Ok(ok(&status_of(&ctx.vault, "upload")))
}

/// `GET /securitydomain/upload`: the exchange key an upload is wrapped to.
async fn transfer_key(State(st): State<AppState>, Extension(ctx): Ctx) -> ApiResult {
    ctx.authorize_pool(
        &st,
        "/",
        &format!("{SD}transferkey/read"),
        "SecurityDomainTransferKey",
    )
    .await?;
    if ctx.vault.is_activated() {
        return Err(already_active(&ctx.vault));
    }
    let cert = match ctx
        .vault
        .properties
        .managed_hsm
        .as_ref()
        .and_then(|m| m.exchange.as_ref())
    {
        Some(x) => x.cert.clone(),
        None => {
            // RSA key generation takes a while: off the async workers.
            let subject = format!("{} exchange key", ctx.vault.name);
            let made = tokio::task::spawn_blocking(move || sd::new_exchange_key(&subject))
                .await
                .map_err(|_| Error::Integrity)?
                .map_err(bad)?;
            st.service
                .pool_exchange_key(&ctx.vault, || Ok(made))
                .await
                .map_err(admin_error)?
        }
    };
    let jwk = sd::transfer_key_jwk(&cert).map_err(bad)?;
    Ok(ok(
        &serde_json::json!({ "key_format": "jwk", "transfer_key": jwk }),
    ))
}

#[derive(Deserialize)]
struct UploadRequest {
    value: Option<String>,
}

/// `POST /securitydomain/upload`: restores a security domain into a pool
/// that has none, from a blob wrapped to its exchange key.
async fn upload(
    State(st): State<AppState>,
    Extension(ctx): Ctx,
    body: axum::body::Body,
) -> ApiResult {
    ctx.authorize_pool(
        &st,
        "/",
        &format!("{SD}upload/action"),
        "SecurityDomainUpload",
    )
    .await?;
    if ctx.vault.is_activated() {
        return Err(already_active(&ctx.vault));
    }
    let req: UploadRequest = parse_json(&read_body(body).await?)?;
    let blob = req
        .value
        .ok_or_else(|| Error::BadParameter("'value' (the security domain) is required.".into()))?;
    let Some((private, cert)) = st.service.pool_exchange_private(&ctx.vault)? else {
        return Err(Error::BadParameter(
            "No exchange key was issued: run `az keyvault security-domain init-recovery` first."
                .into(),
        )
        .into());
    };
    let items = sd::open_upload(&blob, private.expose(), &cert).map_err(bad)?;
    let mut state = items
        .iter()
        .find(|(tag, _)| tag == DOMAIN_TAG)
        .and_then(|(_, v)| serde_json::from_slice::<DomainState>(v.expose()).ok())
        .filter(|d| d.keyhaven == 1)
        .ok_or_else(|| {
            Error::BadParameter(
                "The security domain is not one a Keyhaven managed HSM made.".into(),
            )
        })?;
    let key = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &state.key)
        .map(keyhaven_core::sensitive::Sensitive::new);
    zeroize::Zeroize::zeroize(&mut state.key);
    let key = key.map_err(|_| Error::BadParameter("The security domain is malformed.".into()))?;
    st.service
        .activate_pool(&ctx.vault, &state.id, key.expose(), None)
        .await
        .map_err(admin_error)?;
    let resp = json(
        StatusCode::ACCEPTED,
        &OperationStatus {
            status: "Success".into(),
            status_details: "The resource is active.".into(),
        },
    );
    Ok(with_async_operation(resp, &ctx, "upload"))
}

#[derive(Serialize)]
struct Setting {
    name: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
    value: String,
}

fn setting_of(pool: &VaultRecord) -> Setting {
    let value = pool
        .properties
        .managed_hsm
        .as_ref()
        .and_then(|m| m.settings.get(ARM_KEY_MANAGEMENT).cloned())
        .unwrap_or_else(|| "false".into());
    Setting {
        name: ARM_KEY_MANAGEMENT,
        kind: "boolean",
        value,
    }
}

fn unknown_setting(name: &str) -> ApiError {
    ApiError::not_found(format!(
        "The setting '{}' does not exist.",
        name.chars().take(64).collect::<String>()
    ))
}

async fn list_settings(State(st): State<AppState>, Extension(ctx): Ctx) -> ApiResult {
    ctx.authorize_pool(&st, "/", &format!("{SETTINGS}read/action"), "GetSettings")
        .await?;
    Ok(ok(
        &serde_json::json!({ "settings": [setting_of(&ctx.vault)] }),
    ))
}

async fn get_setting(
    State(st): State<AppState>,
    Extension(ctx): Ctx,
    AzPath(name): AzPath<String>,
) -> ApiResult {
    ctx.authorize_pool(&st, "/", &format!("{SETTINGS}read/action"), "GetSetting")
        .await?;
    if name != ARM_KEY_MANAGEMENT {
        return Err(unknown_setting(&name));
    }
    Ok(ok(&setting_of(&ctx.vault)))
}

#[derive(Deserialize)]
struct SettingUpdate {
    value: Option<serde_json::Value>,
}

async fn update_setting(
    State(st): State<AppState>,
    Extension(ctx): Ctx,
    AzPath(name): AzPath<String>,
    body: axum::body::Body,
) -> ApiResult {
    let action = format!("{SETTINGS}write/action");
    ctx.authorize_pool(&st, "/", &action, "UpdateSetting")
        .await?;
    let ids = st.authz.principal_ids(&ctx.principal).await?;
    let caller = keyhaven_core::managed_hsm::PoolCaller {
        ids: &ids,
        scope: "/",
        action: &action,
    };
    if name != ARM_KEY_MANAGEMENT {
        return Err(unknown_setting(&name));
    }
    let req: SettingUpdate = parse_json(&read_body(body).await?)?;
    let value = match req.value.as_ref().and_then(|v| v.as_str()) {
        Some(v @ ("true" | "false")) => v.to_owned(),
        _ => {
            return Err(Error::BadParameter(format!(
                "The value of {ARM_KEY_MANAGEMENT} must be the string \"true\" or \"false\"."
            ))
            .into())
        }
    };
    let (_, written) = st
        .service
        .modify_pool(&ctx.vault, |state| {
            caller.check(state)?;
            state
                .settings
                .insert(ARM_KEY_MANAGEMENT.to_owned(), value.clone());
            Ok(())
        })
        .await
        .map_err(admin_error)?;
    Ok(ok(&setting_of(&written)))
}

impl IntoResponse for OperationStatus {
    fn into_response(self) -> Response {
        ok(&self)
    }
}
