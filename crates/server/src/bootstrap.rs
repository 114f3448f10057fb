//! First start: one tenant, one subscription and resource group, the token
//! signing key (sealed in the store), a service principal whose secret is
//! stored only as a hash, and the vault `dev`. Later starts reuse all of it;
//! several nodes starting at once converge on the same values.

use std::sync::Arc;

use keyhaven_core::store::PrincipalRecord;
use keyhaven_core::{
    Barrier, Clock, Error, PrincipalKind, Sensitive, Store, VaultName, VaultRecord,
};
use keyhaven_identity::credentials::{hash_secret, ClientCredentials};
use keyhaven_identity::SigningKey;

/// The name of the vault created on first start.
pub const BOOTSTRAP_VAULT: &str = "dev";
/// The resource group created on first start.
pub const BOOTSTRAP_RESOURCE_GROUP: &str = "keyhaven";
const SIGNING_KEY_AAD: &[u8] = b"token-signing-key";

/// What bootstrap established.
#[derive(Debug)]
pub struct Bootstrap {
    /// Tenant id.
    pub tenant_id: String,
    /// Subscription id.
    pub subscription_id: String,
    /// Resource group name.
    pub resource_group: String,
    /// The bootstrap service principal.
    pub principal: PrincipalRecord,
    /// Its client secret, only when it was created by this start.
    pub new_secret: Option<Sensitive<String>>,
    /// The issuer's signing key.
    pub signing_key: SigningKey,
    /// A throwaway argon2 hash for constant-work failures.
    pub dummy_hash: String,
}

/// Errors of bootstrap.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// A domain or store error.
    #[error("{0}")]
    Domain(#[from] Error),
    /// The signing key could not be created or loaded.
    #[error("token signing key: {0:?}")]
    SigningKey(keyhaven_identity::TokenError),
    /// Hashing or randomness failed.
    #[error("credential: {0}")]
    Credential(#[from] keyhaven_identity::credentials::CredentialError),
    /// Stored data is inconsistent.
    #[error("bootstrap data is inconsistent: {0}")]
    Inconsistent(&'static str),
}

/// Creates or loads everything first start makes.
pub async fn ensure(
    store: &Arc<dyn Store>,
    barrier: &Arc<dyn Barrier>,
    clock: &Arc<dyn Clock>,
) -> Result<Bootstrap, BootstrapError> {
    let tenant_id =
        setting_or_init(store, "tenant_id", || uuid::Uuid::new_v4().to_string()).await?;
    let subscription_id = setting_or_init(store, "subscription_id", || {
        uuid::Uuid::new_v4().to_string()
    })
    .await?;
    let resource_group = setting_or_init(store, "resource_group", || {
        BOOTSTRAP_RESOURCE_GROUP.to_owned()
    })
    .await?;

    let signing_key = {
        if store
            .get_setting("token_signing_key")
            .await
            .map_err(Error::from)?
            .is_none()
        {
            let key = SigningKey::generate().map_err(BootstrapError::SigningKey)?;
            let der = key.to_pkcs8_der().map_err(BootstrapError::SigningKey)?;
            let sealed = barrier.seal_root(SIGNING_KEY_AAD, der.expose())?;
            store
                .put_setting_if_absent("token_signing_key", &sealed)
                .await
                .map_err(Error::from)?;
        }
        let sealed = store
            .get_setting("token_signing_key")
            .await
            .map_err(Error::from)?
            .ok_or(BootstrapError::Inconsistent("signing key vanished"))?;
        let der = barrier.open_root(SIGNING_KEY_AAD, &sealed)?;
        SigningKey::from_pkcs8_der(der.expose()).map_err(BootstrapError::SigningKey)?
    };

    let mut new_secret = None;
    let client_id = match store
        .get_setting("bootstrap_client_id")
        .await
        .map_err(Error::from)?
    {
        Some(id) => String::from_utf8(id).map_err(|_| BootstrapError::Inconsistent("client id"))?,
        None => {
            let mut creds = ClientCredentials::default();
            let secret = creds.add_password(None)?;
            let p = PrincipalRecord {
                object_id: uuid::Uuid::new_v4().to_string(),
                tenant_id: tenant_id.clone(),
                kind: PrincipalKind::ServicePrincipal.as_str().to_owned(),
                app_id: Some(uuid::Uuid::new_v4().to_string()),
                display_name: "keyhaven-bootstrap".to_owned(),
                credentials: creds.to_json(),
            };
            store.create_principal(&p).await.map_err(Error::from)?;
            let app_id = p.app_id.clone().unwrap_or_default();
            if store
                .put_setting_if_absent("bootstrap_client_id", app_id.as_bytes())
                .await
                .map_err(Error::from)?
            {
                new_secret = Some(secret);
                app_id
            } else {
                // Another node won the race; use its principal.
                let id = store
                    .get_setting("bootstrap_client_id")
                    .await
                    .map_err(Error::from)?;
                String::from_utf8(id.unwrap_or_default())
                    .map_err(|_| BootstrapError::Inconsistent("client id"))?
            }
        }
    };
    let principal = store
        .principal_by_app_id(&client_id)
        .await
        .map_err(Error::from)?
        .ok_or(BootstrapError::Inconsistent("bootstrap principal missing"))?;

    let dev: VaultName = BOOTSTRAP_VAULT.parse()?;
    if store.get_vault(&dev).await.map_err(Error::from)?.is_none() {
        let id = uuid::Uuid::new_v4().to_string();
        let vault = VaultRecord {
            wrapped_key: barrier.new_data_key(&id)?,
            id,
            name: dev,
            tenant_id: tenant_id.clone(),
            subscription_id: subscription_id.clone(),
            resource_group: resource_group.clone(),
            sku: "standard".to_owned(),
            retention_days: keyhaven_core::vault::DEFAULT_RETENTION_DAYS,
            purge_protection: false,
            created: clock.now(),
        };
        // Losing a race to another node is fine: its vault is the vault.
        let _ = store.create_vault(&vault).await;
    }

    let mut noise = [0u8; 24];
    openssl::rand::rand_bytes(&mut noise)
        .map_err(|_| BootstrapError::Inconsistent("random generator failed"))?;
    let dummy_hash = hash_secret(&base64_of(&noise))?;

    Ok(Bootstrap {
        tenant_id,
        subscription_id,
        resource_group,
        principal,
        new_secret,
        signing_key,
        dummy_hash,
    })
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

async fn setting_or_init(
    store: &Arc<dyn Store>,
    key: &str,
    init: impl FnOnce() -> String,
) -> Result<String, BootstrapError> {
    if let Some(v) = store.get_setting(key).await.map_err(Error::from)? {
        return String::from_utf8(v)
            .map_err(|_| BootstrapError::Inconsistent("setting is not text"));
    }
    store
        .put_setting_if_absent(key, init().as_bytes())
        .await
        .map_err(Error::from)?;
    let v = store
        .get_setting(key)
        .await
        .map_err(Error::from)?
        .ok_or(BootstrapError::Inconsistent("setting vanished"))?;
    String::from_utf8(v).map_err(|_| BootstrapError::Inconsistent("setting is not text"))
}
