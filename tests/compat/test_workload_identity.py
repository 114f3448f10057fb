"""Workload identity federation: an application trusts tokens of an external
identity provider (a Kubernetes service-account issuer, GitHub Actions, ...)
through a federated identity credential, and azure-identity's
WorkloadIdentityCredential exchanges such a token (read from a file) for a
Keyhaven token.

The server runs with `--federation-config FILE` naming two issuers: one with an
inline JWKS (an RSA and an EC P-256 key) and one whose JWKS lives in a file.
The external tokens are signed here, with those keys.

What the SDK does (azure-identity 1.27.0): WorkloadIdentityCredential is a
ClientAssertionCredential (_credentials/workload_identity.py:144-150) whose
assertion is the token file's content, re-read at most every 600 s and reused
in between (workload_identity.py:41-47). The request is azure-identity's own
AadClient, not msal (_internal/aad_client_base.py:300-316): POST
{authority}/{tenant}/oauth2/v2.0/token with client_assertion,
client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer,
client_id, grant_type=client_credentials, scope; no OIDC discovery, no
client_info (aad_client_base.py:456-464).
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

from khcompat import (
    CLIENT_KWARGS,
    TOKEN_EXCHANGE_AUDIENCE,
    KeyhavenServer,
    assert_oauth_error,
    b64url,
    clear_identity_env,
    create_application,
    create_service_principal,
    ec_private_key,
    external_jwt,
    graph,
    graph_resource,
    graph_scope,
    graph_token,
    is_guid,
    jwt_claims,
    module_server,
    public_jwk,
    request_assertion_token,
    rsa_private_key,
    unique,
)

# Issuer A: inline JWKS with an RSA and an EC key. Issuer B: JWKS in a file.
ISSUER_A = "https://issuer-a.example.test"
ISSUER_B = "https://issuer-b.example.test/oidc/cluster-b"
# Never in the server's configuration.
ISSUER_UNCONFIGURED = "https://unconfigured.example.test"

KID_A_RSA = "a-rsa-1"
KID_A_EC = "a-ec-1"
KID_B_RSA = "b-rsa-1"


class FederationServer(KeyhavenServer):
    """A private server started with `--federation-config FILE`."""

    def __init__(self, *args, federation_config, **kwargs):
        super().__init__(*args, **kwargs)
        self.federation_config = federation_config

    def command(self):
        return super().command() + ["--federation-config", str(self.federation_config)]


@pytest.fixture(scope="module")
def keys():
    """The external issuers' signing keys, by kid, plus a stranger's key."""
    return {KID_A_RSA: rsa_private_key(), KID_A_EC: ec_private_key(), KID_B_RSA: rsa_private_key(),
            "stranger": rsa_private_key()}


@pytest.fixture(scope="module")
def wi_server(store_kind, tmp_path_factory, keys):
    workdir = tmp_path_factory.mktemp(f"wi-{store_kind}")
    jwks_b = workdir / "issuer-b-jwks.json"
    jwks_b.write_text(json.dumps({"keys": [public_jwk(keys[KID_B_RSA], KID_B_RSA)]}))
    config = workdir / "federation.json"
    config.write_text(json.dumps({"issuers": [
        {"issuer": ISSUER_A,
         "jwks": {"keys": [public_jwk(keys[KID_A_RSA], KID_A_RSA), public_jwk(keys[KID_A_EC], KID_A_EC)]}},
        {"issuer": ISSUER_B, "jwks_file": str(jwks_b)},
    ]}, indent=2))
    with module_server(FederationServer, store_kind, workdir / "server", federation_config=config) as srv:
        yield srv


@pytest.fixture
def server(wi_server):
    """This module's private server (shadows conftest's shared `server`)."""
    return wi_server


@pytest.fixture
def admin(wi_server) -> str:
    return graph_token(wi_server)


def new_subject() -> str:
    return f"system:serviceaccount:ns-{uuid.uuid4().hex[:6]}:sa-{uuid.uuid4().hex[:6]}"


def add_federated_credential(server, admin, app, *, issuer: str, subject: str,
                             audiences=(TOKEN_EXCHANGE_AUDIENCE,)) -> requests.Response:
    body = {"name": unique("fic"), "issuer": issuer, "subject": subject, "audiences": list(audiences)}
    return graph(server, "POST", f"/applications/{app['id']}/federatedIdentityCredentials", admin, json=body)


def federated_app(server, admin, *, issuer: str = ISSUER_A, subject=None, with_sp: bool = True):
    """(application, service principal or None, subject) with one federated credential."""
    subject = subject or new_subject()
    app = create_application(server, admin, prefix="wi")
    sp = create_service_principal(server, app["appId"], admin) if with_sp else None
    r = add_federated_credential(server, admin, app, issuer=issuer, subject=subject)
    assert r.status_code == 201, f"federated credential: {r.status_code} {r.text[:500]}"
    return app, sp, subject


def ext_token(keys, kid, **kwargs) -> str:
    """An external token signed with the key `kid`, which is also the header's kid."""
    return external_jwt(keys[kid], kid, **kwargs)


