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
            json!({"archive": out, "store": store, "snapshotBytes": size})
        );
        Ok(())
    })();
    let _ = fs::remove_file(&tmp);
    result
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
        println!("{}", json!({"restored": store, "dataDir": place.data_dir}));
        Ok(())
    })();
    let _ = fs::remove_file(&plain_path);
    result
}
