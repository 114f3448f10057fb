use super::*;
use serde_json::json;

const SUB: &str = "/subscriptions/00000000-0000-0000-0000-000000000001";

fn ctx() -> Context {
    Context {
        api_version: "2023-07-01".into(),
        now: 1_780_000_000,
    }
}

fn vault(props: Value) -> Value {
    json!({
        "id": format!("{SUB}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/v1"),
        "name": "v1",
        "type": "Microsoft.KeyVault/vaults",
        "location": "westeurope",
        "tags": {"Env": "prod"},
        "properties": props,
    })
}

fn builtin(name: &str) -> Arc<Definition> {
    Arc::clone(&builtins::get(name).expect("built-in").definition)
}

fn params(d: &Definition, given: Value) -> Params {
    resolve_parameters(&d.parameters, Some(&given), "test").expect("parameters")
}

fn matches(d: &Definition, p: &Params, r: &Value) -> bool {
    d.matches(r, p, &ctx()).expect("evaluates")
}

#[test]
fn every_builtin_parses_with_azure_ids() {
    let all = builtins::all();
    let raw: Vec<Value> = serde_json::from_str(include_str!("builtins.json")).expect("json");
    assert_eq!(all.len(), raw.len(), "a built-in failed to parse");
    assert!(all.len() >= 19);
    for b in all {
        assert_eq!(b.name.len(), 36, "{}", b.name);
        assert!(b.properties["displayName"].as_str().is_some());
    }
    assert!(builtins::by_id(
        "/providers/Microsoft.Authorization/policyDefinitions/0B60C0B2-2dc2-4e1c-b5c9-abbed971de53"
    )
    .is_some());
}

#[test]
fn purge_protection_builtin_table() {
    let d = builtin("0b60c0b2-2dc2-4e1c-b5c9-abbed971de53");
    let p = params(&d, json!({"effect": {"value": "Deny"}}));
    assert_eq!(d.effect_with(&p), Ok(Effect::Deny));
    let cases = [
        (json!({"enableSoftDelete": true}), true),
        (
            json!({"enableSoftDelete": true, "enablePurgeProtection": false}),
            true,
        ),
        (
            json!({"enableSoftDelete": true, "enablePurgeProtection": true}),
            false,
        ),
        (
            json!({"enableSoftDelete": false, "enablePurgeProtection": true}),
            true,
        ),
        (
            json!({"createMode": "recover", "enableSoftDelete": true}),
            false,
        ),
    ];
    for (props, want) in cases {
        assert_eq!(matches(&d, &p, &vault(props.clone())), want, "{props}");
    }
    // The default effect is Audit.
    let p = params(&d, json!({}));
    assert_eq!(d.effect_with(&p), Ok(Effect::Audit));
}

#[test]
fn firewall_builtin_with_ip_ranges_and_counts() {
    let d = builtin("55615ac9-af46-4a59-874e-391cc3dfb490");
    let p = params(&d, json!({}));
    let open = vault(json!({"networkAcls": {"defaultAction": "Allow"}}));
    let closed = vault(
        json!({"networkAcls": {"defaultAction": "Deny", "ipRules": [{"value": "203.0.113.0/28"}]}}),
    );
    let private = vault(
        json!({"publicNetworkAccess": "Disabled", "networkAcls": {"defaultAction": "Allow"}}),
    );
    assert!(matches(&d, &p, &open));
    assert!(matches(&d, &p, &vault(json!({}))));
    assert!(!matches(&d, &p, &closed));
    assert!(!matches(&d, &p, &private));
    // Restricted to 203.0.113.0/24: a rule inside passes, one outside not.
    let p = params(
        &d,
        json!({"restrictIPAddresses": {"value": "Yes"}, "allowedIPAddresses": {"value": ["203.0.113.0/24"]}}),
    );
    assert!(!matches(&d, &p, &closed));
    let outside = vault(json!({"networkAcls": {"defaultAction": "Deny", "ipRules": [
        {"value": "203.0.113.0/28"}, {"value": "198.51.100.7"}]}}));
    assert!(matches(&d, &p, &outside));
    // Forbidden ranges.
    let p = params(
        &d,
        json!({"restrictIPAddresses": {"value": "Yes"}, "forbiddenIPAddresses": {"value": ["198.51.100.0/24"]}}),
    );
    assert!(matches(&d, &p, &outside));
    assert!(!matches(&d, &p, &closed));
}

