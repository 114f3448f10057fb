//! The key that seals users' authentication-method secrets (TOTP seeds):
//! 256 random bits kept in the store sealed under the master key (so a
//! master key rotation re-seals this one setting, not every user), made on
//! first start by whichever node gets there first.

use std::sync::Arc;

use keyhaven_core::{Barrier, Error, Sensitive, Storage};

/// The setting holding the sealed key.
pub const SETTING: &str = "auth_methods_key";
/// Its associated data under the master key.
pub const AAD: &[u8] = b"auth-methods-key";
const KEY_BYTES: usize = 32;

/// Loads the key, making it if no node has yet.
pub async fn load_or_create(
    store: &Arc<dyn Storage>,
    barrier: &Arc<dyn Barrier>,
) -> Result<Sensitive<Vec<u8>>, Error> {
    if let Some(sealed) = store.get_setting(SETTING).await? {
        return open(barrier, &sealed);
    }
    let mut raw = vec![0u8; KEY_BYTES];
    let filled = openssl::rand::rand_bytes(&mut raw);
    let key = Sensitive::new(raw);
    filled.map_err(|_| Error::Unavailable("the random generator failed".into()))?;
    let sealed = barrier.seal_root(AAD, key.expose())?;
    store.put_setting_if_absent(SETTING, &sealed).await?;
    // Another node may have won: its key is the key.
    let stored = store.get_setting(SETTING).await?.ok_or(Error::Integrity)?;
    open(barrier, &stored)
}

fn open(barrier: &Arc<dyn Barrier>, sealed: &[u8]) -> Result<Sensitive<Vec<u8>>, Error> {
    let key = barrier.open_root(AAD, sealed)?;
    if key.expose().len() != KEY_BYTES {
        return Err(Error::Integrity);
    }
    Ok(key)
}
