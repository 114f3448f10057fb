//! The security review's findings (issue 30), one test each, named after the
//! finding, run on every store the run has (`Harness::each_store`).

use axum::body::Body;
use http::{Request, StatusCode};
use keyhaven_core::{Principal, PrincipalKind, VaultName};
use serde_json::{json, Value};

use crate::{code, vault_req, Harness, AUDIENCE, NOW};

pub const ARM_HOST: &str = "management.localhost:8443";
pub const ARM_AUDIENCE: &str = "https://management.localhost:8443";

pub const OWNER: &str = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635";
pub const KV_CONTRIBUTOR: &str = "f25e0fa2-a7c8-4377-a976-54943a77a395";
pub const KV_DATA_ACCESS_ADMIN: &str = "8b54135c-b56d-4d72-a534-26097cfdc8d8";
pub const KV_SECRETS_USER: &str = "4633458b-17de-408a-b874-0445c86b69e6";
pub const CONTRIBUTOR: &str = "b24988ac-6180-42a0-ab88-20f7382dd24c";

/// A principal of the tenant with no roles, and its data-plane and ARM tokens.
pub struct Caller {
    pub principal: Principal,
    pub data: String,
    pub arm: String,
}

pub async fn caller(h: &Harness) -> Caller {
    let p = Principal {
        object_id: uuid::Uuid::new_v4().to_string(),
        tenant_id: h.tenant_id.clone(),
        app_id: Some(uuid::Uuid::new_v4().to_string()),
        kind: PrincipalKind::ServicePrincipal,
    };
    h.state
        .store
        .create_principal(&keyhaven_core::PrincipalRecord {
            object_id: p.object_id.clone(),
            tenant_id: p.tenant_id.clone(),
            kind: "servicePrincipal".into(),
            app_id: p.app_id.clone(),
            upn: None,
            display_name: "caller".into(),
            enabled: true,
            credentials: "{}".into(),
            attrs: "{}".into(),
            created: NOW,
        })
        .await
        .unwrap();
    let issuer = h.issuer("https://login.localhost:8443");
    Caller {
        data: issuer.mint(&p, AUDIENCE, NOW).unwrap(),
        arm: issuer.mint(&p, ARM_AUDIENCE, NOW).unwrap(),
        principal: p,
    }
}

/// Gives `who` the built-in role `role` at `scope` (as the deployment, no check).
pub async fn grant(h: &Harness, scope: &str, role: &str, who: &Principal) {
    keyhaven_identity::roles::seed_assignment(
        &h.state.store,
        &h.state.subscription_id,
        scope,
        role,
        &who.object_id,
        NOW,
    )
    .await
    .unwrap();
}

pub async fn arm(
    h: &Harness,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let sep = if path.contains('?') { '&' } else { '?' };
    let req = Request::builder()
        .method(method)
        .uri(format!("{path}{sep}api-version=2023-07-01"))
        .header("host", ARM_HOST)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(
            body.map(|b| Body::from(b.to_string()))
                .unwrap_or_else(Body::empty),
        )
        .unwrap();
    let (s, _, j) = h.send(req).await;
    (s, j)
}

pub async fn vault_id(h: &Harness) -> String {
    h.state
        .store
        .get_vault(&"dev".parse::<VaultName>().unwrap())
        .await
        .unwrap()
        .unwrap()
        .resource_id()
}

pub fn subscription(h: &Harness) -> String {
    format!("/subscriptions/{}", h.state.subscription_id)
}

pub async fn get_secret(h: &Harness, token: &str) -> StatusCode {
    h.send(vault_req(
        "GET",
        "/secrets/s?api-version=7.5",
        Some(token),
        None,
    ))
    .await
    .0
}

