//! The Microsoft Graph v1.0 subset at `graph.{domain}`: users, groups and
//! membership, applications and their credentials, service principals, `/me`.
//! Every request is authenticated with a Graph-audience token; writes need a
//! directory role (checked in `keyhaven_identity::Directory`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::StatusCode;
use keyhaven_core::directory::{ApplicationRecord, PrincipalRecord};
use keyhaven_core::{Principal, PrincipalKind, Sensitive};
use keyhaven_identity::credentials::FederatedCredential;
use keyhaven_identity::directory::{
    credentials_of, ApplicationAttrs, DirectoryError, NewGroup, NewKeyCredential, NewUser,
    PrincipalAttrs, UserPatch,
};
use keyhaven_wire::graph::{
    self as g, AddPassword, ApplicationInput, Collection, CreateGroup, CreateServicePrincipal,
    CreateUser, FederatedIdentityCredential, GraphError, GraphErrorDetail, GraphInnerError,
    KeyCredentialOut, PasswordCredentialOut, Reference, RemovePassword, UpdateUser,
};
use keyhaven_wire::oauth::iso8601;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tower::ServiceExt as _;

use crate::http::extract::{query_map, read_body};
use crate::http::response::{json, no_content};
use crate::state::AppState;

/// Default and largest `$top`.
const DEFAULT_TOP: u32 = 100;
const MAX_TOP: u32 = 999;

/// A Graph-plane failure.
pub struct GraphFailure {
    status: StatusCode,
    code: &'static str,
    message: String,
    now: i64,
}

impl IntoResponse for GraphFailure {
    fn into_response(self) -> Response {
        let id = uuid::Uuid::new_v4().to_string();
        json(
            self.status,
            &GraphError {
                error: GraphErrorDetail {
                    code: self.code,
                    message: self.message,
                    inner_error: GraphInnerError {
                        date: iso8601(self.now),
                        request_id: id.clone(),
                        client_request_id: id,
                    },
                },
            },
        )
    }
}

type GraphResult = Result<Response, GraphFailure>;

struct Ctx {
    caller: Principal,
    base: String,
    now: i64,
    query: std::collections::HashMap<String, String>,
}

impl Ctx {
    fn fail(&self, e: DirectoryError) -> GraphFailure {
        let (status, code) = match &e {
            DirectoryError::NotFound(_) => (StatusCode::NOT_FOUND, "Request_ResourceNotFound"),
            DirectoryError::BadRequest(_) => (StatusCode::BAD_REQUEST, "Request_BadRequest"),
            DirectoryError::Forbidden => (StatusCode::FORBIDDEN, "Authorization_RequestDenied"),
            DirectoryError::Conflict(_) => (StatusCode::CONFLICT, "Request_BadRequest"),
            DirectoryError::Store(err) => {
                tracing::warn!(error = %err, "directory store failed");
                return self.failure(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "serviceNotAvailable",
                    "The service is temporarily unavailable.",
                );
            }
            DirectoryError::Credential(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError")
            }
        };
        GraphFailure {
            status,
            code,
            message: e.to_string(),
            now: self.now,
        }
    }

    fn failure(&self, status: StatusCode, code: &'static str, message: &str) -> GraphFailure {
        GraphFailure {
            status,
            code,
            message: message.to_owned(),
            now: self.now,
        }
    }

    fn bad(&self, message: &str) -> GraphFailure {
        self.failure(StatusCode::BAD_REQUEST, "Request_BadRequest", message)
    }

    fn context(&self, what: &str) -> BTreeMap<&'static str, String> {
        BTreeMap::from([("@odata.context", format!("{}/$metadata#{what}", self.base))])
    }

    fn page(&self) -> Result<(Option<String>, u32), GraphFailure> {
        let top = match self.query.get("$top") {
            Some(t) => t
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=MAX_TOP).contains(n))
                .ok_or_else(|| {
                    self.bad(
                        "Invalid page size specified: '$top'. Must be between 1 and 999 inclusive.",
                    )
                })?,
            None => DEFAULT_TOP,
        };
        let cursor = match self.query.get("$skiptoken") {
            Some(t) => Some(
                keyhaven_wire::paging::decode_skiptoken(t)
                    .map_err(|_| self.bad("Invalid $skiptoken."))?,
            ),
            None => None,
        };
        Ok((cursor, top))
    }

    fn next_link(&self, path: &str, next: Option<&String>, top: u32) -> Option<String> {
        next.map(|c| {
            format!(
                "{}{path}?$top={top}&$skiptoken={}",
                self.base,
                keyhaven_wire::paging::encode_skiptoken(c)
            )
        })
    }
}

