//! The token signing keys: kept in the store sealed under the master key, the
//! newest signs and up to `MAX_KEYS` verify. Rotation appends a new key with a
//! compare-and-set, so concurrent rotations on several nodes cannot lose one;
//! every node reloads the set periodically.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use keyhaven_core::{Barrier, Error, Sensitive, Storage};
use keyhaven_identity::{SigningKey, TokenError};
use serde::{Deserialize, Serialize};

/// Keys kept: the signing key and the previous ones still verifying.
pub const MAX_KEYS: usize = 3;
/// The setting holding the sealed key set.
pub const SETTING: &str = "token_signing_keys";
const AAD: &[u8] = b"token-signing-keys";
// Deployments from before rotation kept one key here.
const LEGACY_SETTING: &str = "token_signing_key";
const LEGACY_AAD: &[u8] = b"token-signing-key";
const CAS_ATTEMPTS: usize = 5;

/// Errors handling signing keys.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    /// Store or barrier failure.
    #[error("{0}")]
    Domain(#[from] Error),
    /// Key generation or parsing failed.
    #[error("signing key: {0:?}")]
    Key(TokenError),
    /// The stored set is unreadable.
    #[error("stored signing keys are corrupt")]
    Corrupt,
    /// Other writers kept winning.
    #[error("signing keys changed concurrently; try again")]
    Contended,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    /// PKCS#8 DER of each key, standard base64, oldest first.
    keys: Vec<String>,
}

/// Loads the key set, creating (or migrating) it on first start.
pub async fn load_or_create(
    store: &Arc<dyn Storage>,
    barrier: &Arc<dyn Barrier>,
) -> Result<Vec<SigningKey>, SigningError> {
    if let Some(keys) = load(store, barrier).await? {
        return Ok(keys);
    }
    let first = match store
        .get_setting(LEGACY_SETTING)
        .await
        .map_err(Error::from)?
    {
        Some(sealed) => {
            let der = barrier.open_root(LEGACY_AAD, &sealed)?;
            SigningKey::from_pkcs8_der(der.expose()).map_err(SigningError::Key)?
        }
        None => SigningKey::generate().map_err(SigningError::Key)?,
    };
    let sealed = seal(barrier, &[&first])?;
    store
        .put_setting_if_absent(SETTING, &sealed)
        .await
        .map_err(Error::from)?;
    // Another node may have won the race: its set is the set.
    load(store, barrier).await?.ok_or(SigningError::Corrupt)
}

/// Reads the stored key set.
pub async fn load(
    store: &Arc<dyn Storage>,
    barrier: &Arc<dyn Barrier>,
) -> Result<Option<Vec<SigningKey>>, SigningError> {
    match store.get_setting(SETTING).await.map_err(Error::from)? {
        Some(sealed) => Ok(Some(open(barrier, &sealed)?)),
        None => Ok(None),
    }
}

/// Re-seals the stored key set under the current master key (master key
/// rotation); true if it was rewritten.
pub async fn rewrap(
    store: &Arc<dyn Storage>,
    barrier: &Arc<dyn Barrier>,
) -> Result<bool, SigningError> {
    rewrap_setting(store, barrier, SETTING, AAD).await
}

/// Re-seals a root-sealed setting under the current master key with a
/// compare-and-set; true if it was rewritten.
pub async fn rewrap_setting(
    store: &Arc<dyn Storage>,
    barrier: &Arc<dyn Barrier>,
    setting: &str,
    aad: &[u8],
) -> Result<bool, SigningError> {
    for _ in 0..CAS_ATTEMPTS {
        let Some(current) = store.get_setting(setting).await.map_err(Error::from)? else {
            return Ok(false);
        };
        let Some(sealed) = barrier.rewrap_root(aad, &current)? else {
            return Ok(false);
        };
        if store
            .replace_setting(setting, &current, &sealed)
            .await
            .map_err(Error::from)?
        {
            return Ok(true);
        }
    }
    Err(SigningError::Contended)
}

/// Adds a new signing key, dropping the oldest past `MAX_KEYS`; returns the
/// new key set (newest last).
pub async fn rotate(
    store: &Arc<dyn Storage>,
    barrier: &Arc<dyn Barrier>,
) -> Result<Vec<SigningKey>, SigningError> {
    for _ in 0..CAS_ATTEMPTS {
        let current = store
            .get_setting(SETTING)
            .await
            .map_err(Error::from)?
            .ok_or(SigningError::Corrupt)?;
        let mut keys = open(barrier, &current)?;
        keys.push(SigningKey::generate().map_err(SigningError::Key)?);
        let excess = keys.len().saturating_sub(MAX_KEYS);
        keys.drain(..excess);
        let refs: Vec<&SigningKey> = keys.iter().collect();
        let sealed = seal(barrier, &refs)?;
        if store
            .replace_setting(SETTING, &current, &sealed)
            .await
            .map_err(Error::from)?
        {
            return Ok(keys);
        }
    }
    Err(SigningError::Contended)
}

fn seal(barrier: &Arc<dyn Barrier>, keys: &[&SigningKey]) -> Result<Vec<u8>, SigningError> {
    let mut stored = Stored {
        keys: Vec::with_capacity(keys.len()),
    };
    for k in keys {
        let der = k.to_pkcs8_der().map_err(SigningError::Key)?;
        stored.keys.push(STANDARD.encode(der.expose()));
    }
    let json = Sensitive::new(serde_json::to_vec(&stored).map_err(|_| SigningError::Corrupt)?);
    for k in &mut stored.keys {
        zeroize_string(k);
    }
    Ok(barrier.seal_root(AAD, json.expose())?)
}

fn open(barrier: &Arc<dyn Barrier>, sealed: &[u8]) -> Result<Vec<SigningKey>, SigningError> {
    let json = barrier.open_root(AAD, sealed)?;
    let mut stored: Stored =
        serde_json::from_slice(json.expose()).map_err(|_| SigningError::Corrupt)?;
    let mut keys = Vec::with_capacity(stored.keys.len());
    for k in &stored.keys {
        let der = Sensitive::new(STANDARD.decode(k).map_err(|_| SigningError::Corrupt)?);
        keys.push(SigningKey::from_pkcs8_der(der.expose()).map_err(SigningError::Key)?);
    }
    for k in &mut stored.keys {
        zeroize_string(k);
    }
    if keys.is_empty() {
        return Err(SigningError::Corrupt);
    }
    Ok(keys)
}

fn zeroize_string(s: &mut String) {
    drop(Sensitive::new(std::mem::take(s)));
}
