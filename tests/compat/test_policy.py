"""Azure Policy (issue #26) with Microsoft's own clients: azure-mgmt-resource's
`PolicyClient` for definitions, initiatives, assignments and exemptions, the
Key Vault data-plane SDKs for what `Microsoft.KeyVault.Data` policies refuse
or record, and raw `Microsoft.PolicyInsights` calls for compliance. Policies
apply to a whole subscription, so the module runs a server of its own."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.keyvault.certificates import CertificateClient, CertificatePolicy
from azure.keyvault.keys import KeyClient
from azure.keyvault.secrets import SecretClient

from khcompat import (CLIENT_KWARGS, KeyhavenServer, arm, assert_arm_error, management_token, module_server,
                      new_app_with_secret, assign_role, unique)

INSIGHTS_API = "2019-10-01"
KV_API = "2023-07-01"

PURGE = "0b60c0b2-2dc2-4e1c-b5c9-abbed971de53"
FIREWALL = "55615ac9-af46-4a59-874e-391cc3dfb490"
SECRET_EXPIRY = "98728c90-32c7-4049-8429-847dc0f4fe37"
RSA_MIN = "82067dbb-e53b-4e06-b631-546d197452d9"
CERT_VALIDITY = "0a075868-4c26-42ef-914c-5bc007359560"
RESOURCE_POLICY_CONTRIBUTOR = "36243c78-bf99-498c-9df9-86d9f8d28608"


def builtin(guid: str) -> str:
    return f"/providers/Microsoft.Authorization/policyDefinitions/{guid}"


@pytest.fixture(scope="module")
def srv(store_kind, tmp_path_factory):
    with module_server(KeyhavenServer, store_kind, tmp_path_factory.mktemp(f"policy-{store_kind}")) as s:
        yield s


@pytest.fixture(scope="module")
def policy(srv):
    from azure.mgmt.resource.policy import PolicyClient
    c = PolicyClient(srv.credential(), srv.subscription_id, base_url=srv.management_url,
                     credential_scopes=[srv.management_scope], **CLIENT_KWARGS)
    yield c
    c.close()


@pytest.fixture(scope="module")
def kv(srv):
    from azure.mgmt.keyvault import KeyVaultManagementClient
    c = KeyVaultManagementClient(srv.credential(), srv.subscription_id, base_url=srv.management_url,
                                 credential_scopes=[srv.management_scope], **CLIENT_KWARGS)
    yield c
    c.close()


def sub_scope(srv) -> str:
    return f"/subscriptions/{srv.subscription_id}"


def group_scope(srv) -> str:
    return f"{sub_scope(srv)}/resourceGroups/{srv.resource_group}"


def dev_vault_id(srv) -> str:
    return f"{group_scope(srv)}/providers/Microsoft.KeyVault/vaults/dev"


def vault_body(srv, **props):
    base = {"tenantId": srv.tenant_id, "sku": {"family": "A", "name": "standard"},
            "enableRbacAuthorization": True}
    base.update(props)
    return {"location": "westeurope", "properties": base}


def put_vault(srv, name, **props):
    return arm(srv, "PUT", f"{group_scope(srv)}/providers/Microsoft.KeyVault/vaults/{name}",
               management_token(srv), vault_body(srv, **props), api_version=KV_API)


def states(srv, scope, **params):
    r = arm(srv, "POST", f"{scope}/providers/Microsoft.PolicyInsights/policyStates/latest/queryResults",
            management_token(srv), params=params, api_version=INSIGHTS_API)
    assert r.status_code == 200, r.text
    return r.json()["value"]


def wait_for_states(srv, scope, predicate, **params):
    """Polls compliance (an assignment's first scan runs in the background),
    at most 10 s in bounded steps."""
    got = []
    for _ in range(50):
        got = states(srv, scope, **params)
        if predicate(got):
            return got
        time.sleep(0.2)
    raise AssertionError(f"compliance never matched: {got}")


def vault_name() -> str:
    return unique("kvp")[:24].rstrip("-")


# -- Definitions, initiatives, assignments, exemptions through PolicyClient --------

def test_builtins_and_custom_definitions_round_trip(srv, policy):
    b = policy.policy_definitions.get_built_in(PURGE)
    assert b.display_name == "Key vaults should have deletion protection enabled"
    assert b.policy_type == "BuiltIn" and b.mode == "Indexed"
    assert set(b.parameters) == {"effect"} and b.parameters["effect"].allowed_values == ["Audit", "Deny", "Disabled"]
    with pytest.raises(ResourceNotFoundError):
        policy.policy_definitions.get_built_in("00000000-0000-0000-0000-000000000000")
    names = {d.name for d in policy.policy_definitions.list_built_in()}
    assert {PURGE, FIREWALL, SECRET_EXPIRY, RSA_MIN, CERT_VALIDITY} <= names

    rule = {"if": {"allOf": [{"field": "type", "equals": "Microsoft.KeyVault/vaults"},
                             {"field": "tags['owner']", "exists": "false"}]},
            "then": {"effect": "[parameters('effect')]"}}
    d = policy.policy_definitions.create_or_update("kv-owner-tag", {
        "display_name": "Vaults need an owner tag", "mode": "Indexed", "policy_rule": rule,
        "parameters": {"effect": {"type": "String", "allowed_values": ["Audit", "Deny"], "default_value": "Deny"}},
        "metadata": {"category": "Key Vault"}})
    assert d.policy_type == "Custom" and d.id == f"{sub_scope(srv)}/providers/Microsoft.Authorization/policyDefinitions/kv-owner-tag"
    # An update answers 201 as well (the SDK accepts nothing else).
    d = policy.policy_definitions.create_or_update("kv-owner-tag", {
        "display_name": "Vaults need an owner tag (v2)", "mode": "Indexed", "policy_rule": rule,
        "parameters": {"effect": {"type": "String", "allowed_values": ["Audit", "Deny"], "default_value": "Deny"}}})
    assert d.display_name.endswith("(v2)")
    assert policy.policy_definitions.get("kv-owner-tag").policy_rule == rule
    listed = {x.name for x in policy.policy_definitions.list()}
    assert "kv-owner-tag" in listed and PURGE in listed
    customs = list(policy.policy_definitions.list(filter="policyType eq 'Custom'"))
    assert [x.name for x in customs] == ["kv-owner-tag"]
    policy.policy_definitions.delete("kv-owner-tag")
    with pytest.raises(ResourceNotFoundError):
        policy.policy_definitions.get("kv-owner-tag")


@pytest.mark.parametrize("rule,code", [
    ({"if": {"field": "Microsoft.KeyVault/vaults/noSuchAlias", "equals": "x"}, "then": {"effect": "deny"}},
     "InvalidPolicyAlias"),
    ({"if": {"field": "name", "equalz": "x"}, "then": {"effect": "deny"}}, "InvalidPolicyRule"),
    ({"if": {"value": "[frobnicate()]", "equals": "x"}, "then": {"effect": "deny"}}, "InvalidPolicyRule"),
    ({"if": {"field": "name", "equals": "x"}, "then": {"effect": "append"}}, "InvalidPolicyRuleEffect"),
])
def test_rules_keyhaven_would_not_evaluate_are_refused(srv, rule, code):
    r = arm(srv, "PUT", f"{sub_scope(srv)}/providers/Microsoft.Authorization/policyDefinitions/bad",
            management_token(srv), {"properties": {"mode": "All", "policyRule": rule}}, api_version="2023-04-01")
    assert_arm_error(r, 400, code)


def test_assignment_parameters_are_checked_against_the_definition(srv, policy):
    with pytest.raises(HttpResponseError) as e:
        policy.policy_assignments.create(sub_scope(srv), "rsa-bad", {
            "policy_definition_id": builtin(RSA_MIN), "parameters": {"minimumRSAKeySize": {"value": 0}}})
    assert e.value.status_code == 400 and e.value.error.code == "PolicyParameterValueNotAllowed"
    assert "2048, 3072, 4096" in e.value.error.message
    with pytest.raises(HttpResponseError) as e:
        policy.policy_assignments.create(sub_scope(srv), "rsa-bad", {"policy_definition_id": builtin(RSA_MIN)})
    assert e.value.error.code == "MissingPolicyParameter"
    with pytest.raises(HttpResponseError) as e:
        policy.policy_assignments.create(sub_scope(srv), "nodef", {
            "policy_definition_id": f"{sub_scope(srv)}/providers/Microsoft.Authorization/policyDefinitions/nope"})
    assert e.value.status_code == 404 and e.value.error.code == "PolicyDefinitionNotFound"


def test_a_caller_without_policy_rights_cannot_assign_or_exempt(srv):
    app, sp, secret = new_app_with_secret(srv)
    tok = management_token(srv, app["appId"], secret)
    body = {"properties": {"policyDefinitionId": builtin(PURGE)}}
    path = f"{sub_scope(srv)}/providers/Microsoft.Authorization/policyAssignments/sneaky"
    assert_arm_error(arm(srv, "PUT", path, tok, body, api_version="2023-04-01"), 403, "AuthorizationFailed")
    # Contributor may not either: Microsoft.Authorization/*/Write is outside it.
    sp_id = sp["id"]
    assign_role(srv, sub_scope(srv), "b24988ac-6180-42a0-ab88-20f7382dd24c", sp_id)
    assert_arm_error(arm(srv, "PUT", path, tok, body, api_version="2023-04-01"), 403, "AuthorizationFailed")
    # Resource Policy Contributor may, and its assignment then binds everyone.
    assign_role(srv, sub_scope(srv), RESOURCE_POLICY_CONTRIBUTOR, sp_id)
    r = arm(srv, "PUT", path, tok, {"properties": {"policyDefinitionId": builtin(PURGE),
                                                   "enforcementMode": "DoNotEnforce"}}, api_version="2023-04-01")
    assert r.status_code == 201, r.text
    assert arm(srv, "DELETE", path, tok, api_version="2023-04-01").status_code == 200


# -- The seed's guardrails on vaults ------------------------------------------------

def test_deny_refuses_vault_writes_with_azure_error_and_exemptions_let_one_through(srv, policy, kv):
    s = policy.policy_set_definitions.create_or_update("kv-guardrails", {
        "display_name": "Key Vault guardrails",
        "parameters": {"effect": {"type": "String", "default_value": "Deny"}},
        "policy_definitions": [
            {"policy_definition_id": builtin(PURGE), "policy_definition_reference_id": "purge",
             "parameters": {"effect": {"value": "[parameters('effect')]"}}},
            {"policy_definition_id": builtin(FIREWALL), "policy_definition_reference_id": "firewall",
             "parameters": {"effect": {"value": "[parameters('effect')]"}}},
        ]})
    assert [m.policy_definition_reference_id for m in s.policy_definitions] == ["purge", "firewall"]
    a = policy.policy_assignments.create(sub_scope(srv), "guardrails", {
        "policy_definition_id": s.id, "display_name": "Guardrails",
        "non_compliance_messages": [{"message": "Vaults need purge protection.", "policy_definition_reference_id": "purge"}]})
    assert a.scope == sub_scope(srv) and a.enforcement_mode == "Default" and a.not_scopes == []
    try:
        name = vault_name()
        r = put_vault(srv, name)
        err = assert_arm_error(r, 403, "RequestDisallowedByPolicy")
        assert err["target"] == name
        assert "Vaults need purge protection." in err["message"]
        infos = [x["info"] for x in err["additionalInfo"]]
        assert all(x["type"] == "PolicyViolation" for x in err["additionalInfo"])
        by_ref = {i["policyDefinitionReferenceId"]: i for i in infos}
        assert set(by_ref) == {"purge", "firewall"}
        assert by_ref["purge"]["policyDefinitionId"] == builtin(PURGE)
        assert by_ref["purge"]["policyAssignmentId"] == a.id
        assert by_ref["purge"]["policySetDefinitionId"] == s.id
        assert by_ref["purge"]["policyDefinitionEffect"] == "deny"
        exprs = by_ref["purge"]["evaluationDetails"]["evaluatedExpressions"]
        assert any(e["expression"] == "Microsoft.KeyVault/vaults/enablePurgeProtection" for e in exprs), exprs
        # Nothing was written.
        with pytest.raises(ResourceNotFoundError):
            kv.vaults.get(srv.resource_group, name)
        # Compliant with both: created.
        r = put_vault(srv, name, enablePurgeProtection=True, networkAcls={"defaultAction": "Deny"})
        assert r.status_code == 201, r.text
        # A PATCH that opens the firewall is refused and changes nothing.
        r = arm(srv, "PATCH", f"{group_scope(srv)}/providers/Microsoft.KeyVault/vaults/{name}", management_token(srv),
                {"properties": {"networkAcls": {"defaultAction": "Allow"}}}, api_version=KV_API)
        assert_arm_error(r, 403, "RequestDisallowedByPolicy")
        assert kv.vaults.get(srv.resource_group, name).properties.network_acls.default_action == "Deny"

        # An exemption for the firewall member at one resource group.
        rg2 = unique("rg")
        arm(srv, "PUT", f"{sub_scope(srv)}/resourcegroups/{rg2}", management_token(srv), {"location": "westeurope"},
            api_version="2021-04-01")
        ex = policy.policy_exemptions.create_or_update(f"{sub_scope(srv)}/resourceGroups/{rg2}", "open-lab", {
            "policy_assignment_id": a.id, "exemption_category": "Waiver",
            "policy_definition_reference_ids": ["firewall"]})
        assert ex.exemption_category == "Waiver"
        open_vault = vault_name()
        r = arm(srv, "PUT", f"{sub_scope(srv)}/resourceGroups/{rg2}/providers/Microsoft.KeyVault/vaults/{open_vault}",
                management_token(srv), vault_body(srv, enablePurgeProtection=True), api_version=KV_API)
        assert r.status_code == 201, r.text
        # The exemption covers the firewall only: purge protection still holds there.
        r = arm(srv, "PUT", f"{sub_scope(srv)}/resourceGroups/{rg2}/providers/Microsoft.KeyVault/vaults/{vault_name()}",
                management_token(srv), vault_body(srv), api_version=KV_API)
        assert_arm_error(r, 403, "RequestDisallowedByPolicy")
        # An unknown member is refused.
        with pytest.raises(HttpResponseError) as e:
            policy.policy_exemptions.create_or_update(f"{sub_scope(srv)}/resourceGroups/{rg2}", "bad", {
                "policy_assignment_id": a.id, "exemption_category": "Waiver",
                "policy_definition_reference_ids": ["nope"]})
        assert e.value.status_code == 400
        policy.policy_exemptions.delete(f"{sub_scope(srv)}/resourceGroups/{rg2}", "open-lab")

        # DoNotEnforce audits without refusing.
        policy.policy_assignments.create(sub_scope(srv), "guardrails", {
            "policy_definition_id": s.id, "enforcement_mode": "DoNotEnforce"})
        lax = vault_name()
        assert put_vault(srv, lax).status_code == 201
        lax_id = f"{group_scope(srv)}/providers/Microsoft.KeyVault/vaults/{lax}"
        got = wait_for_states(srv, lax_id, lambda v: len(v) == 2)
        assert {(x["policyDefinitionReferenceId"], x["complianceState"]) for x in got} == \
            {("purge", "NonCompliant"), ("firewall", "NonCompliant")}
        assert all(x["policyAssignmentId"].lower() == a.id.lower() and x["resourceId"].lower() == lax_id.lower()
                   for x in got)
        compliant_id = f"{group_scope(srv)}/providers/Microsoft.KeyVault/vaults/{name}"
        got = wait_for_states(srv, compliant_id, lambda v: len(v) == 2)
        assert {x["complianceState"] for x in got} == {"Compliant"}
        # The assignment's own scope, a filter, and the summary.
        nc = states(srv, a.id, **{"$filter": "complianceState eq 'NonCompliant'"})
        assert {x["resourceId"].lower() for x in nc} >= {lax_id.lower()}
        assert compliant_id.lower() not in {x["resourceId"].lower() for x in nc}
        r = arm(srv, "POST", f"{sub_scope(srv)}/providers/Microsoft.PolicyInsights/policyStates/latest/summarize",
                management_token(srv), api_version=INSIGHTS_API)
        assert r.status_code == 200, r.text
        summary = r.json()["value"]
        assert len(summary) == 1
        assert summary[0]["results"]["nonCompliantResources"] >= 1
        assert [p["policyAssignmentId"].lower() for p in summary[0]["policyAssignments"]] == [a.id.lower()]
    finally:
        policy.policy_assignments.delete(sub_scope(srv), "guardrails")
    # Once the assignment is gone, nothing is refused.
    assert put_vault(srv, vault_name()).status_code == 201


def test_modify_adds_a_tag_to_vaults(srv, policy, kv):
    d = policy.policy_definitions.create_or_update("kv-cost-center", {
        "mode": "Indexed", "policy_rule": {
            "if": {"allOf": [{"field": "type", "equals": "Microsoft.KeyVault/vaults"},
                             {"field": "tags['costCenter']", "exists": "false"}]},
            "then": {"effect": "modify", "details": {
                "roleDefinitionIds": ["/providers/microsoft.authorization/roleDefinitions/b24988ac-6180-42a0-ab88-20f7382dd24c"],
                "operations": [{"operation": "addOrReplace", "field": "tags['costCenter']",
                                "value": "[concat('cc-', field('location'))]"}]}}}})
    # Without an identity to act as, a Modify assignment is refused (as on Azure).
    with pytest.raises(HttpResponseError) as e:
        policy.policy_assignments.create(group_scope(srv), "cost-center", {"policy_definition_id": d.id})
    assert e.value.status_code == 400 and e.value.error.code == "InvalidPolicyAssignmentIdentity"
    policy.policy_assignments.create(group_scope(srv), "cost-center", {
        "policy_definition_id": d.id, "identity": {"type": "SystemAssigned"}, "location": "westeurope"})
    try:
        name = vault_name()
        assert put_vault(srv, name).status_code == 201
        assert kv.vaults.get(srv.resource_group, name).tags == {"costCenter": "cc-westeurope"}
    finally:
        policy.policy_assignments.delete(group_scope(srv), "cost-center")
        policy.policy_definitions.delete("kv-cost-center")


# -- Data-plane policies --------------------------------------------------------------

def assign_data(policy, srv, name, guid, effect, **params):
    values = {"effect": {"value": effect}}
    values.update({k: {"value": v} for k, v in params.items()})
    return policy.policy_assignments.create(dev_vault_id(srv), name, {
        "policy_definition_id": builtin(guid), "parameters": values})


def forbidden_by_policy(e: HttpResponseError):
    assert e.status_code == 403, e
    body = e.response.json()
    assert body["error"]["code"] == "Forbidden", body
    assert body["error"]["innererror"]["code"] == "RequestDisallowedByPolicy", body
    return body["error"]["message"]


def test_secret_without_expiry_is_refused_under_deny_and_recorded_under_audit(srv, policy):
    secrets = srv.secret_client()
    a = assign_data(policy, srv, "secret-expiry", SECRET_EXPIRY, "Deny")
    try:
        name = unique("s")
        with pytest.raises(HttpResponseError) as e:
            secrets.set_secret(name, "v")
        msg = forbidden_by_policy(e.value)
        assert a.id.lower() in msg.lower() and SECRET_EXPIRY in msg
        # Not written, not even as a version.
        with pytest.raises(ResourceNotFoundError):
            secrets.get_secret(name)
        ok = secrets.set_secret(name, "v", expires_on=dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=30))
        assert ok.properties.expires_on is not None

        policy.policy_assignments.create(dev_vault_id(srv), "secret-expiry", {
            "policy_definition_id": builtin(SECRET_EXPIRY), "parameters": {"effect": {"value": "Audit"}}})
        audited = unique("s")
        secrets.set_secret(audited, "v")
        want = {f"secrets/{audited}".lower(), f"secrets/{name}".lower()}
        got = wait_for_states(srv, a.id, lambda v: want <= {c["id"] for x in v for c in x.get("components", [])},
                              **{"$expand": "components"})
        comps = {c["id"]: c["complianceState"] for x in got for c in x.get("components", [])}
        assert comps.get(f"secrets/{audited}".lower()) == "NonCompliant", comps
        assert comps.get(f"secrets/{name}".lower()) == "Compliant", comps
        vault_state = [x for x in got if x["resourceId"].lower() == dev_vault_id(srv).lower()]
        assert vault_state and vault_state[0]["complianceState"] == "NonCompliant"
        assert vault_state[0]["resourceType"] == "Microsoft.KeyVault/vaults"
    finally:
        policy.policy_assignments.delete(dev_vault_id(srv), "secret-expiry")
    secrets.set_secret(unique("s"), "v")


def test_rsa_keys_below_the_minimum_size_are_refused(srv, policy):
    keys = KeyClient(srv.vault_url, srv.credential(), **CLIENT_KWARGS)
    assign_data(policy, srv, "rsa-min", RSA_MIN, "Deny", minimumRSAKeySize=3072)
    try:
        with pytest.raises(HttpResponseError) as e:
            keys.create_rsa_key(unique("k"), size=2048)
        forbidden_by_policy(e.value)
        k = keys.create_rsa_key(unique("k"), size=3072)
        assert k.key.n and len(k.key.n) == 384
        # Curves are not RSA: the rule does not apply.
        keys.create_ec_key(unique("k"), curve="P-256")
    finally:
        policy.policy_assignments.delete(dev_vault_id(srv), "rsa-min")
    keys.create_rsa_key(unique("k"), size=2048)


def test_certificates_valid_longer_than_the_maximum_are_refused(srv, policy):
    certs = CertificateClient(srv.vault_url, srv.credential(), **CLIENT_KWARGS)
    assign_data(policy, srv, "cert-validity", CERT_VALIDITY, "deny", maximumValidityInMonths=12)
    try:
        long_policy = CertificatePolicy(issuer_name="Self", subject="CN=long.example", validity_in_months=24)
        with pytest.raises(HttpResponseError) as e:
            certs.begin_create_certificate(unique("c"), long_policy).result()
        forbidden_by_policy(e.value)
        short = CertificatePolicy(issuer_name="Self", subject="CN=short.example", validity_in_months=12)
        cert = certs.begin_create_certificate(unique("c"), short, _polling_interval=0).result()
        assert cert.properties.expires_on is not None
    finally:
        policy.policy_assignments.delete(dev_vault_id(srv), "cert-validity")


# -- What the adversarial review found: no way around a policy ------------------------

def test_a_narrow_policy_writer_cannot_borrow_an_identity_or_remediate_elsewhere(srv, policy):
    from khcompat import create_uami
    uami = create_uami(srv)
    app, sp, secret = new_app_with_secret(srv)
    assign_role(srv, group_scope(srv), RESOURCE_POLICY_CONTRIBUTOR, sp["id"])
    tok = management_token(srv, app["appId"], secret)
    dine = builtin("951af2fa-529b-416e-ab6e-066fd85ac459")
    body = {"location": "westeurope", "identity": {"type": "UserAssigned", "userAssignedIdentities": {uami["id"]: {}}},
            "properties": {"policyDefinitionId": dine, "parameters": {"logAnalytics": {"value": "/x"}}}}
    path = f"{group_scope(srv)}/providers/Microsoft.Authorization/policyAssignments/borrowed"
    # Acting as an identity needs the right to assign it.
    assert_arm_error(arm(srv, "PUT", path, tok, body, api_version="2023-04-01"), 403, "AuthorizationFailed")
    # A remediation in one group cannot run an assignment of another scope.
    other = unique("rg")
    arm(srv, "PUT", f"{sub_scope(srv)}/resourcegroups/{other}", management_token(srv), {"location": "westeurope"},
        api_version="2021-04-01")
    own = policy.policy_assignments.create(f"{sub_scope(srv)}/resourceGroups/{other}", "diag-other", {
        "policy_definition_id": dine, "parameters": {"logAnalytics": {"value": "/x"}},
        "identity": {"type": "SystemAssigned"}, "location": "westeurope"})
    try:
        r = arm(srv, "PUT", f"{group_scope(srv)}/providers/Microsoft.PolicyInsights/remediations/elsewhere", tok,
                {"properties": {"policyAssignmentId": own.id}}, api_version="2021-10-01")
        assert_arm_error(r, 400, "InvalidRemediationScope")
    finally:
        policy.policy_assignments.delete(f"{sub_scope(srv)}/resourceGroups/{other}", "diag-other")


def test_deny_also_holds_for_updates_restores_and_access_policy_edits(srv, policy):
    secrets = srv.secret_client()
    name = unique("s")
    secrets.set_secret(name, "v", content_type="text/plain")
    backup = secrets.backup_secret(name)
    secrets.begin_delete_secret(name).wait()
    secrets.purge_deleted_secret(name)
    kept = unique("s")
    secrets.set_secret(kept, "v", content_type="text/plain")
    ct = "75262d3e-ba4a-4f43-85f8-9f72c090e5e3"
    assign_data(policy, srv, "content-type", ct, "Deny")
    try:
        # Clearing the content type later is refused, and changes nothing.
        with pytest.raises(HttpResponseError) as e:
            secrets.update_secret_properties(kept, content_type="")
        forbidden_by_policy(e.value)
        assert secrets.get_secret(kept).properties.content_type == "text/plain"
    finally:
        policy.policy_assignments.delete(dev_vault_id(srv), "content-type")
    # A restore is evaluated as a new secret: secrets must expire, and the
    # backup's does not.
    assign_data(policy, srv, "secret-expiry-restore", SECRET_EXPIRY, "Deny")
    try:
        with pytest.raises(HttpResponseError) as e:
            secrets.restore_secret_backup(backup)
        forbidden_by_policy(e.value)
        with pytest.raises(ResourceNotFoundError):
            secrets.get_secret(name)
    finally:
        policy.policy_assignments.delete(dev_vault_id(srv), "secret-expiry-restore")
    # Access-policy edits are vault writes too.
    d = policy.policy_definitions.create_or_update("kv-no-access-policies", {
        "mode": "Indexed", "policy_rule": {
            "if": {"allOf": [{"field": "type", "equals": "Microsoft.KeyVault/vaults"},
                             {"count": {"field": "Microsoft.KeyVault/vaults/accessPolicies[*]"}, "greater": 0}]},
            "then": {"effect": "deny"}}})
    policy.policy_assignments.create(group_scope(srv), "no-access-policies", {"policy_definition_id": d.id})
    try:
        entry = {"tenantId": srv.tenant_id, "objectId": "00000000-0000-0000-0000-0000000000aa",
                 "permissions": {"secrets": ["get"]}}
        r = arm(srv, "PUT", f"{dev_vault_id(srv)}/accessPolicies/add", management_token(srv),
                {"properties": {"accessPolicies": [entry]}}, api_version=KV_API)
        assert_arm_error(r, 403, "RequestDisallowedByPolicy")
    finally:
        policy.policy_assignments.delete(group_scope(srv), "no-access-policies")
        policy.policy_definitions.delete("kv-no-access-policies")


def test_a_definition_change_that_would_break_its_assignments_is_refused(srv, policy):
    rule = {"if": {"field": "type", "equals": "Microsoft.KeyVault/vaults"}, "then": {"effect": "[parameters('e')]"}}
    d = policy.policy_definitions.create_or_update("kv-audit-all", {
        "mode": "Indexed", "policy_rule": rule,
        "parameters": {"e": {"type": "String", "default_value": "Audit"}}})
    policy.policy_assignments.create(group_scope(srv), "audit-all", {"policy_definition_id": d.id})
    try:
        with pytest.raises(HttpResponseError) as e:
            policy.policy_definitions.create_or_update("kv-audit-all", {
                "mode": "Indexed", "policy_rule": rule, "parameters": {"e": {"type": "String"}}})
        assert e.value.status_code == 400 and e.value.error.code == "InvalidPolicyDefinitionUpdate"
        assert "audit-all" in e.value.error.message
    finally:
        policy.policy_assignments.delete(group_scope(srv), "audit-all")
        policy.policy_definitions.delete("kv-audit-all")
