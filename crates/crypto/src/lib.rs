//! Cryptography behind Keyhaven's ports: the at-rest barrier (a master key that
//! wraps per-vault data keys, AES-256-GCM with associated data) and master-key
//! file handling. Key material never leaves this crate unsealed except through
//! `Sensitive`.

pub mod barrier;
pub mod keys;
pub mod master;
pub mod x509;

pub use barrier::SoftwareBarrier;
pub use keys::SoftwareKeys;
pub use master::MasterKey;
