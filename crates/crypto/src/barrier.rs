//! The software barrier: AES-256-GCM envelope encryption. The master key wraps
//! each vault's data key; data keys seal object payloads. Every ciphertext is
//! `0x01 || nonce(12) || ciphertext || tag(16)` and binds caller-chosen
//! associated data, so a payload moved to another vault, name or version fails
//! to open.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use keyhaven_core::{Barrier, Error, Result, Sensitive, VaultRecord};
use openssl::symm::{decrypt_aead, encrypt_aead, Cipher};
use zeroize::Zeroizing;

use crate::master::{Keyring, MasterKey};

/// Sealed under a data key, or under master key 0 (before any rotation).
const FORMAT_V1: u8 = 1;
/// Sealed under the master key whose id follows (4 bytes, big-endian).
const FORMAT_V2: u8 = 2;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const DATA_KEY_LEN: usize = 32;

/// Barrier backed by master keys held in process memory.
pub struct SoftwareBarrier {
    ring: RwLock<Arc<Keyring>>,
    /// Where the keyring lives (`None`: in memory only, as in tests).
    path: Option<PathBuf>,
    // Unwrapped data keys by vault id; zeroized when dropped.
    data_keys: RwLock<HashMap<String, Sensitive<Vec<u8>>>>,
}

impl std::fmt::Debug for SoftwareBarrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SoftwareBarrier([redacted])")
    }
}

impl SoftwareBarrier {
    /// A barrier over one master key (id 0), kept in memory only.
    pub fn new(master: MasterKey) -> Self {
        Self::with_keyring(Keyring::single(master), None)
    }

    /// A barrier over a keyring, saved to `path` when the master key rotates.
    pub fn with_keyring(ring: Keyring, path: Option<PathBuf>) -> Self {
        Self {
            ring: RwLock::new(Arc::new(ring)),
            path,
            data_keys: RwLock::new(HashMap::new()),
        }
    }

    fn ring(&self) -> Arc<Keyring> {
        self.ring
            .read()
            .map(|r| Arc::clone(&r))
            .unwrap_or_else(|p| Arc::clone(&p.into_inner()))
    }

    /// The id of the master key new seals use.
    pub fn current_key_id(&self) -> u32 {
        self.ring().current().map_or(0, |(id, _)| id)
    }

    /// Whether vault `vault_id`'s wrapped data key opens with this keyring
    /// (a restore checks every vault before it reports success). An empty
    /// key (a vault shredded by an older version's purge) passes.
    pub fn check_data_key(&self, vault_id: &str, wrapped: &[u8]) -> Result<()> {
        if wrapped.is_empty() {
            return Ok(());
        }
        let key = self.open_master(&Self::dek_aad(vault_id), wrapped)?;
        if key.expose().len() == DATA_KEY_LEN {
            Ok(())
        } else {
            Err(Error::Integrity)
        }
    }

    /// Which master key sealed `sealed` (`None` if it is not master-sealed data).
    pub fn key_id_of(sealed: &[u8]) -> Option<u32> {
        match sealed {
            [FORMAT_V1, ..] => Some(0),
            [FORMAT_V2, a, b, c, d, ..] => Some(u32::from_be_bytes([*a, *b, *c, *d])),
            _ => None,
        }
    }

    fn dek_aad(vault_id: &str) -> Vec<u8> {
        format!("keyhaven/v1/dek/{vault_id}").into_bytes()
    }

    /// Seals under the current master key (format 1 while it is key 0, so an
    /// unrotated deployment writes what it always wrote).
    fn seal_master(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let ring = self.ring();
        let (id, key) = ring.current().ok_or(Error::Integrity)?;
        let sealed = seal(key.bytes(), aad, plaintext)?;
        if id == 0 {
            return Ok(sealed);
        }
        let body = sealed.get(1..).ok_or(Error::Integrity)?;
        let mut out = Vec::with_capacity(sealed.len() + 4);
        out.push(FORMAT_V2);
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(body);
        Ok(out)
    }

