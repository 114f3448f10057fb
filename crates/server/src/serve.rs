//! `keyhaven serve`: open the store, unlock the barrier, bootstrap, prepare
//! TLS, write `bootstrap.json`, start background work, and serve HTTPS until a
//! shutdown signal.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use keyhaven_core::{Barrier, Clock};
use keyhaven_crypto::master::Keyring;
use keyhaven_crypto::SoftwareBarrier;
use keyhaven_identity::TokenService;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::bootstrap::{self, Bootstrap, BOOTSTRAP_VAULT};
use crate::clock::SystemClock;
use crate::config::{Endpoints, ServerConfig};
use crate::state::{AppState, Parts};
use crate::tls;
use keyhaven_identity::federation::TrustedIssuers;

/// How often the TLS certificate files are checked for a change.
const CERT_CHECK_INTERVAL: Duration = Duration::from_secs(10);
/// How often service-limit usage is shared with the other nodes.
const USAGE_SHARE_INTERVAL: Duration = Duration::from_millis(250);
/// How often signing keys are re-read (rotation on another node).
const KEY_RELOAD_INTERVAL: Duration = Duration::from_secs(30);
/// Time allowed for a TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed to send request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Errors that stop the server from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Data directory or file problems.
    #[error("{0}")]
    Io(String),
    /// The master key could not be loaded.
    #[error("{0}")]
    MasterKey(#[from] keyhaven_crypto::master::MasterKeyError),
    /// The store could not be opened.
    #[error("store: {0}")]
    Store(#[from] keyhaven_core::StoreError),
    /// Bootstrap failed.
    #[error("bootstrap: {0}")]
    Bootstrap(#[from] bootstrap::BootstrapError),
    /// TLS setup failed.
    #[error("tls: {0}")]
    Tls(#[from] tls::TlsError),
}

/// The connection details written to `<data-dir>/bootstrap.json` (mode 0600).
#[derive(Serialize, Deserialize)]
pub struct BootstrapFile {
    /// Tenant id.
    pub tenant_id: String,
    /// Client (application) id of the bootstrap service principal.
    pub client_id: String,
    /// Its client secret (kept only here and, hashed, in the store).
    pub client_secret: String,
    /// Token authority host.
    pub authority_host: String,
    /// URL of the `dev` vault.
    pub vault_url: String,
    /// `vault.{domain}[:port]`.
    pub vault_host_suffix: String,
    /// ARM endpoint.
    pub management_url: String,
    /// Scope for ARM tokens.
    pub management_scope: String,
    /// Subscription id.
    pub subscription_id: String,
    /// Resource group.
    pub resource_group: String,
    /// Absolute path of the CA certificate to trust.
    pub ca_cert: String,
    /// The web console.
    #[serde(default)]
    pub portal_url: String,
}

/// Everything a running server needs, assembled from a config.
pub struct Prepared {
    /// The application state.
    pub state: AppState,
    /// The TLS configuration.
    pub tls: Arc<rustls::ServerConfig>,
    /// The server certificate (reloaded on SIGHUP or when its files change).
    pub cert: Arc<tls::ReloadingCert>,
    /// The bootstrap file contents (also written to disk).
    pub bootstrap: BootstrapFile,
    /// Where bootstrap.json is.
    pub bootstrap_path: PathBuf,
}

/// Prepares state, TLS and bootstrap for `config` without serving.
pub async fn prepare(config: &ServerConfig) -> Result<Prepared, StartError> {
    let dir = &config.data_dir;
    create_private_dir(dir)?;
    let keyring_path = dir.join("master.key");
    let store = keyhaven_store::open(config.store.as_deref(), &dir.join("keyhaven.db")).await?;
    // A new master key can open nothing an existing store holds: a store
    // with vaults and no keyring is a half-restored or mis-pointed data
    // directory, refused rather than given a key that makes it unreadable.
    if !keyring_path.exists() && !store.list_vaults().await?.is_empty() {
        return Err(StartError::Io(format!(
            "{} is missing but the store already holds vaults: put back the master keyring that wraps their keys (keyhaven restore writes it) instead of starting with a new one",
            keyring_path.display()
        )));
    }
    // Legacy PKCS#12 (what Windows exports) is read on every node alike.
    if !keyhaven_crypto::x509::legacy_provider() {
        tracing::warn!("OpenSSL's legacy provider is not available: PFX files with RC2 encryption will be refused");
    }
    let keyring = Keyring::load_or_create(&keyring_path)?;
    let barrier: Arc<dyn Barrier> =
        Arc::new(SoftwareBarrier::with_keyring(keyring, Some(keyring_path)));
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let boot = bootstrap::ensure(&store, &barrier, &clock).await?;
    let endpoints = config.endpoints();

    let files = tls_files(config, &endpoints)?;
    let cert = tls::ReloadingCert::new(&files)?;
    let tls = tls::server_config(Arc::clone(&cert), config.tls_min_version)?;

    let bootstrap_path = dir.join("bootstrap.json");
    let bootstrap = bootstrap_file(&bootstrap_path, &endpoints, &files, &boot)?;
    let tokens = TokenService::with_keys(
        boot.signing_keys,
        &endpoints.authority_host(),
        &boot.tenant_id,
    );
    let dummy_hash = boot.dummy_hash;
    let trusted_issuers = match &config.federation_config {
        Some(path) => {
            let bytes = std::fs::read(path)
                .map_err(|e| StartError::Io(format!("{}: {e}", path.display())))?;
            TrustedIssuers::from_config(&bytes).map_err(StartError::Io)?
        }
        None => TrustedIssuers::default(),
    };
    // The sign-in clients any user signs in through are never a trusted
    // service: that would let every user past `bypass: AzureServices`.
    for public in [
        keyhaven_identity::directory::PORTAL_APP_ID,
        keyhaven_identity::directory::AZURE_CLI_APP_ID,
    ] {
        if config
            .trusted_services
            .iter()
            .any(|t| t.eq_ignore_ascii_case(public))
        {
            return Err(StartError::Io(format!(
                "--trusted-service {public}: a public sign-in client cannot be a trusted service"
            )));
        }
    }
    let events: Arc<dyn keyhaven_core::events::EventSink> = Arc::new(crate::events::start(
        Arc::clone(&store),
        endpoints.clone(),
        bootstrap.subscription_id.clone(),
        crate::events::Retry {
            attempts: 5,
            base: config.event_retry_base,
        },
    ));
    let audit_opened = clock.now();
    let state = AppState::new(Parts {
        store,
        barrier,
        clock,
        tokens,
        endpoints,
        dummy_hash,
        subscription_id: bootstrap.subscription_id.clone(),
        trusted_issuers,
        trusted_proxies: config
            .trusted_proxies
            .iter()
            .map(|p| keyhaven_core::network::Ipv4Net::parse(p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StartError::Io(format!("--trusted-proxy: {e}")))?,
        trusted_services: config.trusted_services.clone(),
        limits: config.limits,
        events: Some(events),
        audit_fail_closed: !config.audit_fail_open,
        audit_http_allow: crate::audit_ship::AllowList::parse(&config.audit_http_allow)
            .map_err(|e| StartError::Io(format!("--audit-http-allow: {e}")))?,
        backup_storage_allow: crate::audit_ship::AllowList::parse(&config.backup_storage_allow)
            .map_err(|e| StartError::Io(format!("--backup-storage-allow: {e}")))?,
        backup_storage_identity: match &config.backup_storage_identity {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| StartError::Io(format!("--backup-storage-identity: {e}")))
                .and_then(|text| {
                    crate::blob::StorageIdentity::parse(&text)
                        .map_err(|e| StartError::Io(format!("--backup-storage-identity: {e}")))
                })?,
            None => Default::default(),
        },
        hsm: match &config.hsm {
            Some(cfg) => {
                let keys = keyhaven_crypto::pkcs11::Pkcs11Keys::open(cfg)
                    .map_err(|e| StartError::Io(format!("hsm: {e}")))?;
                tracing::info!(module = %cfg.module.display(), token = %cfg.token_label, "HSM attached: premium vaults hold RSA-HSM and EC-HSM keys");
                Some(Arc::new(keys))
            }
            None => None,
        },
        audit: Some(Arc::new(
            crate::audit::AuditLog::open(&dir.join("audit"), audit_opened)
                .map_err(|e| StartError::Io(format!("audit log: {e}")))?,
        )),
    });
    Ok(Prepared {
        state,
        tls,
        cert,
        bootstrap,
        bootstrap_path,
    })
}

/// The TLS files: the operator's, or a generated local CA and server
/// certificate under the data directory.
fn tls_files(config: &ServerConfig, endpoints: &Endpoints) -> Result<tls::TlsFiles, StartError> {
    match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Ok(tls::TlsFiles {
            ca_cert: Some(absolute(config.tls_ca.as_ref().unwrap_or(cert))?),
            cert: cert.clone(),
            key: key.clone(),
        }),
        (None, None) => Ok(tls::ensure_generated(
            &config.data_dir.join("tls"),
            &tls::server_names(endpoints.domain(), &[BOOTSTRAP_VAULT]),
        )?),
        _ => Err(StartError::Io(
            "--tls-cert and --tls-key must be given together".into(),
        )),
    }
}

/// Writes `bootstrap.json` (0600). The client secret exists in clear only
/// when this start created it; otherwise the previous file's copy is kept.
fn bootstrap_file(
    path: &Path,
    endpoints: &Endpoints,
    files: &tls::TlsFiles,
    boot: &Bootstrap,
) -> Result<BootstrapFile, StartError> {
    let previous_secret = std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<BootstrapFile>(&b).ok())
        .map(|f| f.client_secret);
    let client_secret = match (&boot.new_secret, previous_secret) {
        (Some(s), _) => s.expose().clone(),
        (None, Some(prev)) => prev,
        (None, None) => {
            tracing::warn!("bootstrap.json is missing and the client secret exists only as a hash; it cannot be shown again");
            String::new()
        }
    };
    let bootstrap = BootstrapFile {
        tenant_id: boot.tenant_id.clone(),
        client_id: boot.principal.app_id.clone().unwrap_or_default(),
        client_secret,
        authority_host: endpoints.authority_host(),
        vault_url: endpoints.vault_url(BOOTSTRAP_VAULT),
        vault_host_suffix: endpoints.vault_host_suffix(),
        management_url: endpoints.management_url(),
        management_scope: format!("{}/.default", endpoints.management_url()),
        subscription_id: boot.subscription_id.clone(),
        resource_group: boot.resource_group.clone(),
        ca_cert: files
            .ca_cert
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        portal_url: endpoints.portal_url(),
    };
    write_private_json(path, &bootstrap)?;
    Ok(bootstrap)
}

/// Pending connections the kernel queues per listener (capped by
/// `net.core.somaxconn`). tokio's `bind` asks for 128: when hundreds of
/// clients connect at once (a deployment's startup storm) the rest were
/// dropped and waited a second for their SYN to be sent again.
const LISTEN_BACKLOG: u32 = 4096;

/// A listener on `addr` (SO_REUSEADDR, as `TcpListener::bind`) with a
/// backlog of [`LISTEN_BACKLOG`].
fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Runs the server until SIGINT or SIGTERM.
pub async fn run(config: ServerConfig) -> Result<(), StartError> {
    let prepared = prepare(&config).await?;
    let mut listeners = Vec::new();
    for addr in std::iter::once(config.listen).chain(config.extra_listen.iter().copied()) {
        let l =
            listen(addr).map_err(|e| StartError::Io(format!("cannot listen on {addr}: {e}")))?;
        listeners.push(l);
    }
    let admin = match config.admin_listen {
        Some(addr) => Some(
            listen(addr)
                .map_err(|e| StartError::Io(format!("cannot listen on {addr} (admin): {e}")))?,
        ),
        None => None,
    };
    let imds = match config.imds_listen {
        Some(addr) => match listen(addr) {
            Ok(l) => Some(l),
            Err(e) if !config.imds_required => {
                tracing::warn!(%addr, error = %e, "managed-identity endpoint not started (use --imds-listen to choose an address)");
                None
            }
            Err(e) => return Err(StartError::Io(format!("cannot listen on {addr}: {e}"))),
        },
        None => None,
    };
    print_banner(&prepared);
    spawn_scheduler(prepared.state.clone(), config.scheduler_interval);
    spawn_master_key_follower(prepared.state.clone());
    spawn_key_reloader(prepared.state.clone());
    spawn_metric_flush(prepared.state.clone());
    if config
        .store
        .as_deref()
        .is_some_and(|s| s.starts_with("postgres://") || s.starts_with("postgresql://"))
    {
        spawn_usage_sharing(prepared.state.clone());
    }
    spawn_cert_reloader(
        Arc::clone(&prepared.cert),
        Arc::clone(&prepared.state.barrier),
    );
    if let Some(l) = admin {
        tokio::spawn(plain_accept_loop(
            l,
            crate::admin::router(prepared.state.clone()),
        ));
    }
    if let Some(l) = imds {
        tokio::spawn(plain_accept_loop(
            l,
            crate::http::identity::imds::router(prepared.state.clone()),
        ));
    }
    let (app, in_flight) = crate::http::app_in_flight(prepared.state.clone());
    let acceptor = TlsAcceptor::from(prepared.tls);
    for listener in listeners {
        tokio::spawn(accept_loop(listener, acceptor.clone(), app.clone()));
    }
    shutdown_signal().await;
    tracing::info!("shutting down");
    // State-changing requests run to their end (and their audit record),
    // within a grace period.
    if !in_flight.drained(SHUTDOWN_GRACE).await {
        tracing::warn!("requests still running after the shutdown grace period were cut off");
    }
    Ok(())
}

/// How long a shutdown waits for state-changing requests in flight.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, app: axum::Router) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let local = tcp.local_addr().ok();
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let version = match tls.get_ref().1.protocol_version() {
                Some(rustls::ProtocolVersion::TLSv1_3) => Some("TLS1_3"),
                Some(rustls::ProtocolVersion::TLSv1_2) => Some("TLS1_2"),
                _ => None,
            };
            serve_connection(tls, peer, local, version, app).await;
        });
    }
}

