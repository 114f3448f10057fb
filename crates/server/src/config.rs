//! Server configuration and the public endpoints derived from it.

use std::net::SocketAddr;
use std::path::PathBuf;

/// What `keyhaven serve` was asked to do.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where the master key, TLS material, SQLite file and bootstrap.json live.
    pub data_dir: PathBuf,
    /// Listen address; its port is the one in every public URL.
    pub listen: SocketAddr,
    /// Further addresses serving the same endpoints (e.g. port 443 for
    /// clients that drop the port, such as msal's user-realm lookup).
    pub extra_listen: Vec<SocketAddr>,
    /// Workload identity federation: trusted external issuers (JSON file).
    pub federation_config: Option<PathBuf>,
    /// The managed-identity (metadata) endpoint's plain-HTTP address, if any.
    pub imds_listen: Option<SocketAddr>,
    /// Whether failing to bind `imds_listen` stops the server (an address the
    /// user chose) or only logs a warning (the default address).
    pub imds_required: bool,
    /// `None`/`sqlite` = SQLite in the data dir; `postgres://…` = PostgreSQL.
    pub store: Option<String>,
    /// Base DNS domain: vaults are `{name}.vault.{domain}`.
    pub domain: String,
    /// User-supplied certificate chain (PEM) instead of the generated one.
    pub tls_cert: Option<PathBuf>,
    /// User-supplied private key (PEM) for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// With `tls_cert`: the CA clients should trust (for bootstrap.json).
    pub tls_ca: Option<PathBuf>,
    /// The oldest TLS version accepted.
    pub tls_min_version: crate::tls::MinTls,
    /// Reverse proxies (IPv4 addresses or CIDR ranges) whose
    /// `X-Forwarded-For` header names the client for network rules.
    pub trusted_proxies: Vec<String>,
    /// Application ids of service principals treated as trusted services:
    /// vaults with `bypass: AzureServices` admit them past their firewall.
    pub trusted_services: Vec<String>,
    /// Service limits per vault.
    pub limits: crate::throttle::Limits,
    /// Plain-HTTP admin listener (`/metrics`, `/healthz`, `/readyz`), if any.
    pub admin_listen: Option<SocketAddr>,
    /// How often the scheduler runs (purges, rotations, renewals, events).
    pub scheduler_interval: std::time::Duration,
    /// First backoff of a failed event delivery (doubled per retry).
    pub event_retry_base: std::time::Duration,
    /// Keep serving when the audit log cannot be written (default: refuse).
    pub audit_fail_open: bool,
    /// Hosts, addresses and CIDRs the HTTP audit destination may send to
    /// (none: the destination is off).
    pub audit_http_allow: Vec<String>,
    /// Hosts, addresses and CIDRs managed HSM backups may go to (none: full
    /// backups are refused).
    pub backup_storage_allow: Vec<String>,
    /// File of the grants a pool's managed identity holds on storage.
    pub backup_storage_identity: Option<std::path::PathBuf>,
    /// The HSM holding premium vaults' `-HSM` keys, if any.
    pub hsm: Option<std::sync::Arc<keyhaven_crypto::pkcs11::HsmConfig>>,
}

impl ServerConfig {
    /// The public URLs clients use.
    pub fn endpoints(&self) -> Endpoints {
        Endpoints::new(&self.domain, self.listen.port())
    }
}

/// Public URLs of every plane, with the port as clients see it.
#[derive(Debug, Clone)]
pub struct Endpoints {
    domain: String,
    port_suffix: String,
}

impl Endpoints {
    /// Endpoints for `domain` on `port` (443 is left implicit).
    pub fn new(domain: &str, port: u16) -> Self {
        Self {
            domain: domain.to_ascii_lowercase(),
            port_suffix: if port == 443 {
                String::new()
            } else {
                format!(":{port}")
            },
        }
    }

    /// Base domain.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// `vault.{domain}` — the parent of every vault host.
    pub fn vault_parent(&self) -> String {
        format!("vault.{}", self.domain)
    }

    /// `vault.{domain}[:port]`
    pub fn vault_host_suffix(&self) -> String {
        format!("vault.{}{}", self.domain, self.port_suffix)
    }

    /// `https://{vault}.vault.{domain}[:port]`
    pub fn vault_url(&self, vault: &str) -> String {
        format!("https://{vault}.{}", self.vault_host_suffix())
    }

    /// The data plane's token audience and challenge resource:
    /// `https://vault.{domain}[:port]` (the SDK requires the vault host to be
    /// a subdomain of it, ports included).
    pub fn vault_resource(&self) -> String {
        format!("https://{}", self.vault_host_suffix())
    }

    /// `managedhsm.{domain}` — the parent of every Managed HSM pool's host.
    pub fn hsm_parent(&self) -> String {
        format!("managedhsm.{}", self.domain)
    }

    /// `managedhsm.{domain}[:port]`
    pub fn hsm_host_suffix(&self) -> String {
        format!("managedhsm.{}{}", self.domain, self.port_suffix)
    }

    /// `https://{pool}.managedhsm.{domain}[:port]`
    pub fn hsm_url(&self, pool: &str) -> String {
        format!("https://{pool}.{}", self.hsm_host_suffix())
    }

    /// A pool data plane's token audience and challenge resource:
    /// `https://managedhsm.{domain}[:port]` (Azure's is
    /// `https://managedhsm.azure.net`).
    pub fn hsm_resource(&self) -> String {
        format!("https://{}", self.hsm_host_suffix())
    }

    /// The data-plane URL of a vault or pool.
    pub fn container_url(&self, v: &keyhaven_core::VaultRecord) -> String {
        if v.is_managed_hsm() {
            self.hsm_url(v.name.as_str())
        } else {
            self.vault_url(v.name.as_str())
        }
    }

    /// `https://login.{domain}[:port]`
    pub fn authority_host(&self) -> String {
        format!("https://login.{}{}", self.domain, self.port_suffix)
    }

    /// `https://management.{domain}[:port]`
    pub fn management_url(&self) -> String {
        format!("https://management.{}{}", self.domain, self.port_suffix)
    }

    /// `https://loganalytics.{domain}[:port]`: the Log Analytics query API
    /// (Azure's `api.loganalytics.io`), and its tokens' audience.
    pub fn logs_url(&self) -> String {
        format!("https://loganalytics.{}{}", self.domain, self.port_suffix)
    }

    /// `https://graph.{domain}[:port]`
    pub fn graph_url(&self) -> String {
        format!("https://graph.{}{}", self.domain, self.port_suffix)
    }

    /// `https://portal.{domain}[:port]` (the web console)
    pub fn portal_url(&self) -> String {
        format!("https://portal.{}{}", self.domain, self.port_suffix)
    }

    /// Where the sign-in of the portal returns.
    pub fn portal_callback(&self) -> String {
        format!("{}/signin/callback", self.portal_url())
    }
}

/// The ARM location of resources made by the bootstrap (ARM requires one;
/// Keyhaven keeps whatever location callers give).
pub const LOCATION: &str = "local";
