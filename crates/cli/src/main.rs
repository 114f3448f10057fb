//! `keyhaven`: the one binary. `keyhaven serve` runs the server; every other
//! subcommand is an HTTP client of a running server and never opens the store.

mod admin;
mod client;
mod cloud;
mod deployment;

// The server allocates per request (headers, JSON, ciphertexts); mimalloc's
// thread caches measurably beat glibc's malloc under load (see the benchmark
// figures in the issue notes).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use keyhaven_server::ServerConfig;

#[derive(Parser)]
#[command(
    name = "keyhaven",
    version,
    about = "A self-hosted key vault that speaks the Azure Key Vault API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (HTTPS) with an embedded store unless --store says otherwise.
    Serve(Box<ServeArgs>),
    /// Manage users (through the server's Graph endpoint).
    User {
        #[command(flatten)]
        target: admin::Target,
        #[command(subcommand)]
        cmd: admin::UserCmd,
    },
    /// Manage groups.
    Group {
        #[command(flatten)]
        target: admin::Target,
        #[command(subcommand)]
        cmd: admin::GroupCmd,
    },
    /// Manage applications and service principals.
    App {
        #[command(flatten)]
        target: admin::Target,
        #[command(subcommand)]
        cmd: admin::AppCmd,
    },
    /// Manage user-assigned managed identities.
    Identity {
        #[command(flatten)]
        target: admin::Target,
        #[command(subcommand)]
        cmd: admin::IdentityCmd,
    },
    /// Manage workloads (callers of the managed-identity endpoint).
    Workload {
        #[command(flatten)]
        target: admin::Target,
        #[command(subcommand)]
        cmd: admin::WorkloadCmd,
    },
    /// Rotate the token signing key.
    RotateSigningKey {
        #[command(flatten)]
        target: admin::Target,
    },
    /// Rotate the master key: a new key (or one added to master.key by hand
    /// and given to every node) seals from now on, and every vault data key
    /// and the signing keys are re-wrapped under it while the server serves.
    /// Older keys stay in master.key so older backups still restore.
    RotateMasterKey {
        #[command(flatten)]
        target: admin::Target,
    },
    /// List the master keys in this node's keyring and what in the store is
    /// still sealed under each (vault data keys, token signing keys), so an
    /// old key is retired only once nothing uses it. Backups made before a
    /// rotation are outside the store and still need the key they name.
    MasterKeyUsage {
        #[command(flatten)]
        target: admin::Target,
    },
    /// Check integrity: every vault key unwraps and every stored version of
    /// every object (live and deleted) authenticates (through the server),
    /// and the audit log's hash chain is intact (read from --data-dir).
    /// Prints a report; exits 1 if anything is wrong.
    Check {
        #[command(flatten)]
        target: admin::Target,
    },
    /// Back up the whole deployment (store and master keyring) into one
    /// passphrase-encrypted archive, from a consistent snapshot taken while
    /// the server keeps serving.
    Backup {
        #[command(flatten)]
        place: deployment::Place,
        /// The archive to write (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// Restore a deployment archive into an empty data directory (and, for
    /// PostgreSQL, an empty database); then start `keyhaven serve` on it.
    Restore {
        #[command(flatten)]
        place: deployment::Place,
        /// The archive to read.
        #[arg(long = "in")]
        input: PathBuf,
    },
    /// Query a vault's audit records in Keyhaven's log store.
    Logs {
        #[command(flatten)]
        target: admin::Target,
        #[command(flatten)]
        filter: admin::LogsFilter,
    },
    /// Work with the audit log.
    Audit {
        #[command(subcommand)]
        cmd: AuditCmd,
    },
    /// Print the Azure CLI commands that point `az` at this deployment
    /// (`az cloud register` with the ARM endpoint, whose metadata names every
    /// other endpoint; `az cloud set`; MSAL instance discovery off), or run
    /// them with --run.
    Cloud {
        #[command(flatten)]
        target: admin::Target,
        /// The name to register the cloud under.
        #[arg(long, default_value = "Keyhaven")]
        name: String,
        /// Run the commands (registering again updates the cloud).
        #[arg(long)]
        run: bool,
        /// Give every endpoint on the command line (`--skip-endpoint-discovery`)
        /// instead of letting az read them from the metadata endpoint.
        #[arg(long)]
        no_discovery: bool,
        /// The az executable used by --run.
        #[arg(long, env = "KEYHAVEN_AZ", default_value = "az")]
        az: PathBuf,
    },
    /// Prepare an HSM (PKCS#11 token) for premium vaults.
    Hsm {
        #[command(subcommand)]
        cmd: HsmCmd,
    },
}