    /// Opens master-sealed data with the key that sealed it; a key this node
    /// does not know yet sends it back to the keyring file once.
    fn open_master(&self, aad: &[u8], sealed: &[u8]) -> Result<Sensitive<Vec<u8>>> {
        let id = Self::key_id_of(sealed).ok_or(Error::Integrity)?;
        let v1 = |rest: &[u8]| [&[FORMAT_V1][..], rest].concat();
        let body = match sealed {
            [FORMAT_V2, _, _, _, _, rest @ ..] => v1(rest),
            _ => sealed.to_vec(),
        };
        let mut ring = self.ring();
        if ring.get(id).is_none() {
            let _ = self.reload_master();
            ring = self.ring();
        }
        let key = ring.get(id).ok_or(Error::Integrity)?;
        open(key.bytes(), aad, &body)
    }

    fn with_data_key<T>(
        &self,
        vault: &VaultRecord,
        f: impl FnOnce(&[u8]) -> Result<T>,
    ) -> Result<T> {
        if let Ok(cache) = self.data_keys.read() {
            if let Some(k) = cache.get(&vault.id) {
                return f(k.expose());
            }
        }
        let key = self.open_master(&Self::dek_aad(&vault.id), &vault.wrapped_key)?;
        if key.expose().len() != DATA_KEY_LEN {
            return Err(Error::Integrity);
        }
        let out = f(key.expose());
        if let Ok(mut cache) = self.data_keys.write() {
            cache.insert(vault.id.clone(), key);
        }
        out
    }

    /// Re-seals under the current key. Skipped only when the data names the
    /// current key's id *and* opens with that key (its fingerprint): data
    /// under a different key that happens to carry the same id is reported,
    /// never taken for done.
    fn rewrap(&self, aad: &[u8], sealed: &[u8]) -> Result<Option<Vec<u8>>> {
        let plain = self.open_master(aad, sealed)?;
        if Self::key_id_of(sealed) == Some(self.current_key_id()) {
            return Ok(None);
        }
        self.seal_master(aad, plain.expose()).map(Some)
    }

    fn write_ring(&self, guard: &mut Arc<Keyring>, next: Keyring) -> Result<()> {
        if let Some(path) = &self.path {
            next.save(path)
                .map_err(|e| Error::Unavailable(format!("master keyring: {e}")))?;
        }
        *guard = Arc::new(next);
        Ok(())
    }

    fn held(&self, id: u32, fingerprint: &str) -> bool {
        self.ring()
            .fingerprint(id)
            .is_some_and(|fp| fp == fingerprint)
    }
}

impl Barrier for SoftwareBarrier {
    fn new_data_key(&self, vault_id: &str) -> Result<Vec<u8>> {
        let mut key = Zeroizing::new(vec![0u8; DATA_KEY_LEN]);
        openssl::rand::rand_bytes(&mut key).map_err(|_| Error::Integrity)?;
        self.seal_master(&Self::dek_aad(vault_id), &key)
    }

    fn seal(&self, vault: &VaultRecord, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        self.with_data_key(vault, |k| seal(k, aad, plaintext))
    }

    fn open(&self, vault: &VaultRecord, aad: &[u8], sealed: &[u8]) -> Result<Sensitive<Vec<u8>>> {
        self.with_data_key(vault, |k| open(k, aad, sealed))
    }

    fn seal_root(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        self.seal_master(&root_aad(aad), plaintext)
    }

    fn open_root(&self, aad: &[u8], sealed: &[u8]) -> Result<Sensitive<Vec<u8>>> {
        self.open_master(&root_aad(aad), sealed)
    }

    fn seal_with(&self, key: &[u8], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        if key.len() != 32 {
            return Err(Error::Integrity);
        }
        seal(key, aad, plaintext)
    }

