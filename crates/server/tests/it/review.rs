//! Issue 22's outside review: one test per defect, each run on every store
//! the run has.

use http::StatusCode;
use serde_json::{json, Map, Value};

use crate::security::{admin_arm, arm, subscription, vault_id};
use crate::{vault_req, Harness};

/// Defect 2: a 3,000,000-character tag value was stored with 200. Azure's
/// limits (50 tags, names ≤ 512, values ≤ 256) now hold on every ARM
/// resource, checked where the plane parses bodies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arm_tags_have_azures_limits_on_every_resource() {
    for (store, h) in Harness::each_store().await {
        let token = admin_arm(&h);
        let group = format!("{}/resourceGroups/rg-tags", subscription(&h));
        let vault = vault_id(&h).await;
        let long_value = "v".repeat(257);
        let long_name = "n".repeat(513);
        let many: Map<String, Value> = (0..51).map(|i| (format!("t{i}"), json!("x"))).collect();
        for (path, method, base) in [
            (group.clone(), "PUT", json!({"location": "local"})),
            (vault.clone(), "PATCH", json!({})),
            (
                format!("{group}/providers/Microsoft.OperationalInsights/workspaces/ws-tags"),
                "PUT",
                json!({"location": "local"}),
            ),
        ] {
            for (tags, code) in [
                (json!({"a": long_value}), "InvalidTagValueLength"),
                (json!({long_name.clone(): "x"}), "InvalidTagNameLength"),
                (Value::Object(many.clone()), "InvalidTagCount"),
            ] {
                let mut body = base.clone();
                body["tags"] = tags;
                let (s, j) = arm(&h, &token, method, &path, Some(body)).await;
                assert_eq!(s, StatusCode::BAD_REQUEST, "{store} {method} {path}: {j}");
                assert_eq!(j["error"]["code"], code, "{store} {method} {path}: {j}");
            }
            // At the limits it is accepted (the group must exist first).
            let mut body = base.clone();
            let at_limit: Map<String, Value> = (0..50)
                .map(|i| (format!("{i}{}", "n".repeat(500)), json!("v".repeat(256))))
                .collect();
            body["tags"] = Value::Object(at_limit);
            if method == "PUT" && path == group {
                let (s, j) = arm(&h, &token, method, &path, Some(body)).await;
                assert!(s.is_success(), "{store}: {j}");
            }
        }
        h.cleanup().await;
    }
}

/// Defects 3 and 4: the request envelope. A body declared too large is
/// refused from its Content-Length (the test sends none of it); a missing,
/// doubled or contradicted Host is 400; a header section over 16 KB is 431
/// and a target over 16 KB 414, each with an Azure error body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_envelope_is_checked_before_any_plane() {
    let h = Harness::new().await;
    let token = h.token();
    let send = |req: http::Request<axum::body::Body>| h.send(req);

    let mut req = vault_req("PUT", "/secrets/big?api-version=7.5", Some(&token), None);
    req.headers_mut().insert(
        "content-length",
        http::HeaderValue::from_static("104857600"),
    );
    let (s, _, j) = send(req).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{j}");
    assert_eq!(j["error"]["code"], "RequestEntityTooLarge", "{j}");

    let mut req = vault_req("GET", "/secrets?api-version=7.5", Some(&token), None);
    req.headers_mut().remove("host");
    let (s, _, j) = send(req).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "no Host: {j}");
    assert_eq!(j["error"]["code"], "BadRequest", "{j}");

    let mut req = vault_req("GET", "/secrets?api-version=7.5", Some(&token), None);
    req.headers_mut().append(
        "host",
        http::HeaderValue::from_static("other.vault.localhost:8443"),
    );
    let (s, _, j) = send(req).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "two Hosts: {j}");

    let mut req = vault_req("GET", "/secrets?api-version=7.5", Some(&token), None);
    *req.uri_mut() = "https://other.vault.localhost:8443/secrets?api-version=7.5"
        .parse()
        .unwrap();
    let (s, _, j) = send(req).await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "absolute target for another host: {j}"
    );

    let mut req = vault_req("GET", "/secrets?api-version=7.5", Some(&token), None);
    req.headers_mut().insert(
        "x-filler",
        http::HeaderValue::from_str(&"a".repeat(17 * 1024)).unwrap(),
    );
    let (s, _, j) = send(req).await;
    assert_eq!(s, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "{j}");
    assert_eq!(j["error"]["code"], "RequestHeaderFieldsTooLarge", "{j}");

    let long = format!("/secrets?api-version=7.5&x={}", "a".repeat(17 * 1024));
    let (s, _, j) = send(vault_req("GET", &long, Some(&token), None)).await;
    assert_eq!(s, StatusCode::URI_TOO_LONG, "{j}");
    assert_eq!(j["error"]["code"], "RequestUriTooLong", "{j}");

    // The ordinary request still works.
    let (s, _, j) = send(vault_req(
        "GET",
        "/secrets?api-version=7.5",
        Some(&token),
        None,
    ))
    .await;
    assert_eq!(s, StatusCode::OK, "{j}");
}