#[derive(Subcommand)]
enum HsmCmd {
    /// Creates the token's backup wrapping key (AES-256, trusted, never
    /// extractable) as the security officer. Run once per token (again is a
    /// no-op); HSMs that should restore each other's key backups must share
    /// this key (clone it with the HSM vendor's tools).
    Init {
        /// The PKCS#11 module.
        #[arg(long, env = "KEYHAVEN_PKCS11_MODULE")]
        pkcs11_module: PathBuf,
        /// The token's label.
        #[arg(long, env = "KEYHAVEN_PKCS11_TOKEN_LABEL")]
        pkcs11_token_label: String,
        /// File holding the security officer PIN (or set KEYHAVEN_PKCS11_SO_PIN).
        #[arg(long, env = "KEYHAVEN_PKCS11_SO_PIN_FILE")]
        so_pin_file: Option<PathBuf>,
    },
}

/// A PIN from a file (first line) or, failing that, an environment variable;
/// never a command-line value, so it stays out of `ps` and shell history.
fn read_pin(
    file: Option<&std::path::Path>,
    env: &str,
) -> anyhow::Result<keyhaven_core::Sensitive<String>> {
    let pin = match file {
        Some(f) => {
            let text = keyhaven_core::Sensitive::new(
                std::fs::read_to_string(f)
                    .map_err(|e| anyhow::anyhow!("cannot read PIN file {}: {e}", f.display()))?,
            );
            text.expose().lines().next().unwrap_or("").to_owned()
        }
        None => std::env::var(env)
            .map_err(|_| anyhow::anyhow!("no PIN: give a PIN file or set {env}"))?,
    };
    if pin.is_empty() {
        anyhow::bail!("the PIN is empty");
    }
    Ok(keyhaven_core::Sensitive::new(pin))
}

fn check(target: &admin::Target) -> anyhow::Result<()> {
    let mut report = admin::check_integrity(target)?;
    let audit = match keyhaven_server::audit::verify(&target.data_dir().join("audit"))? {
        keyhaven_server::audit::Verified::Intact(n) => {
            serde_json::json!({"intact": true, "records": n})
        }
        keyhaven_server::audit::Verified::Broken(file, line, why) => serde_json::json!({
            "intact": false, "at": format!("{}:{line}", file.display()), "why": why
        }),
    };
    let audit_ok = audit.get("intact") == Some(&serde_json::Value::Bool(true));
    let problems = report
        .get("problemCount")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(1);
    if let Some(obj) = report.as_object_mut() {
        obj.insert("auditLog".into(), audit);
    }
    println!("{}", serde_json::to_string_pretty(&report)?);
    if problems > 0 || !audit_ok {
        std::process::exit(1);
    }
    Ok(())
}

fn hsm(cmd: HsmCmd) -> anyhow::Result<()> {
    match cmd {
        HsmCmd::Init {
            pkcs11_module,
            pkcs11_token_label,
            so_pin_file,
        } => {
            let so_pin = read_pin(so_pin_file.as_deref(), "KEYHAVEN_PKCS11_SO_PIN")?;
            let created = keyhaven_crypto::pkcs11::init_backup_key(
                &pkcs11_module,
                &pkcs11_token_label,
                &so_pin,
            )
            .map_err(anyhow::Error::msg)?;
            if created {
                println!("created the backup wrapping key on token '{pkcs11_token_label}'");
            } else {
                println!("token '{pkcs11_token_label}' already has its backup wrapping key");
            }
            Ok(())
        }
    }
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Re-computes the audit log's hash chain; exits 1 at the first record
    /// that was edited, dropped, inserted or moved.
    Verify {
        /// The server's data directory (the log is in its `audit/`).
        #[arg(long, env = "KEYHAVEN_DATA_DIR", default_value = "./keyhaven-data")]
        data_dir: PathBuf,
    },
}

