"""Token grants for principals made through Graph: users with the resource
owner password grant (azure-identity's UsernamePasswordCredential as the Azure
CLI's public client), applications with a client secret (ClientSecretCredential)
or a certificate (CertificateCredential), and how each is refused.

Every token of a new principal must be accepted by the data plane: until RBAC
lands such a principal is authenticated but not authorized, so the vault
answers 403, never 401.
"""

from __future__ import annotations

import json
import time
import uuid

import msal.authority
import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicNumbers

from khcompat import (
    AZURE_CLI_CLIENT_ID,
    HTTP_TIMEOUT,
    KeyhavenServer,
    PgDatabase,
    add_member,
    add_password,
    app_secret_credential,
    assert_oauth_error,
    b64url,
    b64url_decode,
    certificate_credential,
    client_assertion,
    create_application,
    create_group,
    create_service_principal,
    create_user,
    graph,
    graph_ok,
    graph_resource,
    graph_scope,
    graph_token,
    jwt_claims,
    jwt_parts,
    key_credential,
    new_app_with_secret,
    new_password,
    request_assertion_token,
    request_password_token,
    self_signed_certificate,
    unique,
    user_credential,
)


@pytest.fixture
def admin(server) -> str:
    return graph_token(server)


def token_from(credential, scope) -> str:
    """One token from an SDK credential, closing it afterwards."""
    try:
        return credential.get_token(scope).token
    finally:
        credential.close()


def app_with_certificate(server, admin, cert=None):
    """(application, service principal, certificate) with the certificate registered."""
    cert = cert or self_signed_certificate()
    app = create_application(server, admin)
    sp = create_service_principal(server, app["appId"], admin)
    graph_ok(server, "PATCH", f"/applications/{app['id']}", admin,
             json={"keyCredentials": [key_credential(cert)]}, status=204)
    return app, sp, cert


def assert_vault_forbids(server, token):
    """Authenticated but not authorized: 403, not 401, on the raw data plane."""
    r = server.vault_request("GET", "/secrets", token=token, api_version="7.5")
    assert r.status_code == 403, f"expected 403 (authenticated, not authorized), got {r.status_code}: {r.text[:300]}"
    assert r.json()["error"]["code"] == "Forbidden", r.text


def assert_sdk_forbidden(server, credential):
    """The same through SecretClient: HttpResponseError 403, not an authentication error."""
    client = server.secret_client(credential)
    try:
        with pytest.raises(HttpResponseError) as info:
            list(client.list_properties_of_secrets())
        assert not isinstance(info.value, ClientAuthenticationError), info.value
        assert info.value.status_code == 403, info.value
    finally:
        client.close()


def assert_app_claims(claims, server, app, sp, audience):
    assert claims["aud"] == audience
    assert claims["tid"] == server.tenant_id
    assert claims["oid"] == sp["id"]
    assert claims["sub"] == sp["id"]
    assert claims["appid"] == app["appId"]
    assert claims["azp"] == app["appId"]
    assert claims["idtyp"] == "app"
    assert "upn" not in claims


# ---------------------------------------------------------------------------
# users: resource owner password credentials
# ---------------------------------------------------------------------------

def test_user_realm_discovery_lets_msal_use_plain_ropc(server, admin):
    """msal asks {authority host}/common/userrealm/{upn} before a password grant
    and only goes on when the answer is 404 or a non-federated realm (any
    other status raises)."""
    user, _ = create_user(server, admin)
    r = requests.get(f"{server.authority_host}/common/userrealm/{user['userPrincipalName']}",
                     params={"api-version": "1.0"}, headers={"Accept": "application/json"},
                     verify=server.ca_cert, timeout=HTTP_TIMEOUT)
    assert r.status_code in (200, 404), f"{r.status_code}: {r.text[:300]}"
    if r.status_code == 200:
        assert r.json().get("account_type") != "Federated", r.text


class ServerAlsoOn443(KeyhavenServer):
    """A private server that also serves its endpoints on 127.0.0.1:443
    (`--extra-listen`), as a deployment must for msal's user-realm lookup."""

    def command(self):
        return super().command() + ["--extra-listen", "127.0.0.1:443"]


