//! Certificate handlers: create (202 + the pending operation, as the SDK
//! poller expects), get, list, versions, update, policy get/update, pending
//! operation, delete/recover/purge (with the backing key and secret).

use std::sync::Arc;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Extension, Router};
use http::StatusCode;
use keyhaven_core::certificate::PolicyInput;
use keyhaven_core::{ObjectKind, ObjectName, Operation, Version};
use keyhaven_wire::certificate::{
    CertificateBundle, CertificateCreateParameters, CertificateImportParameters,
    CertificateIssuerParameters, CertificateMergeParameters, CertificateOperationOut,
    CertificateOperationUpdateParameter, CertificatePolicy, CertificateUpdateParameters, Contacts,
    DeletedCertificateBundle, IssuerBundle, IssuerItem,
};
use keyhaven_wire::secret::{
    BackupSecretResult as BackupCertificateResult, ListResult,
    SecretRestoreParameters as CertificateRestoreParameters,
};

use super::{object_name, object_version, DataCtx};
use crate::http::extract::{parse_json, read_body, AzPath};
use crate::http::response::{json, no_content, ok, ApiError, ApiResult};
use crate::state::AppState;

type Ctx = Extension<Arc<DataCtx>>;

/// Every path template of the certificate routes; the router is built from it.
pub const ROUTE_PATHS: [&str; 7] = [
    "/certificates",
    "/certificates/{name}",
    "/certificates/{name}/{version}",
    "/certificates/{name}/{version}/{op}",
    "/deletedcertificates",
    "/deletedcertificates/{name}",
    "/deletedcertificates/{name}/recover",
];

/// Certificate routes of the data plane.
pub fn routes() -> Router<AppState> {
    let [list, one, versioned, op, deleted_list, deleted_one, recover] = ROUTE_PATHS;
    Router::new()
        .route(list, get(get_certificates))
        .route(
            one,
            get(get_certificate)
                .delete(delete_certificate)
                .patch(update_certificate)
                .put(set_contacts)
                .post(restore_certificate),
        )
        .route(
            versioned,
            get(get_certificate_version)
                .post(certificate_action)
                .patch(update_certificate_version)
                .delete(delete_certificate_operation)
                .put(put_issuer),
        )
        .route(op, post(merge_certificate))
        .route(deleted_list, get(get_deleted_certificates))
        .route(
            deleted_one,
            get(get_deleted_certificate).delete(purge_deleted_certificate),
        )
        .route(recover, post(recover_deleted_certificate))
}

fn name(raw: &str) -> Result<ObjectName, ApiError> {
    object_name(raw)
}

fn version(name: &ObjectName, raw: &str) -> Result<Version, ApiError> {
    object_version(ObjectKind::Certificate, name, raw)
}

async fn get_certificate(
    State(st): State<AppState>,
    Extension(ctx): Ctx,
    AzPath(raw): AzPath<String>,
) -> ApiResult {
    match raw.as_str() {
        "issuers" => {
            let auth = ctx
                .authorize(&st, Operation::CertificateListIssuers, None)
                .await?;
            let list = st.service.list_issuers(&auth, &ctx.vault).await?;
            Ok(ok(&ListResult {
                value: list.iter().map(|i| IssuerItem::new(i, &ctx.urls)).collect(),
                next_link: None,
            }))
        }
        "contacts" => {
            let auth = ctx
                .authorize(&st, Operation::CertificateContacts, None)
                .await?;
            let list = st.service.get_contacts(&auth, &ctx.vault).await?;
            Ok(ok(&Contacts::new(&list, &ctx.urls)))
        }
        _ => get_one(State(st), Extension(ctx), raw, None).await,
    }
}

