//! OAuth 2.0 / OpenID Connect shapes of Keyhaven's token issuer, as Entra ID
//! (v2 endpoints) returns them and MSAL reads them.

use serde::{Deserialize, Serialize};

/// The token endpoint's form body. Secret fields are moved into `Sensitive`
/// by the handler as soon as the form is parsed.
/// No `Debug`: it carries client secrets, passwords and codes.
#[derive(Deserialize)]
pub struct TokenRequest {
    /// `client_credentials`, `password` or `refresh_token`.
    pub grant_type: Option<String>,
    /// Application (client) id.
    pub client_id: Option<String>,
    /// Client secret.
    pub client_secret: Option<String>,
    /// Client assertion (a JWT signed with a registered certificate).
    pub client_assertion: Option<String>,
    /// `urn:ietf:params:oauth:client-assertion-type:jwt-bearer`.
    pub client_assertion_type: Option<String>,
    /// Space-separated scopes, e.g. `https://vault.localhost:8443/.default` (v2).
    pub scope: Option<String>,
    /// The resource (v1 endpoint).
    pub resource: Option<String>,
    /// User name (password grant).
    pub username: Option<String>,
    /// Password (password grant).
    pub password: Option<String>,
    /// Refresh token (refresh grant).
    pub refresh_token: Option<String>,
    /// Device code (device code grant).
    pub device_code: Option<String>,
    /// Authorization code (authorization code grant).
    pub code: Option<String>,
    /// The redirect URI the code was issued for.
    pub redirect_uri: Option<String>,
    /// The PKCE verifier.
    pub code_verifier: Option<String>,
}

/// The authorization endpoint's parameters (query of the GET, form of the
/// POST that also carries the user's credentials).
/// No `Debug`: the POST carries the password.
#[derive(Default, Deserialize)]
pub struct AuthorizeParams {
    /// The public client.
    pub client_id: Option<String>,
    /// Must be `code`.
    pub response_type: Option<String>,
    /// A loopback URI.
    pub redirect_uri: Option<String>,
    /// Requested scopes.
    pub scope: Option<String>,
    /// Opaque; returned with the code.
    pub state: Option<String>,
    /// PKCE challenge.
    pub code_challenge: Option<String>,
    /// Must be `S256`.
    pub code_challenge_method: Option<String>,
    /// Goes into the id token.
    pub nonce: Option<String>,
    /// `query` (default: a redirect) or `form_post` (a page that posts the
    /// code to the redirect URI, which MSAL asks for).
    pub response_mode: Option<String>,
    /// Pre-fills the user name.
    pub login_hint: Option<String>,
    /// User name (POST).
    pub username: Option<String>,
    /// Password (POST).
    pub password: Option<String>,
    /// Second-factor form (POST): the pending sign-in it continues.
    pub mfa_ticket: Option<String>,
    /// Second-factor form (POST): the one-time code.
    pub otc: Option<String>,
}

/// The device authorization endpoint's form body.
#[derive(Debug, Deserialize)]
pub struct DeviceCodeRequest {
    /// The public client.
    pub client_id: Option<String>,
    /// Requested scopes.
    pub scope: Option<String>,
}

/// The device authorization response.
#[derive(Debug, Serialize)]
pub struct DeviceCodeResponse {
    /// What the user types.
    pub user_code: String,
    /// What the device polls with.
    pub device_code: String,
    /// Where the user goes.
    pub verification_uri: String,
    /// Seconds the codes are valid.
    pub expires_in: i64,
    /// Seconds between polls.
    pub interval: i64,
    /// Instructions for the user.
    pub message: String,
}

/// The verification page's form.
/// No `Debug`: it carries the password.
#[derive(Deserialize)]
pub struct DeviceLoginForm {
    /// The user code.
    pub code: Option<String>,
    /// User name.
    pub username: Option<String>,
    /// Password; moved into `Sensitive` by the handler.
    pub password: Option<String>,
    /// `yes` once the page has shown which application asks for what.
    pub confirm: Option<String>,
    /// Second-factor form: the pending sign-in it continues.
    pub mfa_ticket: Option<String>,
    /// Second-factor form: the one-time code.
    pub otc: Option<String>,
}

/// A successful token response.
#[derive(Debug, Serialize)]
pub struct TokenResponse {
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// The granted scopes (echoed; msal keys its cache on them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Lifetime in seconds.
    pub expires_in: i64,
    /// Extended lifetime in seconds (Entra sends it; equal here).
    pub ext_expires_in: i64,
    /// The JWT.
    pub access_token: String,
    /// Refresh token (user sign-ins).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// OpenID Connect id token (user sign-ins).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    /// base64url `{"uid","utid"}` (user sign-ins).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_info: Option<String>,
}

/// The v1 token endpoint's response adds the resource and absolute times.
#[derive(Debug, Serialize)]
pub struct TokenResponseV1 {
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Lifetime in seconds, as a string (as Entra v1 sends it).
    pub expires_in: String,
    /// Expiry, Unix seconds as a string.
    pub expires_on: String,
    /// Not-before, Unix seconds as a string.
    pub not_before: String,
    /// The resource.
    pub resource: String,
    /// The JWT.
    pub access_token: String,
}

