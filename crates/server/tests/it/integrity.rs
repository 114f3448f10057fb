//! Data-integrity findings (issue 29) that need the whole server, run on
//! every store the run has (`Harness::each_store`).

use http::StatusCode;
use keyhaven_identity::rbac::ROLE_ASSIGNMENT_TYPE;
use serde_json::json;

use crate::security::{caller, get_secret, grant, subscription, KV_SECRETS_USER};
use crate::Harness;

/// Item 2: deleting a role assignment and moving the authorization
/// generation were two steps, so a request cancelled (or a node crashed)
/// between them left the assignment gone and the principal still reading
/// secrets on every node. Here only the store write happens — exactly what a
/// cancelled request leaves — and the very next request is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_that_stops_right_after_its_write_still_takes_effect() {
    for (store, h) in Harness::each_store().await {
        let (s, _) = h
            .call(
                "PUT",
                "/secrets/s?api-version=7.5",
                Some(json!({"value": "v"})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{store}");
        let c = caller(&h).await;
        let sub = subscription(&h);
        grant(&h, &sub, KV_SECRETS_USER, &c.principal).await;
        assert_eq!(get_secret(&h, &c.data).await, StatusCode::OK, "{store}");

        let theirs: Vec<_> = h
            .state
            .store
            .list_resources(ROLE_ASSIGNMENT_TYPE, &h.state.subscription_id)
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.properties.contains(&c.principal.object_id))
            .collect();
        assert_eq!(theirs.len(), 1, "{store}");
        assert!(h.state.store.delete_resource(&theirs[0].id).await.unwrap());
        assert_eq!(
            get_secret(&h, &c.data).await,
            StatusCode::FORBIDDEN,
            "{store}: the deleted assignment still grants"
        );

        // The same for a group membership that carried the role.
        let group = keyhaven_core::PrincipalRecord {
            object_id: uuid::Uuid::new_v4().to_string(),
            tenant_id: h.tenant_id.clone(),
            kind: "group".into(),
            app_id: None,
            upn: None,
            display_name: "readers".into(),
            enabled: true,
            credentials: "{}".into(),
            attrs: "{}".into(),
            created: crate::NOW,
        };
        h.state.store.create_principal(&group).await.unwrap();
        let as_group = keyhaven_core::Principal {
            object_id: group.object_id.clone(),
            tenant_id: h.tenant_id.clone(),
            app_id: None,
            kind: keyhaven_core::PrincipalKind::Group,
        };
        grant(&h, &sub, KV_SECRETS_USER, &as_group).await;
        assert!(h
            .state
            .store
            .add_member(&group.object_id, &c.principal.object_id)
            .await
            .unwrap());
        assert_eq!(get_secret(&h, &c.data).await, StatusCode::OK, "{store}");
        assert!(h
            .state
            .store
            .remove_member(&group.object_id, &c.principal.object_id)
            .await
            .unwrap());
        assert_eq!(
            get_secret(&h, &c.data).await,
            StatusCode::FORBIDDEN,
            "{store}: the removed membership still grants"
        );
        h.cleanup().await;
    }
}

/// Whether the certificate `name` and its key and secret are each live,
/// deleted or gone, as the store has them.
async fn certificate_parts(h: &Harness, name: &str) -> Vec<&'static str> {
    use keyhaven_core::ObjectKind;
    let vault = h
        .state
        .store
        .get_vault(&"dev".parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    let name: keyhaven_core::ObjectName = name.parse().unwrap();
    let mut out = Vec::new();
    for kind in [ObjectKind::Certificate, ObjectKind::Key, ObjectKind::Secret] {
        let live = h
            .state
            .store
            .get_version(&vault.id, kind, &name, None)
            .await
            .unwrap()
            .is_some();
        let deleted = h
            .state
            .store
            .get_deleted(&vault.id, kind, &name)
            .await
            .unwrap()
            .is_some();
        out.push(match (live, deleted) {
            (true, false) => "live",
            (false, true) => "deleted",
            (false, false) => "gone",
            (true, true) => "both",
        });
    }
    out
}