/// Finding 1: a Key Vault Contributor turned `enableRbacAuthorization` off and
/// gave itself an access policy in the same request, then read every secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contributor_cannot_switch_permission_model_to_read_secrets() {
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
        grant(&h, &subscription(&h), KV_CONTRIBUTOR, &c.principal).await;
        let vault = vault_id(&h).await;
        assert_eq!(
            get_secret(&h, &c.data).await,
            StatusCode::FORBIDDEN,
            "{store}"
        );
        let policy = json!([{"tenantId": h.tenant_id, "objectId": c.principal.object_id,
                             "permissions": {"secrets": ["get", "list"]}}]);
        let switch =
            json!({"properties": {"enableRbacAuthorization": false, "accessPolicies": policy}});
        let (s, j) = arm(&h, &c.arm, "PATCH", &vault, Some(switch.clone())).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{store}: {j}");
        assert_eq!(code(&j), "InsufficientPermissions", "{store}");
        let message = j["error"]["message"].as_str().unwrap();
        assert!(message.contains("Caller is not allowed to change permission model"));
        assert!(message.contains("Microsoft.Authorization/roleAssignments/write"));
        // The whole-resource PUT is refused the same way.
        let (s, j) = arm(
            &h,
            &c.arm,
            "PUT",
            &vault,
            Some(json!({"location": "local", "properties": {
                "tenantId": h.tenant_id, "sku": {"family": "A", "name": "standard"},
                "enableRbacAuthorization": false, "accessPolicies": policy}})),
        )
        .await;
        assert_eq!(
            (s, code(&j)),
            (StatusCode::BAD_REQUEST, "InsufficientPermissions"),
            "{store}"
        );
        assert_eq!(
            get_secret(&h, &c.data).await,
            StatusCode::FORBIDDEN,
            "{store}"
        );
        // Writing access policies without the switch stays allowed (they are
        // inactive under RBAC), and grants nothing.
        let (s, j) = arm(
            &h,
            &c.arm,
            "PATCH",
            &vault,
            Some(json!({"properties": {"accessPolicies": policy}})),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{store}: {j}");
        assert_eq!(
            get_secret(&h, &c.data).await,
            StatusCode::FORBIDDEN,
            "{store}"
        );
        // An Owner may switch.
        let owner = caller(&h).await;
        grant(&h, &subscription(&h), OWNER, &owner.principal).await;
        let (s, j) = arm(&h, &owner.arm, "PATCH", &vault, Some(switch)).await;
        assert_eq!(s, StatusCode::OK, "{store}: {j}");
        assert_eq!(j["properties"]["enableRbacAuthorization"], false);
        assert_eq!(get_secret(&h, &c.data).await, StatusCode::OK, "{store}");
        h.cleanup().await;
    }
}