/// The Graph plane's router (reached only through `handle`).
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1.0/me", get(me))
        .route("/v1.0/directoryObjects/getByIds", post(get_by_ids))
        .route("/v1.0/users", get(list_users).post(create_user))
        .route(
            "/v1.0/users/{id}",
            get(get_user).patch(update_user).delete(delete_user),
        )
        .route("/v1.0/groups", get(list_groups).post(create_group))
        .route("/v1.0/groups/{id}", get(get_group).delete(delete_group))
        .route("/v1.0/groups/{id}/members", get(group_members))
        .route(
            "/v1.0/groups/{id}/transitiveMembers",
            get(group_transitive_members),
        )
        .route("/v1.0/groups/{id}/members/$ref", post(add_member))
        .route(
            "/v1.0/groups/{id}/members/{member}/$ref",
            axum::routing::delete(remove_member),
        )
        .route(
            "/v1.0/applications",
            get(list_applications).post(create_application),
        )
        .route(
            "/v1.0/applications/{id}",
            get(get_application)
                .patch(update_application)
                .delete(delete_application),
        )
        .route("/v1.0/applications/{id}/addPassword", post(add_password))
        .route(
            "/v1.0/applications/{id}/removePassword",
            post(remove_password),
        )
        .route(
            "/v1.0/applications/{id}/federatedIdentityCredentials",
            get(list_federated).post(add_federated),
        )
        .route(
            "/v1.0/servicePrincipals",
            get(list_service_principals).post(create_service_principal),
        )
        .route(
            "/v1.0/servicePrincipals/{id}",
            get(get_service_principal)
                .patch(update_service_principal)
                .delete(delete_service_principal),
        )
        .fallback(|State(st): State<AppState>| async move {
            GraphFailure {
                status: StatusCode::BAD_REQUEST,
                code: "BadRequest",
                message: "Resource not found for the segment.".into(),
                now: st.clock.now(),
            }
        })
        .method_not_allowed_fallback(|State(st): State<AppState>| async move {
            GraphFailure {
                status: StatusCode::METHOD_NOT_ALLOWED,
                code: "Request_BadRequest",
                message: "The requested method is not allowed on this resource.".into(),
                now: st.clock.now(),
            }
        })
        .with_state(state)
}

/// Authenticates a Graph request and dispatches it.
pub async fn handle(state: &AppState, router: Router, mut req: Request) -> Response {
    let now = state.clock.now();
    let token = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_owned());
    let unauthorized = |message: &str| {
        GraphFailure {
            status: StatusCode::UNAUTHORIZED,
            code: "InvalidAuthenticationToken",
            message: message.to_owned(),
            now,
        }
        .into_response()
    };
    let Some(token) = token else {
        return unauthorized("Access token is empty.");
    };
    let caller =
        match state
            .tokens
            .validate(&token, &state.endpoints.graph_url(), now)
        {
            Ok(p) => p,
            Err(_) => return unauthorized(
                "Access token validation failure. Invalid audience, issuer, signature or lifetime.",
            ),
        };
    let ctx = Ctx {
        caller,
        base: format!("{}/v1.0", state.endpoints.graph_url()),
        now,
        query: query_map(req.uri().query()),
    };
    req.extensions_mut().insert(Arc::new(ctx));
    router.oneshot(req).await.unwrap_or_else(|e| match e {})
}

type C = Extension<Arc<Ctx>>;

async fn body<T: DeserializeOwned>(ctx: &Ctx, req: Request) -> Result<T, GraphFailure> {
    let bytes = read_body(req.into_body()).await.map_err(|_| {
        ctx.failure(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Request_BadRequest",
            "The request body is too large.",
        )
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ctx.bad(&format!(
            "Invalid request body (line {}, column {}).",
            e.line(),
            e.column()
        ))
    })
}

fn created<T: Serialize>(v: &T) -> GraphResult {
    Ok(json(StatusCode::CREATED, v))
}

