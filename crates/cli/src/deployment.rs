//! `keyhaven backup` and `keyhaven restore`: the whole deployment (the store
//! and the master keyring) as one passphrase-encrypted archive.
//!
//! The store snapshot is consistent while the server keeps serving: SQLite's
//! `VACUUM INTO` copies one read transaction's view; `pg_dump` reads one
//! repeatable-read snapshot. The archive (see `keyhaven_crypto::archive`)
//! holds a JSON header line, the keyring, then the snapshot.

use std::fs;
use std::io::{BufRead, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::json;
use zeroize::Zeroizing;

const FORMAT: &str = "keyhaven-deployment-v1";

/// The archive's first line.
#[derive(serde::Serialize, serde::Deserialize)]
struct Header {
    format: String,
    /// `sqlite` or `postgres`.
    store: String,
    /// Bytes of the keyring that follow the header.
    keyring: u64,
    /// Bytes of the store snapshot that follow the keyring.
    snapshot: u64,
}

/// Where a deployment is and how its archive is protected.
#[derive(clap::Args)]
pub struct Place {
    /// The data directory (master.key, and the SQLite store unless --store).
    #[arg(long, env = "KEYHAVEN_DATA_DIR", default_value = "./keyhaven-data")]
    data_dir: PathBuf,
    /// The store: `sqlite` (default, in the data dir) or a `postgres://` URL.
    #[arg(long, env = "KEYHAVEN_STORE")]
    store: Option<String>,
    /// File holding the archive's passphrase (or set KEYHAVEN_BACKUP_PASSPHRASE).
    #[arg(long, env = "KEYHAVEN_BACKUP_PASSPHRASE_FILE")]
    passphrase_file: Option<PathBuf>,
}

impl Place {
    fn postgres(&self) -> Option<&str> {
        self.store
            .as_deref()
            .filter(|s| s.starts_with("postgres://") || s.starts_with("postgresql://"))
    }

    fn passphrase(&self) -> Result<Zeroizing<String>> {
        let p = match &self.passphrase_file {
            Some(f) => Zeroizing::new(
                fs::read_to_string(f)
                    .with_context(|| format!("cannot read {}", f.display()))?
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_owned(),
            ),
            None => Zeroizing::new(std::env::var("KEYHAVEN_BACKUP_PASSPHRASE").map_err(|_| {
                anyhow!("no passphrase: give --passphrase-file or set KEYHAVEN_BACKUP_PASSPHRASE")
            })?),
        };
        if p.chars().count() < 12 {
            bail!("the passphrase must be at least 12 characters");
        }
        Ok(p)
    }
}

fn private_file(path: &Path) -> Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd.output().with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// `keyhaven backup --out FILE`.
pub fn backup(place: &Place, out: &Path) -> Result<()> {
    let passphrase = place.passphrase()?;
    if out.exists() {
        bail!("{} exists; choose a new file", out.display());
    }
    let tmp = out.with_extension("snapshot.tmp");
    let _ = fs::remove_file(&tmp);
    let store = match place.postgres() {
        Some(url) => {
            run(
                Command::new("pg_dump")
                    .args(["--format=custom", "--no-owner", "--no-privileges", "--file"])
                    .arg(&tmp)
                    .arg(url),
                "pg_dump",
            )?;
            "postgres"
        }
        None => {
            let db = rusqlite::Connection::open_with_flags(
                place.data_dir.join("keyhaven.db"),
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .context("cannot open the SQLite store")?;
            db.busy_timeout(std::time::Duration::from_secs(30))?;
            db.execute("VACUUM INTO ?1", [tmp.to_string_lossy().as_ref()])
                .context("SQLite snapshot (VACUUM INTO) failed")?;
            "sqlite"
        }
    };
    // The keyring is read after the snapshot: a master-key rotation in
    // between re-wraps data keys under a key the later read still holds
    // (rotation adds keys; old ones stay until retired), while a keyring
    // read first could miss the key a rotated snapshot needs.
    let keyring = Zeroizing::new(
        fs::read(place.data_dir.join("master.key"))
            .with_context(|| format!("no master.key in {}", place.data_dir.display()))?,
    );
    let result = (|| -> Result<()> {
        // An archive whose keyring cannot open every vault of its snapshot
        // (a rotation made on another node whose key this one lacks) would
        // restore into vaults nobody can read: refused here, not found out
        // at restore time.
        let keys = snapshot_keys(store, &tmp)?;
        check_vault_keys(&keyring, &keys)
            .context("backup refused: the archive could not be restored")?;
        let vaults = keys.vaults;
        let snapshot = fs::File::open(&tmp)?;
        let size = snapshot.metadata()?.len();
        let header = serde_json::to_string(&Header {
            format: FORMAT.into(),
            store: store.into(),
            keyring: keyring.len() as u64,
            snapshot: size,
        })?;
        let mut plain = std::io::Cursor::new(format!("{header}\n").into_bytes())
            .chain(std::io::Cursor::new(keyring.to_vec()))
            .chain(snapshot);
        let partial = out.with_extension("partial");
        let _ = fs::remove_file(&partial);
        let mut file = std::io::BufWriter::new(private_file(&partial)?);
        keyhaven_crypto::archive::encrypt(passphrase.as_bytes(), &mut plain, &mut file)?;
        file.into_inner()
            .map_err(|e| anyhow!("writing the archive: {}", e.error()))?
            .sync_all()?;
        fs::rename(&partial, out)?;
        println!(
            "{}",
            json!({"archive": out, "store": store, "snapshotBytes": size, "vaults": vaults.len()})
        );
        Ok(())
    })();
    let _ = fs::remove_file(&tmp);
    result
}

/// What of a store snapshot the keyring must open: every vault's `(id,
/// wrapped data key)`, and the recorded current master key (`<id>
/// <fingerprint>`), from a SQLite file or a `pg_dump` custom-format file
/// (read back with `pg_restore --data-only` as COPY text).
struct SnapshotKeys {
    vaults: Vec<(String, Vec<u8>)>,
    master_key: Option<String>,
}

fn snapshot_keys(store: &str, snapshot: &Path) -> Result<SnapshotKeys> {
    if store == "sqlite" {
        let db = rusqlite::Connection::open_with_flags(
            snapshot,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .context("cannot open the SQLite snapshot")?;
        let mut st = db.prepare("SELECT id, wrapped_key FROM vaults")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let vaults = rows.collect::<Result<Vec<_>, _>>()?;
        let master_key: Option<Vec<u8>> = db
            .query_row(
                "SELECT value FROM settings WHERE key = 'master_key'",
                [],
                |r| r.get(0),
            )
            .ok();
        return Ok(SnapshotKeys {
            vaults,
            master_key: master_key.map(|v| String::from_utf8_lossy(&v).into_owned()),
        });
    }
    let out = Command::new("pg_restore")
        .args([
            "--data-only",
            "--table=vaults",
            "--table=settings",
            "--file=-",
        ])
        .arg(snapshot)
        .output()
        .context("cannot run pg_restore")?;
    if !out.status.success() {
        bail!(
            "pg_restore could not read the snapshot: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut vaults = Vec::new();
    for row in parse_copy(&text, "vaults", &["id", "wrapped_key"])? {
        if let [id, key] = row.as_slice() {
            vaults.push((id.clone(), unhex(key)?));
        }
    }
    let mut master_key = None;
    for row in parse_copy(&text, "settings", &["key", "value"])? {
        if let [key, value] = row.as_slice() {
            if key == "master_key" {
                master_key = Some(String::from_utf8_lossy(&unhex(value)?).into_owned());
            }
        }
    }
    Ok(SnapshotKeys { vaults, master_key })
}

/// The `cols` of each row of the `COPY … {table} (…) FROM stdin;` block in
/// `pg_restore` text output.
fn parse_copy(text: &str, table: &str, cols: &[&str]) -> Result<Vec<Vec<String>>> {
    let mut lines = text.lines();
    let header = lines
        .by_ref()
        .find(|l| {
            l.starts_with("COPY ")
                && l.split_whitespace()
                    .nth(1)
                    .is_some_and(|t| t.rsplit('.').next() == Some(table))
        })
        .ok_or_else(|| anyhow!("the snapshot holds no {table} table"))?;
    let have: Vec<&str> = header
        .split_once('(')
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(c, _)| c.split(',').map(str::trim).collect())
        .unwrap_or_default();
    let at: Vec<usize> = cols
        .iter()
        .map(|c| have.iter().position(|h| h == c))
        .collect::<Option<_>>()
        .ok_or_else(|| anyhow!("the snapshot's {table} table lacks {}", cols.join(" or ")))?;
    let mut out = Vec::new();
    for line in lines.take_while(|l| *l != "\\.") {
        let fields: Vec<&str> = line.split('\t').collect();
        let row = at
            .iter()
            .map(|i| fields.get(*i).map(|f| (*f).to_owned()))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| anyhow!("a malformed {table} row in the snapshot"))?;
        out.push(row);
    }
    Ok(out)
}

/// A bytea field of COPY text (`\\x…`).
fn unhex(field: &str) -> Result<Vec<u8>> {
    let hex = field.strip_prefix("\\\\x").unwrap_or(field);
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
                .ok_or_else(|| anyhow!("a malformed bytea value in the snapshot"))
        })
        .collect()
}

/// Fails, naming the vault ids and the key ids they need, unless every
/// wrapped data key opens with the keyring `text`.
fn check_vault_keys(text: &[u8], keys: &SnapshotKeys) -> Result<()> {
    let text = std::str::from_utf8(text).map_err(|_| anyhow!("the master keyring is not text"))?;
    let ring = keyhaven_crypto::master::Keyring::parse(text)
        .map_err(|e| anyhow!("the master keyring: {e}"))?;
    // The key the store says seals must be in the keyring, or a restored
    // node refuses to start.
    if let Some(recorded) = &keys.master_key {
        let held = recorded.split_once(' ').is_some_and(|(id, fp)| {
            id.parse()
                .ok()
                .and_then(|id| ring.fingerprint(id))
                .is_some_and(|mine| mine == fp)
        });
        if !held {
            bail!(
                "the store's current master key ({recorded}) is not in the master keyring. Copy master.key from the node that rotated the master key."
            );
        }
    }
    let vaults = &keys.vaults;
    let barrier = keyhaven_crypto::SoftwareBarrier::with_keyring(ring, None);
    let bad: Vec<String> = vaults
        .iter()
        .filter(|(id, wrapped)| barrier.check_data_key(id, wrapped).is_err())
        .map(
            |(id, wrapped)| match keyhaven_crypto::SoftwareBarrier::key_id_of(wrapped) {
                Some(k) => format!("vault {id} (master key {k})"),
                None => format!("vault {id} (unreadable key)"),
            },
        )
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        bail!(
            "{} of {} vault data keys do not open with the master keyring: {}. Copy master.key from the node that rotated the master key.",
            bad.len(),
            vaults.len(),
            bad.join(", ")
        )
    }
}

