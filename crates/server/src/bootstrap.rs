//! First start: one tenant, one subscription and resource group, the token
//! signing key (sealed in the store), a service principal whose secret is
//! stored only as a hash, and the vault `dev`. Later starts reuse all of it;
//! several nodes starting at once converge on the same values.

use std::sync::Arc;

use keyhaven_core::{ApplicationRecord, PrincipalRecord, Storage};
use keyhaven_core::{Barrier, Clock, Error, PrincipalKind, Sensitive, VaultName, VaultRecord};
use keyhaven_identity::credentials::{hash_secret, ClientCredentials};
use keyhaven_identity::directory::{
    ApplicationAttrs, PrincipalAttrs, AZURE_CLI_APP_ID, GLOBAL_ADMINISTRATOR, PORTAL_APP_ID,
};
use keyhaven_identity::rbac;
use keyhaven_identity::roles::seed_assignment;
use keyhaven_identity::SigningKey;

/// The name of the vault created on first start.
pub const BOOTSTRAP_VAULT: &str = "dev";
/// The resource group created on first start.
pub const BOOTSTRAP_RESOURCE_GROUP: &str = "keyhaven";

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
    /// The issuer's signing keys, oldest first (the last one signs).
    pub signing_keys: Vec<SigningKey>,
    /// A throwaway argon2 hash for constant-work failures.
    pub dummy_hash: String,
}

