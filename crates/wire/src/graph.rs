//! Microsoft Graph v1.0 shapes for the directory subset: users, groups,
//! applications, service principals, member references, and Graph's error
//! body. Property names are Graph's, camelCase; unset optional properties are
//! `null` as Graph returns them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Graph's error body: `{"error":{"code","message","innerError":{…}}}`.
#[derive(Debug, Serialize)]
pub struct GraphError {
    /// The error.
    pub error: GraphErrorDetail,
}

/// Detail of a Graph error.
#[derive(Debug, Serialize)]
pub struct GraphErrorDetail {
    /// e.g. `Request_ResourceNotFound`.
    pub code: &'static str,
    /// Human-readable message.
    pub message: String,
    /// Request metadata.
    #[serde(rename = "innerError")]
    pub inner_error: GraphInnerError,
}

/// Graph's `innerError`.
#[derive(Debug, Serialize)]
pub struct GraphInnerError {
    /// ISO-8601 time.
    pub date: String,
    /// Request id.
    #[serde(rename = "request-id")]
    pub request_id: String,
    /// Client request id (same as request id when the client sent none).
    #[serde(rename = "client-request-id")]
    pub client_request_id: String,
}

/// A collection response.
#[derive(Debug, Serialize)]
pub struct Collection<T> {
    /// `@odata.context`.
    #[serde(rename = "@odata.context")]
    pub context: String,
    /// Items.
    pub value: Vec<T>,
    /// Next page link.
    #[serde(rename = "@odata.nextLink", skip_serializing_if = "Option::is_none")]
    pub next_link: Option<String>,
}

/// A user.
#[derive(Debug, Serialize)]
pub struct User {
    /// `@odata.context` (single entities) or `@odata.type` (collections of directory objects).
    #[serde(flatten)]
    pub odata: BTreeMap<&'static str, String>,
    /// Object id.
    pub id: String,
    /// Business phones.
    #[serde(rename = "businessPhones")]
    pub business_phones: Vec<String>,
    /// Display name.
    #[serde(rename = "displayName")]
    pub display_name: String,
    /// Given name.
    #[serde(rename = "givenName")]
    pub given_name: Option<String>,
    /// Job title.
    #[serde(rename = "jobTitle")]
    pub job_title: Option<String>,
    /// Mail.
    pub mail: Option<String>,
    /// Mail nickname.
    #[serde(rename = "mailNickname")]
    pub mail_nickname: Option<String>,
    /// Mobile phone.
    #[serde(rename = "mobilePhone")]
    pub mobile_phone: Option<String>,
    /// Office.
    #[serde(rename = "officeLocation")]
    pub office_location: Option<String>,
    /// Language.
    #[serde(rename = "preferredLanguage")]
    pub preferred_language: Option<String>,
    /// Surname.
    pub surname: Option<String>,
    /// UPN.
    #[serde(rename = "userPrincipalName")]
    pub user_principal_name: String,
    /// Enabled.
    #[serde(rename = "accountEnabled")]
    pub account_enabled: bool,
}

/// A group.
#[derive(Debug, Serialize)]
pub struct Group {
    /// `@odata.*` annotations.
    #[serde(flatten)]
    pub odata: BTreeMap<&'static str, String>,
    /// Object id.
    pub id: String,
    /// Display name.
    #[serde(rename = "displayName")]
    pub display_name: String,
    /// Description.
    pub description: Option<String>,
    /// Group types (always empty: security groups).
    #[serde(rename = "groupTypes")]
    pub group_types: Vec<String>,
    /// Mail enabled.
    #[serde(rename = "mailEnabled")]
    pub mail_enabled: bool,
    /// Mail nickname.
    #[serde(rename = "mailNickname")]
    pub mail_nickname: Option<String>,
    /// Security enabled.
    #[serde(rename = "securityEnabled")]
    pub security_enabled: bool,
}

/// A password credential as Graph shows it.
#[derive(Debug, Serialize)]
pub struct PasswordCredentialOut {
    /// Id.
    #[serde(rename = "keyId")]
    pub key_id: String,
    /// Display name.
    #[serde(rename = "displayName")]
    pub display_name: Option<String>,
    /// First characters of the secret.
    pub hint: String,
    /// Start.
    #[serde(rename = "startDateTime")]
    pub start: String,
    /// End.
    #[serde(rename = "endDateTime")]
    pub end: Option<String>,
    /// The secret: only in the `addPassword` response.
    #[serde(rename = "secretText")]
    pub secret_text: Option<String>,
    /// Custom key identifier.
    #[serde(rename = "customKeyIdentifier")]
    pub custom_key_identifier: Option<String>,
}

