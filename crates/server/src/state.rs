//! Shared state handed to every handler: the domain service, the token
//! service, the authorizer and the public endpoints. No globals.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use keyhaven_core::{Barrier, Clock, Error, Storage, VaultName, VaultRecord, VaultService};
use keyhaven_identity::authz::AUTHZ_GENERATION;
use keyhaven_identity::device::DeviceCodes;
use keyhaven_identity::federation::TrustedIssuers;
use keyhaven_identity::lockout::{Lockout, SourceLimiter};

use keyhaven_identity::{Directory, Evaluator, TokenService};

use crate::config::Endpoints;

/// Sign-in requests one source address may make at once, and per second
/// sustained: far above what a person or a CI job's credentials need, far
/// below what hashing can serve for everyone when one source floods.
pub const SIGN_IN_BURST: u32 = 300;
/// See [`SIGN_IN_BURST`].
pub const SIGN_IN_PER_SEC: u32 = 20;

/// Cheaply clonable application state.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// The parts of the state.
pub struct Inner {
    /// Domain service over the ports.
    pub service: VaultService,
    /// Persistence (objects go through `service`, principals through `directory`).
    pub store: Arc<dyn Storage>,
    /// The tenant's directory.
    pub directory: Directory,
    /// Failed sign-in counts.
    pub lockout: Lockout,
    /// Requests per source address to the endpoints that check a
    /// credential or hand out a code (token, device code, sign-in forms).
    pub sign_in_limiter: SourceLimiter,
    /// Pending device authorizations.
    pub device_codes: DeviceCodes,
    /// Outstanding authorization codes (browser sign-in).
    pub auth_codes: keyhaven_identity::authcode::AuthCodes,
    /// The portal's sessions on this node.
    pub portal: crate::http::portal::session::Sessions,
    /// Conditional Access, authenticator secrets and second-factor prompts.
    pub sign_in_conditions: crate::sign_in::SignInConditions,
    /// Request ids (`x-ms-request-id`).
    pub request_ids: RequestIds,
    /// The crypto barrier (for deployment-level sealed data).
    pub barrier: Arc<dyn Barrier>,
    /// The deployment's subscription.
    pub subscription_id: String,
    /// Token issuer and validator of the tenant.
    pub tokens: TokenService,
    /// Authorization decisions (RBAC and access policies).
    pub authz: Arc<Evaluator>,
    /// Time source.
    pub clock: Arc<dyn Clock>,
    /// Public URLs.
    pub endpoints: Endpoints,
    /// An argon2 hash of a random string: unknown clients cost the same work.
    pub dummy_hash: String,
    vaults: RwLock<HashMap<VaultName, CachedVault>>,
    network: GenerationCached<NetworkSnapshot>,
    diagnostics: GenerationCached<SinkMap>,
    policies: Arc<PolicyCache>,
    /// Reverse proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<keyhaven_core::network::Ipv4Net>,
    /// Application ids of trusted services (`bypass: AzureServices`).
    pub trusted_services: Vec<String>,
    /// The audit log.
    pub audit: Option<Arc<crate::audit::AuditLog>>,
    /// Service limits per vault.
    pub throttle: crate::throttle::Throttle,
    /// Request metrics.
    pub metrics: crate::metrics::Metrics,
    /// Refuse requests while the audit log cannot be written.
    pub audit_fail_closed: bool,
    /// Where the HTTP audit destination may send.
    pub audit_http_allow: Arc<crate::audit_ship::AllowList>,
    /// Where managed HSM pools' full backups may go.
    pub backup_storage_allow: Arc<crate::audit_ship::AllowList>,
    /// What a pool's managed identity may reach in storage.
    pub backup_storage_identity: Arc<crate::blob::StorageIdentity>,
    /// The HTTP audit destination's shipper (started on first use).
    pub shipper: std::sync::OnceLock<crate::audit_ship::Shipper>,
    /// The queue into workspaces' logs (started with the first record).
    pub log_ingest: std::sync::OnceLock<crate::log_ingest::Ingester>,
    /// Where committed change events are announced (`None` in unit tests).
    events: Option<Arc<dyn keyhaven_core::events::EventSink>>,
}

/// A value derived from the store, kept until the authorization generation
/// (bumped by every change of vault, network or diagnostic settings, on any
/// node) moves on.
pub struct GenerationCached<T> {
    slot: RwLock<Option<(Arc<T>, Vec<u8>)>>,
}

impl<T> Default for GenerationCached<T> {
    fn default() -> Self {
        Self {
            slot: RwLock::new(None),
        }
    }
}

