//! The Keyhaven server library: configuration, TLS, first-start bootstrap,
//! the HTTP planes (data, login, management) behind one request pipeline, and
//! background tasks. It is glue: object semantics live in `keyhaven-core`.

pub mod admin;
pub mod audit;
pub mod audit_ship;
pub mod blob;
pub mod bootstrap;
pub mod clock;
pub mod config;
pub mod events;
pub mod http;
pub mod log_ingest;
pub mod masterkey;
pub mod methods_key;
pub mod metrics;
pub mod policy;
pub mod policy_scan;
pub mod serve;
pub mod sign_in;
pub mod signing;
pub mod state;
pub mod throttle;
pub mod tls;

pub use config::ServerConfig;
pub use serve::run;
pub use state::{AppState, Parts};