    fn open_with(&self, key: &[u8], aad: &[u8], sealed: &[u8]) -> Result<Sensitive<Vec<u8>>> {
        if key.len() != 32 {
            return Err(Error::Integrity);
        }
        open(key, aad, sealed)
    }

    fn forget(&self, vault_id: &str) {
        if let Ok(mut cache) = self.data_keys.write() {
            cache.remove(vault_id);
        }
    }

    fn master_key(&self) -> Option<(u32, String)> {
        let ring = self.ring();
        let (id, key) = ring.current()?;
        Some((id, key.fingerprint()))
    }

    fn master_keys(&self) -> Vec<(u32, String)> {
        let ring = self.ring();
        ring.ids()
            .into_iter()
            .filter_map(|id| ring.fingerprint(id).map(|fp| (id, fp)))
            .collect()
    }

    fn stage_master(&self) -> Result<(u32, String)> {
        // A key an operator added to the file (and gave every node) first.
        let _ = self.reload_master();
        let mut guard = self
            .ring
            .write()
            .map_err(|_| Error::Unavailable("master keyring lock poisoned".into()))?;
        let id = match guard.staged() {
            Some(id) => id,
            None => {
                let next = guard
                    .with_new_key()
                    .map_err(|e| Error::Unavailable(format!("master keyring: {e}")))?;
                let id = next.staged().ok_or(Error::Integrity)?;
                // Saved before the store hears of it: a crash after the
                // store's compare-and-set never leaves a current key that no
                // node holds.
                self.write_ring(&mut guard, next)?;
                id
            }
        };
        let fp = guard.fingerprint(id).ok_or(Error::Integrity)?;
        Ok((id, fp))
    }

    fn adopt_master(&self, id: u32, fingerprint: &str) -> Result<bool> {
        if !self.held(id, fingerprint) {
            let _ = self.reload_master();
            if !self.held(id, fingerprint) {
                return Ok(false);
            }
        }
        let mut guard = self
            .ring
            .write()
            .map_err(|_| Error::Unavailable("master keyring lock poisoned".into()))?;
        if guard.current().is_some_and(|(cur, _)| cur == id) {
            return Ok(true);
        }
        let next = guard.with_current(id).ok_or(Error::Integrity)?;
        self.write_ring(&mut guard, next)?;
        Ok(true)
    }

    fn sealed_by(&self, sealed: &[u8]) -> Option<u32> {
        Self::key_id_of(sealed)
    }

    fn rewrap_data_key(&self, vault_id: &str, wrapped: &[u8]) -> Result<Option<Vec<u8>>> {
        self.rewrap(&Self::dek_aad(vault_id), wrapped)
    }

    fn rewrap_root(&self, aad: &[u8], sealed: &[u8]) -> Result<Option<Vec<u8>>> {
        self.rewrap(&root_aad(aad), sealed)
    }

    fn reload_master(&self) -> Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let on_disk =
            Keyring::load(path).map_err(|e| Error::Unavailable(format!("master keyring: {e}")))?;
        let mut guard = self
            .ring
            .write()
            .map_err(|_| Error::Unavailable("master keyring lock poisoned".into()))?;
        // Keys the file adds are taken; none this process knows is
        // forgotten, and the current key stays: it changes only when the
        // store agrees (`adopt_master`).
        match guard.merged(&on_disk) {
            Some(next) => {
                *guard = Arc::new(next);
                Ok(())
            }
            None => Err(Error::Unavailable(
                "the master keyring file gives a key id this node holds other bytes; not reloaded"
                    .into(),
            )),
        }
    }
}

/// Keeps root-sealed data apart from wrapped data keys even if a caller picks
/// an associated-data string that looks like a data-key one.
fn root_aad(aad: &[u8]) -> Vec<u8> {
    let mut v = b"keyhaven/v1/root/".to_vec();
    v.extend_from_slice(aad);
    v
}

