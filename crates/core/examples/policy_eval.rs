//! What evaluating the policies in force costs one data-plane write: 20
//! assignments (10 `Microsoft.KeyVault.Data` built-ins at the vault, 10 vault
//! rules at the subscription that a secret is not evaluated against),
//! evaluated against a secret about to be written. Prints microseconds per
//! evaluation. Run: `cargo run --release -p keyhaven-core --example policy_eval`
//! (scripts/bench-policy runs it next to its end-to-end measurement).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Instant;

use keyhaven_core::governance::{builtins, rules_of, Assignment, Context, PolicySet, Resolved};
use serde_json::{json, Value};

const SUB: &str = "/subscriptions/00000000-0000-0000-0000-000000000001";

fn main() {
    let vault = format!("{SUB}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/dev");
    let data: [(&str, Value); 10] = [
        (
            "98728c90-32c7-4049-8429-847dc0f4fe37",
            json!({"effect": {"value": "Audit"}}),
        ),
        (
            "75262d3e-ba4a-4f43-85f8-9f72c090e5e3",
            json!({"effect": {"value": "Audit"}}),
        ),
        (
            "342e8053-e12e-4c44-be01-c3c2f318400f",
            json!({"maximumValidityInDays": {"value": 90}}),
        ),
        (
            "152b15f7-8e1f-4c1f-ab71-8c010ba5dbc0",
            json!({"effect": {"value": "Deny"}}),
        ),
        (
            "75c4f823-d65c-4f29-a733-01d0077fdbcb",
            json!({"effect": {"value": "Deny"}}),
        ),
        (
            "82067dbb-e53b-4e06-b631-546d197452d9",
            json!({"minimumRSAKeySize": {"value": 3072}}),
        ),
        (
            "ff25f3c8-b739-4538-9d07-3d6d25cfb255",
            json!({"effect": {"value": "Deny"}}),
        ),
        (
            "0a075868-4c26-42ef-914c-5bc007359560",
            json!({"effect": {"value": "Deny"}}),
        ),
        (
            "1151cede-290b-4ba0-8b38-0ad145ac888f",
            json!({"effect": {"value": "Deny"}}),
        ),
        (
            "12ef42cb-9903-4e39-9c26-422d29570417",
            json!({"maximumPercentageLife": {"value": 80}, "minimumDaysBeforeExpiry": {"value": 30}}),
        ),
    ];
    let control = [
        "0b60c0b2-2dc2-4e1c-b5c9-abbed971de53",
        "1e66c121-a66a-4b1f-9b83-0fd99bf0fc2d",
        "12d4fa5e-1f9f-4c21-97a9-b99b3c6611b5",
        "a6abeaec-4d90-4a02-805f-6b26c4d3fbe9",
        "405c5871-3e91-4644-8a63-58e19d68ff5b",
        "55615ac9-af46-4a59-874e-391cc3dfb490",
        "cf820ca0-f99e-4f3e-84fb-66e913812d21",
        "0b60c0b2-2dc2-4e1c-b5c9-abbed971de53",
        "1e66c121-a66a-4b1f-9b83-0fd99bf0fc2d",
        "12d4fa5e-1f9f-4c21-97a9-b99b3c6611b5",
    ];
    let lookup = |id: &str| {
        builtins::by_id(id).map(|b| Resolved::Definition {
            name: b.name.clone(),
            definition: Arc::clone(&b.definition),
        })
    };
    let mut set = PolicySet::default();
    let assignments = data
        .iter()
        .map(|(g, p)| (vault.clone(), *g, p.clone()))
        .chain(control.iter().map(|g| {
            let params = if *g == "cf820ca0-f99e-4f3e-84fb-66e913812d21" {
                json!({})
            } else {
                json!({"effect": {"value": "Deny"}})
            };
            (SUB.to_owned(), *g, params)
        }));
    for (i, (scope, guid, params)) in assignments.enumerate() {
        let a = Arc::new(Assignment {
            id: format!("{scope}/providers/Microsoft.Authorization/policyAssignments/a{i}"),
            name: format!("a{i}"),
            display_name: String::new(),
            scope,
            not_scopes: vec![],
            definition_id: builtins::id_of(guid),
            parameters: Some(params),
            enforce: true,
            messages: vec![],
            identity: None,
        });
        set.rules.extend(
            rules_of(&a, &lookup)
                .expect("compiles")
                .into_iter()
                .map(Arc::new),
        );
    }
    assert_eq!(set.rules.len(), 20);
    let secret = json!({
        "type": "Microsoft.KeyVault.Data/vaults/secrets",
        "name": "db-password",
        "attributes": {"createdOn": "2026-12-05T00:00:00.0000000Z", "enabled": true,
                       "expiresOn": "2027-01-01T00:00:00.0000000Z"},
        "contentType": "text/plain",
        "managed": false,
    });
    let id = format!("{vault}/secrets/db-password");
    let ctx = Context {
        api_version: "7.5".into(),
        now: 1_780_000_000,
    };
    let kind = "Microsoft.KeyVault.Data/vaults/secrets";
    // Warm up, then measure.
    let mut applied = 0;
    for _ in 0..10_000 {
        applied = set.evaluate(&id, kind, &secret, &ctx).len();
    }
    assert_eq!(applied, 3, "the three secret rules apply");
    let n = 200_000u32;
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(set.evaluate(&id, kind, &secret, &ctx));
    }
    let per = t.elapsed().as_secs_f64() * 1e6 / f64::from(n);
    println!("POLICY_EVAL assignments=20 applicable=3 us_per_write={per:.2}");
}
