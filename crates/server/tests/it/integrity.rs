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