/// Serves one connection (TLS or plain) with the app, telling handlers the
/// peer's address and the local address it was accepted on.
async fn serve_connection<IO>(
    io: IO,
    peer: std::net::SocketAddr,
    local: Option<std::net::SocketAddr>,
    tls_version: Option<&'static str>,
    app: axum::Router,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = tower::ServiceExt::map_request(
        app,
        move |mut req: axum::extract::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(PeerAddr(peer));
            if let Some(local) = local {
                req.extensions_mut().insert(LocalAddr(local));
            }
            if let Some(v) = tls_version {
                req.extensions_mut().insert(crate::audit::TlsVersion(v));
            }
            req.map(axum::body::Body::new)
        },
    );
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Above the pipeline's own limits (16 KB, 100 headers), so that it is
    // the pipeline that answers, with Azure's error body.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_headers(4 * crate::http::MAX_HEADERS);
    // Bodies are buffered before authentication (up to 4 MB each, given
    // 30 s): HTTP/2 streams per connection are bounded accordingly.
    builder
        .http2()
        .max_header_list_size(4 * crate::http::MAX_HEADER_BYTES as u32)
        .max_concurrent_streams(32);
    if let Err(e) = builder
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(svc))
        .await
    {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

pub use crate::http::{LocalAddr, PeerAddr};

/// Serves plain HTTP/1.1 (the metadata endpoint, as on Azure).
async fn plain_accept_loop(listener: TcpListener, app: axum::Router) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        let app = app.clone();
        let local = tcp.local_addr().ok();
        tokio::spawn(serve_connection(tcp, peer, local, None, app));
    }
}