/// `POST /certificates/restore`: the literal segment in the name position.
async fn restore_certificate(
    State(st): State<AppState>,
    Extension(ctx): Ctx,
    AzPath(raw): AzPath<String>,
    body: axum::body::Body,
) -> ApiResult {
    if raw != "restore" {
        return Err(ApiError::method_not_allowed());
    }
    let auth = ctx
        .authorize(&st, Operation::CertificateRestore, None)
        .await?;
    let params: CertificateRestoreParameters = parse_json(&read_body(body).await?)?;
    let b = st
        .service
        .restore_certificate(&auth, &ctx.vault, &params.blob()?)
        .await?;
    Ok(ok(&CertificateBundle::new(
        &b.record,
        &b.meta,
        b.policy.as_ref(),
        &ctx.vault,
        &ctx.urls,
    )))
}

/// `PUT /certificates/contacts`.
async fn set_contacts(
    State(st): State<AppState>,
    Extension(ctx): Ctx,
    AzPath(raw): AzPath<String>,
    body: axum::body::Body,
) -> ApiResult {
    if raw != "contacts" {
        return Err(ApiError::method_not_allowed());
    }
    let auth = ctx
        .authorize(&st, Operation::CertificateContacts, None)
        .await?;
    let input: Contacts = parse_json(&read_body(body).await?)?;
    let list = st
        .service
        .set_contacts(&auth, &ctx.vault, input.into_contacts())
        .await?;
    Ok(ok(&Contacts::new(&list, &ctx.urls)))
}

/// `PUT /certificates/issuers/{issuer}`.
async fn put_issuer(
    st: State<AppState>,
    ctx: Ctx,
    AzPath((raw, issuer)): AzPath<(String, String)>,
    body: axum::body::Body,
) -> ApiResult {
    if raw != "issuers" {
        return Err(ApiError::method_not_allowed());
    }
    set_issuer(st, ctx, issuer, body, true).await
}

async fn set_issuer(
    State(st): State<AppState>,
    Extension(ctx): Ctx,
    issuer: String,
    body: axum::body::Body,
    create: bool,
) -> ApiResult {
    let auth = ctx
        .authorize(&st, Operation::CertificateSetIssuer, None)
        .await?;
    let name = name(&issuer)?;
    let input: CertificateIssuerParameters = parse_json(&read_body(body).await?)?;
    let i = st
        .service
        .set_issuer(&auth, &ctx.vault, &name, input.into(), create)
        .await?;
    Ok(ok(&IssuerBundle::new(&i, &ctx.urls)))
}

async fn get_one(
    State(st): State<AppState>,
    Extension(ctx): Ctx,
    raw: String,
    ver: Option<String>,
) -> ApiResult {
    let name = name(&raw)?;
    let auth = ctx
        .authorize(&st, Operation::CertificateGet, Some(name.as_str()))
        .await?;
    let version = ver.map(|v| version(&name, &v)).transpose()?;
    let b = st
        .service
        .get_certificate(&auth, &ctx.vault, &name, version.as_ref())
        .await?;
    Ok(ok(&CertificateBundle::new(
        &b.record,
        &b.meta,
        b.policy.as_ref(),
        &ctx.vault,
        &ctx.urls,
    )))
}

async fn get_certificate_version(
    State(st): State<AppState>,
    Extension(ctx): Ctx,
    AzPath((raw, ver)): AzPath<(String, String)>,
) -> ApiResult {
    if raw == "issuers" {
        let auth = ctx
            .authorize(&st, Operation::CertificateGetIssuer, None)
            .await?;
        let name = name(&ver)?;
        let i = st.service.get_issuer(&auth, &ctx.vault, &name).await?;
        return Ok(ok(&IssuerBundle::new(&i, &ctx.urls)));
    }
    match ver.as_str() {
        "versions" => {
            let name = name(&raw)?;
            let (cursor, limit, explicit) = ctx.paging()?;
            let auth = ctx
                .authorize(&st, Operation::CertificateList, Some(name.as_str()))
                .await?;
            let page = st
                .service
                .list_certificate_versions(&auth, &ctx.vault, &name, cursor.as_deref(), limit)
                .await?;
            let items = page
                .items
                .iter()
                .map(|r| CertificateBundle::item(r, &ctx.vault, &ctx.urls, true))
                .collect::<Result<Vec<_>, _>>()?;
            let path = format!("/certificates/{name}/versions");
            Ok(ok(&ListResult::new(&page, items, |c| {
                ctx.urls
                    .next_link(&path, ctx.api_version.as_str(), c, explicit)
            })))
        }
        "policy" => {
            let name = name(&raw)?;
            let auth = ctx
                .authorize(&st, Operation::CertificateGet, Some(name.as_str()))
                .await?;
            let p = st
                .service
                .get_certificate_policy(&auth, &ctx.vault, &name)
                .await?;
            Ok(ok(&CertificatePolicy::new(&p, name.as_str(), &ctx.urls)))
        }
        "pending" => {
            let name = name(&raw)?;
            let auth = ctx
                .authorize(&st, Operation::CertificateGet, Some(name.as_str()))
                .await?;
            let op = st
                .service
                .get_certificate_operation(&auth, &ctx.vault, &name)
                .await?;
            Ok(ok(&CertificateOperationOut::new(
                &op,
                name.as_str(),
                &ctx.urls,
            )))
        }
        _ => get_one(State(st), Extension(ctx), raw, Some(ver)).await,
    }
}

