//! Azure's error body and the single mapping from domain errors to HTTP status
//! and `error.code` / `innererror.code`.

use keyhaven_core::error::ForbiddenReason;
use keyhaven_core::{Error, ObjectKind};
use serde::Serialize;

/// `{"error":{"code","message","innererror"?}}`
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// One level of an Azure error.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ErrorDetail {
    /// Machine-readable code.
    pub code: String,
    /// Human-readable message.
    pub message: String,
    /// Nested detail, e.g. `ObjectIsDeletedButRecoverable`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub innererror: Option<Box<ErrorDetail>>,
}

impl ErrorBody {
    /// An error with a code and message.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code: code.to_owned(),
                message: message.into(),
                innererror: None,
            },
        }
    }

    /// Adds an inner error code (with the same message, as Azure does).
    pub fn with_inner(mut self, code: &str) -> Self {
        self.error.innererror = Some(Box::new(ErrorDetail {
            code: code.to_owned(),
            message: self.error.message.clone(),
            innererror: None,
        }));
        self
    }
}

fn not_found_code(kind: ObjectKind) -> &'static str {
    match kind {
        ObjectKind::Secret => "SecretNotFound",
        ObjectKind::Key => "KeyNotFound",
        ObjectKind::Certificate => "CertificateNotFound",
    }
}

fn disabled_code(kind: ObjectKind) -> &'static str {
    match kind {
        ObjectKind::Secret => "SecretDisabled",
        ObjectKind::Key => "KeyDisabled",
        ObjectKind::Certificate => "CertificateDisabled",
    }
}

/// The one mapping from a domain error to (HTTP status, Azure error body).
pub fn error_response(e: &Error) -> (u16, ErrorBody) {
    let msg = e.to_string();
    match e {
        Error::BadParameter(_) => (400, ErrorBody::new("BadParameter", msg)),
        Error::Unauthorized(_) => (401, ErrorBody::new("Unauthorized", msg)),
        Error::Forbidden {
            reason: ForbiddenReason::LocalRbac,
            ..
        } => (403, ErrorBody::new("AccessDenied", msg)),
        Error::Forbidden { reason, .. } => (
            403,
            ErrorBody::new("Forbidden", msg).with_inner(match reason {
                ForbiddenReason::Rbac => "ForbiddenByRbac",
                ForbiddenReason::Policy | ForbiddenReason::LocalRbac => "ForbiddenByPolicy",
                ForbiddenReason::AzurePolicy => "RequestDisallowedByPolicy",
            }),
        ),
        Error::VaultNotFound(_) => (404, ErrorBody::new("VaultNotFound", msg)),
        Error::NotFound { kind, .. } | Error::DeletedNotFound { kind, .. } => {
            (404, ErrorBody::new(not_found_code(*kind), msg))
        }
        Error::Disabled { kind, .. } => (
            403,
            ErrorBody::new("Forbidden", msg).with_inner(disabled_code(*kind)),
        ),
        Error::NotInValidityPeriod { .. } => (403, ErrorBody::new("Forbidden", msg)),
        Error::OperationNotPermitted { .. } => (
            403,
            ErrorBody::new("Forbidden", msg).with_inner("KeyOperationForbidden"),
        ),
        Error::DeletedButRecoverable { .. } => (
            409,
            ErrorBody::new("Conflict", msg).with_inner("ObjectIsDeletedButRecoverable"),
        ),
        Error::AlreadyExists { .. } | Error::Conflict(_) => (409, ErrorBody::new("Conflict", msg)),
        Error::ForbiddenByFirewall { .. } => (
            403,
            ErrorBody::new("Forbidden", msg).with_inner("ForbiddenByFirewall"),
        ),
        Error::PurgeProtected | Error::ManagedByCertificate { .. } | Error::HardwareNotAllowed => {
            (403, ErrorBody::new("Forbidden", msg))
        }
        // Store details go to the server log, not to the caller.
        Error::Unavailable(_) => (
            503,
            ErrorBody::new(
                "ServiceUnavailable",
                "The service is temporarily unavailable. Please retry.",
            ),
        ),
        Error::Integrity => (
            500,
            ErrorBody::new(
                "InternalServerError",
                "The server encountered an internal error.",
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_secret_maps_to_secret_not_found() {
        let (status, body) = error_response(&Error::NotFound {
            kind: ObjectKind::Secret,
            name: "x".into(),
        });
        assert_eq!(status, 404);
        assert_eq!(body.error.code, "SecretNotFound");
    }

    #[test]
    fn deleted_name_conflict_carries_inner_code() {
        let (status, body) = error_response(&Error::DeletedButRecoverable {
            kind: ObjectKind::Secret,
            name: "x".into(),
        });
        assert_eq!(status, 409);
        let json = serde_json::to_value(&body).unwrap();
        assert_eq!(json["error"]["code"], "Conflict");
        assert_eq!(
            json["error"]["innererror"]["code"],
            "ObjectIsDeletedButRecoverable"
        );
    }

    #[test]
    fn store_details_are_not_shown_to_callers() {
        let (status, body) = error_response(&Error::Unavailable("password=hunter2".into()));
        assert_eq!(status, 503);
        assert!(!body.error.message.contains("hunter2"));
    }
}
