"""Network rules on the data plane, first slice: a vault's firewall
(networkAcls defaultAction/ipRules, publicNetworkAccess) decides on the TCP
peer's address before the token is validated. Clients here differ by source
address on loopback (127.0.0.1 vs 127.0.0.2 — both reach the server, which
listens on 127.0.0.1), so the SDK itself is refused or admitted by address.
The management plane is never blocked by a vault's firewall."""

from __future__ import annotations

import pytest
import requests
from azure.core.exceptions import HttpResponseError
from azure.core.pipeline.transport import RequestsTransport
from azure.keyvault.secrets import SecretClient
from requests.adapters import HTTPAdapter

from khcompat import CLIENT_KWARGS, HTTP_TIMEOUT, arm, management_token, unique

API = {"api_version": "2026-05-15"}


class SourceAddressAdapter(HTTPAdapter):
    """Connects from a chosen local address."""

    def __init__(self, source: str, **kwargs):
        self._source = (source, 0)
        super().__init__(**kwargs)

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = self._source
        super().init_poolmanager(*args, **kwargs)


def session_from(source: str) -> requests.Session:
    s = requests.Session()
    s.mount("https://", SourceAddressAdapter(source))
    return s


def client_from(server, source: str, vault_url: str) -> SecretClient:
    return SecretClient(vault_url, server.credential(), transport=RequestsTransport(session=session_from(source)),
                        **CLIENT_KWARGS)


@pytest.fixture
def vault(server):
    """A fresh RBAC vault in the bootstrap group; yields (name, ARM path, vault URL)."""
    name = unique("fw")[:24]
    path = (f"/subscriptions/{server.subscription_id}/resourceGroups/{server.resource_group}"
            f"/providers/Microsoft.KeyVault/vaults/{name}")
    body = {"location": "local", "properties": {"tenantId": server.tenant_id,
                                                "sku": {"family": "A", "name": "standard"},
                                                "enableRbacAuthorization": True}}
    r = arm(server, "PUT", path, management_token(server), body, **API)
    assert r.status_code in (200, 201), r.text
    yield name, path, r.json()["properties"]["vaultUri"].rstrip("/")
    arm(server, "DELETE", path, management_token(server), **API)


def set_acls(server, path, acls=None, public=None):
    props = {}
    if acls is not None:
        props["networkAcls"] = acls
    if public is not None:
        props["publicNetworkAccess"] = public
    r = arm(server, "PATCH", path, management_token(server), {"properties": props}, **API)
    assert r.status_code == 200, r.text
    return r.json()


def assert_firewall(err: HttpResponseError, address: str):
    assert err.status_code == 403, err
    body = err.response.json()["error"]
    assert body["code"] == "Forbidden" and body["innererror"]["code"] == "ForbiddenByFirewall", body
    assert f"Client address: {address}" in body["message"]


def test_ip_rules_admit_listed_addresses_only(server, vault):
    name, path, url = vault
    allowed, refused = client_from(server, "127.0.0.2", url), client_from(server, "127.0.0.1", url)
    refused.set_secret("before", "open")   # defaultAction Allow until rules are set
    set_acls(server, path, {"defaultAction": "Deny", "bypass": "None", "ipRules": [{"value": "127.0.0.2/32"}]})
    allowed.set_secret("inside", "v1")
    assert allowed.get_secret("inside").value == "v1"
    with pytest.raises(HttpResponseError) as e:
        refused.get_secret("inside")
    assert_firewall(e.value, "127.0.0.1")
    # A CIDR range admits its members.
    set_acls(server, path, {"defaultAction": "Deny", "ipRules": [{"value": "127.0.0.0/30"}]})
    assert refused.get_secret("inside").value == "v1"
    # Back to Allow.
    set_acls(server, path, {"defaultAction": "Allow", "ipRules": []})
    assert refused.get_secret("before").value == "open"


def test_firewall_is_decided_before_the_token_and_spares_the_management_plane(server, vault):
    name, path, url = vault
    set_acls(server, path, {"defaultAction": "Deny", "ipRules": [{"value": "203.0.113.9"}]})
    s = session_from("127.0.0.1")
    # A garbage token from a refused address: the firewall answers, not the token check.
    r = s.get(f"{url}/secrets?api-version=7.5", headers={"Authorization": "Bearer not-a-token"},
              verify=server.ca_cert, timeout=HTTP_TIMEOUT)
    assert r.status_code == 403 and r.json()["error"]["innererror"]["code"] == "ForbiddenByFirewall", r.text
    assert "not-a-token" not in r.text
    # No token at all still gets the challenge (the SDK needs it to start).
    r = s.get(f"{url}/secrets?api-version=7.5", verify=server.ca_cert, timeout=HTTP_TIMEOUT)
    assert r.status_code == 401 and "WWW-Authenticate" in r.headers
    # The management plane is not behind the vault's firewall.
    r = arm(server, "GET", path, management_token(server), **API)
    assert r.status_code == 200 and r.json()["properties"]["networkAcls"]["defaultAction"] == "Deny"
    # Other vaults are not affected.
    other = client_from(server, "127.0.0.1", server.vault_url)
    other.set_secret(unique("free"), "x")


