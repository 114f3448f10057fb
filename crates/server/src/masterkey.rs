//! Which master key seals, agreed through the store: the setting
//! `master_key` holds `<id> <fingerprint>` of the current key. A node starts
//! only if it holds that key (adopting it as current if its own keyring says
//! otherwise), and a rotation moves the setting by compare-and-set, so two
//! nodes rotating at once (a retry through a load balancer) end with one
//! current key: the second adopts it, or refuses if it does not hold it.

use std::sync::Arc;

use keyhaven_core::{Barrier, Error, Storage};

/// The setting naming the current master key.
pub const SETTING: &str = "master_key";
const ATTEMPTS: usize = 5;

/// What a rotation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// A new key (or one an operator added) became current.
    Rotated(u32),
    /// Another node had rotated to this key since this node last looked;
    /// this node adopted it instead of making another.
    Adopted(u32),
}

impl Rotation {
    /// The current key's id.
    pub fn key_id(self) -> u32 {
        match self {
            Self::Rotated(id) | Self::Adopted(id) => id,
        }
    }
}

/// Why the master key could not be agreed.
#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    /// The store names a key this node does not hold.
    #[error("the current master key is {id} (fingerprint {fingerprint}), which is not in this node's master.key; copy master.key from a node that has it")]
    NotHeld {
        /// Its id.
        id: u32,
        /// Its fingerprint.
        fingerprint: String,
    },
    /// The store or the keyring failed.
    #[error(transparent)]
    Core(#[from] Error),
    /// The setting kept changing.
    #[error("the master key setting kept changing; try again")]
    Contended,
}

fn format(key: &(u32, String)) -> Vec<u8> {
    format!("{} {}", key.0, key.1).into_bytes()
}

fn parse(raw: &[u8]) -> Result<(u32, String), Error> {
    let text = std::str::from_utf8(raw).map_err(|_| Error::Integrity)?;
    let (id, fp) = text.split_once(' ').ok_or(Error::Integrity)?;
    Ok((id.parse().map_err(|_| Error::Integrity)?, fp.to_owned()))
}

/// The store's current key, recording this node's if none is recorded yet.
async fn recorded(
    store: &Arc<dyn Storage>,
    mine: &(u32, String),
) -> Result<(Vec<u8>, (u32, String)), Error> {
    store.put_setting_if_absent(SETTING, &format(mine)).await?;
    let raw = store.get_setting(SETTING).await?.ok_or(Error::Integrity)?;
    let key = parse(&raw)?;
    Ok((raw, key))
}

/// At start: this node seals with the key the store names (adopting it),
/// or refuses to start.
pub async fn reconcile(
    store: &Arc<dyn Storage>,
    barrier: &Arc<dyn Barrier>,
) -> Result<(), MasterKeyError> {
    let Some(mine) = barrier.master_key() else {
        return Ok(());
    };
    let (_, (id, fingerprint)) = recorded(store, &mine).await?;
    if (id, fingerprint.as_str()) == (mine.0, mine.1.as_str()) {
        return Ok(());
    }
    if barrier.adopt_master(id, &fingerprint)? {
        tracing::warn!(
            key_id = id, %fingerprint, file_current = mine.0,
            "sealing with the master key the store names, not the one master.key marks current"
        );
        Ok(())
    } else {
        Err(MasterKeyError::NotHeld { id, fingerprint })
    }
}

/// While serving (each scheduler pass): follows a rotation made on another
/// node, adopting the key the store names as soon as this node's keyring
/// holds it, so no node goes on sealing new vault keys under a key the
/// others consider retired. Returns the key the store names if this node
/// does not hold it (the caller warns once per key).
pub async fn follow(
    store: &Arc<dyn Storage>,
    barrier: &Arc<dyn Barrier>,
) -> Result<Option<u32>, Error> {
    let Some(mine) = barrier.master_key() else {
        return Ok(None);
    };
    let Some(raw) = store.get_setting(SETTING).await? else {
        return Ok(None);
    };
    let (id, fingerprint) = parse(&raw)?;
    if (id, fingerprint.as_str()) == (mine.0, mine.1.as_str()) {
        return Ok(None);
    }
    if barrier.adopt_master(id, &fingerprint)? {
        tracing::info!(
            key_id = id,
            "adopted the master key another node rotated to"
        );
        Ok(None)
    } else {
        Ok(Some(id))
    }
}

/// Makes a newer key current, agreed through the store.
pub async fn rotate(
    store: &Arc<dyn Storage>,
    barrier: &Arc<dyn Barrier>,
) -> Result<Rotation, MasterKeyError> {
    for _ in 0..ATTEMPTS {
        let mine = barrier.master_key().ok_or_else(|| {
            Error::Unavailable("this barrier cannot rotate its master key".into())
        })?;
        let (raw, (id, fingerprint)) = recorded(store, &mine).await?;
        if (id, fingerprint.as_str()) != (mine.0, mine.1.as_str()) {
            // Another node rotated: agree with it rather than make a rival.
            return if barrier.adopt_master(id, &fingerprint)? {
                Ok(Rotation::Adopted(id))
            } else {
                Err(MasterKeyError::NotHeld { id, fingerprint })
            };
        }
        let staged = barrier.stage_master()?;
        if store
            .replace_setting(SETTING, &raw, &format(&staged))
            .await
            .map_err(Error::from)?
        {
            if !barrier.adopt_master(staged.0, &staged.1)? {
                return Err(Error::Integrity.into());
            }
            return Ok(Rotation::Rotated(staged.0));
        }
    }
    Err(MasterKeyError::Contended)
}