/// A key (certificate) credential as Graph shows it (no key material).
#[derive(Debug, Serialize)]
pub struct KeyCredentialOut {
    /// Id.
    #[serde(rename = "keyId")]
    pub key_id: String,
    /// Display name.
    #[serde(rename = "displayName")]
    pub display_name: Option<String>,
    /// `AsymmetricX509Cert`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `Verify`.
    pub usage: String,
    /// Start.
    #[serde(rename = "startDateTime")]
    pub start: String,
    /// End.
    #[serde(rename = "endDateTime")]
    pub end: String,
    /// The SHA-1 thumbprint, standard base64.
    #[serde(rename = "customKeyIdentifier")]
    pub custom_key_identifier: String,
    /// Always `null` on read, as in Graph.
    pub key: Option<String>,
}

/// An application.
#[derive(Debug, Serialize)]
pub struct Application {
    /// `@odata.*` annotations.
    #[serde(flatten)]
    pub odata: BTreeMap<&'static str, String>,
    /// Object id.
    pub id: String,
    /// Application (client) id.
    #[serde(rename = "appId")]
    pub app_id: String,
    /// Display name.
    #[serde(rename = "displayName")]
    pub display_name: String,
    /// Sign-in audience.
    #[serde(rename = "signInAudience")]
    pub sign_in_audience: &'static str,
    /// Public client.
    #[serde(rename = "isFallbackPublicClient")]
    pub public_client: bool,
    /// Client secrets (hints only).
    #[serde(rename = "passwordCredentials")]
    pub password_credentials: Vec<PasswordCredentialOut>,
    /// Certificates (thumbprints only).
    #[serde(rename = "keyCredentials")]
    pub key_credentials: Vec<KeyCredentialOut>,
    /// Created.
    #[serde(rename = "createdDateTime")]
    pub created: String,
}

/// A service principal.
#[derive(Debug, Serialize)]
pub struct ServicePrincipal {
    /// `@odata.*` annotations.
    #[serde(flatten)]
    pub odata: BTreeMap<&'static str, String>,
    /// Object id.
    pub id: String,
    /// Application id.
    #[serde(rename = "appId")]
    pub app_id: String,
    /// Display name.
    #[serde(rename = "displayName")]
    pub display_name: String,
    /// Enabled.
    #[serde(rename = "accountEnabled")]
    pub account_enabled: bool,
    /// `Application` or `ManagedIdentity`.
    #[serde(rename = "servicePrincipalType")]
    pub service_principal_type: String,
    /// Owning tenant.
    #[serde(rename = "appOwnerOrganizationId")]
    pub app_owner_organization_id: String,
    /// Names (the appId).
    #[serde(rename = "servicePrincipalNames")]
    pub service_principal_names: Vec<String>,
}

/// A federated identity credential.
#[derive(Debug, Serialize, Deserialize)]
pub struct FederatedIdentityCredential {
    /// Id (ignored on create).
    #[serde(default)]
    pub id: String,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Issuer URL.
    #[serde(default)]
    pub issuer: String,
    /// Subject.
    #[serde(default)]
    pub subject: String,
    /// Audiences.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
}

/// `POST /users` body.
#[derive(Debug, Deserialize)]
pub struct CreateUser {
    /// Enabled (default true).
    #[serde(rename = "accountEnabled")]
    pub account_enabled: Option<bool>,
    /// Display name.
    #[serde(rename = "displayName")]
    pub display_name: Option<String>,
    /// UPN.
    #[serde(rename = "userPrincipalName")]
    pub user_principal_name: Option<String>,
    /// Mail nickname.
    #[serde(rename = "mailNickname")]
    pub mail_nickname: Option<String>,
    /// Password.
    #[serde(rename = "passwordProfile")]
    pub password_profile: Option<PasswordProfile>,
}

/// Graph's password profile.
#[derive(Debug, Deserialize)]
pub struct PasswordProfile {
    /// The password; moved into `Sensitive` at once by the handler.
    pub password: Option<String>,
    /// Ignored (no interactive password change here).
    #[serde(rename = "forceChangePasswordNextSignIn")]
    pub force_change: Option<bool>,
}

/// `PATCH /users/{id}` body.
#[derive(Debug, Deserialize)]
pub struct UpdateUser {
    /// Enabled.
    #[serde(rename = "accountEnabled")]
    pub account_enabled: Option<bool>,
    /// Display name.
    #[serde(rename = "displayName")]
    pub display_name: Option<String>,
    /// Password.
    #[serde(rename = "passwordProfile")]
    pub password_profile: Option<PasswordProfile>,
}

/// `POST /groups` body.
#[derive(Debug, Deserialize)]
pub struct CreateGroup {
    /// Display name.
    #[serde(rename = "displayName")]
    pub display_name: Option<String>,
    /// Mail nickname.
    #[serde(rename = "mailNickname")]
    pub mail_nickname: Option<String>,
    /// Mail enabled.
    #[serde(rename = "mailEnabled")]
    pub mail_enabled: Option<bool>,
    /// Security enabled.
    #[serde(rename = "securityEnabled")]
    pub security_enabled: Option<bool>,
    /// Description.
    pub description: Option<String>,
}