fn audit(cmd: AuditCmd) -> anyhow::Result<()> {
    match cmd {
        AuditCmd::Verify { data_dir } => {
            match keyhaven_server::audit::verify(&data_dir.join("audit"))? {
                keyhaven_server::audit::Verified::Intact(n) => {
                    println!("audit log intact: {n} records");
                    Ok(())
                }
                keyhaven_server::audit::Verified::Broken(file, line, why) => {
                    eprintln!("audit log broken at {}:{line}: {why}", file.display());
                    std::process::exit(1);
                }
            }
        }
    }
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Data directory: master key, TLS material, SQLite store, bootstrap.json.
    #[arg(long, env = "KEYHAVEN_DATA_DIR", default_value = "./keyhaven-data")]
    data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "KEYHAVEN_LISTEN", default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// More addresses serving the same endpoints (repeatable; comma-separated
    /// in the environment), e.g. `127.0.0.1:443` for clients that drop ports.
    #[arg(long, env = "KEYHAVEN_EXTRA_LISTEN", value_delimiter = ',')]
    extra_listen: Vec<SocketAddr>,
    /// Trusted external token issuers for workload identity federation (JSON).
    #[arg(long, env = "KEYHAVEN_FEDERATION_CONFIG")]
    federation_config: Option<PathBuf>,
    /// Plain-HTTP address of the managed-identity (metadata) endpoint, or `off`.
    #[arg(long, env = "KEYHAVEN_IMDS_LISTEN")]
    imds_listen: Option<String>,
    /// Store: `sqlite` (default, a file in the data dir) or a `postgres://…` URL.
    #[arg(long, env = "KEYHAVEN_STORE")]
    store: Option<String>,
    /// Base domain: vaults are served at `{name}.vault.{domain}`.
    #[arg(long, env = "KEYHAVEN_DOMAIN", default_value = "localhost")]
    domain: String,
    /// Your own certificate chain (PEM) instead of the generated local CA.
    #[arg(long, env = "KEYHAVEN_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) for --tls-cert.
    #[arg(long, env = "KEYHAVEN_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// With --tls-cert: the CA certificate clients should trust, named in
    /// bootstrap.json (default: the --tls-cert file itself).
    #[arg(long, env = "KEYHAVEN_TLS_CA", requires = "tls_cert")]
    tls_ca: Option<PathBuf>,
    /// A reverse proxy (IPv4 address or CIDR range) whose X-Forwarded-For
    /// header names the client for vault network rules (repeatable).
    #[arg(
        long = "trusted-proxy",
        env = "KEYHAVEN_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    trusted_proxies: Vec<String>,
    /// Application id of a service principal to treat as a trusted service:
    /// vaults with networkAcls.bypass AzureServices admit it past their
    /// firewall (repeatable).
    #[arg(
        long = "trusted-service",
        env = "KEYHAVEN_TRUSTED_SERVICES",
        value_delimiter = ','
    )]
    trusted_services: Vec<String>,
    /// Secret (and certificate, vault) transactions per vault per 10 s before
    /// 429 Throttled; 0 = unlimited. Azure's limit by default.
    #[arg(long, env = "KEYHAVEN_LIMIT_SECRETS", default_value_t = 4000)]
    limit_secrets: u32,
    /// Key transactions per vault per 10 s; 0 = unlimited.
    #[arg(long, env = "KEYHAVEN_LIMIT_KEYS", default_value_t = 4000)]
    limit_keys: u32,
    /// Plain-HTTP admin address serving /metrics (Prometheus), /healthz and
    /// /readyz, e.g. 127.0.0.1:9464 (default: off).
    #[arg(long, env = "KEYHAVEN_ADMIN_LISTEN")]
    admin_listen: Option<SocketAddr>,
    /// Seconds between scheduler passes (purges, rotations, renewals,
    /// near-expiry events).
    #[arg(long, env = "KEYHAVEN_SCHEDULER_INTERVAL", default_value_t = 60)]
    scheduler_interval: u64,
    /// Milliseconds before the first retry of a failed event delivery
    /// (doubled for each of the 5 attempts).
    #[arg(long, env = "KEYHAVEN_EVENT_RETRY_BASE_MS", default_value_t = 1000)]
    event_retry_base_ms: u64,
    /// Keep serving requests when the audit log cannot be written (by
    /// default such requests are refused with 503: fail closed).
    #[arg(long, env = "KEYHAVEN_AUDIT_FAIL_OPEN")]
    audit_fail_open: bool,
    /// Where diagnostic settings may ship audit records over HTTP
    /// (`keyhavenHttpEndpoint`): host names (`*.example.com` for
    /// subdomains), IP addresses or CIDRs, comma-separated. Unset: HTTP
    /// destinations are refused. Loopback, link-local and private addresses
    /// are reached only when listed as addresses or CIDRs.
    #[arg(long, env = "KEYHAVEN_AUDIT_HTTP_ALLOW", value_delimiter = ',')]
    audit_http_allow: Vec<String>,
    /// Where managed HSM pools may write and read full backups (Azure Blob
    /// storage containers): host names (`*.blob.core.windows.net`), IP
    /// addresses or CIDRs, comma-separated. Unset: full backups are refused.
    /// Plain http only to a listed IP address (an emulator on loopback).
    #[arg(long, env = "KEYHAVEN_BACKUP_STORAGE_ALLOW", value_delimiter = ',')]
    backup_storage_allow: Vec<String>,
    /// What a managed HSM's identity may reach (`useManagedIdentity` backups):
    /// a file of `container-URL SAS-token` lines, one per container.
    #[arg(long, env = "KEYHAVEN_BACKUP_STORAGE_IDENTITY")]
    backup_storage_identity: Option<std::path::PathBuf>,
    /// Oldest TLS version accepted: 1.2 (default) or 1.3.
    #[arg(long, env = "KEYHAVEN_TLS_MIN_VERSION", default_value = "1.2")]
    tls_min_version: keyhaven_server::tls::MinTls,
    /// PKCS#11 module of the HSM that holds premium vaults' RSA-HSM and
    /// EC-HSM keys (e.g. /usr/lib/softhsm/libsofthsm2.so).
    #[arg(long, env = "KEYHAVEN_PKCS11_MODULE", requires = "pkcs11_token_label")]
    pkcs11_module: Option<PathBuf>,
    /// Label of the HSM token.
    #[arg(long, env = "KEYHAVEN_PKCS11_TOKEN_LABEL", requires = "pkcs11_module")]
    pkcs11_token_label: Option<String>,
    /// File holding the token's user PIN (or set KEYHAVEN_PKCS11_PIN).
    #[arg(long, env = "KEYHAVEN_PKCS11_PIN_FILE")]
    pkcs11_pin_file: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let admin_result = match cli.command {
        Command::Serve(a) => return serve(*a),
        Command::Audit { cmd } => return audit(cmd),
        Command::Hsm { cmd } => return hsm(cmd),
        Command::Check { target } => return check(&target),
        Command::Cloud {
            target,
            name,
            run,
            no_discovery,
            az,
        } => return cloud::cloud(&target.bootstrap_path(), &name, run, !no_discovery, &az),
        Command::Backup { place, out } => return deployment::backup(&place, &out),
        Command::Restore { place, input } => return deployment::restore(&place, &input),
        Command::User { target, cmd } => admin::user(&target, cmd),
        Command::Group { target, cmd } => admin::group(&target, cmd),
        Command::App { target, cmd } => admin::app(&target, cmd),
        Command::Identity { target, cmd } => admin::identity(&target, cmd),
        Command::Workload { target, cmd } => admin::workload(&target, cmd),
        Command::RotateSigningKey { target } => admin::rotate_signing_key(&target),
        Command::RotateMasterKey { target } => admin::rotate_master_key(&target),
        Command::MasterKeyUsage { target } => admin::master_key_usage(&target),
        Command::Logs { target, filter } => admin::logs(&target, filter),
    };
    let value = admin_result?;
    if !value.is_null() {
        println!("{}", serde_json::to_string_pretty(&value)?);
    }
    Ok(())
}

