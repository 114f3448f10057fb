//! The security review's sign-in findings (issue 30): lockout, per-source
//! limits, refresh-token reuse, and the audit destination allow-list.

use axum::body::Body;
use http::{Request, StatusCode};
use serde_json::json;

use crate::security::{admin_arm, arm, vault_id};
use crate::{Harness, NOW};

fn login_req(tenant: &str, form: &str, source: &str) -> Request<Body> {
    let mut r = Request::builder()
        .method("POST")
        .uri(format!("/{tenant}/oauth2/v2.0/token"))
        .header("host", "login.localhost:8443")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(form.to_owned()))
        .unwrap();
    let ip: std::net::IpAddr = source.parse().unwrap();
    r.extensions_mut()
        .insert(keyhaven_server::http::PeerAddr((ip, 40000).into()));
    r
}

const CLI: &str = keyhaven_identity::directory::AZURE_CLI_APP_ID;
const SCOPE: &str = "https%3A%2F%2Fvault.localhost%3A8443%2F.default+offline_access";

async fn user(h: &Harness, upn: &str, password: &str) {
    h.state
        .directory
        .create_user(
            &h.principal,
            keyhaven_identity::directory::NewUser {
                upn: upn.into(),
                display_name: "U".into(),
                mail_nickname: None,
                password: keyhaven_core::Sensitive::new(password.into()),
                enabled: true,
            },
        )
        .await
        .unwrap();
}

/// Finding 6: 50 bad client-credentials attempts against the Azure CLI's
/// public client id locked refresh, device-code and auth-code sign-in for
/// every CLI user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_attacker_cannot_lock_out_every_azure_cli_user() {
    for (store, h) in Harness::each_store().await {
        let t = h.tenant_id.clone();
        user(&h, "alice@keyhaven.test", "Correct-Horse-1").await;
        for _ in 0..60 {
            let (s, _, j) = h
                .send(login_req(&t, &format!("grant_type=client_credentials&client_id={CLI}&client_secret=x&scope={SCOPE}"), "192.0.2.66"))
                .await;
            assert_eq!(s, StatusCode::UNAUTHORIZED, "{store}: {j}");
            assert_eq!(
                j["error_codes"][0], 7000218,
                "{store}: a public client has no secret: {j}"
            );
        }
        let password = format!("grant_type=password&client_id={CLI}&username=alice%40keyhaven.test&password=Correct-Horse-1&scope={SCOPE}");
        let (s, _, j) = h.send(login_req(&t, &password, "198.51.100.1")).await;
        assert_eq!(s, StatusCode::OK, "{store}: {j}");
        let refresh = format!(
            "grant_type=refresh_token&client_id={CLI}&refresh_token={}&scope={SCOPE}",
            j["refresh_token"].as_str().unwrap()
        );
        let (s, _, j) = h.send(login_req(&t, &refresh, "198.51.100.1")).await;
        assert_eq!(
            s,
            StatusCode::OK,
            "{store}: refresh works for everyone else: {j}"
        );
        // A device code approved before the user is locked is not spent by
        // a refused poll.
        let issued = h
            .state
            .device_codes
            .issue(CLI, "https://vault.localhost:8443/.default", NOW, None)
            .unwrap();
        let who = h
            .state
            .directory
            .sign_in_with_password(
                CLI,
                "alice@keyhaven.test",
                keyhaven_core::Sensitive::new("Correct-Horse-1".into()),
            )
            .await
            .unwrap();
        assert!(h.state.device_codes.approve(&issued.user_code, who, NOW));
        // Alice herself is locked by wrong passwords from many addresses:
        // her user grants are refused, keyed on her, not on the client id.
        for i in 0..keyhaven_identity::lockout::PER_PRINCIPAL_THRESHOLD {
            let bad = password.replace("Correct-Horse-1", "wrong");
            let (s, _, _) = h
                .send(login_req(&t, &bad, &format!("203.0.113.{}", i % 200 + 1)))
                .await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{store}");
        }
        let (s, _, j) = h.send(login_req(&t, &refresh, "198.51.100.1")).await;
        assert_eq!(
            (s, j["error_codes"][0].as_u64()),
            (StatusCode::BAD_REQUEST, Some(50053)),
            "{store}: {j}"
        );
        let device = format!("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code&client_id={CLI}&device_code={}", issued.device_code);
        let (s, _, j) = h.send(login_req(&t, &device, "198.51.100.1")).await;
        assert_eq!(j["error_codes"][0], 50053, "{store}: {s} {j}");
        h.clock.advance(keyhaven_identity::lockout::WINDOW_SECS + 1);
        let (s, _, j) = h.send(login_req(&t, &device, "198.51.100.1")).await;
        assert_eq!(
            s,
            StatusCode::OK,
            "{store}: the approval survived the refusal: {j}"
        );
        let (s, _, _) = h.send(login_req(&t, &device, "198.51.100.1")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{store}: and is spent once");
        h.cleanup().await;
    }
}