/// Sends `method path` (with `body`) and drops the request after `after`
/// (as hyper drops a cancelled request's handler), or lets it finish if it
/// is quicker.
async fn cancelled(
    h: &Harness,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
    after: std::time::Duration,
) {
    use tower::ServiceExt as _;
    let req = crate::vault_req(method, path, Some(&h.token()), body.map(|b| b.to_string()));
    let _ = tokio::time::timeout(after, h.app.clone().oneshot(req)).await;
}

/// A create request for a small self-signed EC certificate.
fn self_signed_ec() -> serde_json::Value {
    json!({"policy": {
        "key_props": {"kty": "EC", "crv": "P-256", "exportable": true},
        "secret_props": {"contentType": "application/x-pem-file"},
        "x509_props": {"subject": "CN=cancel", "validity_months": 12},
        "issuer": {"name": "Self"}}})
}

/// Item 3: a certificate's key, secret and certificate were written,
/// deleted, recovered and purged in separate transactions, so a cancelled
/// DELETE could leave the certificate deleted and its PFX (with the private
/// key) live. Each operation is cancelled at stepped points; afterwards the
/// three parts are always in one state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_certificate_change_leaves_its_parts_in_one_state() {
    const STEPS: u64 = 24;
    let policy = self_signed_ec();
    for (store, h) in Harness::each_store().await {
        let mut torn = Vec::new();
        for step in 0..STEPS {
            let name = format!("c{step}");
            let after = std::time::Duration::from_micros(step * 150);
            let (s, j) = h
                .call(
                    "POST",
                    &format!("/certificates/{name}/create?api-version=7.5"),
                    Some(policy.clone()),
                )
                .await;
            assert_eq!(s, StatusCode::ACCEPTED, "{store}: {j}");
            for (method, path) in [
                ("DELETE", format!("/certificates/{name}?api-version=7.5")),
                (
                    "POST",
                    format!("/deletedcertificates/{name}/recover?api-version=7.5"),
                ),
                ("DELETE", format!("/certificates/{name}?api-version=7.5")),
                (
                    "DELETE",
                    format!("/deletedcertificates/{name}?api-version=7.5"),
                ),
            ] {
                cancelled(&h, method, &path, None, after).await;
                // Let a write already handed to the store finish.
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                let parts = certificate_parts(&h, &name).await;
                if parts.iter().any(|p| *p != parts[0]) {
                    torn.push(format!("{method} {path} after {after:?}: {parts:?}"));
                }
                // Put it in the state the next step expects, whatever happened.
                let (s, _) = h.call(method, &path, None).await;
                assert!(
                    s.is_success() || s == StatusCode::NOT_FOUND || s == StatusCode::CONFLICT,
                    "{store}: {method} {path}: {s}"
                );
            }
        }
        assert!(torn.is_empty(), "{store}: torn certificates: {torn:#?}");
        h.cleanup().await;
    }
}

/// Item 3 (review): a certificate's policy and operation were written
/// after its versions, so a create cancelled in between left a certificate
/// without a policy (every policy read failed), and a merge cancelled in
/// between left its operation pending forever. Creates are cancelled at
/// stepped points; afterwards the certificate and its policy exist together
/// or not at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_certificate_create_leaves_no_certificate_without_its_policy() {
    const STEPS: u64 = 24;
    let policy = self_signed_ec();
    for (store, h) in Harness::each_store().await {
        let mut torn = Vec::new();
        for step in 0..STEPS {
            let name = format!("n{step}");
            let after = std::time::Duration::from_micros(step * 150);
            let path = format!("/certificates/{name}/create?api-version=7.5");
            cancelled(&h, "POST", &path, Some(&policy), after).await;
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            let (cert, _) = h
                .call(
                    "GET",
                    &format!("/certificates/{name}?api-version=7.5"),
                    None,
                )
                .await;
            let (pol, j) = h
                .call(
                    "GET",
                    &format!("/certificates/{name}/policy?api-version=7.5"),
                    None,
                )
                .await;
            if cert == StatusCode::OK && pol != StatusCode::OK {
                torn.push(format!(
                    "{name} after {after:?}: certificate without policy: {pol} {j}"
                ));
            }
        }
        assert!(torn.is_empty(), "{store}: {torn:#?}");
        h.cleanup().await;
    }
}

