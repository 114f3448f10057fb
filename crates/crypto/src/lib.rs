//! Cryptography behind Keyhaven's ports: the at-rest barrier (a master key that
//! wraps per-vault data keys, AES-256-GCM with associated data) and master-key
//! file handling. Key material never leaves this crate unsealed except through
//! `Sensitive`.

pub mod archive;
pub mod barrier;
pub mod keys;
pub mod master;
pub mod pkcs11;
mod rsa1_5;
pub mod security_domain;
pub mod x509;

pub use barrier::SoftwareBarrier;

/// Lower-case hex SHA-256 of `data` (audit chain hashes).
pub fn sha256_hex(data: &[u8]) -> String {
    let mut out = String::with_capacity(64);
    for b in openssl::sha::sha256(data) {
        for nibble in [b >> 4, b & 0x0f] {
            out.push(char::from_digit(u32::from(nibble), 16).unwrap_or('0'));
        }
    }
    out
}
pub use keys::SoftwareKeys;
pub use master::MasterKey;