/// Finding 7: any client id and secret ran argon2id, with no bound per
/// source. Now one source gets a bounded burst, then 429 with Retry-After;
/// others are unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_bounds_requests_per_source() {
    for (store, h) in Harness::each_store().await {
        let t = h.tenant_id.clone();
        // Cheap requests (refused after admission, before any hashing)
        // spend the same tokens as expensive ones.
        let form = "grant_type=password&client_id=x&scope=x";
        for _ in 0..keyhaven_server::state::SIGN_IN_BURST {
            let (s, _, _) = h.send(login_req(&t, form, "192.0.2.77")).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{store}");
        }
        let (s, headers, j) = h.send(login_req(&t, form, "192.0.2.77")).await;
        assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{store}: {j}");
        assert!(headers.get("retry-after").is_some());
        let (s, _, _) = h.send(login_req(&t, form, "2001:db8:1:2::5")).await;
        assert_eq!(
            s,
            StatusCode::BAD_REQUEST,
            "{store}: another source is served"
        );
        h.clock.advance(1);
        let (s, _, _) = h.send(login_req(&t, form, "192.0.2.77")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{store}: the bucket refills");
        h.cleanup().await;
    }
}

/// Finding 9: the audit HTTP destination accepted any http(s) URL, a blind
/// SSRF for anyone who may write diagnostic settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_http_destination_is_limited_to_the_operators_allow_list() {
    for (store, h) in Harness::each_store().await {
        let vault = vault_id(&h).await;
        let put = |url: &str| {
            json!({"properties": {"logs": [{"category": "AuditEvent", "enabled": true}],
                                  "keyhavenHttpEndpoint": url}})
        };
        let path = format!("{vault}/providers/Microsoft.Insights/diagnosticSettings/ship");
        for url in [
            "http://169.254.169.254/latest/meta-data/",
            "http://10.0.0.1/",
            "http://127.0.0.2:8080/",
            "http://[::1]:8080/",
            "https://internal.example/",
            "gopher://127.0.0.1/",
        ] {
            let (s, j) = arm(&h, &admin_arm(&h), "PUT", &path, Some(put(url))).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{store} {url}: {j}");
            let m = j["error"]["message"].as_str().unwrap();
            assert!(!m.contains(url), "{store}: the URL is not echoed");
        }
        // The harness's operator allows 127.0.0.1.
        let (s, j) = arm(
            &h,
            &admin_arm(&h),
            "PUT",
            &path,
            Some(put("http://127.0.0.1:9/in")),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{store}: {j}");
        h.cleanup().await;
    }
}

/// Finding 12: refresh tokens rotate; a used one presented again revokes its
/// whole family, so a stolen copy is good for one refresh at most.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_refresh_token_revokes_its_session() {
    for (store, h) in Harness::each_store().await {
        let t = h.tenant_id.clone();
        user(&h, "bob@keyhaven.test", "Correct-Horse-2").await;
        let password = format!("grant_type=password&client_id={CLI}&username=bob%40keyhaven.test&password=Correct-Horse-2&scope={SCOPE}");
        let refresh_with = |rt: &str| {
            format!("grant_type=refresh_token&client_id={CLI}&refresh_token={rt}&scope={SCOPE}")
        };
        let (_, _, j) = h.send(login_req(&t, &password, "198.51.100.2")).await;
        let rt1 = j["refresh_token"].as_str().unwrap().to_owned();
        let (s, _, j) = h
            .send(login_req(&t, &refresh_with(&rt1), "198.51.100.2"))
            .await;
        assert_eq!(s, StatusCode::OK, "{store}: {j}");
        let rt2 = j["refresh_token"].as_str().unwrap().to_owned();
        assert_ne!(rt1, rt2, "{store}: rotated");
        // Within the grace period the replaced token is refused without
        // revoking the session (two processes sharing a cache, a lost reply).
        let (s, _, j) = h
            .send(login_req(&t, &refresh_with(&rt1), "198.51.100.2"))
            .await;
        assert_eq!(
            (s, j["error_codes"][0].as_u64()),
            (StatusCode::BAD_REQUEST, Some(70043)),
            "{store}: {j}"
        );
        let (s, _, j) = h
            .send(login_req(&t, &refresh_with(&rt2), "198.51.100.2"))
            .await;
        assert_eq!(s, StatusCode::OK, "{store}: the family lives: {j}");
        let rt3 = j["refresh_token"].as_str().unwrap().to_owned();
        // Later, an old token is a replay: the whole family is revoked.
        h.clock.advance(keyhaven_identity::refresh::GRACE_SECS + 1);
        let (s, _, j) = h
            .send(login_req(&t, &refresh_with(&rt1), "198.51.100.2"))
            .await;
        assert_eq!(
            (s, j["error_codes"][0].as_u64()),
            (StatusCode::BAD_REQUEST, Some(70043)),
            "{store}: {j}"
        );
        let (s, _, _) = h
            .send(login_req(&t, &refresh_with(&rt3), "198.51.100.2"))
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{store}: the family is revoked");
        // Another sign-in is another family, unaffected.
        let (_, _, j) = h.send(login_req(&t, &password, "198.51.100.2")).await;
        let (s, _, _) = h
            .send(login_req(
                &t,
                &refresh_with(j["refresh_token"].as_str().unwrap()),
                "198.51.100.2",
            ))
            .await;
        assert_eq!(s, StatusCode::OK, "{store}");
        h.cleanup().await;
    }
}
