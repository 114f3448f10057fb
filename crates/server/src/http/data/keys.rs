//! Key handlers, named after the Azure operations: create, get, list, list
//! versions, delete/recover/purge, backup/restore, and the cryptographic
//! operations over caller-supplied data. Private key material never appears in a response.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Extension, Router};
use keyhaven_core::key::{
    AesAlgorithm, AesMode, AesRequest, CipherAlgorithm, CipherRequest, SignAlgorithm,
    SignatureCheck,
};
use keyhaven_core::{Error, ObjectKind, ObjectName, Operation, Version};
use keyhaven_wire::key::{
    decode_field, AesOperationResult, BackupKeyResult, DeletedKeyBundle, DeletedKeyItem,
    GetRandomBytesRequest, KeyBundle, KeyCreateParameters, KeyImportParameters, KeyItem,
    KeyOperationResult, KeyOperationsParameters, KeyRestoreParameters, KeySignParameters,
    KeyUpdateParameters, KeyVerifyParameters, KeyVerifyResult, RandomBytes,
};
use keyhaven_wire::rotation::{KeyRotationPolicy, KeyRotationPolicyIn};
use keyhaven_wire::secret::ListResult;

use super::{object_name, object_version, DataCtx};
use crate::http::extract::{parse_json, read_body, AzPath};
use crate::http::response::{no_content, ok, ApiError, ApiResult};
use crate::state::AppState;

type Ctx = Extension<Arc<DataCtx>>;

/// Every path template of the key routes; the router is built from it.
pub const ROUTE_PATHS: [&str; 8] = [
    "/rng",
    "/keys",
    "/keys/{name}",
    "/keys/{name}/{version}",
    "/keys/{name}/{version}/{op}",
    "/deletedkeys",
    "/deletedkeys/{name}",
    "/deletedkeys/{name}/recover",
];

/// Key routes of the data plane.
pub fn routes() -> Router<AppState> {
    let [rng, list, one, versioned, op, deleted_list, deleted_one, recover] = ROUTE_PATHS;
    Router::new()
        .route(rng, post(get_random_bytes))
        .route(list, get(get_keys))
        .route(
            one,
            get(get_key)
                .delete(delete_key)
                .put(import_key)
                .patch(update_key)
                .post(restore_key),
        )
        .route(
            versioned,
            get(get_key_version)
                .post(key_action)
                .patch(update_key_version)
                .put(set_rotation_policy),
        )
        .route(op, post(key_operation))
        .route(deleted_list, get(get_deleted_keys))
        .route(deleted_one, get(get_deleted_key).delete(purge_deleted_key))
        .route(recover, post(recover_deleted_key))
}

fn name(raw: &str) -> Result<ObjectName, ApiError> {
    object_name(raw)
}

fn version(name: &ObjectName, raw: &str) -> Result<Version, ApiError> {
    object_version(ObjectKind::Key, name, raw)
}

async fn get_key(
    State(st): State<AppState>,
    Extension(ctx): Ctx,
    AzPath(raw): AzPath<String>,
) -> ApiResult {
    let name = name(&raw)?;
    let auth = ctx
        .authorize(&st, Operation::KeyGet, Some(name.as_str()))
        .await?;
    let b = st.service.get_key(&auth, &ctx.vault, &name, None).await?;
    Ok(ok(&KeyBundle::new(
        &b.record, &b.meta, &ctx.vault, &ctx.urls,
    )))
}

