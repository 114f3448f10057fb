//! Graph's sign-in conditions: Conditional Access policies and named
//! locations (`/identity/conditionalAccess/…`, directory administrators
//! only), and users' software OATH authentication methods
//! (`/me|users/{id}/authentication/softwareOathMethods`: list, get and
//! delete as in Graph v1.0; registration — which Graph leaves to Entra's
//! own pages — is Keyhaven's `POST` and `…/{id}/verify`).

use axum::extract::{Path, Request, State};
use axum::Extension;
use http::StatusCode;
use keyhaven_core::{Principal, PrincipalKind};
use keyhaven_identity::conditional_access::{
    Document, Invalid, NamedLocation, Policy, MAX_LOCATIONS, MAX_POLICIES,
};
use keyhaven_identity::mfa::{self, CodeFailure, TotpMethod};
use keyhaven_identity::totp;
use keyhaven_wire::oauth::iso8601;
use serde_json::{json, Value};

use super::{body, created, ok, Ctx, GraphFailure, GraphResult, C};
use crate::http::response::no_content;
use crate::state::AppState;

fn unavailable(ctx: &Ctx, e: &keyhaven_core::Error) -> GraphFailure {
    tracing::warn!(error = %e, "conditional access store failed");
    match e {
        keyhaven_core::Error::Conflict(m) => {
            ctx.failure(StatusCode::CONFLICT, "Request_BadRequest", m)
        }
        _ => ctx.failure(
            StatusCode::SERVICE_UNAVAILABLE,
            "serviceNotAvailable",
            "The service is temporarily unavailable.",
        ),
    }
}

async fn admin(st: &AppState, ctx: &Ctx) -> Result<(), GraphFailure> {
    st.directory
        .require_admin(&ctx.caller)
        .await
        .map_err(|e| ctx.fail(e))
}

fn not_found(ctx: &Ctx, what: &str) -> GraphFailure {
    ctx.failure(
        StatusCode::NOT_FOUND,
        "Request_ResourceNotFound",
        &format!("The {what} does not exist."),
    )
}

fn with_context(ctx: &Ctx, what: &str, v: &impl serde::Serialize) -> Value {
    let mut out = json!({"@odata.context": format!("{}/$metadata#{what}", ctx.base)});
    if let (Some(o), Ok(Value::Object(fields))) = (out.as_object_mut(), serde_json::to_value(v)) {
        o.extend(fields);
    }
    out
}

/// Overlays a PATCH body's top-level members (all but the server-set ones)
/// on the stored entity.
fn overlay<T: serde::Serialize + serde::de::DeserializeOwned>(
    ctx: &Ctx,
    stored: &T,
    patch: &Value,
) -> Result<T, GraphFailure> {
    let Some(fields) = patch.as_object() else {
        return Err(ctx.bad("The request body must be a JSON object."));
    };
    let mut v = serde_json::to_value(stored).map_err(|_| ctx.bad("unreadable"))?;
    if let Some(o) = v.as_object_mut() {
        for (k, val) in fields {
            if !matches!(
                k.as_str(),
                "id" | "createdDateTime" | "modifiedDateTime" | "@odata.context"
            ) {
                o.insert(k.clone(), val.clone());
            }
        }
    }
    serde_json::from_value(v).map_err(|e| ctx.bad(&format!("Invalid request body: {e}.")))
}

// ------------------------------------------------- policies and locations

/// What Conditional Access keeps a list of: policies and named locations.
trait Entity: serde::Serialize + serde::de::DeserializeOwned + Clone + Send + Sync + 'static {
    /// Its name in messages.
    const WHAT: &'static str;
    /// Its collection's path under `identity/conditionalAccess`.
    const SET: &'static str;
    /// Most a tenant holds.
    const MAX: usize;
    fn all(doc: &Document) -> &Vec<Self>;
    fn all_mut(doc: &mut Document) -> &mut Vec<Self>;
    fn id(&self) -> &str;
    /// Sets the server's id and times.
    fn stamp(&mut self, id: Option<String>, at: String);
    /// Checks it as written, against the rest of the document.
    fn check(&mut self, doc: &Document) -> Result<(), Invalid>;
    /// Whether it may be deleted.
    fn deletable(_doc: &Document, _id: &str) -> Result<(), Invalid> {
        Ok(())
    }
}

