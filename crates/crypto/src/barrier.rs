//! The software barrier: AES-256-GCM envelope encryption. The master key wraps
//! each vault's data key; data keys seal object payloads. Every ciphertext is
//! `0x01 || nonce(12) || ciphertext || tag(16)` and binds caller-chosen
//! associated data, so a payload moved to another vault, name or version fails
//! to open.

use std::collections::HashMap;
use std::sync::RwLock;

use keyhaven_core::{Barrier, Error, Result, Sensitive, VaultRecord};
use openssl::symm::{decrypt_aead, encrypt_aead, Cipher};
use zeroize::Zeroizing;

use crate::master::MasterKey;

const FORMAT_V1: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const DATA_KEY_LEN: usize = 32;

/// Barrier backed by a master key held in process memory.
pub struct SoftwareBarrier {
    master: MasterKey,
    // Unwrapped data keys by vault id; zeroized when dropped.
    data_keys: RwLock<HashMap<String, Sensitive<Vec<u8>>>>,
}

impl std::fmt::Debug for SoftwareBarrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SoftwareBarrier([redacted])")
    }
}

impl SoftwareBarrier {
    /// A barrier over `master`.
    pub fn new(master: MasterKey) -> Self {
        Self {
            master,
            data_keys: RwLock::new(HashMap::new()),
        }
    }

    fn dek_aad(vault_id: &str) -> Vec<u8> {
        format!("keyhaven/v1/dek/{vault_id}").into_bytes()
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
        let key = open(
            self.master.bytes(),
            &Self::dek_aad(&vault.id),
            &vault.wrapped_key,
        )?;
        if key.expose().len() != DATA_KEY_LEN {
            return Err(Error::Integrity);
        }
        let out = f(key.expose());
        if let Ok(mut cache) = self.data_keys.write() {
            cache.insert(vault.id.clone(), key);
        }
        out
    }
}

impl Barrier for SoftwareBarrier {
    fn new_data_key(&self, vault_id: &str) -> Result<Vec<u8>> {
        let mut key = Zeroizing::new(vec![0u8; DATA_KEY_LEN]);
        openssl::rand::rand_bytes(&mut key).map_err(|_| Error::Integrity)?;
        seal(self.master.bytes(), &Self::dek_aad(vault_id), &key)
    }

    fn seal(&self, vault: &VaultRecord, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        self.with_data_key(vault, |k| seal(k, aad, plaintext))
    }

    fn open(&self, vault: &VaultRecord, aad: &[u8], sealed: &[u8]) -> Result<Sensitive<Vec<u8>>> {
        self.with_data_key(vault, |k| open(k, aad, sealed))
    }

    fn seal_root(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        seal(self.master.bytes(), &root_aad(aad), plaintext)
    }

    fn open_root(&self, aad: &[u8], sealed: &[u8]) -> Result<Sensitive<Vec<u8>>> {
        open(self.master.bytes(), &root_aad(aad), sealed)
    }

    fn forget(&self, vault_id: &str) {
        if let Ok(mut cache) = self.data_keys.write() {
            cache.remove(vault_id);
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
}
