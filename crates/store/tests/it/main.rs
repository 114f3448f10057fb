//! Store integration tests: the conformance suite against SQLite (always) and
//! PostgreSQL (when `KEYHAVEN_TEST_POSTGRES` names a server; the README's test
//! command sets it, and then an unreachable server is a failure, not a skip).
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;

use keyhaven_store::{conformance, PostgresStore, SqliteStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_in_memory_passes_conformance() {
    conformance::run(Arc::new(SqliteStore::open_in_memory().await.unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_file_passes_conformance_and_reopens() {
    let dir = std::env::temp_dir().join(format!("kh-store-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("keyhaven.db");
    conformance::run(Arc::new(SqliteStore::open(&path).await.unwrap())).await;
    // Migrations are idempotent: reopening the same file works.
    SqliteStore::open(&path).await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_passes_conformance() {
    let Ok(base) = std::env::var("KEYHAVEN_TEST_POSTGRES") else {
        eprintln!("KEYHAVEN_TEST_POSTGRES not set: PostgreSQL conformance not run (the README test command sets it)");
        return;
    };
    let schema = format!("kh_test_{}", keyhaven_core::Version::random());
    let (client, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
        .await
        .expect("KEYHAVEN_TEST_POSTGRES is set but PostgreSQL is unreachable");
    tokio::spawn(conn);
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-csearch_path%3D{schema}");
    let store = PostgresStore::connect(&url).await.unwrap();
    conformance::run(Arc::new(store.clone())).await;
    // A second node migrating the same schema is a no-op.
    PostgresStore::connect(&url).await.unwrap();
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_cannot_open_the_same_sqlite_file() {
    let dir = std::env::temp_dir().join(format!("kh-lock-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("keyhaven.db");
    let first = SqliteStore::open(&path).await.unwrap();
    let second = SqliteStore::open(&path).await;
    assert!(second.is_err(), "the file is locked by the first store");
    drop(first);
    SqliteStore::open(&path).await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