fn ok<T: Serialize>(v: &T) -> GraphResult {
    Ok(json(StatusCode::OK, v))
}

fn odata_type(kind: &str) -> &'static str {
    match kind {
        "user" => "#microsoft.graph.user",
        "group" => "#microsoft.graph.group",
        _ => "#microsoft.graph.servicePrincipal",
    }
}

fn user_out(p: &PrincipalRecord, odata: BTreeMap<&'static str, String>) -> g::User {
    let attrs = PrincipalAttrs::of(p);
    g::User {
        odata,
        id: p.object_id.clone(),
        business_phones: Vec::new(),
        display_name: p.display_name.clone(),
        given_name: None,
        job_title: None,
        mail: None,
        mail_nickname: attrs.mail_nickname,
        mobile_phone: None,
        office_location: None,
        preferred_language: None,
        surname: None,
        user_principal_name: p.upn.clone().unwrap_or_default(),
        account_enabled: p.enabled,
    }
}

fn group_out(p: &PrincipalRecord, odata: BTreeMap<&'static str, String>) -> g::Group {
    let attrs = PrincipalAttrs::of(p);
    g::Group {
        odata,
        id: p.object_id.clone(),
        display_name: p.display_name.clone(),
        description: attrs.description,
        group_types: Vec::new(),
        mail_enabled: attrs.mail_enabled.unwrap_or(false),
        mail_nickname: attrs.mail_nickname,
        security_enabled: attrs.security_enabled.unwrap_or(true),
    }
}

fn sp_out(p: &PrincipalRecord, odata: BTreeMap<&'static str, String>) -> g::ServicePrincipal {
    let attrs = PrincipalAttrs::of(p);
    let app_id = p.app_id.clone().unwrap_or_default();
    g::ServicePrincipal {
        odata,
        id: p.object_id.clone(),
        app_id: app_id.clone(),
        display_name: p.display_name.clone(),
        account_enabled: p.enabled,
        service_principal_type: attrs
            .service_principal_type
            .unwrap_or_else(|| "Application".into()),
        app_owner_organization_id: p.tenant_id.clone(),
        service_principal_names: vec![app_id],
    }
}

/// Any directory object, as a member-list item.
#[derive(Serialize)]
#[serde(untagged)]
enum DirectoryObject {
    User(g::User),
    Group(g::Group),
    ServicePrincipal(g::ServicePrincipal),
}

fn object_out(p: &PrincipalRecord) -> DirectoryObject {
    let odata = BTreeMap::from([("@odata.type", odata_type(&p.kind).to_owned())]);
    match p.kind.as_str() {
        "user" => DirectoryObject::User(user_out(p, odata)),
        "group" => DirectoryObject::Group(group_out(p, odata)),
        _ => DirectoryObject::ServicePrincipal(sp_out(p, odata)),
    }
}

fn app_out(a: &ApplicationRecord, odata: BTreeMap<&'static str, String>) -> g::Application {
    let creds = credentials_of(a);
    g::Application {
        odata,
        id: a.object_id.clone(),
        app_id: a.app_id.clone(),
        display_name: a.display_name.clone(),
        sign_in_audience: "AzureADMyOrg",
        public_client: ApplicationAttrs::of(a).public_client,
        password_credentials: creds
            .passwords
            .iter()
            .map(|p| PasswordCredentialOut {
                key_id: p.key_id.clone(),
                display_name: p.display_name.clone(),
                hint: p.hint.clone(),
                start: iso8601(p.start),
                end: p.end.map(iso8601),
                secret_text: None,
                custom_key_identifier: None,
            })
            .collect(),
        key_credentials: creds
            .keys
            .iter()
            .map(|k| KeyCredentialOut {
                key_id: k.key_id.clone(),
                display_name: k.display_name.clone(),
                kind: k.kind.clone(),
                usage: k.usage.clone(),
                start: iso8601(k.start),
                end: iso8601(k.end),
                custom_key_identifier: base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(&k.x5t)
                    .map(|b| STANDARD.encode(b))
                    .unwrap_or_default(),
                key: None,
            })
            .collect(),
        created: iso8601(a.created),
    }
}

