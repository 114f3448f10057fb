//! The domain error type. Every lower layer converts into it with `From`; the
//! wire crate maps it to an HTTP status and Azure error body in one function.
//! Messages name objects, never their values.

use crate::object::ObjectKind;

/// Result alias for the domain.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which authorization model refused a request (Azure's inner error code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForbiddenReason {
    /// Azure RBAC (`ForbiddenByRbac`).
    Rbac,
    /// Vault access policies (`ForbiddenByPolicy`).
    Policy,
    /// A Managed HSM pool's local RBAC (`AccessDenied`).
    LocalRbac,
    /// An Azure Policy assignment's `Deny` (`RequestDisallowedByPolicy`;
    /// Keyhaven's choice of inner code, see docs/policy.md).
    AzurePolicy,
}

/// Everything that can go wrong in a domain operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed or a value is out of range.
    #[error("{0}")]
    BadParameter(String),
    /// The caller presented no credential or an invalid one.
    #[error("{0}")]
    Unauthorized(String),
    /// The caller is authenticated but not allowed to perform the operation.
    #[error("{message}")]
    Forbidden {
        /// Which authorization model refused.
        reason: ForbiddenReason,
        /// Azure-style text naming caller, action and scope.
        message: String,
    },
    /// No vault is served at the requested address.
    #[error("The vault '{0}' was not found.")]
    VaultNotFound(String),
    /// The object (or the requested version) does not exist in the live state.
    #[error("A {} with (name/id) {name} was not found in this key vault.", kind.noun())]
    NotFound {
        /// Secret, key or certificate.
        kind: ObjectKind,
        /// The name (and version) that was asked for.
        name: String,
    },
    /// No soft-deleted object of that name exists.
    #[error("Deleted {} {name} was not found in this key vault.", kind.noun())]
    DeletedNotFound {
        /// Secret, key or certificate.
        kind: ObjectKind,
        /// The name that was asked for.
        name: String,
    },
    /// The object is disabled and the operation needs it enabled.
    #[error("Operation {operation} is not allowed on a disabled {}.", kind.noun())]
    Disabled {
        /// Secret, key or certificate.
        kind: ObjectKind,
        /// The attempted operation, as Azure names it in the message.
        operation: &'static str,
    },
    /// Outside the object's nbf/exp window.
    #[error("Operation {operation} is not allowed on an expired or not yet valid {}.", kind.noun())]
    NotInValidityPeriod {
        /// Secret, key or certificate.
        kind: ObjectKind,
        /// The attempted operation.
        operation: &'static str,
    },
    /// The key's `key_ops` do not include the operation.
    #[error("Operation {operation} is not permitted on this key.")]
    OperationNotPermitted {
        /// The attempted operation.
        operation: &'static str,
    },
    /// The vault's network rules refuse the client's address.
    #[error("Client address is not authorized and caller is not a trusted service.\r\nClient address: {client}\r\nVault: {vault}")]
    ForbiddenByFirewall {
        /// The TCP peer's address.
        client: String,
        /// The vault.
        vault: String,
    },
    /// The key or secret belongs to a certificate and is changed only through it.
    #[error("Operation {operation} is not allowed on a {} managed by a certificate; use the certificate instead.", kind.noun())]
    ManagedByCertificate {
        /// Key or secret.
        kind: ObjectKind,
        /// The attempted operation.
        operation: &'static str,
    },
    /// The name is held by a soft-deleted object.
    #[error("{} {name} is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the {} can only be recovered or purged.", kind.title(), kind.noun())]
    DeletedButRecoverable {
        /// Secret, key or certificate.
        kind: ObjectKind,
        /// The name in question.
        name: String,
    },
    /// Restore refused: an object with the name already exists (live or deleted).
    #[error("{} {name} not restored because it already exists.", kind.title())]
    AlreadyExists {
        /// Secret, key or certificate.
        kind: ObjectKind,
        /// The name in question.
        name: String,
    },
    /// A unique property is already taken.
    #[error("{0}")]
    Conflict(String),
    /// An HSM-protected key asked of a standard vault.
    #[error("Hardware key operation not allowed on standard vault.")]
    HardwareNotAllowed,
    /// Purge refused by the vault's purge protection.
    #[error("Operation 'purge' is not enabled for this vault.")]
    PurgeProtected,
    /// The persistent store could not be reached or refused the operation.
    #[error("The service is temporarily unavailable: {0}")]
    Unavailable(String),
    /// Stored data failed an integrity check (e.g. AEAD authentication).
    #[error("Stored data failed an integrity check.")]
    Integrity,
}

impl From<crate::store::StoreError> for Error {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError as S;
        match e {
            S::Unavailable(msg) => Error::Unavailable(msg),
            S::Corrupt(_) => Error::Integrity,
            S::NameDeleted { kind, name } => Error::DeletedButRecoverable { kind, name },
            S::NameExists { kind, name } => Error::AlreadyExists { kind, name },
            S::Missing { kind, name } => Error::NotFound { kind, name },
            S::Duplicate(what) => Error::Conflict(format!("The {what} already exists.")),
            S::Managed { kind, .. } => Error::ManagedByCertificate {
                kind,
                operation: "set",
            },
            S::Changed { kind, name } => Error::Conflict(format!(
                "The {} {name} was changed by another request at the same time; retry.",
                kind.as_str()
            )),
        }
    }
}
