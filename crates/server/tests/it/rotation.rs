//! Key rotation policies over the real router, and the scheduler that carries
//! them out, driven with the fixed clock instead of waiting.

use http::StatusCode;
use keyhaven_core::rotation::PolicyAction;
use serde_json::{json, Value};

use crate::{code, Harness, NOW};

const DAY: i64 = 86_400;
const V: &str = "api-version=7.5";

async fn versions(h: &Harness, name: &str) -> Vec<Value> {
    let (s, j) = h
        .call("GET", &format!("/keys/{name}/versions?{V}"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{j}");
    j["value"].as_array().unwrap().clone()
}

async fn latest(h: &Harness, name: &str) -> Value {
    let (s, j) = h.call("GET", &format!("/keys/{name}?{V}"), None).await;
    assert_eq!(s, StatusCode::OK, "{j}");
    j
}

#[tokio::test]
async fn unset_policy_reads_as_azure_default() {
    let h = Harness::new().await;
    h.call(
        "POST",
        &format!("/keys/k/create?{V}"),
        Some(json!({"kty": "EC"})),
    )
    .await;
    let (s, j) = h
        .call("GET", &format!("/keys/k/rotationpolicy?{V}"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{j}");
    assert_eq!(
        j["lifetimeActions"],
        json!([{"trigger": {"timeBeforeExpiry": "P30D"}, "action": {"type": "Notify"}}])
    );
    assert_eq!(j["attributes"], json!({}));
    assert!(
        j["id"]
            .as_str()
            .unwrap()
            .ends_with("/keys/k/rotationpolicy"),
        "{j}"
    );
    let (s, j) = h
        .call("GET", &format!("/keys/nope/rotationpolicy?{V}"), None)
        .await;
    assert_eq!((s, code(&j)), (StatusCode::NOT_FOUND, "KeyNotFound"));
}

#[tokio::test]
async fn bad_policies_get_azure_errors() {
    let h = Harness::new().await;
    h.call(
        "POST",
        &format!("/keys/k/create?{V}"),
        Some(json!({"kty": "EC"})),
    )
    .await;
    let rotate = |trigger: Value| json!({"trigger": trigger, "action": {"type": "Rotate"}});
    for body in [
        json!({"attributes": {"expiryTime": "P27D"}}),
        json!({"attributes": {"expiryTime": "ninety days"}}),
        json!({"lifetimeActions": [rotate(json!({"timeAfterCreate": "P6D"}))]}),
        json!({"lifetimeActions": [rotate(json!({}))]}),
        json!({"lifetimeActions": [rotate(json!({"timeAfterCreate": "P30D", "timeBeforeExpiry": "P30D"}))]}),
        json!({"lifetimeActions": [rotate(json!({"timeAfterCreate": "P30D"})), rotate(json!({"timeAfterCreate": "P60D"}))]}),
        json!({"lifetimeActions": [{"trigger": {"timeAfterCreate": "P30D"}, "action": {"type": "Notify"}}]}),
        json!({"lifetimeActions": [{"trigger": {"timeAfterCreate": "P30D"}, "action": {"type": "Explode"}}]}),
        json!({"lifetimeActions": [rotate(json!({"timeBeforeExpiry": "P90D"}))], "attributes": {"expiryTime": "P60D"}}),
        json!({"lifetimeActions": "rotate"}),
    ] {
        let (s, j) = h
            .call(
                "PUT",
                &format!("/keys/k/rotationpolicy?{V}"),
                Some(body.clone()),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body} -> {j}");
        assert!(j["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
}

#[tokio::test]
async fn scheduler_rotates_and_notifies_once_per_version() {
    let h = Harness::new().await;
    let svc = &h.state.service;
    let (s, j) = h
        .call(
            "POST",
            &format!("/keys/k/create?{V}"),
            Some(json!({"kty": "EC", "crv": "P-256", "tags": {"team": "a"}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{j}");
    let policy = json!({
        "lifetimeActions": [
            {"trigger": {"timeAfterCreate": "P50D"}, "action": {"type": "rotate"}},
            {"trigger": {"timeBeforeExpiry": "P20D"}, "action": {"type": "Notify"}}
        ],
        "attributes": {"expiryTime": "P60D"}
    });
    let (s, j) = h
        .call("PUT", &format!("/keys/k/rotationpolicy?{V}"), Some(policy))
        .await;
    assert_eq!(s, StatusCode::OK, "{j}");
    assert_eq!(j["lifetimeActions"][0]["action"]["type"], "Rotate");
    assert_eq!(j["attributes"]["expiryTime"], "P60D");
    assert_eq!(j["attributes"]["created"], NOW);
    let (_, got) = h
        .call("GET", &format!("/keys/k/rotationpolicy?{V}"), None)
        .await;
    assert_eq!(got, j);

    assert!(
        svc.run_key_rotations().await.unwrap().is_empty(),
        "nothing due yet"
    );
    h.clock.advance(50 * DAY - 1);
    assert!(
        svc.run_key_rotations().await.unwrap().is_empty(),
        "one second early"
    );

    // Due: one rotation, even with two scheduler passes racing (two nodes).
    h.clock.advance(1);
    let (a, b) = tokio::join!(svc.run_key_rotations(), svc.run_key_rotations());
    let done: Vec<_> = a.unwrap().into_iter().chain(b.unwrap()).collect();
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(done[0].action, PolicyAction::Rotate);
    assert_eq!(versions(&h, "k").await.len(), 2);
    let v2 = latest(&h, "k").await;
    assert_eq!(
        v2["attributes"]["exp"],
        NOW + 110 * DAY,
        "expiryTime applied"
    );
    assert_eq!(v2["tags"]["team"], "a");
    assert_eq!(
        v2["key"]["kid"].as_str().unwrap().rsplit('/').next(),
        done[0].new_version.as_deref()
    );
    assert!(
        svc.run_key_rotations().await.unwrap().is_empty(),
        "nothing twice"
    );

    // v2 expires at +110d: notify at +90d (once), rotate at +100d.
    h.clock.advance(40 * DAY);
    let done = svc.run_key_rotations().await.unwrap();
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(done[0].action, PolicyAction::Notify);
    assert!(
        svc.run_key_rotations().await.unwrap().is_empty(),
        "notified once"
    );
    h.clock.advance(10 * DAY);
    let done = svc.run_key_rotations().await.unwrap();
    assert_eq!(
        done.iter().map(|d| d.action).collect::<Vec<_>>(),
        [PolicyAction::Rotate]
    );
    assert_eq!(versions(&h, "k").await.len(), 3);

    // Rotate-now follows the policy's expiryTime too.
    let (s, j) = h.call("POST", &format!("/keys/k/rotate?{V}"), None).await;
    assert_eq!(s, StatusCode::OK, "{j}");
    assert_eq!(j["attributes"]["exp"], NOW + 160 * DAY);

    // A deleted key is not rotated; its policy comes back with it (recovered
    // within its 90 days of retention: past them it belongs to the purge).
    h.call("DELETE", &format!("/keys/k?{V}"), None).await;
    h.clock.advance(80 * DAY);
    assert!(svc.run_key_rotations().await.unwrap().is_empty());
    h.call("POST", &format!("/deletedkeys/k/recover?{V}"), None)
        .await;
    let (_, got) = h
        .call("GET", &format!("/keys/k/rotationpolicy?{V}"), None)
        .await;
    assert_eq!(got["attributes"]["expiryTime"], "P60D");
    assert_eq!(svc.run_key_rotations().await.unwrap().len(), 1);

    // Purge takes the policy: a new key of that name starts with the default.
    h.call("DELETE", &format!("/keys/k?{V}"), None).await;
    h.call("DELETE", &format!("/deletedkeys/k?{V}"), None).await;
    h.call(
        "POST",
        &format!("/keys/k/create?{V}"),
        Some(json!({"kty": "EC"})),
    )
    .await;
    let (_, got) = h
        .call("GET", &format!("/keys/k/rotationpolicy?{V}"), None)
        .await;
    assert_eq!(got["attributes"], json!({}));
}
