"""The seed tutorial's network lab, for real: network namespaces stand for
two subnets and an outside host, veth pairs connect them to the Keyhaven
host. A workload in subnet A reads the secret with its managed identity
(`ManagedIdentityCredential` + `SecretClient`) once the vault is locked to
subnet A; subnet B and the outside host get `ForbiddenByFirewall`; an IP rule
lets B in; with public access disabled only the private endpoint in subnet A
works; the management plane works throughout. Needs root (CI runs as root);
the namespaces are removed when the module ends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from khcompat import (
    KeyhavenServer,
    arm,
    assign_role,
    free_port,
    management_token,
    put_workload,
    running_server,
    trust_server_ca,
    unique,
)

API = {"api_version": "2026-05-15"}
CLIENT = Path(__file__).with_name("lab_client.py")
TAG = uuid.uuid4().hex[:4]
# (role, host address/prefix, extra host addresses, namespace address, gateway)
NETS = {
    "a": ("198.51.100.1/25", ["198.51.100.5/25"], "198.51.100.10/25", "198.51.100.1"),
    "b": ("198.51.100.129/25", [], "198.51.100.130/25", "198.51.100.129"),
    "o": ("203.0.113.1/24", [], "203.0.113.10/24", "203.0.113.1"),
}
PE_IP = "198.51.100.5"


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=30)


def ns(role: str) -> str:
    return f"kh{TAG}{role}"


def teardown_lab() -> None:
    for role in NETS:
        subprocess.run(["ip", "netns", "del", ns(role)], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", f"kh{TAG}h{role}"], capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def lab():
    if os.geteuid() != 0:
        pytest.fail("the network lab needs root (network namespaces); CI runs as root", pytrace=False)
    teardown_lab()
    try:
        for role, (host_addr, extra, ns_addr, gateway) in NETS.items():
            host_if, ns_if = f"kh{TAG}h{role}", f"kh{TAG}n{role}"
            sh("ip", "netns", "add", ns(role))
            sh("ip", "netns", "exec", ns(role), "ip", "link", "set", "lo", "up")
            sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
            sh("ip", "link", "set", ns_if, "netns", ns(role))
            for a in [host_addr, *extra]:
                sh("ip", "addr", "add", a, "dev", host_if)
            sh("ip", "link", "set", host_if, "up")
            sh("ip", "netns", "exec", ns(role), "ip", "addr", "add", ns_addr, "dev", ns_if)
            sh("ip", "netns", "exec", ns(role), "ip", "link", "set", ns_if, "up")
            sh("ip", "netns", "exec", ns(role), "ip", "route", "add", "default", "via", gateway)
        yield
    finally:
        teardown_lab()


class LabServer(KeyhavenServer):
    """Listens on loopback and on the host side of every lab network (and the
    private endpoint's address); IMDS on subnet A's gateway."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.imds = f"198.51.100.1:{free_port()}"

    def command(self):
        extra = []
        for addr in ["198.51.100.1", PE_IP, "198.51.100.129", "203.0.113.1"]:
            extra += ["--extra-listen", f"{addr}:{self.port}"]
        return super().command() + extra + ["--imds-listen", self.imds]


@pytest.fixture(scope="module")
def srv(lab, store_kind, tmp_path_factory):
    with running_server(LabServer, store_kind, tmp_path_factory.mktemp(f"lab-{store_kind}")) as s:
        mp = pytest.MonkeyPatch()
        trust_server_ca(mp, s)
        yield s
        mp.undo()


def run_in(server, role: str, *, vault_url: str, secret: str, mode: str = "sp", via: str = "host",
           **extra) -> dict:
    host_ip = NETS[role][3]
    vault_host = vault_url.split("//", 1)[1].split(":", 1)[0]
    args = {"host_ip": host_ip, "vault_host": vault_host, "vault_ip": PE_IP if via == "pe" else host_ip,
            "vault_url": vault_url, "secret": secret, "mode": mode, "tenant": server.tenant_id,
            "client_id": server.client_id, "client_secret": server.client_secret,
            "authority": server.authority_host, "ca": server.ca_cert, **extra}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "IDENTITY_", "MSI_", "IMDS_"))}
    env.update({"REQUESTS_CA_BUNDLE": server.ca_cert, "SSL_CERT_FILE": server.ca_cert})
    if mode == "mi":
        env["AZURE_POD_IDENTITY_AUTHORITY_HOST"] = f"http://{server.imds}"
    out = subprocess.run(["ip", "netns", "exec", ns(role), sys.executable, str(CLIENT), json.dumps(args)],
                         capture_output=True, text=True, timeout=90, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def assert_refused(result: dict, address: str):
    assert result["ok"] is False and result["status"] == 403, result
    assert result["inner"] == "ForbiddenByFirewall" and f"Client address: {address}" in result["message"], result


def patch_vault(server, path: str, properties: dict) -> dict:
    r = arm(server, "PATCH", path, management_token(server), {"properties": properties}, **API)
    assert r.status_code == 200, r.text
    return r.json()


def test_the_seed_network_lab(srv):
    s, tok = srv, management_token(srv)
    rg = f"/subscriptions/{s.subscription_id}/resourceGroups/{s.resource_group}"
    vnet = f"{rg}/providers/Microsoft.Network/virtualNetworks/lab-vnet"
    keyvault_endpoint = [{"service": "Microsoft.KeyVault"}]
    r = arm(s, "PUT", vnet, tok, {"location": "local", "properties": {
        "addressSpace": {"addressPrefixes": ["198.51.100.0/24"]},
        "subnets": [{"name": "a", "properties": {"addressPrefix": "198.51.100.0/25", "serviceEndpoints": keyvault_endpoint}},
                    {"name": "b", "properties": {"addressPrefix": "198.51.100.128/25", "serviceEndpoints": keyvault_endpoint}}]}},
            **API)
    assert r.status_code == 201, r.text
    subnet_a = r.json()["properties"]["subnets"][0]["id"]

    # The lab's vault and secret, created from the host.
    name = unique("lab")[:24]
    path = f"{rg}/providers/Microsoft.KeyVault/vaults/{name}"
    r = arm(s, "PUT", path, tok, {"location": "local", "properties": {
        "tenantId": s.tenant_id, "sku": {"family": "A", "name": "standard"}, "enableRbacAuthorization": True}}, **API)
    assert r.status_code == 201, r.text
    vault_url = r.json()["properties"]["vaultUri"].rstrip("/")
    from azure.keyvault.secrets import SecretClient
    SecretClient(vault_url, s.credential()).set_secret("lab-secret", "only-for-subnet-a")

    # A VM in subnet A with a system-assigned identity that may read secrets.
    r = put_workload(s, "vm-a", ["198.51.100.10"])
    assert r.status_code == 201, r.text
    assign_role(s, path, "Key Vault Secrets User", r.json()["identity"]["principalId"])

    # Lock the vault to subnet A.
    patch_vault(s, path, {"networkAcls": {"defaultAction": "Deny", "bypass": "None",
                                          "virtualNetworkRules": [{"id": subnet_a}]}})
    got = run_in(s, "a", vault_url=vault_url, secret="lab-secret", mode="mi")
    assert got == {"ok": True, "value": "only-for-subnet-a"}, got
    assert_refused(run_in(s, "b", vault_url=vault_url, secret="lab-secret"), "198.51.100.130")
    assert_refused(run_in(s, "o", vault_url=vault_url, secret="lab-secret"), "203.0.113.10")
    # The management plane keeps working from outside.
    mg = run_in(s, "o", vault_url=vault_url, secret="", management_url=f"{s.management_url}{path}?api-version=2026-05-15",
                management_token=tok)
    assert mg == {"ok": True, "status": 200}, mg

    # An IP rule lets subnet B's VM in.
    patch_vault(s, path, {"networkAcls": {"defaultAction": "Deny", "bypass": "None",
                                          "virtualNetworkRules": [{"id": subnet_a}],
                                          "ipRules": [{"value": "198.51.100.130"}]}})
    assert run_in(s, "b", vault_url=vault_url, secret="lab-secret")["ok"] is True

    # A private endpoint in subnet A; then public access off: only the endpoint works.
    pe = f"{rg}/providers/Microsoft.Network/privateEndpoints/lab-pe"
    r = arm(s, "PUT", pe, tok, {"location": "local", "properties": {
        "subnet": {"id": subnet_a},
        "privateLinkServiceConnections": [{"name": "kv", "properties": {"privateLinkServiceId": path, "groupIds": ["vault"]}}],
        "ipConfigurations": [{"name": "ip", "properties": {"groupId": "vault", "memberName": "default",
                                                           "privateIPAddress": PE_IP}}]}}, **API)
    assert r.status_code == 201, r.text
    assert r.json()["properties"]["privateLinkServiceConnections"][0]["properties"][
        "privateLinkServiceConnectionState"]["status"] == "Approved"
    out = patch_vault(s, path, {"publicNetworkAccess": "Disabled"})
    assert out["properties"]["publicNetworkAccess"] == "Disabled"
    conns = arm(s, "GET", path, tok, **API).json()["properties"]["privateEndpointConnections"]
    assert [c["properties"]["privateEndpoint"]["id"].lower() for c in conns] == [pe.lower()]
    assert_refused(run_in(s, "a", vault_url=vault_url, secret="lab-secret", mode="mi"), "198.51.100.10")
    assert_refused(run_in(s, "b", vault_url=vault_url, secret="lab-secret"), "198.51.100.130")
    got = run_in(s, "a", vault_url=vault_url, secret="lab-secret", mode="mi", via="pe")
    assert got == {"ok": True, "value": "only-for-subnet-a"}, got
    # The endpoint serves only its vault.
    other = run_in(s, "a", vault_url=s.vault_url.rstrip("/"), secret="nope", via="pe")
    assert other["status"] == 403 and other["inner"] == "ForbiddenByFirewall", other
    # And the management plane still answers.
    assert arm(s, "GET", path, tok, **API).status_code == 200
