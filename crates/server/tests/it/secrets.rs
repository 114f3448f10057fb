//! The secrets surface, including Azure's error behaviour for bad input.

use http::StatusCode;
use serde_json::{json, Value};

use crate::{code, vault_req, Harness};

const V: &str = "api-version=2026-04-01";

fn p(path: &str) -> String {
    if path.contains('?') {
        format!("{path}&{V}")
    } else {
        format!("{path}?{V}")
    }
}

fn version_of(j: &Value) -> String {
    j["id"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn set_get_update_and_versions() {
    let h = Harness::new().await;
    let (s, a) = h
        .call(
            "PUT",
            &p("/secrets/MySecret"),
            Some(json!({"value": "one", "contentType": "text/plain", "tags": {"env": "dev"}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{a}");
    assert_eq!(a["value"], "one");
    assert!(a["id"]
        .as_str()
        .unwrap()
        .starts_with("https://dev.vault.localhost:8443/secrets/MySecret/"));
    assert_eq!(version_of(&a).len(), 32);
    assert_eq!(a["attributes"]["recoveryLevel"], "Recoverable+Purgeable");
    let (_, b) = h
        .call(
            "PUT",
            &p("/secrets/mysecret"),
            Some(json!({"value": "two"})),
        )
        .await;
    // Casing of the first creation is kept; the trailing slash means latest.
    let (s, latest) = h.call("GET", &p("/secrets/MYSECRET/"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(latest["value"], "two");
    assert!(latest["id"]
        .as_str()
        .unwrap()
        .contains("/secrets/MySecret/"));
    let (_, old) = h
        .call(
            "GET",
            &p(&format!("/secrets/MySecret/{}", version_of(&a))),
            None,
        )
        .await;
    assert_eq!(old["value"], "one");
    assert_eq!(old["tags"]["env"], "dev");

    let (s, upd) = h
        .call(
            "PATCH",
            &p(&format!("/secrets/MySecret/{}", version_of(&b))),
            Some(json!({"contentType": "x", "attributes": {"exp": 2_000_000_000}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{upd}");
    assert!(upd.get("value").is_none());
    assert_eq!(upd["contentType"], "x");
    assert_eq!(upd["attributes"]["exp"], 2_000_000_000);

    let (s, versions) = h.call("GET", &p("/secrets/MySecret/versions"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(versions["value"].as_array().unwrap().len(), 2);
    assert!(versions["value"][0].get("value").is_none());
    assert_eq!(versions["nextLink"], Value::Null);
}

#[tokio::test]
async fn lists_page_with_maxresults_and_next_links() {
    let h = Harness::new().await;
    for n in ["a", "b", "c", "d", "e"] {
        h.call(
            "PUT",
            &p(&format!("/secrets/{n}")),
            Some(json!({"value": n})),
        )
        .await;
    }
    let mut names = Vec::new();
    let mut url = p("/secrets?maxresults=2");
    for _ in 0..5 {
        let (s, page) = h.call("GET", &url, None).await;
        assert_eq!(s, StatusCode::OK, "{page}");
        for item in page["value"].as_array().unwrap() {
            assert!(item.get("value").is_none());
            names.push(
                item["id"]
                    .as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_owned(),
            );
        }
        match page["nextLink"].as_str() {
            Some(next) => {
                url = next
                    .trim_start_matches("https://dev.vault.localhost:8443")
                    .to_owned()
            }
            None => break,
        }
    }
    assert_eq!(names, ["a", "b", "c", "d", "e"]);
    let (s, j) = h.call("GET", &p("/secrets?maxresults=26"), None).await;
    assert_eq!((s, code(&j)), (StatusCode::BAD_REQUEST, "BadParameter"));
    let (s, j) = h.call("GET", &p("/secrets?maxresults=zero"), None).await;
    assert_eq!((s, code(&j)), (StatusCode::BAD_REQUEST, "BadParameter"));
}

#[tokio::test]
async fn delete_recover_purge_and_name_reuse() {
    let h = Harness::new().await;
    h.call("PUT", &p("/secrets/gone"), Some(json!({"value": "v"})))
        .await;
    let (s, d) = h.call("DELETE", &p("/secrets/gone"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        d["recoveryId"],
        "https://dev.vault.localhost:8443/deletedsecrets/gone"
    );
    assert_eq!(
        d["scheduledPurgeDate"].as_i64().unwrap() - d["deletedDate"].as_i64().unwrap(),
        90 * 86400
    );
    let (s, j) = h.call("GET", &p("/secrets/gone"), None).await;
    assert_eq!((s, code(&j)), (StatusCode::NOT_FOUND, "SecretNotFound"));
    let (s, j) = h
        .call("PUT", &p("/secrets/gone"), Some(json!({"value": "again"})))
        .await;
    assert_eq!((s, code(&j)), (StatusCode::CONFLICT, "Conflict"));
    assert_eq!(
        j["error"]["innererror"]["code"],
        "ObjectIsDeletedButRecoverable"
    );
    let (s, list) = h.call("GET", &p("/deletedsecrets"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        list["value"][0]["id"],
        "https://dev.vault.localhost:8443/secrets/gone"
    );
    let (s, _) = h.call("GET", &p("/deletedsecrets/gone"), None).await;
    assert_eq!(s, StatusCode::OK);

    let (s, r) = h
        .call("POST", &p("/deletedsecrets/gone/recover"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let (_, got) = h.call("GET", &p("/secrets/gone"), None).await;
    assert_eq!(got["value"], "v");

    let (s, j) = h.call("DELETE", &p("/deletedsecrets/gone"), None).await;
    assert_eq!(
        (s, code(&j)),
        (StatusCode::NOT_FOUND, "SecretNotFound"),
        "live secrets are not purged"
    );
    h.call("DELETE", &p("/secrets/gone"), None).await;
    let (s, _) = h.call("DELETE", &p("/deletedsecrets/gone"), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = h.call("GET", &p("/deletedsecrets/gone"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = h
        .call("PUT", &p("/secrets/gone"), Some(json!({"value": "fresh"})))
        .await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn backup_and_restore_round_trip_every_version() {
    let h = Harness::new().await;
    h.call("PUT", &p("/secrets/bk"), Some(json!({"value": "first"})))
        .await;
    h.call("PUT", &p("/secrets/bk"), Some(json!({"value": "second"})))
        .await;
    let (s, b) = h.call("POST", &p("/secrets/bk/backup"), None).await;
    assert_eq!(s, StatusCode::OK);
    let blob = b["value"].as_str().unwrap().to_owned();
    assert!(!blob.contains("first") && !blob.contains('='));
    let (s, j) = h
        .call("POST", &p("/secrets/restore"), Some(json!({"value": blob})))
        .await;
    assert_eq!((s, code(&j)), (StatusCode::CONFLICT, "Conflict"));
    h.call("DELETE", &p("/secrets/bk"), None).await;
    let (s, _) = h
        .call("POST", &p("/secrets/restore"), Some(json!({"value": blob})))
        .await;
    assert_eq!(
        s,
        StatusCode::CONFLICT,
        "a deleted name still blocks restore"
    );
    h.call("DELETE", &p("/deletedsecrets/bk"), None).await;
    let (s, r) = h
        .call("POST", &p("/secrets/restore"), Some(json!({"value": blob})))
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert!(r.get("value").is_none());
    let (_, got) = h.call("GET", &p("/secrets/bk"), None).await;
    assert_eq!(got["value"], "second");
    let (_, versions) = h.call("GET", &p("/secrets/bk/versions"), None).await;
    assert_eq!(versions["value"].as_array().unwrap().len(), 2);

    let mut tampered = blob.clone().into_bytes();
    let mid = tampered.len() / 2;
    tampered[mid] = if tampered[mid] == b'A' { b'B' } else { b'A' };
    let (s, j) = h
        .call(
            "POST",
            &p("/secrets/restore"),
            Some(json!({"value": String::from_utf8(tampered).unwrap()})),
        )
        .await;
    assert_eq!((s, code(&j)), (StatusCode::BAD_REQUEST, "BadParameter"));
    let (s, j) = h
        .call(
            "POST",
            &p("/secrets/restore"),
            Some(json!({"value": "***"})),
        )
        .await;
    assert_eq!((s, code(&j)), (StatusCode::BAD_REQUEST, "BadParameter"));
    let (s, _) = h.call("POST", &p("/secrets/nosuch/backup"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn disabled_secret_cannot_be_read_but_is_listed() {
    let h = Harness::new().await;
    h.call(
        "PUT",
        &p("/secrets/off"),
        Some(json!({"value": "v", "attributes": {"enabled": false}})),
    )
    .await;
    let (s, j) = h.call("GET", &p("/secrets/off"), None).await;
    assert_eq!((s, code(&j)), (StatusCode::FORBIDDEN, "Forbidden"));
    assert_eq!(j["error"]["innererror"]["code"], "SecretDisabled");
    let (_, list) = h.call("GET", &p("/secrets"), None).await;
    assert_eq!(list["value"][0]["attributes"]["enabled"], false);
    let (s, _) = h
        .call(
            "PATCH",
            &p("/secrets/off"),
            Some(json!({"attributes": {"enabled": true}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = h.call("GET", &p("/secrets/off"), None).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn bad_input_gets_azure_errors_and_writes_nothing() {
    let h = Harness::new().await;
    let bad: Vec<(&str, String, Option<String>, StatusCode, &str)> = vec![
        ("PUT", p("/secrets/x"), Some("{not json".into()), StatusCode::BAD_REQUEST, "BadParameter"),
        ("PUT", p("/secrets/x"), Some(r#"{"value": 5}"#.into()), StatusCode::BAD_REQUEST, "BadParameter"),
        ("PUT", p("/secrets/x"), Some(r#"{"contentType": "a"}"#.into()), StatusCode::BAD_REQUEST, "BadParameter"),
        ("PUT", p("/secrets/x"), Some(String::new()), StatusCode::BAD_REQUEST, "BadParameter"),
        ("PUT", p("/secrets/x"), Some(r#"{"value": "v", "attributes": {"enabled": "yes"}}"#.into()), StatusCode::BAD_REQUEST, "BadParameter"),
        ("PUT", p("/secrets/x"), Some(r#"{"value": "v", "attributes": {"nbf": 10, "exp": 5}}"#.into()), StatusCode::BAD_REQUEST, "BadParameter"),
        ("PUT", p("/secrets/x"), Some(json!({"value": "v", "contentType": "c".repeat(256)}).to_string()), StatusCode::BAD_REQUEST, "BadParameter"),
        ("PUT", p("/secrets/bad_name"), Some(r#"{"value": "v"}"#.into()), StatusCode::BAD_REQUEST, "BadParameter"),
        ("PUT", p(&format!("/secrets/{}", "n".repeat(128))), Some(r#"{"value": "v"}"#.into()), StatusCode::BAD_REQUEST, "BadParameter"),
        ("PUT", p("/secrets/x"), Some(json!({"value": "x".repeat(25 * 1024 + 1)}).to_string()), StatusCode::BAD_REQUEST, "BadParameter"),
        ("PUT", p("/secrets/x"), Some(json!({"value": "v", "tags": (0..16).map(|i| (format!("t{i}"), "v")).collect::<std::collections::BTreeMap<_, _>>()}).to_string()), StatusCode::BAD_REQUEST, "BadParameter"),
        ("PUT", p("/secrets/x"), Some("x".repeat(5 * 1024 * 1024)), StatusCode::PAYLOAD_TOO_LARGE, "RequestEntityTooLarge"),
        ("PUT", "/secrets/x".into(), Some(r#"{"value": "v"}"#.into()), StatusCode::BAD_REQUEST, "BadParameter"),
        ("PUT", "/secrets/x?api-version=1999-01-01".into(), Some(r#"{"value": "v"}"#.into()), StatusCode::BAD_REQUEST, "BadParameter"),
        ("GET", p("/secrets/x/not-a-version"), None, StatusCode::NOT_FOUND, "SecretNotFound"),
        ("GET", p("/nothing-here"), None, StatusCode::NOT_FOUND, "NotFound"),
        ("POST", p("/secrets/x"), Some("{}".into()), StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed"),
        ("GET", p("/secrets?$skiptoken=%%%"), None, StatusCode::BAD_REQUEST, "BadParameter"),
        ("GET", p("/secrets/%FF%FE"), None, StatusCode::BAD_REQUEST, "BadParameter"),
    ];
    for (method, path, body, status, expected) in bad {
        let (s, _, j) = h
            .send(vault_req(method, &path, Some(&h.token()), body))
            .await;
        assert_eq!(
            (s, code(&j)),
            (status, expected),
            "{method} {}",
            &path[..path.len().min(80)]
        );
        assert!(j["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    // The largest allowed value is accepted.
    let (s, _) = h
        .call(
            "PUT",
            &p("/secrets/big"),
            Some(json!({"value": "x".repeat(25 * 1024)})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    // Nothing of the refused writes exists.
    let (_, list) = h.call("GET", &p("/secrets"), None).await;
    assert_eq!(list["value"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn error_messages_never_echo_request_values() {
    let h = Harness::new().await;
    let body = r#"{"value": "v", "tags": {"t": 987654321012}}"#;
    let (s, _, j) = h
        .send(vault_req(
            "PUT",
            &p("/secrets/x"),
            Some(&h.token()),
            Some(body.into()),
        ))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(!j.to_string().contains("987654321012"), "{j}");
}

#[tokio::test]
async fn unknown_vaults_and_hosts_are_not_found() {
    let h = Harness::new().await;
    let mut req = vault_req("GET", &p("/secrets"), Some(&h.token()), None);
    req.headers_mut()
        .insert("host", "nosuch.vault.localhost:8443".parse().unwrap());
    let (s, _, j) = h.send(req).await;
    assert_eq!((s, code(&j)), (StatusCode::NOT_FOUND, "VaultNotFound"));
    let mut req = vault_req("GET", &p("/secrets"), Some(&h.token()), None);
    req.headers_mut()
        .insert("host", "elsewhere.example:8443".parse().unwrap());
    let (s, _, j) = h.send(req).await;
    assert_eq!((s, code(&j)), (StatusCode::NOT_FOUND, "NotFound"));
}
