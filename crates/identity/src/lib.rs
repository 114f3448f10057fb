//! Identity: who a caller is and what they may do. Token issuing and
//! validation (RS256 JWTs with Entra-v2-style claims), client-secret hashing,
//! and the authorization decision behind the core `Authorizer` port. An authz
//! bug is a breach, so this crate has no HTTP and no storage of its own.

pub mod authz;
pub mod credentials;
pub mod token;

pub use authz::BootstrapAuthorizer;
pub use credentials::{ClientCredentials, PasswordCredential};
pub use token::{SigningKey, TokenError, TokenService};
