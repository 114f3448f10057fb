//! Cryptography behind Keyhaven's ports: the at-rest barrier (a master key that
//! wraps per-vault data keys, AES-256-GCM with associated data) and master-key
//! file handling. Key material never leaves this crate unsealed except through
//! `Sensitive`.

pub mod barrier;
pub mod keys;
pub mod master;
pub mod x509;

pub use barrier::SoftwareBarrier;

/// Lower-case hex SHA-256 of `data` (audit chain hashes).
pub fn sha256_hex(data: &[u8]) -> String {
    openssl::sha::sha256(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
pub use keys::SoftwareKeys;
pub use master::MasterKey;
