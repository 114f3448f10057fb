//! Refresh-token rotation with reuse detection. Every sign-in that returns a
//! refresh token starts a family; each refresh replaces the family's one
//! valid token id (`jti`) by the next with a compare-and-set in the store,
//! so it holds across nodes. Presenting a token that is no longer the
//! family's current one — a stolen copy used after its owner refreshed, or
//! the owner after the thief — revokes the whole family: both must sign in
//! again. A family can also be revoked by its id.

use std::sync::Arc;

use keyhaven_core::{Storage, StoreError};

/// Identifies one refresh token: its family and its own id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshId {
    /// The sign-in session it belongs to.
    pub family: String,
    /// This token's id.
    pub jti: String,
}

impl RefreshId {
    /// A new family with its first token id.
    pub fn new_family() -> Self {
        Self {
            family: uuid::Uuid::new_v4().simple().to_string(),
            jti: uuid::Uuid::new_v4().simple().to_string(),
        }
    }

    /// The next token id of the same family.
    pub fn next(&self) -> Self {
        Self {
            family: self.family.clone(),
            jti: uuid::Uuid::new_v4().simple().to_string(),
        }
    }
}

/// What presenting a refresh token did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// It was current; the family now expects the next id.
    Rotated,
    /// It was not current (used before, or the family was revoked): the
    /// family is revoked now.
    Reused,
}

const REVOKED: &[u8] = b"revoked";

fn key(family: &str) -> String {
    format!("refresh_family|{family}")
}

/// Records a new family whose current token is `id`.
pub async fn start(store: &Arc<dyn Storage>, id: &RefreshId) -> Result<(), StoreError> {
    store
        .put_setting_if_absent(&key(&id.family), id.jti.as_bytes())
        .await
        .map(|_| ())
}

/// Moves the family of `presented` on to `next`, or revokes it if
/// `presented` is not its current token.
pub async fn rotate(
    store: &Arc<dyn Storage>,
    presented: &RefreshId,
    next: &RefreshId,
) -> Result<Rotation, StoreError> {
    let k = key(&presented.family);
    if store
        .replace_setting(&k, presented.jti.as_bytes(), next.jti.as_bytes())
        .await?
    {
        return Ok(Rotation::Rotated);
    }
    revoke(store, &presented.family).await?;
    Ok(Rotation::Reused)
}

/// Revokes a family: none of its tokens refreshes again. True if it was live.
pub async fn revoke(store: &Arc<dyn Storage>, family: &str) -> Result<bool, StoreError> {
    let k = key(family);
    for _ in 0..8 {
        match store.get_setting(&k).await? {
            None => {
                if store.put_setting_if_absent(&k, REVOKED).await? {
                    return Ok(false);
                }
            }
            Some(v) if v == REVOKED => return Ok(false),
            Some(v) => {
                if store.replace_setting(&k, &v, REVOKED).await? {
                    return Ok(true);
                }
            }
        }
    }
    Err(StoreError::Unavailable(
        "refresh family is contended".into(),
    ))
}