def test_username_password_credential_with_user_realm_discovery(store_kind, tmp_path, monkeypatch):
    """The whole msal path, user-realm discovery included. msal sends that
    request to the authority's host on port 443 whatever the authority's port
    (see khcompat.assume_no_user_realm), so this server also listens on 443."""
    monkeypatch.setattr(msal.authority.Authority, "_domains_without_user_realm_discovery", set())
    pg = PgDatabase().create() if store_kind == "postgres" else None
    srv = ServerAlsoOn443(store_kind, tmp_path / "srv443", pg=pg)
    try:
        srv.start()
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", srv.ca_cert)
        monkeypatch.setenv("SSL_CERT_FILE", srv.ca_cert)
        admin = graph_token(srv)
        user, password = create_user(srv, admin)
        cred = user_credential(srv, user["userPrincipalName"], password, realm_discovery=True)
        tok = token_from(cred, srv.vault_scope)
        assert jwt_claims(tok)["oid"] == user["id"]
    finally:
        srv.stop()
        if pg is not None:
            pg.drop()


def test_ropc_response_has_what_msal_and_azure_identity_need(server, admin):
    user, password = create_user(server, admin)
    r = request_password_token(server, user["userPrincipalName"], password)
    assert r.status_code == 200, f"{r.status_code}: {r.text[:500]}"
    assert r.headers.get("Content-Type", "").startswith("application/json")
    body = r.json()
    assert body.get("token_type", "").lower() == "bearer"
    assert int(body["expires_in"]) > 600
    assert jwt_claims(body["access_token"])["aud"] == server.vault_resource

    # azure-identity's _build_auth_record reads the id token's aud, iss,
    # tid (or the issuer path), preferred_username (or upn), and sub unless
    # client_info is present.
    assert isinstance(body.get("id_token"), str) and body["id_token"].count(".") == 2, body.keys()
    idt = jwt_claims(body["id_token"])
    assert idt["aud"] == AZURE_CLI_CLIENT_ID
    assert idt["tid"] == server.tenant_id
    assert idt["oid"] == user["id"]
    assert isinstance(idt.get("sub"), str) and idt["sub"]
    assert idt["iss"].startswith(f"{server.authority_host}/{server.tenant_id}")
    assert (idt.get("preferred_username") or idt.get("upn", "")).lower() == user["userPrincipalName"].lower()
    if "client_info" in body:
        # msal json-decodes it and keys the account on "{uid}.{utid}".
        info = json.loads(b64url_decode(body["client_info"]))
        assert (info.get("uid"), info.get("utid")) == (user["id"], server.tenant_id), info


def test_user_token_claims_include_transitive_groups(server, admin):
    outer = create_group(server, admin, prefix="outer")
    inner = create_group(server, admin, prefix="inner")
    other = create_group(server, admin, prefix="other")
    user, password = create_user(server, admin)
    assert add_member(server, outer["id"], inner["id"], admin).status_code == 204
    assert add_member(server, inner["id"], user["id"], admin).status_code == 204

    tok = token_from(user_credential(server, user["userPrincipalName"], password), server.vault_scope)
    claims = jwt_claims(tok)
    assert claims["aud"] == server.vault_resource
    assert claims["idtyp"] == "user"
    assert claims["upn"].lower() == user["userPrincipalName"].lower()
    assert claims["oid"] == user["id"]
    assert claims["tid"] == server.tenant_id
    assert claims.get("azp") == AZURE_CLI_CLIENT_ID, claims  # a v2.0 token names its client in azp
    assert sorted(claims.get("groups", [])) == sorted([outer["id"], inner["id"]])
    assert other["id"] not in claims.get("groups", [])
    assert claims["exp"] > time.time() + 600


def test_user_without_groups_has_no_group_ids(server, admin):
    user, password = create_user(server, admin)
    claims = jwt_claims(token_from(user_credential(server, user["userPrincipalName"], password), server.vault_scope))
    assert claims["oid"] == user["id"]
    assert claims.get("groups", []) == []


def test_groups_claim_follows_membership_changes(server, admin):
    group = create_group(server, admin)
    user, password = create_user(server, admin)
    assert add_member(server, group["id"], user["id"], admin).status_code == 204
    r = request_password_token(server, user["userPrincipalName"], password)
    assert r.status_code == 200, r.text
    assert jwt_claims(r.json()["access_token"]).get("groups") == [group["id"]]

    graph_ok(server, "DELETE", f"/groups/{group['id']}/members/{user['id']}/$ref", admin, status=204)
    r = request_password_token(server, user["userPrincipalName"], password)
    assert r.status_code == 200, r.text
    assert jwt_claims(r.json()["access_token"]).get("groups", []) == []


