//! Authentication on the data plane and the token endpoint.

use axum::body::Body;
use http::{Request, StatusCode};
use keyhaven_core::{Principal, PrincipalKind};
use keyhaven_identity::token::forge;
use serde_json::json;

use crate::{code, vault_req, Harness, AUDIENCE, NOW};

fn token_req(tenant: &str, form: &str) -> Request<Body> {
    Request::builder()
        .method("POST")
        .uri(format!("/{tenant}/oauth2/v2.0/token"))
        .header("host", "login.localhost:8443")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(form.to_owned()))
        .unwrap()
}

#[tokio::test]
async fn request_without_token_gets_the_challenge_before_any_validation() {
    let h = Harness::new().await;
    // The SDK's first request: real method and path, no body, no token.
    let (status, headers, body) = h
        .send(vault_req(
            "PUT",
            "/secrets/x?api-version=2026-04-01",
            None,
            None,
        ))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(code(&body), "Unauthorized");
    let challenge = headers["www-authenticate"].to_str().unwrap();
    assert_eq!(
        challenge,
        format!("Bearer authorization=\"https://login.localhost:8443/{}\", resource=\"https://vault.localhost:8443\"", h.tenant_id)
    );
    // Even without an api-version, the challenge comes first.
    let (status, _, _) = h.send(vault_req("GET", "/secrets/x", None, None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn every_invalid_token_is_refused_with_401_and_a_challenge() {
    let h = Harness::new().await;
    let good = h.token();
    let claims = forge::claims_of(&good).unwrap();
    let sig = good.rsplit('.').next().unwrap().to_owned();
    let mut altered = claims.clone();
    altered["oid"] = json!("00000000-0000-0000-0000-000000000000");
    let header = json!({"alg": "RS256", "typ": "JWT"});
    let cases: Vec<(&str, String)> = vec![
        (
            "expired",
            h.issuer("https://login.localhost:8443")
                .mint(&h.principal, AUDIENCE, NOW - 7200)
                .unwrap(),
        ),
        (
            "not yet valid",
            h.issuer("https://login.localhost:8443")
                .mint(&h.principal, AUDIENCE, NOW + 3600)
                .unwrap(),
        ),
        (
            "wrong audience",
            h.issuer("https://login.localhost:8443")
                .mint(&h.principal, "https://management.localhost:8443", NOW)
                .unwrap(),
        ),
        (
            "wrong issuer",
            h.issuer("https://login.evil.test")
                .mint(&h.principal, AUDIENCE, NOW)
                .unwrap(),
        ),
        ("alg none", forge::raw(&json!({"alg": "none"}), &claims, "")),
        ("bad signature", forge::raw(&header, &altered, &sig)),
        (
            "hs256",
            forge::hs256(&claims, b"any-shared-secret").unwrap(),
        ),
        ("garbage", "not-a-jwt".to_owned()),
    ];
    for (what, token) in cases {
        let (status, headers, body) = h
            .send(vault_req(
                "GET",
                "/secrets?api-version=7.5",
                Some(&token),
                None,
            ))
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}");
        assert_eq!(code(&body), "Unauthorized", "{what}");
        assert!(headers.contains_key("www-authenticate"), "{what}");
    }
    // And the unaltered token works.
    let (status, _, _) = h
        .send(vault_req(
            "GET",
            "/secrets?api-version=7.5",
            Some(&good),
            None,
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn clock_moving_past_expiry_invalidates_a_token() {
    let h = Harness::new().await;
    let t = h.token();
    h.clock.advance(3600 + 121);
    let (status, _, _) = h
        .send(vault_req("GET", "/secrets?api-version=7.5", Some(&t), None))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn another_principal_of_the_tenant_is_forbidden_for_now() {
    let h = Harness::new().await;
    let other = Principal {
        object_id: "11111111-1111-1111-1111-111111111111".into(),
        tenant_id: h.tenant_id.clone(),
        app_id: Some("22222222-2222-2222-2222-222222222222".into()),
        kind: PrincipalKind::ServicePrincipal,
    };
    let t = h
        .issuer("https://login.localhost:8443")
        .mint(&other, AUDIENCE, NOW)
        .unwrap();
    let (status, _, body) = h
        .send(vault_req("GET", "/secrets?api-version=7.5", Some(&t), None))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(code(&body), "Forbidden");
}

#[tokio::test]
async fn token_endpoint_issues_tokens_only_for_valid_clients_and_scopes() {
    let h = Harness::new().await;
    let secret = urlencode(&h.client_secret);
    let ok = format!(
        "grant_type=client_credentials&client_id={}&client_secret={secret}&scope=https%3A%2F%2Fvault.localhost%3A8443%2F.default",
        h.client_id
    );
    let (status, _, body) = h.send(token_req(&h.tenant_id, &ok)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    let token = body["access_token"].as_str().unwrap();
    let (status, _, _) = h
        .send(vault_req(
            "GET",
            "/secrets?api-version=7.5",
            Some(token),
            None,
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(forge::claims_of(token).unwrap()["aud"], AUDIENCE);

    let wrong_secret = ok.replace(&secret, "wrong");
    let (status, _, body) = h.send(token_req(&h.tenant_id, &wrong_secret)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "invalid_client");
    assert!(!body.to_string().contains(&h.client_secret));

    let unknown_client = ok.replace(&h.client_id, "33333333-3333-3333-3333-333333333333");
    let (status, _, body) = h.send(token_req(&h.tenant_id, &unknown_client)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "invalid_client");

    let (status, _, body) = h
        .send(token_req("44444444-4444-4444-4444-444444444444", &ok))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_request");

    let bad_scope = ok.replace("vault.localhost", "elsewhere.example");
    let (status, _, body) = h.send(token_req(&h.tenant_id, &bad_scope)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_scope");

    let bad_grant = ok.replace("client_credentials", "urn:example:unknown");
    let (status, _, body) = h.send(token_req(&h.tenant_id, &bad_grant)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "unsupported_grant_type");
}

#[tokio::test]
async fn discovery_documents_describe_the_issuer() {
    let h = Harness::new().await;
    let get = |path: String| {
        Request::builder()
            .uri(path)
            .header("host", "login.localhost:8443")
            .body(Body::empty())
            .unwrap()
    };
    let (status, _, conf) = h
        .send(get(format!(
            "/{}/v2.0/.well-known/openid-configuration",
            h.tenant_id
        )))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        conf["issuer"],
        format!("https://login.localhost:8443/{}/v2.0", h.tenant_id)
    );
    assert_eq!(
        conf["token_endpoint"],
        format!(
            "https://login.localhost:8443/{}/oauth2/v2.0/token",
            h.tenant_id
        )
    );
    let (status, _, jwks) = h
        .send(get(format!("/{}/discovery/v2.0/keys", h.tenant_id)))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(jwks["keys"][0]["kty"], "RSA");
    assert!(jwks["keys"][0].get("d").is_none());
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn repeated_wrong_secrets_lock_the_client_even_for_the_right_secret() {
    let h = Harness::new().await;
    let secret = urlencode(&h.client_secret);
    let ok = format!(
        "grant_type=client_credentials&client_id={}&client_secret={secret}&scope=https%3A%2F%2Fvault.localhost%3A8443%2F.default",
        h.client_id
    );
    let wrong = ok.replace(&secret, "wrong");
    for _ in 0..keyhaven_identity::lockout::PER_SOURCE_THRESHOLD {
        let (status, _, body) = h.send(token_req(&h.tenant_id, &wrong)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error_codes"][0], 7000215);
    }
    let (status, _, body) = h.send(token_req(&h.tenant_id, &ok)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error_codes"][0], 50053, "{body}");
    // The lock ends with the window.
    h.clock.advance(keyhaven_identity::lockout::WINDOW_SECS + 1);
    let (status, _, _) = h.send(token_req(&h.tenant_id, &ok)).await;
    assert_eq!(status, StatusCode::OK);
}