/// Item 6: PATCH rewrote every column from its own read, so PATCH
/// {enabled:false} racing PATCH {tags} could re-enable the secret. Pairs of
/// such PATCHes race here; every pair must leave both changes in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_patches_of_different_fields_both_land() {
    const PAIRS: usize = 30;
    for (store, h) in Harness::each_store().await {
        let mut lost = Vec::new();
        for i in 0..PAIRS {
            let path = format!("/secrets/p{i}");
            let (s, j) = h
                .call(
                    "PUT",
                    &format!("{path}?api-version=7.5"),
                    Some(json!({"value": "v"})),
                )
                .await;
            assert_eq!(s, StatusCode::OK, "{store}: {j}");
            let version = j["id"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_owned();
            let patch = format!("{path}/{version}?api-version=7.5");
            let (a, b) = tokio::join!(
                h.call(
                    "PATCH",
                    &patch,
                    Some(json!({"attributes": {"enabled": false}}))
                ),
                h.call("PATCH", &patch, Some(json!({"tags": {"t": i.to_string()}}))),
            );
            assert_eq!(
                (a.0, b.0),
                (StatusCode::OK, StatusCode::OK),
                "{store}: {a:?} {b:?}"
            );
            let got = h
                .state
                .store
                .get_version(
                    &h.state
                        .store
                        .get_vault(&"dev".parse().unwrap())
                        .await
                        .unwrap()
                        .unwrap()
                        .id,
                    keyhaven_core::ObjectKind::Secret,
                    &format!("p{i}").parse().unwrap(),
                    None,
                )
                .await
                .unwrap()
                .unwrap();
            if got.attributes.enabled || got.tags.get("t") != Some(&i.to_string()) {
                lost.push(format!(
                    "p{i}: enabled={} tags={:?}",
                    got.attributes.enabled, got.tags
                ));
            }
        }
        assert!(lost.is_empty(), "{store}: lost updates: {lost:#?}");
        h.cleanup().await;
    }
}

