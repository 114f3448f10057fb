//! Server tests: the real router over in-memory SQLite, the software barrier
//! and a fixed clock, driven with `oneshot` — no sockets, no sleeps.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod auth;
mod authz;
mod certificates;
mod integrity;
mod review;
mod rotation;
mod secrets;
mod security;
mod sign_in_security;

use std::sync::Arc;

use axum::body::Body;
use axum::Router;
use http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use keyhaven_core::{Barrier, Clock, FixedClock, Principal, PrincipalKind, Storage};
use keyhaven_crypto::{MasterKey, SoftwareBarrier};
use keyhaven_identity::{SigningKey, TokenService};
use keyhaven_server::bootstrap;
use keyhaven_server::config::Endpoints;
use keyhaven_server::{AppState, Parts};
use keyhaven_store::SqliteStore;
use serde_json::Value;
use tower::ServiceExt as _;

pub const NOW: i64 = 1_800_000_000;
pub const VAULT_HOST: &str = "dev.vault.localhost:8443";
pub const AUDIENCE: &str = "https://vault.localhost:8443";

pub struct Harness {
    pub app: Router,
    pub state: AppState,
    pub clock: Arc<FixedClock>,
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: String,
    pub principal: Principal,
    pub signing_der: Vec<u8>,
    /// The PostgreSQL schema this harness made, dropped by [`Self::cleanup`].
    pg_schema: Option<(tokio_postgres::Client, String)>,
}

impl Harness {
    pub async fn new() -> Self {
        Self::with_store(Arc::new(SqliteStore::open_in_memory().await.unwrap())).await
    }

    /// One harness per store the run has: in-memory SQLite always, and a
    /// fresh PostgreSQL schema when `KEYHAVEN_TEST_POSTGRES` names a server
    /// (the README's test command sets it; then an unreachable server is a
    /// failure). Each is labelled for assertion messages.
    pub async fn each_store() -> Vec<(&'static str, Self)> {
        let mut out = vec![("sqlite", Self::new().await)];
        if let Ok(base) = std::env::var("KEYHAVEN_TEST_POSTGRES") {
            let schema = format!("kh_srv_{}", keyhaven_core::Version::random());
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
            let store = keyhaven_store::PostgresStore::connect(&url).await.unwrap();
            let mut h = Self::with_store(Arc::new(store)).await;
            h.pg_schema = Some((client, schema));
            out.push(("postgres", h));
        }
        out
    }

    pub async fn with_store(store: Arc<dyn Storage>) -> Self {
        let barrier: Arc<dyn Barrier> =
            Arc::new(SoftwareBarrier::new(MasterKey::generate().unwrap()));
        let clock = Arc::new(FixedClock::new(NOW));
        let dyn_clock: Arc<dyn Clock> = clock.clone();
        let boot = bootstrap::ensure(&store, &barrier, &dyn_clock)
            .await
            .unwrap();
        let endpoints = Endpoints::new("localhost", 8443);
        let signing_der = boot.signing_keys[0]
            .to_pkcs8_der()
            .unwrap()
            .expose()
            .clone();
        let tokens = TokenService::with_keys(
            boot.signing_keys,
            &endpoints.authority_host(),
            &boot.tenant_id,
        );
        let principal = Principal {
            object_id: boot.principal.object_id.clone(),
            tenant_id: boot.tenant_id.clone(),
            app_id: boot.principal.app_id.clone(),
            kind: PrincipalKind::ServicePrincipal,
        };
        let state = AppState::new(Parts {
            store,
            barrier,
            clock: dyn_clock,
            tokens,
            endpoints,
            dummy_hash: boot.dummy_hash,
            subscription_id: boot.subscription_id.clone(),
            trusted_issuers: Default::default(),
            trusted_proxies: Vec::new(),
            trusted_services: Vec::new(),
            audit: None,
            events: None,
            audit_fail_closed: false,
            audit_http_allow: keyhaven_server::audit_ship::AllowList::parse(&["127.0.0.1".into()])
                .unwrap(),
            backup_storage_allow: Default::default(),
            backup_storage_identity: Default::default(),
            hsm: None,
            limits: keyhaven_server::throttle::Limits {
                secrets: 0,
                keys: 0,
            },
        });
        Self {
            app: keyhaven_server::http::app(state.clone()),
            state,
            clock,
            tenant_id: boot.tenant_id,
            client_id: boot.principal.app_id.unwrap(),
            client_secret: boot.new_secret.unwrap().expose().clone(),
            principal,
            signing_der,
            pg_schema: None,
        }
    }

    /// Drops the PostgreSQL schema of a harness from [`Self::each_store`].
    pub async fn cleanup(self) {
        if let Some((client, schema)) = self.pg_schema {
            let _ = client
                .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
                .await;
        }
    }

    /// A token service sharing the real signing key (to mint test tokens).
    pub fn issuer(&self, authority: &str) -> TokenService {
        TokenService::new(
            SigningKey::from_pkcs8_der(&self.signing_der).unwrap(),
            authority,
            &self.tenant_id,
        )
    }

    pub fn token(&self) -> String {
        self.issuer("https://login.localhost:8443")
            .mint(&self.principal, AUDIENCE, self.clock.now())
            .unwrap()
    }

    pub async fn send(&self, req: Request<Body>) -> (StatusCode, http::HeaderMap, Value) {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        (status, headers, json)
    }

    /// A data-plane request with the bootstrap principal's token.
    pub async fn call(
        &self,
        method: &str,
        path_and_query: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (s, _, j) = self
            .send(vault_req(
                method,
                path_and_query,
                Some(&self.token()),
                body.map(|b| b.to_string()),
            ))
            .await;
        (s, j)
    }
}

pub fn vault_req(
    method: &str,
    path_and_query: &str,
    token: Option<&str>,
    body: Option<String>,
) -> Request<Body> {
    let mut b = Request::builder()
        .method(method)
        .uri(path_and_query)
        .header("host", VAULT_HOST)
        .header("content-type", "application/json");
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    b.body(body.map(Body::from).unwrap_or_else(Body::empty))
        .unwrap()
}

pub fn code(j: &Value) -> &str {
    j["error"]["code"].as_str().unwrap_or("<none>")
}