def test_public_network_access_disabled_refuses_every_public_client(server, vault):
    name, path, url = vault
    set_acls(server, path, {"defaultAction": "Allow"}, public="Disabled")
    for source in ("127.0.0.1", "127.0.0.2"):
        with pytest.raises(HttpResponseError) as e:
            client_from(server, source, url).set_secret("x", "y")
        assert_firewall(e.value, source)
    out = set_acls(server, path, public="Enabled")
    assert out["properties"]["publicNetworkAccess"] == "Enabled"
    client_from(server, "127.0.0.1", url).set_secret("x", "y")


class ProxiedServer(__import__("khcompat").KeyhavenServer):
    """Trusts the reverse proxy at 127.0.0.3."""

    def command(self):
        return super().command() + ["--trusted-proxy", "127.0.0.3/32"]


def test_forwarded_addresses_count_only_from_trusted_proxies(store_kind, tmp_path, monkeypatch):
    from khcompat import running_server, trust_server_ca
    with running_server(ProxiedServer, store_kind, tmp_path / "srv") as srv:
        trust_server_ca(monkeypatch, srv)
        name = unique("px")[:24]
        path = (f"/subscriptions/{srv.subscription_id}/resourceGroups/{srv.resource_group}"
                f"/providers/Microsoft.KeyVault/vaults/{name}")
        r = arm(srv, "PUT", path, management_token(srv), {"location": "local", "properties": {
            "tenantId": srv.tenant_id, "sku": {"family": "A", "name": "standard"}, "enableRbacAuthorization": True,
            "networkAcls": {"defaultAction": "Deny", "ipRules": [{"value": "198.51.100.50"}]}}}, **API)
        assert r.status_code == 201, r.text
        url = r.json()["properties"]["vaultUri"].rstrip("/")
        from khcompat import vault_token
        token = vault_token(srv, srv.client_id, srv.client_secret)

        def get(source: str, xff: str):
            return session_from(source).get(f"{url}/secrets?api-version=7.5", verify=srv.ca_cert, timeout=HTTP_TIMEOUT,
                                            headers={"Authorization": f"Bearer {token}", "X-Forwarded-For": xff})

        assert get("127.0.0.3", "198.51.100.50").status_code == 200
        assert get("127.0.0.3", "203.0.113.1, 198.51.100.50").status_code == 200, "the nearest untrusted hop counts"
        r = get("127.0.0.3", "203.0.113.1")
        assert r.status_code == 403 and "Client address: 203.0.113.1" in r.json()["error"]["message"], r.text
        r = get("127.0.0.1", "198.51.100.50")
        # An untrusted peer's header is ignored.
        assert r.status_code == 403 and "Client address: 127.0.0.1" in r.json()["error"]["message"], r.text


class TrustedServiceServer(__import__("khcompat").KeyhavenServer):
    """Treats the bootstrap service principal as a trusted service."""

    trusted_app = None

    def command(self):
        extra = ["--trusted-service", self.trusted_app] if self.trusted_app else []
        return super().command() + extra


def test_trusted_services_pass_the_firewall_only_with_bypass(store_kind, tmp_path, monkeypatch):
    from khcompat import new_app_with_secret, running_server, trust_server_ca, vault_token
    # The bootstrap client id is only known after the first start: start, read it, restart trusting it.
    with running_server(TrustedServiceServer, store_kind, tmp_path / "srv") as srv:
        srv.trusted_app = srv.client_id
        srv.stop()
        srv.start()
        trust_server_ca(monkeypatch, srv)
        name = unique("ts")[:24]
        path = (f"/subscriptions/{srv.subscription_id}/resourceGroups/{srv.resource_group}"
                f"/providers/Microsoft.KeyVault/vaults/{name}")
        acls = {"defaultAction": "Deny", "bypass": "AzureServices", "ipRules": [{"value": "203.0.113.9"}]}
        r = arm(srv, "PUT", path, management_token(srv), {"location": "local", "properties": {
            "tenantId": srv.tenant_id, "sku": {"family": "A", "name": "standard"}, "enableRbacAuthorization": True,
            "networkAcls": acls}}, **API)
        assert r.status_code == 201, r.text
        url = r.json()["properties"]["vaultUri"].rstrip("/")

        def list_as(token: str) -> requests.Response:
            return session_from("127.0.0.1").get(f"{url}/secrets?api-version=7.5", verify=srv.ca_cert,
                                                 timeout=HTTP_TIMEOUT, headers={"Authorization": f"Bearer {token}"})

        trusted = vault_token(srv, srv.client_id, srv.client_secret)
        assert list_as(trusted).status_code == 200, "a trusted service passes with bypass AzureServices"
        app, _, secret = new_app_with_secret(srv)
        other = vault_token(srv, app["appId"], secret)
        r = list_as(other)
        assert r.status_code == 403 and r.json()["error"]["innererror"]["code"] == "ForbiddenByFirewall", r.text
        r = list_as("garbage")
        assert r.status_code == 403 and r.json()["error"]["innererror"]["code"] == "ForbiddenByFirewall", \
            "an invalid token is no trusted service: the firewall's refusal stands"
        set_acls(srv, path, {**acls, "bypass": "None"})
        r = list_as(trusted)
        assert r.status_code == 403 and r.json()["error"]["innererror"]["code"] == "ForbiddenByFirewall", r.text