/// Item 5: vault writes overwrote each other from stale reads. Concurrent
/// `accessPolicies/add` of two principals lost one; a purge checked a
/// stale read and destroyed a vault recovered meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_writes_from_stale_reads_lose_nothing() {
    use crate::security::{arm, vault_id, OWNER};
    const ROUNDS: usize = 15;
    for (store, h) in Harness::each_store().await {
        let owner = caller(&h).await;
        grant(&h, &subscription(&h), OWNER, &owner.principal).await;
        let vault = vault_id(&h).await;
        let policy = |oid: String| {
            json!({"properties": {"accessPolicies": [{"tenantId": h.tenant_id, "objectId": oid,
                "permissions": {"secrets": ["get"]}}]}})
        };
        let mut lost = Vec::new();
        for round in 0..ROUNDS {
            let (a, b) = (
                uuid::Uuid::new_v4().to_string(),
                uuid::Uuid::new_v4().to_string(),
            );
            let path = format!("{vault}/accessPolicies/add");
            let (ra, rb) = tokio::join!(
                arm(&h, &owner.arm, "PUT", &path, Some(policy(a.clone()))),
                arm(&h, &owner.arm, "PUT", &path, Some(policy(b.clone()))),
            );
            assert_eq!(
                (ra.0, rb.0),
                (StatusCode::OK, StatusCode::OK),
                "{store}: {ra:?} {rb:?}"
            );
            let (_, j) = arm(&h, &owner.arm, "GET", &vault, None).await;
            let ids: Vec<&str> = j["properties"]["accessPolicies"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|p| p["objectId"].as_str())
                .collect();
            for oid in [&a, &b] {
                if !ids.contains(&oid.as_str()) {
                    lost.push(format!("round {round}: {oid}"));
                }
            }
        }
        assert!(
            lost.is_empty(),
            "{store}: lost access-policy edits: {lost:#?}"
        );

        // A purge acting on a stale read of the deleted vault, after the
        // vault was recovered: refused, and the vault keeps its data.
        let (s, _) = h
            .call(
                "PUT",
                "/secrets/kept?api-version=7.5",
                Some(json!({"value": "v"})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{store}");
        let (s, j) = arm(&h, &owner.arm, "DELETE", &vault, None).await;
        assert_eq!(s, StatusCode::OK, "{store}: {j}");
        let name: keyhaven_core::VaultName = "dev".parse().unwrap();
        let stale = h.state.store.get_vault(&name).await.unwrap().unwrap();
        assert!(stale.properties.deleted.is_some());
        let (s, j) = arm(
            &h,
            &owner.arm,
            "PUT",
            &vault,
            Some(
                json!({"location": "local", "properties": {"tenantId": h.tenant_id,
                "sku": {"family": "A", "name": "standard"}, "createMode": "recover"}}),
            ),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{store}: {j}");
        let purge = h.state.service.purge_vault(&stale).await;
        assert!(
            matches!(
                purge,
                Err(keyhaven_core::vault_admin::AdminError::NotFound(_))
            ),
            "{store}: {purge:?}"
        );
        let (s, j) = h.call("GET", "/secrets/kept?api-version=7.5", None).await;
        assert_eq!(
            (s, j["value"].as_str()),
            (StatusCode::OK, Some("v")),
            "{store}: {j}"
        );
        h.cleanup().await;
    }
}

/// Item 7: master-key ids were per-node counters, so two nodes that both
/// rotated (a retry through a load balancer) each made a different "key 1"
/// and re-wrapped half the vaults each. Now the store decides: the second
/// node refuses while it lacks the first one's key, and adopts it once its
/// keyring has it; ids are random.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_rotating_the_master_key_agree_on_one() {
    use keyhaven_core::Barrier;
    use keyhaven_crypto::barrier::SoftwareBarrier;
    use keyhaven_crypto::master::Keyring;
    use keyhaven_server::masterkey::{reconcile, rotate, MasterKeyError, Rotation};
    use std::sync::Arc;
    for (store, h) in Harness::each_store().await {
        let dir = std::env::temp_dir().join(format!("kh-rot-{store}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let (pa, pb) = (dir.join("a.key"), dir.join("b.key"));
        let ring = Keyring::load_or_create(&pa).unwrap();
        drop(ring);
        std::fs::copy(&pa, &pb).unwrap();
        let node = |p: &std::path::Path| -> Arc<dyn Barrier> {
            Arc::new(SoftwareBarrier::with_keyring(
                Keyring::load(p).unwrap(),
                Some(p.to_owned()),
            ))
        };
        let (a, b) = (node(&pa), node(&pb));
        let s = &h.state.store;
        // A fresh store for this test: the harness recorded its own key.
        s.replace_setting(
            keyhaven_server::masterkey::SETTING,
            &s.get_setting(keyhaven_server::masterkey::SETTING)
                .await
                .unwrap()
                .unwrap(),
            format!(
                "{} {}",
                a.master_key().unwrap().0,
                a.master_key().unwrap().1
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        reconcile(s, &a).await.unwrap();
        reconcile(s, &b).await.unwrap();

        let Rotation::Rotated(k) = rotate(s, &a).await.unwrap() else {
            panic!("{store}: a made the first rotation")
        };
        assert_ne!(k, 0);
        let refused = rotate(s, &b).await;
        assert!(
            matches!(refused, Err(MasterKeyError::NotHeld { id, .. }) if id == k),
            "{store}: {refused:?}"
        );
        assert_eq!(b.master_keys().len(), 1, "{store}: b made no rival key");
        // b would not start either, until it holds the key.
        assert!(reconcile(s, &b).await.is_err(), "{store}");
        std::fs::copy(&pa, &pb).unwrap();
        assert_eq!(
            rotate(s, &b).await.unwrap(),
            Rotation::Adopted(k),
            "{store}"
        );
        assert_eq!(a.master_key(), b.master_key(), "{store}");
        // What b seals, a opens, and the other way round.
        let sealed = b.seal_root(b"x", b"agreed").unwrap();
        assert_eq!(a.open_root(b"x", &sealed).unwrap().expose(), b"agreed");
        std::fs::remove_dir_all(&dir).unwrap();
        h.cleanup().await;
    }
}
