//! Client secrets: generated once, shown once, stored only as hashes.
//! Keyhaven generates them with 240 bits of entropy, so they are stored as a
//! salted SHA-256 (`$kh-sha256$salt$digest`): no guessing can find such a
//! secret, and a slow hash would only make every token cost ~12 ms of CPU
//! (secrets from before this scheme keep their argon2id hash). Passwords,
//! chosen by people, stay argon2id. Comparisons are constant-time, and an
//! unknown client costs the same work as a known one.

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use keyhaven_core::Sensitive;
use serde::{Deserialize, Serialize};

/// A password credential of an application, as stored (hash only).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PasswordCredential {
    /// Credential id.
    #[serde(rename = "keyId")]
    pub key_id: String,
    /// First three characters of the secret, as Entra shows.
    pub hint: String,
    /// `$kh-sha256$…` (or, for older secrets, an argon2id PHC string).
    pub hash: String,
    /// Display name.
    #[serde(rename = "displayName", default)]
    pub display_name: Option<String>,
    /// Start, Unix seconds.
    #[serde(rename = "startDateTime", default)]
    pub start: i64,
    /// Expiry, Unix seconds; `None` = never.
    #[serde(rename = "endDateTime")]
    pub end: Option<i64>,
}

/// A certificate credential: the public certificate only.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyCredential {
    /// Credential id.
    #[serde(rename = "keyId")]
    pub key_id: String,
    /// Display name.
    #[serde(rename = "displayName", default)]
    pub display_name: Option<String>,
    /// `AsymmetricX509Cert`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `Verify`.
    pub usage: String,
    /// The DER certificate, standard base64.
    pub key: String,
    /// SHA-1 thumbprint of the DER, base64url (the JWT `x5t`).
    pub x5t: String,
    /// SHA-256 thumbprint of the DER, base64url (the JWT `x5t#S256`).
    pub x5t_s256: String,
    /// Certificate notBefore, Unix seconds.
    #[serde(rename = "startDateTime")]
    pub start: i64,
    /// Certificate notAfter, Unix seconds.
    #[serde(rename = "endDateTime")]
    pub end: i64,
}

/// A federated identity credential: trust in tokens of an external issuer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FederatedCredential {
    /// Credential id.
    pub id: String,
    /// Unique name within the application.
    pub name: String,
    /// The external issuer URL.
    pub issuer: String,
    /// The external subject that must match exactly.
    pub subject: String,
    /// Accepted audiences of the external token.
    pub audiences: Vec<String>,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
}

/// The credentials JSON of an application.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClientCredentials {
    /// Client secrets.
    #[serde(default)]
    pub passwords: Vec<PasswordCredential>,
    /// Certificates.
    #[serde(default)]
    pub keys: Vec<KeyCredential>,
    /// Federated identity credentials.
    #[serde(default)]
    pub federated: Vec<FederatedCredential>,
}

/// The outcome of checking a client secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SecretCheck {
    /// A live credential matched.
    Valid,
    /// Only an expired credential matched.
    Expired,
    /// Nothing matched.
    #[default]
    Invalid,
}

/// Errors of credential handling; never contain the secret.
#[derive(Debug)]
pub enum CredentialError {
    /// Hashing failed.
    Hash,
    /// Randomness failed.
    Random,
}

impl std::fmt::Display for CredentialError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Hash => f.write_str("hashing the client secret failed"),
            Self::Random => f.write_str("random generator failed"),
        }
    }
}

impl std::error::Error for CredentialError {}

impl ClientCredentials {
    /// Parses stored JSON.
    pub fn parse(json: &str) -> Option<Self> {
        serde_json::from_str(json).ok()
    }

    /// Serialises for storage.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }

    /// Generates a new secret, stores its hash, and returns the credential
    /// and the secret (shown once).
    pub fn add_password(
        &mut self,
        display_name: Option<String>,
        start: i64,
        end: Option<i64>,
    ) -> Result<(PasswordCredential, Sensitive<String>), CredentialError> {
        let secret = new_secret()?;
        let hash = hash_generated(secret.expose())?;
        let cred = PasswordCredential {
            key_id: uuid::Uuid::new_v4().to_string(),
            hint: secret.expose().chars().take(3).collect(),
            hash,
            display_name,
            start,
            end,
        };
        self.passwords.push(cred.clone());
        Ok((cred, secret))
    }

    /// Checks `secret` against every credential at `now`.
    pub fn check(&self, secret: &str, now: i64) -> SecretCheck {
        let (mut live, mut expired) = (false, false);
        for p in &self.passwords {
            // Check every credential so timing does not tell which one matched.
            if verify_secret(secret, &p.hash) {
                if p.end.is_none_or(|end| now < end) && now >= p.start {
                    live = true;
                } else {
                    expired = true;
                }
            }
        }
        match (live, expired) {
            (true, _) => SecretCheck::Valid,
            (false, true) => SecretCheck::Expired,
            _ => SecretCheck::Invalid,
        }
    }

    /// True if `secret` matches a credential that is valid at `now`.
    pub fn verify(&self, secret: &str, now: i64) -> bool {
        self.check(secret, now) == SecretCheck::Valid
    }
}

/// Hashes a secret with argon2id and a random salt.
pub fn hash_secret(secret: &str) -> Result<String, CredentialError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|_| CredentialError::Hash)
}

/// The prefix of a generated secret's hash.
const FAST: &str = "$kh-sha256$";