async fn get_key_version(
    State(st): State<AppState>,
    Extension(ctx): Ctx,
    AzPath((raw, ver)): AzPath<(String, String)>,
) -> ApiResult {
    let name = name(&raw)?;
    if ver == "rotationpolicy" {
        let auth = ctx
            .authorize(&st, Operation::KeyGetRotationPolicy, Some(name.as_str()))
            .await?;
        let p = st
            .service
            .get_rotation_policy(&auth, &ctx.vault, &name)
            .await?;
        return Ok(ok(&KeyRotationPolicy::new(&p, name.as_str(), &ctx.urls)));
    }
    if ver == "versions" {
        let (cursor, limit, explicit) = ctx.paging()?;
        let auth = ctx
            .authorize(&st, Operation::KeyListVersions, Some(name.as_str()))
            .await?;
        let page = st
            .service
            .list_key_versions(&auth, &ctx.vault, &name, cursor.as_deref(), limit)
            .await?;
        let items = page
            .items
            .iter()
            .map(|r| KeyItem::new(r, &ctx.vault, &ctx.urls, true))
            .collect();
        let path = format!("/keys/{name}/versions");
        return Ok(ok(&ListResult::new(&page, items, |c| {
            ctx.urls
                .next_link(&path, ctx.api_version.as_str(), c, explicit)
        })));
    }
    let auth = ctx
        .authorize(&st, Operation::KeyGet, Some(name.as_str()))
        .await?;
    let version = version(&name, &ver)?;
    let b = st
        .service
        .get_key(&auth, &ctx.vault, &name, Some(&version))
        .await?;
    Ok(ok(&KeyBundle::new(
        &b.record, &b.meta, &ctx.vault, &ctx.urls,
    )))
}