def test_user_token_is_accepted_by_the_vault_but_not_authorized(server, admin):
    user, password = create_user(server, admin)
    tok = token_from(user_credential(server, user["userPrincipalName"], password), server.vault_scope)
    assert_vault_forbids(server, tok)

    cred = user_credential(server, user["userPrincipalName"], password)
    try:
        assert_sdk_forbidden(server, cred)
    finally:
        cred.close()


def test_wrong_password_is_invalid_grant(server, admin):
    user, password = create_user(server, admin)
    cred = user_credential(server, user["userPrincipalName"], "wrong-" + password)
    try:
        with pytest.raises(ClientAuthenticationError):
            cred.get_token(server.vault_scope)
    finally:
        cred.close()
    assert_oauth_error(request_password_token(server, user["userPrincipalName"], "wrong-" + password),
                       400, "invalid_grant", 50126)
    # The right password still works.
    assert request_password_token(server, user["userPrincipalName"], password).status_code == 200


def test_unknown_user_is_invalid_grant(server):
    r = request_password_token(server, f"{unique('nobody')}@keyhaven.localhost", new_password())
    assert_oauth_error(r, 400, "invalid_grant")


def test_deleted_user_cannot_sign_in(server, admin):
    user, password = create_user(server, admin)
    assert request_password_token(server, user["userPrincipalName"], password).status_code == 200
    graph_ok(server, "DELETE", f"/users/{user['id']}", admin, status=204)
    assert_oauth_error(request_password_token(server, user["userPrincipalName"], password), 400, "invalid_grant")


def test_changed_password_replaces_the_old_one(server, admin):
    user, old = create_user(server, admin)
    new = new_password()
    graph_ok(server, "PATCH", f"/users/{user['id']}", admin,
             json={"passwordProfile": {"password": new, "forceChangePasswordNextSignIn": False}}, status=204)
    assert_oauth_error(request_password_token(server, user["userPrincipalName"], old), 400, "invalid_grant", 50126)
    r = request_password_token(server, user["userPrincipalName"], new)
    assert r.status_code == 200, r.text
    assert jwt_claims(r.json()["access_token"])["oid"] == user["id"]


def test_disabled_user_gets_no_new_tokens(server, admin):
    user, password = create_user(server, admin)
    cred = user_credential(server, user["userPrincipalName"], password)
    try:
        assert jwt_claims(cred.get_token(server.vault_scope).token)["oid"] == user["id"]

        graph_ok(server, "PATCH", f"/users/{user['id']}", admin, json={"accountEnabled": False}, status=204)
        # A scope this credential holds no token for forces a new token request.
        with pytest.raises(ClientAuthenticationError):
            cred.get_token(graph_scope(server))
    finally:
        cred.close()
    assert_oauth_error(request_password_token(server, user["userPrincipalName"], password), 400, "invalid_grant", 50057)

    graph_ok(server, "PATCH", f"/users/{user['id']}", admin, json={"accountEnabled": True}, status=204)
    assert request_password_token(server, user["userPrincipalName"], password).status_code == 200


def refresh(server, refresh_token, scope):
    """The refresh grant as msal sends it for a public client."""
    return requests.post(
        server.token_url(),
        data={"client_id": AZURE_CLI_CLIENT_ID, "grant_type": "refresh_token", "client_info": "1",
              "refresh_token": refresh_token, "scope": " ".join(sorted({scope, "offline_access", "openid", "profile"}))},
        verify=server.ca_cert, timeout=HTTP_TIMEOUT,
    )


@pytest.mark.parametrize("change", ["disable", "delete", "new-password"])
def test_refresh_token_stops_working_when_the_user_changes(server, admin, change):
    """msal redeems a refresh token before it repeats the password grant, so a
    refresh token must not outlive the user's right to sign in."""
    user, password = create_user(server, admin)
    r = request_password_token(server, user["userPrincipalName"], password)
    assert r.status_code == 200, r.text
    rt = r.json().get("refresh_token")
    if not rt:
        pytest.skip("no refresh token issued")
    r = refresh(server, rt, graph_scope(server))
    assert r.status_code == 200, f"refresh of a fresh refresh token: {r.status_code} {r.text[:300]}"
    claims = jwt_claims(r.json()["access_token"])
    assert (claims["aud"], claims["oid"]) == (graph_resource(server), user["id"])

    if change == "disable":
        graph_ok(server, "PATCH", f"/users/{user['id']}", admin, json={"accountEnabled": False}, status=204)
    elif change == "delete":
        graph_ok(server, "DELETE", f"/users/{user['id']}", admin, status=204)
    else:
        graph_ok(server, "PATCH", f"/users/{user['id']}", admin,
                 json={"passwordProfile": {"password": new_password(), "forceChangePasswordNextSignIn": False}},
                 status=204)
    assert_oauth_error(refresh(server, rt, server.vault_scope), 400, "invalid_grant")


