//! Implementations of the `Store` port: SQLite (the embedded default) and
//! PostgreSQL (for several nodes). SQL lives only here. Both dialects share the
//! statements in `sql`, keep their own migrations, and pass `conformance`.

pub mod conformance;
pub mod logs;
mod migrations;
pub mod postgres;
mod sql;
pub mod sqlite;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

use std::path::Path;
use std::sync::Arc;

use keyhaven_core::store::{Storage, StoreError};

/// Opens the store a `--store` value names: `postgres://…`/`postgresql://…`
/// selects PostgreSQL; anything else (or nothing) the SQLite file `default_sqlite`.
pub async fn open(
    spec: Option<&str>,
    default_sqlite: &Path,
) -> Result<Arc<dyn Storage>, StoreError> {
    match spec {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Ok(Arc::new(PostgresStore::connect(url).await?))
        }
        Some(path) if path.starts_with("sqlite://") => {
            let p = path.trim_start_matches("sqlite://");
            Ok(Arc::new(SqliteStore::open(Path::new(p)).await?))
        }
        Some("sqlite") | None => Ok(Arc::new(SqliteStore::open(default_sqlite).await?)),
        Some(other) => Err(StoreError::Unavailable(format!(
            "unrecognised --store value '{other}': use 'sqlite', 'sqlite:///path/file.db' or 'postgres://…'"
        ))),
    }
}
