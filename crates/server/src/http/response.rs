//! Turning results into responses: the server's error type (a domain error
//! or an HTTP-level one), mapped to Azure's body through `keyhaven_wire` once.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode};
use keyhaven_core::Error;
use keyhaven_wire::{error_response, ErrorBody};
use serde::Serialize;

/// An error on its way to the client.
#[derive(Debug)]
pub enum ApiError {
    /// A domain error (mapped by `keyhaven_wire::error_response`).
    Domain(Error),
    /// Over the vault's service limit: 429 `Throttled` with `Retry-After`.
    Throttled {
        /// Seconds to wait.
        retry_after: u64,
    },
    /// An HTTP-level error with its own status and code.
    Http {
        /// Status.
        status: StatusCode,
        /// Azure error code.
        code: &'static str,
        /// Message.
        message: String,
    },
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        Self::Domain(e)
    }
}

impl ApiError {
    /// 404 for a path or host Keyhaven does not serve.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::Http {
            status: StatusCode::NOT_FOUND,
            code: "NotFound",
            message: message.into(),
        }
    }

    /// 405 for a method a path does not support.
    pub fn method_not_allowed() -> Self {
        Self::Http {
            status: StatusCode::METHOD_NOT_ALLOWED,
            code: "MethodNotAllowed",
            message: "The requested method is not allowed on this resource.".into(),
        }
    }

    /// 413 for a body over the limit.
    pub fn too_large() -> Self {
        Self::Http {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "RequestEntityTooLarge",
            message: format!("The request body exceeds {} bytes.", super::MAX_BODY_BYTES),
        }
    }

    /// Converts into a response (also usable where `IntoResponse` is not in scope).
    pub fn into_response_with(self) -> Response {
        self.into_response()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Throttled { retry_after } = self {
            let mut r = json(
                StatusCode::TOO_MANY_REQUESTS,
                &ErrorBody::new(
                    "Throttled",
                    "Request was not processed because too many requests were received. Reason: VaultRequestTypeLimitReached".to_owned(),
                ),
            );
            if let Ok(v) = HeaderValue::from_str(&retry_after.to_string()) {
                r.headers_mut().insert(http::header::RETRY_AFTER, v);
            }
            return r;
        }
        let (status, body) = match self {
            ApiError::Throttled { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                ErrorBody::new("Throttled", String::new()),
            ),
            ApiError::Domain(e) => {
                let (status, body) = error_response(&e);
                if status >= 500 {
                    tracing::error!(error = %e, "request failed");
                }
                (
                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                    body,
                )
            }
            ApiError::Http {
                status,
                code,
                message,
            } => (status, ErrorBody::new(code, message)),
        };
        json(status, &body)
    }
}

/// A JSON response with Azure's content type.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(bytes) => {
            let mut r = Response::new(Body::from(bytes));
            *r.status_mut() = status;
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            );
            r
        }
        Err(_) => ApiError::Domain(Error::Integrity).into_response(),
    }
}

/// 200 with a JSON body.
pub fn ok<T: Serialize>(value: &T) -> Response {
    json(StatusCode::OK, value)
}

/// 204 with no body.
pub fn no_content() -> Response {
    status_only(StatusCode::NO_CONTENT)
}

/// A status with no body.
pub fn status_only(status: StatusCode) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    r
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
}

/// `GET /healthz`.
pub fn health() -> Response {
    ok(&Health { status: "ok" })
}

/// Result type of handlers.
pub type ApiResult = Result<Response, ApiError>;
