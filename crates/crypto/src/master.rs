//! The master key: 32 random bytes in `<data-dir>/master.key`, mode 0600,
//! created on first start. It only wraps vault data keys and deployment data.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use keyhaven_core::Sensitive;

/// Length of the master key in bytes (AES-256).
pub const MASTER_KEY_LEN: usize = 32;

/// Errors loading or creating the master key; they never include key bytes.
#[derive(Debug)]
pub enum MasterKeyError {
    /// Reading or writing the file failed.
    Io(std::io::Error),
    /// The file exists but is not a valid key.
    Malformed,
    /// The file is readable by others.
    InsecurePermissions(u32),
    /// The system random generator failed.
    Random,
}

impl std::fmt::Display for MasterKeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(e) => write!(f, "master key file: {e}"),
            Self::Malformed => f.write_str("master key file is malformed (expected 64 hex characters)"),
            Self::InsecurePermissions(m) => write!(
                f,
                "master key file has mode {m:o}; it must not be readable by group or others (chmod 600)"
            ),
            Self::Random => f.write_str("random generator failed"),
        }
    }
}

impl std::error::Error for MasterKeyError {}

/// The deployment's master key.
pub struct MasterKey(Sensitive<Vec<u8>>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

impl MasterKey {
    /// Loads the key at `path`, creating it (mode 0600) if it does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, MasterKeyError> {
        match fs::read_to_string(path) {
            Ok(text) => {
                let mode = fs::metadata(path)
                    .map_err(MasterKeyError::Io)?
                    .permissions()
                    .mode();
                if mode & 0o077 != 0 {
                    return Err(MasterKeyError::InsecurePermissions(mode & 0o777));
                }
                let text = Sensitive::new(text);
                Self::from_hex(text.expose().trim())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate()?;
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(MasterKeyError::Io)?;
                let hex = Sensitive::new(to_hex(key.0.expose()));
                f.write_all(hex.expose().as_bytes())
                    .map_err(MasterKeyError::Io)?;
                f.write_all(b"\n").map_err(MasterKeyError::Io)?;
                f.sync_all().map_err(MasterKeyError::Io)?;
                Ok(key)
            }
            Err(e) => Err(MasterKeyError::Io(e)),
        }
    }

    /// A fresh random key (for tests and first start).
    pub fn generate() -> Result<Self, MasterKeyError> {
        let mut bytes = vec![0u8; MASTER_KEY_LEN];
        openssl::rand::rand_bytes(&mut bytes).map_err(|_| MasterKeyError::Random)?;
        Ok(Self(Sensitive::new(bytes)))
    }

    fn from_hex(hex: &str) -> Result<Self, MasterKeyError> {
        if hex.len() != MASTER_KEY_LEN * 2 {
            return Err(MasterKeyError::Malformed);
        }
        let mut out = Vec::with_capacity(MASTER_KEY_LEN);
        for pair in hex.as_bytes().chunks(2) {
            let s = std::str::from_utf8(pair).map_err(|_| MasterKeyError::Malformed)?;
            out.push(u8::from_str_radix(s, 16).map_err(|_| MasterKeyError::Malformed)?);
        }
        Ok(Self(Sensitive::new(out)))
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        self.0.expose()
    }
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_key_is_private_and_reloads_identically() {
        let dir = std::env::temp_dir().join(format!("kh-mk-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("master.key");
        let _ = fs::remove_file(&path);
        let a = MasterKey::load_or_create(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = MasterKey::load_or_create(&path).unwrap();
        assert_eq!(a.bytes(), b.bytes());
        assert!(!format!("{a:?}").contains(&to_hex(a.bytes())));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn world_readable_key_is_refused() {
        let dir = std::env::temp_dir().join(format!("kh-mk2-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("master.key");
        fs::write(&path, "00".repeat(32)).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            MasterKey::load_or_create(&path),
            Err(MasterKeyError::InsecurePermissions(_))
        ));
        fs::remove_dir_all(&dir).unwrap();
    }
}