def test_user_created_disabled_cannot_sign_in(server, admin):
    user, password = create_user(server, admin, enabled=False)
    assert user["accountEnabled"] is False
    assert_oauth_error(request_password_token(server, user["userPrincipalName"], password), 400, "invalid_grant", 50057)


# ---------------------------------------------------------------------------
# applications: client secrets
# ---------------------------------------------------------------------------

def test_client_secret_of_a_new_app(server, admin):
    app, sp, secret = new_app_with_secret(server)
    tok = token_from(app_secret_credential(server, app["appId"], secret), server.vault_scope)
    assert_app_claims(jwt_claims(tok), server, app, sp, server.vault_resource)
    assert_vault_forbids(server, tok)

    cred = app_secret_credential(server, app["appId"], secret)
    try:
        assert_sdk_forbidden(server, cred)
    finally:
        cred.close()


def test_app_without_service_principal_gets_no_token(server, admin):
    app, _, secret = new_app_with_secret(server, with_sp=False)
    r = server.request_token(server.vault_scope, client_id=app["appId"], client_secret=secret)
    assert_oauth_error(r, (400, 401), ("unauthorized_client", "invalid_client"))
    cred = app_secret_credential(server, app["appId"], secret)
    try:
        with pytest.raises(ClientAuthenticationError):
            cred.get_token(server.vault_scope)
    finally:
        cred.close()

    sp = create_service_principal(server, app["appId"], admin)
    r = server.request_token(server.vault_scope, client_id=app["appId"], client_secret=secret)
    assert r.status_code == 200, r.text
    assert jwt_claims(r.json()["access_token"])["oid"] == sp["id"]


def test_removed_password_is_invalid_client(server, admin):
    app, sp, _ = new_app_with_secret(server)
    first = add_password(server, app["id"], admin, display_name="first")
    second = add_password(server, app["id"], admin, display_name="second")
    for cred in (first, second):
        r = server.request_token(server.vault_scope, client_id=app["appId"], client_secret=cred["secretText"])
        assert r.status_code == 200, r.text

    graph_ok(server, "POST", f"/applications/{app['id']}/removePassword", admin,
             json={"keyId": first["keyId"]}, status=204)
    r = server.request_token(server.vault_scope, client_id=app["appId"], client_secret=first["secretText"])
    assert_oauth_error(r, 401, "invalid_client")
    sdk = app_secret_credential(server, app["appId"], first["secretText"])
    try:
        with pytest.raises(ClientAuthenticationError):
            sdk.get_token(server.vault_scope)
    finally:
        sdk.close()

    # The other password is unaffected.
    r = server.request_token(server.vault_scope, client_id=app["appId"], client_secret=second["secretText"])
    assert r.status_code == 200, r.text
    assert jwt_claims(r.json()["access_token"])["oid"] == sp["id"]


def test_expired_password_is_invalid_client(server, admin):
    app = create_application(server, admin)
    create_service_principal(server, app["appId"], admin)
    expired = add_password(server, app["id"], admin, end="2020-01-01T00:00:00Z")
    r = server.request_token(server.vault_scope, client_id=app["appId"], client_secret=expired["secretText"])
    assert_oauth_error(r, 401, "invalid_client", 7000222)

    valid = add_password(server, app["id"], admin)
    r = server.request_token(server.vault_scope, client_id=app["appId"], client_secret=valid["secretText"])
    assert r.status_code == 200, r.text


def test_deleted_application_is_invalid_client(server, admin, tmp_path):
    app, _, secret = new_app_with_secret(server)
    cert = self_signed_certificate()
    graph_ok(server, "PATCH", f"/applications/{app['id']}", admin,
             json={"keyCredentials": [key_credential(cert)]}, status=204)
    assert server.request_token(server.vault_scope, client_id=app["appId"], client_secret=secret).status_code == 200
    assertion = client_assertion(cert, app["appId"], server.token_url())
    assert request_assertion_token(server, app["appId"], assertion).status_code == 200

    graph_ok(server, "DELETE", f"/applications/{app['id']}", admin, status=204)
    r = server.request_token(server.vault_scope, client_id=app["appId"], client_secret=secret)
    assert_oauth_error(r, (400, 401), "invalid_client")
    r = request_assertion_token(server, app["appId"], client_assertion(cert, app["appId"], server.token_url()))
    assert_oauth_error(r, (400, 401), "invalid_client")
    cred = certificate_credential(server, app["appId"], cert.write(tmp_path))
    try:
        with pytest.raises(ClientAuthenticationError):
            cred.get_token(server.vault_scope)
    finally:
        cred.close()