#[test]
fn private_link_counts_approved_connections() {
    let d = builtin("a6abeaec-4d90-4a02-805f-6b26c4d3fbe9");
    let p = params(&d, json!({}));
    assert_eq!(d.effect_with(&p), Ok(Effect::Audit));
    let pec = |status: &str| json!({"id": "x", "properties": {"privateLinkServiceConnectionState": {"status": status}}});
    assert!(matches(&d, &p, &vault(json!({}))));
    assert!(matches(
        &d,
        &p,
        &vault(json!({"privateEndpointConnections": [pec("Pending")]}))
    ));
    assert!(!matches(
        &d,
        &p,
        &vault(json!({"privateEndpointConnections": [pec("Pending"), pec("Approved")]}))
    ));
}

#[test]
fn data_plane_builtins() {
    let secret = |extra: Value| {
        let mut v = json!({"type": aliases::SECRETS, "name": "s", "attributes": {"createdOn": "2026-12-01T00:00:00Z"}});
        if let (Value::Object(m), Value::Object(e)) = (&mut v, extra) {
            for (k, x) in e {
                if k == "attributes" {
                    m["attributes"]["expiresOn"] = x["expiresOn"].clone();
                } else {
                    m.insert(k, x);
                }
            }
        }
        v
    };
    let expiry = builtin("98728c90-32c7-4049-8429-847dc0f4fe37");
    let p = params(&expiry, json!({"effect": {"value": "Deny"}}));
    assert!(matches(&expiry, &p, &secret(json!({}))));
    assert!(!matches(
        &expiry,
        &p,
        &secret(json!({"attributes": {"expiresOn": "2027-01-01T00:00:00Z"}}))
    ));
    assert!(!expiry.applies_to(aliases::VAULTS));
    assert!(expiry.applies_to(aliases::SECRETS));
    assert!(!expiry.applies_to(aliases::KEYS));

    let validity = builtin("342e8053-e12e-4c44-be01-c3c2f318400f");
    let p = params(&validity, json!({"maximumValidityInDays": {"value": 30}}));
    assert!(matches(
        &validity,
        &p,
        &secret(json!({"attributes": {"expiresOn": "2027-06-01T00:00:00Z"}}))
    ));
    assert!(!matches(
        &validity,
        &p,
        &secret(json!({"attributes": {"expiresOn": "2026-12-20T00:00:00Z"}}))
    ));

    let key = |kty: &str, size: Option<i64>, crv: Option<&str>| json!({"type": aliases::KEYS, "keyType": kty, "keySize": size, "ellipticCurveName": crv});
    let min = builtin("82067dbb-e53b-4e06-b631-546d197452d9");
    let err = resolve_parameters(
        &min.parameters,
        Some(&json!({"minimumRSAKeySize": {"value": 0}})),
        "x",
    )
    .expect_err("not allowed");
    assert_eq!(err.code, "PolicyParameterValueNotAllowed");
    assert!(err.message.contains("2048, 3072, 4096"), "{}", err.message);
    let err = resolve_parameters(&min.parameters, Some(&json!({})), "x").expect_err("missing");
    assert_eq!(err.code, "MissingPolicyParameter");
    let p = params(&min, json!({"minimumRSAKeySize": {"value": 3072}}));
    assert!(matches(&min, &p, &key("RSA", Some(2048), None)));
    assert!(!matches(&min, &p, &key("RSA", Some(4096), None)));
    assert!(!matches(&min, &p, &key("EC", None, Some("P-256"))));

    let curves = builtin("ff25f3c8-b739-4538-9d07-3d6d25cfb255");
    let p = params(&curves, json!({"allowedECNames": {"value": ["P-384"]}}));
    assert!(matches(&curves, &p, &key("EC", None, Some("P-256"))));
    assert!(!matches(&curves, &p, &key("EC-HSM", None, Some("P-384"))));

    let cert = builtin("0a075868-4c26-42ef-914c-5bc007359560");
    let p = params(
        &cert,
        json!({"maximumValidityInMonths": {"value": 12}, "effect": {"value": "deny"}}),
    );
    assert_eq!(cert.effect_with(&p), Ok(Effect::Deny));
    let c = |months: i64| json!({"type": aliases::CERTIFICATES, "properties": {"validityInMonths": months}});
    assert!(matches(&cert, &p, &c(24)));
    assert!(!matches(&cert, &p, &c(12)));
}

