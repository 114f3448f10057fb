//! Shared state handed to every handler: the domain service, the token
//! service, the authorizer and the public endpoints. No globals.

use std::sync::Arc;

use keyhaven_core::{Authorizer, Barrier, Clock, Store, VaultService};
use keyhaven_identity::TokenService;

use crate::config::Endpoints;

/// Cheaply clonable application state.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// The parts of the state.
pub struct Inner {
    /// Domain service over the ports.
    pub service: VaultService,
    /// Persistence (for identity lookups; objects go through `service`).
    pub store: Arc<dyn Store>,
    /// Token issuer and validator of the tenant.
    pub tokens: TokenService,
    /// Authorization decisions.
    pub authorizer: Arc<dyn Authorizer>,
    /// Time source.
    pub clock: Arc<dyn Clock>,
    /// Public URLs.
    pub endpoints: Endpoints,
    /// An argon2 hash of a random string: unknown clients cost the same work.
    pub dummy_hash: String,
}

impl AppState {
    /// Assembles the state.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<dyn Store>,
        barrier: Arc<dyn Barrier>,
        clock: Arc<dyn Clock>,
        tokens: TokenService,
        authorizer: Arc<dyn Authorizer>,
        endpoints: Endpoints,
        dummy_hash: String,
    ) -> Self {
        let service = VaultService::new(Arc::clone(&store), barrier, Arc::clone(&clock));
        Self(Arc::new(Inner {
            service,
            store,
            tokens,
            authorizer,
            clock,
            endpoints,
            dummy_hash,
        }))
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}
