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
        match read_private(path) {
            Ok(text) => Self::from_hex(text.expose().trim()),
            Err(MasterKeyError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
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
            Err(e) => Err(e),
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

/// Every master key a deployment has had that may still have sealed
/// something, by id; new seals use the highest id (the current key).
///
/// The file is one line of hex (the original single key, id 0) or, once the
/// master key was rotated, one `<id> <hex>` line per key. Old keys stay so
/// that backups taken before a rotation still restore.
pub struct Keyring {
    keys: std::collections::BTreeMap<u32, MasterKey>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("ids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Keyring {
    /// A keyring of one key (id 0).
    pub fn single(key: MasterKey) -> Self {
        Self {
            keys: [(0, key)].into_iter().collect(),
        }
    }

    /// Loads the keyring at `path`, creating a one-key file (mode 0600) if
    /// there is none.
    pub fn load_or_create(path: &Path) -> Result<Self, MasterKeyError> {
        match Self::load(path) {
            Err(MasterKeyError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                MasterKey::load_or_create(path).map(Self::single)
            }
            other => other,
        }
    }

    /// Loads the keyring at `path` (refused if others can read it).
    pub fn load(path: &Path) -> Result<Self, MasterKeyError> {
        let text = read_private(path)?;
        let lines: Vec<&str> = text
            .expose()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        let mut keys = std::collections::BTreeMap::new();
        match lines.as_slice() {
            [only] if !only.contains(' ') => {
                keys.insert(0, MasterKey::from_hex(only)?);
            }
            _ => {
                for line in lines {
                    let (id, hex) = line.split_once(' ').ok_or(MasterKeyError::Malformed)?;
                    let id: u32 = id.parse().map_err(|_| MasterKeyError::Malformed)?;
                    if keys.insert(id, MasterKey::from_hex(hex.trim())?).is_some() {
                        return Err(MasterKeyError::Malformed);
                    }
                }
            }
        }
        if keys.is_empty() {
            return Err(MasterKeyError::Malformed);
        }
        Ok(Self { keys })
    }

    /// Writes the keyring to `path` atomically (a 0600 temporary file,
    /// fsynced, renamed over the old one, directory fsynced).
    pub fn save(&self, path: &Path) -> Result<(), MasterKeyError> {
        let mut text = zeroize::Zeroizing::new(String::from(
            "# Keyhaven master keys: <id> <hex>; the highest id seals, all open.\n",
        ));
        for (id, key) in &self.keys {
            let hex = zeroize::Zeroizing::new(to_hex(key.bytes()));
            text.push_str(&format!("{id} "));
            text.push_str(&hex);
            text.push('\n');
        }
        let tmp = path.with_extension("key.new");
        let _ = fs::remove_file(&tmp);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(MasterKeyError::Io)?;
        f.write_all(text.as_bytes()).map_err(MasterKeyError::Io)?;
        f.sync_all().map_err(MasterKeyError::Io)?;
        fs::rename(&tmp, path).map_err(MasterKeyError::Io)?;
        if let Some(dir) = path.parent() {
            fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(MasterKeyError::Io)?;
        }
        Ok(())
    }

    /// The current key and its id (a keyring is never empty).
    pub fn current(&self) -> Option<(u32, &MasterKey)> {
        self.keys.iter().next_back().map(|(id, k)| (*id, k))
    }

    /// The key with this id.
    pub fn get(&self, id: u32) -> Option<&MasterKey> {
        self.keys.get(&id)
    }

    /// Whether this keyring holds every key `other` holds (and the same ones).
    pub fn covers(&self, other: &Keyring) -> bool {
        other.keys.iter().all(|(id, k)| {
            self.keys
                .get(id)
                .is_some_and(|mine| mine.bytes() == k.bytes())
        })
    }

    /// This keyring plus a fresh key, which becomes the current one.
    pub fn with_new_key(&self) -> Result<Self, MasterKeyError> {
        let mut keys: std::collections::BTreeMap<u32, MasterKey> = self
            .keys
            .iter()
            .map(|(id, k)| (*id, MasterKey(Sensitive::new(k.bytes().to_vec()))))
            .collect();
        let next = self
            .current()
            .map_or(Some(0), |(id, _)| id.checked_add(1))
            .ok_or(MasterKeyError::Malformed)?;
        keys.insert(next, MasterKey::generate()?);
        Ok(Self { keys })
    }
}

/// The file's text, refused if group or others can read it.
fn read_private(path: &Path) -> Result<Sensitive<String>, MasterKeyError> {
    let text = Sensitive::new(fs::read_to_string(path).map_err(MasterKeyError::Io)?);
    let mode = fs::metadata(path)
        .map_err(MasterKeyError::Io)?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(MasterKeyError::InsecurePermissions(mode & 0o777));
    }
    Ok(text)
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
