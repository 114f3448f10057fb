//! What every management-plane handler uses: the ARM error shape, the
//! caller, body parsing, replies and ARM names. Handlers import these from
//! here, never from the router.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use http::StatusCode;
use keyhaven_core::resource::ResourceRecord;
use keyhaven_core::Principal;
use keyhaven_identity::directory::DirectoryError;
use keyhaven_identity::managed::ResourceName;
use keyhaven_wire::arm::{ArmError, ArmErrorDetail};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::http::extract::read_body;
use crate::http::response::json;
use crate::state::AppState;

/// Resource-group-scoped provider paths: `{RG}/Microsoft.KeyVault/vaults/…`.
pub const RG: &str = "/subscriptions/{sub}/resourceGroups/{rg}/providers";
/// The Key Vault provider at subscription scope.
pub const KV: &str = "/subscriptions/{sub}/providers/Microsoft.KeyVault";

/// An ARM failure.
pub struct ArmFailure {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// A whole `error` object, for failures that carry more than a code and
    /// a message (a policy's `RequestDisallowedByPolicy`).
    detail: Option<serde_json::Value>,
}

impl ArmFailure {
    /// A failure with status, ARM code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            detail: None,
        }
    }

    /// The failure's code and message, as text (for a background task's log
    /// or a remediation's status).
    pub fn message_text(&self) -> String {
        format!("{}: {}", self.code, self.message)
    }

    /// A failure whose `error` object is `detail` (it holds `code` and
    /// `message` itself).
    pub fn detailed(status: StatusCode, code: &'static str, detail: serde_json::Value) -> Self {
        Self {
            status,
            code,
            message: String::new(),
            detail: Some(detail),
        }
    }
}

impl IntoResponse for ArmFailure {
    fn into_response(self) -> Response {
        if let Some(detail) = self.detail {
            return json(self.status, &serde_json::json!({ "error": detail }));
        }
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

/// What a management handler returns.
pub type ArmResult = Result<Response, ArmFailure>;

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

/// A directory error as ARM's shape, naming the action and scope refused.
pub fn fail(ctx: &Ctx, action: &str, scope: &str, e: DirectoryError) -> ArmFailure {
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
    let invalid = |e: serde_json::Error| {
        ArmFailure::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
            format!(
                "The request content was invalid and could not be deserialized (line {}, column {}).",
                e.line(),
                e.column()
            ),
        )
    };
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(invalid)?;
    if let Some(tags) = value.get("tags").and_then(serde_json::Value::as_object) {
        check_tags(tags)?;
    }
    serde_json::from_value(value).map_err(invalid)
}

/// Azure Resource Manager's tag limits, for every resource: 50 tags, names
/// of at most 512 characters, values of at most 256. Checked on every body
/// this plane parses, so no resource kind can skip it.
pub const MAX_TAGS: usize = 50;
const MAX_TAG_NAME: usize = 512;
const MAX_TAG_VALUE: usize = 256;

fn check_tags(tags: &serde_json::Map<String, serde_json::Value>) -> Result<(), ArmFailure> {
    let bad = |code: &'static str, message: String| {
        ArmFailure::new(StatusCode::BAD_REQUEST, code, message)
    };
    let shown = |s: &str| s.chars().take(64).collect::<String>();
    if tags.len() > MAX_TAGS {
        return Err(bad(
            "InvalidTagCount",
            format!(
                "The resource has {} tags; a resource can have at most {MAX_TAGS}.",
                tags.len()
            ),
        ));
    }
    for (name, value) in tags {
        if name.is_empty() || name.chars().count() > MAX_TAG_NAME {
            return Err(bad(
                "InvalidTagNameLength",
                format!(
                    "The tag name '{}' must have 1 to {MAX_TAG_NAME} characters.",
                    shown(name)
                ),
            ));
        }
        if let Some(v) = value.as_str() {
            if v.chars().count() > MAX_TAG_VALUE {
                return Err(bad(
                    "InvalidTagValueLength",
                    format!(
                        "The value of tag '{}' exceeds the maximum length of {MAX_TAG_VALUE} characters.",
                        shown(name)
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Parses a request's JSON body (see [`parse_body`]).
pub async fn body<T: DeserializeOwned>(req: Request) -> Result<T, ArmFailure> {
    parse_body(req.into_body()).await
}

/// A resource reply: 201 when it was created, 200 otherwise.
pub fn reply<T: Serialize>(created: bool, v: &T) -> ArmResult {
    Ok(json(
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        v,
    ))
}

/// The required `location` of a PUT body; ARM's 400 `LocationRequired` if
/// missing.
pub fn location(raw: &Option<String>) -> Result<String, ArmFailure> {
    match raw.as_deref().map(str::trim) {
        Some(l) if !l.is_empty() && l.len() <= 64 => Ok(l.to_owned()),
        _ => Err(ArmFailure::new(
            StatusCode::BAD_REQUEST,
            "LocationRequired",
            "The location property is required for this definition.",
        )),
    }
}

/// A resource's subscription, group and name, checked against this
/// deployment.
pub fn resource_name(
    st: &AppState,
    sub: String,
    rg: String,
    name: String,
) -> Result<ResourceName, ArmFailure> {
    check_subscription(st, &sub)?;
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

/// A stored resource's tags.
pub fn tags_of(r: &ResourceRecord) -> BTreeMap<String, String> {
    serde_json::from_str(&r.tags).unwrap_or_default()
}

/// Splits an ARM path at `marker` (a lower-case `/providers/{namespace}/`,
/// matched case-insensitively; its last occurrence when `last`): the scope
/// before it and the non-empty segments after it, as written.
pub fn split_at_provider(path: &str, marker: &str, last: bool) -> Option<(String, Vec<String>)> {
    let lower = path.to_ascii_lowercase();
    let at = if last {
        lower.rfind(marker)?
    } else {
        lower.find(marker)?
    };
    let scope = path.get(..at)?.trim_end_matches('/').to_owned();
    let rest = path
        .get(at + marker.len()..)?
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    Some((scope, rest))
}

/// 405 `MethodNotAllowed`.
pub fn method_not_allowed() -> ArmFailure {
    ArmFailure::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        "The requested method is not allowed on this resource.",
    )
}

/// 404 `SubscriptionNotFound` unless `sub` is the deployment's subscription.
pub fn check_subscription(st: &AppState, sub: &str) -> Result<(), ArmFailure> {
    if sub.eq_ignore_ascii_case(&st.subscription_id) {
        Ok(())
    } else {
        Err(ArmFailure::new(
            StatusCode::NOT_FOUND,
            "SubscriptionNotFound",
            format!(
                "The subscription '{}' could not be found.",
                sub.chars().take(64).collect::<String>()
            ),
        ))
    }
}

/// 404 `NotFound`: a resource type or operation Keyhaven does not serve.
pub fn not_supported() -> ArmFailure {
    ArmFailure::new(
        StatusCode::NOT_FOUND,
        "NotFound",
        "The requested resource type or operation is not supported.",
    )
}