impl<T> GenerationCached<T> {
    /// The value cached at `generation`, if any.
    fn get(&self, generation: &[u8]) -> Option<Arc<T>> {
        let slot = self.slot.read().ok()?;
        let (value, seen) = slot.as_ref()?;
        (seen.as_slice() == generation).then(|| Arc::clone(value))
    }

    /// Caches `value` as of `generation`.
    fn put(&self, value: T, generation: Vec<u8>) -> Arc<T> {
        let value = Arc::new(value);
        if let Ok(mut slot) = self.slot.write() {
            *slot = Some((Arc::clone(&value), generation));
        }
        value
    }
}

/// Audit destinations by vault (lower-case ARM id).
pub type SinkMap = HashMap<String, AuditSinks>;

/// Where a vault's audit records go besides the chained file.
#[derive(Debug, Default, Clone)]
pub struct AuditSinks {
    /// Keyhaven's log store.
    pub store: bool,
    /// Standard output.
    pub stdout: bool,
    /// HTTP endpoints.
    pub http: Vec<String>,
    /// Log Analytics workspaces (each once).
    pub workspaces: Vec<crate::log_ingest::WorkspaceSink>,
}

/// The virtual networks and private endpoints, as the data plane's network
/// decision reads them.
#[derive(Debug, Default)]
pub struct NetworkSnapshot {
    subnets: HashMap<String, keyhaven_core::network::Subnet>,
    endpoints: Vec<keyhaven_core::network::PrivateEndpoint>,
}

impl keyhaven_core::network::NetworkView for NetworkSnapshot {
    fn subnet(&self, id: &str) -> Option<keyhaven_core::network::Subnet> {
        self.subnets.get(&id.to_ascii_lowercase()).cloned()
    }

    fn private_endpoints(&self) -> &[keyhaven_core::network::PrivateEndpoint] {
        &self.endpoints
    }
}

/// The Azure Policy assignments in force, compiled, kept until the
/// authorization generation moves (shared by the state and the service's
/// data-plane gate).
pub struct PolicyCache {
    store: Arc<dyn Storage>,
    subscription_id: String,
    cached: GenerationCached<crate::policy::Compiled>,
}

impl PolicyCache {
    /// The policies in force.
    pub async fn get(&self) -> Result<Arc<crate::policy::Compiled>, Error> {
        let generation = self
            .store
            .get_setting(AUTHZ_GENERATION)
            .await?
            .unwrap_or_default();
        if let Some(hit) = self.cached.get(&generation) {
            return Ok(hit);
        }
        let compiled = crate::policy::compile(&*self.store, &self.subscription_id).await?;
        Ok(self.cached.put(compiled, generation))
    }
}

/// A vault record and the authorization generation it was read at.
type CachedVault = (Arc<VaultRecord>, Vec<u8>);

/// What the state is assembled from.
pub struct Parts {
    /// Persistence.
    pub store: Arc<dyn Storage>,
    /// The crypto barrier.
    pub barrier: Arc<dyn Barrier>,
    /// Time source.
    pub clock: Arc<dyn Clock>,
    /// Token issuer and validator.
    pub tokens: TokenService,
    /// Public URLs.
    pub endpoints: Endpoints,
    /// An argon2 hash of a random string.
    pub dummy_hash: String,
    /// The deployment's subscription.
    pub subscription_id: String,
    /// External issuers trusted for workload identity federation.
    pub trusted_issuers: TrustedIssuers,
    /// Reverse proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<keyhaven_core::network::Ipv4Net>,
    /// Application ids of trusted services (`bypass: AzureServices`).
    pub trusted_services: Vec<String>,
    /// The audit log (`None`: not recorded, as in unit tests).
    pub audit: Option<Arc<crate::audit::AuditLog>>,
    /// Service limits per vault.
    pub limits: crate::throttle::Limits,
    /// Where change events go (`None`: nowhere, as in unit tests).
    pub events: Option<Arc<dyn keyhaven_core::events::EventSink>>,
    /// Refuse requests while the audit log cannot be written.
    pub audit_fail_closed: bool,
    /// Where the HTTP audit destination may send.
    pub audit_http_allow: crate::audit_ship::AllowList,
    /// Where managed HSM pools' full backups may go.
    pub backup_storage_allow: crate::audit_ship::AllowList,
    /// What a pool's managed identity may reach in storage.
    pub backup_storage_identity: crate::blob::StorageIdentity,
    /// The HSM for `-HSM` keys (`None`: premium vaults cannot hold them).
    pub hsm: Option<Arc<keyhaven_crypto::pkcs11::Pkcs11Keys>>,
}