impl Entity for Policy {
    const WHAT: &'static str = "Conditional Access policy";
    const SET: &'static str = "policies";
    const MAX: usize = MAX_POLICIES;
    fn all(doc: &Document) -> &Vec<Self> {
        &doc.policies
    }
    fn all_mut(doc: &mut Document) -> &mut Vec<Self> {
        &mut doc.policies
    }
    fn id(&self) -> &str {
        &self.id
    }
    fn stamp(&mut self, id: Option<String>, at: String) {
        match id {
            Some(id) => {
                self.id = id;
                self.created_date_time = Some(at);
                self.modified_date_time = None;
            }
            None => self.modified_date_time = Some(at),
        }
    }
    fn check(&mut self, doc: &Document) -> Result<(), Invalid> {
        self.validate(&doc.locations)
    }
}

impl Entity for NamedLocation {
    const WHAT: &'static str = "named location";
    const SET: &'static str = "namedLocations";
    const MAX: usize = MAX_LOCATIONS;
    fn all(doc: &Document) -> &Vec<Self> {
        &doc.locations
    }
    fn all_mut(doc: &mut Document) -> &mut Vec<Self> {
        &mut doc.locations
    }
    fn id(&self) -> &str {
        &self.id
    }
    fn stamp(&mut self, id: Option<String>, at: String) {
        if let Some(id) = id {
            self.id = id;
            self.created_date_time = Some(at.clone());
        }
        self.modified_date_time = Some(at);
    }
    fn check(&mut self, _doc: &Document) -> Result<(), Invalid> {
        self.validate()
    }
    fn deletable(doc: &Document, id: &str) -> Result<(), Invalid> {
        if doc.location_in_use(id) {
            return Err(Invalid("The named location is used by a Conditional Access policy; remove it from the policy first.".into()));
        }
        Ok(())
    }
}

async fn list<E: Entity>(st: &AppState, ctx: &Ctx) -> GraphResult {
    admin(st, ctx).await?;
    let doc = crate::sign_in::document(st)
        .await
        .map_err(|e| unavailable(ctx, &e))?;
    ok(&json!({
        "@odata.context": format!("{}/$metadata#identity/conditionalAccess/{}", ctx.base, E::SET),
        "value": E::all(&doc),
    }))
}

async fn create<E: Entity>(st: &AppState, ctx: &Ctx, req: Request) -> GraphResult {
    admin(st, ctx).await?;
    let mut e: E = body(ctx, req).await?;
    e.stamp(Some(uuid::Uuid::new_v4().to_string()), iso8601(ctx.now));
    let written = crate::sign_in::update(st, |doc| {
        if E::all(doc).len() >= E::MAX {
            return Err(Invalid(format!(
                "A tenant holds at most {} of {}.",
                E::MAX,
                E::SET
            )));
        }
        let mut e = e.clone();
        e.check(doc)?;
        E::all_mut(doc).push(e.clone());
        Ok(e)
    })
    .await
    .map_err(|e| unavailable(ctx, &e))?
    .map_err(|e| ctx.bad(&e.0))?;
    let what = format!("identity/conditionalAccess/{}/$entity", E::SET);
    created(&with_context(ctx, &what, &written))
}

async fn get<E: Entity>(st: &AppState, ctx: &Ctx, id: &str) -> GraphResult {
    admin(st, ctx).await?;
    let doc = crate::sign_in::document(st)
        .await
        .map_err(|e| unavailable(ctx, &e))?;
    let e = E::all(&doc)
        .iter()
        .find(|e| e.id().eq_ignore_ascii_case(id))
        .ok_or_else(|| not_found(ctx, E::WHAT))?;
    let what = format!("identity/conditionalAccess/{}/$entity", E::SET);
    ok(&with_context(ctx, &what, e))
}