/// Finding 3: Key Vault Data Access Administrator assigned itself Owner
/// because the condition on its `roleAssignments/write` was not evaluated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_access_administrator_assigns_only_key_vault_data_roles() {
    for (store, h) in Harness::each_store().await {
        h.call(
            "PUT",
            "/secrets/s?api-version=7.5",
            Some(json!({"value": "v"})),
        )
        .await;
        let vault = vault_id(&h).await;
        let d = caller(&h).await;
        grant(&h, &vault, KV_DATA_ACCESS_ADMIN, &d.principal).await;
        let sub = h.state.subscription_id.clone();
        let assign = |role: &str, who: &str| {
            json!({"properties": {
                "roleDefinitionId": format!("/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{role}"),
                "principalId": who}})
        };
        let at = |name: &str| {
            format!("{vault}/providers/Microsoft.Authorization/roleAssignments/{name}")
        };
        // Owner, Contributor: refused, to itself and to others.
        for role in [OWNER, CONTRIBUTOR, KV_DATA_ACCESS_ADMIN] {
            let name = uuid::Uuid::new_v4().to_string();
            let (s, j) = arm(
                &h,
                &d.arm,
                "PUT",
                &at(&name),
                Some(assign(role, &d.principal.object_id)),
            )
            .await;
            assert_eq!(s, StatusCode::FORBIDDEN, "{store} {role}: {j}");
            assert_eq!(code(&j), "AuthorizationFailed", "{store}");
        }
        // Through the vault's own access-control endpoint too.
        let local = vault_req(
            "PUT",
            &format!(
                "/providers/Microsoft.Authorization/roleAssignments/{}?api-version=7.5",
                uuid::Uuid::new_v4()
            ),
            Some(&d.data),
            Some(
                json!({"properties": {"roleDefinitionId": format!("Microsoft.Authorization/roleDefinitions/{OWNER}"),
                        "principalId": d.principal.object_id}})
                .to_string(),
            ),
        );
        assert_eq!(h.send(local).await.0, StatusCode::FORBIDDEN, "{store}");
        assert_eq!(
            get_secret(&h, &d.data).await,
            StatusCode::FORBIDDEN,
            "{store}"
        );
        // A Key Vault data role: allowed, and it works.
        let mine = uuid::Uuid::new_v4().to_string();
        let (s, j) = arm(
            &h,
            &d.arm,
            "PUT",
            &at(&mine),
            Some(assign(KV_SECRETS_USER, &d.principal.object_id)),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{store}: {j}");
        assert_eq!(get_secret(&h, &d.data).await, StatusCode::OK, "{store}");
        // Removing: a Key Vault role yes, an Owner assignment no.
        let other = caller(&h).await;
        let owner_name = uuid::Uuid::new_v4().to_string();
        let (s, _) = arm(
            &h,
            &admin_arm(&h),
            "PUT",
            &at(&owner_name),
            Some(assign(OWNER, &other.principal.object_id)),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{store}");
        let (s, _) = arm(&h, &d.arm, "DELETE", &at(&owner_name), None).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{store}");
        let (s, _) = arm(&h, &d.arm, "DELETE", &at(&mine), None).await;
        assert_eq!(s, StatusCode::OK, "{store}");
        assert_eq!(
            get_secret(&h, &d.data).await,
            StatusCode::FORBIDDEN,
            "{store}"
        );
        // A conditional grant of roleAssignments/write is not enough to
        // switch the permission model either.
        grant(&h, &vault, KV_CONTRIBUTOR, &d.principal).await;
        let (s, j) = arm(
            &h,
            &d.arm,
            "PATCH",
            &vault,
            Some(json!({"properties": {"enableRbacAuthorization": false}})),
        )
        .await;
        assert_eq!(
            (s, code(&j)),
            (StatusCode::BAD_REQUEST, "InsufficientPermissions"),
            "{store}"
        );
        h.cleanup().await;
    }
}

/// A condition on an assignment is kept and evaluated, never dropped; one
/// outside the supported subset is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_assignment_conditions_are_enforced_or_refused() {
    for (store, h) in Harness::each_store().await {
        let vault = vault_id(&h).await;
        let sub = h.state.subscription_id.clone();
        let u = caller(&h).await;
        let target = caller(&h).await;
        let at = |name: &str| {
            format!("{vault}/providers/Microsoft.Authorization/roleAssignments/{name}")
        };
        let def = |role: &str| {
            format!("/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{role}")
        };
        let only_secrets_user = format!("((!(ActionMatches{{'Microsoft.Authorization/roleAssignments/write'}})) OR (@Request[Microsoft.Authorization/roleAssignments:RoleDefinitionId] ForAnyOfAnyValues:GuidEquals {{{KV_SECRETS_USER}}}))");
        let (s, j) = arm(&h, &admin_arm(&h), "PUT", &at(&uuid::Uuid::new_v4().to_string()), Some(json!({"properties": {
            "roleDefinitionId": def("18d7d88d-d35e-4fb5-a5c3-7773c20a72d9"), "principalId": u.principal.object_id,
            "condition": only_secrets_user, "conditionVersion": "2.0"}}))).await;
        assert_eq!(s, StatusCode::CREATED, "{store}: {j}");
        assert_eq!(j["properties"]["condition"], only_secrets_user.as_str());
        let put = |role: &str| json!({"properties": {"roleDefinitionId": def(role), "principalId": target.principal.object_id}});
        let (s, _) = arm(
            &h,
            &u.arm,
            "PUT",
            &at(&uuid::Uuid::new_v4().to_string()),
            Some(put(OWNER)),
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{store}");
        let (s, _) = arm(
            &h,
            &u.arm,
            "PUT",
            &at(&uuid::Uuid::new_v4().to_string()),
            Some(put(KV_SECRETS_USER)),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{store}");
        let (s, j) = arm(
            &h,
            &admin_arm(&h),
            "PUT",
            &at(&uuid::Uuid::new_v4().to_string()),
            Some(json!({"properties": {
            "roleDefinitionId": def(KV_SECRETS_USER), "principalId": u.principal.object_id,
            "condition": "@Resource[Microsoft.KeyVault/vaults/secrets:name] StringEquals 'x'"}})),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{store}: {j}");
        h.cleanup().await;
    }
}

/// An ARM token of the bootstrap principal (Owner of the subscription).
pub fn admin_arm(h: &Harness) -> String {
    h.issuer("https://login.localhost:8443")
        .mint(&h.principal, ARM_AUDIENCE, NOW)
        .unwrap()
}

/// A custom role with `actions` at the subscription, made by the Owner.
async fn custom_role(h: &Harness, actions: &[&str]) -> String {
    let guid = uuid::Uuid::new_v4().to_string();
    let (s, j) = arm(
        h,
        &admin_arm(h),
        "PUT",
        &format!("{}/providers/Microsoft.Authorization/roleDefinitions/{guid}", subscription(h)),
        Some(json!({"properties": {"roleName": format!("r-{guid}"), "assignableScopes": [subscription(h)],
                    "permissions": [{"actions": actions}]}})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{j}");
    guid
}

fn group_path(h: &Harness) -> String {
    format!("{}/resourceGroups/{}", subscription(h), "rg-sec")
}

async fn ensure_group(h: &Harness) {
    let (s, j) = arm(
        h,
        &admin_arm(h),
        "PUT",
        &group_path(h),
        Some(json!({"location": "local"})),
    )
    .await;
    assert!(s.is_success(), "{j}");
}

/// The Owner writes a workload with `addresses` and a system identity.
async fn admin_puts_workload(h: &Harness, path: &str, addresses: &[&str]) -> (StatusCode, Value) {
    arm(
        h,
        &admin_arm(h),
        "PUT",
        path,
        Some(workload_body(addresses, &[])),
    )
    .await
}

fn workload_body(addresses: &[&str], identities: &[&str]) -> Value {
    let ua: serde_json::Map<String, Value> = identities
        .iter()
        .map(|i| ((*i).to_owned(), json!({})))
        .collect();
    let kind = if identities.is_empty() {
        "SystemAssigned"
    } else {
        "SystemAssigned, UserAssigned"
    };
    json!({"location": "local", "properties": {"addresses": addresses},
           "identity": {"type": kind, "userAssignedIdentities": ua}})
}

/// Finding 2: a workload writer attached a user-assigned identity it had no
/// right to, and IMDS then gave its workload that identity's tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_writer_cannot_take_a_user_assigned_identity() {
    for (store, h) in Harness::each_store().await {
        ensure_group(&h).await;
        let rg = group_path(&h);
        let uami =
            format!("{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/payments");
        let (s, j) = arm(
            &h,
            &admin_arm(&h),
            "PUT",
            &uami,
            Some(json!({"location": "local"})),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{store}: {j}");
        let attacker = caller(&h).await;
        let role = custom_role(&h, &["Keyhaven.Compute/workloads/*"]).await;
        grant(&h, &rg, &role, &attacker.principal).await;
        let wl = format!("{rg}/providers/Keyhaven.Compute/workloads/evil");
        let (s, j) = arm(
            &h,
            &attacker.arm,
            "PUT",
            &wl,
            Some(workload_body(&["192.0.2.66"], &[&uami])),
        )
        .await;
        assert_eq!(
            (s, code(&j)),
            (StatusCode::FORBIDDEN, "AuthorizationFailed"),
            "{store}: {j}"
        );
        assert!(j["error"]["message"]
            .as_str()
            .unwrap()
            .contains("userAssignedIdentities/assign/action"));
        let (s, _) = arm(&h, &attacker.arm, "GET", &wl, None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{store}: nothing was written");
        let signed_in = h
            .state
            .directory
            .managed_sign_in(
                &h.state.subscription_id,
                "192.0.2.66".parse().unwrap(),
                &keyhaven_identity::managed::IdentitySelector::ResourceId(uami.clone()),
            )
            .await
            .unwrap();
        assert!(signed_in.is_none(), "{store}");
        // With the assign action on that identity, the same request works.
        let operator = custom_role(
            &h,
            &["Microsoft.ManagedIdentity/userAssignedIdentities/assign/action"],
        )
        .await;
        grant(&h, &uami, &operator, &attacker.principal).await;
        let (s, j) = arm(
            &h,
            &attacker.arm,
            "PUT",
            &wl,
            Some(workload_body(&["192.0.2.66"], &[&uami])),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{store}: {j}");
        h.cleanup().await;
    }
}

/// Finding 8: a second workload listing a victim's address took over the
/// victim's IMDS identity (the first workload found by id won).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_addresses_identify_one_workload_only() {
    use keyhaven_identity::managed::IdentitySelector;
    for (store, h) in Harness::each_store().await {
        ensure_group(&h).await;
        let rg = group_path(&h);
        let victim = format!("{rg}/providers/Keyhaven.Compute/workloads/zz-victim");
        let (s, j) = admin_puts_workload(&h, &victim, &["192.0.2.10"]).await;
        assert_eq!(s, StatusCode::CREATED, "{store}: {j}");
        let victim_oid = j["identity"]["principalId"].as_str().unwrap().to_owned();
        let who = |h: &Harness| {
            let d = h.state.directory.clone();
            let sub = h.state.subscription_id.clone();
            async move {
                d.managed_sign_in(
                    &sub,
                    "192.0.2.10".parse().unwrap(),
                    &IdentitySelector::System,
                )
                .await
                .unwrap()
                .map(|m| m.signed_in.principal.object_id)
            }
        };
        assert_eq!(
            who(&h).await.as_deref(),
            Some(victim_oid.as_str()),
            "{store}"
        );
        // "aa-" sorts first: the old lookup took the first workload by id.
        let thief = format!("{rg}/providers/Keyhaven.Compute/workloads/aa-thief");
        let (s, j) = admin_puts_workload(&h, &thief, &["192.0.2.10", "192.0.2.11"]).await;
        assert_eq!(
            (s, code(&j)),
            (StatusCode::CONFLICT, "Conflict"),
            "{store}: {j}"
        );
        assert_eq!(
            who(&h).await.as_deref(),
            Some(victim_oid.as_str()),
            "{store}"
        );
        // Re-writing the victim keeps its address; dropping it frees it.
        let (s, _) = admin_puts_workload(&h, &victim, &["192.0.2.10"]).await;
        assert_eq!(s, StatusCode::OK, "{store}");
        let (s, _) = admin_puts_workload(&h, &victim, &["192.0.2.12"]).await;
        assert_eq!(s, StatusCode::OK, "{store}");
        let (s, j) = admin_puts_workload(&h, &thief, &["192.0.2.10"]).await;
        assert_eq!(s, StatusCode::CREATED, "{store}: {j}");
        let thief_oid = j["identity"]["principalId"].as_str().unwrap().to_owned();
        assert_eq!(
            who(&h).await.as_deref(),
            Some(thief_oid.as_str()),
            "{store}"
        );
        // Racing writers: of many workloads claiming one address at once,
        // exactly one gets it.
        let mut tasks = Vec::new();
        for i in 0..8 {
            let app = h.app.clone();
            let token = admin_arm(&h);
            let path = format!("{rg}/providers/Keyhaven.Compute/workloads/race-{i}");
            tasks.push(tokio::spawn(async move {
                use tower::ServiceExt as _;
                let req = Request::builder()
                    .method("PUT")
                    .uri(format!("{path}?api-version=2023-07-01"))
                    .header("host", ARM_HOST)
                    .header("content-type", "application/json")
                    .header("authorization", format!("Bearer {token}"))
                    .body(Body::from(
                        workload_body(&["198.51.100.7"], &[]).to_string(),
                    ))
                    .unwrap();
                app.oneshot(req).await.unwrap().status()
            }));
        }
        let mut created = 0;
        for t in tasks {
            let s = t.await.unwrap();
            assert!(
                s == StatusCode::CREATED || s == StatusCode::CONFLICT,
                "{store}: {s}"
            );
            created += usize::from(s == StatusCode::CREATED);
        }
        assert_eq!(created, 1, "{store}: one workload holds the address");
        h.cleanup().await;
    }
}

/// Finding 10: any authenticated principal could read every role assignment
/// and definition through ARM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_assignments_and_definitions_need_their_read_actions() {
    for (store, h) in Harness::each_store().await {
        let vault = vault_id(&h).await;
        let nobody = caller(&h).await;
        let sub = subscription(&h);
        let list = format!("{sub}/providers/Microsoft.Authorization/roleAssignments");
        let (s, j) = arm(&h, &nobody.arm, "GET", &list, None).await;
        assert_eq!(s, StatusCode::OK, "{store}: {j}");
        assert_eq!(j["value"].as_array().unwrap().len(), 0, "{store}: {j}");
        let (s, _) = arm(
            &h,
            &nobody.arm,
            "GET",
            &format!("{sub}/providers/Microsoft.Authorization/roleDefinitions"),
            None,
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{store}");
        let (s, _) = arm(
            &h,
            &nobody.arm,
            "GET",
            &format!("{sub}/providers/Microsoft.Authorization/roleDefinitions/{OWNER}"),
            None,
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{store}");
        // A reader of one vault sees the assignments at and above it, not
        // the subscription's other ones.
        let reader = caller(&h).await;
        grant(
            &h,
            &vault,
            "21090545-7ca7-4776-b22c-e363652d74d2",
            &reader.principal,
        )
        .await;
        let elsewhere = format!("{sub}/resourceGroups/other/providers/Microsoft.KeyVault/vaults/x");
        grant(&h, &elsewhere, KV_SECRETS_USER, &nobody.principal).await;
        let (s, j) = arm(&h, &reader.arm, "GET", &list, None).await;
        assert_eq!(s, StatusCode::OK, "{store}");
        let scopes: Vec<&str> = j["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["properties"]["scope"].as_str().unwrap())
            .collect();
        assert!(
            scopes.iter().any(|s| s.eq_ignore_ascii_case(&vault)),
            "{store}: {scopes:?}"
        );
        assert!(
            !scopes.iter().any(|s| s.eq_ignore_ascii_case(&elsewhere)),
            "{store}: {scopes:?}"
        );
        let (s, j) = arm(
            &h,
            &reader.arm,
            "GET",
            &format!("{vault}/providers/Microsoft.Authorization/roleAssignments"),
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{store}");
        assert!(
            j["value"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["properties"]["scope"]
                    .as_str()
                    .unwrap()
                    .eq_ignore_ascii_case(&sub)),
            "{store}: inherited assignments show at the vault: {j}"
        );
        let (s, _) = arm(&h, &admin_arm(&h), "GET", &list, None).await;
        assert_eq!(s, StatusCode::OK, "{store}");
        h.cleanup().await;
    }
}

/// Finding 4: RSA1_5 decrypt answered every bad block with 32 bytes and a
/// good one with its real length, a Bleichenbacher oracle. Now a bad block
/// yields a synthetic message whose length is spread like a real one's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa1_5_decrypt_does_not_reveal_bad_padding_by_length() {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use base64::Engine as _;
    for (store, h) in Harness::each_store().await {
        let (s, j) = h
            .call(
                "POST",
                "/keys/oracle/create?api-version=7.5",
                Some(json!({"kty": "RSA", "key_size": 2048})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{store}: {j}");
        let n =
            openssl::bn::BigNum::from_slice(&B64.decode(j["key"]["n"].as_str().unwrap()).unwrap())
                .unwrap();
        let e =
            openssl::bn::BigNum::from_slice(&B64.decode(j["key"]["e"].as_str().unwrap()).unwrap())
                .unwrap();
        let public = openssl::rsa::Rsa::from_public_components(n, e).unwrap();
        let decrypt = |ct: Vec<u8>| {
            let h = &h;
            async move {
                let (s, j) = h
                    .call(
                        "POST",
                        "/keys/oracle/decrypt?api-version=7.5",
                        Some(json!({"alg": "RSA1_5", "value": B64.encode(ct)})),
                    )
                    .await;
                assert_eq!(s, StatusCode::OK, "{j}");
                B64.decode(j["value"].as_str().unwrap()).unwrap()
            }
        };
        for len in [10usize, 20, 48] {
            let msg = vec![0x33u8; len];
            let mut ct = vec![0u8; 256];
            let n = public
                .public_encrypt(&msg, &mut ct, openssl::rsa::Padding::PKCS1)
                .unwrap();
            assert_eq!(decrypt(ct[..n].to_vec()).await, msg, "{store}");
        }
        // Invalid blocks: raw RSA of random blocks with a wrong header.
        let mut lengths = std::collections::BTreeSet::new();
        for i in 0..23u8 {
            let mut block = vec![0u8; 256];
            openssl::rand::rand_bytes(&mut block).unwrap();
            block[0] = 0;
            block[1] = 1 + i % 2 * 2; // 0x01 or 0x03: never 0x02
            let mut ct = vec![0u8; 256];
            public
                .public_encrypt(&block, &mut ct, openssl::rsa::Padding::NONE)
                .unwrap();
            let out = decrypt(ct.clone()).await;
            assert_eq!(
                out,
                decrypt(ct).await,
                "{store}: the same answer for the same block"
            );
            assert!(out.len() <= 245, "{store}");
            lengths.insert(out.len());
        }
        assert!(
            lengths.len() >= 15,
            "{store}: lengths of bad blocks are spread, not one value: {lengths:?}"
        );
        h.cleanup().await;
    }
}
