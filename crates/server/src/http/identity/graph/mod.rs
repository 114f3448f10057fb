//! The Microsoft Graph v1.0 subset at `graph.{domain}`: users, groups and
//! membership, applications and their credentials, service principals, `/me`.
//! Every request is authenticated with a Graph-audience token; writes need a
//! directory role (checked in `keyhaven_identity::Directory`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use http::StatusCode;
use keyhaven_core::directory::PrincipalRecord;
use keyhaven_core::{Principal, PrincipalKind};
use keyhaven_identity::directory::DirectoryError;
use keyhaven_wire::graph::{self as g, Collection, GraphError, GraphErrorDetail, GraphInnerError};
use keyhaven_wire::oauth::iso8601;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tower::ServiceExt as _;

use crate::http::extract::{bearer_token, query_map, read_body};
use crate::http::response::json;
use crate::state::AppState;

mod applications;
mod principals;
mod sign_in;

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
    /// The caller's token says it gave a second factor.
    mfa: bool,
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
        .route("/v1.0/me", get(principals::me))
        .route(
            "/v1.0/identity/conditionalAccess/policies",
            get(sign_in::list_policies).post(sign_in::create_policy),
        )
        .route(
            "/v1.0/identity/conditionalAccess/policies/{id}",
            get(sign_in::get_policy)
                .patch(sign_in::update_policy)
                .delete(sign_in::delete_policy),
        )
        .route(
            "/v1.0/identity/conditionalAccess/namedLocations",
            get(sign_in::list_locations).post(sign_in::create_location),
        )
        .route(
            "/v1.0/identity/conditionalAccess/namedLocations/{id}",
            get(sign_in::get_location)
                .patch(sign_in::update_location)
                .delete(sign_in::delete_location),
        )
        .route("/v1.0/me/authentication/methods", get(sign_in::my_methods))
        .route(
            "/v1.0/me/authentication/softwareOathMethods",
            get(sign_in::my_oath_methods).post(sign_in::register_oath_method),
        )
        .route(
            "/v1.0/me/authentication/softwareOathMethods/{method}",
            get(sign_in::my_oath_method).delete(sign_in::delete_my_oath_method),
        )
        .route(
            "/v1.0/me/authentication/softwareOathMethods/{method}/verify",
            post(sign_in::verify_oath_method),
        )
        .route(
            "/v1.0/users/{id}/authentication/methods",
            get(sign_in::user_methods),
        )
        .route(
            "/v1.0/users/{id}/authentication/softwareOathMethods",
            get(sign_in::user_oath_methods),
        )
        .route(
            "/v1.0/users/{id}/authentication/softwareOathMethods/{method}",
            get(sign_in::user_oath_method).delete(sign_in::delete_user_oath_method),
        )
        .route("/v1.0/directoryObjects/getByIds", post(get_by_ids))
        .route(
            "/v1.0/roleManagement/directory/roleAssignments",
            get(principals::list_role_assignments).post(principals::create_role_assignment),
        )
        .route(
            "/v1.0/roleManagement/directory/roleAssignments/{id}",
            axum::routing::delete(principals::delete_role_assignment),
        )
        .route(
            "/v1.0/users",
            get(principals::list_users).post(principals::create_user),
        )
        .route(
            "/v1.0/users/{id}",
            get(principals::get_user)
                .patch(principals::update_user)
                .delete(principals::delete_user),
        )
        .route(
            "/v1.0/groups",
            get(principals::list_groups).post(principals::create_group),
        )
        .route(
            "/v1.0/groups/{id}",
            get(principals::get_group).delete(principals::delete_group),
        )
        .route("/v1.0/groups/{id}/members", get(principals::group_members))
        .route(
            "/v1.0/groups/{id}/transitiveMembers",
            get(principals::group_transitive_members),
        )
        .route(
            "/v1.0/groups/{id}/members/$ref",
            post(principals::add_member),
        )
        .route(
            "/v1.0/groups/{id}/members/{member}/$ref",
            axum::routing::delete(principals::remove_member),
        )
        .route(
            "/v1.0/applications",
            get(applications::list_applications).post(applications::create_application),
        )
        .route(
            "/v1.0/applications/{id}",
            get(applications::get_application)
                .patch(applications::update_application)
                .delete(applications::delete_application),
        )
        .route(
            "/v1.0/applications/{id}/addPassword",
            post(applications::add_password),
        )
        .route(
            "/v1.0/applications/{id}/removePassword",
            post(applications::remove_password),
        )
        .route(
            "/v1.0/applications/{id}/federatedIdentityCredentials",
            get(applications::list_federated).post(applications::add_federated),
        )
        .route(
            "/v1.0/servicePrincipals",
            get(principals::list_service_principals).post(principals::create_service_principal),
        )
        .route(
            "/v1.0/servicePrincipals/{id}",
            get(principals::get_service_principal)
                .patch(principals::update_service_principal)
                .delete(principals::delete_service_principal),
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
    let token = bearer_token(req.headers()).map(str::to_owned);
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
        mfa: state.tokens.has_mfa(&token),
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
        "user" => DirectoryObject::User(principals::user_out(p, odata)),
        "group" => DirectoryObject::Group(principals::group_out(p, odata)),
        _ => DirectoryObject::ServicePrincipal(principals::sp_out(p, odata)),
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
