//! Authorization matrices: every built-in role against every data-plane
//! operation (expected results derived from the role definitions' data
//! actions with an independent matcher), access-policy permissions, and a
//! sweep proving no route answers without an authorization decision.

use http::StatusCode;
use keyhaven_core::{Operation, Principal, PrincipalKind};
use keyhaven_identity::rbac::builtin_roles;
use serde_json::json;

use crate::{code, vault_req, Harness, AUDIENCE, NOW};

/// A fresh service principal of the tenant (no roles), and a token for it.
async fn newcomer(h: &Harness) -> (Principal, String) {
    let p = Principal {
        object_id: uuid::Uuid::new_v4().to_string(),
        tenant_id: h.tenant_id.clone(),
        app_id: Some(uuid::Uuid::new_v4().to_string()),
        kind: PrincipalKind::ServicePrincipal,
    };
    let record = keyhaven_core::PrincipalRecord {
        object_id: p.object_id.clone(),
        tenant_id: p.tenant_id.clone(),
        kind: "servicePrincipal".into(),
        app_id: p.app_id.clone(),
        upn: None,
        display_name: "newcomer".into(),
        enabled: true,
        credentials: "{}".into(),
        attrs: "{}".into(),
        created: NOW,
    };
    h.state.store.create_principal(&record).await.unwrap();
    let token = h
        .issuer("https://login.localhost:8443")
        .mint(&p, AUDIENCE, NOW)
        .unwrap();
    (p, token)
}