fn seal(key: &[u8], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
    let mut nonce = [0u8; NONCE_LEN];
    openssl::rand::rand_bytes(&mut nonce).map_err(|_| Error::Integrity)?;
    let mut tag = [0u8; TAG_LEN];
    let ct = encrypt_aead(
        Cipher::aes_256_gcm(),
        key,
        Some(&nonce),
        aad,
        plaintext,
        &mut tag,
    )
    .map_err(|_| Error::Integrity)?;
    let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len() + TAG_LEN);
    out.push(FORMAT_V1);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out.extend_from_slice(&tag);
    Ok(out)
}

fn open(key: &[u8], aad: &[u8], sealed: &[u8]) -> Result<Sensitive<Vec<u8>>> {
    let (format, rest) = sealed.split_first().ok_or(Error::Integrity)?;
    if *format != FORMAT_V1 || rest.len() < NONCE_LEN + TAG_LEN {
        return Err(Error::Integrity);
    }
    let (nonce, rest) = rest.split_at(NONCE_LEN);
    let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
    decrypt_aead(Cipher::aes_256_gcm(), key, Some(nonce), aad, ct, tag)
        .map(Sensitive::new)
        .map_err(|_| Error::Integrity)
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyhaven_core::VaultName;

    fn vault(b: &SoftwareBarrier, id: &str) -> VaultRecord {
        VaultRecord {
            id: id.to_owned(),
            name: "dev".parse::<VaultName>().unwrap(),
            tenant_id: "t".into(),
            subscription_id: "s".into(),
            resource_group: "rg".into(),
            sku: "standard".into(),
            retention_days: 90,
            purge_protection: false,
            wrapped_key: b.new_data_key(id).unwrap(),
            created: 0,
            properties: Default::default(),
            rev: 0,
        }
    }

    #[test]
    fn sealed_payload_round_trips_and_hides_plaintext() {
        let b = SoftwareBarrier::new(MasterKey::generate().unwrap());
        let v = vault(&b, "v1");
        let ct = b.seal(&v, b"aad", b"top secret value").unwrap();
        assert!(!ct.windows(10).any(|w| w == b"top secret"));
        assert_eq!(
            b.open(&v, b"aad", &ct).unwrap().expose(),
            b"top secret value"
        );
    }

    #[test]
    fn payload_bound_to_other_aad_or_vault_does_not_open() {
        let b = SoftwareBarrier::new(MasterKey::generate().unwrap());
        let v1 = vault(&b, "v1");
        let v2 = vault(&b, "v2");
        let ct = b.seal(&v1, b"name/1", b"x").unwrap();
        assert!(b.open(&v1, b"name/2", &ct).is_err());
        assert!(b.open(&v2, b"name/1", &ct).is_err());
        let mut tampered = ct.clone();
        if let Some(last) = tampered.last_mut() {
            *last ^= 1;
        }
        assert!(b.open(&v1, b"name/1", &tampered).is_err());
        assert!(b.open(&v1, b"name/1", &[]).is_err());
    }

    #[test]
    fn root_sealed_data_needs_the_same_master_key() {
        let a = SoftwareBarrier::new(MasterKey::generate().unwrap());
        let b = SoftwareBarrier::new(MasterKey::generate().unwrap());
        let ct = a.seal_root(b"backup", b"blob").unwrap();
        assert_eq!(a.open_root(b"backup", &ct).unwrap().expose(), b"blob");
        assert!(b.open_root(b"backup", &ct).is_err());
        assert!(a.open_root(b"other", &ct).is_err());
    }

    #[test]
    fn rotation_rewraps_under_a_new_key_and_old_seals_still_open() {
        let dir = std::env::temp_dir().join(format!("kh-ring-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("master.key");
        let ring = Keyring::load_or_create(&path).unwrap();
        let b = SoftwareBarrier::with_keyring(ring, Some(path.clone()));
        let v = vault(&b, "v1");
        let payload = b.seal(&v, b"p", b"value").unwrap();
        let old_backup = b.seal_root(b"backup", b"blob").unwrap();
        assert_eq!(SoftwareBarrier::key_id_of(&v.wrapped_key), Some(0));
        let lagging =
            SoftwareBarrier::with_keyring(Keyring::load(&path).unwrap(), Some(path.clone()));

        let (k, fp) = b.stage_master().unwrap();
        assert_ne!(k, 0);
        assert_eq!(b.current_key_id(), 0, "staged, not current yet");
        assert_eq!(
            b.stage_master().unwrap(),
            (k, fp.clone()),
            "staging twice stages one key"
        );
        assert!(
            !b.adopt_master(k, "0000000000000000").unwrap(),
            "the fingerprint must match"
        );
        assert!(b.adopt_master(k, &fp).unwrap());
        assert_eq!(b.master_key(), Some((k, fp)));
        let rewrapped = b.rewrap_data_key("v1", &v.wrapped_key).unwrap().unwrap();
        assert_eq!(SoftwareBarrier::key_id_of(&rewrapped), Some(k));
        assert!(
            b.rewrap_data_key("v1", &rewrapped).unwrap().is_none(),
            "already current"
        );
        assert!(
            b.rewrap_data_key("v2", &v.wrapped_key).is_err(),
            "bound to its vault"
        );

        // A cold node (a fresh barrier over the saved keyring) opens both.
        let cold = SoftwareBarrier::with_keyring(Keyring::load(&path).unwrap(), Some(path.clone()));
        let moved = VaultRecord {
            wrapped_key: rewrapped,
            ..v.clone()
        };
        assert_eq!(
            cold.open(&moved, b"p", &payload).unwrap().expose(),
            b"value"
        );
        assert_eq!(
            cold.open_root(b"backup", &old_backup).unwrap().expose(),
            b"blob"
        );
        let new_root = cold.seal_root(b"backup", b"blob2").unwrap();
        assert_eq!(SoftwareBarrier::key_id_of(&new_root), Some(k));

        // A node that has not used the new key yet picks it up from the file.
        assert_eq!(
            lagging.open_root(b"backup", &new_root).unwrap().expose(),
            b"blob2"
        );
        // It learns the key but keeps sealing with its own until the store
        // says otherwise (adopt_master).
        assert_eq!(lagging.current_key_id(), 0);
        let fp = lagging
            .master_keys()
            .into_iter()
            .find(|(id, _)| *id == k)
            .unwrap()
            .1;
        assert!(lagging.adopt_master(k, &fp).unwrap());
        assert_eq!(lagging.current_key_id(), k);
        let stale = SoftwareBarrier::with_keyring(
            Keyring::single(MasterKey::generate().unwrap()),
            Some(path.clone()),
        );
        assert!(
            stale.open_root(b"backup", &new_root).is_err(),
            "never takes a file that gives its key id 0 other bytes"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Issue 29, item 7: data carrying the current key's id but sealed by a
    /// different key (two nodes that each made their own "key 1") is never
    /// taken for rewrapped.
    #[test]
    fn rewrap_skips_only_data_the_current_key_opens() {
        let a = SoftwareBarrier::new(MasterKey::generate().unwrap());
        let (ka, fa) = a.stage_master().unwrap();
        assert!(a.adopt_master(ka, &fa).unwrap());
        let sealed_by_a = a.seal_root(b"x", b"v").unwrap();
        // Another barrier whose current key has the same id but other bytes.
        let text = format!("{ka} {}\ncurrent {ka}\n", "11".repeat(32));
        let b = SoftwareBarrier::with_keyring(Keyring::parse(&text).unwrap(), None);
        assert_eq!(b.current_key_id(), ka);
        assert!(b.rewrap_root(b"x", &sealed_by_a).is_err());
        assert!(a.rewrap_root(b"x", &sealed_by_a).unwrap().is_none());
    }
}
