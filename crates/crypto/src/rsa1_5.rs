//! RSA1_5 (RSAES-PKCS1-v1_5) decryption with implicit rejection, as
//! draft-irtf-cfrg-rsa-guidance specifies it and OpenSSL 3.2 implements it:
//! the raw RSA output is checked for padding in constant time, and a block
//! that fails yields a synthetic message whose content *and length* come
//! from a PRF over the ciphertext keyed by a secret bound to the private key.
//! A padding oracle then sees the same thing for valid and invalid blocks:
//! a plaintext of a plausible length, the same for the same ciphertext. The
//! linked OpenSSL 3.0 has no implicit rejection, so both backends decrypt
//! raw and decode here.
//!
//! What must not branch on secret data does not: the padding check, the
//! choice of the synthetic length and of the message, and the copy out use
//! masks. (The compiler may still see through them; this is the same care
//! OpenSSL's C takes.) The returned length is either the real or the
//! synthetic one, indistinguishable by design.

use keyhaven_core::{Error, Result};
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;

/// 16-bit length candidates drawn from the PRF.
const LENGTH_CANDIDATES: usize = 128;

/// Decodes the raw RSA output `em` (the modulus's length) of `ciphertext`.
/// `kdk_secret` is bound to the private key (OpenSSL uses SHA-256 of the
/// private exponent). Errors only on public conditions (lengths).
pub(crate) fn decode(kdk_secret: &[u8; 32], ciphertext: &[u8], em: &[u8]) -> Result<Vec<u8>> {
    let k = em.len();
    if !(64..=1024).contains(&k) || ciphertext.len() > k {
        return Err(Error::BadParameter(
            "The ciphertext could not be decrypted.".into(),
        ));
    }
    // The key-derivation key: HMAC of the ciphertext, left-padded to k.
    let mut padded = vec![0u8; k - ciphertext.len()];
    padded.extend_from_slice(ciphertext);
    let kdk = hmac(kdk_secret, &[&padded])?;
    let synthetic = prf(&kdk, b"message", k)?;
    let candidates = prf(&kdk, b"length", LENGTH_CANDIDATES * 2)?;

    // The synthetic length: the last candidate under the largest message
    // size (k - 2 - 8), each masked to that size's bit width.
    let max_sep_offset = (k - 2 - 8) as u32;
    let mut len_mask = max_sep_offset;
    for shift in [1, 2, 4, 8] {
        len_mask |= len_mask >> shift;
    }
    let mut synthetic_length = 0u32;
    for pair in candidates.chunks_exact(2) {
        let (hi, lo) = (
            u32::from(pair.first().copied().unwrap_or(0)),
            u32::from(pair.get(1).copied().unwrap_or(0)),
        );
        let candidate = ((hi << 8) | lo) & len_mask;
        synthetic_length = select(lt(candidate, max_sep_offset), candidate, synthetic_length);
    }
    let synthetic_index = k as u32 - synthetic_length;

    // The real block: 0x00 0x02, at least 8 non-zero padding bytes, 0x00.
    let byte = |i: usize| u32::from(em.get(i).copied().unwrap_or(0xff));
    let mut good = is_zero(byte(0)) & eq(byte(1), 2);
    let mut found = 0u32;
    let mut zero_index = 0u32;
    for i in 2..k {
        let is0 = is_zero(byte(i));
        zero_index = select(!found & is0, i as u32, zero_index);
        found |= is0;
    }
    good &= ge(zero_index, 2 + 8);
    let msg_index = select(good, zero_index + 1, synthetic_index);
    let msg_index = std::hint::black_box(msg_index) as usize;

    // Both buffers are read for every output byte.
    let mut out = Vec::with_capacity(k);
    for i in msg_index..k {
        let real = byte(i);
        let fake = u32::from(synthetic.get(i).copied().unwrap_or(0));
        out.push(select(good, real, fake) as u8);
    }
    Ok(out)
}

/// HMAC-SHA-256 of the concatenated `parts`.
fn hmac(key: &[u8], parts: &[&[u8]]) -> Result<[u8; 32]> {
    let key = PKey::hmac(key).map_err(|_| Error::Integrity)?;
    let mut signer = Signer::new(MessageDigest::sha256(), &key).map_err(|_| Error::Integrity)?;
    for p in parts {
        signer.update(p).map_err(|_| Error::Integrity)?;
    }
    let mut out = [0u8; 32];
    signer.sign(&mut out).map_err(|_| Error::Integrity)?;
    Ok(out)
}