# ---------------------------------------------------------------------------
# applications: certificates
# ---------------------------------------------------------------------------

def test_certificate_credential_of_a_new_app(server, admin, tmp_path):
    app, sp, cert = app_with_certificate(server, admin)
    path = cert.write(tmp_path)

    cred = certificate_credential(server, app["appId"], path)
    try:
        vault_tok = cred.get_token(server.vault_scope).token
        # msal reuses its client assertion (same jti) for up to ~9 minutes:
        # a second token request right away must be accepted.
        graph_tok = cred.get_token(graph_scope(server)).token
    finally:
        cred.close()
    assert_app_claims(jwt_claims(vault_tok), server, app, sp, server.vault_resource)
    assert_app_claims(jwt_claims(graph_tok), server, app, sp, graph_resource(server))
    assert graph(server, "GET", f"/servicePrincipals/{sp['id']}", graph_tok).status_code == 200
    assert_vault_forbids(server, vault_tok)

    cred = certificate_credential(server, app["appId"], path)
    try:
        assert_sdk_forbidden(server, cred)
    finally:
        cred.close()


def test_certificate_credential_sending_its_chain(server, admin, tmp_path):
    """send_certificate_chain=True adds an x5c header; the x5t lookup still applies."""
    app, sp, cert = app_with_certificate(server, admin)
    tok = token_from(certificate_credential(server, app["appId"], cert.write(tmp_path), send_certificate_chain=True),
                     server.vault_scope)
    assert_app_claims(jwt_claims(tok), server, app, sp, server.vault_resource)


def test_raw_client_assertion(server, admin):
    app, sp, cert = app_with_certificate(server, admin)
    r = request_assertion_token(server, app["appId"], client_assertion(cert, app["appId"], server.token_url()))
    assert r.status_code == 200, f"{r.status_code}: {r.text[:500]}"
    body = r.json()
    assert body.get("token_type", "").lower() == "bearer" and int(body["expires_in"]) > 600
    assert_app_claims(jwt_claims(body["access_token"]), server, app, sp, server.vault_resource)


def test_unregistered_certificate_is_invalid_client(server, admin, tmp_path):
    app, _, _ = app_with_certificate(server, admin)
    stranger = self_signed_certificate()
    cred = certificate_credential(server, app["appId"], stranger.write(tmp_path))
    try:
        with pytest.raises(ClientAuthenticationError):
            cred.get_token(server.vault_scope)
    finally:
        cred.close()
    r = request_assertion_token(server, app["appId"], client_assertion(stranger, app["appId"], server.token_url()))
    assert_oauth_error(r, 401, "invalid_client", 700027)


def test_app_without_certificates_refuses_assertions(server, admin):
    app = create_application(server, admin)
    create_service_principal(server, app["appId"], admin)
    cert = self_signed_certificate()
    r = request_assertion_token(server, app["appId"], client_assertion(cert, app["appId"], server.token_url()))
    assert_oauth_error(r, 401, "invalid_client", 700027)


def test_assertion_signed_by_another_key_is_refused(server, admin):
    """The registered certificate's thumbprint in the header, but another key's signature."""
    app, _, cert = app_with_certificate(server, admin)
    forger = self_signed_certificate()
    r = request_assertion_token(
        server, app["appId"], client_assertion(forger, app["appId"], server.token_url(), thumbprint_of=cert))
    assert_oauth_error(r, 401, "invalid_client")


def test_replaced_certificate_stops_working(server, admin):
    app, sp, old = app_with_certificate(server, admin)
    new = self_signed_certificate()
    graph_ok(server, "PATCH", f"/applications/{app['id']}", admin,
             json={"keyCredentials": [key_credential(new)]}, status=204)
    r = request_assertion_token(server, app["appId"], client_assertion(old, app["appId"], server.token_url()))
    assert_oauth_error(r, 401, "invalid_client", 700027)
    r = request_assertion_token(server, app["appId"], client_assertion(new, app["appId"], server.token_url()))
    assert r.status_code == 200, r.text
    assert jwt_claims(r.json()["access_token"])["oid"] == sp["id"]