async fn list_kind(st: &AppState, ctx: &Ctx, kind: PrincipalKind, path: &str) -> GraphResult {
    let (cursor, top) = ctx.page()?;
    let page = st
        .directory
        .list(kind, cursor.as_deref(), top)
        .await
        .map_err(|e| ctx.fail(e))?;
    let value: Vec<DirectoryObject> = page
        .items
        .iter()
        .map(|p| match object_out(p) {
            DirectoryObject::User(mut u) => {
                u.odata.clear();
                DirectoryObject::User(u)
            }
            DirectoryObject::Group(mut g) => {
                g.odata.clear();
                DirectoryObject::Group(g)
            }
            DirectoryObject::ServicePrincipal(mut s) => {
                s.odata.clear();
                DirectoryObject::ServicePrincipal(s)
            }
        })
        .collect();
    ok(&Collection {
        context: format!("{}/$metadata#{}", ctx.base, path.trim_start_matches('/')),
        value,
        next_link: ctx.next_link(path, page.next.as_ref(), top),
    })
}

/// `POST /directoryObjects/getByIds` body.
#[derive(serde::Deserialize)]
struct GetByIds {
    ids: Vec<String>,
    #[serde(default)]
    types: Vec<String>,
}

/// `POST /directoryObjects/getByIds`: the objects among `ids` that exist
/// and are of one of `types` (all types if none); unknown ids are left out,
/// as Graph does. `az role assignment list` resolves principal names here.
async fn get_by_ids(State(st): State<AppState>, Extension(ctx): C, req: Request) -> GraphResult {
    let b: GetByIds = body(&ctx, req).await?;
    if b.ids.is_empty() || b.ids.len() > 1000 {
        return Err(ctx.bad("Between 1 and 1000 ids are required."));
    }
    if let Some(bad) = b.ids.iter().find(|id| uuid::Uuid::parse_str(id).is_err()) {
        let shown: String = bad.chars().take(64).collect();
        return Err(ctx.bad(&format!("Invalid object identifier '{shown}'.")));
    }
    let wanted = |kind: &str| {
        b.types.is_empty()
            || b.types.iter().any(|t| {
                let t = t.strip_prefix("microsoft.graph.").unwrap_or(t);
                t.eq_ignore_ascii_case(kind)
                    || (kind == "servicePrincipal" && t.eq_ignore_ascii_case("serviceprincipal"))
                    || t.eq_ignore_ascii_case("directoryObject")
            })
    };
    let mut value = Vec::new();
    for id in &b.ids {
        let p = match st.directory.principal(id).await {
            Ok(p) => p,
            Err(DirectoryError::NotFound(_)) => continue,
            Err(e) => return Err(ctx.fail(e)),
        };
        let kind = match p.kind.as_str() {
            "user" => "user",
            "group" => "group",
            _ => "servicePrincipal",
        };
        if wanted(kind) {
            value.push(object_out(&p));
        }
    }
    ok(&Collection {
        context: format!("{}/$metadata#directoryObjects", ctx.base),
        value,
        next_link: None,
    })
}

// ---------------- users ----------------

async fn me(State(st): State<AppState>, Extension(ctx): C) -> GraphResult {
    let p = st
        .directory
        .principal(&ctx.caller.object_id)
        .await
        .map_err(|e| ctx.fail(e))?;
    if p.kind != PrincipalKind::User.as_str() {
        return Err(ctx.bad("/me request is only valid with delegated authentication flow."));
    }
    ok(&user_out(&p, ctx.context("users/$entity")))
}

async fn list_users(State(st): State<AppState>, Extension(ctx): C) -> GraphResult {
    list_kind(&st, &ctx, PrincipalKind::User, "/users").await
}

async fn create_user(State(st): State<AppState>, Extension(ctx): C, req: Request) -> GraphResult {
    let b: CreateUser = body(&ctx, req).await?;
    let password = b
        .password_profile
        .and_then(|p| p.password)
        .map(Sensitive::new)
        .ok_or_else(|| ctx.bad("Property 'passwordProfile' is required."))?;
    let (Some(upn), Some(display_name)) = (b.user_principal_name, b.display_name) else {
        return Err(ctx.bad("Properties 'userPrincipalName' and 'displayName' are required."));
    };
    let user = st
        .directory
        .create_user(
            &ctx.caller,
            NewUser {
                upn,
                display_name,
                mail_nickname: b.mail_nickname,
                password,
                enabled: b.account_enabled.unwrap_or(true),
            },
        )
        .await
        .map_err(|e| ctx.fail(e))?;
    created(&user_out(&user, ctx.context("users/$entity")))
}