#[test]
fn diagnostics_existence_condition() {
    let d = builtin("951af2fa-529b-416e-ab6e-066fd85ac459");
    let ws =
        format!("{SUB}/resourceGroups/rg/providers/Microsoft.OperationalInsights/workspaces/w");
    let p = params(&d, json!({"logAnalytics": {"value": ws}}));
    assert_eq!(d.effect_with(&p), Ok(Effect::DeployIfNotExists));
    let v = vault(json!({}));
    assert!(matches(&d, &p, &v));
    let setting = |workspace: &str, enabled: bool| {
        json!({"type": aliases::DIAGNOSTICS, "properties": {"workspaceId": workspace,
            "logs": [{"category": "AuditEvent", "enabled": enabled}],
            "metrics": [{"category": "AllMetrics", "enabled": enabled}]}})
    };
    assert!(d
        .exists_ok(&v, &setting(&ws, true), &p, &ctx())
        .expect("evaluates"));
    assert!(!d
        .exists_ok(&v, &setting("/other", true), &p, &ctx())
        .expect("evaluates"));
    assert!(!d
        .exists_ok(&v, &setting(&ws, false), &p, &ctx())
        .expect("evaluates"));
    // Resource logs enabled (AuditIfNotExists).
    let g = builtin("cf820ca0-f99e-4f3e-84fb-66e913812d21");
    let p = params(&g, json!({}));
    assert_eq!(g.effect_with(&p), Ok(Effect::AuditIfNotExists));
    assert!(g
        .exists_ok(&v, &setting(&ws, true), &p, &ctx())
        .expect("evaluates"));
    assert!(!g
        .exists_ok(&v, &setting(&ws, false), &p, &ctx())
        .expect("evaluates"));
}

fn custom(rule: Value) -> Result<Definition, PolicyError> {
    Definition::parse(&json!({
        "mode": "All",
        "parameters": {"names": {"type": "Array", "defaultValue": ["a", "b"]}},
        "policyRule": rule,
    }))
}

#[test]
fn each_operator() {
    let r = vault(
        json!({"sku": {"name": "standard"}, "softDeleteRetentionInDays": 30,
        "networkAcls": {"ipRules": [{"value": "1.2.3.4"}, {"value": "1.2.3.5"}]}}),
    );
    let cases: Vec<(Value, bool)> = vec![
        (
            json!({"field": "Microsoft.KeyVault/vaults/sku.name", "equals": "Standard"}),
            true,
        ),
        (
            json!({"field": "Microsoft.KeyVault/vaults/sku.name", "notEquals": "premium"}),
            true,
        ),
        (json!({"field": "name", "like": "v*"}), true),
        (json!({"field": "name", "notLike": "x*"}), true),
        (json!({"field": "name", "match": "?#"}), true),
        (json!({"field": "name", "match": "V#"}), false),
        (json!({"field": "name", "matchInsensitively": "V#"}), true),
        (json!({"field": "name", "notMatch": "##"}), true),
        (
            json!({"field": "name", "notMatchInsensitively": "V1"}),
            false,
        ),
        (json!({"field": "location", "contains": "EUROPE"}), true),
        (json!({"field": "location", "notContains": "asia"}), true),
        (
            json!({"field": "location", "in": ["westeurope", "northeurope"]}),
            true,
        ),
        (
            json!({"field": "location", "notIn": "[parameters('names')]"}),
            true,
        ),
        (json!({"field": "tags", "containsKey": "env"}), true),
        (json!({"field": "tags", "notContainsKey": "owner"}), true),
        (json!({"field": "tags['env']", "equals": "prod"}), true),
        (json!({"field": "tags.Env", "exists": true}), true),
        (
            json!({"field": "Microsoft.KeyVault/vaults/softDeleteRetentionInDays", "less": 90}),
            true,
        ),
        (
            json!({"field": "Microsoft.KeyVault/vaults/softDeleteRetentionInDays", "lessOrEquals": 30}),
            true,
        ),
        (
            json!({"field": "Microsoft.KeyVault/vaults/softDeleteRetentionInDays", "greater": 30}),
            false,
        ),
        (
            json!({"field": "Microsoft.KeyVault/vaults/softDeleteRetentionInDays", "greaterOrEquals": "7"}),
            true,
        ),
        (
            json!({"field": "Microsoft.KeyVault/vaults/enablePurgeProtection", "exists": "false"}),
            true,
        ),
        (
            json!({"field": "Microsoft.KeyVault/vaults/networkAcls.ipRules[*].value", "like": "1.2.3.*"}),
            true,
        ),
        (
            json!({"field": "Microsoft.KeyVault/vaults/networkAcls.ipRules[*].value", "equals": "1.2.3.4"}),
            false,
        ),
        (
            json!({"count": {"field": "Microsoft.KeyVault/vaults/networkAcls.ipRules[*]"}, "equals": 2}),
            true,
        ),
        (
            json!({"count": {"field": "Microsoft.KeyVault/vaults/networkAcls.ipRules[*]",
            "where": {"field": "Microsoft.KeyVault/vaults/networkAcls.ipRules[*].value", "equals": "1.2.3.5"}}, "equals": 1}),
            true,
        ),
        (
            json!({"count": {"value": "[parameters('names')]", "name": "n",
            "where": {"value": "[current('n')]", "equals": "b"}}, "greater": 0}),
            true,
        ),
        (
            json!({"value": "[concat(toUpper(field('name')), '-', string(length(parameters('names'))))]", "equals": "V1-2"}),
            true,
        ),
        (
            json!({"value": "[addDays('2026-01-30T00:00:00Z', 3)]", "equals": "2026-02-02T00:00:00.0000000Z"}),
            true,
        ),
        (
            json!({"value": "[utcNow()]", "greater": "2026-01-01"}),
            true,
        ),
        (
            json!({"value": "[if(equals(field('location'), 'westeurope'), 'eu', 'other')]", "equals": "eu"}),
            true,
        ),
        (
            json!({"value": "[requestContext().apiVersion]", "greaterOrEquals": "2021-06-01-preview"}),
            true,
        ),
        (
            json!({"value": "[padLeft('7', 3, '0')]", "equals": "007"}),
            true,
        ),
        (
            json!({"value": "[ipRangeContains('10.0.0.0/8', '10.1.2.3')]", "equals": true}),
            true,
        ),
        (
            json!({"not": {"field": "type", "equals": "Microsoft.KeyVault/vaults"}}),
            false,
        ),
        (
            json!({"anyOf": [{"field": "name", "equals": "x"}, {"field": "name", "equals": "v1"}]}),
            true,
        ),
    ];
    for (cond, want) in cases {
        let d = custom(json!({"if": cond.clone(), "then": {"effect": "audit"}}))
            .unwrap_or_else(|e| panic!("{cond}: {e:?}"));
        let p = resolve_parameters(&d.parameters, None, "t").expect("defaults");
        assert_eq!(matches(&d, &p, &r), want, "{cond}");
    }
}