impl AppState {
    /// Where committed change events are announced.
    pub fn event_sink(&self) -> Option<&Arc<dyn keyhaven_core::events::EventSink>> {
        self.0.events.as_ref()
    }

    /// Assembles the state.
    pub fn new(p: Parts) -> Self {
        let objects: Arc<dyn keyhaven_core::Store> = p.store.clone();
        let software = Arc::new(keyhaven_crypto::SoftwareKeys::new());
        let keys: Arc<dyn keyhaven_core::key::KeyBackend> = Arc::new(
            keyhaven_crypto::pkcs11::KeyRouter::new(software.clone(), p.hsm.clone()),
        );
        let certs: Arc<dyn keyhaven_core::certificate::CertificateBackend> = software;
        let mut service = VaultService::new(
            objects,
            Arc::clone(&p.barrier),
            Arc::clone(&p.clock),
            keys,
            certs,
        );
        if let Some(sink) = p.events.clone() {
            service = service.with_events(sink);
        }
        let policies = Arc::new(PolicyCache {
            store: Arc::clone(&p.store),
            subscription_id: p.subscription_id.clone(),
            cached: GenerationCached::default(),
        });
        service = service.with_gate(Arc::new(crate::policy::Gate {
            cache: Arc::clone(&policies),
            states: crate::policy::StateQueue::new(Arc::clone(&p.store), p.subscription_id.clone()),
            clock: Arc::clone(&p.clock),
        }));
        let directory = Directory::new(
            Arc::clone(&p.store),
            Arc::clone(&p.clock),
            p.tokens.tenant_id(),
            p.dummy_hash.clone(),
            Arc::new(p.trusted_issuers),
        );
        let authz = Arc::new(Evaluator::new(
            Arc::clone(&p.store),
            directory.clone(),
            &p.subscription_id,
        ));
        Self(Arc::new(Inner {
            service,
            directory,
            lockout: Lockout::new(),
            sign_in_limiter: SourceLimiter::new(SIGN_IN_BURST, SIGN_IN_PER_SEC),
            device_codes: DeviceCodes::new(),
            auth_codes: keyhaven_identity::authcode::AuthCodes::new(),
            portal: Default::default(),
            sign_in_conditions: Default::default(),
            request_ids: RequestIds::new(),
            barrier: p.barrier,
            subscription_id: p.subscription_id,
            store: p.store,
            tokens: p.tokens,
            authz,
            clock: p.clock,
            endpoints: p.endpoints,
            dummy_hash: p.dummy_hash,
            vaults: RwLock::new(HashMap::new()),
            network: GenerationCached::default(),
            diagnostics: GenerationCached::default(),
            policies,
            trusted_proxies: p.trusted_proxies,
            trusted_services: p.trusted_services,
            audit: p.audit,
            throttle: crate::throttle::Throttle::new(p.limits),
            metrics: crate::metrics::Metrics::default(),
            audit_fail_closed: p.audit_fail_closed,
            audit_http_allow: Arc::new(p.audit_http_allow),
            backup_storage_allow: Arc::new(p.backup_storage_allow),
            backup_storage_identity: Arc::new(p.backup_storage_identity),
            shipper: std::sync::OnceLock::new(),
            log_ingest: std::sync::OnceLock::new(),
            events: p.events,
        }))
    }

    /// Audit destinations per vault (lower-case ARM id), from the diagnostic
    /// settings, cached until the authorization generation changes.
    pub async fn audit_sinks(&self) -> Result<Arc<SinkMap>, Error> {
        let generation = self.generation().await?;
        if let Some(hit) = self.diagnostics.get(&generation) {
            return Ok(hit);
        }
        let mut map: HashMap<String, AuditSinks> = HashMap::new();
        for r in self
            .store
            .list_resources(
                crate::http::arm::diagnostics::SETTING_TYPE,
                &self.subscription_id,
            )
            .await?
        {
            if let Ok(s) =
                serde_json::from_str::<crate::http::arm::diagnostics::Setting>(&r.properties)
            {
                let e = map.entry(s.vault_id.to_ascii_lowercase()).or_default();
                e.store |= s.to_store();
                e.stdout |= s.audit && s.stdout;
                if let Some(url) = s.http_endpoint.clone().filter(|_| s.audit) {
                    e.http.push(url);
                }
                if let (Some(ws), Some(granted)) = (
                    s.workspace_id.as_deref(),
                    s.workspace_customer_id.as_deref(),
                ) {
                    // The workspace the setting was allowed to name, while
                    // it is still that one (not deleted and made again).
                    let customer_id = self
                        .store
                        .get_resource(ws)
                        .await?
                        .and_then(|r| crate::http::arm::workspaces::customer_id_in(&r))
                        .filter(|c| s.audit && c.eq_ignore_ascii_case(granted));
                    if let Some(customer_id) = customer_id {
                        let sink = crate::log_ingest::WorkspaceSink {
                            customer_id,
                            table: if s.dedicated {
                                "AZKVAuditLogs"
                            } else {
                                "AzureDiagnostics"
                            },
                        };
                        if !e.workspaces.contains(&sink) {
                            e.workspaces.push(sink);
                        }
                    }
                }
            }
        }
        Ok(self.diagnostics.put(map, generation))
    }