def assert_federated_app_claims(claims, server, app, sp, audience):
    assert claims["aud"] == audience, claims
    assert claims["tid"] == server.tenant_id, claims
    assert claims["oid"] == sp["id"], claims
    assert claims["sub"] == sp["id"], claims
    assert claims["appid"] == app["appId"], claims
    assert claims["azp"] == app["appId"], claims
    assert claims["azpacr"] == "2", claims  # a client assertion, like a certificate
    assert claims["idtyp"] == "app", claims
    assert claims["exp"] > time.time() + 600, claims


def assert_vault_forbids(server, token):
    """Authenticated but not authorized (no RBAC yet): 403, never 401."""
    r = server.vault_request("GET", "/secrets", token=token, api_version="7.5")
    assert r.status_code == 403, f"expected 403 (authenticated, not authorized), got {r.status_code}: {r.text[:300]}"


def assert_sdk_forbidden(server, credential):
    client = server.secret_client(credential)
    try:
        with pytest.raises(HttpResponseError) as info:
            list(client.list_properties_of_secrets())
        assert not isinstance(info.value, ClientAuthenticationError), info.value
        assert info.value.status_code == 403, info.value
    finally:
        client.close()


def workload_credential(server, client_id, token_file, **kwargs):
    from azure.identity import WorkloadIdentityCredential

    kw = dict(CLIENT_KWARGS)
    kw.update(kwargs)
    return WorkloadIdentityCredential(tenant_id=server.tenant_id, client_id=client_id,
                                      token_file_path=str(token_file), authority=server.authority_host, **kw)


# ---------------------------------------------------------------------------
# the federated credential (Graph)
# ---------------------------------------------------------------------------

def test_federated_credential_is_created(server, admin):
    app = create_application(server, admin, prefix="wi")
    subject = new_subject()
    r = add_federated_credential(server, admin, app, issuer=ISSUER_A, subject=subject)
    assert r.status_code == 201, f"{r.status_code}: {r.text[:500]}"
    body = r.json()
    assert is_guid(body.get("id")), body
    assert body["issuer"] == ISSUER_A, body
    assert body["subject"] == subject, body
    assert body["audiences"] == [TOKEN_EXCHANGE_AUDIENCE], body
    assert isinstance(body.get("name"), str) and body["name"], body


# ---------------------------------------------------------------------------
# the token exchange
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("kid,issuer", [(KID_A_RSA, ISSUER_A), (KID_A_EC, ISSUER_A), (KID_B_RSA, ISSUER_B)],
                         ids=["inline-rsa", "inline-ec", "jwks-file-rsa"])
def test_raw_token_exchange(server, admin, keys, kid, issuer):
    app, sp, subject = federated_app(server, admin, issuer=issuer)
    assertion = ext_token(keys, kid, iss=issuer, sub=subject)
    r = request_assertion_token(server, app["appId"], assertion)
    assert r.status_code == 200, f"{r.status_code}: {r.text[:500]}"
    body = r.json()
    assert body.get("token_type", "").lower() == "bearer", body
    assert int(body["expires_in"]) > 600, body
    assert_federated_app_claims(jwt_claims(body["access_token"]), server, app, sp, server.vault_resource)
    assert_vault_forbids(server, body["access_token"])


def test_kubernetes_shaped_token_with_audience_list(server, admin, keys):
    """A projected service-account token as kubelet writes it for Azure
    workload identity: aud is a JSON array, and there are extra claims."""
    app, sp, subject = federated_app(server, admin)
    assertion = ext_token(keys, KID_A_RSA, iss=ISSUER_A, sub=subject, aud=[TOKEN_EXCHANGE_AUDIENCE],
                          extra={"kubernetes.io": {"namespace": "ns", "serviceaccount": {"name": "sa", "uid": str(uuid.uuid4())}}})
    r = request_assertion_token(server, app["appId"], assertion)
    assert r.status_code == 200, f"{r.status_code}: {r.text[:500]}"
    assert_federated_app_claims(jwt_claims(r.json()["access_token"]), server, app, sp, server.vault_resource)