/// Counts the domain's "events committed" calls.
#[derive(Default)]
struct Capture(std::sync::atomic::AtomicUsize);

impl keyhaven_core::events::EventSink for Capture {
    fn committed(&self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Missing behaviour: `SecretNearExpiry`, `SecretExpired` and `KeyExpired`
/// were never sent. Two nodes scanning at once send each event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_events_are_sent_once_across_nodes() {
    use keyhaven_core::events::EventType;
    use std::sync::Arc;
    for (store, h) in Harness::each_store().await {
        let day = 86_400;
        for (name, exp) in [
            ("near", crate::NOW + 10 * day),
            ("far", crate::NOW + 60 * day),
            ("expired", crate::NOW - 3600),
            ("long-expired", crate::NOW - 10 * day),
        ] {
            let (s, j) = h
                .call(
                    "PUT",
                    &format!("/secrets/{name}?api-version=7.5"),
                    Some(json!({"value": "x", "attributes": {"exp": exp}})),
                )
                .await;
            assert_eq!(s, StatusCode::OK, "{store}: {j}");
        }
        let (s, j) = h
            .call(
                "POST",
                "/keys/old-key/create?api-version=7.5",
                Some(json!({"kty": "EC", "attributes": {"exp": crate::NOW - 60}})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{store}: {j}");
        // Events are recorded for vaults with a subscription.
        let vaults = h.state.store.list_vaults().await.unwrap();
        let vault = vaults.first().unwrap().resource_id();
        h.state
            .store
            .put_resource(&keyhaven_core::ResourceRecord {
                id: format!("{vault}/providers/Microsoft.EventGrid/eventSubscriptions/t"),
                kind: keyhaven_core::events::SUBSCRIPTION_TYPE.into(),
                subscription_id: String::new(),
                resource_group: String::new(),
                name: "t".into(),
                location: String::new(),
                tags: "{}".into(),
                properties: "{}".into(),
                created: 0,
                updated: 0,
            })
            .await
            .unwrap();
        let (a, b) = (Arc::new(Capture::default()), Arc::new(Capture::default()));
        let node_a = h.state.service.clone().with_events(a.clone());
        let node_b = h.state.service.clone().with_events(b.clone());
        let (ra, rb) = tokio::join!(node_a.expiry_events(), node_b.expiry_events());
        assert_eq!(ra.unwrap() + rb.unwrap(), 3, "{store}");
        let committed = |c: &Capture| c.0.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(committed(&a) + committed(&b), 3, "{store}");
        // Each is in the outbox once, recorded with its finished job.
        let claimed = h
            .state
            .store
            .claim_events(i64::MAX - 1, i64::MAX, "test", 100)
            .await
            .unwrap();
        let mut sent: Vec<(EventType, String)> = claimed
            .iter()
            .map(|i| (i.event.event_type, i.event.object_name.clone()))
            .collect();
        sent.sort_by_key(|(t, n)| (t.azure_name(), n.clone()));
        assert_eq!(
            sent,
            vec![
                (EventType::KeyExpired, "old-key".to_owned()),
                (EventType::SecretExpired, "expired".to_owned()),
                (EventType::SecretNearExpiry, "near".to_owned()),
            ],
            "{store}"
        );
        // A later pass sends nothing again.
        assert_eq!(node_a.expiry_events().await.unwrap(), 0, "{store}");
        h.cleanup().await;
    }
}
