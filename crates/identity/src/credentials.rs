//! Client secrets: generated once, shown once, stored only as argon2id hashes.
//! Verification is constant-time in the hash comparison, and an unknown client
//! costs the same work as a known one.

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
    /// argon2id PHC string.
    pub hash: String,
    /// Expiry, Unix seconds; `None` = never.
    #[serde(rename = "endDateTime")]
    pub end: Option<i64>,
}

/// The credentials JSON of a principal record.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClientCredentials {
    /// Client secrets.
    #[serde(default)]
    pub passwords: Vec<PasswordCredential>,
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

    /// Generates a new secret, stores its hash, and returns the secret (once).
    pub fn add_password(&mut self, end: Option<i64>) -> Result<Sensitive<String>, CredentialError> {
        let mut raw = [0u8; 30];
        openssl::rand::rand_bytes(&mut raw).map_err(|_| CredentialError::Random)?;
        let secret = Sensitive::new(URL_SAFE_NO_PAD.encode(raw));
        raw.iter_mut().for_each(|b| *b = 0);
        let hash = hash_secret(secret.expose())?;
        self.passwords.push(PasswordCredential {
            key_id: uuid::Uuid::new_v4().to_string(),
            hint: secret.expose().chars().take(3).collect(),
            hash,
            end,
        });
        Ok(secret)
    }

    /// True if `secret` matches a credential that has not expired at `now`.
    pub fn verify(&self, secret: &str, now: i64) -> bool {
        let mut ok = false;
        for p in &self.passwords {
            let live = p.end.is_none_or(|end| now < end);
            // Check every credential so timing does not tell which one matched.
            ok |= verify_secret(secret, &p.hash) && live;
        }
        ok
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

/// Verifies a secret against a PHC hash (constant-time comparison inside).
pub fn verify_secret(secret: &str, phc: &str) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secret_verifies_and_is_not_stored() {
        let mut c = ClientCredentials::default();
        let s = c.add_password(None).unwrap();
        assert!(c.verify(s.expose(), 0));
        assert!(!c.verify("wrong", 0));
        assert!(!c.to_json().contains(s.expose().as_str()));
        let back = ClientCredentials::parse(&c.to_json()).unwrap();
        assert!(back.verify(s.expose(), 0));
    }

    #[test]
    fn expired_secret_is_refused() {
        let mut c = ClientCredentials::default();
        let s = c.add_password(Some(100)).unwrap();
        assert!(c.verify(s.expose(), 99));
        assert!(!c.verify(s.expose(), 100));
    }
}