def test_the_same_external_token_is_accepted_repeatedly(server, admin, keys):
    """WorkloadIdentityCredential re-reads the token file at most every 10
    minutes and sends the same JWT with every token request in between
    (azure-identity workload_identity.py:41-47); kubelet rotates the file
    hourly. A jti replay check would break it."""
    app, sp, subject = federated_app(server, admin)
    assertion = ext_token(keys, KID_A_RSA, iss=ISSUER_A, sub=subject)
    for scope in (server.vault_scope, graph_scope(server), server.vault_scope):
        r = request_assertion_token(server, app["appId"], assertion, scope=scope)
        assert r.status_code == 200, f"{scope}: {r.status_code}: {r.text[:500]}"
        assert jwt_claims(r.json()["access_token"])["oid"] == sp["id"]


def test_two_federated_credentials_on_one_app(server, admin, keys):
    app, sp, subject_a = federated_app(server, admin, issuer=ISSUER_A)
    subject_b = new_subject()
    r = add_federated_credential(server, admin, app, issuer=ISSUER_B, subject=subject_b)
    assert r.status_code == 201, r.text
    for kid, iss, sub in ((KID_A_EC, ISSUER_A, subject_a), (KID_B_RSA, ISSUER_B, subject_b)):
        r = request_assertion_token(server, app["appId"], ext_token(keys, kid, iss=iss, sub=sub))
        assert r.status_code == 200, f"{iss}: {r.status_code}: {r.text[:500]}"
        assert jwt_claims(r.json()["access_token"])["oid"] == sp["id"]
    # Each subject belongs to its own issuer only.
    r = request_assertion_token(server, app["appId"], ext_token(keys, KID_B_RSA, iss=ISSUER_B, sub=subject_a))
    assert_oauth_error(r, 401, "invalid_client", 700213)


# ---------------------------------------------------------------------------
# azure-identity
# ---------------------------------------------------------------------------

def test_workload_identity_credential(server, admin, keys, tmp_path, monkeypatch):
    clear_identity_env(monkeypatch)
    app, sp, subject = federated_app(server, admin)
    token_file = tmp_path / "token"
    token_file.write_text(ext_token(keys, KID_A_RSA, iss=ISSUER_A, sub=subject))

    cred = workload_credential(server, app["appId"], token_file)
    try:
        vault_tok = cred.get_token(server.vault_scope).token
        graph_tok = cred.get_token(graph_scope(server)).token
        assert_federated_app_claims(jwt_claims(vault_tok), server, app, sp, server.vault_resource)
        assert_federated_app_claims(jwt_claims(graph_tok), server, app, sp, graph_resource(server))
        assert_vault_forbids(server, vault_tok)
        assert_sdk_forbidden(server, cred)
    finally:
        cred.close()


def test_workload_identity_credential_with_jwks_file_issuer(server, admin, keys, tmp_path, monkeypatch):
    clear_identity_env(monkeypatch)
    app, sp, subject = federated_app(server, admin, issuer=ISSUER_B)
    token_file = tmp_path / "token"
    token_file.write_text(ext_token(keys, KID_B_RSA, iss=ISSUER_B, sub=subject))
    cred = workload_credential(server, app["appId"], token_file)
    try:
        assert_federated_app_claims(jwt_claims(cred.get_token(server.vault_scope).token), server, app, sp,
                                    server.vault_resource)
    finally:
        cred.close()


def test_default_azure_credential_from_the_environment(server, admin, keys, tmp_path, monkeypatch):
    """The AKS way: AZURE_AUTHORITY_HOST, AZURE_TENANT_ID, AZURE_CLIENT_ID and
    AZURE_FEDERATED_TOKEN_FILE in the environment, DefaultAzureCredential()."""
    from azure.identity import DefaultAzureCredential

    clear_identity_env(monkeypatch)
    app, sp, subject = federated_app(server, admin)
    token_file = tmp_path / "token"
    token_file.write_text(ext_token(keys, KID_A_EC, iss=ISSUER_A, sub=subject))
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", server.authority_host)
    monkeypatch.setenv("AZURE_TENANT_ID", server.tenant_id)
    monkeypatch.setenv("AZURE_CLIENT_ID", app["appId"])
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(token_file))
    # Only the workload identity credential: no developer tools, no IMDS probe.
    monkeypatch.setenv("AZURE_TOKEN_CREDENTIALS", "workloadidentitycredential")

    cred = DefaultAzureCredential(**CLIENT_KWARGS)
    try:
        tok = cred.get_token(server.vault_scope).token
        assert_federated_app_claims(jwt_claims(tok), server, app, sp, server.vault_resource)
        assert_sdk_forbidden(server, cred)
    finally:
        cred.close()


def test_workload_identity_credential_refused(server, admin, keys, tmp_path, monkeypatch):
    clear_identity_env(monkeypatch)
    app, _, _ = federated_app(server, admin)
    token_file = tmp_path / "token"
    token_file.write_text(ext_token(keys, KID_A_RSA, iss=ISSUER_A, sub=new_subject()))
    cred = workload_credential(server, app["appId"], token_file)
    try:
        with pytest.raises(ClientAuthenticationError):
            cred.get_token(server.vault_scope)
    finally:
        cred.close()