/// Picks up signing keys rotated on another node.
/// Re-reads the TLS certificate on SIGHUP, and when its files change
/// (checked every `CERT_CHECK_INTERVAL`).
fn spawn_cert_reloader(cert: Arc<tls::ReloadingCert>, barrier: Arc<dyn Barrier>) {
    tokio::spawn(async move {
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "SIGHUP handler unavailable; certificate reload by file change only");
                None
            }
        };
        let mut tick = tokio::time::interval(CERT_CHECK_INTERVAL);
        loop {
            let forced = tokio::select! {
                _ = tick.tick() => false,
                Some(()) = async {
                    match hup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                } => true,
            };
            if forced {
                match barrier.reload_master() {
                    Ok(()) => tracing::info!("master keyring re-read"),
                    Err(e) => tracing::warn!(error = %e, "master keyring not re-read"),
                }
            }
            match cert.reload(forced) {
                Ok(true) => tracing::info!("TLS certificate reloaded"),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "TLS certificate reload failed; serving the previous one")
                }
            }
        }
    });
}

/// Shares this node's service-limit usage with the other nodes on the same
/// PostgreSQL database, four times a second (see `throttle`).
fn spawn_usage_sharing(state: AppState) {
    let node = uuid::Uuid::new_v4().to_string();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(USAGE_SHARE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            let (window, counts) = state.throttle.usage(state.clock.now());
            match state.store.share_usage(&node, window, &counts).await {
                Ok(totals) => state.throttle.learn(window, &counts, totals),
                Err(e) => tracing::debug!(error = %e, "sharing service-limit usage failed"),
            }
        }
    });
}

