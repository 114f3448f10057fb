//! The Azure wire format, encoded once: api-versions, object ids and URLs,
//! paging tokens, the JSON shapes of secrets, the OAuth/OIDC shapes of the
//! token issuer, and the mapping of domain errors to status + error body.
//! Nothing here knows about HTTP frameworks, SQL or crypto.

pub mod api_version;
pub mod arm;
pub mod certificate;
pub mod error;
pub mod graph;
pub mod key;
pub mod logs;
pub mod oauth;
pub mod paging;
pub mod rotation;
pub mod secret;
pub mod urls;

pub use api_version::ApiVersion;
pub use error::{error_response, ErrorBody};
pub use urls::VaultUrls;