/// The draft's PRF: HMAC-SHA-256(kdk, be16(i) || label || be16(bits)) for
/// i = 0, 1, …, concatenated and cut to `len` bytes.
fn prf(kdk: &[u8; 32], label: &[u8], len: usize) -> Result<Vec<u8>> {
    let bits = u16::try_from(len * 8).map_err(|_| Error::Integrity)?;
    let mut out = Vec::with_capacity(len + 32);
    let mut i: u16 = 0;
    while out.len() < len {
        out.extend_from_slice(&hmac(kdk, &[&i.to_be_bytes(), label, &bits.to_be_bytes()])?);
        i = i.wrapping_add(1);
    }
    out.truncate(len);
    Ok(out)
}

/// All ones if the top bit of `x` is set.
fn msb(x: u32) -> u32 {
    0u32.wrapping_sub(x >> 31)
}

fn is_zero(x: u32) -> u32 {
    msb(!x & x.wrapping_sub(1))
}

fn eq(a: u32, b: u32) -> u32 {
    is_zero(a ^ b)
}

fn lt(a: u32, b: u32) -> u32 {
    msb(a ^ ((a ^ b) | (a.wrapping_sub(b) ^ b)))
}

fn ge(a: u32, b: u32) -> u32 {
    !lt(a, b)
}

fn select(mask: u32, a: u32, b: u32) -> u32 {
    let mask = std::hint::black_box(mask);
    (mask & a) | (!mask & b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(k: usize, msg: &[u8]) -> Vec<u8> {
        let mut em = vec![0u8, 2];
        em.extend(std::iter::repeat_n(0x5au8, k - 3 - msg.len()));
        em.push(0);
        em.extend_from_slice(msg);
        em
    }

    #[test]
    fn masks_compare_as_integers() {
        for (a, b) in [
            (0u32, 0u32),
            (1, 2),
            (2, 1),
            (300, 246),
            (246, 246),
            (0, u32::MAX >> 1),
        ] {
            assert_eq!(lt(a, b) == u32::MAX, a < b, "{a} < {b}");
            assert_eq!(ge(a, b) == u32::MAX, a >= b);
            assert_eq!(eq(a, b) == u32::MAX, a == b);
        }
        assert_eq!(is_zero(0), u32::MAX);
        assert_eq!(is_zero(7), 0);
    }

    #[test]
    fn well_formed_blocks_give_their_message() {
        let secret = [7u8; 32];
        for msg in [
            &b""[..],
            b"x",
            b"a 32-byte content encryption key",
            &[1u8; 245],
        ] {
            let em = block(256, msg);
            assert_eq!(decode(&secret, &[1, 2, 3], &em).unwrap(), msg);
        }
    }

    #[test]
    fn bad_blocks_give_synthetic_messages_of_spread_lengths() {
        let secret = [9u8; 32];
        let mut bad = block(256, b"secret");
        bad[1] = 1;
        let mut lengths = std::collections::BTreeSet::new();
        for i in 0..200u32 {
            let ct = i.to_be_bytes();
            let a = decode(&secret, &ct, &bad).unwrap();
            assert_eq!(a, decode(&secret, &ct, &bad).unwrap(), "deterministic");
            assert!(a.len() < 246);
            assert_ne!(
                a,
                decode(&[8u8; 32], &ct, &bad).unwrap(),
                "bound to the key"
            );
            lengths.insert(a.len());
        }
        // 200 draws from ~246 lengths: nowhere near one constant length.
        assert!(lengths.len() > 100, "{} distinct lengths", lengths.len());
        // Short padding and a missing separator are rejected the same way.
        let mut short = vec![0u8, 2, 1, 2, 3, 0];
        short.resize(256, 9);
        assert_ne!(decode(&secret, b"c", &short).unwrap(), short[6..].to_vec());
        let none = {
            let mut v = vec![0u8, 2];
            v.resize(256, 5);
            v
        };
        assert!(decode(&secret, b"c", &none).unwrap().len() < 246);
    }
}
