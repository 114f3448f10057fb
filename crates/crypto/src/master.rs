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

    /// 16 hex digits of SHA-256 over a fixed label and the key.
    pub fn fingerprint(&self) -> String {
        let mut h = openssl::sha::Sha256::new();
        h.update(b"keyhaven/v1/master-key-fingerprint/");
        h.update(self.bytes());
        to_hex(&h.finish()[..8])
    }
}

/// Every master key a deployment has had that may still have sealed
/// something, in the order they were added, and which one seals (the
/// current key).
///
/// The file is one line of hex (the original single key, id 0) or one
/// `<id> <hex>` line per key and a `current <id>` line. A file without a
/// `current` line (written before ids were random) seals with its highest
/// id. Keys listed after the current one are newer keys not in use yet: one
/// an operator added by hand, or one a rotation staged before the store
/// agreed to it. Old keys stay so that backups taken before a rotation still
/// restore.
///
/// Ids of new keys are random (never 0, never one already in the ring), so
/// two nodes that each make a key never both call theirs "key 1"; which of
/// them becomes current is decided by a compare-and-set in the store.
pub struct Keyring {
    keys: Vec<(u32, MasterKey)>,
    current: u32,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field(
                "ids",
                &self.keys.iter().map(|(id, _)| id).collect::<Vec<_>>(),
            )
            .field("current", &self.current)
            .finish()
    }
}