fn sha256_salted(salt: &[u8], secret: &str) -> Option<Vec<u8>> {
    let mut h = openssl::sha::Sha256::new();
    h.update(salt);
    h.update(secret.as_bytes());
    Some(h.finish().to_vec())
}

/// The work of checking one generated secret, spent on an unknown client
/// (nothing can fail: a fixed salt, never a stored hash).
pub fn burn_generated(secret: &str) {
    let _ = sha256_salted(&[0u8; 16], secret);
}

/// Hashes a secret Keyhaven generated (full entropy): salted SHA-256.
pub(crate) fn hash_generated(secret: &str) -> Result<String, CredentialError> {
    let mut salt = [0u8; 16];
    openssl::rand::rand_bytes(&mut salt).map_err(|_| CredentialError::Random)?;
    let digest = sha256_salted(&salt, secret).ok_or(CredentialError::Hash)?;
    Ok(format!(
        "{FAST}{}${}",
        URL_SAFE_NO_PAD.encode(salt),
        URL_SAFE_NO_PAD.encode(digest)
    ))
}

/// Whether a stored hash is cheap to check (a generated secret's).
pub fn is_fast(hash: &str) -> bool {
    hash.starts_with(FAST)
}

/// Verifies a password (chosen by a person) against its argon2id hash; a
/// generated secret's fast hash is never accepted for one.
pub fn verify_password(password: &str, phc: &str) -> bool {
    !is_fast(phc) && verify_secret(password, phc)
}

/// Verifies a client secret against its stored hash: a generated secret's
/// salted SHA-256, or an argon2id PHC string; constant-time comparison
/// either way.
pub fn verify_secret(secret: &str, phc: &str) -> bool {
    if let Some(rest) = phc.strip_prefix(FAST) {
        let Some((salt, digest)) = rest.split_once('$') else {
            return false;
        };
        let (Ok(salt), Ok(want)) = (URL_SAFE_NO_PAD.decode(salt), URL_SAFE_NO_PAD.decode(digest))
        else {
            return false;
        };
        return sha256_salted(&salt, secret)
            .is_some_and(|got| got.len() == want.len() && openssl::memcmp::eq(&got, &want));
    }
    PasswordHash::new(phc)
        .map(|h| {
            Argon2::default()
                .verify_password(secret.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Spends the same work as a real verification, for unknown clients.
pub fn burn_verification(dummy_hash: &str, secret: &str) {
    let _ = verify_secret(secret, dummy_hash);
}

/// 40 random URL-safe characters, never starting with '-': the Azure CLI
/// would read such a secret given as `--password <secret>` as an option (1
/// in 64 did).
fn new_secret() -> Result<Sensitive<String>, CredentialError> {
    loop {
        let mut raw = [0u8; 30];
        openssl::rand::rand_bytes(&mut raw).map_err(|_| CredentialError::Random)?;
        let secret = Sensitive::new(URL_SAFE_NO_PAD.encode(raw));
        raw.iter_mut().for_each(|b| *b = 0);
        if !secret.expose().starts_with('-') {
            return Ok(secret);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_start_with_a_dash() {
        for _ in 0..5_000 {
            let s = new_secret().unwrap();
            assert_eq!(s.expose().len(), 40);
            assert!(!s.expose().starts_with('-'));
        }
    }

    #[test]
    fn generated_secret_verifies_and_is_not_stored() {
        let mut c = ClientCredentials::default();
        let (_, s) = c.add_password(None, 0, None).unwrap();
        assert!(c.verify(s.expose(), 0));
        assert!(!c.verify("wrong", 0));
        assert!(!c.to_json().contains(s.expose().as_str()));
        let back = ClientCredentials::parse(&c.to_json()).unwrap();
        assert!(back.verify(s.expose(), 0));
    }

    #[test]
    fn generated_secrets_use_the_fast_hash_and_older_argon2_ones_still_verify() {
        let mut c = ClientCredentials::default();
        let (cred, s) = c.add_password(None, 0, None).unwrap();
        assert!(is_fast(&cred.hash));
        // Salted: the same secret hashes differently each time.
        assert_ne!(hash_generated(s.expose()).unwrap(), cred.hash);
        assert!(verify_secret(
            s.expose(),
            &hash_generated(s.expose()).unwrap()
        ));
        // Tampered or truncated hashes never verify.
        assert!(!verify_secret(s.expose(), &cred.hash.replace('$', "")));
        assert!(!verify_secret(s.expose(), "$kh-sha256$"));
        assert!(!verify_secret(s.expose(), "$kh-sha256$AAAA$AAAA"));
        // A password is never checked against the fast kind of hash.
        assert!(!verify_password(s.expose(), &cred.hash));
        // A secret from before the scheme (argon2id) keeps verifying.
        let old = hash_secret("an-older-secret").unwrap();
        assert!(!is_fast(&old));
        assert!(verify_secret("an-older-secret", &old));
        assert!(verify_password("an-older-secret", &old));
        assert!(!verify_secret("another", &old));
    }

    #[test]
    fn expired_secret_is_refused() {
        let mut c = ClientCredentials::default();
        let (_, s) = c.add_password(None, 0, Some(100)).unwrap();
        assert!(c.verify(s.expose(), 99));
        assert_eq!(c.check(s.expose(), 100), SecretCheck::Expired);
        assert_eq!(c.check("other", 100), SecretCheck::Invalid);
    }
}