/// `POST /certificates/{name}/create`.
async fn certificate_action(
    State(st): State<AppState>,
    Extension(ctx): Ctx,
    AzPath((raw, action)): AzPath<(String, String)>,
    body: axum::body::Body,
) -> ApiResult {
    if action == "backup" {
        let name = name(&raw)?;
        let auth = ctx
            .authorize(&st, Operation::CertificateBackup, Some(name.as_str()))
            .await?;
        let blob = st
            .service
            .backup_certificate(&auth, &ctx.vault, &name)
            .await?;
        return Ok(ok(&BackupCertificateResult::new(&blob)));
    }
    if action == "import" {
        let name = name(&raw)?;
        let auth = ctx
            .authorize(&st, Operation::CertificateImport, Some(name.as_str()))
            .await?;
        let params: CertificateImportParameters = parse_json(&read_body(body).await?)?;
        let b = st
            .service
            .import_certificate(&auth, &ctx.vault, &name, params.try_into()?)
            .await?;
        return Ok(ok(&CertificateBundle::new(
            &b.record,
            &b.meta,
            b.policy.as_ref(),
            &ctx.vault,
            &ctx.urls,
        )));
    }
    if action != "create" {
        return Err(ApiError::method_not_allowed());
    }
    let name = name(&raw)?;
    let auth = ctx
        .authorize(&st, Operation::CertificateCreate, Some(name.as_str()))
        .await?;
    let params: CertificateCreateParameters = parse_json(&read_body(body).await?)?;
    let op = st
        .service
        .create_certificate(&auth, &ctx.vault, &name, params.into())
        .await?;
    let out = CertificateOperationOut::new(&op, name.as_str(), &ctx.urls);
    let mut resp = json(StatusCode::ACCEPTED, &out);
    let location = format!(
        "{}/pending?api-version={}",
        ctx.urls.unversioned("certificates", name.as_str()),
        ctx.api_version.as_str()
    );
    if let Ok(v) = http::HeaderValue::from_str(&location) {
        resp.headers_mut().insert(http::header::LOCATION, v);
    }
    resp.headers_mut().insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static("1"),
    );
    Ok(resp)
}

/// `DELETE /certificates/{name}/pending`.
async fn delete_certificate_operation(
    State(st): State<AppState>,
    Extension(ctx): Ctx,
    AzPath((raw, ver)): AzPath<(String, String)>,
) -> ApiResult {
    if raw == "issuers" {
        let auth = ctx
            .authorize(&st, Operation::CertificateDeleteIssuer, None)
            .await?;
        let name = name(&ver)?;
        let i = st.service.delete_issuer(&auth, &ctx.vault, &name).await?;
        return Ok(ok(&IssuerBundle::new(&i, &ctx.urls)));
    }
    if ver != "pending" {
        return Err(ApiError::method_not_allowed());
    }
    let name = name(&raw)?;
    let auth = ctx
        .authorize(&st, Operation::CertificateDelete, Some(name.as_str()))
        .await?;
    let op = st
        .service
        .delete_certificate_operation(&auth, &ctx.vault, &name)
        .await?;
    Ok(ok(&CertificateOperationOut::new(
        &op,
        name.as_str(),
        &ctx.urls,
    )))
}

