//! Server integration tests (filled below).