/// Errors of bootstrap.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// A domain or store error.
    #[error("{0}")]
    Domain(#[from] Error),
    /// The signing keys could not be created or loaded.
    #[error("token signing keys: {0}")]
    Signing(crate::signing::SigningError),
    /// Hashing or randomness failed.
    #[error("credential: {0}")]
    Credential(#[from] keyhaven_identity::credentials::CredentialError),
    /// Stored data is inconsistent.
    #[error("bootstrap data is inconsistent: {0}")]
    Inconsistent(&'static str),
    /// This node does not hold the master key the store names.
    #[error("master key: {0}")]
    MasterKey(#[from] crate::masterkey::MasterKeyError),
}

/// Creates or loads everything first start makes.
pub async fn ensure(
    store: &Arc<dyn Storage>,
    barrier: &Arc<dyn Barrier>,
    clock: &Arc<dyn Clock>,
) -> Result<Bootstrap, BootstrapError> {
    crate::masterkey::reconcile(store, barrier).await?;
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

    crate::http::arm::groups::ensure_group(store, &subscription_id, &resource_group, clock.now())
        .await
        .map_err(Error::from)?;

    let signing_keys = crate::signing::load_or_create(store, barrier)
        .await
        .map_err(BootstrapError::Signing)?;

    let now = clock.now();
    let (client_id, new_secret) = bootstrap_client(store, &tenant_id, now).await?;
    let mut principal = store
        .principal_by_app_id(&client_id)
        .await
        .map_err(Error::from)?
        .ok_or(BootstrapError::Inconsistent("bootstrap principal missing"))?;
    upgrade_bootstrap_principal(store, &mut principal).await?;
    ensure_public_client(store, &tenant_id, now).await?;

    // The bootstrap principal owns the subscription and administers its vaults.
    let subscription_scope = format!("/subscriptions/{subscription_id}");
    for role in [rbac::OWNER, rbac::KEY_VAULT_ADMINISTRATOR] {
        seed_assignment(
            store,
            &subscription_id,
            &subscription_scope,
            role,
            &principal.object_id,
            now,
        )
        .await?;
    }

    ensure_dev_vault(
        store,
        barrier,
        &tenant_id,
        &subscription_id,
        &resource_group,
        now,
    )
    .await?;

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
        signing_keys,
        dummy_hash,
    })
}

/// The bootstrap application and its service principal: its client id, and
/// its client secret if this start created it (the store keeps only a hash).
async fn bootstrap_client(
    store: &Arc<dyn Storage>,
    tenant_id: &str,
    now: i64,
) -> Result<(String, Option<Sensitive<String>>), BootstrapError> {
    let mut new_secret = None;
    let client_id = match store
        .get_setting("bootstrap_client_id")
        .await
        .map_err(Error::from)?
    {
        Some(id) => String::from_utf8(id).map_err(|_| BootstrapError::Inconsistent("client id"))?,
        None => {
            let app_id = uuid::Uuid::new_v4().to_string();
            let mut creds = ClientCredentials::default();
            let (_, secret) = creds.add_password(Some("bootstrap".into()), now, None)?;
            store
                .create_application(&ApplicationRecord {
                    object_id: uuid::Uuid::new_v4().to_string(),
                    tenant_id: tenant_id.to_owned(),
                    app_id: app_id.clone(),
                    display_name: "keyhaven-bootstrap".to_owned(),
                    credentials: creds.to_json(),
                    attrs: "{}".into(),
                    created: now,
                })
                .await
                .map_err(Error::from)?;
            store
                .create_principal(&service_principal(
                    tenant_id,
                    &app_id,
                    "keyhaven-bootstrap",
                    now,
                ))
                .await
                .map_err(Error::from)?;
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
    Ok((client_id, new_secret))
}

/// The vault `dev`, created once (RBAC mode) in the bootstrap resource group.
async fn ensure_dev_vault(
    store: &Arc<dyn Storage>,
    barrier: &Arc<dyn Barrier>,
    tenant_id: &str,
    subscription_id: &str,
    resource_group: &str,
    now: i64,
) -> Result<(), BootstrapError> {
    let dev: VaultName = BOOTSTRAP_VAULT.parse()?;
    if store.get_vault(&dev).await.map_err(Error::from)?.is_none() {
        let id = uuid::Uuid::new_v4().to_string();
        let vault = VaultRecord {
            wrapped_key: barrier.new_data_key(&id)?,
            id,
            name: dev,
            tenant_id: tenant_id.to_owned(),
            subscription_id: subscription_id.to_owned(),
            resource_group: resource_group.to_owned(),
            sku: "standard".to_owned(),
            retention_days: keyhaven_core::vault::DEFAULT_RETENTION_DAYS,
            purge_protection: false,
            created: now,
            properties: keyhaven_core::vault::VaultProperties {
                rbac_authorization: true,
                location: Some(crate::config::LOCATION.to_owned()),
                ..Default::default()
            },
            rev: 0,
        };
        // Losing a race to another node is fine: its vault is the vault.
        let _ = store.create_vault(&vault).await;
    }
    Ok(())
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn service_principal(tenant_id: &str, app_id: &str, name: &str, now: i64) -> PrincipalRecord {
    PrincipalRecord {
        object_id: uuid::Uuid::new_v4().to_string(),
        tenant_id: tenant_id.to_owned(),
        kind: PrincipalKind::ServicePrincipal.as_str().to_owned(),
        app_id: Some(app_id.to_owned()),
        upn: None,
        display_name: name.to_owned(),
        enabled: true,
        credentials: "{}".into(),
        attrs: serde_json::json!({
            "servicePrincipalType": "Application",
            "directoryRoles": [GLOBAL_ADMINISTRATOR],
        })
        .to_string(),
        created: now,
    }
}

/// Deployments bootstrapped before applications existed kept the client
/// secret on the service principal; move it to an application, and make sure
/// the bootstrap principal is a Global Administrator.
async fn upgrade_bootstrap_principal(
    store: &Arc<dyn Storage>,
    sp: &mut PrincipalRecord,
) -> Result<(), BootstrapError> {
    let app_id = sp.app_id.clone().ok_or(BootstrapError::Inconsistent(
        "bootstrap principal has no appId",
    ))?;
    let old = sp.clone();
    if store
        .application_by_app_id(&app_id)
        .await
        .map_err(Error::from)?
        .is_none()
    {
        store
            .create_application(&ApplicationRecord {
                object_id: uuid::Uuid::new_v4().to_string(),
                tenant_id: sp.tenant_id.clone(),
                app_id,
                display_name: sp.display_name.clone(),
                credentials: sp.credentials.clone(),
                attrs: "{}".into(),
                created: sp.created,
            })
            .await
            .map_err(Error::from)?;
        sp.credentials = "{}".into();
    }
    let mut attrs = PrincipalAttrs::of(sp);
    if !attrs
        .directory_roles
        .iter()
        .any(|r| r == GLOBAL_ADMINISTRATOR)
    {
        attrs.directory_roles.push(GLOBAL_ADMINISTRATOR.to_owned());
        attrs
            .service_principal_type
            .get_or_insert_with(|| "Application".into());
        sp.attrs = serde_json::to_string(&attrs).unwrap_or_default();
    }
    // Written only when something changed, and only over what was read: a
    // node starting while an administrator changes the principal never
    // puts back its stale copy (a lost race is read again at next start).
    if *sp != old
        && !store
            .update_principal_if(sp, &old)
            .await
            .map_err(Error::from)?
    {
        tracing::warn!("the bootstrap principal changed while this node started; its upgrade waits for the next start");
    }
    Ok(())
}

/// Registers the well-known public clients users sign in through: the Azure
/// CLI's (`az login -u … -p …`, `UsernamePasswordCredential`) and the
/// portal's.
async fn ensure_public_client(
    store: &Arc<dyn Storage>,
    tenant_id: &str,
    now: i64,
) -> Result<(), BootstrapError> {
    for (app_id, name) in [
        (AZURE_CLI_APP_ID, "Microsoft Azure CLI"),
        (PORTAL_APP_ID, "Keyhaven Portal"),
    ] {
        if store
            .application_by_app_id(app_id)
            .await
            .map_err(Error::from)?
            .is_some()
        {
            continue;
        }
        let app = ApplicationRecord {
            object_id: uuid::Uuid::new_v4().to_string(),
            tenant_id: tenant_id.to_owned(),
            app_id: app_id.to_owned(),
            display_name: name.to_owned(),
            credentials: ClientCredentials::default().to_json(),
            attrs: serde_json::to_string(&ApplicationAttrs {
                public_client: true,
            })
            .unwrap_or_default(),
            created: now,
        };
        match store.create_application(&app).await {
            Ok(()) | Err(keyhaven_core::StoreError::Duplicate(_)) => {}
            Err(e) => return Err(BootstrapError::Domain(e.into())),
        }
    }
    Ok(())
}

async fn setting_or_init(
    store: &Arc<dyn Storage>,
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
