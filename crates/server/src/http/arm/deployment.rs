//! Deployment-wide actions under `/providers/Keyhaven.*`: rotating the token
//! signing key and the master key, listing master-key usage, and the
//! integrity check. Directory admins only.

use std::sync::Arc;

use axum::extract::State;
use axum::Extension;
use http::StatusCode;
use keyhaven_wire::arm::{MasterKeyUsage, MasterKeyUse, RotatedKey, RotatedMasterKey};

use crate::http::response::json;
use crate::state::AppState;
use axum::{routing, Router};

use super::common::{fail, ArmFailure, ArmResult, C};

/// `POST /providers/Keyhaven.Identity/rotateSigningKey`: a new token
/// signing key; the previous ones still verify until they age out.
pub async fn rotate_signing_key(State(st): State<AppState>, Extension(ctx): C) -> ArmResult {
    const ACTION: &str = "Keyhaven.Identity/rotateSigningKey/action";
    st.directory
        .require_admin(&ctx.caller)
        .await
        .map_err(|e| fail(&ctx, ACTION, "/", e))?;
    let keys = crate::signing::rotate(&st.store, &st.barrier)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "signing key rotation failed");
            ArmFailure::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "The signing key could not be rotated; try again.",
            )
        })?;
    let kid = keys.last().map(|k| k.kid().to_owned()).unwrap_or_default();
    st.tokens.replace_keys(keys);
    tracing::info!(%kid, "token signing key rotated");
    Ok(json(StatusCode::OK, &RotatedKey { kid }))
}

/// Makes a new master key current (or adopts one an operator added to the
/// keyring file) and re-wraps every vault data key and the token signing
/// keys under it, while requests keep being served. Safe to run again: it
/// re-wraps whatever is not under the current key.
pub async fn rotate_master_key(State(st): State<AppState>, Extension(ctx): C) -> ArmResult {
    const ACTION: &str = "Keyhaven.Security/rotateMasterKey/action";
    st.directory
        .require_admin(&ctx.caller)
        .await
        .map_err(|e| fail(&ctx, ACTION, "/", e))?;
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        tracing::warn!(error = %e, "master key rotation failed at {what}");
        ArmFailure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "The master key rotation did not finish; run it again (it resumes where it stopped).",
        )
    };
    // The whole rotation runs in its own task: a client that disconnects
    // after the store agreed to the new key cannot stop this node from
    // adopting it and re-wrapping under it.
    let (store, barrier) = (Arc::clone(&st.store), Arc::clone(&st.barrier));
    let rotation = tokio::spawn(async move { crate::masterkey::rotate(&store, &barrier).await })
        .await
        .map_err(|e| failed("the rotation task", &e))?
        .map_err(|e| match e {
            crate::masterkey::MasterKeyError::NotHeld { .. } => {
                tracing::warn!(error = %e, "master key rotation refused");
                ArmFailure::new(StatusCode::CONFLICT, "Conflict", e.to_string())
            }
            other => failed("the keyring", &other),
        })?;
    let key_id = rotation.key_id();
    let fingerprint = st
        .barrier
        .master_key()
        .map(|(_, fp)| fp)
        .unwrap_or_default();
    let st2 = st.clone();
    let rewrap = tokio::spawn(async move {
        let vaults = st2.service.rewrap_vault_keys().await;
        let mut signing = crate::signing::rewrap(&st2.store, &st2.barrier).await;
        // The key sealing users' authenticator secrets is root-sealed the
        // same way, and reported with the signing keys.
        if let Ok(rewrapped) = signing {
            signing = crate::signing::rewrap_setting(
                &st2.store,
                &st2.barrier,
                crate::methods_key::SETTING,
                crate::methods_key::AAD,
            )
            .await
            .map(|m| rewrapped || m);
        }
        (vaults, signing)
    })
    .await
    .map_err(|e| failed("the rotation task", &e))?;
    let (rewrapped, vaults) = rewrap.0.map_err(|e| failed("the vault keys", &e))?;
    let signing = rewrap.1.map_err(|e| failed("the signing keys", &e))?;
    tracing::info!(key_id, rewrapped, vaults, "master key rotated");
    Ok(json(
        StatusCode::OK,
        &RotatedMasterKey {
            key_id,
            fingerprint,
            adopted: matches!(rotation, crate::masterkey::Rotation::Adopted(_)),
            vault_keys_rewrapped: rewrapped,
            vaults,
            signing_keys_rewrapped: signing,
        },
    ))
}