/// `GET /common/userrealm/{user}`: every account here is managed (no federation).
#[derive(Debug, Serialize)]
pub struct UserRealm {
    /// `1.0`.
    pub ver: &'static str,
    /// `Managed`.
    pub account_type: &'static str,
    /// The user's domain.
    pub domain_name: String,
    /// The cloud instance name.
    pub cloud_instance_name: String,
    /// Audience URN.
    pub cloud_audience_urn: &'static str,
}

/// An OAuth error response in Entra's shape.
#[derive(Debug, Serialize)]
pub struct OAuthError {
    /// OAuth error code, e.g. `invalid_client`.
    pub error: &'static str,
    /// `AADSTSnnnn: text`.
    pub error_description: String,
    /// Numeric AADSTS codes.
    pub error_codes: Vec<u32>,
    /// ISO-8601 time.
    pub timestamp: String,
    /// Request id.
    pub trace_id: String,
    /// Correlation id.
    pub correlation_id: String,
    /// `https://login.microsoftonline.com/error?code=n`.
    pub error_uri: String,
    /// `basic_action` (a step the flow cannot take), `message_only`, …
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suberror: Option<&'static str>,
    /// A claims challenge, as JSON text (`capolids` of blocking policies).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claims: Option<String>,
}

/// `/.well-known/openid-configuration` (the fields MSAL and OIDC clients read).
#[derive(Debug, Serialize)]
pub struct OpenIdConfiguration {
    /// Token endpoint.
    pub token_endpoint: String,
    /// Supported client authentication methods.
    pub token_endpoint_auth_methods_supported: Vec<&'static str>,
    /// JWKS location.
    pub jwks_uri: String,
    /// Response modes.
    pub response_modes_supported: Vec<&'static str>,
    /// Subject types.
    pub subject_types_supported: Vec<&'static str>,
    /// Signing algorithms.
    pub id_token_signing_alg_values_supported: Vec<&'static str>,
    /// Response types.
    pub response_types_supported: Vec<&'static str>,
    /// Scopes.
    pub scopes_supported: Vec<&'static str>,
    /// Issuer (`{authority}/{tenant}/v2.0`).
    pub issuer: String,
    /// Whether `request_uri` is supported.
    pub request_uri_parameter_supported: bool,
    /// Authorization endpoint.
    pub authorization_endpoint: String,
    /// Device code endpoint.
    pub device_authorization_endpoint: String,
    /// Logout endpoint.
    pub end_session_endpoint: String,
    /// Whether HTTP logout is supported.
    pub http_logout_supported: bool,
    /// Whether front-channel logout is supported.
    pub frontchannel_logout_supported: bool,
    /// Claims.
    pub claims_supported: Vec<&'static str>,
    /// Region scope (Entra field).
    pub tenant_region_scope: Option<&'static str>,
    /// Cloud instance (Entra field).
    pub cloud_instance_name: String,
    /// Graph host (Entra field).
    pub msgraph_host: String,
}

/// A JSON Web Key Set.
#[derive(Debug, Serialize)]
pub struct Jwks {
    /// The keys.
    pub keys: Vec<Jwk>,
}

/// One public signing key.
#[derive(Debug, Serialize)]
pub struct Jwk {
    /// `RSA`.
    pub kty: &'static str,
    /// `sig`.
    #[serde(rename = "use")]
    pub use_: &'static str,
    /// Key id.
    pub kid: String,
    /// Modulus, base64url.
    pub n: String,
    /// Exponent, base64url.
    pub e: String,
    /// Issuer the key signs for.
    pub issuer: String,
}

/// Formats Unix seconds as ISO-8601 UTC (`2026-11-27T11:08:09Z`).
pub fn iso8601(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = keyhaven_core::clock::civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_formats_known_instants() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(1_798_369_689), "2026-12-27T11:08:09Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00Z");
    }
}

/// The instance metadata service's token response (numbers as strings).
#[derive(Debug, Serialize)]
pub struct ImdsToken {
    /// The JWT.
    pub access_token: String,
    /// The identity's client id.
    pub client_id: String,
    /// Lifetime in seconds.
    pub expires_in: String,
    /// Expiry, Unix seconds.
    pub expires_on: String,
    /// Extended lifetime in seconds.
    pub ext_expires_in: String,
    /// Not-before, Unix seconds.
    pub not_before: String,
    /// The resource.
    pub resource: String,
    /// `Bearer`.
    pub token_type: &'static str,
}

/// The App Service identity endpoint's token response.
#[derive(Debug, Serialize)]
pub struct AppServiceToken {
    /// The JWT.
    pub access_token: String,
    /// Expiry, Unix seconds.
    pub expires_on: String,
    /// The resource.
    pub resource: String,
    /// `Bearer`.
    pub token_type: &'static str,
    /// The identity's client id.
    pub client_id: String,
}

/// A metadata-endpoint error: `{"error","error_description"}`.
#[derive(Debug, Serialize)]
pub struct ImdsError {
    /// e.g. `invalid_request`.
    pub error: &'static str,
    /// Text.
    pub error_description: String,
}