/// `POST /groups/{id}/members/$ref` body.
#[derive(Debug, Deserialize)]
pub struct Reference {
    /// `https://graph…/v1.0/directoryObjects/{id}`.
    #[serde(rename = "@odata.id")]
    pub odata_id: Option<String>,
}

impl Reference {
    /// The referenced object id (last path segment).
    pub fn object_id(&self) -> Option<&str> {
        self.odata_id
            .as_deref()
            .and_then(|u| u.trim_end_matches('/').rsplit('/').next())
            .filter(|s| !s.is_empty())
    }
}

/// `POST /applications` and `PATCH /applications/{id}` body.
#[derive(Debug, Deserialize)]
pub struct ApplicationInput {
    /// Display name.
    #[serde(rename = "displayName")]
    pub display_name: Option<String>,
    /// Certificates to set (replaces all).
    #[serde(rename = "keyCredentials")]
    pub key_credentials: Option<Vec<KeyCredentialIn>>,
}

/// A certificate in `keyCredentials`.
#[derive(Debug, Deserialize)]
pub struct KeyCredentialIn {
    /// `AsymmetricX509Cert`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// `Verify`.
    pub usage: Option<String>,
    /// Standard base64 of the DER certificate.
    pub key: Option<String>,
    /// Display name.
    #[serde(rename = "displayName")]
    pub display_name: Option<String>,
}

/// `POST /applications/{id}/addPassword` body.
#[derive(Debug, Deserialize, Default)]
pub struct AddPassword {
    /// The requested credential.
    #[serde(rename = "passwordCredential", default)]
    pub password_credential: Option<PasswordCredentialIn>,
}

/// Requested properties of a new password credential.
#[derive(Debug, Deserialize, Default)]
pub struct PasswordCredentialIn {
    /// Display name.
    #[serde(rename = "displayName")]
    pub display_name: Option<String>,
    /// End, ISO-8601.
    #[serde(rename = "endDateTime")]
    pub end: Option<String>,
}

/// `POST /applications/{id}/removePassword` body.
#[derive(Debug, Deserialize)]
pub struct RemovePassword {
    /// The credential to remove.
    #[serde(rename = "keyId")]
    pub key_id: Option<String>,
}

/// `POST /servicePrincipals` body.
#[derive(Debug, Deserialize)]
pub struct CreateServicePrincipal {
    /// The application's appId.
    #[serde(rename = "appId")]
    pub app_id: Option<String>,
}

/// `PATCH /servicePrincipals/{id}` body.
#[derive(Debug, Deserialize)]
pub struct UpdateServicePrincipal {
    /// Enable or disable sign-in.
    #[serde(rename = "accountEnabled")]
    pub account_enabled: Option<bool>,
}

/// Parses an ISO-8601 UTC date-time (`2030-01-01T00:00:00Z`, optional
/// fraction, `Z` or `+00:00`; years 1 to 9999) into Unix seconds.
pub fn parse_iso8601(s: &str) -> Option<i64> {
    let s = s.trim();
    let s = s
        .strip_suffix('Z')
        .or_else(|| s.strip_suffix("+00:00"))
        .unwrap_or(s);
    let (date, time) = s.split_once('T').unwrap_or((s, "00:00:00"));
    let mut d = date.split('-');
    let (y, m, day) = (
        d.next()?.parse::<i64>().ok()?,
        d.next()?.parse::<i64>().ok()?,
        d.next()?.parse::<i64>().ok()?,
    );
    let time = time.split('.').next()?;
    let mut t = time.split(':');
    let (hh, mm) = (
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<i64>().ok()?,
    );
    let ss = t.next().map_or(Some(0), |v| v.parse::<i64>().ok())?;
    if !(1..=9999).contains(&y)
        || !(1..=12).contains(&m)
        || !(1..=31).contains(&day)
        || !(0..=23).contains(&hh)
        || !(0..=59).contains(&mm)
        || !(0..=60).contains(&ss)
    {
        return None;
    }
    let days = keyhaven_core::clock::days_from_civil(y, m, day);
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::iso8601;

    #[test]
    fn iso8601_parses_what_it_formats() {
        for t in [0, 951_782_400, 1_798_369_689, 1_893_456_000] {
            assert_eq!(parse_iso8601(&iso8601(t)), Some(t));
        }
        assert_eq!(
            parse_iso8601("2030-01-01T00:00:00.1234567Z"),
            Some(1_893_456_000)
        );
        assert_eq!(
            parse_iso8601("2030-01-01T00:00:00+00:00"),
            Some(1_893_456_000)
        );
        assert_eq!(parse_iso8601("garbage"), None);
        assert_eq!(parse_iso8601("2030-13-01T00:00:00Z"), None);
    }

    #[test]
    fn member_reference_names_the_object() {
        let r = Reference {
            odata_id: Some("https://graph.localhost:8443/v1.0/directoryObjects/abc".into()),
        };
        assert_eq!(r.object_id(), Some("abc"));
    }
}