/// How often a node adds its counted minutes to the store.
const METRIC_FLUSH_INTERVAL: Duration = Duration::from_secs(5);

/// Adds this node's per-minute request counts to the store every few
/// seconds (the metrics API sums all nodes'); what a failed write held is
/// kept for the next try. Once an hour, minutes past retention go. A node
/// that stops loses the counts it has not written yet (its last few
/// seconds, or more while the store is unreachable).
fn spawn_metric_flush(state: AppState) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(METRIC_FLUSH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut last_forget = i64::MIN;
        loop {
            tick.tick().await;
            let rows = state.metrics.take_minutes();
            if !rows.is_empty() {
                if let Err(e) = state.store.add_metrics(&rows).await {
                    tracing::warn!(error = %e, "request metrics could not be stored; kept for the next try");
                    state.metrics.restore_minutes(rows);
                }
            }
            let hour = state.clock.now().div_euclid(3600);
            if hour != last_forget {
                let horizon =
                    state.clock.now().div_euclid(60) - crate::http::arm::monitor::RETENTION_MINUTES;
                match state.store.forget_metrics(horizon).await {
                    Ok(()) => last_forget = hour,
                    Err(e) => {
                        tracing::debug!(error = %e, "old request metrics could not be dropped")
                    }
                }
                crate::log_ingest::forget_past_retention(&state).await;
            }
        }
    });
}