/// Why a PATCH did not apply.
enum Refused {
    Missing,
    Bad(GraphFailure),
}

async fn patch<E: Entity>(st: &AppState, ctx: &Ctx, id: &str, req: Request) -> GraphResult {
    admin(st, ctx).await?;
    let patch: Value = body(ctx, req).await?;
    let mut refused = None;
    let result = crate::sign_in::update(st, |doc| {
        refused = None;
        let Some(i) = E::all(doc)
            .iter()
            .position(|e| e.id().eq_ignore_ascii_case(id))
        else {
            refused = Some(Refused::Missing);
            return Err(Invalid(String::new()));
        };
        let Some(stored) = E::all(doc).get(i) else {
            refused = Some(Refused::Missing);
            return Err(Invalid(String::new()));
        };
        let mut next: E = match overlay(ctx, stored, &patch) {
            Ok(n) => n,
            Err(e) => {
                refused = Some(Refused::Bad(e));
                return Err(Invalid(String::new()));
            }
        };
        next.check(doc)?;
        next.stamp(None, iso8601(ctx.now));
        if let Some(slot) = E::all_mut(doc).get_mut(i) {
            *slot = next;
        }
        Ok(())
    })
    .await
    .map_err(|e| unavailable(ctx, &e))?;
    match refused {
        Some(Refused::Missing) => Err(not_found(ctx, E::WHAT)),
        Some(Refused::Bad(e)) => Err(e),
        None => {
            result.map_err(|e| ctx.bad(&e.0))?;
            Ok(no_content())
        }
    }
}

async fn delete<E: Entity>(st: &AppState, ctx: &Ctx, id: &str) -> GraphResult {
    admin(st, ctx).await?;
    let found = crate::sign_in::update(st, |doc| {
        E::deletable(doc, id)?;
        let all = E::all_mut(doc);
        let before = all.len();
        all.retain(|e| !e.id().eq_ignore_ascii_case(id));
        Ok(all.len() != before)
    })
    .await
    .map_err(|e| unavailable(ctx, &e))?
    .map_err(|e| ctx.bad(&e.0))?;
    if !found {
        return Err(not_found(ctx, E::WHAT));
    }
    Ok(no_content())
}

pub(super) async fn list_policies(State(st): State<AppState>, Extension(ctx): C) -> GraphResult {
    list::<Policy>(&st, &ctx).await
}

pub(super) async fn create_policy(
    State(st): State<AppState>,
    Extension(ctx): C,
    req: Request,
) -> GraphResult {
    create::<Policy>(&st, &ctx, req).await
}

pub(super) async fn get_policy(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path(id): Path<String>,
) -> GraphResult {
    get::<Policy>(&st, &ctx, &id).await
}

pub(super) async fn update_policy(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path(id): Path<String>,
    req: Request,
) -> GraphResult {
    patch::<Policy>(&st, &ctx, &id, req).await
}

pub(super) async fn delete_policy(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path(id): Path<String>,
) -> GraphResult {
    delete::<Policy>(&st, &ctx, &id).await
}

pub(super) async fn list_locations(State(st): State<AppState>, Extension(ctx): C) -> GraphResult {
    list::<NamedLocation>(&st, &ctx).await
}

pub(super) async fn create_location(
    State(st): State<AppState>,
    Extension(ctx): C,
    req: Request,
) -> GraphResult {
    create::<NamedLocation>(&st, &ctx, req).await
}

pub(super) async fn get_location(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path(id): Path<String>,
) -> GraphResult {
    get::<NamedLocation>(&st, &ctx, &id).await
}

pub(super) async fn update_location(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path(id): Path<String>,
    req: Request,
) -> GraphResult {
    patch::<NamedLocation>(&st, &ctx, &id, req).await
}

pub(super) async fn delete_location(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path(id): Path<String>,
) -> GraphResult {
    delete::<NamedLocation>(&st, &ctx, &id).await
}

// ---------------------------------------------------------------- methods

const OATH_TYPE: &str = "#microsoft.graph.softwareOathAuthenticationMethod";

