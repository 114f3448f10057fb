//! Passphrase-encrypted archives (deployment backups): argon2id turns the
//! passphrase and a random salt into an AES-256-GCM key, and the stream is
//! cut into 1 MiB chunks, each sealed with its index and a last-chunk flag in
//! the associated data, so a reordered, altered or truncated archive does not
//! open.
//!
//! Layout: `KHARCHIVE1\n`, salt (16 bytes), then chunks of
//! `len (u32 BE) || nonce (12) || ciphertext || tag (16)`.

use std::io::{Read, Write};

use argon2::{Algorithm, Argon2, Params, Version};
use openssl::symm::{decrypt_aead, encrypt_aead, Cipher};
use zeroize::Zeroizing;

const MAGIC: &[u8] = b"KHARCHIVE1\n";
const SALT_LEN: usize = 16;
const CHUNK: usize = 1 << 20;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Why an archive could not be written or read (never with key material).
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Reading or writing failed.
    #[error("archive i/o: {0}")]
    Io(#[from] std::io::Error),
    /// Wrong passphrase, or the archive was altered or cut short.
    #[error("the archive does not open: wrong passphrase, or it was altered or cut short")]
    Rejected,
    /// Not a Keyhaven archive.
    #[error("not a Keyhaven archive")]
    NotAnArchive,
    /// The key derivation or cipher failed.
    #[error("archive crypto failed")]
    Crypto,
}

fn derive(passphrase: &[u8], salt: &[u8]) -> Result<Zeroizing<[u8; 32]>, ArchiveError> {
    // 64 MiB, 3 passes: seconds for the owner, costly for a guesser.
    let params = Params::new(64 * 1024, 3, 1, Some(32)).map_err(|_| ArchiveError::Crypto)?;
    let mut key = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase, salt, key.as_mut())
        .map_err(|_| ArchiveError::Crypto)?;
    Ok(key)
}

fn aad(index: u64, last: bool) -> Vec<u8> {
    let mut a = index.to_be_bytes().to_vec();
    a.push(u8::from(last));
    a
}

