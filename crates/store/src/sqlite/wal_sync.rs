//! Group commit for the SQLite store. The writer connection commits with
//! `synchronous = NORMAL` in WAL mode: a commit appends its frames to the
//! WAL with `write(2)` and does not sync. A write is acknowledged only once
//! an `fdatasync` of the WAL that started after its commit has succeeded;
//! one sync thread serves every write waiting meanwhile, so concurrent
//! writes share one sync instead of paying one each (as `synchronous =
//! FULL` made them). SQLite itself still syncs the WAL before a checkpoint
//! copies it into the database, and the database after.
//!
//! A failed sync is final for this process (as PostgreSQL's
//! `data_sync_retry = off`): after an `fdatasync` error the kernel may have
//! dropped the pages and report the next sync as fine, and a frame lost in
//! the middle of the WAL ends recovery there, taking later commits with it.
//! Every later write is refused until Keyhaven is restarted.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use keyhaven_core::store::{StoreError, StoreResult};

/// What the sync thread has done: commits up to `.0` are on disk; `.1`: a
/// sync failed.
type Done = (u64, bool);

/// Tickets: `committed` counts commits, in commit order.
pub(super) struct WalSync {
    committed: Arc<AtomicU64>,
    done: tokio::sync::watch::Receiver<Done>,
    poke: Mutex<std::sync::mpsc::Sender<()>>,
}

/// The WAL file held open (so a write-back error is reported to the fd that
/// syncs), reopened when SQLite has made a new one.
struct Wal {
    path: PathBuf,
    open: Option<(std::fs::File, u64, u64)>,
}

impl Wal {
    fn sync(&mut self) -> std::io::Result<()> {
        let meta = std::fs::metadata(&self.path)?;
        let same = self
            .open
            .as_ref()
            .is_some_and(|(_, dev, ino)| *dev == meta.dev() && *ino == meta.ino());
        if !same {
            let file = std::fs::File::open(&self.path)?;
            // A new WAL's directory entry must be durable too (SQLite syncs
            // the directory on a WAL's first sync only under FULL).
            if let Some(dir) = self.path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            self.open = Some((file, meta.dev(), meta.ino()));
        }
        match &self.open {
            Some((file, _, _)) => file.sync_data(),
            None => Err(std::io::Error::other("the WAL is not open")),
        }
    }
}

/// The answer once a sync has failed.
fn failed() -> StoreError {
    StoreError::Unavailable(
        "a sync of the database to disk failed: writes are refused until keyhaven restarts".into(),
    )
}

impl WalSync {
    /// Starts the sync thread for the WAL of the database at `db`.
    pub(super) fn start(db: &Path) -> StoreResult<Arc<Self>> {
        let mut path = db.as_os_str().to_owned();
        path.push("-wal");
        let mut wal = Wal {
            path: PathBuf::from(path),
            open: None,
        };
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (done_tx, done_rx) = tokio::sync::watch::channel::<Done>((0, false));
        let committed = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&committed);
        // The thread owns the sender: if it ends, every waiter is told.
        std::thread::Builder::new()
            .name("sqlite-wal-sync".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    while rx.try_recv().is_ok() {}
                    if done_tx.borrow().1 {
                        continue;
                    }
                    // Every commit counted so far wrote its frames before
                    // this sync starts: the sync covers them.
                    let target = counted.load(Ordering::SeqCst);
                    let synced = wal.sync();
                    if let Err(e) = &synced {
                        tracing::error!(error = %e, "the SQLite WAL could not be synced: writes are refused until keyhaven restarts");
                    }
                    done_tx.send_modify(|(ok, failed)| match synced {
                        Ok(()) => *ok = (*ok).max(target),
                        Err(_) => *failed = true,
                    });
                }
            })
            .map_err(|e| StoreError::Unavailable(format!("sqlite sync thread: {e}")))?;
        Ok(Arc::new(Self {
            committed,
            done: done_rx,
            poke: Mutex::new(tx),
        }))
    }

    /// Takes a ticket for a commit that just happened (called under the
    /// writer connection's lock, right after the write).
    pub(super) fn committed(&self) -> u64 {
        self.committed.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// The ticket of the last commit (for a write that changed nothing but
    /// may have read what a commit not yet durable wrote).
    pub(super) fn latest(&self) -> u64 {
        self.committed.load(Ordering::SeqCst)
    }

    /// Refuses once a sync has failed (writes are refused from then on).
    pub(super) fn check(&self) -> StoreResult<()> {
        if self.done.borrow().1 {
            return Err(failed());
        }
        Ok(())
    }

    /// Waits until the commit of `ticket` is on disk.
    pub(super) async fn durable(&self, ticket: u64) -> StoreResult<()> {
        self.check()?;
        let mut rx = self.done.clone();
        if rx.borrow().0 >= ticket {
            return Ok(());
        }
        let stopped = || StoreError::Unavailable("the database sync thread stopped".into());
        let poked = self.poke.lock().ok().is_some_and(|q| q.send(()).is_ok());
        if !poked {
            return Err(stopped());
        }
        let state = *rx
            .wait_for(|(ok, failed)| *failed || *ok >= ticket)
            .await
            .map_err(|_| stopped())?;
        if state.1 {
            Err(failed())
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commits_are_acknowledged_after_a_sync_and_a_failed_sync_is_final() {
        let dir = std::env::temp_dir().join(format!("kh-walsync-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("db.sqlite");
        let sync = WalSync::start(&db).unwrap();
        // Nothing committed yet: nothing to wait for.
        sync.durable(sync.latest()).await.unwrap();
        std::fs::write(dir.join("db.sqlite-wal"), b"frames").unwrap();
        let waits: Vec<_> = (0..50)
            .map(|_| {
                let s = Arc::clone(&sync);
                let t = s.committed();
                tokio::spawn(async move { s.durable(t).await })
            })
            .collect();
        for w in waits {
            w.await.unwrap().unwrap();
        }
        assert!(sync.check().is_ok());
        // The WAL cannot be synced (gone): the write is not acknowledged,
        // and nothing after it is, even once the file is back.
        std::fs::remove_file(dir.join("db.sqlite-wal")).unwrap();
        let t = sync.committed();
        assert!(sync.durable(t).await.is_err());
        assert!(sync.check().is_err());
        std::fs::write(dir.join("db.sqlite-wal"), b"frames").unwrap();
        let t = sync.committed();
        assert!(sync.durable(t).await.is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