/// `POST /certificates/{name}/pending/merge`.
async fn merge_certificate(
    State(st): State<AppState>,
    Extension(ctx): Ctx,
    AzPath((raw, ver, op)): AzPath<(String, String, String)>,
    body: axum::body::Body,
) -> ApiResult {
    if ver != "pending" || op != "merge" {
        return Err(ApiError::method_not_allowed());
    }
    let name = name(&raw)?;
    let auth = ctx
        .authorize(&st, Operation::CertificateCreate, Some(name.as_str()))
        .await?;
    let params: CertificateMergeParameters = parse_json(&read_body(body).await?)?;
    let b = st
        .service
        .merge_certificate(&auth, &ctx.vault, &name, params.try_into()?)
        .await?;
    Ok(json(
        StatusCode::CREATED,
        &CertificateBundle::new(&b.record, &b.meta, b.policy.as_ref(), &ctx.vault, &ctx.urls),
    ))
}

async fn update_certificate(
    st: State<AppState>,
    ctx: Ctx,
    AzPath(raw): AzPath<String>,
    body: axum::body::Body,
) -> ApiResult {
    update(st, ctx, raw, None, body).await
}

async fn update_certificate_version(
    State(st): State<AppState>,
    Extension(ctx): Ctx,
    AzPath((raw, ver)): AzPath<(String, String)>,
    body: axum::body::Body,
) -> ApiResult {
    if raw == "issuers" {
        return set_issuer(State(st), Extension(ctx), ver, body, false).await;
    }
    if ver == "pending" {
        let name = name(&raw)?;
        let auth = ctx
            .authorize(&st, Operation::CertificateUpdate, Some(name.as_str()))
            .await?;
        let p: CertificateOperationUpdateParameter = parse_json(&read_body(body).await?)?;
        if p.cancellation_requested != Some(true) {
            return Err(keyhaven_core::Error::BadParameter(
                "Only cancellation_requested: true can be set on a pending operation.".into(),
            )
            .into());
        }
        let op = st
            .service
            .cancel_certificate_operation(&auth, &ctx.vault, &name)
            .await?;
        return Ok(ok(&CertificateOperationOut::new(
            &op,
            name.as_str(),
            &ctx.urls,
        )));
    }
    if ver == "policy" {
        let name = name(&raw)?;
        let auth = ctx
            .authorize(&st, Operation::CertificateUpdate, Some(name.as_str()))
            .await?;
        let input: CertificatePolicy = parse_json(&read_body(body).await?)?;
        let p = st
            .service
            .update_certificate_policy(&auth, &ctx.vault, &name, PolicyInput::from(input))
            .await?;
        return Ok(ok(&CertificatePolicy::new(&p, name.as_str(), &ctx.urls)));
    }
    update(State(st), Extension(ctx), raw, Some(ver), body).await
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
        .authorize(&st, Operation::CertificateUpdate, Some(name.as_str()))
        .await?;
    let version = ver.map(|v| version(&name, &v)).transpose()?;
    let p: CertificateUpdateParameters = parse_json(&read_body(body).await?)?;
    if let Some(policy) = p.policy {
        st.service
            .update_certificate_policy(&auth, &ctx.vault, &name, policy.into())
            .await?;
    }
    let b = st
        .service
        .update_certificate(
            &auth,
            &ctx.vault,
            &name,
            version.as_ref(),
            p.attributes.map(Into::into).unwrap_or_default(),
            p.tags,
        )
        .await?;
    Ok(ok(&CertificateBundle::new(
        &b.record,
        &b.meta,
        b.policy.as_ref(),
        &ctx.vault,
        &ctx.urls,
    )))
}

