"""The seed tutorial's lab ("Step-by-Step Hands-On Tutorial"), run with the
Azure CLI (azure-cli 2.91.0, pinned in azcli-requirements.txt, from its own
venv; KEYHAVEN_AZ names its `az`) against a private Keyhaven, once per store.

The CLI is pointed at Keyhaven only by `keyhaven cloud --run` (az cloud
register/set, MSAL instance discovery off) and REQUESTS_CA_BUNDLE; every lab
command then runs exactly as the tutorial writes it, and its output is checked
as the tutorial's "Expected outcome" lines describe. The lab's Python program
runs unchanged with DefaultAzureCredential, which finds the CLI login
(AzureCliCredential). Then what an operator tries next: keys (a signature
verified with `cryptography` against the downloaded public key), a
certificate (parsed), network rules, and the lab's cleanup with soft delete
and purge.

The tests are the lab's steps in order and share one server and one CLI
profile per store; a step that needs an earlier step's result fails (never
skips) when that step did not complete.

The server also listens on 127.0.0.1:443: `az login -u/-p` (MSAL's
username/password flow) first asks the authority host for the user's realm on
port 443, whatever the authority's port (see khcompat.assume_no_user_realm).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from khcompat import (
    AZURE_CLI_CLIENT_ID,
    IDENTITY_ENV_VARS,
    KEYHAVEN_BIN,
    KeyhavenServer,
    module_server,
    new_password,
)

AZ = os.environ.get("KEYHAVEN_AZ", "")
AZ_TIMEOUT = 120  # seconds per az command

# The tutorial's variables (Step 1). The vault name is fixed rather than
# "kv$RANDOM$RANDOM": each store's lab has a deployment of its own, and
# scripts/compat makes sure kvlab.vault.localhost resolves.
RG = "rg-kv-lab"
LOC = "eastus"
KV = "kvlab"
SECRET_VALUE = "P@ssw0rd-ReplaceMe"

KEY_VAULT_ADMINISTRATOR = "00482a5a-887f-4fb3-b363-3b7fe8e74483"
KEY_VAULT_SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"


class LabServer(KeyhavenServer):
    """A private server that also answers on 127.0.0.1:443 (for MSAL's user
    realm lookup before `az login -u/-p`)."""

    def command(self) -> List[str]:
        return super().command() + ["--extra-listen", "127.0.0.1:443"]


class AzFailed(AssertionError):
    pass


class Az:
    """Runs `az` with its own profile directory, trusting the server's CA."""

    def __init__(self, server: KeyhavenServer, config_dir: Path):
        self.server = server
        self.config_dir = config_dir
        env = {k: v for k, v in os.environ.items() if k not in IDENTITY_ENV_VARS}
        env.update({
            "AZURE_CONFIG_DIR": str(config_dir),
            "REQUESTS_CA_BUNDLE": server.ca_cert,
            "AZURE_CORE_COLLECT_TELEMETRY": "false",
            "AZURE_CORE_NO_COLOR": "true",
            "AZURE_CORE_SURVEY_MESSAGE": "false",
            "AZURE_CORE_LOGIN_EXPERIENCE_V2": "off",
            "KEYHAVEN_AZ": AZ,
            # DefaultAzureCredential's AzureCliCredential runs `az` from PATH.
            "PATH": f"{Path(AZ).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        })
        env.pop("SSL_CERT_FILE", None)
        self.env = env

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([AZ, *args], env=self.env, capture_output=True, text=True,
                              timeout=AZ_TIMEOUT, stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise AzFailed(f"az {' '.join(args)} exited {proc.returncode}\n"
                           f"--- stderr ---\n{proc.stderr[-3000:]}\n--- stdout ---\n{proc.stdout[-2000:]}")
        return proc

    def json(self, *args: str) -> Any:
        out = self.run(*args, "--output", "json").stdout
        return json.loads(out) if out.strip() else None

    def tsv(self, *args: str) -> str:
        return self.run(*args, "--output", "tsv").stdout.strip()

    def table(self, *args: str) -> str:
        return self.run(*args, "--output", "table").stdout

    def fails(self, *args: str) -> str:
        """Runs a command that must fail; returns its stderr."""
        proc = self.run(*args, check=False)
        assert proc.returncode != 0, f"az {' '.join(args)} succeeded but must fail:\n{proc.stdout[-2000:]}"
        return proc.stderr


class Lab:
    """What the steps share: the server, the CLI, and what earlier steps made."""

    def __init__(self, server: KeyhavenServer, az: Az, workdir: Path):
        self.server = server
        self.az = az
        self.workdir = workdir
        self.facts: Dict[str, str] = {}

    def fact(self, name: str) -> str:
        if name not in self.facts:
            pytest.fail(f"an earlier lab step did not complete (no {name!r})", pytrace=False)
        return self.facts[name]

    @property
    def port_suffix(self) -> str:
        return f":{self.server.port}"


@pytest.fixture(scope="module")
def lab(store_kind, tmp_path_factory):
    if not AZ or not os.access(AZ, os.X_OK):
        pytest.fail(f"the Azure CLI was not found at KEYHAVEN_AZ={AZ!r}; run through scripts/compat "
                    "(scripts/azcli-venv installs it)", pytrace=False)
    work = tmp_path_factory.mktemp(f"azcli-lab-{store_kind}")
    with module_server(LabServer, store_kind, work / "server") as srv:
        yield Lab(srv, Az(srv, work / "azure"), work)


def keyhaven(lab: Lab, *args: str, az: Optional[Az] = None) -> subprocess.CompletedProcess:
    """Runs `keyhaven ARGS --data-dir <the lab server's>` with `az`'s
    environment (the lab's CLI profile by default)."""
    proc = subprocess.run([KEYHAVEN_BIN, *args, "--data-dir", str(lab.server.data_dir)], env=(az or lab.az).env,
                          capture_output=True, text=True, timeout=AZ_TIMEOUT, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"keyhaven {' '.join(args)} exited {proc.returncode}: {proc.stderr[-3000:]}"
    return proc


def other_profile(lab: Lab, name: str) -> Az:
    """A CLI profile of its own, registered with `keyhaven cloud --run`, so a
    test can sign in without touching the lab's login."""
    az = Az(lab.server, lab.workdir / name)
    keyhaven(lab, "cloud", "--run", az=az)
    return az


# -- Before the lab: point the CLI at Keyhaven and sign in ---------------------------

def test_keyhaven_cloud_registers_the_deployment_with_the_cli(lab):
    printed = keyhaven(lab, "cloud").stdout
    mgmt = lab.server.management_url
    assert f"az cloud register --name Keyhaven --endpoint-resource-manager {mgmt}\n" in printed, printed
    assert "az cloud set --name Keyhaven\n" in printed
    assert "az config set core.instance_discovery=false\n" in printed
    assert f"export REQUESTS_CA_BUNDLE={Path(lab.server.ca_cert).resolve()}\n" in printed
    assert lab.server.client_secret not in printed

    keyhaven(lab, "cloud", "--run")
    cloud = lab.az.json("cloud", "show", "--name", "Keyhaven")
    assert cloud["isActive"] is True
    ep = cloud["endpoints"]
    assert ep["resourceManager"].rstrip("/") == mgmt
    assert ep["activeDirectory"] == lab.server.authority_host
    assert ep["activeDirectoryResourceId"] == f"{mgmt}/"
    assert ep["microsoftGraphResourceId"] == f"https://graph.localhost{lab.port_suffix}/"
    assert cloud["suffixes"]["keyvaultDns"] == f".vault.localhost{lab.port_suffix}"
    assert lab.az.tsv("config", "get", "core.instance_discovery", "--query", "value") == "false"
    # Running it again updates the registration instead of failing.
    keyhaven(lab, "cloud", "--run")
    assert lab.az.tsv("cloud", "show", "--query", "name") == "Keyhaven"
    # Without discovery every endpoint is on the command line, and az ends up
    # with the same endpoints (in a profile of its own).
    manual = Az(lab.server, lab.workdir / "azure-no-discovery")
    printed = keyhaven(lab, "cloud", "--no-discovery").stdout
    assert "--skip-endpoint-discovery" in printed and f"--suffix-keyvault-dns .vault.localhost{lab.port_suffix}" in printed
    keyhaven(lab, "cloud", "--run", "--no-discovery", az=manual)
    explicit = manual.json("cloud", "show", "--name", "Keyhaven")
    for k in ("activeDirectory", "activeDirectoryResourceId", "microsoftGraphResourceId", "management"):
        assert explicit["endpoints"][k] == ep[k], k
    assert explicit["endpoints"]["resourceManager"].rstrip("/") == mgmt
    assert explicit["suffixes"]["keyvaultDns"] == cloud["suffixes"]["keyvaultDns"]


def test_administrator_signs_in_as_service_principal_and_creates_the_lab_user(lab):
    s = lab.server
    accounts = lab.az.json("login", "--service-principal", "--username", s.client_id,
                           f"--password={s.client_secret}", "--tenant", s.tenant_id)
    assert [(a["id"], a["tenantId"], a["user"]["type"]) for a in accounts] == \
        [(s.subscription_id, s.tenant_id, "servicePrincipal")]
    upn = f"labuser-{uuid.uuid4().hex[:8]}@keyhaven.test"
    password = new_password()
    user = lab.az.json("ad", "user", "create", "--display-name", "Lab User", "--password", password,
                       "--user-principal-name", upn)
    assert user["userPrincipalName"] == upn and user["accountEnabled"] is True
    # The lab's user owns the subscription, as a lab user does in Azure.
    ra = lab.az.json("role", "assignment", "create", "--assignee", upn, "--role", "Owner",
                     "--scope", f"/subscriptions/{s.subscription_id}")
    assert ra["principalId"] == user["id"] and ra["principalType"] == "User"
    lab.az.run("logout")
    lab.facts.update(upn=upn, password=password, user_id=user["id"])


def test_user_signs_in_with_az_login_and_account_show(lab):
    s = lab.server
    accounts = lab.az.json("login", "-u", lab.fact("upn"), f"--password={lab.fact('password')}")
    assert [(a["id"], a["user"]["name"], a["user"]["type"]) for a in accounts] == \
        [(s.subscription_id, lab.fact("upn"), "user")]
    # Step 1 starts with: az account show --output table
    table = lab.az.table("account", "show")
    assert "Keyhaven" in table and s.tenant_id in table and "True" in table, table
    acct = lab.az.json("account", "show")
    assert acct["id"] == s.subscription_id and acct["tenantId"] == s.tenant_id
    assert acct["environmentName"] == "Keyhaven"
    # The refresh token gets tokens for every audience the CLI needs.
    tok = lab.az.json("account", "get-access-token", "--resource", f"https://vault.localhost{lab.port_suffix}")
    assert tok["tenant"] == s.tenant_id and tok["accessToken"].count(".") == 2
    lab.facts["signed_in"] = "yes"


def test_user_signs_in_with_device_code_on_any_port(lab):
    """`az login --use-device-code` needs nothing on port 443: the CLI prints
    the verification page and code, the user approves it in a browser (here:
    posts the page's form), and the CLI's polling gets the tokens. Uses a
    profile of its own so the lab's login stays as it is."""
    s = lab.server
    az = other_profile(lab, "azure-device-code")
    proc = subprocess.Popen([AZ, "login", "--use-device-code", "--tenant", s.tenant_id, "--output", "json"],
                            env=az.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    try:
        seen = []
        code = None
        while code is None and len(seen) < 50:
            line = proc.stderr.readline()
            if not line:
                break
            seen.append(line)
            m = re.search(r"open the page (\S+) and enter the code (\S+) ", line)
            if m:
                assert m.group(1) == f"{s.authority_host}/device"
                code = m.group(2)
        assert code, "".join(seen)
        approved = requests.post(f"{s.authority_host}/device", data={
            "code": code, "username": lab.fact("upn"), "password": lab.fact("password"),
            "confirm": "yes"}, verify=s.ca_cert, timeout=30, allow_redirects=False)
        assert approved.status_code == 200, approved.text[:500]
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    accounts = json.loads(out)
    assert [(a["id"], a["user"]["name"], a["user"]["type"]) for a in accounts] == \
        [(s.subscription_id, lab.fact("upn"), "user")]
    assert az.tsv("ad", "signed-in-user", "show", "--query", "id") == lab.fact("user_id")


def test_user_signs_in_with_the_browser(lab):
    """Plain `az login`: the CLI opens Keyhaven's sign-in page in the browser
    (here browser_login.py, through BROWSER), the user signs in, the page
    redirects to the CLI's loopback listener with an authorization code, and
    the CLI redeems it with its PKCE verifier. Own profile, as above."""
    s = lab.server
    az = other_profile(lab, "azure-browser")
    log = lab.workdir / "browser.json"
    env = dict(az.env)
    env.update({
        "BROWSER": f"{sys.executable} {Path(__file__).with_name('browser_login.py')} %s",
        "KH_BROWSER_USER": lab.fact("upn"), "KH_BROWSER_PASSWORD": lab.fact("password"),
        "KH_BROWSER_CA": s.ca_cert, "KH_BROWSER_LOG": str(log),
    })
    proc = subprocess.run([AZ, "login", "--tenant", s.tenant_id, "--output", "json"], env=env,
                          capture_output=True, text=True, timeout=AZ_TIMEOUT, stdin=subprocess.DEVNULL)
    browsed = json.loads(log.read_text()) if log.exists() else None
    assert proc.returncode == 0, f"{proc.stderr[-3000:]}\nbrowser: {browsed}"
    # MSAL asks for response_mode=form_post: the page posts the code to the
    # CLI's listener.
    assert browsed and browsed["page_status"] == 200 and browsed.get("form_post") is True, browsed
    assert browsed["redirect"].startswith("http://localhost:") and browsed["landing_status"] == 200, browsed
    accounts = json.loads(proc.stdout)
    assert [(a["id"], a["user"]["name"], a["user"]["type"]) for a in accounts] == \
        [(s.subscription_id, lab.fact("upn"), "user")]
    assert az.tsv("ad", "signed-in-user", "show", "--query", "id") == lab.fact("user_id")


# -- The lab ----------------------------------------------------------------------

def test_step1_resource_group(lab):
    lab.fact("signed_in")
    group = lab.az.json("group", "create", "-n", RG, "-l", LOC)
    assert group["name"] == RG and group["location"] == LOC
    assert group["properties"]["provisioningState"] == "Succeeded"
    # Expected outcome: the resource group is created. Verify:
    table = lab.az.table("group", "show", "-n", RG)
    assert RG in table and LOC in table, table
    lab.facts["rg"] = RG


def test_step2_vault_with_rbac(lab):
    lab.fact("rg")
    vault = lab.az.json("keyvault", "create", "--name", KV, "--resource-group", RG, "--location", LOC,
                        "--enable-rbac-authorization", "true")
    assert vault["name"] == KV and vault["location"] == LOC
    props = vault["properties"]
    assert props["enableRbacAuthorization"] is True
    assert props["provisioningState"] == "Succeeded"
    assert props["tenantId"] == lab.server.tenant_id
    assert props["vaultUri"] == f"https://{KV}.vault.localhost{lab.port_suffix}/"
    # Verify, with the lab's exact --query:
    query = "{name:name, location:location, enableRbacAuthorization:properties.enableRbacAuthorization}"
    shown = lab.az.json("keyvault", "show", "--name", KV, "--resource-group", RG, "--query", query)
    assert shown == {"name": KV, "location": LOC, "enableRbacAuthorization": True}
    table = lab.az.table("keyvault", "show", "--name", KV, "--resource-group", RG, "--query", query)
    assert KV in table and "True" in table, table
    lab.facts["vault"] = KV


def test_step3_assign_key_vault_administrator(lab):
    lab.fact("vault")
    me = lab.az.tsv("ad", "signed-in-user", "show", "--query", "id")
    assert me == lab.fact("user_id")
    kv_id = lab.az.tsv("keyvault", "show", "--name", KV, "--query", "id")
    assert kv_id == (f"/subscriptions/{lab.server.subscription_id}/resourceGroups/{RG}"
                     f"/providers/Microsoft.KeyVault/vaults/{KV}")
    ra = lab.az.json("role", "assignment", "create", "--assignee-object-id", me,
                     "--assignee-principal-type", "User", "--role", "Key Vault Administrator",
                     "--scope", kv_id)
    assert ra["principalId"] == me and ra["scope"] == kv_id
    assert ra["roleDefinitionId"].endswith(f"/roleDefinitions/{KEY_VAULT_ADMINISTRATOR}")
    # Verify: the table resolves the principal's name through Graph.
    table = lab.az.table("role", "assignment", "list", "--scope", kv_id)
    assert lab.fact("upn") in table and "Key Vault Administrator" in table, table
    lab.facts.update(me=me, kv_id=kv_id)


def test_step4_create_and_read_the_secret(lab):
    lab.fact("kv_id")
    secret = lab.az.json("keyvault", "secret", "set", "--vault-name", KV, "--name", "DbPassword",
                         "--value", SECRET_VALUE)
    # Expected outcome: stored as a versioned object.
    prefix = f"https://{KV}.vault.localhost{lab.port_suffix}/secrets/DbPassword/"
    assert secret["id"].startswith(prefix) and len(secret["id"]) == len(prefix) + 32
    assert secret["attributes"]["enabled"] is True
    # Expected outcome: the value prints to the terminal.
    value = lab.az.tsv("keyvault", "secret", "show", "--vault-name", KV, "--name", "DbPassword",
                       "--query", "value")
    assert value == SECRET_VALUE
    lab.facts["secret_id"] = secret["id"]


def test_step5_least_privilege(lab):
    lab.fact("secret_id")
    me, kv_id = lab.fact("me"), lab.fact("kv_id")
    ra = lab.az.json("role", "assignment", "create", "--assignee-object-id", me,
                     "--assignee-principal-type", "User", "--role", "Key Vault Secrets User",
                     "--scope", kv_id)
    assert ra["roleDefinitionId"].endswith(f"/roleDefinitions/{KEY_VAULT_SECRETS_USER}")
    lab.az.run("role", "assignment", "delete", "--assignee-object-id", me,
               "--role", "Key Vault Administrator", "--scope", kv_id)
    listed = lab.az.json("role", "assignment", "list", "--scope", kv_id)
    assert [(a["principalName"], a["roleDefinitionName"]) for a in listed] == \
        [(lab.fact("upn"), "Key Vault Secrets User")], listed
    # Expected outcome: reading still works...
    assert lab.az.tsv("keyvault", "secret", "show", "--vault-name", KV, "--name", "DbPassword",
                      "--query", "value") == SECRET_VALUE
    # ...but not managing secrets, keys or certificates: 403 from the data plane.
    err = lab.az.fails("keyvault", "secret", "set", "--vault-name", KV, "--name", "DbPassword",
                       "--value", "changed")
    assert "(Forbidden)" in err and "ForbiddenByRbac" in err, err
    assert "setSecret" in err, err
    err = lab.az.fails("keyvault", "key", "create", "--vault-name", KV, "--name", "k1", "--kty", "EC")
    assert "(Forbidden)" in err and "ForbiddenByRbac" in err, err
    err = lab.az.fails("keyvault", "certificate", "list", "--vault-name", KV)
    assert "(Forbidden)" in err, err
    # The refused write changed nothing.
    assert lab.az.tsv("keyvault", "secret", "show", "--vault-name", KV, "--name", "DbPassword",
                      "--query", "id") == lab.fact("secret_id")
    lab.facts["least_privilege"] = "yes"


GET_SECRET_PY = '''from azure.identity import DefaultAzureCredential
from azure.keyvault.secrets import SecretClient

# Replace with your vault URL from the CLI output: https://<vault-name>.vault.azure.net/
vault_url = "REPLACE_WITH_YOUR_VAULT_URL"

credential = DefaultAzureCredential()
client = SecretClient(vault_url=vault_url, credential=credential)

secret_name = "DbPassword"
secret = client.get_secret(secret_name)

# Don't print secrets in real apps; this is for lab validation only.
print(f"{secret_name} value length: {len(secret.value)}")
'''


def run_get_secret(lab: Lab) -> str:
    """Runs the lab's get_secret.py (written by step 6); returns its stdout."""
    script = lab.workdir / "get_secret.py"
    # The SDK suite's interpreter (azure-identity, azure-keyvault-secrets), with
    # nothing but the CLI login to authenticate with.
    proc = subprocess.run([sys.executable, str(script)], env=lab.az.env, capture_output=True, text=True,
                          timeout=AZ_TIMEOUT, cwd=str(lab.workdir), stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert SECRET_VALUE not in proc.stdout + proc.stderr
    return proc.stdout


def test_step6_python_program_with_default_azure_credential(lab):
    lab.fact("least_privilege")
    # Verify your vault URL:
    vault_url = lab.az.tsv("keyvault", "show", "--name", KV, "--query", "properties.vaultUri")
    assert vault_url == f"https://{KV}.vault.localhost{lab.port_suffix}/"
    (lab.workdir / "get_secret.py").write_text(GET_SECRET_PY.replace("REPLACE_WITH_YOUR_VAULT_URL", vault_url))
    # Expected outcome: runs and prints the secret's length, not the secret.
    assert run_get_secret(lab) == f"DbPassword value length: {len(SECRET_VALUE)}\n"
    lab.facts["program"] = "yes"


def test_step7_diagnostic_logging(lab):
    kv_id = lab.fact("kv_id")
    law = f"law-kv-lab-{uuid.uuid4().int % 32768}"
    ws = lab.az.json("monitor", "log-analytics", "workspace", "create", "--resource-group", RG,
                     "--workspace-name", law, "--location", LOC)
    assert ws["name"] == law and ws["provisioningState"] == "Succeeded"
    assert uuid.UUID(ws["customerId"])
    # Categories first (the table view of this command is empty on Azure too:
    # it returns an object, so the lab reads the JSON).
    cats = lab.az.json("monitor", "diagnostic-settings", "categories", "list", "--resource", kv_id)
    assert {(c["name"], c["categoryType"]) for c in cats["value"]} == \
        {("AuditEvent", "Logs"), ("AllMetrics", "Metrics")}
    lab.az.table("monitor", "diagnostic-settings", "categories", "list", "--resource", kv_id)
    law_id = lab.az.tsv("monitor", "log-analytics", "workspace", "show", "-g", RG, "-n", law, "--query", "id")
    assert law_id == ws["id"]
    setting = lab.az.json("monitor", "diagnostic-settings", "create", "--name", "diag-to-law",
                          "--resource", kv_id, "--workspace", law_id,
                          "--metrics", '[{"category":"AllMetrics","enabled":true}]',
                          "--logs", '[{"categoryGroup":"allLogs","enabled":true}]')
    assert setting["name"] == "diag-to-law" and setting["workspaceId"] == law_id
    assert [(l.get("categoryGroup"), l["enabled"]) for l in setting["logs"]] == [("allLogs", True)]
    assert [(m["category"], m["enabled"]) for m in setting["metrics"]] == [("AllMetrics", True)]
    # Verify:
    table = lab.az.table("monitor", "diagnostic-settings", "list", "--resource", kv_id)
    assert "diag-to-law" in table and law in table, table
    # Expected outcome: audit logs start flowing. Generate a few accesses
    # (with the CLI, and with the lab's program)...
    secret_id = lab.fact("secret_id")
    for _ in range(3):
        assert lab.az.tsv("keyvault", "secret", "show", "--vault-name", KV, "--name", "DbPassword",
                          "--query", "id") == secret_id
    lab.fact("program")
    run_get_secret(lab)
    # The vault's metrics, as `az monitor metrics list` asks Azure Monitor:
    # ServiceApiHit split by ActivityName counts these reads (nodes add
    # their counts to the store every few seconds, so this polls, bounded).
    deadline = time.monotonic() + 30
    while True:
        m = lab.az.json("monitor", "metrics", "list", "--resource", kv_id, "--metric", "ServiceApiHit",
                        "--interval", "PT1M", "--aggregation", "Count", "--dimension", "ActivityName")
        gets = sum(p.get("count") or 0 for ts in m["value"][0]["timeseries"] for p in ts["data"]
                   if any(x["value"] == "secretget" for x in ts["metadatavalues"]))
        if gets >= 4:
            break
        assert time.monotonic() < deadline, m
        time.sleep(1)
    assert m["value"][0]["name"]["value"] == "ServiceApiHit" and m["value"][0]["unit"] == "Count"
    # ...and find them in the log store the workspace stands for.
    # (Records are written in batches off the request path: bounded wait.)
    deadline = time.monotonic() + 30
    while True:
        events = lab.az.json("rest", "--method", "get", "--url",
                             f"{kv_id}/providers/Keyhaven.Insights/auditEvents"
                             "?api-version=2026-01-01&operation=SecretGet&top=100")["value"]
        cli_reads = [e for e in events if "AZURECLI/2.91.0" in e["properties"].get("clientInfo", "")]
        if len(cli_reads) >= 3 and any("azsdk-python-keyvault-secrets" in e["properties"].get("clientInfo", "")
                                       for e in events):
            break
        assert time.monotonic() < deadline, len(cli_reads)
        time.sleep(1)
    assert len(cli_reads) >= 3, len(cli_reads)
    assert all(e["resourceId"].lower() == kv_id.lower() and e["category"] == "AuditEvent" for e in cli_reads)
    assert not any(SECRET_VALUE in json.dumps(e) for e in events)
    # The program's read was made by the secrets SDK with the user's CLI token
    # (the Azure CLI's client id): DefaultAzureCredential used the CLI login.
    sdk_reads = [e for e in events
                 if "azsdk-python-keyvault-secrets" in e["properties"].get("clientInfo", "")
                 and "AZURECLI" not in e["properties"].get("clientInfo", "")]
    assert sdk_reads, [e["properties"].get("clientInfo") for e in events]
    claims = sdk_reads[0]["identity"]["claim"]
    assert claims["appid"] == AZURE_CLI_CLIENT_ID and claims["oid"] == lab.fact("me")
    assert sdk_reads[0]["resultType"] == "Success"
    # The seed's validation: "Log Analytics workspace -> Logs -> query for
    # Key Vault logs", with KQL through the query API whose address and
    # token audience `az cloud register` learned from the ARM metadata.
    logs = lab.az.tsv("cloud", "show", "--query", "endpoints.logAnalyticsResourceId")
    assert logs.startswith("https://loganalytics."), logs
    query = {"query": "AzureDiagnostics | where ResourceProvider == 'MICROSOFT.KEYVAULT' and OperationName == 'SecretGet'"
                      " and clientInfo_s contains 'AZURECLI' | summarize count() by CallerIPAddress, identity_claim_oid_g",
             "timespan": "PT1H"}
    url = f"{logs}/v1/workspaces/{ws['customerId']}/query"
    deadline = time.monotonic() + 30
    while True:
        res = lab.az.json("rest", "--method", "post", "--url", url, "--resource", logs, "--body", json.dumps(query))
        rows = res["tables"][0]["rows"]
        if rows and sum(r[2] for r in rows) >= 3:
            break
        assert time.monotonic() < deadline, res
        time.sleep(1)
    assert [c["name"] for c in res["tables"][0]["columns"]] == ["CallerIPAddress", "identity_claim_oid_g", "count_"]
    assert [r[1] for r in rows] == [lab.fact("me")], rows
    lab.facts["law"] = law


def test_validation(lab):
    kv_id = lab.fact("kv_id")
    # 1) Confirm you can still read the secret.
    assert lab.az.tsv("keyvault", "secret", "show", "--vault-name", KV, "--name", "DbPassword",
                      "--query", "id") == lab.fact("secret_id")
    # 2) Confirm your role assignments.
    table = lab.az.table("role", "assignment", "list", "--scope", kv_id)
    assert "Key Vault Secrets User" in table and "Key Vault Administrator" not in table, table


# -- What an operator tries next --------------------------------------------------

def test_operator_keys_sign_and_verify_independently(lab):
    me, kv_id = lab.fact("me"), lab.fact("kv_id")
    lab.az.run("role", "assignment", "create", "--assignee-object-id", me, "--assignee-principal-type", "User",
               "--role", "Key Vault Administrator", "--scope", kv_id, "--output", "none")
    digest = hashlib.sha256(b"keyhaven lab").digest()
    b64 = base64.b64encode(digest).decode()

    rsa_key = lab.az.json("keyvault", "key", "create", "--vault-name", KV, "--name", "signer",
                          "--kty", "RSA", "--size", "2048")
    assert rsa_key["key"]["kty"] == "RSA" and "sign" in rsa_key["key"]["keyOps"]
    signed = lab.az.json("keyvault", "key", "sign", "--vault-name", KV, "--name", "signer",
                         "--algorithm", "RS256", "--digest", b64)
    assert signed["keyId"] == rsa_key["key"]["kid"] and signed["algorithm"] == "RS256"
    pem = lab.workdir / "signer.pem"
    lab.az.run("keyvault", "key", "download", "--vault-name", KV, "--name", "signer", "--file", str(pem))
    public = serialization.load_pem_public_key(pem.read_bytes())
    assert isinstance(public, rsa.RSAPublicKey) and public.key_size == 2048
    public.verify(base64.b64decode(signed["signature"]), b"keyhaven lab", padding.PKCS1v15(), hashes.SHA256())
    verified = lab.az.json("keyvault", "key", "verify", "--vault-name", KV, "--name", "signer",
                           "--algorithm", "RS256", "--digest", b64, "--signature", signed["signature"])
    assert verified["isValid"] is True

    ec_key = lab.az.json("keyvault", "key", "create", "--vault-name", KV, "--name", "ecsigner",
                         "--kty", "EC", "--curve", "P-256")
    assert ec_key["key"]["crv"] == "P-256"
    signed = lab.az.json("keyvault", "key", "sign", "--vault-name", KV, "--name", "ecsigner",
                         "--algorithm", "ES256", "--digest", b64)
    raw = base64.b64decode(signed["signature"])
    assert len(raw) == 64
    pem = lab.workdir / "ecsigner.pem"
    lab.az.run("keyvault", "key", "download", "--vault-name", KV, "--name", "ecsigner", "--file", str(pem))
    ec_public = serialization.load_pem_public_key(pem.read_bytes())
    assert isinstance(ec_public, ec.EllipticCurvePublicKey) and ec_public.curve.name == "secp256r1"
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    ec_public.verify(der, b"keyhaven lab", ec.ECDSA(hashes.SHA256()))


def test_operator_certificate_create_and_show(lab):
    lab.fact("kv_id")
    policy = lab.az.run("keyvault", "certificate", "get-default-policy").stdout
    status = lab.az.tsv("keyvault", "certificate", "create", "--vault-name", KV, "--name", "webcert",
                        "--policy", policy, "--query", "status")
    assert status == "completed"
    shown = lab.az.json("keyvault", "certificate", "show", "--vault-name", KV, "--name", "webcert")
    assert shown["policy"]["x509CertificateProperties"]["subject"] == "CN=CLIGetDefaultPolicy"
    assert shown["attributes"]["enabled"] is True
    path = lab.workdir / "webcert.pem"
    lab.az.run("keyvault", "certificate", "download", "--vault-name", KV, "--name", "webcert",
               "--file", str(path), "--encoding", "PEM")
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    assert cert.subject.rfc4514_string() == "CN=CLIGetDefaultPolicy"
    assert cert.issuer == cert.subject
    assert cert.fingerprint(hashes.SHA1()).hex().upper() == shown["x509ThumbprintHex"].upper()
    assert base64.b64decode(shown["cer"]) == cert.public_bytes(serialization.Encoding.DER)


def test_operator_network_rules(lab):
    lab.fact("kv_id")
    acls = lab.az.json("keyvault", "network-rule", "add", "--name", KV, "--ip-address", "203.0.113.7",
                       "--query", "properties.networkAcls")
    assert [r["value"].split("/")[0] for r in acls["ipRules"]] == ["203.0.113.7"]
    listed = lab.az.json("keyvault", "network-rule", "list", "--name", KV)
    assert [r["value"].split("/")[0] for r in listed["ipRules"]] == ["203.0.113.7"]
    assert lab.az.tsv("keyvault", "update", "--name", KV, "--default-action", "Deny",
                      "--query", "properties.networkAcls.defaultAction") == "Deny"
    # The firewall guards the data plane: this client (127.0.0.1) is now refused...
    err = lab.az.fails("keyvault", "secret", "show", "--vault-name", KV, "--name", "DbPassword")
    assert "ForbiddenByFirewall" in err, err
    # ...while the management plane still answers, and a rule lets it back in.
    lab.az.run("keyvault", "network-rule", "add", "--name", KV, "--ip-address", "127.0.0.1", "--output", "none")
    assert lab.az.tsv("keyvault", "secret", "show", "--vault-name", KV, "--name", "DbPassword",
                      "--query", "id") == lab.fact("secret_id")
    lab.az.run("keyvault", "update", "--name", KV, "--default-action", "Allow", "--output", "none")
    removed = lab.az.json("keyvault", "network-rule", "remove", "--name", KV, "--ip-address", "203.0.113.7",
                          "--query", "properties.networkAcls.ipRules")
    assert [r["value"].split("/")[0] for r in removed] == ["127.0.0.1"]
    # What a private endpoint would connect to.
    links = lab.az.json("keyvault", "private-link-resource", "list", "--vault-name", KV)
    assert [(r["groupId"], r["requiredMembers"]) for r in links] == [("vault", ["default"])]


def test_operator_secret_and_key_lifecycle(lab):
    lab.fact("kv_id")
    az = lab.az
    az.run("keyvault", "secret", "set", "--vault-name", KV, "--name", "Rotating", "--value", "v1", "--output", "none")
    az.run("keyvault", "secret", "set", "--vault-name", KV, "--name", "Rotating", "--value", "v2", "--output", "none")
    versions = az.json("keyvault", "secret", "list-versions", "--vault-name", KV, "--name", "Rotating")
    assert len(versions) == 2
    assert {"DbPassword", "Rotating"} <= {x["name"] for x in az.json("keyvault", "secret", "list", "--vault-name", KV)}
    updated = az.json("keyvault", "secret", "set-attributes", "--vault-name", KV, "--name", "Rotating",
                      "--tags", "env=lab", "--content-type", "text/plain")
    assert updated["tags"] == {"env": "lab"} and updated["contentType"] == "text/plain"
    backup = lab.workdir / "rotating.bak"
    az.run("keyvault", "secret", "backup", "--vault-name", KV, "--name", "Rotating", "--file", str(backup))
    az.run("keyvault", "secret", "delete", "--vault-name", KV, "--name", "Rotating", "--output", "none")
    assert "Rotating" in {x["name"] for x in az.json("keyvault", "secret", "list-deleted", "--vault-name", KV)}
    az.run("keyvault", "secret", "purge", "--vault-name", KV, "--name", "Rotating")
    restored = az.json("keyvault", "secret", "restore", "--vault-name", KV, "--file", str(backup))
    assert restored["name"] == "Rotating"
    assert az.tsv("keyvault", "secret", "show", "--vault-name", KV, "--name", "Rotating", "--query", "value") == "v2"
    download = lab.workdir / "rotating.txt"
    az.run("keyvault", "secret", "download", "--vault-name", KV, "--name", "Rotating", "--file", str(download))
    assert download.read_text() == "v2"

    created = az.json("keyvault", "key", "create", "--vault-name", KV, "--name", "wrapper", "--kty", "RSA",
                      "--ops", "encrypt", "decrypt", "wrapKey", "unwrapKey")
    rotated = az.json("keyvault", "key", "rotate", "--vault-name", KV, "--name", "wrapper")
    assert rotated["key"]["kid"] != created["key"]["kid"]
    assert len(az.json("keyvault", "key", "list-versions", "--vault-name", KV, "--name", "wrapper")) == 2
    policy = az.json("keyvault", "key", "rotation-policy", "update", "--vault-name", KV, "--name", "wrapper",
                     "--value", json.dumps({"lifetimeActions": [{"trigger": {"timeBeforeExpiry": "P30D"},
                                                                 "action": {"type": "Rotate"}}],
                                            "attributes": {"expiryTime": "P90D"}}))
    assert policy["expiresIn"] == "P90D"
    assert az.json("keyvault", "key", "rotation-policy", "show", "--vault-name", KV,
                   "--name", "wrapper")["expiresIn"] == "P90D"
    # The private key never leaves the vault: encrypt with `cryptography` and
    # the downloaded public key, decrypt in the vault.
    pem = lab.workdir / "wrapper.pem"
    az.run("keyvault", "key", "download", "--vault-name", KV, "--name", "wrapper", "--file", str(pem))
    public = serialization.load_pem_public_key(pem.read_bytes())
    ciphertext = public.encrypt(b"lab plaintext", padding.OAEP(mgf=padding.MGF1(hashes.SHA256()),
                                                               algorithm=hashes.SHA256(), label=None))
    plain = az.json("keyvault", "key", "decrypt", "--vault-name", KV, "--name", "wrapper",
                    "--algorithm", "RSA-OAEP-256", "--value", base64.b64encode(ciphertext).decode(),
                    "--data-type", "plaintext")
    assert plain["result"] == "lab plaintext"


def test_operator_access_policy_vault(lab):
    """A vault in access-policy mode, as `az keyvault create` makes it without
    RBAC: the creator gets an access policy, and set-policy / delete-policy
    grant and take away data access."""
    lab.fact("kv_id")
    az = lab.az
    vault = az.json("keyvault", "create", "--name", "kvlab-pol", "--resource-group", RG, "--location", LOC,
                    "--enable-rbac-authorization", "false")
    policies = vault["properties"]["accessPolicies"]
    assert [p["objectId"] for p in policies] == [lab.fact("me")]
    assert {"all"} == {x.lower() for x in policies[0]["permissions"]["secrets"]}
    az.run("keyvault", "delete-policy", "--name", "kvlab-pol", "--object-id", lab.fact("me"), "--output", "none")
    err = az.fails("keyvault", "secret", "set", "--vault-name", "kvlab-pol", "--name", "s1", "--value", "v1")
    assert "(Forbidden)" in err, err
    az.run("keyvault", "set-policy", "--name", "kvlab-pol", "--upn", lab.fact("upn"),
           "--secret-permissions", "get", "list", "set", "--output", "none")
    az.run("keyvault", "secret", "set", "--vault-name", "kvlab-pol", "--name", "s1", "--value", "v1", "--output", "none")
    assert az.tsv("keyvault", "secret", "show", "--vault-name", "kvlab-pol", "--name", "s1", "--query", "value") == "v1"
    err = az.fails("keyvault", "secret", "delete", "--vault-name", "kvlab-pol", "--name", "s1")
    assert "(Forbidden)" in err, err
    # Soft delete and recover of the whole vault, objects included.
    az.run("keyvault", "delete", "--name", "kvlab-pol")
    az.run("keyvault", "recover", "--name", "kvlab-pol", "--output", "none")
    assert az.tsv("keyvault", "secret", "show", "--vault-name", "kvlab-pol", "--name", "s1", "--query", "value") == "v1"


# -- Cleanup ----------------------------------------------------------------------

def test_cleanup_soft_delete_and_purge(lab):
    lab.fact("kv_id")
    # A second vault, deleted on its own with az keyvault delete.
    lab.az.run("keyvault", "create", "--name", "kvlab-tmp", "--resource-group", RG, "--location", LOC,
               "--output", "none")
    lab.az.run("keyvault", "delete", "--name", "kvlab-tmp")
    # The lab's cleanup: delete the resource group (vault and workspace with it).
    lab.az.run("group", "delete", "-n", RG, "--yes", "--no-wait")
    assert lab.az.tsv("group", "exists", "-n", RG) == "false"
    assert KV not in lab.az.tsv("keyvault", "list", "--query", "[].name")
    # The vaults stay recoverable (soft delete) until purged.
    deleted = lab.az.json("keyvault", "list-deleted")
    assert {"kvlab", "kvlab-tmp", "kvlab-pol"} <= {d["name"] for d in deleted}, deleted
    gone = lab.az.json("keyvault", "show-deleted", "--name", KV)
    assert gone["properties"]["vaultId"].lower() == lab.fact("kv_id").lower()
    assert gone["properties"]["scheduledPurgeDate"] > gone["properties"]["deletionDate"]
    for name in (KV, "kvlab-tmp", "kvlab-pol"):
        lab.az.run("keyvault", "purge", "--name", name)
    deleted = lab.az.json("keyvault", "list-deleted")
    assert not {"kvlab", "kvlab-tmp", "kvlab-pol"} & {d["name"] for d in deleted}, deleted
    # The name is free again (`az keyvault check-name` is for Managed HSM
    # names; vault names are checked with ARM's checkNameAvailability).
    available = lab.az.json(
        "rest", "--method", "post",
        "--url", f"/subscriptions/{lab.server.subscription_id}/providers/Microsoft.KeyVault/checkNameAvailability"
                 "?api-version=2023-07-01",
        "--body", json.dumps({"name": KV, "type": "Microsoft.KeyVault/vaults"}))
    assert available["nameAvailable"] is True
