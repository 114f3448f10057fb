//! Group commit for the SQLite store. The writer connection commits with
//! `synchronous = NORMAL` in WAL mode: a commit appends its frames to the
//! WAL with `write(2)` and does not sync. A write is acknowledged only once
//! an `fdatasync` of the WAL that started after its commit has succeeded;
//! one sync thread serves every write waiting meanwhile, so concurrent
//! writes share one sync instead of paying one each (as `synchronous =
//! FULL` made them). SQLite itself still syncs the WAL before a checkpoint
//! copies it into the database, and the database after.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use keyhaven_core::store::{StoreError, StoreResult};

/// Tickets: `committed` counts commits; the watch holds the highest ticket
/// synced and the highest whose sync failed.
pub(super) struct WalSync {
    committed: AtomicU64,
    done: tokio::sync::watch::Sender<(u64, u64)>,
    poke: Mutex<std::sync::mpsc::Sender<()>>,
}

impl WalSync {
    /// Starts the sync thread for the WAL of the database at `db`.
    pub(super) fn start(db: &std::path::Path) -> StoreResult<std::sync::Arc<Self>> {
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        let wal = PathBuf::from(wal);
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let this = std::sync::Arc::new(Self {
            committed: AtomicU64::new(0),
            done: tokio::sync::watch::channel((0, 0)).0,
            poke: Mutex::new(tx),
        });
        let weak = std::sync::Arc::downgrade(&this);
        std::thread::Builder::new()
            .name("sqlite-wal-sync".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    while rx.try_recv().is_ok() {}
                    let Some(me) = weak.upgrade() else { break };
                    // Every commit counted so far wrote its frames before
                    // this sync starts: the sync covers them.
                    let target = me.committed.load(Ordering::SeqCst);
                    let synced = std::fs::File::open(&wal).and_then(|f| f.sync_data());
                    if let Err(e) = &synced {
                        tracing::error!(error = %e, "the SQLite WAL could not be synced");
                    }
                    me.done.send_modify(|(ok, failed)| match synced {
                        Ok(()) => *ok = (*ok).max(target),
                        Err(_) => *failed = (*failed).max(target),
                    });
                }
            })
            .map_err(|e| StoreError::Unavailable(format!("sqlite sync thread: {e}")))?;
        Ok(this)
    }

    /// Takes a ticket for a commit that just happened (called under the
    /// writer connection's lock, right after the write).
    pub(super) fn committed(&self) -> u64 {
        self.committed.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Waits until the commit of `ticket` is on disk.
    pub(super) async fn durable(&self, ticket: u64) -> StoreResult<()> {
        let mut rx = self.done.subscribe();
        if let Ok(q) = self.poke.lock() {
            let _ = q.send(());
        }
        let state = *rx
            .wait_for(|(ok, failed)| *ok >= ticket || *failed >= ticket)
            .await
            .map_err(|_| StoreError::Unavailable("sqlite sync thread stopped".into()))?;
        if state.0 >= ticket {
            Ok(())
        } else {
            Err(StoreError::Unavailable(
                "the write was committed but could not be synced to disk".into(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_commits_are_acknowledged_after_a_sync_and_a_missing_wal_fails() {
        let dir = std::env::temp_dir().join(format!("kh-walsync-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("db.sqlite");
        let sync = WalSync::start(&db).unwrap();
        // No WAL file yet: the sync fails and the write is not acknowledged.
        let t = sync.committed();
        assert!(sync.durable(t).await.is_err());
        std::fs::write(dir.join("db.sqlite-wal"), b"frames").unwrap();
        let waits: Vec<_> = (0..50)
            .map(|_| {
                let s = std::sync::Arc::clone(&sync);
                let t = s.committed();
                tokio::spawn(async move { s.durable(t).await })
            })
            .collect();
        for w in waits {
            w.await.unwrap().unwrap();
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
