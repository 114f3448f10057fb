//! Secret handlers, named after the Azure operations. Each parses its typed
//! input, obtains an `Authorized` for its one operation, calls one service
//! method and converts the result with `keyhaven_wire`.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::{get, post, put};
use axum::{Extension, Router};
use keyhaven_core::{ObjectKind, ObjectName, Operation, Version};
use keyhaven_wire::secret::{
    BackupSecretResult, DeletedSecretBundle, ListResult, SecretBundle, SecretRestoreParameters,
    SecretSetParameters, SecretUpdateParameters,
};

use super::{object_name, object_version, DataCtx};
use crate::http::extract::{AzJson, AzPath};
use crate::http::response::{no_content, ok, ApiError, ApiResult};
use crate::state::AppState;

type Ctx = Extension<Arc<DataCtx>>;

/// Every path template of the secret routes, in registration order. The
/// router is built from this list, so a test can enumerate it.
pub const ROUTE_PATHS: [&str; 6] = [
    "/secrets",
    "/secrets/{name}",
    "/secrets/{name}/{version}",
    "/deletedsecrets",
    "/deletedsecrets/{name}",
    "/deletedsecrets/{name}/recover",
];

/// Secret routes of the data plane.
pub fn routes() -> Router<AppState> {
    let [list, one, versioned, deleted_list, deleted_one, recover] = ROUTE_PATHS;
    Router::new()
        .route(list, get(get_secrets))
        .route(
            one,
            put(set_secret)
                .get(get_secret)
                .patch(update_secret)
                .delete(delete_secret)
                .post(restore_secret),
        )
        .route(
            versioned,
            get(get_secret_version)
                .patch(update_secret_version)
                .post(backup_secret),
        )
        .route(deleted_list, get(get_deleted_secrets))
        .route(
            deleted_one,
            get(get_deleted_secret).delete(purge_deleted_secret),
        )
        .route(recover, post(recover_deleted_secret))
}

fn name(raw: &str) -> Result<ObjectName, ApiError> {
    object_name(raw)
}

fn version(name: &ObjectName, raw: &str) -> Result<Version, ApiError> {
    object_version(ObjectKind::Secret, name, raw)
}

async fn set_secret(
    State(st): State<AppState>,
    Extension(ctx): Ctx,
    AzPath(raw): AzPath<String>,
    AzJson(body): AzJson<SecretSetParameters>,
) -> ApiResult {
    let name = name(&raw)?;
    let auth = ctx
        .authorize(&st, Operation::SecretSet, Some(name.as_str()))
        .await?;
    let b = st
        .service
        .set_secret(&auth, &ctx.vault, &name, body.try_into()?)
        .await?;
    Ok(ok(&SecretBundle::new(
        &b.record,
        b.value.as_ref(),
        &ctx.vault,
        &ctx.urls,
    )))
}

async fn get_secret(
    State(st): State<AppState>,
    Extension(ctx): Ctx,
    AzPath(raw): AzPath<String>,
) -> ApiResult {
    let name = name(&raw)?;
    let auth = ctx
        .authorize(&st, Operation::SecretGet, Some(name.as_str()))
        .await?;
    let b = st
        .service
        .get_secret(&auth, &ctx.vault, &name, None)
        .await?;
    Ok(ok(&SecretBundle::new(
        &b.record,
        b.value.as_ref(),
        &ctx.vault,
        &ctx.urls,
    )))
}

async fn get_secret_version(
    State(st): State<AppState>,
    Extension(ctx): Ctx,
    AzPath((raw, ver)): AzPath<(String, String)>,
) -> ApiResult {
    let name = name(&raw)?;
    if ver == "versions" {
        return get_secret_versions(&st, &ctx, &name).await;
    }
    // Authorization comes before anything that looks at the object.
    let auth = ctx
        .authorize(&st, Operation::SecretGet, Some(name.as_str()))
        .await?;
    let version = version(&name, &ver)?;
    let b = st
        .service
        .get_secret(&auth, &ctx.vault, &name, Some(&version))
        .await?;
    Ok(ok(&SecretBundle::new(
        &b.record,
        b.value.as_ref(),
        &ctx.vault,
        &ctx.urls,
    )))
}

async fn get_secret_versions(st: &AppState, ctx: &DataCtx, name: &ObjectName) -> ApiResult {
    let (cursor, limit, explicit) = ctx.paging()?;
    let auth = ctx
        .authorize(st, Operation::SecretListVersions, Some(name.as_str()))
        .await?;
    let page = st
        .service
        .list_secret_versions(&auth, &ctx.vault, name, cursor.as_deref(), limit)
        .await?;
    let items = page
        .items
        .iter()
        .map(|r| SecretBundle::item(r, &ctx.vault, &ctx.urls, true))
        .collect();
    let path = format!("/secrets/{name}/versions");
    Ok(ok(&ListResult::new(&page, items, |c| {
        ctx.urls
            .next_link(&path, ctx.api_version.as_str(), c, explicit)
    })))
}

async fn update_secret(
    st: State<AppState>,
    ctx: Ctx,
    AzPath(raw): AzPath<String>,
    body: AzJson<SecretUpdateParameters>,
) -> ApiResult {
    update(st, ctx, raw, None, body).await
}

async fn update_secret_version(
    st: State<AppState>,
    ctx: Ctx,
    AzPath((raw, ver)): AzPath<(String, String)>,
    body: AzJson<SecretUpdateParameters>,
) -> ApiResult {
    update(st, ctx, raw, Some(ver), body).await
}