#[test]
fn malformed_rules_are_refused() {
    let cases = [
        (
            json!({"if": {"field": "name", "equalz": "x"}, "then": {"effect": "deny"}}),
            "InvalidPolicyRule",
        ),
        (
            json!({"if": {"field": "Microsoft.KeyVault/vaults/nope", "equals": "x"}, "then": {"effect": "deny"}}),
            "InvalidPolicyAlias",
        ),
        (
            json!({"if": {"value": "[frobnicate()]", "equals": "x"}, "then": {"effect": "deny"}}),
            "InvalidPolicyRule",
        ),
        (
            json!({"if": {"value": "[parameters('undeclared')]", "equals": "x"}, "then": {"effect": "deny"}}),
            "InvalidPolicyRule",
        ),
        (
            json!({"if": {"field": "name", "equals": "x"}, "then": {"effect": "append"}}),
            "InvalidPolicyRuleEffect",
        ),
        (
            json!({"if": {"value": "x", "exists": true}, "then": {"effect": "deny"}}),
            "InvalidPolicyRule",
        ),
        (
            json!({"if": {"allOf": []}, "then": {"effect": "deny"}}),
            "InvalidPolicyRule",
        ),
        (
            json!({"if": {"field": "name", "equals": "x", "notEquals": "y"}, "then": {"effect": "deny"}}),
            "InvalidPolicyRule",
        ),
        (
            json!({"if": {"field": "name", "value": "x", "equals": "y"}, "then": {"effect": "deny"}}),
            "InvalidPolicyRule",
        ),
        (
            json!({"if": {"count": {"field": "name"}, "equals": 1}, "then": {"effect": "deny"}}),
            "InvalidPolicyRule",
        ),
        (
            json!({"if": {"value": "[concat('a']", "equals": "x"}, "then": {"effect": "deny"}}),
            "InvalidPolicyRule",
        ),
        (
            json!({"if": {"value": "[field('Microsoft.KeyVault/vaults/bogus')]", "equals": "x"}, "then": {"effect": "deny"}}),
            "InvalidPolicyAlias",
        ),
        (
            json!({"if": {"field": "name", "equals": "x"}}),
            "InvalidPolicyRule",
        ),
        (
            json!({"if": {"field": "name", "equals": "x"}, "then": {"effect": "modify", "details": {"operations": [
            {"operation": "addOrReplace", "field": "Microsoft.KeyVault/vaults/sku.name", "value": "premium"}]}}}),
            "InvalidPolicyRuleEffectDetails",
        ),
    ];
    for (rule, code) in cases {
        let err = custom(rule.clone()).expect_err(&rule.to_string());
        assert_eq!(err.code, code, "{rule}: {}", err.message);
    }
    let err = Definition::parse(&json!({"mode": "Microsoft.Compute.Data", "policyRule": {"if": {"field": "name", "equals": "x"}, "then": {"effect": "deny"}}}))
        .expect_err("mode");
    assert_eq!(err.code, "InvalidPolicyMode");
    // A data-plane definition cannot DeployIfNotExists.
    let d = Definition::parse(&json!({"mode": "Microsoft.KeyVault.Data", "parameters": {"e": {"type": "String"}},
        "policyRule": {"if": {"field": "type", "equals": aliases::SECRETS}, "then": {"effect": "[parameters('e')]"}}}))
    .expect("parses");
    let p = params(&d, json!({"e": {"value": "Modify"}}));
    assert_eq!(
        d.effect_with(&p).expect_err("effect").code,
        "InvalidPolicyRuleEffect"
    );
}