fn method_out(m: &TotpMethod) -> Value {
    json!({
        "@odata.type": OATH_TYPE,
        "id": m.id,
        "secretKey": null,
        "createdDateTime": iso8601(m.created),
    })
}

/// Changing a user's own methods when it already has one needs a token
/// with a second factor: a stolen password alone must not add an app or
/// remove the real one. (The first app is registered with the password, as
/// on Entra without a registration policy; an administrator can reset.)
async fn step_up(st: &AppState, ctx: &Ctx, user: &str) -> Result<(), GraphFailure> {
    if ctx.mfa || !user.eq_ignore_ascii_case(&ctx.caller.object_id) {
        return Ok(());
    }
    match crate::sign_in::has_method(st, user).await {
        Ok(false) => Ok(()),
        Ok(true) => Err(ctx.failure(
            StatusCode::FORBIDDEN,
            "Authorization_RequestDenied",
            "Changing your authentication methods needs a sign-in with your authenticator app: sign in in the browser or with a device code (the page asks for the code), then try again.",
        )),
        Err(e) => Err(unavailable(ctx, &e)),
    }
}

/// The user `id` names (`me` for the caller), if the caller may see and
/// manage its methods: the user itself, or a directory administrator.
async fn method_owner(st: &AppState, ctx: &Ctx, id: Option<&str>) -> Result<String, GraphFailure> {
    let caller: &Principal = &ctx.caller;
    let Some(id) = id else {
        if caller.kind != PrincipalKind::User {
            return Err(ctx.bad("/me request is only valid with delegated authentication flow."));
        }
        return Ok(caller.object_id.clone());
    };
    let user = st.directory.user(id).await.map_err(|e| ctx.fail(e))?;
    if user.object_id != caller.object_id {
        admin(st, ctx).await?;
    }
    Ok(user.object_id)
}

async fn list_methods_of(st: &AppState, ctx: &Ctx, id: Option<&str>, all: bool) -> GraphResult {
    let user = method_owner(st, ctx, id).await?;
    let methods = mfa::list(&st.directory, &user)
        .await
        .map_err(|e| ctx.fail(e))?;
    let mut value: Vec<Value> = Vec::new();
    if all {
        // Every user signs in with a password.
        value.push(json!({
            "@odata.type": "#microsoft.graph.passwordAuthenticationMethod",
            "id": "28c10230-6103-485e-b985-444c60001490",
            "password": null,
        }));
    }
    value.extend(methods.iter().map(method_out));
    let what = if all {
        "methods"
    } else {
        "softwareOathMethods"
    };
    ok(&json!({
        "@odata.context": format!("{}/$metadata#users('{user}')/authentication/{what}", ctx.base),
        "value": value,
    }))
}

pub(super) async fn my_methods(State(st): State<AppState>, Extension(ctx): C) -> GraphResult {
    list_methods_of(&st, &ctx, None, true).await
}

pub(super) async fn user_methods(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path(id): Path<String>,
) -> GraphResult {
    list_methods_of(&st, &ctx, Some(&id), true).await
}

pub(super) async fn my_oath_methods(State(st): State<AppState>, Extension(ctx): C) -> GraphResult {
    list_methods_of(&st, &ctx, None, false).await
}

pub(super) async fn user_oath_methods(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path(id): Path<String>,
) -> GraphResult {
    list_methods_of(&st, &ctx, Some(&id), false).await
}

async fn get_method_of(st: &AppState, ctx: &Ctx, id: Option<&str>, method: &str) -> GraphResult {
    let user = method_owner(st, ctx, id).await?;
    let methods = mfa::list(&st.directory, &user)
        .await
        .map_err(|e| ctx.fail(e))?;
    let m = methods
        .iter()
        .find(|m| m.id.eq_ignore_ascii_case(method))
        .ok_or_else(|| not_found(ctx, "authentication method"))?;
    ok(&method_out(m))
}

pub(super) async fn my_oath_method(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path(method): Path<String>,
) -> GraphResult {
    get_method_of(&st, &ctx, None, &method).await
}