/// `POST /keys/{name}/create`, and `…/sign|verify` with the version left out
/// (an empty version segment means the latest).
async fn key_action(
    st: State<AppState>,
    ctx: Ctx,
    AzPath((raw, action)): AzPath<(String, String)>,
    body: axum::body::Body,
) -> ApiResult {
    match action.as_str() {
        "create" => create_key(st, ctx, raw, body).await,
        "backup" => backup_key(st, ctx, raw).await,
        "rotate" => rotate_key(st, ctx, raw).await,
        "sign" | "verify" | "encrypt" | "decrypt" | "wrapkey" | "unwrapkey" => {
            operate(st, ctx, raw, None, action, body).await
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

async fn key_operation(
    st: State<AppState>,
    ctx: Ctx,
    AzPath((raw, ver, op)): AzPath<(String, String, String)>,
    body: axum::body::Body,
) -> ApiResult {
    operate(st, ctx, raw, Some(ver), op, body).await
}

async fn create_key(
    State(st): State<AppState>,
    Extension(ctx): Ctx,
    raw: String,
    body: axum::body::Body,
) -> ApiResult {
    let name = name(&raw)?;
    let auth = ctx
        .authorize(&st, Operation::KeyCreate, Some(name.as_str()))
        .await?;
    let params: KeyCreateParameters = parse_json(&read_body(body).await?)?;
    let b = st
        .service
        .create_key(&auth, &ctx.vault, &name, params.try_into()?)
        .await?;
    Ok(ok(&KeyBundle::new(
        &b.record, &b.meta, &ctx.vault, &ctx.urls,
    )))
}

async fn operate(
    State(st): State<AppState>,
    Extension(ctx): Ctx,
    raw: String,
    ver: Option<String>,
    op: String,
    body: axum::body::Body,
) -> ApiResult {
    let name = name(&raw)?;
    let operation = match op.as_str() {
        "sign" => Operation::KeySign,
        "verify" => Operation::KeyVerify,
        "encrypt" => Operation::KeyEncrypt,
        "decrypt" => Operation::KeyDecrypt,
        "wrapkey" => Operation::KeyWrap,
        "unwrapkey" => Operation::KeyUnwrap,
        _ => {
            return Err(ApiError::not_found(
                "The requested resource does not exist on the vault.",
            ))
        }
    };
    let auth = ctx.authorize(&st, operation, Some(name.as_str())).await?;
    let version = ver.map(|v| version(&name, &v)).transpose()?;
    let bytes = read_body(body).await?;
    if matches!(
        operation,
        Operation::KeyEncrypt | Operation::KeyWrap | Operation::KeyDecrypt | Operation::KeyUnwrap
    ) {
        let p: KeyOperationsParameters = parse_json(&bytes)?;
        let wrap = matches!(operation, Operation::KeyWrap | Operation::KeyUnwrap);
        let alg_name = p.alg.as_deref().unwrap_or("");
        if let Some(alg) = AesAlgorithm::parse(alg_name) {
            let data = decode_field(p.value.as_deref(), "value")?;
            let field = |v: Option<&str>, n: &str| v.map(|v| decode_field(Some(v), n)).transpose();
            let iv = field(p.iv.as_deref(), "iv")?;
            let aad = field(p.aad.as_deref(), "aad")?;
            let tag = field(p.tag.as_deref(), "tag")?;
            let encrypt = matches!(operation, Operation::KeyEncrypt | Operation::KeyWrap);
            let request = AesRequest {
                encrypt,
                alg,
                data: &data,
                iv: iv.as_deref(),
                aad: aad.as_deref(),
                tag: tag.as_deref(),
            };
            let (rec, out) = st
                .service
                .symmetric(&auth, &ctx.vault, (&name, version.as_ref()), wrap, request)
                .await?;
            // Azure echoes the aad of a GCM encryption, nothing else's.
            let echo = (encrypt && alg.mode == AesMode::Gcm)
                .then_some(aad.as_deref())
                .flatten();
            return Ok(ok(&AesOperationResult::new(
                &rec, &ctx.urls, alg_name, &out, echo,
            )));
        }
        let alg = CipherAlgorithm::parse(alg_name)?;
        let data = decode_field(p.value.as_deref(), "value")?;
        let request = CipherRequest {
            wrap,
            alg,
            data: &data,
        };
        return if matches!(operation, Operation::KeyEncrypt | Operation::KeyWrap) {
            let (rec, ct) = st
                .service
                .encrypt(&auth, &ctx.vault, &name, version.as_ref(), request)
                .await?;
            Ok(ok(&KeyOperationResult::new(&rec, &ctx.urls, &ct)))
        } else {
            let (rec, pt) = st
                .service
                .decrypt(&auth, &ctx.vault, &name, version.as_ref(), request)
                .await?;
            Ok(ok(&KeyOperationResult::new(&rec, &ctx.urls, pt.expose())))
        };
    }
    if operation == Operation::KeySign {
        let p: KeySignParameters = parse_json(&bytes)?;
        let alg = SignAlgorithm::parse(p.alg.as_deref().unwrap_or(""))?;
        let digest = decode_field(p.value.as_deref(), "value")?;
        let (rec, sig) = st
            .service
            .sign(&auth, &ctx.vault, &name, version.as_ref(), alg, &digest)
            .await?;
        Ok(ok(&KeyOperationResult::new(&rec, &ctx.urls, &sig)))
    } else {
        let p: KeyVerifyParameters = parse_json(&bytes)?;
        let alg = SignAlgorithm::parse(p.alg.as_deref().unwrap_or(""))?;
        let digest = decode_field(p.digest.as_deref(), "digest")?;
        let sig = decode_field(p.value.as_deref(), "value")?;
        let valid = st
            .service
            .verify(
                &auth,
                &ctx.vault,
                &name,
                version.as_ref(),
                SignatureCheck {
                    alg,
                    digest: &digest,
                    signature: &sig,
                },
            )
            .await?;
        Ok(ok(&KeyVerifyResult { value: valid }))
    }
}

async fn get_keys(State(st): State<AppState>, Extension(ctx): Ctx) -> ApiResult {
    let (cursor, limit, explicit) = ctx.paging()?;
    let auth = ctx.authorize(&st, Operation::KeyList, None).await?;
    let page = st
        .service
        .list_keys(&auth, &ctx.vault, cursor.as_deref(), limit)
        .await?;
    let items = page
        .items
        .iter()
        .map(|r| KeyItem::new(r, &ctx.vault, &ctx.urls, false))
        .collect();
    Ok(ok(&ListResult::new(&page, items, |c| {
        ctx.urls
            .next_link("/keys", ctx.api_version.as_str(), c, explicit)
    })))
}

async fn delete_key(
    State(st): State<AppState>,
    Extension(ctx): Ctx,
    AzPath(raw): AzPath<String>,
) -> ApiResult {
    let name = name(&raw)?;
    let auth = ctx
        .authorize(&st, Operation::KeyDelete, Some(name.as_str()))
        .await?;
    let d = st.service.delete_key(&auth, &ctx.vault, &name).await?;
    Ok(ok(&DeletedKeyBundle::new(
        &d.record, &d.meta, &d.info, &ctx.vault, &ctx.urls,
    )))
}

async fn get_deleted_keys(State(st): State<AppState>, Extension(ctx): Ctx) -> ApiResult {
    let (cursor, limit, explicit) = ctx.paging()?;
    let auth = ctx.authorize(&st, Operation::KeyListDeleted, None).await?;
    let page = st
        .service
        .list_deleted_keys(&auth, &ctx.vault, cursor.as_deref(), limit)
        .await?;
    let items = page
        .items
        .iter()
        .map(|(r, i)| DeletedKeyItem::new(r, i, &ctx.vault, &ctx.urls))
        .collect();
    Ok(ok(&ListResult::new(&page, items, |c| {
        ctx.urls
            .next_link("/deletedkeys", ctx.api_version.as_str(), c, explicit)
    })))
}

async fn get_deleted_key(
    State(st): State<AppState>,
    Extension(ctx): Ctx,
    AzPath(raw): AzPath<String>,
) -> ApiResult {
    let name = name(&raw)?;
    let auth = ctx
        .authorize(&st, Operation::KeyGetDeleted, Some(name.as_str()))
        .await?;
    let d = st.service.get_deleted_key(&auth, &ctx.vault, &name).await?;
    Ok(ok(&DeletedKeyBundle::new(
        &d.record, &d.meta, &d.info, &ctx.vault, &ctx.urls,
    )))
}

async fn purge_deleted_key(
    State(st): State<AppState>,
    Extension(ctx): Ctx,
    AzPath(raw): AzPath<String>,
) -> ApiResult {
    let name = name(&raw)?;
    let auth = ctx
        .authorize(&st, Operation::KeyPurge, Some(name.as_str()))
        .await?;
    st.service
        .purge_deleted_key(&auth, &ctx.vault, &name)
        .await?;
    Ok(no_content())
}

async fn recover_deleted_key(
    State(st): State<AppState>,
    Extension(ctx): Ctx,
    AzPath(raw): AzPath<String>,
) -> ApiResult {
    let name = name(&raw)?;
    let auth = ctx
        .authorize(&st, Operation::KeyRecover, Some(name.as_str()))
        .await?;
    let b = st
        .service
        .recover_deleted_key(&auth, &ctx.vault, &name)
        .await?;
    Ok(ok(&KeyBundle::new(
        &b.record, &b.meta, &ctx.vault, &ctx.urls,
    )))
}

async fn import_key(
    State(st): State<AppState>,
    Extension(ctx): Ctx,
    AzPath(raw): AzPath<String>,
    body: axum::body::Body,
) -> ApiResult {
    let name = name(&raw)?;
    let auth = ctx
        .authorize(&st, Operation::KeyImport, Some(name.as_str()))
        .await?;
    let params: KeyImportParameters = parse_json(&read_body(body).await?)?;
    let (jwk, ops, tags, attributes, hsm) = params.into_import()?;
    let b = st
        .service
        .import_key(&auth, &ctx.vault, &name, jwk, ops, (tags, attributes, hsm))
        .await?;
    Ok(ok(&KeyBundle::new(
        &b.record, &b.meta, &ctx.vault, &ctx.urls,
    )))
}

async fn backup_key(State(st): State<AppState>, Extension(ctx): Ctx, raw: String) -> ApiResult {
    let name = name(&raw)?;
    let auth = ctx
        .authorize(&st, Operation::KeyBackup, Some(name.as_str()))
        .await?;
    let blob = st.service.backup_key(&auth, &ctx.vault, &name).await?;
    Ok(ok(&BackupKeyResult::new(&blob)))
}

/// `PUT /keys/{name}/rotationpolicy`: the literal segment in the version position.
async fn set_rotation_policy(
    State(st): State<AppState>,
    Extension(ctx): Ctx,
    AzPath((raw, segment)): AzPath<(String, String)>,
    body: axum::body::Body,
) -> ApiResult {
    if segment == "restore" && ctx.vault.is_managed_hsm() {
        // A managed HSM's selective key restore: `PUT /keys/{name}/restore`.
        let name = name(&raw)?;
        return super::pool::restore(&st, &ctx, body, Some(&name), true).await;
    }
    if segment != "rotationpolicy" {
        return Err(ApiError::method_not_allowed());
    }
    let name = name(&raw)?;
    let auth = ctx
        .authorize(&st, Operation::KeySetRotationPolicy, Some(name.as_str()))
        .await?;
    let params: KeyRotationPolicyIn = parse_json(&read_body(body).await?)?;
    let p = st
        .service
        .set_rotation_policy(&auth, &ctx.vault, &name, params.try_into()?)
        .await?;
    Ok(ok(&KeyRotationPolicy::new(&p, name.as_str(), &ctx.urls)))
}

async fn rotate_key(State(st): State<AppState>, Extension(ctx): Ctx, raw: String) -> ApiResult {
    let name = name(&raw)?;
    let auth = ctx
        .authorize(&st, Operation::KeyRotate, Some(name.as_str()))
        .await?;
    let b = st.service.rotate_key(&auth, &ctx.vault, &name).await?;
    Ok(ok(&KeyBundle::new(
        &b.record, &b.meta, &ctx.vault, &ctx.urls,
    )))
}

/// `POST /keys/restore`: the literal segment `restore` in the name position.
async fn restore_key(
    State(st): State<AppState>,
    Extension(ctx): Ctx,
    AzPath(raw): AzPath<String>,
    body: axum::body::Body,
) -> ApiResult {
    if raw != "restore" {
        return Err(ApiError::method_not_allowed());
    }
    let auth = ctx.authorize(&st, Operation::KeyRestore, None).await?;
    let params: KeyRestoreParameters = parse_json(&read_body(body).await?)?;
    let b = st
        .service
        .restore_key(&auth, &ctx.vault, &params.blob()?)
        .await?;
    Ok(ok(&KeyBundle::new(
        &b.record, &b.meta, &ctx.vault, &ctx.urls,
    )))
}

async fn update_key(
    st: State<AppState>,
    ctx: Ctx,
    AzPath(raw): AzPath<String>,
    body: axum::body::Body,
) -> ApiResult {
    update(st, ctx, raw, None, body).await
}

async fn update_key_version(
    st: State<AppState>,
    ctx: Ctx,
    AzPath((raw, ver)): AzPath<(String, String)>,
    body: axum::body::Body,
) -> ApiResult {
    update(st, ctx, raw, Some(ver), body).await
}

async fn update(
    State(st): State<AppState>,
    Extension(ctx): Ctx,
    raw: String,
    ver: Option<String>,
    body: axum::body::Body,
) -> ApiResult {
    let name = name(&raw)?;
    let auth = ctx
        .authorize(&st, Operation::KeyUpdate, Some(name.as_str()))
        .await?;
    let version = ver.map(|v| version(&name, &v)).transpose()?;
    let params: KeyUpdateParameters = parse_json(&read_body(body).await?)?;
    let b = st
        .service
        .update_key(
            &auth,
            &ctx.vault,
            &name,
            version.as_ref(),
            params.try_into()?,
        )
        .await?;
    Ok(ok(&KeyBundle::new(
        &b.record, &b.meta, &ctx.vault, &ctx.urls,
    )))
}

/// `POST /rng`: 1–128 random bytes (Managed HSM only on Azure; any vault here).
async fn get_random_bytes(
    State(st): State<AppState>,
    Extension(ctx): Ctx,
    body: axum::body::Body,
) -> ApiResult {
    if ctx.vault.is_managed_hsm() {
        ctx.authorize_pool(
            &st,
            "/",
            "Microsoft.KeyVault/managedHsm/rng/action",
            "GetRandomBytes",
        )
        .await?;
    } else {
        // Random bytes reveal nothing about the vault: any caller allowed to read keys may ask.
        ctx.authorize(&st, Operation::KeyList, None).await?;
    }
    let params: GetRandomBytesRequest = parse_json(&read_body(body).await?)?;
    let count = params.count.unwrap_or(0);
    if !(1..=128).contains(&count) {
        return Err(Error::BadParameter("count must be between 1 and 128.".into()).into());
    }
    let mut bytes = vec![0u8; usize::try_from(count).unwrap_or(0)];
    openssl::rand::rand_bytes(&mut bytes).map_err(|_| Error::Integrity)?;
    Ok(ok(&RandomBytes::new(&bytes)))
}
