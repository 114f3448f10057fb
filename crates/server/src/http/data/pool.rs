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
/// How long a download whose answer was lost may be retried.
const DOWNLOAD_RETRY_SECS: i64 = 15 * 60;
/// The one setting a pool has, and its default.
pub const ARM_KEY_MANAGEMENT: &str = "AllowKeyManagementOperationsThroughARM";

/// The pool's own routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/securitydomain/download", post(download))
        .route("/securitydomain/download/pending", get(download_pending))
        .route("/securitydomain/upload", get(transfer_key).post(upload))
        .route("/securitydomain/upload/pending", get(upload_pending))
        .route("/backup", post(start_backup))
        .route("/prebackup", post(pre_backup))
        .route("/backup/{id}/{pending}", get(backup_status))
        .route("/restore", axum::routing::put(start_restore))
        .route("/prerestore", axum::routing::put(pre_restore))
        .route("/restore/{id}/{pending}", get(restore_status))
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
        AdminError::Disallowed(_) => ApiError::Http {
            status: StatusCode::FORBIDDEN,
            code: "RequestDisallowedByPolicy",
            message: "The request was disallowed by policy.".into(),
        },
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

fn with_async_operation(resp: Response, ctx: &DataCtx, which: &str) -> Response {
    let url = format!(
        "{}/securitydomain/{which}/pending?api-version={}",
        ctx.urls.base(),
        ctx.api_version.as_str()
    );
    with_status_url(resp, &url)
}

