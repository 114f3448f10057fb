//! Step 6 of the pipeline: parsing request bodies and query strings into typed
//! values, with Azure's 400 for anything malformed. Parser messages never echo
//! request content (it may be a secret).

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use keyhaven_core::Error;
use serde::de::DeserializeOwned;

use super::response::ApiError;
use super::MAX_BODY_BYTES;

/// A JSON body parsed into `T`.
pub struct AzJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for AzJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let bytes = read_body(req.into_body()).await?;
        parse_json(&bytes).map(AzJson)
    }
}

/// The bearer token in a request's `Authorization` header (not yet
/// validated), whatever the case of the scheme.
pub fn bearer_token(headers: &http::HeaderMap) -> Option<&str> {
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
}

/// Reads a body up to the limit.
pub async fn read_body(body: Body) -> Result<bytes::Bytes, ApiError> {
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| ApiError::too_large())
}

/// Parses JSON with a message that names the position, never the content.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::BadParameter(
            "The request body is required and must be a JSON object.".into(),
        )
        .into());
    }
    serde_json::from_slice(bytes).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Data => "has a field of the wrong type or a missing field",
            _ => "is not valid JSON",
        };
        Error::BadParameter(format!(
            "The request body {what} (line {}, column {}).",
            e.line(),
            e.column()
        ))
        .into()
    })
}

/// Parses a query string into a map (last value wins).
pub fn query_map(query: Option<&str>) -> HashMap<String, String> {
    query
        .and_then(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).ok())
        .map(|pairs| pairs.into_iter().collect())
        .unwrap_or_default()
}

/// Path parameters; a path that does not decode is Azure's 400, not axum's
/// plain-text rejection.
pub struct AzPath<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for AzPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| AzPath(p.0))
            .map_err(|_| {
                Error::BadParameter("The request URI contains an invalid path segment.".into())
                    .into()
            })
    }
}