/// Independent of `rbac::matches`: split on `*` and find the pieces in order.
fn wildcard(pattern: &str, action: &str) -> bool {
    let (p, a) = (pattern.to_lowercase(), action.to_lowercase());
    let parts: Vec<&str> = p.split('*').collect();
    if parts.len() == 1 {
        return p == a;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !a.starts_with(first) || !a.ends_with(last) || a.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &a[first.len()..a.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

fn cert_policy() -> serde_json::Value {
    json!({"policy": {"issuer": {"name": "Self"}, "x509_props": {"subject": "CN=c"}, "key_props": {"kty": "EC"}}})
}

type Req = (&'static str, String, Option<serde_json::Value>);

/// The request that performs each operation on secret `s`, key `k` or
/// certificate `c` (set up to exist or be deleted as the operation needs).
fn request_for(op: Operation) -> Req {
    secret_request(op)
        .or_else(|| key_request(op))
        .or_else(|| certificate_request(op))
        .unwrap_or_else(|| panic!("no request for {op:?}"))
}

fn secret_request(op: Operation) -> Option<Req> {
    let v = "api-version=7.5";
    let r = match op {
        Operation::SecretSet => (
            "PUT",
            format!("/secrets/s?{v}"),
            Some(json!({"value": "x"})),
        ),
        Operation::SecretGet => ("GET", format!("/secrets/s?{v}"), None),
        Operation::SecretUpdate => (
            "PATCH",
            format!("/secrets/s?{v}"),
            Some(json!({"contentType": "t"})),
        ),
        Operation::SecretList => ("GET", format!("/secrets?{v}"), None),
        Operation::SecretListVersions => ("GET", format!("/secrets/s/versions?{v}"), None),
        Operation::SecretDelete => ("DELETE", format!("/secrets/s?{v}"), None),
        Operation::SecretGetDeleted => ("GET", format!("/deletedsecrets/d?{v}"), None),
        Operation::SecretListDeleted => ("GET", format!("/deletedsecrets?{v}"), None),
        Operation::SecretRecover => ("POST", format!("/deletedsecrets/d/recover?{v}"), None),
        Operation::SecretPurge => ("DELETE", format!("/deletedsecrets/d?{v}"), None),
        Operation::SecretBackup => ("POST", format!("/secrets/s/backup?{v}"), None),
        Operation::SecretRestore => (
            "POST",
            format!("/secrets/restore?{v}"),
            Some(json!({"value": "AAAA"})),
        ),
        _ => return None,
    };
    Some(r)
}

fn key_request(op: Operation) -> Option<Req> {
    let v = "api-version=7.5";
    let r = match op {
        Operation::KeyCreate => (
            "POST",
            format!("/keys/k/create?{v}"),
            Some(json!({"kty": "EC"})),
        ),
        Operation::KeyGet => ("GET", format!("/keys/k?{v}"), None),
        Operation::KeyList => ("GET", format!("/keys?{v}"), None),
        Operation::KeyListVersions => ("GET", format!("/keys/k/versions?{v}"), None),
        Operation::KeyDelete => ("DELETE", format!("/keys/k?{v}"), None),
        Operation::KeyGetDeleted => ("GET", format!("/deletedkeys/dk?{v}"), None),
        Operation::KeyListDeleted => ("GET", format!("/deletedkeys?{v}"), None),
        Operation::KeyRecover => ("POST", format!("/deletedkeys/dk/recover?{v}"), None),
        Operation::KeyPurge => ("DELETE", format!("/deletedkeys/dk?{v}"), None),
        Operation::KeySign => (
            "POST",
            format!("/keys/k/sign?{v}"),
            Some(json!({"alg": "ES256", "value": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"})),
        ),
        Operation::KeyVerify => (
            "POST",
            format!("/keys/k/verify?{v}"),
            Some(
                json!({"alg": "ES256", "digest": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                        "value": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}),
            ),
        ),
        Operation::KeyEncrypt => (
            "POST",
            format!("/keys/k/encrypt?{v}"),
            Some(json!({"alg": "RSA-OAEP", "value": "AAAA"})),
        ),
        Operation::KeyDecrypt => (
            "POST",
            format!("/keys/k/decrypt?{v}"),
            Some(json!({"alg": "RSA-OAEP", "value": "AAAA"})),
        ),
        Operation::KeyWrap => (
            "POST",
            format!("/keys/k/wrapkey?{v}"),
            Some(json!({"alg": "RSA-OAEP", "value": "AAAA"})),
        ),
        Operation::KeyUnwrap => (
            "POST",
            format!("/keys/k/unwrapkey?{v}"),
            Some(json!({"alg": "RSA-OAEP", "value": "AAAA"})),
        ),
        Operation::KeyUpdate => (
            "PATCH",
            format!("/keys/k?{v}"),
            Some(json!({"tags": {"a": "b"}})),
        ),
        Operation::KeyImport => (
            "PUT",
            format!("/keys/imp?{v}"),
            Some(json!({"key": {"kty": "EC"}})),
        ),
        Operation::KeyBackup => ("POST", format!("/keys/k/backup?{v}"), None),
        Operation::KeyRotate => ("POST", format!("/keys/k/rotate?{v}"), None),
        Operation::KeyGetRotationPolicy => ("GET", format!("/keys/k/rotationpolicy?{v}"), None),
        Operation::KeySetRotationPolicy => (
            "PUT",
            format!("/keys/k/rotationpolicy?{v}"),
            Some(json!({"lifetimeActions": [], "attributes": {"expiryTime": "P90D"}})),
        ),
        Operation::KeyRestore => (
            "POST",
            format!("/keys/restore?{v}"),
            Some(json!({"value": "AAAA"})),
        ),
        _ => return None,
    };
    Some(r)
}

fn certificate_request(op: Operation) -> Option<Req> {
    let v = "api-version=7.5";
    let r = match op {
        Operation::CertificateCreate => (
            "POST",
            format!("/certificates/cc/create?{v}"),
            Some(cert_policy()),
        ),
        Operation::CertificateGet => ("GET", format!("/certificates/c?{v}"), None),
        Operation::CertificateBackup => ("POST", format!("/certificates/c/backup?{v}"), None),
        Operation::CertificateRestore => (
            "POST",
            format!("/certificates/restore?{v}"),
            Some(json!({"value": "AAAA"})),
        ),
        Operation::CertificateSetIssuer => (
            "PUT",
            format!("/certificates/issuers/i?{v}"),
            Some(json!({"provider": "DigiCert"})),
        ),
        Operation::CertificateGetIssuer => ("GET", format!("/certificates/issuers/i?{v}"), None),
        Operation::CertificateListIssuers => ("GET", format!("/certificates/issuers?{v}"), None),
        Operation::CertificateDeleteIssuer => {
            ("DELETE", format!("/certificates/issuers/i?{v}"), None)
        }
        Operation::CertificateContacts => (
            "PUT",
            format!("/certificates/contacts?{v}"),
            Some(json!({"contacts": [{"email": "a@b.c"}]})),
        ),
        Operation::CertificateImport => (
            "POST",
            format!("/certificates/ci/import?{v}"),
            Some(json!({"value": "AAAA"})),
        ),
        Operation::CertificateList => ("GET", format!("/certificates?{v}"), None),
        Operation::CertificateUpdate => (
            "PATCH",
            format!("/certificates/c?{v}"),
            Some(json!({"tags": {"a": "b"}})),
        ),
        Operation::CertificateDelete => ("DELETE", format!("/certificates/c?{v}"), None),
        Operation::CertificateGetDeleted => ("GET", format!("/deletedcertificates/dc?{v}"), None),
        Operation::CertificateListDeleted => ("GET", format!("/deletedcertificates?{v}"), None),
        Operation::CertificateRecover => {
            ("POST", format!("/deletedcertificates/dc/recover?{v}"), None)
        }
        Operation::CertificatePurge => ("DELETE", format!("/deletedcertificates/dc?{v}"), None),
        _ => return None,
    };
    Some(r)
}

/// Makes the soft-deleted fixtures `d`, `dk` and `dc`.
async fn fresh_deleted(h: &Harness) {
    h.call(
        "PUT",
        "/secrets/d?api-version=7.5",
        Some(json!({"value": "x"})),
    )
    .await;
    h.call("DELETE", "/secrets/d?api-version=7.5", None).await;
    h.call(
        "POST",
        "/keys/dk/create?api-version=7.5",
        Some(json!({"kty": "EC"})),
    )
    .await;
    h.call("DELETE", "/keys/dk?api-version=7.5", None).await;
    h.call(
        "POST",
        "/certificates/dc/create?api-version=7.5",
        Some(cert_policy()),
    )
    .await;
    h.call("DELETE", "/certificates/dc?api-version=7.5", None)
        .await;
}

/// Undoes what an operation may have done to the fixtures.
async fn undo_operation(h: &Harness) {
    h.call("DELETE", "/deletedsecrets/d?api-version=7.5", None)
        .await;
    h.call(
        "PUT",
        "/secrets/s?api-version=7.5",
        Some(json!({"value": "x"})),
    )
    .await;
    h.call("DELETE", "/deletedkeys/dk?api-version=7.5", None)
        .await;
    h.call("POST", "/deletedkeys/k/recover?api-version=7.5", None)
        .await;
    h.call(
        "POST",
        "/deletedcertificates/c/recover?api-version=7.5",
        None,
    )
    .await;
    h.call(
        "POST",
        "/keys/k/create?api-version=7.5",
        Some(json!({"kty": "EC"})),
    )
    .await;
}

#[tokio::test]
async fn every_builtin_role_allows_exactly_its_data_actions() {
    let h = Harness::new().await;
    // Fixtures, made by the bootstrap principal (Key Vault Administrator).
    h.call(
        "PUT",
        "/secrets/s?api-version=7.5",
        Some(json!({"value": "x"})),
    )
    .await;
    let bootstrap = h.principal.clone();
    h.call(
        "POST",
        "/keys/k/create?api-version=7.5",
        Some(json!({"kty": "EC"})),
    )
    .await;
    let (s, j) = h
        .call(
            "POST",
            "/certificates/c/create?api-version=7.5",
            Some(cert_policy()),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{j}");
    let vault = h
        .state
        .vault(&"dev".parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    for role in builtin_roles() {
        let (p, token) = newcomer(&h).await;
        h.state
            .authz
            .put_assignment(
                &bootstrap,
                &vault.resource_id(),
                &uuid::Uuid::new_v4().to_string(),
                keyhaven_identity::roles::NewAssignment {
                    role_definition_id: &role.id,
                    principal_id: &p.object_id,
                    principal_type: None,
                    condition: None,
                },
            )
            .await
            .unwrap();
        for op in Operation::ALL {
            // Fresh state per operation: `s` live, `d` soft-deleted.
            fresh_deleted(&h).await;
            let expected = role.permissions.iter().any(|perm| {
                perm.data_actions
                    .iter()
                    .any(|a| wildcard(a, op.data_action()))
                    && !perm
                        .not_data_actions
                        .iter()
                        .any(|a| wildcard(a, op.data_action()))
            });
            let (method, path, body) = request_for(*op);
            let (status, _, j) = h
                .send(vault_req(
                    method,
                    &path,
                    Some(&token),
                    body.map(|b| b.to_string()),
                ))
                .await;
            let refused = status == StatusCode::FORBIDDEN
                && j["error"]["innererror"]["code"] == "ForbiddenByRbac";
            assert_eq!(
                !refused, expected,
                "{} × {op:?}: {status} {j}",
                role.role_name
            );
            if refused {
                let msg = j["error"]["message"].as_str().unwrap();
                assert!(
                    msg.contains(op.data_action()) && msg.contains(&p.object_id),
                    "{msg}"
                );
            }
            undo_operation(&h).await;
        }
    }
}

#[tokio::test]
async fn access_policy_permissions_allow_exactly_their_operations() {
    let h = Harness::new().await;
    let vault = h
        .state
        .vault(&"dev".parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    let (p, token) = newcomer(&h).await;
    for perm in [
        "get", "list", "set", "delete", "backup", "restore", "recover", "purge", "all", "GET",
    ] {
        let mut vault = h.state.store.get_vault(&vault.name).await.unwrap().unwrap();
        let props = &mut vault.properties;
        props.rbac_authorization = false;
        props.access_policies = vec![keyhaven_core::vault::AccessPolicy {
            tenant_id: h.tenant_id.clone(),
            object_id: p.object_id.clone(),
            application_id: None,
            permissions: keyhaven_core::vault::Permissions {
                secrets: vec![perm.to_owned()],
                // Key permissions never open secrets.
                keys: vec!["all".into()],
                ..Default::default()
            },
        }];
        assert!(h.state.store.replace_vault(&vault).await.unwrap());
        for op in Operation::ALL {
            let (category, needed) = op.permission();
            // Keys are granted `all`; secrets only the permission under test.
            let expected = category == "keys"
                || (category == "secrets" && (perm.eq_ignore_ascii_case(needed) || perm == "all"));
            let (method, path, body) = request_for(*op);
            let (status, _, j) = h
                .send(vault_req(
                    method,
                    &path,
                    Some(&token),
                    body.map(|b| b.to_string()),
                ))
                .await;
            let refused = status == StatusCode::FORBIDDEN
                && j["error"]["innererror"]["code"] == "ForbiddenByPolicy";
            assert_eq!(!refused, expected, "{perm} × {op:?}: {status} {j}");
        }
    }
}

#[tokio::test]
async fn no_data_plane_route_answers_without_an_authorization_decision() {
    let h = Harness::new().await;
    h.call(
        "PUT",
        "/secrets/s?api-version=7.5",
        Some(json!({"value": "x"})),
    )
    .await;
    let (_, token) = newcomer(&h).await;
    let mut probed = 0;
    let templates = keyhaven_server::http::data::secrets::ROUTE_PATHS
        .iter()
        .chain(keyhaven_server::http::data::keys::ROUTE_PATHS.iter())
        .chain(keyhaven_server::http::data::certificates::ROUTE_PATHS.iter());
    for template in templates {
        let path = template
            .replace("{name}", "s")
            .replace("{version}", "versions")
            .replace("{op}", "sign");
        for method in ["GET", "PUT", "PATCH", "POST", "DELETE"] {
            let body = Some(json!({"value": "x"}).to_string());
            let (status, _, j) = h
                .send(vault_req(
                    method,
                    &format!("{path}?api-version=7.5"),
                    Some(&token),
                    body,
                ))
                .await;
            // Either refused by authorization, or no such method on the path.
            assert!(
                status == StatusCode::FORBIDDEN || status == StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path} answered {status} without authorization: {j}"
            );
            if status == StatusCode::FORBIDDEN {
                assert_eq!(code(&j), "Forbidden");
                probed += 1;
            }
        }
    }
    assert!(probed >= 20, "only {probed} routes probed");
}
