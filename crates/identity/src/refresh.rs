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
    /// It was the family's previous token, replaced less than
    /// [`GRACE_SECS`] ago: refused, the family kept. Two processes sharing a
    /// token cache that refresh at once, or a client whose response was
    /// lost, must not revoke a live session.
    Superseded,
    /// Neither: a replay. The family is revoked now.
    Reused,
}

/// How long the token a refresh replaced is refused without revoking.
pub const GRACE_SECS: i64 = 60;

const REVOKED: &[u8] = b"revoked";

fn key(family: &str) -> String {
    format!("refresh_family|{family}")
}

/// The family's state: current id, the id it replaced, and when.
fn parse(v: &[u8]) -> (String, String, i64) {
    let s = String::from_utf8_lossy(v);
    let mut parts = s.split('|');
    let cur = parts.next().unwrap_or_default().to_owned();
    let prev = parts.next().unwrap_or_default().to_owned();
    let at = parts.next().and_then(|t| t.parse().ok()).unwrap_or(0);
    (cur, prev, at)
}

/// Records a new family whose current token is `id`.
pub async fn start(store: &Arc<dyn Storage>, id: &RefreshId) -> Result<(), StoreError> {
    store
        .put_setting_if_absent(&key(&id.family), id.jti.as_bytes())
        .await
        .map(|_| ())
}

/// Moves the family of `presented` on to `next` (or, with `next` equal to
/// `presented`, only checks that it is current), refuses its previous token
/// within the grace period, and revokes the family for anything else.
pub async fn rotate(
    store: &Arc<dyn Storage>,
    presented: &RefreshId,
    next: &RefreshId,
    now: i64,
) -> Result<Rotation, StoreError> {
    let k = key(&presented.family);
    for _ in 0..8 {
        let Some(value) = store.get_setting(&k).await? else {
            break;
        };
        if value == REVOKED {
            return Ok(Rotation::Reused);
        }
        let (cur, prev, at) = parse(&value);
        if presented.jti == cur {
            if next.jti == cur {
                return Ok(Rotation::Rotated);
            }
            let moved = format!("{}|{}|{now}", next.jti, cur);
            if store.replace_setting(&k, &value, moved.as_bytes()).await? {
                return Ok(Rotation::Rotated);
            }
            continue;
        }
        if presented.jti == prev && now - at < GRACE_SECS {
            return Ok(Rotation::Superseded);
        }
        break;
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
