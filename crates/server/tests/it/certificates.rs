//! Certificate renewal by the scheduler, driven with the fixed clock: AutoRenew
//! at a lifetime percentage or days before expiry, once per version even with
//! racing passes, with or without key reuse, self-signed and from the private
//! CA; EmailContacts reported once.

use http::StatusCode;
use keyhaven_core::certificate::CertificateAction;
use serde_json::{json, Value};

use crate::Harness;

const DAY: i64 = 86_400;
const V: &str = "api-version=7.5";

async fn create(h: &Harness, name: &str, policy: Value) {
    let (s, j) = h
        .call(
            "POST",
            &format!("/certificates/{name}/create?{V}"),
            Some(json!({"policy": policy})),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{j}");
}

async fn latest(h: &Harness, name: &str) -> Value {
    let (s, j) = h
        .call("GET", &format!("/certificates/{name}?{V}"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{j}");
    j
}

async fn key_n(h: &Harness, name: &str) -> Value {
    let (_, j) = h.call("GET", &format!("/keys/{name}?{V}"), None).await;
    j["key"]["n"].clone()
}

fn der_of(bundle: &Value) -> openssl::x509::X509 {
    use base64::Engine as _;
    let der = base64::engine::general_purpose::STANDARD
        .decode(bundle["cer"].as_str().unwrap())
        .unwrap();
    openssl::x509::X509::from_der(&der).unwrap()
}

fn version_of(bundle: &Value) -> String {
    bundle["id"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn auto_renew_at_a_lifetime_percentage_runs_once_per_version() {
    let h = Harness::new().await;
    let svc = &h.state.service;
    for (name, reuse) in [("fresh", false), ("reused", true)] {
        create(
            &h,
            name,
            json!({
                "issuer": {"name": "Self"},
                "key_props": {"kty": "RSA", "reuse_key": reuse},
                "x509_props": {"subject": format!("CN={name}"), "validity_months": 10},
                "lifetime_actions": [{"trigger": {"lifetime_percentage": 50}, "action": {"action_type": "AutoRenew"}}]
            }),
        )
        .await;
    }
    let first = latest(&h, "fresh").await;
    let (nbf, exp) = (
        first["attributes"]["nbf"].as_i64().unwrap(),
        first["attributes"]["exp"].as_i64().unwrap(),
    );
    let n_fresh = key_n(&h, "fresh").await;
    let n_reused = key_n(&h, "reused").await;

    h.clock.set(nbf + (exp - nbf) / 2 - 1);
    assert!(svc.run_certificate_renewals().await.unwrap().is_empty());
    h.clock.advance(1);
    let (a, b) = tokio::join!(
        svc.run_certificate_renewals(),
        svc.run_certificate_renewals()
    );
    let done: Vec<_> = a.unwrap().into_iter().chain(b.unwrap()).collect();
    assert_eq!(done.len(), 2, "{done:?}");
    assert!(done
        .iter()
        .all(|d| d.action == CertificateAction::AutoRenew));
    assert!(
        svc.run_certificate_renewals().await.unwrap().is_empty(),
        "once per version"
    );

    let renewed = latest(&h, "fresh").await;
    assert_ne!(version_of(&renewed), version_of(&first));
    assert_ne!(renewed["cer"], first["cer"]);
    assert_eq!(
        renewed["attributes"]["nbf"].as_i64().unwrap(),
        keyhaven_core::Clock::now(&*h.clock)
    );
    assert_ne!(
        key_n(&h, "fresh").await,
        n_fresh,
        "a new key without reuse_key"
    );
    assert_eq!(
        key_n(&h, "reused").await,
        n_reused,
        "reuse_key keeps the key"
    );
    let (_, versions) = h
        .call("GET", &format!("/certificates/fresh/versions?{V}"), None)
        .await;
    assert_eq!(versions["value"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn private_ca_certificates_renew_days_before_expiry_and_contacts_are_notified_once() {
    let h = Harness::new().await;
    let svc = &h.state.service;
    create(
        &h,
        "ca",
        json!({
            "issuer": {"name": "Self"},
            "key_props": {"kty": "EC", "crv": "P-256"},
            "x509_props": {"subject": "CN=Team CA", "validity_months": 60,
                           "key_usage": ["keyCertSign", "cRLSign", "digitalSignature"]},
            "lifetime_actions": [{"trigger": {"lifetime_percentage": 90}, "action": {"action_type": "EmailContacts"}}]
        }),
    )
    .await;
    let (s, j) = h
        .call(
            "PUT",
            &format!("/certificates/issuers/team?{V}"),
            Some(json!({"provider": "Keyhaven-PrivateCA", "credentials": {"account_id": "ca"}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{j}");
    create(
        &h,
        "leaf",
        json!({
            "issuer": {"name": "team"},
            "x509_props": {"subject": "CN=leaf", "validity_months": 3},
            "lifetime_actions": [{"trigger": {"days_before_expiry": 30}, "action": {"action_type": "AutoRenew"}}]
        }),
    )
    .await;
    let first = latest(&h, "leaf").await;
    let exp = first["attributes"]["exp"].as_i64().unwrap();
    h.clock.set(exp - 30 * DAY);
    let done = svc.run_certificate_renewals().await.unwrap();
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(
        (done[0].name.as_str(), done[0].action),
        ("leaf", CertificateAction::AutoRenew)
    );
    let renewed = latest(&h, "leaf").await;
    assert_ne!(version_of(&renewed), version_of(&first));
    assert_eq!(renewed["policy"]["issuer"]["name"], "team");
    // The renewed certificate is chained to the CA: issued and signed by it.
    let ca_cert = der_of(&latest(&h, "ca").await);
    let leaf_cert = der_of(&renewed);
    assert_eq!(
        leaf_cert.issuer_name().to_der().unwrap(),
        ca_cert.subject_name().to_der().unwrap()
    );
    assert!(leaf_cert.verify(&ca_cert.public_key().unwrap()).unwrap());
    assert_ne!(
        leaf_cert.serial_number().to_bn().unwrap(),
        der_of(&first).serial_number().to_bn().unwrap()
    );

    // Near the CA's own end: its EmailContacts action is reported, once.
    let ca = latest(&h, "ca").await;
    let (nbf, exp) = (
        ca["attributes"]["nbf"].as_i64().unwrap(),
        ca["attributes"]["exp"].as_i64().unwrap(),
    );
    h.clock.set(nbf + (exp - nbf) * 9 / 10);
    let done = svc.run_certificate_renewals().await.unwrap();
    let notified: Vec<_> = done
        .iter()
        .filter(|d| d.action == CertificateAction::EmailContacts)
        .collect();
    assert_eq!(notified.len(), 1, "{done:?}");
    assert_eq!(notified[0].name, "ca");
    let again = svc.run_certificate_renewals().await.unwrap();
    assert!(
        again
            .iter()
            .all(|d| d.action != CertificateAction::EmailContacts),
        "{again:?}"
    );
}