pub(super) async fn user_oath_method(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path((id, method)): Path<(String, String)>,
) -> GraphResult {
    get_method_of(&st, &ctx, Some(&id), &method).await
}

async fn delete_method_of(st: &AppState, ctx: &Ctx, id: Option<&str>, method: &str) -> GraphResult {
    let user = method_owner(st, ctx, id).await?;
    step_up(st, ctx, &user).await?;
    if !mfa::delete(&st.directory, &user, method)
        .await
        .map_err(|e| ctx.fail(e))?
    {
        return Err(not_found(ctx, "authentication method"));
    }
    tracing::info!(user = %user, method = %method, by = %ctx.caller.object_id, "authenticator app removed");
    Ok(no_content())
}

pub(super) async fn delete_my_oath_method(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path(method): Path<String>,
) -> GraphResult {
    delete_method_of(&st, &ctx, None, &method).await
}

pub(super) async fn delete_user_oath_method(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path((id, method)): Path<(String, String)>,
) -> GraphResult {
    delete_method_of(&st, &ctx, Some(&id), &method).await
}

/// `POST /me/authentication/softwareOathMethods` (Keyhaven): starts the
/// registration of an authenticator app. The answer is the only time the
/// secret is shown: as `secretKey` (base32) and as the `otpauth://` URI an
/// app scans. The method counts once its first code is verified.
pub(super) async fn register_oath_method(
    State(st): State<AppState>,
    Extension(ctx): C,
) -> GraphResult {
    let user = method_owner(&st, &ctx, None).await?;
    step_up(&st, &ctx, &user).await?;
    let record = st
        .directory
        .principal(&user)
        .await
        .map_err(|e| ctx.fail(e))?;
    let (seal, _) = crate::sign_in::method_crypto(&st, &user)
        .await
        .map_err(|e| unavailable(&ctx, &e))?;
    let (id, secret) = mfa::begin(&st.directory, &user, &*seal, ctx.now)
        .await
        .map_err(|e| ctx.fail(e))?;
    let account = record.upn.unwrap_or(user.clone());
    let out = json!({
        "@odata.type": OATH_TYPE,
        "id": id,
        "secretKey": totp::base32(secret.expose()),
        "keyhaven.provisioningUri": totp::provisioning_uri(secret.expose(), "Keyhaven", &account),
        "keyhaven.state": "pendingVerification",
        "keyhaven.verifyBy": iso8601(ctx.now + mfa::PENDING_SECS),
    });
    created(&out)
}

/// `POST /me/authentication/softwareOathMethods/{id}/verify` (Keyhaven):
/// `{"code": "123456"}` confirms a registration.
pub(super) async fn verify_oath_method(
    State(st): State<AppState>,
    Extension(ctx): C,
    Path(method): Path<String>,
    req: Request,
) -> GraphResult {
    #[derive(serde::Deserialize)]
    struct Verify {
        code: String,
    }
    let user = method_owner(&st, &ctx, None).await?;
    step_up(&st, &ctx, &user).await?;
    let b: Verify = body(&ctx, req).await?;
    let (_, open) = crate::sign_in::method_crypto(&st, &user)
        .await
        .map_err(|e| unavailable(&ctx, &e))?;
    match mfa::confirm(&st.directory, &user, &method, &b.code, &*open, ctx.now)
        .await
        .map_err(|e| ctx.fail(e))?
    {
        Ok(()) => Ok(no_content()),
        Err(CodeFailure::Locked(until)) => Err(ctx.failure(
            StatusCode::TOO_MANY_REQUESTS,
            "tooManyRequests",
            &format!(
                "Too many wrong codes; codes are refused until {}.",
                iso8601(until)
            ),
        )),
        Err(CodeFailure::Unavailable) => Err(ctx.failure(
            StatusCode::SERVICE_UNAVAILABLE,
            "serviceNotAvailable",
            "The service is temporarily unavailable.",
        )),
        Err(_) => {
            Err(ctx.bad("The code is not valid. Enter the current code of the authenticator app."))
        }
    }
}