fn assignment(scope: &str, definition_id: &str, parameters: Value) -> Arc<Assignment> {
    Arc::new(Assignment {
        id: format!("{scope}/providers/Microsoft.Authorization/policyAssignments/a1"),
        name: "a1".into(),
        display_name: "a1".into(),
        scope: scope.into(),
        not_scopes: vec![],
        definition_id: definition_id.into(),
        parameters: Some(parameters),
        enforce: true,
        messages: vec![],
        identity: None,
    })
}

fn lookup(id: &str) -> Option<Resolved> {
    if let Some(b) = builtins::by_id(id) {
        return Some(Resolved::Definition {
            name: b.properties["displayName"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            definition: Arc::clone(&b.definition),
        });
    }
    (id == "/set").then(|| {
        let (parameters, members) = parse_set(
            &json!({
                "parameters": {"effect": {"type": "String", "defaultValue": "Deny"}},
                "policyDefinitions": [
                    {"policyDefinitionId": builtins::id_of("0b60c0b2-2dc2-4e1c-b5c9-abbed971de53"),
                     "policyDefinitionReferenceId": "purge",
                     "parameters": {"effect": {"value": "[parameters('effect')]"}}},
                    {"policyDefinitionId": builtins::id_of("55615ac9-af46-4a59-874e-391cc3dfb490"),
                     "policyDefinitionReferenceId": "firewall",
                     "parameters": {"effect": {"value": "[parameters('effect')]"}}},
                ]
            }),
            &|id| builtins::by_id(id).map(|b| Arc::clone(&b.definition)),
        )
        .expect("set parses");
        Resolved::Set {
            name: "set".into(),
            parameters,
            members,
        }
    })
}

#[test]
fn initiatives_scopes_and_exemptions() {
    let rg = format!("{SUB}/resourceGroups/rg");
    let a = assignment(SUB, "/set", json!({}));
    let rules = rules_of(&a, &lookup).expect("rules");
    assert_eq!(rules.len(), 2);
    assert!(rules.iter().all(|r| r.effect == Effect::Deny));
    let mut set = PolicySet {
        rules: rules.into_iter().map(Arc::new).collect(),
        exemptions: vec![],
    };
    let v = vault(json!({"enableSoftDelete": true, "networkAcls": {"defaultAction": "Allow"}}));
    let id = format!("{rg}/providers/Microsoft.KeyVault/vaults/v1");
    let verdicts = set.evaluate(&id, aliases::VAULTS, &v, &ctx());
    assert_eq!(verdicts.len(), 2);
    assert!(verdicts
        .iter()
        .all(|x| x.compliance == Compliance::NonCompliant));
    // Not the same scope by prefix alone.
    assert!(set
        .evaluate(&format!("{SUB}0/x"), aliases::VAULTS, &v, &ctx())
        .is_empty());
    // An exemption for one member.
    set.exemptions.push(Exemption {
        id: "e1".into(),
        scope: rg.clone(),
        assignment_id: a.id.clone(),
        reference_ids: vec!["purge".into()],
        expires: None,
    });
    let verdicts = set.evaluate(&id, aliases::VAULTS, &v, &ctx());
    let by_ref = |r: &str| {
        verdicts
            .iter()
            .find(|x| x.rule.set.as_ref().is_some_and(|(_, id)| id == r))
            .map(|x| x.compliance)
    };
    assert_eq!(by_ref("purge"), Some(Compliance::Exempt));
    assert_eq!(by_ref("firewall"), Some(Compliance::NonCompliant));
    // An expired exemption does nothing.
    set.exemptions[0].expires = Some(ctx().now - 1);
    assert!(set
        .evaluate(&id, aliases::VAULTS, &v, &ctx())
        .iter()
        .all(|x| x.compliance == Compliance::NonCompliant));
    // notScopes.
    let mut a2 = (*a).clone();
    a2.not_scopes = vec![rg.to_uppercase()];
    let rules = rules_of(&Arc::new(a2), &lookup).expect("rules");
    let set = PolicySet {
        rules: rules.into_iter().map(Arc::new).collect(),
        exemptions: vec![],
    };
    assert!(set.evaluate(&id, aliases::VAULTS, &v, &ctx()).is_empty());
    // A wrong parameter through the initiative.
    let bad = assignment(SUB, "/set", json!({"effect": {"value": "Explode"}}));
    assert_eq!(
        rules_of(&bad, &lookup).expect_err("bad effect").code,
        "PolicyParameterValueNotAllowed"
    );
}

#[test]
fn explain_names_the_failing_fields() {
    let d = builtin("0b60c0b2-2dc2-4e1c-b5c9-abbed971de53");
    let p = params(&d, json!({"effect": {"value": "Deny"}}));
    let out = d.explain(
        &vault(json!({"enableSoftDelete": true, "enablePurgeProtection": false})),
        &p,
        &ctx(),
    );
    assert!(
        out.iter().any(
            |e| e["expression"] == "Microsoft.KeyVault/vaults/enablePurgeProtection"
                && e["path"] == "properties.enablePurgeProtection"
        ),
        "{out:?}"
    );
}

#[test]
fn evaluation_is_bounded_and_fails_closed() {
    // Text doubling 30 times would be 1 GiB: it stops at the size limit, and
    // the rule then counts as matched (a Deny refuses).
    let mut e = "'a'".to_owned();
    for _ in 0..30 {
        e = format!("replace({e}, 'a', 'aa')");
    }
    let d = custom(
        json!({"if": {"value": format!("[{e}]"), "equals": "x"}, "then": {"effect": "deny"}}),
    )
    .expect("parses");
    let p = resolve_parameters(&d.parameters, None, "t").expect("defaults");
    let err = d
        .matches(&vault(json!({})), &p, &ctx())
        .expect_err("bounded");
    assert_eq!(err.code, "PolicyEvaluationFailed");
    let a = assignment(SUB, "/x", json!({}));
    let set = PolicySet {
        rules: vec![Arc::new(Rule {
            assignment: a,
            definition_id: "/x".into(),
            definition_name: "x".into(),
            set: None,
            definition: Arc::new(d),
            params: p,
            effect: Effect::Deny,
        })],
        exemptions: vec![],
    };
    let v = set.evaluate(
        &format!("{SUB}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/v1"),
        aliases::VAULTS,
        &vault(json!({})),
        &ctx(),
    );
    assert_eq!(v[0].compliance, Compliance::NonCompliant);
    assert!(v[0].error.is_some());
    // Counts nest at most three deep.
    let inner =
        |w: Value| json!({"count": {"value": "[parameters('names')]", "where": w}, "greater": 0});
    let deep = inner(inner(inner(inner(json!({"value": "a", "equals": "a"})))));
    assert_eq!(
        custom(json!({"if": deep, "then": {"effect": "deny"}}))
            .expect_err("deep")
            .code,
        "InvalidPolicyRule"
    );
    // A value that looks like an expression is still checked as a value.
    let min = builtin("82067dbb-e53b-4e06-b631-546d197452d9");
    let err = resolve_parameters(
        &min.parameters,
        Some(&json!({"minimumRSAKeySize": {"value": "[parameters('x')]"}})),
        "x",
    )
    .expect_err("checked");
    assert_eq!(err.code, "InvalidPolicyParameterType");
}