async fn get_user(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path(id): Path<String>,
) -> GraphResult {
    let u = st.directory.user(&id).await.map_err(|e| ctx.fail(e))?;
    ok(&user_out(&u, ctx.context("users/$entity")))
}

async fn update_user(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path(id): Path<String>,
    req: Request,
) -> GraphResult {
    let b: UpdateUser = body(&ctx, req).await?;
    let patch = UserPatch {
        display_name: b.display_name,
        enabled: b.account_enabled,
        password: b
            .password_profile
            .and_then(|p| p.password)
            .map(Sensitive::new),
    };
    st.directory
        .update_user(&ctx.caller, &id, patch)
        .await
        .map_err(|e| ctx.fail(e))?;
    Ok(no_content())
}

async fn delete_user(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path(id): Path<String>,
) -> GraphResult {
    st.directory
        .delete_principal(&ctx.caller, &id, PrincipalKind::User)
        .await
        .map_err(|e| ctx.fail(e))?;
    Ok(no_content())
}

// ---------------- groups ----------------

async fn list_groups(State(st): State<AppState>, Extension(ctx): C) -> GraphResult {
    list_kind(&st, &ctx, PrincipalKind::Group, "/groups").await
}

async fn create_group(State(st): State<AppState>, Extension(ctx): C, req: Request) -> GraphResult {
    let b: CreateGroup = body(&ctx, req).await?;
    let display_name = b
        .display_name
        .ok_or_else(|| ctx.bad("Property 'displayName' is required."))?;
    let group = st
        .directory
        .create_group(
            &ctx.caller,
            NewGroup {
                display_name,
                mail_nickname: b.mail_nickname,
                mail_enabled: b.mail_enabled.unwrap_or(false),
                security_enabled: b.security_enabled.unwrap_or(true),
                description: b.description,
            },
        )
        .await
        .map_err(|e| ctx.fail(e))?;
    created(&group_out(&group, ctx.context("groups/$entity")))
}

async fn get_group(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path(id): Path<String>,
) -> GraphResult {
    let grp = st
        .directory
        .principal_of_kind(&id, PrincipalKind::Group)
        .await
        .map_err(|e| ctx.fail(e))?;
    ok(&group_out(&grp, ctx.context("groups/$entity")))
}

async fn delete_group(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path(id): Path<String>,
) -> GraphResult {
    st.directory
        .delete_principal(&ctx.caller, &id, PrincipalKind::Group)
        .await
        .map_err(|e| ctx.fail(e))?;
    Ok(no_content())
}

async fn group_members(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path(id): Path<String>,
) -> GraphResult {
    let members = st.directory.members(&id).await.map_err(|e| ctx.fail(e))?;
    ok(&Collection {
        context: format!("{}/$metadata#directoryObjects", ctx.base),
        value: members.iter().map(object_out).collect::<Vec<_>>(),
        next_link: None,
    })
}

async fn group_transitive_members(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path(id): Path<String>,
) -> GraphResult {
    let members = st
        .directory
        .transitive_members(&id)
        .await
        .map_err(|e| ctx.fail(e))?;
    ok(&Collection {
        context: format!("{}/$metadata#directoryObjects", ctx.base),
        value: members.iter().map(object_out).collect::<Vec<_>>(),
        next_link: None,
    })
}

async fn add_member(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path(id): Path<String>,
    req: Request,
) -> GraphResult {
    let r: Reference = body(&ctx, req).await?;
    let member = r
        .object_id()
        .ok_or_else(|| ctx.bad("Invalid object identifier in '@odata.id'."))?
        .to_owned();
    st.directory
        .add_member(&ctx.caller, &id, &member)
        .await
        .map_err(|e| ctx.fail(e))?;
    Ok(no_content())
}

async fn remove_member(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path((id, member)): Path<(String, String)>,
) -> GraphResult {
    st.directory
        .remove_member(&ctx.caller, &id, &member)
        .await
        .map_err(|e| ctx.fail(e))?;
    Ok(no_content())
}

// ---------------- applications ----------------