# ---------------------------------------------------------------------------
# refusals, with Entra's codes
# ---------------------------------------------------------------------------

def _alg_none(token: str) -> str:
    h, p, _ = token.split(".")
    return f"{b64url(json.dumps({'alg': 'none', 'typ': 'JWT', 'kid': KID_A_RSA}).encode())}.{p}."


# case -> the AADSTS code of the 401 invalid_client answer (None: any code).
REFUSALS = {
    "issuer-not-configured": 700211,
    "issuer-not-in-app": 700211,
    "app-without-federated-credential": 700211,
    "subject-mismatch": 700213,
    "audience-mismatch": 700212,
    "expired": 700024,
    "not-yet-valid": 700024,
    "bad-signature": 700027,
    "unknown-kid": 700027,
    "key-of-another-issuer": 700027,
    "alg-none": None,
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refused_exchanges(server, admin, keys, case):
    subject = new_subject()
    if case == "issuer-not-configured":
        # The app trusts the issuer, but the deployment does not know its keys.
        app, _, _ = federated_app(server, admin, issuer=ISSUER_UNCONFIGURED, subject=subject)
        assertion = ext_token(keys, KID_A_RSA, iss=ISSUER_UNCONFIGURED, sub=subject)
    elif case == "issuer-not-in-app":
        # A configured issuer, correctly signed, that this app does not trust.
        app, _, _ = federated_app(server, admin, issuer=ISSUER_B, subject=subject)
        assertion = ext_token(keys, KID_A_RSA, iss=ISSUER_A, sub=subject)
    elif case == "app-without-federated-credential":
        app = create_application(server, admin, prefix="wi")
        create_service_principal(server, app["appId"], admin)
        assertion = ext_token(keys, KID_A_RSA, iss=ISSUER_A, sub=subject)
    else:
        app, _, _ = federated_app(server, admin, issuer=ISSUER_A, subject=subject)
        if case == "subject-mismatch":
            assertion = ext_token(keys, KID_A_RSA, iss=ISSUER_A, sub=new_subject())
        elif case == "audience-mismatch":
            assertion = ext_token(keys, KID_A_RSA, iss=ISSUER_A, sub=subject, aud="api://SomethingElse")
        elif case == "expired":
            assertion = ext_token(keys, KID_A_RSA, iss=ISSUER_A, sub=subject, issued_offset=-7200, lifetime=3600)
        elif case == "not-yet-valid":
            assertion = ext_token(keys, KID_A_RSA, iss=ISSUER_A, sub=subject, issued_offset=3600, lifetime=3600)
        elif case == "bad-signature":
            # The right kid, signed by another key.
            assertion = external_jwt(keys["stranger"], KID_A_RSA, iss=ISSUER_A, sub=subject)
        elif case == "unknown-kid":
            assertion = external_jwt(keys[KID_A_RSA], "no-such-kid", iss=ISSUER_A, sub=subject)
        elif case == "key-of-another-issuer":
            # Issuer B's key, named by its kid, in a token of issuer A.
            assertion = ext_token(keys, KID_B_RSA, iss=ISSUER_A, sub=subject)
        else:
            assertion = _alg_none(ext_token(keys, KID_A_RSA, iss=ISSUER_A, sub=subject))
    r = request_assertion_token(server, app["appId"], assertion)
    assert_oauth_error(r, 401, "invalid_client", REFUSALS[case])


def test_app_without_service_principal_gets_no_token(server, admin, keys):
    app, _, subject = federated_app(server, admin, with_sp=False)
    r = request_assertion_token(server, app["appId"], ext_token(keys, KID_A_RSA, iss=ISSUER_A, sub=subject))
    assert_oauth_error(r, (400, 401), ("unauthorized_client", "invalid_client"))


def test_federated_credential_of_one_app_does_not_serve_another(server, admin, keys):
    """The token matches app X's federated credential; presented as app Y
    (which trusts the same issuer for another subject) it is refused."""
    app_x, sp_x, subject_x = federated_app(server, admin)
    app_y, _, _ = federated_app(server, admin)
    assertion = ext_token(keys, KID_A_RSA, iss=ISSUER_A, sub=subject_x)
    assert_oauth_error(request_assertion_token(server, app_y["appId"], assertion), 401, "invalid_client", 700213)
    r = request_assertion_token(server, app_x["appId"], assertion)
    assert r.status_code == 200, r.text
    assert jwt_claims(r.json()["access_token"])["oid"] == sp_x["id"]