/// A long-running operation's answer: where its status is read, and a
/// one-second `Retry-After` (the operation is complete when answered).
fn with_status_url(mut resp: Response, url: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(url) {
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
            .filter(|d| {
                d.thumbprints == thumbprints
                    && d.required == required
                    && st.clock.now() - d.made <= DOWNLOAD_RETRY_SECS
            });
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
        made: st.clock.now(),
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

// --- Full backup and restore (KeyVaultBackupClient, `az keyvault backup|restore`) ---

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SasParameters {
    storage_resource_uri: Option<String>,
    token: Option<String>,
    use_managed_identity: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RestoreRequest {
    sas_token_parameters: Option<SasParameters>,
    folder_to_restore: Option<String>,
    /// Selective key restore names it `folder`.
    folder: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JobOut {
    status: String,
    status_details: Option<String>,
    error: Option<serde_json::Value>,
    start_time: i64,
    end_time: Option<i64>,
    job_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    azure_storage_blob_container_uri: Option<Option<String>>,
}

fn job_out(job: &keyhaven_core::vault::PoolJob) -> JobOut {
    JobOut {
        status: job.status.clone(),
        status_details: job.details.clone(),
        error: job.error.as_ref().map(|(code, message)| {
            serde_json::json!({"code": code, "message": message, "innererror": null})
        }),
        start_time: job.start,
        end_time: (job.status != "InProgress").then_some(job.end),
        job_id: job.id.clone(),
        azure_storage_blob_container_uri: (job.kind == "backup").then(|| job.folder_url.clone()),
    }
}

/// Where a job's status is read: `{pool}/{backup|restore}/{id}/pending`
/// (polled as the header gives it, without an api-version).
fn job_response(ctx: &DataCtx, job: &keyhaven_core::vault::PoolJob) -> Response {
    let url = format!("{}/{}/{}/pending", ctx.urls.base(), job.kind, job.id);
    with_status_url(json(StatusCode::ACCEPTED, &job_out(job)), &url)
}

/// `mhsm-{name}-{yyyyMMddHHmmss}{hundredths}` as Azure names backup folders.
fn folder_name(pool: &str, now: i64) -> String {
    let stamp: String = keyhaven_wire::oauth::iso8601(now)
        .chars()
        .filter(char::is_ascii_digit)
        .take(14)
        .collect();
    // The clock has whole seconds: the last two digits (Azure's
    // hundredths) are random, so two backups in one second differ.
    let mut r = [0u8; 1];
    let _ = openssl::rand::rand_bytes(&mut r);
    let hundredths = r[0] % 100;
    format!("mhsm-{pool}-{stamp}{hundredths:02}")
}

fn storage_of(
    st: &AppState,
    pool: &str,
    p: Option<SasParameters>,
    folder: &str,
) -> Result<crate::blob::BlobFolder, ApiError> {
    let p = p.ok_or_else(|| Error::BadParameter("The storage parameters are required.".into()))?;
    let uri = p
        .storage_resource_uri
        .ok_or_else(|| Error::BadParameter("storageResourceUri is required.".into()))?;
    // The SDK splits a folder URL after its first path segment: with a
    // path-style account URL (an emulator's) the container arrives as the
    // folder's first segment. The container is the URL up to the folder.
    let (uri, folder) = match folder.split_once('/') {
        Some((container, rest)) => (
            format!("{}/{container}", uri.trim_end_matches('/')),
            rest.to_owned(),
        ),
        None => (uri, folder.to_owned()),
    };
    let folder = folder.as_str();
    let token = if p.use_managed_identity == Some(true) {
        // The pool's managed identity: the grant the operator gave it on
        // this container (--backup-storage-identity), never the caller's.
        st.backup_storage_identity
            .sas_for(pool, &uri)
            .ok_or_else(|| {
                Error::BadParameter(
                    "The managed HSM's identity has no access to this container (the operator grants it with keyhaven serve --backup-storage-identity); or pass a SAS token.".into(),
                )
            })?
            .to_owned()
    } else {
        p.token.unwrap_or_default()
    };
    Ok(crate::blob::BlobFolder::new(
        &uri,
        folder,
        &token,
        std::sync::Arc::clone(&st.backup_storage_allow),
    )?)
}

/// What a job's work gives: its `statusDetails` and, for a backup, the
/// folder's URL.
type JobOutcome = keyhaven_core::Result<(Option<String>, Option<String>)>;

/// Starts a job: records it `InProgress` (refused while the pool runs its
/// most), answers 202 with its status URL, and runs `work` on its own task:
/// a client that goes away, or polls another node, does not stop it. Its end
/// is recorded in the pool; a job past the time limit is stopped and
/// recorded failed, and one whose node stopped is reported failed after it.
async fn start_job(
    st: &AppState,
    ctx: &DataCtx,
    kind: &str,
    work: impl std::future::Future<Output = JobOutcome> + Send + 'static,
) -> ApiResult {
    use keyhaven_core::managed_hsm::{JOB_IN_PROGRESS, JOB_LIMIT_SECS};
    let start = st.clock.now();
    let job = keyhaven_core::vault::PoolJob {
        id: keyhaven_core::Version::random().to_string(),
        kind: kind.to_owned(),
        status: JOB_IN_PROGRESS.to_owned(),
        details: None,
        error: None,
        start,
        end: start,
        folder_url: None,
    };
    st.service
        .begin_pool_job(&ctx.vault, job.clone())
        .await
        .map_err(admin_error)?;
    let (service, clock, pool, running) = (
        st.service.clone(),
        st.clock.clone(),
        ctx.vault.clone(),
        job.clone(),
    );
    let limit = std::time::Duration::from_secs(JOB_LIMIT_SECS.unsigned_abs());
    tokio::spawn(async move {
        // The work runs on a task of its own, so a panic in it, or the time
        // limit, still ends in a recorded failure.
        let task = tokio::spawn(work);
        let abort = task.abort_handle();
        let fail = |code: &str, message: &str| Err((code.to_owned(), message.to_owned()));
        let outcome = match tokio::time::timeout(limit, task).await {
            Ok(Ok(Ok(done))) => Ok(done),
            Ok(Ok(Err(e))) => {
                let (_, body) = keyhaven_wire::error_response(&e);
                Err((body.error.code, body.error.message))
            }
            Ok(Err(_)) => fail(
                "InternalError",
                "The job stopped unexpectedly; start it again.",
            ),
            Err(_) => {
                abort.abort();
                fail(
                    "JobTimeout",
                    "The job did not finish within its time limit (30 minutes).",
                )
            }
        };
        let (status, details, error, folder_url) = match outcome {
            Ok((details, folder_url)) => ("Succeeded", details, None, folder_url),
            Err((code, message)) => ("Failed", Some(message.clone()), Some((code, message)), None),
        };
        let ended = keyhaven_core::vault::PoolJob {
            status: status.to_owned(),
            details,
            error,
            end: clock.now(),
            folder_url,
            ..running
        };
        // Retried within the grace a running job has past its limit, so a
        // store that is briefly away does not turn a finished job into a
        // lost one; a pool purged meanwhile takes the job with it.
        for wait in [0u64, 2, 10, 30] {
            tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
            match service.record_pool_job(&pool, ended.clone()).await {
                Ok(()) => return,
                Err(keyhaven_core::vault_admin::AdminError::NotFound(_)) => return,
                Err(e) => {
                    tracing::warn!(pool = %pool.name, error = %e, "the end of a managed HSM job could not be recorded");
                }
            }
        }
    });
    Ok(job_response(ctx, &job))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BackupRequest {
    storage_resource_uri: Option<String>,
    token: Option<String>,
    use_managed_identity: Option<bool>,
}

/// `POST /backup` (and `/prebackup`, which checks and writes nothing).
async fn backup(st: &AppState, ctx: &DataCtx, body: axum::body::Body, write: bool) -> ApiResult {
    let auth = ctx
        .authorize(st, keyhaven_core::Operation::PoolBackup, None)
        .await?;
    let req: BackupRequest = parse_json(&read_body(body).await?)?;
    let start = st.clock.now();
    let storage = storage_of(
        st,
        ctx.vault.name.as_str(),
        Some(SasParameters {
            storage_resource_uri: req.storage_resource_uri,
            token: req.token,
            use_managed_identity: req.use_managed_identity,
        }),
        &folder_name(ctx.vault.name.as_str(), start),
    )?;
    let (service, pool) = (st.service.clone(), ctx.vault.clone());
    start_job(st, ctx, "backup", async move {
        if write {
            service.backup_pool(&auth, &pool, &storage).await.map(|n| {
                (
                    Some(format!("Number of keys backed up: {n}")),
                    Some(storage.folder_url()),
                )
            })
        } else {
            service.pool_domain(&pool).map(|_| (None, None))
        }
    })
    .await
}

async fn start_backup(
    State(st): State<AppState>,
    Extension(ctx): Ctx,
    body: axum::body::Body,
) -> ApiResult {
    backup(&st, &ctx, body, true).await
}

async fn pre_backup(
    State(st): State<AppState>,
    Extension(ctx): Ctx,
    body: axum::body::Body,
) -> ApiResult {
    backup(&st, &ctx, body, false).await
}

/// A full (`only` = None) or selective restore; `/prerestore` checks the
/// backup's manifest without restoring (`write` = false).
pub async fn restore(
    st: &AppState,
    ctx: &DataCtx,
    body: axum::body::Body,
    only: Option<&keyhaven_core::ObjectName>,
    write: bool,
) -> ApiResult {
    let auth = ctx
        .authorize(
            st,
            keyhaven_core::Operation::PoolRestore,
            only.map(keyhaven_core::ObjectName::as_str),
        )
        .await?;
    let req: RestoreRequest = parse_json(&read_body(body).await?)?;
    let folder = req.folder_to_restore.or(req.folder).ok_or_else(|| {
        Error::BadParameter("The backup folder (folderToRestore) is required.".into())
    })?;
    let storage = storage_of(
        st,
        ctx.vault.name.as_str(),
        req.sas_token_parameters,
        &folder,
    )?;
    let (service, pool, only) = (st.service.clone(), ctx.vault.clone(), only.cloned());
    start_job(st, ctx, "restore", async move {
        if write {
            service
                .restore_pool(&auth, &pool, &storage, only.as_ref())
                .await
                .map(|c| {
                    (
                        Some(format!(
                            "Number of successful keys restored: {}, Number of keys could not overwrite: {}",
                            c.restored, c.skipped
                        )),
                        None,
                    )
                })
        } else {
            service
                .check_pool_backup(&auth, &pool, &storage)
                .await
                .map(|()| (None, None))
        }
    })
    .await
}

async fn start_restore(
    State(st): State<AppState>,
    Extension(ctx): Ctx,
    body: axum::body::Body,
) -> ApiResult {
    restore(&st, &ctx, body, None, true).await
}

async fn pre_restore(
    State(st): State<AppState>,
    Extension(ctx): Ctx,
    body: axum::body::Body,
) -> ApiResult {
    restore(&st, &ctx, body, None, false).await
}

async fn job_status(st: &AppState, ctx: &DataCtx, kind: &str, id: &str) -> ApiResult {
    let action = format!("Microsoft.KeyVault/managedHsm/{kind}/status/action");
    let audit = if kind == "backup" {
        "BackupStatus"
    } else {
        "RestoreStatus"
    };
    ctx.authorize_pool(st, "/", &action, audit).await?;
    let job = ctx
        .vault
        .properties
        .managed_hsm
        .as_ref()
        .and_then(|m| {
            m.jobs
                .iter()
                .find(|j| j.kind == kind && j.id.eq_ignore_ascii_case(id))
        })
        .ok_or_else(|| ApiError::not_found("No such job."))?;
    Ok(ok(&job_out(&job.as_of(st.clock.now()))))
}

async fn backup_status(
    State(st): State<AppState>,
    Extension(ctx): Ctx,
    AzPath((id, pending)): AzPath<(String, String)>,
) -> ApiResult {
    if pending != "pending" {
        return Err(ApiError::not_found("No such job."));
    }
    job_status(&st, &ctx, "backup", &id).await
}

async fn restore_status(
    State(st): State<AppState>,
    Extension(ctx): Ctx,
    AzPath((id, pending)): AzPath<(String, String)>,
) -> ApiResult {
    if pending != "pending" {
        return Err(ApiError::not_found("No such job."));
    }
    job_status(&st, &ctx, "restore", &id).await
}

/// Job status URLs are polled as the header gives them, without an
/// api-version.
pub fn is_job_status(path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    matches!(parts.as_slice(), [kind, _, "pending"] if *kind == "backup" || *kind == "restore")
}