/// Reads up to `buf.len()` bytes (fewer only at the end of the input).
fn fill(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while let Some(rest) = buf.get_mut(n..).filter(|rest| !rest.is_empty()) {
        match r.read(rest)? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Encrypts everything `input` yields into `output`.
pub fn encrypt(
    passphrase: &[u8],
    input: &mut impl Read,
    output: &mut impl Write,
) -> Result<(), ArchiveError> {
    let mut salt = [0u8; SALT_LEN];
    openssl::rand::rand_bytes(&mut salt).map_err(|_| ArchiveError::Crypto)?;
    let key = derive(passphrase, &salt)?;
    output.write_all(MAGIC)?;
    output.write_all(&salt)?;
    let mut current = Zeroizing::new(vec![0u8; CHUNK]);
    let mut next = Zeroizing::new(vec![0u8; CHUNK]);
    let mut have = fill(input, &mut current)?;
    let mut index = 0u64;
    loop {
        // Look ahead one chunk so the last one is known to be last.
        let ahead = if have == CHUNK {
            fill(input, &mut next)?
        } else {
            0
        };
        let last = ahead == 0;
        let mut nonce = [0u8; NONCE_LEN];
        openssl::rand::rand_bytes(&mut nonce).map_err(|_| ArchiveError::Crypto)?;
        let mut tag = [0u8; TAG_LEN];
        let ct = encrypt_aead(
            Cipher::aes_256_gcm(),
            key.as_ref(),
            Some(&nonce),
            &aad(index, last),
            current.get(..have).ok_or(ArchiveError::Crypto)?,
            &mut tag,
        )
        .map_err(|_| ArchiveError::Crypto)?;
        let len =
            u32::try_from(NONCE_LEN + ct.len() + TAG_LEN).map_err(|_| ArchiveError::Crypto)?;
        output.write_all(&len.to_be_bytes())?;
        output.write_all(&nonce)?;
        output.write_all(&ct)?;
        output.write_all(&tag)?;
        if last {
            output.flush()?;
            return Ok(());
        }
        std::mem::swap(&mut current, &mut next);
        have = ahead;
        index += 1;
    }
}

/// Decrypts an archive into `output`; fails on any altered, reordered,
/// missing or extra chunk.
pub fn decrypt(
    passphrase: &[u8],
    input: &mut impl Read,
    output: &mut impl Write,
) -> Result<(), ArchiveError> {
    let mut head = [0u8; 11];
    if fill(input, &mut head)? != MAGIC.len() || head != MAGIC {
        return Err(ArchiveError::NotAnArchive);
    }
    let mut salt = [0u8; SALT_LEN];
    if fill(input, &mut salt)? != SALT_LEN {
        return Err(ArchiveError::Rejected);
    }
    let key = derive(passphrase, &salt)?;
    let mut index = 0u64;
    loop {
        let mut len = [0u8; 4];
        if fill(input, &mut len)? != 4 {
            return Err(ArchiveError::Rejected); // cut short before the last chunk
        }
        let len = u32::from_be_bytes(len) as usize;
        if !(NONCE_LEN + TAG_LEN..=NONCE_LEN + CHUNK + TAG_LEN).contains(&len) {
            return Err(ArchiveError::Rejected);
        }
        let mut sealed = vec![0u8; len];
        if fill(input, &mut sealed)? != len {
            return Err(ArchiveError::Rejected);
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
        let open = |last: bool| {
            decrypt_aead(
                Cipher::aes_256_gcm(),
                key.as_ref(),
                Some(nonce),
                &aad(index, last),
                ct,
                tag,
            )
            .ok()
            .map(Zeroizing::new)
        };
        let (plain, last) = match open(false) {
            Some(p) => (p, false),
            None => (open(true).ok_or(ArchiveError::Rejected)?, true),
        };
        output.write_all(&plain)?;
        if last {
            let mut extra = [0u8; 1];
            if fill(input, &mut extra)? != 0 {
                return Err(ArchiveError::Rejected);
            }
            output.flush()?;
            return Ok(());
        }
        index += 1;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn roundtrip(len: usize) {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let mut sealed = Vec::new();
        encrypt(b"correct horse", &mut data.as_slice(), &mut sealed).unwrap();
        let mut out = Vec::new();
        decrypt(b"correct horse", &mut sealed.as_slice(), &mut out).unwrap();
        assert_eq!(out, data, "length {len}");
    }

    #[test]
    fn archives_round_trip_at_chunk_edges() {
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + 17] {
            roundtrip(len);
        }
    }

    #[test]
    fn wrong_passphrase_alteration_and_truncation_are_refused() {
        let data = vec![5u8; CHUNK + 100];
        let mut sealed = Vec::new();
        encrypt(b"pw", &mut data.as_slice(), &mut sealed).unwrap();
        let mut sink = Vec::new();
        assert!(matches!(
            decrypt(b"other", &mut sealed.as_slice(), &mut sink),
            Err(ArchiveError::Rejected)
        ));
        let mut altered = sealed.clone();
        let at = altered.len() - 40;
        altered[at] ^= 1;
        assert!(decrypt(b"pw", &mut altered.as_slice(), &mut Vec::new()).is_err());
        // Dropping the last chunk leaves a valid-looking prefix: refused.
        let first_len = 4 + u32::from_be_bytes(sealed[27..31].try_into().unwrap()) as usize;
        let cut = &sealed[..27 + first_len];
        assert!(matches!(
            decrypt(b"pw", &mut &cut[..], &mut Vec::new()),
            Err(ArchiveError::Rejected)
        ));
        assert!(matches!(
            decrypt(b"pw", &mut &b"not an archive at all"[..], &mut Vec::new()),
            Err(ArchiveError::NotAnArchive)
        ));
    }
}