fn serve(a: ServeArgs) -> anyhow::Result<()> {
    // ureq logs whole request URLs at debug level, query included: a
    // storage URL's SAS token must never reach the log, whatever
    // KEYHAVEN_LOG asks for.
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEYHAVEN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let filter = match "ureq=warn".parse() {
        Ok(d) => filter.add_directive(d),
        Err(_) => filter,
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    {
        {
            let (imds_listen, imds_required) = match a.imds_listen.as_deref() {
                None => (Some(SocketAddr::from(([127, 0, 0, 1], 8080))), false),
                Some("off") | Some("none") => (None, false),
                Some(addr) => (Some(addr.parse::<SocketAddr>()?), true),
            };
            let hsm = match (a.pkcs11_module, a.pkcs11_token_label) {
                (Some(module), Some(token_label)) => {
                    Some(std::sync::Arc::new(keyhaven_crypto::pkcs11::HsmConfig {
                        module,
                        token_label,
                        pin: read_pin(a.pkcs11_pin_file.as_deref(), "KEYHAVEN_PKCS11_PIN")?,
                    }))
                }
                _ => None,
            };
            let config = ServerConfig {
                hsm,
                imds_listen,
                imds_required,
                federation_config: a.federation_config,
                data_dir: a.data_dir,
                listen: a.listen,
                extra_listen: a.extra_listen,
                store: a.store,
                domain: a.domain,
                tls_cert: a.tls_cert,
                tls_key: a.tls_key,
                tls_ca: a.tls_ca,
                tls_min_version: a.tls_min_version,
                trusted_proxies: a.trusted_proxies,
                trusted_services: a.trusted_services,
                admin_listen: a.admin_listen,
                audit_fail_open: a.audit_fail_open,
                audit_http_allow: a.audit_http_allow,
                backup_storage_allow: a.backup_storage_allow,
                backup_storage_identity: a.backup_storage_identity,
                scheduler_interval: std::time::Duration::from_secs(a.scheduler_interval.max(1)),
                event_retry_base: std::time::Duration::from_millis(a.event_retry_base_ms),
                limits: keyhaven_server::throttle::Limits {
                    secrets: a.limit_secrets,
                    keys: a.limit_keys,
                },
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(keyhaven_server::run(config))?;
            Ok(())
        }
    }
}