@pytest.mark.parametrize("case", ["wrong-audience", "expired", "not-yet-valid", "other-issuer", "alg-none"])
def test_bad_client_assertions_are_refused(server, admin, case):
    app, _, cert = app_with_certificate(server, admin)
    other = create_application(server, admin)["appId"]
    if case == "wrong-audience":
        assertion = client_assertion(cert, app["appId"], f"{server.authority_host}/{uuid.uuid4()}/oauth2/v2.0/token")
    elif case == "expired":
        assertion = client_assertion(cert, app["appId"], server.token_url(), issued_offset=-7200, lifetime=600)
    elif case == "not-yet-valid":
        assertion = client_assertion(cert, app["appId"], server.token_url(), issued_offset=7200)
    elif case == "other-issuer":
        assertion = client_assertion(cert, app["appId"], server.token_url(), extra={"iss": other, "sub": other})
    else:
        signed = client_assertion(cert, app["appId"], server.token_url())
        header, _, _, _ = jwt_parts(signed)
        header["alg"] = "none"
        h = b64url(json.dumps(header, separators=(",", ":")).encode())
        assertion = f"{h}.{signed.split('.')[1]}."
    r = request_assertion_token(server, app["appId"], assertion)
    assert_oauth_error(r, (400, 401), "invalid_client")


# ---------------------------------------------------------------------------
# the tokens themselves
# ---------------------------------------------------------------------------

def test_new_principals_tokens_verify_against_jwks(server, admin, tmp_path):
    disc = requests.get(f"{server.authority_host}/{server.tenant_id}/v2.0/.well-known/openid-configuration",
                        verify=server.ca_cert, timeout=HTTP_TIMEOUT).json()
    jwks = requests.get(disc["jwks_uri"], verify=server.ca_cert, timeout=HTTP_TIMEOUT).json()

    user, password = create_user(server, admin)
    secret_app, _, secret = new_app_with_secret(server)
    cert_app, _, cert = app_with_certificate(server, admin)
    ropc = request_password_token(server, user["userPrincipalName"], password)
    assert ropc.status_code == 200, ropc.text
    tokens = {
        "user": token_from(user_credential(server, user["userPrincipalName"], password), server.vault_scope),
        "user-id-token": ropc.json()["id_token"],
        "secret": token_from(app_secret_credential(server, secret_app["appId"], secret), server.vault_scope),
        "certificate": token_from(certificate_credential(server, cert_app["appId"], cert.write(tmp_path)),
                                  server.vault_scope),
    }
    for kind, tok in tokens.items():
        header, payload, signature, signing_input = jwt_parts(tok)
        assert header.get("alg") == "RS256", (kind, header)
        keys = [k for k in jwks["keys"] if k.get("kid") == header.get("kid")]
        assert len(keys) == 1, (kind, header, [k.get("kid") for k in jwks["keys"]])
        n = int.from_bytes(b64url_decode(keys[0]["n"]), "big")
        e = int.from_bytes(b64url_decode(keys[0]["e"]), "big")
        try:
            RSAPublicNumbers(e, n).public_key().verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            pytest.fail(f"{kind} token does not verify against the JWKS key")
        assert payload["iss"] == disc["issuer"], (kind, payload)
        assert payload["tid"] == server.tenant_id, (kind, payload)
        assert payload["exp"] > time.time() + 600, (kind, payload)


def test_azpacr_tells_how_the_client_authenticated(server, admin, tmp_path):
    """Entra's azpacr: 0 public client, 1 client secret, 2 certificate."""
    user, password = create_user(server, admin)
    secret_app, _, secret = new_app_with_secret(server)
    cert_app, _, cert = app_with_certificate(server, admin)
    r = request_password_token(server, user["userPrincipalName"], password)
    assert r.status_code == 200, r.text
    assert jwt_claims(r.json()["access_token"]).get("azpacr") == "0"
    r = server.request_token(server.vault_scope, client_id=secret_app["appId"], client_secret=secret)
    assert r.status_code == 200, r.text
    assert jwt_claims(r.json()["access_token"]).get("azpacr") == "1"
    r = request_assertion_token(server, cert_app["appId"], client_assertion(cert, cert_app["appId"], server.token_url()))
    assert r.status_code == 200, r.text
    assert jwt_claims(r.json()["access_token"]).get("azpacr") == "2"
