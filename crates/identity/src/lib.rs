//! Identity: who a caller is and what they may do. The directory (users,
//! groups, applications, service principals, credentials), sign-in checks,
//! token issuing and validation (RS256 JWTs with Entra-v2-style claims), and
//! the authorization decision behind the core `Authorizer` port. An authz bug
//! is a breach, so this crate has no HTTP and no SQL of its own.

pub mod assertion;
pub mod authcode;
pub mod authz;
pub mod condition;
pub mod conditional_access;
pub mod credentials;
pub mod device;
pub mod directory;
pub mod federation;
pub mod lockout;
pub mod managed;
pub mod mfa;
pub mod pim;
pub mod rbac;
pub mod refresh;
pub mod roles;
pub mod token;
pub mod totp;

pub use authz::Evaluator;
pub use credentials::{ClientCredentials, PasswordCredential};
pub use directory::{Directory, DirectoryError, SignInFailure, SignedIn};
pub use token::{SigningKey, TokenError, TokenService};

/// Fixtures shared by the unit tests of this crate.
#[cfg(test)]
pub(crate) mod testing {
    use keyhaven_core::{Principal, PrincipalKind};

    use crate::directory::SignedIn;

    /// A signed-in user.
    pub fn user() -> SignedIn {
        SignedIn {
            principal: Principal {
                object_id: "u".into(),
                tenant_id: "t".into(),
                app_id: None,
                kind: PrincipalKind::User,
            },
            upn: Some("a@b".into()),
            name: "A".into(),
            groups: vec![],
            credential_stamp: String::new(),
            session: crate::token::Session::default(),
        }
    }
}