fn spawn_key_reloader(state: AppState) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(KEY_RELOAD_INTERVAL);
        loop {
            tick.tick().await;
            match crate::signing::load(&state.store, &state.barrier).await {
                Ok(Some(keys)) => {
                    let kids: Vec<String> = keys.iter().map(|k| k.kid().to_owned()).collect();
                    if kids != state.tokens.kids() {
                        state.tokens.replace_keys(keys);
                        tracing::info!("token signing keys reloaded");
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "reloading signing keys failed"),
            }
        }
    });
}

/// How often a node checks which master key the store names.
const FOLLOW_MASTER_KEY_EVERY: Duration = Duration::from_secs(2);

/// Follows master-key rotations made on other nodes (see
/// `masterkey::follow`), warning once per key this node lacks.
fn spawn_master_key_follower(state: AppState) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(FOLLOW_MASTER_KEY_EVERY);
        let mut missing_key = None;
        loop {
            tick.tick().await;
            match crate::masterkey::follow(&state.store, &state.barrier).await {
                Ok(None) => missing_key = None,
                Ok(Some(id)) => {
                    if missing_key != Some(id) {
                        tracing::warn!(
                            key_id = id,
                            "another node rotated the master key to a key this node's master.key lacks; copy that node's master.key here"
                        );
                    }
                    missing_key = Some(id);
                }
                Err(e) => tracing::warn!(error = %e, "could not read the current master key"),
            }
        }
    });
}

