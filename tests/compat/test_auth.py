"""Authentication: the OIDC/token endpoints as msal and azure-identity use
them, the Key Vault challenge as the SDK parses it, and tokens the data plane
must refuse. Raw REST via `requests`; the SDK where an application would.

Expired and wrong-issuer tokens need the server's signing key and are tested
in Rust, not here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid

import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.identity import ClientSecretCredential
from azure.keyvault.secrets._shared import HttpChallenge, challenge_auth_policy
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicNumbers

from khcompat import CLIENT_KWARGS, HTTP_TIMEOUT, b64url, b64url_decode, jwt_parts, unique


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def get_json(server, url):
    r = requests.get(url, verify=server.ca_cert, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, f"GET {url}: {r.status_code} {r.text[:300]}"
    return r.json()


@pytest.fixture(scope="module")
def discovery(server):
    return get_json(server, f"{server.authority_host}/{server.tenant_id}/v2.0/.well-known/openid-configuration")


@pytest.fixture(scope="module")
def jwks(server, discovery):
    return get_json(server, discovery["jwks_uri"])


def rsa_key_for(jwks_doc, kid):
    keys = [k for k in jwks_doc.get("keys", []) if k.get("kid") == kid]
    assert keys, f"no JWKS key with kid {kid!r}: {[k.get('kid') for k in jwks_doc.get('keys', [])]}"
    jwk = keys[0]
    assert jwk.get("kty") == "RSA"
    n = int.from_bytes(b64url_decode(jwk["n"]), "big")
    e = int.from_bytes(b64url_decode(jwk["e"]), "big")
    return RSAPublicNumbers(e, n).public_key()


def encode_segment(obj) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def hs256(header, payload, key: bytes) -> str:
    signing_input = f"{encode_segment(header)}.{encode_segment(payload)}"
    sig = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(sig)}"


def assert_rejected(resp):
    assert resp.status_code == 401, f"token was not refused: {resp.status_code} {resp.text[:300]}"
    # RFC 6750 3.1: a 401 from a bearer-protected resource carries the challenge
    # (and the SDK only re-authenticates on a 401 that has one).
    assert resp.headers.get("WWW-Authenticate", "").startswith("Bearer "), resp.headers
    body = resp.json()
    assert isinstance(body.get("error"), dict) and body["error"].get("code"), body
    return body


@pytest.fixture(scope="module")
def probe_secret(server, client):
    """A secret the tokens below try to read."""
    n = unique("auth")
    value = "auth-probe-" + uuid.uuid4().hex
    client.set_secret(n, value)
    return n, value


# ---------------------------------------------------------------------------
# OIDC discovery, token endpoint, token format
# ---------------------------------------------------------------------------

def test_openid_configuration_has_what_msal_needs(server, discovery):
    # msal (Authority) reads authorization_endpoint and token_endpoint
    # unconditionally (KeyError otherwise) and takes the tenant from the
    # token_endpoint's first path segment.
    assert discovery["token_endpoint"] == server.token_url()
    assert discovery["authorization_endpoint"].startswith(f"{server.authority_host}/{server.tenant_id}/")
    assert discovery["jwks_uri"].startswith("https://")
    assert discovery["issuer"]
    assert "RS256" in discovery.get("id_token_signing_alg_values_supported", ["RS256"])


def test_unknown_tenant_discovery_is_4xx(server):
    r = requests.get(f"{server.authority_host}/{uuid.uuid4()}/v2.0/.well-known/openid-configuration",
                     verify=server.ca_cert, timeout=HTTP_TIMEOUT)
    assert 400 <= r.status_code < 500, f"{r.status_code}: {r.text[:300]}"


def test_token_response_fields(server):
    r = server.request_token(server.vault_scope)
    assert r.status_code == 200, r.text
    assert r.headers.get("Content-Type", "").startswith("application/json")
    body = r.json()
    assert isinstance(body.get("access_token"), str) and body["access_token"].count(".") == 2
    assert body.get("token_type", "").lower() == "bearer"
    # azure-identity does int(result["expires_in"]); msal treats < 300 s left as expired
    # and the SDK refreshes a token with < 300 s left, so it must be comfortably longer.
    assert int(body["expires_in"]) > 600, body.get("expires_in")


def test_access_token_is_rs256_and_verifies_against_jwks(server, discovery, jwks):
    tok = server.token(server.vault_scope)
    header, payload, signature, signing_input = jwt_parts(tok)
    assert header.get("alg") == "RS256"
    assert header.get("kid")
    key = rsa_key_for(jwks, header["kid"])
    try:
        key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        pytest.fail("access token signature does not verify against the JWKS key")

    now = time.time()
    assert payload["aud"] == server.vault_resource
    assert payload["iss"] == discovery["issuer"]
    assert payload["exp"] > now + 600
    assert payload.get("nbf", payload.get("iat", now)) <= now + 60


def test_management_token_has_management_audience(server):
    assert server.management_scope.endswith("/.default")
    tok = server.token(server.management_scope)
    _, payload, _, _ = jwt_parts(tok)
    assert payload["aud"] == server.management_scope[: -len("/.default")]


def test_sdk_credential_gets_a_token(server, credential):
    at = credential.get_token(server.vault_scope)
    assert at.token.count(".") == 2
    assert at.expires_on > time.time() + 600
    _, payload, _, _ = jwt_parts(at.token)
    assert payload["aud"] == server.vault_resource


# ---------------------------------------------------------------------------
# token endpoint negatives
# ---------------------------------------------------------------------------

def test_token_endpoint_wrong_tenant_is_4xx(server):
    r = server.request_token(server.vault_scope, tenant=str(uuid.uuid4()))
    assert 400 <= r.status_code < 500, f"{r.status_code}: {r.text[:300]}"
    assert "access_token" not in r.text


def test_token_endpoint_wrong_client_secret_is_401(server):
    r = server.request_token(server.vault_scope, client_secret="not-the-secret-" + uuid.uuid4().hex)
    assert r.status_code == 401, f"{r.status_code}: {r.text[:300]}"
    body = r.json()
    assert isinstance(body.get("error"), str) and body["error"], body  # OAuth 2 error response
    assert "access_token" not in body


def test_token_endpoint_unknown_client_id_is_4xx(server):
    r = server.request_token(server.vault_scope, client_id=str(uuid.uuid4()))
    assert 400 <= r.status_code < 500, f"{r.status_code}: {r.text[:300]}"
    assert "access_token" not in r.text


def test_token_endpoint_unsupported_grant_is_4xx(server):
    r = requests.post(
        server.token_url(),
        data={"grant_type": "password", "client_id": server.client_id, "username": "u", "password": "p",
              "scope": server.vault_scope},
        verify=server.ca_cert, timeout=HTTP_TIMEOUT,
    )
    assert 400 <= r.status_code < 500, f"{r.status_code}: {r.text[:300]}"
    assert "access_token" not in r.text


def test_credential_with_wrong_secret_raises_client_authentication_error(server):
    cred = server.credential(client_secret="wrong-" + uuid.uuid4().hex)
    try:
        with pytest.raises(ClientAuthenticationError):
            cred.get_token(server.vault_scope)
        client = server.secret_client(cred)
        with pytest.raises(ClientAuthenticationError):
            client.get_secret(unique("auth"))
        client.close()
    finally:
        cred.close()


def test_credential_with_wrong_tenant_raises_client_authentication_error(server):
    cred = ClientSecretCredential(str(uuid.uuid4()), server.client_id, server.client_secret,
                                  authority=server.authority_host, disable_instance_discovery=True,
                                  **CLIENT_KWARGS)
    try:
        with pytest.raises(ClientAuthenticationError):
            cred.get_token(server.vault_scope)
    finally:
        cred.close()


# ---------------------------------------------------------------------------
# the challenge
# ---------------------------------------------------------------------------

def test_no_token_gets_a_challenge_the_sdk_accepts(server):
    url = f"{server.vault_url}/secrets/{unique('auth')}?api-version=2026-04-01"
    r = requests.get(url, verify=server.ca_cert, timeout=HTTP_TIMEOUT)
    assert r.status_code == 401
    body = r.json()
    assert body["error"]["code"] == "Unauthorized"
    assert isinstance(body["error"].get("message"), str)

    header = r.headers.get("WWW-Authenticate")
    assert header, "401 without WWW-Authenticate"
    challenge = HttpChallenge(url, header, response_headers=r.headers)
    assert challenge.is_bearer_challenge()
    assert challenge.get_authorization_server() == f"{server.authority_host}/{server.tenant_id}"
    assert challenge.get_resource() == server.vault_resource
    # azure-identity refuses a token request for a tenant other than the
    # credential's own unless it is exactly the same string.
    assert challenge.tenant_id == server.tenant_id
    # What ChallengeAuthPolicy does with verify_challenge_resource=True (the default).
    scope = challenge.get_scope() or challenge.get_resource() + "/.default"
    assert scope == server.vault_scope
    challenge_auth_policy._validate_challenge_resource(scope, url)


# ---------------------------------------------------------------------------
# tokens the data plane must refuse
# ---------------------------------------------------------------------------

def test_valid_token_is_accepted(server, token, probe_secret):
    """Positive control for the refusals below."""
    n, value = probe_secret
    r = server.vault_request("GET", f"/secrets/{n}", token=token)
    assert r.status_code == 200 and r.json()["value"] == value


def test_garbage_token_is_refused(server, probe_secret):
    n, value = probe_secret
    for garbage in ("garbage", "a.b.c", "eyJhbGciOiJSUzI1NiJ9..", "", "x" * 5000):
        r = server.vault_request("GET", f"/secrets/{n}", headers={"Authorization": f"Bearer {garbage}"})
        assert_rejected(r)
        assert value not in r.text


def test_non_bearer_scheme_is_refused(server, probe_secret):
    n, _ = probe_secret
    basic = base64.b64encode(f"{server.client_id}:{server.client_secret}".encode()).decode()
    assert_rejected(server.vault_request("GET", f"/secrets/{n}", headers={"Authorization": f"Basic {basic}"}))


def test_token_with_modified_payload_is_refused(server, token, probe_secret):
    n, value = probe_secret
    header, payload, signature, _ = jwt_parts(token)
    payload["exp"] = payload["exp"] + 24 * 3600
    forged = f"{token.split('.')[0]}.{encode_segment(payload)}.{token.split('.')[2]}"
    r = server.vault_request("GET", f"/secrets/{n}", token=forged)
    assert_rejected(r)
    assert value not in r.text


def test_token_with_truncated_signature_is_refused(server, token, probe_secret):
    n, _ = probe_secret
    h, p, s = token.split(".")
    assert_rejected(server.vault_request("GET", f"/secrets/{n}", token=f"{h}.{p}.{s[:-8]}"))


def test_alg_none_token_is_refused(server, token, probe_secret):
    n, value = probe_secret
    header, payload, _, _ = jwt_parts(token)
    for alg in ("none", "None", "NONE"):
        unsigned_header = {"alg": alg, "typ": "JWT"}
        if "kid" in header:
            unsigned_header["kid"] = header["kid"]
        forged = f"{encode_segment(unsigned_header)}.{token.split('.')[1]}."
        r = server.vault_request("GET", f"/secrets/{n}", token=forged)
        assert_rejected(r)
        assert value not in r.text


def test_hs256_token_signed_with_some_key_is_refused(server, token, probe_secret):
    n, value = probe_secret
    header, payload, _, _ = jwt_parts(token)
    forged = hs256({"alg": "HS256", "typ": "JWT", "kid": header.get("kid", "k")}, payload, b"keyhaven")
    r = server.vault_request("GET", f"/secrets/{n}", token=forged)
    assert_rejected(r)
    assert value not in r.text


def test_hs256_token_keyed_with_the_rsa_public_key_is_refused(server, token, jwks, probe_secret):
    """The classic RS256 -> HS256 key-confusion forgery."""
    n, value = probe_secret
    header, payload, _, _ = jwt_parts(token)
    public_key = rsa_key_for(jwks, header["kid"])
    forged_header = {"alg": "HS256", "typ": "JWT", "kid": header["kid"]}
    for key in (
        public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
        public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1),
    ):
        r = server.vault_request("GET", f"/secrets/{n}", token=hs256(forged_header, payload, key))
        assert_rejected(r)
        assert value not in r.text


def test_management_audience_token_is_refused_by_the_vault(server, probe_secret):
    n, value = probe_secret
    mgmt = server.token(server.management_scope)
    r = server.vault_request("GET", f"/secrets/{n}", token=mgmt)
    assert_rejected(r)
    assert value not in r.text


def test_refused_token_cannot_write(server, probe_secret):
    n, value = probe_secret
    r = server.vault_request("PUT", f"/secrets/{n}", headers={"Authorization": "Bearer garbage"},
                             json={"value": "overwritten"})
    assert_rejected(r)
    r = server.vault_request("DELETE", f"/secrets/{n}", headers={"Authorization": "Bearer garbage"})
    assert_rejected(r)
    good = server.token(server.vault_scope)
    r = server.vault_request("GET", f"/secrets/{n}", token=good)
    assert r.status_code == 200 and r.json()["value"] == value


# ---------------------------------------------------------------------------
# vault names
# ---------------------------------------------------------------------------

def test_unknown_vault_host_is_an_error_and_leaks_nothing(server, token, probe_secret):
    n, value = probe_secret
    other = server.vault_url_for("nosuch")
    for path in (f"/secrets/{n}", "/secrets", "/deletedsecrets"):
        r = server.vault_request("GET", path, token=token, vault_url=other)
        assert 400 <= r.status_code < 500, f"{path}: {r.status_code} {r.text[:300]}"
        body = r.json()
        assert isinstance(body.get("error"), dict) and body["error"].get("code"), body
        assert value not in r.text

    r = server.vault_request("PUT", f"/secrets/{n}", token=token, vault_url=other, json={"value": "x"})
    assert 400 <= r.status_code < 500
    assert server.vault_request("GET", f"/secrets/{n}", token=token).json()["value"] == value


def test_sdk_against_unknown_vault_raises(server, credential, probe_secret):
    n, _ = probe_secret
    client = server.secret_client(credential, vault_url=server.vault_url_for("nosuch"))
    try:
        with pytest.raises(HttpResponseError) as info:
            client.get_secret(n)
        assert 400 <= info.value.status_code < 500
    finally:
        client.close()