async fn list_applications(State(st): State<AppState>, Extension(ctx): C) -> GraphResult {
    let (cursor, top) = ctx.page()?;
    let page = st
        .directory
        .applications(cursor.as_deref(), top)
        .await
        .map_err(|e| ctx.fail(e))?;
    ok(&Collection {
        context: format!("{}/$metadata#applications", ctx.base),
        value: page
            .items
            .iter()
            .map(|a| app_out(a, BTreeMap::new()))
            .collect::<Vec<_>>(),
        next_link: ctx.next_link("/applications", page.next.as_ref(), top),
    })
}

async fn create_application(
    State(st): State<AppState>,
    Extension(ctx): C,
    req: Request,
) -> GraphResult {
    let b: ApplicationInput = body(&ctx, req).await?;
    let name = b
        .display_name
        .ok_or_else(|| ctx.bad("Property 'displayName' is required."))?;
    let mut app = st
        .directory
        .create_application(&ctx.caller, &name)
        .await
        .map_err(|e| ctx.fail(e))?;
    if let Some(keys) = b.key_credentials {
        app = set_keys(&st, &ctx, &app.object_id, keys).await?;
    }
    created(&app_out(&app, ctx.context("applications/$entity")))
}

async fn get_application(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path(id): Path<String>,
) -> GraphResult {
    let app = st
        .directory
        .application(&id)
        .await
        .map_err(|e| ctx.fail(e))?;
    ok(&app_out(&app, ctx.context("applications/$entity")))
}

async fn set_keys(
    st: &AppState,
    ctx: &Ctx,
    id: &str,
    keys: Vec<g::KeyCredentialIn>,
) -> Result<ApplicationRecord, GraphFailure> {
    let mut parsed = Vec::with_capacity(keys.len());
    for k in keys {
        if k.kind.as_deref().is_some_and(|t| t != "AsymmetricX509Cert")
            || k.usage.as_deref().is_some_and(|u| u != "Verify")
        {
            return Err(ctx.bad("Only keyCredentials of type 'AsymmetricX509Cert' with usage 'Verify' are supported."));
        }
        let der = k
            .key
            .as_deref()
            .and_then(|b| STANDARD.decode(b.trim()).ok())
            .ok_or_else(|| {
                ctx.bad("Invalid value specified for property 'key' of resource 'KeyCredential'.")
            })?;
        parsed.push(NewKeyCredential {
            der,
            display_name: k.display_name,
        });
    }
    st.directory
        .set_key_credentials(&ctx.caller, id, parsed)
        .await
        .map_err(|e| ctx.fail(e))
}

async fn update_application(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path(id): Path<String>,
    req: Request,
) -> GraphResult {
    let b: ApplicationInput = body(&ctx, req).await?;
    if let Some(name) = b.display_name {
        st.directory
            .rename_application(&ctx.caller, &id, &name)
            .await
            .map_err(|e| ctx.fail(e))?;
    }
    if let Some(keys) = b.key_credentials {
        set_keys(&st, &ctx, &id, keys).await?;
    }
    Ok(no_content())
}

async fn delete_application(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path(id): Path<String>,
) -> GraphResult {
    st.directory
        .delete_application(&ctx.caller, &id)
        .await
        .map_err(|e| ctx.fail(e))?;
    Ok(no_content())
}

async fn add_password(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path(id): Path<String>,
    req: Request,
) -> GraphResult {
    let b: AddPassword = body(&ctx, req).await?;
    let wanted = b.password_credential.unwrap_or_default();
    let end = match wanted.end.as_deref() {
        Some(e) => Some(
            g::parse_iso8601(e)
                .ok_or_else(|| ctx.bad("Invalid value specified for property 'endDateTime'."))?,
        ),
        None => Some(ctx.now + 2 * 365 * 86_400),
    };
    let (cred, secret) = st
        .directory
        .add_password(&ctx.caller, &id, wanted.display_name, end)
        .await
        .map_err(|e| ctx.fail(e))?;
    ok(&PasswordCredentialOut {
        key_id: cred.key_id,
        display_name: cred.display_name,
        hint: cred.hint,
        start: iso8601(cred.start),
        end: cred.end.map(iso8601),
        secret_text: Some(secret.expose().clone()),
        custom_key_identifier: None,
    })
}