    /// Subnets and private endpoints, cached until the authorization
    /// generation changes (network resources bump it when they change).
    pub async fn network(&self) -> Result<Arc<NetworkSnapshot>, Error> {
        use keyhaven_core::network::{
            PrivateEndpoint, VirtualNetwork, PRIVATE_ENDPOINT_TYPE, VNET_TYPE,
        };
        let generation = self.generation().await?;
        if let Some(hit) = self.network.get(&generation) {
            return Ok(hit);
        }
        let mut snap = NetworkSnapshot::default();
        for r in self
            .store
            .list_resources(VNET_TYPE, &self.subscription_id)
            .await?
        {
            if let Ok(vnet) = serde_json::from_str::<VirtualNetwork>(&r.properties) {
                for sub in vnet.subnets {
                    snap.subnets.insert(
                        format!("{}/subnets/{}", r.id, sub.name).to_ascii_lowercase(),
                        sub,
                    );
                }
            }
        }
        for r in self
            .store
            .list_resources(PRIVATE_ENDPOINT_TYPE, &self.subscription_id)
            .await?
        {
            if let Ok(mut pe) = serde_json::from_str::<PrivateEndpoint>(&r.properties) {
                pe.id = r.id.clone();
                snap.endpoints.push(pe);
            }
        }
        Ok(self.network.put(snap, generation))
    }

    /// The Azure Policy assignments in force, compiled, cached until the
    /// authorization generation changes (every definition, initiative,
    /// assignment or exemption write moves it, on any node).
    pub async fn policies(&self) -> Result<Arc<crate::policy::Compiled>, Error> {
        self.policies.get().await
    }

    /// The authorization generation (which every cached view is checked
    /// against).
    async fn generation(&self) -> Result<Vec<u8>, Error> {
        Ok(self
            .store
            .get_setting(AUTHZ_GENERATION)
            .await?
            .unwrap_or_default())
    }

    /// The vault named `name`, cached until the authorization generation
    /// changes (every change of vault settings bumps it, on any node).
    pub async fn vault(&self, name: &VaultName) -> Result<Option<Arc<VaultRecord>>, Error> {
        let generation = self.generation().await?;
        if let Ok(cache) = self.vaults.read() {
            if let Some((v, seen)) = cache.get(name) {
                if *seen == generation {
                    return Ok(Some(Arc::clone(v)));
                }
            }
        }
        // A soft-deleted vault is gone for every caller until it is recovered.
        let found = self
            .store
            .get_vault(name)
            .await?
            .filter(|v| v.properties.deleted.is_none())
            .map(Arc::new);
        if let Ok(mut cache) = self.vaults.write() {
            match &found {
                Some(v) => {
                    cache.insert(name.clone(), (Arc::clone(v), generation));
                }
                None => {
                    cache.remove(name);
                }
            }
        }
        Ok(found)
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// GUID-shaped request ids: a random per-process prefix and a counter, so the
/// hot path makes no system call for randomness.
pub struct RequestIds {
    prefix: u64,
    counter: std::sync::atomic::AtomicU64,
}

impl RequestIds {
    fn new() -> Self {
        let mut b = [0u8; 8];
        let _ = openssl::rand::rand_bytes(&mut b);
        Self {
            prefix: u64::from_le_bytes(b),
            counter: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The next id.
    pub fn next(&self) -> String {
        let n = self
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = self.prefix;
        format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            p >> 32,
            (p >> 16) & 0xffff,
            p & 0xffff,
            (n >> 48) & 0xffff,
            n & 0xffff_ffff_ffff
        )
    }
}