/// The background scheduler: purges soft-deleted objects past retention,
/// carries out key rotation policies and certificate lifetime actions, and
/// sends expiry events. Each job is claimed in the store, so
/// several nodes on one database do each once.
fn spawn_scheduler(state: AppState, interval: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            match state.service.purge_expired().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(purged = n, "purged soft-deleted objects past retention"),
                Err(e) => tracing::warn!(error = %e, "purge of expired objects failed"),
            }
            match state.service.purge_expired_vaults().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(purged = n, "purged soft-deleted vaults past retention"),
                Err(e) => tracing::warn!(error = %e, "purge of expired vaults failed"),
            }
            if let Err(e) = state.service.run_key_rotations().await {
                tracing::warn!(error = %e, "key rotation pass failed");
            }
            if let Err(e) = state.service.run_certificate_renewals().await {
                tracing::warn!(error = %e, "certificate renewal pass failed");
            }
            match state.service.expiry_events().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(events = n, "expiry events sent"),
                Err(e) => tracing::warn!(error = %e, "expiry event pass failed"),
            }
            if let Err(e) = crate::policy_scan::daily(&state).await {
                tracing::warn!(error = %e, "policy compliance scan failed");
            }
            if let Err(e) = crate::http::arm::pim::sweep(&state).await {
                tracing::warn!(error = %e, "sweep of expired role assignments failed");
            }
        }
    });
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

fn print_banner(p: &Prepared) {
    let b = &p.bootstrap;
    println!("Keyhaven is serving.");
    println!("  vault URL:       {}", b.vault_url);
    println!("  portal:          {}", b.portal_url);
    println!("  authority host:  {}", b.authority_host);
    println!("  tenant id:       {}", b.tenant_id);
    println!("  client id:       {}", b.client_id);
    println!(
        "  client secret:   in {} (field client_secret)",
        p.bootstrap_path.display()
    );
    if !b.ca_cert.is_empty() {
        println!(
            "  CA certificate:  {}  (export REQUESTS_CA_BUNDLE={})",
            b.ca_cert, b.ca_cert
        );
    }
    println!("Connect with azure-identity:");
    println!("  ClientSecretCredential(tenant_id, client_id, client_secret, authority=\"{}\", disable_instance_discovery=True)", b.authority_host);
}

fn absolute(path: &Path) -> Result<PathBuf, StartError> {
    std::fs::canonicalize(path).map_err(|e| StartError::Io(format!("{}: {e}", path.display())))
}

fn create_private_dir(dir: &Path) -> Result<(), StartError> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.exists() {
        if let Some(warning) = data_dir_warning(dir) {
            tracing::warn!("{warning}");
        }
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| StartError::Io(format!("cannot create data dir {}: {e}", dir.display())))
}

/// What to say about an existing data directory that others can reach.
/// Keyhaven makes its own files 0600 and folders 0700 either way; the
/// directory itself is the operator's, so it is named, not changed.
pub fn data_dir_warning(dir: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then(|| {
        format!(
            "data directory {} has mode {mode:o}: group and other users can reach it; chmod 700 it (Keyhaven creates it 0700)",
            dir.display()
        )
    })
}

fn write_private_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StartError> {
    use std::io::Write;
    let io = |e: std::io::Error| StartError::Io(format!("{}: {e}", path.display()));
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| StartError::Io(e.to_string()))?;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(&bytes).map_err(io)?;
    f.write_all(b"\n").map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 22, outside review 1: a pre-existing data directory kept a
    /// wide mode without a word.
    #[test]
    fn a_data_directory_others_can_reach_is_named() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("kh-data-mode-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        create_private_dir(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert_eq!(data_dir_warning(&dir), None);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let warning = data_dir_warning(&dir).expect("a 0755 data directory is named");
        assert!(
            warning.contains("755") && warning.contains("chmod 700"),
            "{warning}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
