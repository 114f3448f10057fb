"""Rotation of the token signing key through the management plane:
POST /providers/Keyhaven.Identity/rotateSigningKey. The JWKS keeps the
previous key next to the new one, so tokens issued before a rotation stay
valid while clients (msal, resource servers) pick up the new key; new tokens
name the new key in their `kid`.

Every test runs on its own server: rotation changes the whole deployment.
"""

from __future__ import annotations

import pytest
import requests

from khcompat import (
    ARM_KEYHAVEN_API_VERSION,
    HTTP_TIMEOUT,
    KeyhavenServer,
    arm,
    assert_arm_error,
    fetch_jwks,
    graph,
    graph_scope,
    jwks_kids,
    jwt_parts,
    management_token,
    new_app_with_secret,
    running_server,
    trust_server_ca,
    verify_rs256,
)

ROTATE = "/providers/Keyhaven.Identity/rotateSigningKey"


@pytest.fixture
def fresh(store_kind, tmp_path, monkeypatch):
    """A private server for this test alone."""
    with running_server(KeyhavenServer, store_kind, tmp_path / "srv") as srv:
        trust_server_ca(monkeypatch, srv)
        yield srv


def rotate(server, token=None) -> requests.Response:
    return arm(server, "POST", ROTATE, token if token is not None else management_token(server),
               api_version=ARM_KEYHAVEN_API_VERSION)


def rotated_kid(server) -> str:
    r = rotate(server)
    assert r.status_code == 200, f"rotateSigningKey: {r.status_code} {r.text[:500]}"
    kid = r.json().get("kid")
    assert isinstance(kid, str) and kid, r.text
    return kid


def kid_of(token: str) -> str:
    return jwt_parts(token)[0].get("kid")


def fresh_token(server, scope=None) -> str:
    """A token from a new client-credentials request (never a cached one)."""
    return server.token(scope or server.vault_scope)


def assert_vault_accepts(server, token, what):
    r = server.vault_request("GET", "/secrets", token=token, api_version="7.5")
    assert r.status_code == 200, f"{what}: the vault answered {r.status_code}: {r.text[:300]}"


def assert_jwks_entry_shape(jwks):
    for key in jwks["keys"]:
        assert key.get("kty") == "RSA" and key.get("n") and key.get("e") and key.get("kid"), key
        assert key.get("use", "sig") == "sig", key


def test_rotation_adds_a_key_and_keeps_the_previous_one(fresh):
    srv = fresh
    before = fetch_jwks(srv)
    assert len(before["keys"]) == 1, jwks_kids(before)
    old_kid = jwks_kids(before)[0]
    old_vault = fresh_token(srv)
    old_graph = fresh_token(srv, graph_scope(srv))
    assert kid_of(old_vault) == old_kid
    verify_rs256(old_vault, before)

    new_kid = rotated_kid(srv)
    assert new_kid != old_kid

    after = fetch_jwks(srv)
    assert_jwks_entry_shape(after)
    assert sorted(jwks_kids(after)) == sorted([old_kid, new_kid]), jwks_kids(after)

    # Tokens issued before the rotation still work, and still verify.
    verify_rs256(old_vault, after)
    assert_vault_accepts(srv, old_vault, "pre-rotation token")
    assert graph(srv, "GET", "/users", old_graph).status_code == 200

    # New tokens are signed with the new key, on every plane.
    new_vault = fresh_token(srv)
    assert kid_of(new_vault) == new_kid
    claims = verify_rs256(new_vault, after)
    assert claims["aud"] == srv.vault_resource
    assert_vault_accepts(srv, new_vault, "post-rotation token")
    new_graph = fresh_token(srv, graph_scope(srv))
    assert kid_of(new_graph) == new_kid
    verify_rs256(new_graph, after)
    assert graph(srv, "GET", "/users", new_graph).status_code == 200

    # Discovery points at the same key set.
    disc = requests.get(f"{srv.authority_host}/{srv.tenant_id}/v2.0/.well-known/openid-configuration",
                        verify=srv.ca_cert, timeout=HTTP_TIMEOUT).json()
    via_discovery = requests.get(disc["jwks_uri"], verify=srv.ca_cert, timeout=HTTP_TIMEOUT).json()
    assert sorted(jwks_kids(via_discovery)) == sorted([old_kid, new_kid])


def test_second_rotation_keeps_the_two_newest_keys(fresh):
    srv = fresh
    first_kid = jwks_kids(fetch_jwks(srv))[0]
    kid1 = rotated_kid(srv)
    token1 = fresh_token(srv)
    assert kid_of(token1) == kid1

    kid2 = rotated_kid(srv)
    assert len({first_kid, kid1, kid2}) == 3
    jwks = fetch_jwks(srv)
    kids = jwks_kids(jwks)
    assert kid1 in kids and kid2 in kids, kids
    assert len(kids) <= 3 and len(set(kids)) == len(kids), kids

    # The token of the previous key still works; new tokens use the newest key.
    verify_rs256(token1, jwks)
    assert_vault_accepts(srv, token1, "token signed with the previous key")
    token2 = fresh_token(srv)
    assert kid_of(token2) == kid2
    verify_rs256(token2, jwks)
    assert_vault_accepts(srv, token2, "token signed with the newest key")


def test_only_admins_rotate(fresh):
    srv = fresh
    kids = jwks_kids(fetch_jwks(srv))
    app, _, secret = new_app_with_secret(srv, prefix="notadmin")
    user_tok = management_token(srv, app["appId"], secret)
    assert_arm_error(rotate(srv, user_tok), 403, "AuthorizationFailed")

    r = arm(srv, "POST", ROTATE, None, api_version=ARM_KEYHAVEN_API_VERSION)
    assert r.status_code in (401, 403), f"anonymous rotation: {r.status_code} {r.text[:300]}"

    # A token for another audience is not a management token.
    r = rotate(srv, fresh_token(srv))
    assert r.status_code in (401, 403), f"vault-audience token: {r.status_code} {r.text[:300]}"

    assert jwks_kids(fetch_jwks(srv)) == kids, "a refused rotation changed the key set"
    assert kid_of(fresh_token(srv)) == kids[0]


def test_rotation_survives_a_restart(fresh):
    srv = fresh
    old_kid = jwks_kids(fetch_jwks(srv))[0]
    new_kid = rotated_kid(srv)
    before_restart = fresh_token(srv)
    srv.restart()
    jwks = fetch_jwks(srv)
    assert sorted(jwks_kids(jwks)) == sorted([old_kid, new_kid])
    assert kid_of(fresh_token(srv)) == new_kid
    verify_rs256(before_restart, jwks)
    assert_vault_accepts(srv, before_restart, "token from before the restart")
