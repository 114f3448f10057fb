"""The seed's guardrails (issue #26) set up and exercised with `az policy`
(azure-cli 2.91.0, pinned) against a private Keyhaven, once per store: one
initiative assigned at the subscription with a managed identity refuses
vaults without purge protection, with an open firewall, without RBAC or of a
SKU not allowed; deploys a diagnostic setting to a Log Analytics workspace
on every new vault; shows an existing vault non-compliant until a
remediation task fixes it; audits without refusing under DoNotEnforce; and
lets one resource group through with an exemption.

The steps share one server and CLI profile and run in order; a step that
needs an earlier one's result fails (never skips) when that step did not
complete."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Dict

import pytest

from khcompat import KEYHAVEN_BIN, KeyhavenServer, module_server
from test_azure_cli import AZ, AZ_TIMEOUT, Az

RG = "rg-governed"
RG_LAB = "rg-sandbox"
LOC = "eastus"
PURGE = "0b60c0b2-2dc2-4e1c-b5c9-abbed971de53"
FIREWALL = "55615ac9-af46-4a59-874e-391cc3dfb490"
RBAC = "12d4fa5e-1f9f-4c21-97a9-b99b3c6611b5"
PRIVATE_LINK = "a6abeaec-4d90-4a02-805f-6b26c4d3fbe9"
DIAGNOSTICS = "951af2fa-529b-416e-ab6e-066fd85ac459"
SETTING = "AzureKeyVaultDiagnosticsLogsToWorkspace"


class Gov:
    def __init__(self, server: KeyhavenServer, az: Az):
        self.server = server
        self.az = az
        self.facts: Dict[str, str] = {}

    def fact(self, name: str) -> str:
        if name not in self.facts:
            pytest.fail(f"an earlier step did not complete (no {name!r})", pytrace=False)
        return self.facts[name]

    @property
    def sub(self) -> str:
        return f"/subscriptions/{self.server.subscription_id}"

    def group(self, rg: str = RG) -> str:
        return f"{self.sub}/resourceGroups/{rg}"

    def vault_id(self, name: str, rg: str = RG) -> str:
        return f"{self.group(rg)}/providers/Microsoft.KeyVault/vaults/{name}"


@pytest.fixture(scope="module")
def gov(store_kind, tmp_path_factory):
    if not AZ:
        pytest.fail("the Azure CLI was not found (KEYHAVEN_AZ); run through scripts/compat", pytrace=False)
    work = tmp_path_factory.mktemp(f"policy-cli-{store_kind}")
    with module_server(KeyhavenServer, store_kind, work / "server") as srv:
        az = Az(srv, work / "azure")
        proc = subprocess.run([KEYHAVEN_BIN, "cloud", "--run", "--data-dir", str(srv.data_dir)], env=az.env,
                              capture_output=True, text=True, timeout=AZ_TIMEOUT, stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, proc.stderr[-2000:]
        az.json("login", "--service-principal", "--username", srv.client_id, f"--password={srv.client_secret}",
                "--tenant", srv.tenant_id)
        yield Gov(srv, az)


def wait(what: str, probe, attempts: int = 50, delay: float = 0.2):
    """Polls `probe` until it returns something truthy (bounded)."""
    last = None
    for _ in range(attempts):
        last = probe()
        if last:
            return last
        time.sleep(delay)
    raise AssertionError(f"{what}: never happened (last: {last!r})")


def test_groups_workspace_and_an_existing_vault(gov):
    az = gov.az
    for rg in (RG, RG_LAB):
        az.run("group", "create", "--name", rg, "--location", LOC, "--output", "none")
    ws = az.json("monitor", "log-analytics", "workspace", "create", "--resource-group", RG,
                 "--workspace-name", "law-governed", "--location", LOC)
    # A vault made before any policy: no purge protection, no diagnostics.
    legacy = az.json("keyvault", "create", "--name", "kvlegacy", "--resource-group", RG, "--location", LOC)
    assert legacy["properties"].get("enablePurgeProtection") in (None, False)
    gov.facts.update(workspace=ws["id"], legacy=legacy["id"])


def test_the_seed_guardrails_as_one_initiative_in_a_few_commands(gov, tmp_path):
    az = gov.az
    ws = gov.fact("workspace")
    # Allowed SKUs: a custom definition (Azure has no built-in for it).
    sku_rule = {"if": {"allOf": [{"field": "type", "equals": "Microsoft.KeyVault/vaults"},
                                 {"field": "Microsoft.KeyVault/vaults/sku.name",
                                  "notIn": "[parameters('allowedSkus')]"}]},
                "then": {"effect": "deny"}}
    d = az.json("policy", "definition", "create", "--name", "kv-allowed-skus", "--mode", "Indexed",
                "--display-name", "Key vaults must use an allowed SKU", "--rules", json.dumps(sku_rule),
                "--params", json.dumps({"allowedSkus": {"type": "Array", "defaultValue": ["standard"]}}))
    assert d["policyType"] == "Custom" and d["name"] == "kv-allowed-skus"
    shown = az.json("policy", "definition", "show", "--name", PURGE)
    assert shown["displayName"] == "Key vaults should have deletion protection enabled"
    assert shown["policyType"] == "BuiltIn"

    builtin = "/providers/Microsoft.Authorization/policyDefinitions/"
    members = [
        {"policyDefinitionId": builtin + PURGE, "policyDefinitionReferenceId": "purge",
         "parameters": {"effect": {"value": "Deny"}}},
        {"policyDefinitionId": builtin + FIREWALL, "policyDefinitionReferenceId": "firewall",
         "parameters": {"effect": {"value": "Deny"}}},
        {"policyDefinitionId": builtin + RBAC, "policyDefinitionReferenceId": "rbac",
         "parameters": {"effect": {"value": "Deny"}}},
        {"policyDefinitionId": builtin + PRIVATE_LINK, "policyDefinitionReferenceId": "private-link"},
        {"policyDefinitionId": d["id"], "policyDefinitionReferenceId": "sku"},
        {"policyDefinitionId": builtin + DIAGNOSTICS, "policyDefinitionReferenceId": "diagnostics",
         "parameters": {"logAnalytics": {"value": "[parameters('workspace')]"}}},
    ]
    s = az.json("policy", "set-definition", "create", "--name", "kv-guardrails",
                "--display-name", "Key Vault guardrails", "--definitions", json.dumps(members),
                "--params", json.dumps({"workspace": {"type": "String"}}))
    assert [m["policyDefinitionReferenceId"] for m in s["policyDefinitions"]] == \
        ["purge", "firewall", "rbac", "private-link", "sku", "diagnostics"]
    # Assigned at the subscription, with an identity that may deploy
    # diagnostic settings into the workspace's group.
    a = az.json("policy", "assignment", "create", "--name", "guardrails", "--display-name", "Guardrails",
                "--policy-set-definition", "kv-guardrails", "--scope", gov.sub,
                "--params", json.dumps({"workspace": {"value": ws}}),
                "--mi-system-assigned", "--location", LOC,
                "--identity-scope", gov.group(), "--role", "Log Analytics Contributor")
    assert a["identity"]["type"] == "SystemAssigned" and a["identity"]["principalId"]
    assert a["enforcementMode"] == "Default" and a["scope"] == gov.sub
    roles = az.json("role", "assignment", "list", "--assignee", a["identity"]["principalId"], "--scope", gov.group())
    assert [r["roleDefinitionName"] for r in roles] == ["Log Analytics Contributor"]
    listed = az.json("policy", "assignment", "list")
    assert [x["name"] for x in listed] == ["guardrails"]
    gov.facts.update(assignment=a["id"], principal=a["identity"]["principalId"])


def test_non_compliant_vaults_are_refused(gov):
    gov.fact("assignment")
    az = gov.az
    err = az.fails("keyvault", "create", "--name", "kvopen", "--resource-group", RG, "--location", LOC)
    assert "RequestDisallowedByPolicy" in err and "kvopen" in err, err
    err = az.fails("keyvault", "create", "--name", "kvpremium", "--resource-group", RG, "--location", LOC,
                   "--enable-purge-protection", "true", "--default-action", "Deny", "--sku", "premium")
    assert "RequestDisallowedByPolicy" in err and "kv-allowed-skus" in err, err
    err = az.fails("keyvault", "create", "--name", "kvpolicies", "--resource-group", RG, "--location", LOC,
                   "--enable-purge-protection", "true", "--default-action", "Deny",
                   "--enable-rbac-authorization", "false")
    assert "RequestDisallowedByPolicy" in err, err
    assert az.run("keyvault", "show", "--name", "kvopen", check=False).returncode != 0


def test_a_new_vault_gets_its_diagnostic_setting_deployed(gov):
    gov.fact("assignment")
    az = gov.az
    v = az.json("keyvault", "create", "--name", "kvgood", "--resource-group", RG, "--location", LOC,
                "--enable-purge-protection", "true", "--default-action", "Deny")
    assert v["properties"]["enablePurgeProtection"] is True

    def deployed():
        out = az.json("monitor", "diagnostic-settings", "list", "--resource", v["id"])
        items = out["value"] if isinstance(out, dict) else out
        return [x for x in items if x["name"] == SETTING]
    setting = wait("the DeployIfNotExists deployment", deployed)[0]
    assert setting["workspaceId"].lower() == gov.fact("workspace").lower()
    assert [(x["category"], x["enabled"]) for x in setting["logs"]] == [("AuditEvent", True)]
    gov.facts["good"] = v["id"]


def test_an_existing_vault_is_non_compliant_until_remediated(gov):
    gov.fact("good")
    az = gov.az
    legacy = gov.fact("legacy")
    az.run("policy", "state", "trigger-scan", "--resource-group", RG, "--output", "none")
    rows = az.json("policy", "state", "list", "--resource", legacy)
    by_ref = {r["policyDefinitionReferenceId"]: r["complianceState"] for r in rows}
    assert by_ref["purge"] == "NonCompliant" and by_ref["firewall"] == "NonCompliant", by_ref
    assert by_ref["diagnostics"] == "NonCompliant" and by_ref["sku"] == "Compliant", by_ref
    good = {r["policyDefinitionReferenceId"]: r["complianceState"]
            for r in az.json("policy", "state", "list", "--resource", gov.fact("good"))}
    assert good["purge"] == good["firewall"] == good["diagnostics"] == "Compliant", good
    summary = az.json("policy", "state", "summarize")
    assert summary["results"]["nonCompliantResources"] >= 1
    nc = az.json("policy", "state", "list", "--filter", "complianceState eq 'NonCompliant'")
    assert legacy.lower() in {r["resourceId"].lower() for r in nc}

    rem = az.json("policy", "remediation", "create", "--name", "fix-diagnostics", "--resource-group", RG,
                  "--policy-assignment", "guardrails", "--definition-reference-id", "diagnostics")
    assert rem["provisioningState"] == "Succeeded", rem
    assert rem["deploymentStatus"] == {"totalDeployments": 1, "successfulDeployments": 1, "failedDeployments": 0}
    assert az.json("policy", "remediation", "show", "--name", "fix-diagnostics",
                   "--resource-group", RG)["provisioningState"] == "Succeeded"
    names = [x["name"] for x in az.json("monitor", "diagnostic-settings", "list", "--resource", legacy)]
    assert SETTING in names
    az.run("policy", "state", "trigger-scan", "--resource-group", RG, "--output", "none")
    after = {r["policyDefinitionReferenceId"]: r["complianceState"]
             for r in az.json("policy", "state", "list", "--resource", legacy)}
    assert after["diagnostics"] == "Compliant" and after["purge"] == "NonCompliant", after


def test_do_not_enforce_audits_and_an_exemption_lets_one_group_through(gov):
    a = gov.fact("assignment")
    az = gov.az
    az.run("policy", "assignment", "update", "--name", "guardrails", "--enforcement-mode", "DoNotEnforce",
           "--output", "none")
    lax = az.json("keyvault", "create", "--name", "kvlax", "--resource-group", RG, "--location", LOC)
    rows = wait("the audit of a DoNotEnforce write",
                lambda: [r for r in az.json("policy", "state", "list", "--resource", lax["id"])
                         if r["policyDefinitionReferenceId"] == "purge"])
    assert rows[0]["complianceState"] == "NonCompliant"
    # The identity survived the update.
    assert az.json("policy", "assignment", "show", "--name", "guardrails")["identity"]["principalId"] == \
        gov.fact("principal")
    az.run("policy", "assignment", "update", "--name", "guardrails", "--enforcement-mode", "Default",
           "--output", "none")
    ex = az.json("policy", "exemption", "create", "--name", "sandbox-firewall", "--policy-assignment", a,
                 "--exemption-category", "Waiver", "--scope", gov.group(RG_LAB),
                 "--policy-definition-reference-ids", "firewall")
    assert ex["exemptionCategory"] == "Waiver"
    open_vault = az.json("keyvault", "create", "--name", "kvsandbox", "--resource-group", RG_LAB,
                         "--location", LOC, "--enable-purge-protection", "true")
    assert open_vault["properties"]["networkAcls"] in (None, {}) or \
        open_vault["properties"]["networkAcls"]["defaultAction"] == "Allow"
    err = az.fails("keyvault", "create", "--name", "kvsandbox2", "--resource-group", RG_LAB, "--location", LOC)
    assert "RequestDisallowedByPolicy" in err, err
    assert [e["name"] for e in az.json("policy", "exemption", "list", "--scope", gov.group(RG_LAB))] == \
        ["sandbox-firewall"]
    az.run("policy", "exemption", "delete", "--name", "sandbox-firewall", "--scope", gov.group(RG_LAB))
    az.run("policy", "assignment", "delete", "--name", "guardrails")
    assert az.json("policy", "assignment", "list") == []
    az.json("keyvault", "create", "--name", "kvfree", "--resource-group", RG, "--location", LOC)