async fn update(
    State(st): State<AppState>,
    Extension(ctx): Ctx,
    raw: String,
    ver: Option<String>,
    AzJson(body): AzJson<SecretUpdateParameters>,
) -> ApiResult {
    let name = name(&raw)?;
    let auth = ctx
        .authorize(&st, Operation::SecretUpdate, Some(name.as_str()))
        .await?;
    let version = ver.map(|v| version(&name, &v)).transpose()?;
    let b = st
        .service
        .update_secret(&auth, &ctx.vault, &name, version.as_ref(), body.into())
        .await?;
    Ok(ok(&SecretBundle::new(
        &b.record, None, &ctx.vault, &ctx.urls,
    )))
}

async fn get_secrets(State(st): State<AppState>, Extension(ctx): Ctx) -> ApiResult {
    let (cursor, limit, explicit) = ctx.paging()?;
    let auth = ctx.authorize(&st, Operation::SecretList, None).await?;
    let page = st
        .service
        .list_secrets(&auth, &ctx.vault, cursor.as_deref(), limit)
        .await?;
    let items = page
        .items
        .iter()
        .map(|r| SecretBundle::item(r, &ctx.vault, &ctx.urls, false))
        .collect();
    Ok(ok(&ListResult::new(&page, items, |c| {
        ctx.urls
            .next_link("/secrets", ctx.api_version.as_str(), c, explicit)
    })))
}

async fn delete_secret(
    State(st): State<AppState>,
    Extension(ctx): Ctx,
    AzPath(raw): AzPath<String>,
) -> ApiResult {
    let name = name(&raw)?;
    let auth = ctx
        .authorize(&st, Operation::SecretDelete, Some(name.as_str()))
        .await?;
    let d = st.service.delete_secret(&auth, &ctx.vault, &name).await?;
    Ok(ok(&DeletedSecretBundle::new(
        &d.record, &d.info, &ctx.vault, &ctx.urls, false,
    )))
}

async fn restore_secret(
    State(st): State<AppState>,
    Extension(ctx): Ctx,
    AzPath(raw): AzPath<String>,
    AzJson(body): AzJson<SecretRestoreParameters>,
) -> ApiResult {
    if raw != "restore" {
        return Err(ApiError::method_not_allowed());
    }
    let blob = body.blob()?;
    let auth = ctx.authorize(&st, Operation::SecretRestore, None).await?;
    let b = st.service.restore_secret(&auth, &ctx.vault, &blob).await?;
    Ok(ok(&SecretBundle::new(
        &b.record, None, &ctx.vault, &ctx.urls,
    )))
}

async fn backup_secret(
    State(st): State<AppState>,
    Extension(ctx): Ctx,
    AzPath((raw, action)): AzPath<(String, String)>,
) -> ApiResult {
    if action != "backup" {
        return Err(ApiError::method_not_allowed());
    }
    let name = name(&raw)?;
    let auth = ctx
        .authorize(&st, Operation::SecretBackup, Some(name.as_str()))
        .await?;
    let blob = st.service.backup_secret(&auth, &ctx.vault, &name).await?;
    Ok(ok(&BackupSecretResult::new(&blob)))
}

async fn get_deleted_secrets(State(st): State<AppState>, Extension(ctx): Ctx) -> ApiResult {
    let (cursor, limit, explicit) = ctx.paging()?;
    let auth = ctx
        .authorize(&st, Operation::SecretListDeleted, None)
        .await?;
    let page = st
        .service
        .list_deleted_secrets(&auth, &ctx.vault, cursor.as_deref(), limit)
        .await?;
    let items = page
        .items
        .iter()
        .map(|d| DeletedSecretBundle::new(&d.record, &d.info, &ctx.vault, &ctx.urls, true))
        .collect();
    Ok(ok(&ListResult::new(&page, items, |c| {
        ctx.urls
            .next_link("/deletedsecrets", ctx.api_version.as_str(), c, explicit)
    })))
}

async fn get_deleted_secret(
    State(st): State<AppState>,
    Extension(ctx): Ctx,
    AzPath(raw): AzPath<String>,
) -> ApiResult {
    let name = name(&raw)?;
    let auth = ctx
        .authorize(&st, Operation::SecretGetDeleted, Some(name.as_str()))
        .await?;
    let d = st
        .service
        .get_deleted_secret(&auth, &ctx.vault, &name)
        .await?;
    Ok(ok(&DeletedSecretBundle::new(
        &d.record, &d.info, &ctx.vault, &ctx.urls, false,
    )))
}

async fn purge_deleted_secret(
    State(st): State<AppState>,
    Extension(ctx): Ctx,
    AzPath(raw): AzPath<String>,
) -> ApiResult {
    let name = name(&raw)?;
    let auth = ctx
        .authorize(&st, Operation::SecretPurge, Some(name.as_str()))
        .await?;
    st.service
        .purge_deleted_secret(&auth, &ctx.vault, &name)
        .await?;
    Ok(no_content())
}

async fn recover_deleted_secret(
    State(st): State<AppState>,
    Extension(ctx): Ctx,
    AzPath(raw): AzPath<String>,
) -> ApiResult {
    let name = name(&raw)?;
    let auth = ctx
        .authorize(&st, Operation::SecretRecover, Some(name.as_str()))
        .await?;
    let b = st
        .service
        .recover_deleted_secret(&auth, &ctx.vault, &name)
        .await?;
    Ok(ok(&SecretBundle::new(
        &b.record, None, &ctx.vault, &ctx.urls,
    )))
}