impl Keyring {
    /// A keyring of one key (id 0).
    pub fn single(key: MasterKey) -> Self {
        Self {
            keys: vec![(0, key)],
            current: 0,
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
        Self::parse(read_private(path)?.expose())
    }

    /// Parses the text of a keyring file.
    pub fn parse(text: &str) -> Result<Self, MasterKeyError> {
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        let mut keys: Vec<(u32, MasterKey)> = Vec::new();
        let mut current = None;
        match lines.as_slice() {
            [only] if !only.contains(' ') => {
                keys.push((0, MasterKey::from_hex(only)?));
            }
            _ => {
                for line in lines {
                    let (first, rest) = line.split_once(' ').ok_or(MasterKeyError::Malformed)?;
                    if first == "current" {
                        let id: u32 = rest.trim().parse().map_err(|_| MasterKeyError::Malformed)?;
                        if current.replace(id).is_some() {
                            return Err(MasterKeyError::Malformed);
                        }
                        continue;
                    }
                    let id: u32 = first.parse().map_err(|_| MasterKeyError::Malformed)?;
                    if keys.iter().any(|(k, _)| *k == id) {
                        return Err(MasterKeyError::Malformed);
                    }
                    keys.push((id, MasterKey::from_hex(rest.trim())?));
                }
            }
        }
        let current = match current {
            Some(id) => id,
            None => keys
                .iter()
                .map(|(id, _)| *id)
                .max()
                .ok_or(MasterKeyError::Malformed)?,
        };
        if !keys.iter().any(|(id, _)| *id == current) {
            return Err(MasterKeyError::Malformed);
        }
        Ok(Self { keys, current })
    }

    /// Writes the keyring to `path` atomically (a 0600 temporary file,
    /// fsynced, renamed over the old one, directory fsynced).
    pub fn save(&self, path: &Path) -> Result<(), MasterKeyError> {
        let mut text = zeroize::Zeroizing::new(String::from(
            "# Keyhaven master keys: <id> <hex>, oldest first; `current` seals, all open.\n",
        ));
        for (id, key) in &self.keys {
            let hex = zeroize::Zeroizing::new(to_hex(key.bytes()));
            text.push_str(&format!("{id} "));
            text.push_str(&hex);
            text.push('\n');
        }
        text.push_str(&format!("current {}\n", self.current));
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

    /// The current key and its id.
    pub fn current(&self) -> Option<(u32, &MasterKey)> {
        self.get(self.current).map(|k| (self.current, k))
    }

    /// The key with this id.
    pub fn get(&self, id: u32) -> Option<&MasterKey> {
        self.keys.iter().find(|(k, _)| *k == id).map(|(_, key)| key)
    }

    /// Every key id, oldest first.
    pub fn ids(&self) -> Vec<u32> {
        self.keys.iter().map(|(id, _)| *id).collect()
    }

    /// The fingerprint of key `id`: 16 hex digits of SHA-256 over a fixed
    /// label and the key; it names the key without revealing it.
    pub fn fingerprint(&self, id: u32) -> Option<String> {
        self.get(id).map(MasterKey::fingerprint)
    }

    fn copy(&self) -> Self {
        Self {
            keys: self
                .keys
                .iter()
                .map(|(id, k)| (*id, MasterKey(Sensitive::new(k.bytes().to_vec()))))
                .collect(),
            current: self.current,
        }
    }

    /// This keyring plus the keys of `other` it lacks (listed after its
    /// own), keeping its current key: reading a file never changes which
    /// key seals (only the store's agreement does) and never forgets a key
    /// this keyring holds. `None` if the two disagree on a key's bytes.
    pub fn merged(&self, other: &Keyring) -> Option<Self> {
        let mut next = self.copy();
        for (id, key) in &other.keys {
            match self.get(*id) {
                Some(mine) if mine.bytes() != key.bytes() => return None,
                Some(_) => {}
                None => next
                    .keys
                    .push((*id, MasterKey(Sensitive::new(key.bytes().to_vec())))),
            }
        }
        Some(next)
    }

    /// The newest key listed after the current one (added by an operator,
    /// or staged by a rotation), if any.
    pub fn staged(&self) -> Option<u32> {
        let at = self.keys.iter().position(|(id, _)| *id == self.current)?;
        self.keys.get(at + 1..)?.last().map(|(id, _)| *id)
    }

    /// This keyring plus a fresh key with a random id, listed last but not
    /// current (see [`Self::with_current`]).
    pub fn with_new_key(&self) -> Result<Self, MasterKeyError> {
        let mut next = self.copy();
        let id = loop {
            let mut b = [0u8; 4];
            openssl::rand::rand_bytes(&mut b).map_err(|_| MasterKeyError::Random)?;
            let id = u32::from_be_bytes(b);
            if id != 0 && self.get(id).is_none() {
                break id;
            }
        };
        next.keys.push((id, MasterKey::generate()?));
        Ok(next)
    }

    /// This keyring with key `id` current; `None` if it does not hold it.
    pub fn with_current(&self, id: u32) -> Option<Self> {
        self.get(id)?;
        let mut next = self.copy();
        next.current = id;
        Some(next)
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
    fn keyring_files_of_every_format_load_and_round_trip() {
        let k = |b: u8| format!("{b:02x}").repeat(32);
        // One bare line: key 0.
        let ring = Keyring::parse(&k(1)).unwrap();
        assert_eq!((ring.ids(), ring.current().unwrap().0), (vec![0], 0));
        // Counter ids without a `current` line (before ids were random):
        // the highest id seals.
        let ring = Keyring::parse(&format!("0 {}\n1 {}\n2 {}\n", k(1), k(2), k(3))).unwrap();
        assert_eq!((ring.ids(), ring.current().unwrap().0), (vec![0, 1, 2], 2));
        assert_eq!(ring.staged(), None);
        // A key listed after the current one is staged, not current.
        let ring = Keyring::parse(&format!("0 {}\n77 {}\ncurrent 0\n", k(1), k(2))).unwrap();
        assert_eq!((ring.current().unwrap().0, ring.staged()), (0, Some(77)));
        let adopted = ring.with_current(77).unwrap();
        assert_eq!(adopted.current().unwrap().0, 77);
        assert!(ring.with_current(5).is_none());
        // Bad files are refused.
        for bad in [
            format!("0 {}\ncurrent 9\n", k(1)),
            format!("0 {}\n0 {}\n", k(1), k(2)),
            format!("0 {}\ncurrent 0\ncurrent 0\n", k(1)),
            "0 zz\n".to_owned(),
            String::new(),
        ] {
            assert!(Keyring::parse(&bad).is_err(), "{bad:?}");
        }
        // New keys get random, distinct, non-zero ids and round-trip.
        let dir = std::env::temp_dir().join(format!("kh-mk3-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("master.key");
        let mut ring = Keyring::single(MasterKey::generate().unwrap());
        for _ in 0..3 {
            ring = ring.with_new_key().unwrap();
            let id = ring.staged().unwrap();
            assert_ne!(id, 0);
            ring = ring.with_current(id).unwrap();
        }
        let ids = ring.ids();
        assert_eq!(ids.len(), 4);
        assert!(ids.iter().collect::<std::collections::BTreeSet<_>>().len() == 4);
        ring.save(&path).unwrap();
        let back = Keyring::load(&path).unwrap();
        assert_eq!(back.ids(), ids);
        assert_eq!(back.current().unwrap().0, ring.current().unwrap().0);
        // The same keys, byte for byte.
        for id in &ids {
            assert_eq!(
                back.get(*id).unwrap().bytes(),
                ring.get(*id).unwrap().bytes()
            );
        }
        assert_eq!(back.fingerprint(ids[1]), ring.fingerprint(ids[1]));
        assert_ne!(back.fingerprint(ids[1]), back.fingerprint(ids[2]));
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