/// `keyhaven restore --in FILE`: into an empty data directory (and an empty
/// PostgreSQL database).
pub fn restore(place: &Place, input: &Path) -> Result<()> {
    let passphrase = place.passphrase()?;
    fs::create_dir_all(&place.data_dir)?;
    for f in ["master.key", "keyhaven.db"] {
        if place.data_dir.join(f).exists() {
            bail!(
                "{} already holds a deployment ({f}); restore into an empty data directory",
                place.data_dir.display()
            );
        }
    }
    if let Some(url) = place.postgres() {
        let out = Command::new("psql")
            .args([url, "-Atqc"])
            .arg("SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()")
            .output()
            .context("cannot run psql")?;
        if !out.status.success() || String::from_utf8_lossy(&out.stdout).trim() != "0" {
            bail!("the target PostgreSQL database is not empty (or unreachable); restore into an empty one");
        }
    }
    // Decrypt fully (every chunk authenticated) before anything is put in place.
    let plain_path = place.data_dir.join("restore.tmp");
    let _ = fs::remove_file(&plain_path);
    let result = (|| -> Result<()> {
        {
            let mut src = std::io::BufReader::new(
                fs::File::open(input)
                    .with_context(|| format!("cannot open {}", input.display()))?,
            );
            let mut dst = std::io::BufWriter::new(private_file(&plain_path)?);
            keyhaven_crypto::archive::decrypt(passphrase.as_bytes(), &mut src, &mut dst)?;
            dst.flush()?;
        }
        let mut r = std::io::BufReader::new(fs::File::open(&plain_path)?);
        let mut line = String::new();
        r.read_line(&mut line)?;
        let header: Header = serde_json::from_str(&line)
            .ok()
            .filter(|h: &Header| h.format == FORMAT)
            .ok_or_else(|| anyhow!("not a Keyhaven deployment archive"))?;
        match (header.store.as_str(), place.postgres()) {
            ("postgres", None) => {
                bail!("this archive holds a PostgreSQL store: give --store postgres://…")
            }
            ("sqlite", Some(_)) => bail!("this archive holds a SQLite store: leave out --store"),
            ("sqlite" | "postgres", _) => {}
            _ => bail!("unknown store kind in the archive"),
        }
        let store = header.store.clone();
        let keyring_len = usize::try_from(header.keyring)?;
        let mut keyring = Zeroizing::new(vec![0u8; keyring_len]);
        r.read_exact(&mut keyring)?;
        let snapshot = place.data_dir.join("snapshot.tmp");
        let _ = fs::remove_file(&snapshot);
        {
            let mut f = private_file(&snapshot)?;
            std::io::copy(&mut r, &mut f)?;
            f.sync_all()?;
        }
        // Every vault's data key must open with the archive's keyring
        // before anything is put in place.
        let keys = snapshot_keys(&store, &snapshot)?;
        let vaults = keys.vaults.len();
        if let Err(e) = check_vault_keys(&keyring, &keys) {
            let _ = fs::remove_file(&snapshot);
            return Err(e.context("restore refused: nothing was written"));
        }
        // The keyring first, the database last (each synced, then the
        // directory): a crash in between leaves a keyring and no database,
        // which starts empty, never a database without the key to open it.
        {
            let partial = place.data_dir.join("master.key.partial");
            let _ = fs::remove_file(&partial);
            let mut key = private_file(&partial)?;
            key.write_all(&keyring)?;
            key.sync_all()?;
            fs::rename(&partial, place.data_dir.join("master.key"))?;
            fs::File::open(&place.data_dir)?.sync_all()?;
        }
        if let Some(url) = place.postgres() {
            let restored = run(
                Command::new("pg_restore")
                    .args([
                        "--no-owner",
                        "--no-privileges",
                        "--exit-on-error",
                        "-d",
                        url,
                    ])
                    .arg(&snapshot),
                "pg_restore",
            );
            let _ = fs::remove_file(&snapshot);
            restored?;
        } else {
            fs::rename(&snapshot, place.data_dir.join("keyhaven.db"))?;
            fs::File::open(&place.data_dir)?.sync_all()?;
        }
        println!(
            "{}",
            json!({"restored": store, "dataDir": place.data_dir, "vaults": vaults})
        );
        Ok(())
    })();
    let _ = fs::remove_file(&plain_path);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 29, item 8: an archive whose keyring cannot open a vault of
    /// its snapshot is refused (at backup, and again at restore).
    #[test]
    fn vault_keys_are_checked_against_the_keyring() {
        use keyhaven_core::Barrier as _;
        let ring = keyhaven_crypto::master::Keyring::single(
            keyhaven_crypto::MasterKey::generate().unwrap(),
        );
        let dir = std::env::temp_dir().join(format!("kh-vk-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("master.key");
        ring.save(&path).unwrap();
        let text = fs::read(&path).unwrap();
        let barrier = keyhaven_crypto::SoftwareBarrier::with_keyring(
            keyhaven_crypto::master::Keyring::load(&path).unwrap(),
            Some(path.clone()),
        );
        let good = ("v1".to_owned(), barrier.new_data_key("v1").unwrap());
        let keys = |vaults: Vec<(String, Vec<u8>)>, master_key: Option<String>| SnapshotKeys {
            vaults,
            master_key,
        };
        assert!(check_vault_keys(&text, &keys(vec![good.clone()], None)).is_ok());
        // Rotated on this "node" only: the old file cannot open the new key.
        let (k, fp) = barrier.stage_master().unwrap();
        assert!(barrier.adopt_master(k, &fp).unwrap());
        let rotated = ("v2".to_owned(), barrier.new_data_key("v2").unwrap());
        let err =
            check_vault_keys(&text, &keys(vec![good.clone(), rotated.clone()], None)).unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("vault v2 (master key {k})")),
            "{err}"
        );
        assert!(!err.to_string().contains("vault v1"));
        let newer = fs::read(&path).unwrap();
        assert!(check_vault_keys(&newer, &keys(vec![good.clone(), rotated], None)).is_ok());
        // The store's recorded current key must be in the keyring too (a
        // deployment with no vault yet still needs it to start).
        let recorded = Some(format!("{k} {fp}"));
        assert!(check_vault_keys(&newer, &keys(vec![], recorded.clone())).is_ok());
        let err = check_vault_keys(&text, &keys(vec![], recorded)).unwrap_err();
        assert!(err.to_string().contains("current master key"), "{err}");
        // A key moved to another vault id does not open (bound to its vault).
        assert!(check_vault_keys(&newer, &keys(vec![("v3".to_owned(), good.1)], None)).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn pg_restore_copy_text_is_parsed() {
        let text = "--\n-- Data for Name: vaults\n--\n\nCOPY public.vaults (name, id, tenant_id, wrapped_key, created) FROM stdin;\n\
                    dev\tid-1\tt\t\\\\x0102ff\t5\n\
                    other\tid-2\tt\t\\\\x\t6\n\
                    \\.\n\nCOPY public.settings (key, value) FROM stdin;\n\
                    master_key\t\\\\x3120616263\n\
                    \\.\n";
        let rows = parse_copy(text, "vaults", &["id", "wrapped_key"]).unwrap();
        assert_eq!(
            rows,
            vec![
                vec!["id-1".to_owned(), "\\\\x0102ff".to_owned()],
                vec!["id-2".to_owned(), "\\\\x".to_owned()]
            ]
        );
        assert_eq!(unhex(&rows[0][1]).unwrap(), vec![1, 2, 255]);
        assert_eq!(unhex(&rows[1][1]).unwrap(), Vec::<u8>::new());
        let settings = parse_copy(text, "settings", &["key", "value"]).unwrap();
        assert_eq!(unhex(&settings[0][1]).unwrap(), b"1 abc");
        assert!(parse_copy("nothing here", "vaults", &["id"]).is_err());
        assert!(parse_copy(
            "COPY public.vaults (name, id) FROM stdin;\n\\.\n",
            "vaults",
            &["id", "wrapped_key"]
        )
        .is_err());
        assert!(unhex("\\\\xzz").is_err());
        // Only the exact table name matches.
        assert!(parse_copy(
            "COPY public.old_vaults (id, wrapped_key) FROM stdin;\n\\.\n",
            "vaults",
            &["id"]
        )
        .is_err());
    }
}