async fn remove_password(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path(id): Path<String>,
    req: Request,
) -> GraphResult {
    let b: RemovePassword = body(&ctx, req).await?;
    let key_id = b
        .key_id
        .ok_or_else(|| ctx.bad("Property 'keyId' is required."))?;
    st.directory
        .remove_password(&ctx.caller, &id, &key_id)
        .await
        .map_err(|e| ctx.fail(e))?;
    Ok(no_content())
}

async fn list_federated(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path(id): Path<String>,
) -> GraphResult {
    let app = st
        .directory
        .application(&id)
        .await
        .map_err(|e| ctx.fail(e))?;
    let value: Vec<FederatedIdentityCredential> = credentials_of(&app)
        .federated
        .into_iter()
        .map(|f| FederatedIdentityCredential {
            id: f.id,
            name: f.name,
            issuer: f.issuer,
            subject: f.subject,
            audiences: f.audiences,
            description: f.description,
        })
        .collect();
    ok(&Collection {
        context: format!(
            "{}/$metadata#applications('{id}')/federatedIdentityCredentials",
            ctx.base
        ),
        value,
        next_link: None,
    })
}

async fn add_federated(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path(id): Path<String>,
    req: Request,
) -> GraphResult {
    let b: FederatedIdentityCredential = body(&ctx, req).await?;
    let f = st
        .directory
        .add_federated(
            &ctx.caller,
            &id,
            FederatedCredential {
                id: String::new(),
                name: b.name,
                issuer: b.issuer,
                subject: b.subject,
                audiences: b.audiences,
                description: b.description,
            },
        )
        .await
        .map_err(|e| ctx.fail(e))?;
    created(&FederatedIdentityCredential {
        id: f.id,
        name: f.name,
        issuer: f.issuer,
        subject: f.subject,
        audiences: f.audiences,
        description: f.description,
    })
}

// ---------------- service principals ----------------

async fn list_service_principals(State(st): State<AppState>, Extension(ctx): C) -> GraphResult {
    // `$filter=appId eq '…'` is what the CLI and SDKs use to find an app's SP.
    if let Some(filter) = ctx.query.get("$filter") {
        let app_id = filter
            .strip_prefix("appId eq '")
            .and_then(|r| r.strip_suffix('\''))
            .ok_or_else(|| ctx.bad("Only $filter=appId eq '<appId>' is supported."))?;
        let found = st
            .directory
            .service_principal_by_app_id(app_id)
            .await
            .map_err(|e| ctx.fail(e))?;
        return ok(&Collection {
            context: format!("{}/$metadata#servicePrincipals", ctx.base),
            value: found
                .iter()
                .map(|p| sp_out(p, BTreeMap::new()))
                .collect::<Vec<_>>(),
            next_link: None,
        });
    }
    list_kind(
        &st,
        &ctx,
        PrincipalKind::ServicePrincipal,
        "/servicePrincipals",
    )
    .await
}

async fn create_service_principal(
    State(st): State<AppState>,
    Extension(ctx): C,
    req: Request,
) -> GraphResult {
    let b: CreateServicePrincipal = body(&ctx, req).await?;
    let app_id = b
        .app_id
        .ok_or_else(|| ctx.bad("Property 'appId' is required."))?;
    let sp = st
        .directory
        .create_service_principal(&ctx.caller, &app_id)
        .await
        .map_err(|e| ctx.fail(e))?;
    created(&sp_out(&sp, ctx.context("servicePrincipals/$entity")))
}

async fn get_service_principal(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path(id): Path<String>,
) -> GraphResult {
    let sp = st
        .directory
        .principal_of_kind(&id, PrincipalKind::ServicePrincipal)
        .await
        .map_err(|e| ctx.fail(e))?;
    ok(&sp_out(&sp, ctx.context("servicePrincipals/$entity")))
}

async fn delete_service_principal(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path(id): Path<String>,
) -> GraphResult {
    st.directory
        .delete_principal(&ctx.caller, &id, PrincipalKind::ServicePrincipal)
        .await
        .map_err(|e| ctx.fail(e))?;
    Ok(no_content())
}

async fn update_service_principal(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path(id): Path<String>,
    req: Request,
) -> GraphResult {
    let b: g::UpdateServicePrincipal = body(&ctx, req).await?;
    if let Some(enabled) = b.account_enabled {
        st.directory
            .set_service_principal_enabled(&ctx.caller, &id, enabled)
            .await
            .map_err(|e| ctx.fail(e))?;
    }
    Ok(no_content())
}