/// Lists the master keys and what in the store each still seals, so an
/// operator knows which old keys may be retired (backup blobs made before a
/// rotation are outside the store and still need the key they name).
pub async fn master_key_usage(State(st): State<AppState>, Extension(ctx): C) -> ArmResult {
    const ACTION: &str = "Keyhaven.Security/masterKeyUsage/action";
    st.directory
        .require_admin(&ctx.caller)
        .await
        .map_err(|e| fail(&ctx, ACTION, "/", e))?;
    let unavailable = |e: keyhaven_core::StoreError| {
        tracing::warn!(error = %e, "master key usage could not be read");
        ArmFailure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "The master key usage could not be read; try again.",
        )
    };
    let mut keys: Vec<MasterKeyUse> = st
        .barrier
        .master_keys()
        .into_iter()
        .map(|(id, fingerprint)| MasterKeyUse {
            id,
            fingerprint,
            vault_keys: 0,
            signing_keys: false,
        })
        .collect();
    let mut unknown: Vec<MasterKeyUse> = Vec::new();
    let mut tally = |id: u32, vault: bool| {
        let entry = match keys.iter_mut().find(|k| k.id == id) {
            Some(k) => k,
            None => {
                if !unknown.iter().any(|k| k.id == id) {
                    unknown.push(MasterKeyUse {
                        id,
                        fingerprint: String::new(),
                        vault_keys: 0,
                        signing_keys: false,
                    });
                }
                match unknown.iter_mut().find(|k| k.id == id) {
                    Some(k) => k,
                    None => return,
                }
            }
        };
        if vault {
            entry.vault_keys += 1;
        } else {
            entry.signing_keys = true;
        }
    };
    for v in st.store.list_vaults().await.map_err(unavailable)? {
        if let Some(id) = st.barrier.sealed_by(&v.wrapped_key) {
            tally(id, true);
        }
    }
    for setting in [crate::signing::SETTING, crate::methods_key::SETTING] {
        if let Some(sealed) = st.store.get_setting(setting).await.map_err(unavailable)? {
            if let Some(id) = st.barrier.sealed_by(&sealed) {
                tally(id, false);
            }
        }
    }
    let current = st.barrier.master_key().map_or(0, |(id, _)| id);
    Ok(json(
        StatusCode::OK,
        &MasterKeyUsage {
            current,
            keys,
            unknown,
        },
    ))
}

/// Opens every stored payload of every vault and reports what does not
/// (`keyhaven check`).
pub async fn check_integrity(State(st): State<AppState>, Extension(ctx): C) -> ArmResult {
    const ACTION: &str = "Keyhaven.Security/checkIntegrity/action";
    st.directory
        .require_admin(&ctx.caller)
        .await
        .map_err(|e| fail(&ctx, ACTION, "/", e))?;
    let report = st.service.check_integrity().await.map_err(|e| {
        tracing::warn!(error = %e, "integrity check could not finish");
        ArmFailure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "The integrity check could not finish; try again.",
        )
    })?;
    if report.problem_count > 0 {
        tracing::warn!(
            problems = report.problem_count,
            "integrity check found problems"
        );
    }
    Ok(json(StatusCode::OK, &report))
}

/// This kind's routes, merged into the plane's router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/providers/Keyhaven.Identity/rotateSigningKey",
            routing::post(rotate_signing_key),
        )
        .route(
            "/providers/Keyhaven.Security/rotateMasterKey",
            routing::post(rotate_master_key),
        )
        .route(
            "/providers/Keyhaven.Security/checkIntegrity",
            routing::post(check_integrity),
        )
        .route(
            "/providers/Keyhaven.Security/masterKeyUsage",
            routing::post(master_key_usage),
        )
}