async fn get_certificates(State(st): State<AppState>, Extension(ctx): Ctx) -> ApiResult {
    let (cursor, limit, explicit) = ctx.paging()?;
    let auth = ctx.authorize(&st, Operation::CertificateList, None).await?;
    let page = st
        .service
        .list_certificates(&auth, &ctx.vault, cursor.as_deref(), limit)
        .await?;
    let items = page
        .items
        .iter()
        .map(|r| CertificateBundle::item(r, &ctx.vault, &ctx.urls, false))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ok(&ListResult::new(&page, items, |c| {
        ctx.urls
            .next_link("/certificates", ctx.api_version.as_str(), c, explicit)
    })))
}

async fn delete_certificate(
    State(st): State<AppState>,
    Extension(ctx): Ctx,
    AzPath(raw): AzPath<String>,
) -> ApiResult {
    if raw == "contacts" {
        let auth = ctx
            .authorize(&st, Operation::CertificateContacts, None)
            .await?;
        let list = st.service.delete_contacts(&auth, &ctx.vault).await?;
        return Ok(ok(&Contacts::new(&list, &ctx.urls)));
    }
    let name = name(&raw)?;
    let auth = ctx
        .authorize(&st, Operation::CertificateDelete, Some(name.as_str()))
        .await?;
    let d = st
        .service
        .delete_certificate(&auth, &ctx.vault, &name)
        .await?;
    let bundle =
        CertificateBundle::new(&d.record, &d.meta, d.policy.as_ref(), &ctx.vault, &ctx.urls);
    Ok(ok(&DeletedCertificateBundle::new(
        bundle, &d.record, &d.info, &ctx.urls,
    )))
}

async fn get_deleted_certificates(State(st): State<AppState>, Extension(ctx): Ctx) -> ApiResult {
    let (cursor, limit, explicit) = ctx.paging()?;
    let auth = ctx
        .authorize(&st, Operation::CertificateListDeleted, None)
        .await?;
    let page = st
        .service
        .list_deleted_certificates(&auth, &ctx.vault, cursor.as_deref(), limit)
        .await?;
    let items = page
        .items
        .iter()
        .map(|(r, i)| {
            CertificateBundle::item(r, &ctx.vault, &ctx.urls, false)
                .map(|b| DeletedCertificateBundle::new(b, r, i, &ctx.urls))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ok(&ListResult::new(&page, items, |c| {
        ctx.urls.next_link(
            "/deletedcertificates",
            ctx.api_version.as_str(),
            c,
            explicit,
        )
    })))
}

async fn get_deleted_certificate(
    State(st): State<AppState>,
    Extension(ctx): Ctx,
    AzPath(raw): AzPath<String>,
) -> ApiResult {
    let name = name(&raw)?;
    let auth = ctx
        .authorize(&st, Operation::CertificateGetDeleted, Some(name.as_str()))
        .await?;
    let d = st
        .service
        .get_deleted_certificate(&auth, &ctx.vault, &name)
        .await?;
    let bundle = CertificateBundle::new(&d.record, &d.meta, None, &ctx.vault, &ctx.urls);
    Ok(ok(&DeletedCertificateBundle::new(
        bundle, &d.record, &d.info, &ctx.urls,
    )))
}

async fn recover_deleted_certificate(
    State(st): State<AppState>,
    Extension(ctx): Ctx,
    AzPath(raw): AzPath<String>,
) -> ApiResult {
    let name = name(&raw)?;
    let auth = ctx
        .authorize(&st, Operation::CertificateRecover, Some(name.as_str()))
        .await?;
    let b = st
        .service
        .recover_deleted_certificate(&auth, &ctx.vault, &name)
        .await?;
    Ok(ok(&CertificateBundle::new(
        &b.record,
        &b.meta,
        b.policy.as_ref(),
        &ctx.vault,
        &ctx.urls,
    )))
}

async fn purge_deleted_certificate(
    State(st): State<AppState>,
    Extension(ctx): Ctx,
    AzPath(raw): AzPath<String>,
) -> ApiResult {
    let name = name(&raw)?;
    let auth = ctx
        .authorize(&st, Operation::CertificatePurge, Some(name.as_str()))
        .await?;
    st.service
        .purge_deleted_certificate(&auth, &ctx.vault, &name)
        .await?;
    Ok(no_content())
}
