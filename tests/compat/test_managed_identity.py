"""Managed identities: user-assigned identities and workloads on the
management plane (an ARM subset), and the IMDS listener that hands a
workload's identities to callers from the workload's registered addresses,
in the Azure VM form (/metadata/identity/oauth2/token) and the App Service
form (/msi/token), as azure-identity's ManagedIdentityCredential calls them.

Caller addresses: the IMDS listener identifies the "machine" by the TCP source
address. The module's server has one workload registered at 127.0.0.1 (what
the SDK, running in this process, connects from); raw requests choose other
loopback source addresses (127.0.x.y, all local on Linux) to act as other or
unregistered machines. test_network_namespace_caller uses a real network
namespace behind a veth pair.

What the SDK does (azure-identity 1.27.0 / msal 1.39.0): ManagedIdentityCredential
picks the source from the environment when it is constructed
(_credentials/managed_identity.py:82-145) and delegates to msal's
ManagedIdentityClient (_internal/msal_managed_identity_client.py:32,55). msal
sends GET {AZURE_POD_IDENTITY_AUTHORITY_HOST or http://169.254.169.254}/metadata/identity/oauth2/token
?api-version=2018-02-01&resource=R[&client_id|object_id|msi_res_id] with
"Metadata: true" and reads only access_token and expires_in (int() of a
string is fine) (msal managed_identity.py:482-514); any other JSON becomes a
CredentialUnavailableError (msal_managed_identity_client.py:65-69). The App
Service form is GET $IDENTITY_ENDPOINT?api-version=2019-08-01&resource=R
[&client_id|mi_res_id|object_id] with X-IDENTITY-HEADER and Metadata, reading
access_token and expires_on (managed_identity.py:516-563) — note msal sends
`object_id` there, not App Service's documented `principal_id`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
import uuid
from typing import NamedTuple

import pytest
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

from khcompat import (
    CLIENT_KWARGS,
    ARM_KEYHAVEN_API_VERSION,
    UAMI_TYPE,
    WORKLOAD_TYPE,
    KeyhavenServer,
    app_service_token,
    arm,
    assert_arm_error,
    clear_identity_env,
    create_uami,
    free_port,
    http_get,
    graph_resource,
    imds_token,
    is_guid,
    jwt_claims,
    management_resource,
    management_token,
    module_server,
    new_app_with_secret,
    put_uami,
    put_workload,
    running_server,
    trust_server_ca,
    uami_id,
    unique,
    workload_id,
)


class ImdsServer(KeyhavenServer):
    """A private server with its IMDS listener on `imds_listen` (host:port)."""

    def __init__(self, *args, imds_listen=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.imds_listen = imds_listen or f"127.0.0.1:{free_port()}"

    def command(self):
        return super().command() + ["--imds-listen", self.imds_listen]

    @property
    def imds_endpoint(self) -> str:
        return f"http://{self.imds_listen}"


class Vm(NamedTuple):
    """The module's workload at 127.0.0.1 with a system-assigned identity and
    one user-assigned identity (`uami`); `spare` is a UAMI attached to nothing."""
    workload: dict
    uami: dict
    spare: dict


IDENTITY_NOT_FOUND = {"error": "invalid_request", "error_description": "Identity not found"}
METADATA_REQUIRED = {"error": "invalid_request", "error_description": "Required metadata header not specified"}
IMDS_FIELDS = ("access_token", "client_id", "expires_in", "expires_on", "ext_expires_in", "not_before",
               "resource", "token_type")

_addresses = itertools.count(2)


def fresh_address() -> str:
    """A loopback address no other test of this module uses: 127.0.x.y."""
    n = next(_addresses)
    assert n < 250 * 250, "out of loopback addresses"
    return f"127.0.{n // 250}.{n % 250 + 2}"


@pytest.fixture(scope="module")
def mi_server(store_kind, tmp_path_factory):
    with module_server(ImdsServer, store_kind, tmp_path_factory.mktemp(f"mi-{store_kind}")) as srv:
        yield srv


@pytest.fixture
def server(mi_server):
    """This module's private server (shadows conftest's shared `server`)."""
    return mi_server


@pytest.fixture(scope="module")
def vm(mi_server) -> Vm:
    uami = create_uami(mi_server)
    spare = create_uami(mi_server)
    r = put_workload(mi_server, unique("vm"), ["127.0.0.1"], user_assigned=[uami["id"]])
    assert r.status_code == 201, f"workload: {r.status_code} {r.text[:500]}"
    return Vm(r.json(), uami, spare)


@pytest.fixture
def sdk_env(monkeypatch, mi_server):
    """A clean identity environment; the CA env vars point at this server."""
    clear_identity_env(monkeypatch)
    trust_server_ca(monkeypatch, mi_server)
    return monkeypatch


def system_principal(workload: dict) -> str:
    return workload["identity"]["principalId"]


def attached(workload: dict, uami: dict) -> dict:
    """The workload's view of one of its user-assigned identities."""
    entries = {k.lower(): v for k, v in workload["identity"]["userAssignedIdentities"].items()}
    return entries[uami["id"].lower()]


def assert_mi_claims(claims, server, *, principal_id, client_id, mirid, audience):
    assert claims["aud"] == audience, claims
    assert claims["tid"] == server.tenant_id, claims
    assert claims["oid"] == principal_id, claims
    assert claims["sub"] == principal_id, claims
    assert claims["appid"] == client_id, claims
    assert claims["azp"] == client_id, claims
    assert claims["idtyp"] == "app", claims
    assert claims["xms_mirid"] == mirid, claims
    assert "upn" not in claims, claims
    assert claims["exp"] > time.time() + 600, claims


def assert_imds_token_body(resp, resource) -> dict:
    assert resp.status == 200, f"IMDS: {resp.status} {resp.text[:500]}"
    assert resp.headers.get("content-type", "").startswith("application/json"), resp.headers
    body = resp.json()
    missing = [f for f in IMDS_FIELDS if f not in body]
    assert not missing, f"IMDS response lacks {missing}: {sorted(body)}"
    assert body["token_type"] == "Bearer", body
    assert body["resource"] == resource, body
    for f in ("expires_in", "expires_on", "ext_expires_in", "not_before"):
        assert isinstance(body[f], str) and body[f].isdigit(), (f, body[f])  # IMDS prints numbers as strings
    now = time.time()
    assert int(body["expires_in"]) > 600, body
    assert abs(int(body["expires_on"]) - (now + int(body["expires_in"]))) < 120, body
    assert int(body["not_before"]) <= now + 120, body
    assert is_guid(body["client_id"]), body
    assert jwt_claims(body["access_token"])["appid"] == body["client_id"], body
    return body


def assert_identity_not_found(resp):
    assert resp.status == 400, f"expected 400 Identity not found, got {resp.status}: {resp.text[:500]}"
    body = resp.json()
    assert "access_token" not in body, body
    assert {k: body.get(k) for k in IDENTITY_NOT_FOUND} == IDENTITY_NOT_FOUND, body


def assert_vault_forbids(server, token):
    """Authenticated but not authorized (no RBAC yet): 403, never 401."""
    r = server.vault_request("GET", "/secrets", token=token, api_version="7.5")
    assert r.status_code == 403, f"expected 403 (authenticated, not authorized), got {r.status_code}: {r.text[:300]}"


def assert_sdk_forbidden(server, credential):
    """SecretClient: challenge -> scope {vault resource}/.default -> the MI
    resource is the vault resource; the vault then answers 403."""
    client = server.secret_client(credential)
    try:
        with pytest.raises(HttpResponseError) as info:
            list(client.list_properties_of_secrets())
        assert not isinstance(info.value, ClientAuthenticationError), info.value
        assert info.value.status_code == 403, info.value
    finally:
        client.close()


def mi_credential(**kwargs):
    from azure.identity import ManagedIdentityCredential

    kw = dict(CLIENT_KWARGS)
    kw.update(kwargs)
    return ManagedIdentityCredential(**kw)


def token_from(credential, scope) -> str:
    try:
        return credential.get_token(scope).token
    finally:
        credential.close()


# ---------------------------------------------------------------------------
# management plane
# ---------------------------------------------------------------------------

def assert_uami(body, server, name):
    assert body["id"] == uami_id(server, name), body
    assert body["name"] == name, body
    assert body["type"] == UAMI_TYPE, body
    assert body["location"] == "local", body
    assert isinstance(body.get("tags"), dict), body
    props = body["properties"]
    assert props["tenantId"] == server.tenant_id, body
    assert is_guid(props["principalId"]) and is_guid(props["clientId"]), body
    assert props["principalId"] != props["clientId"], body


def test_user_assigned_identity_lifecycle(server):
    admin = management_token(server)
    name = unique("uami")
    path = uami_id(server, name)

    r = put_uami(server, name, admin)
    assert r.status_code == 201, f"{r.status_code}: {r.text[:500]}"
    created = r.json()
    assert_uami(created, server, name)
    assert created["tags"] == {}

    r = put_uami(server, name, admin, tags={"team": "payments"})
    assert r.status_code == 200, f"update: {r.status_code}: {r.text[:500]}"
    updated = r.json()
    assert_uami(updated, server, name)
    assert updated["tags"] == {"team": "payments"}
    assert updated["properties"] == created["properties"], "an update must keep the identity"

    r = arm(server, "GET", path, admin)
    assert r.status_code == 200, r.text
    assert r.json() == updated

    other = put_uami(server, unique("uami"), admin)
    assert other.status_code == 201, other.text
    assert other.json()["properties"]["principalId"] != created["properties"]["principalId"]
    assert other.json()["properties"]["clientId"] != created["properties"]["clientId"]

    assert arm(server, "DELETE", path, admin).status_code == 200
    assert_arm_error(arm(server, "GET", path, admin), 404, "ResourceNotFound")
    assert arm(server, "DELETE", path, admin).status_code == 204


def test_workload_lifecycle(server):
    admin = management_token(server)
    uami = create_uami(server, admin)
    name = unique("wl")
    path = workload_id(server, name)
    addr = fresh_address()

    r = put_workload(server, name, [addr], admin, user_assigned=[uami["id"]])
    assert r.status_code == 201, f"{r.status_code}: {r.text[:500]}"
    wl = r.json()
    assert wl["id"] == path, wl
    assert wl["name"] == name and wl["type"] == WORKLOAD_TYPE and wl["location"] == "local", wl
    assert wl["properties"]["addresses"] == [addr], wl
    ident = wl["identity"]
    assert ident["type"] == "SystemAssigned, UserAssigned", ident
    assert is_guid(ident["principalId"]), ident
    assert ident["tenantId"] == server.tenant_id, ident
    assert ident["principalId"] not in (uami["properties"]["principalId"], uami["properties"]["clientId"])
    assert len(ident["userAssignedIdentities"]) == 1, ident
    assert attached(wl, uami) == {"principalId": uami["properties"]["principalId"],
                                  "clientId": uami["properties"]["clientId"]}, ident

    r = arm(server, "GET", path, admin, api_version=ARM_KEYHAVEN_API_VERSION)
    assert r.status_code == 200, r.text
    assert r.json() == wl

    # New addresses; the system-assigned identity stays the same.
    addr2 = fresh_address()
    r = put_workload(server, name, [addr2, fresh_address()], admin, user_assigned=[uami["id"]])
    assert r.status_code == 200, f"update: {r.status_code}: {r.text[:500]}"
    assert r.json()["properties"]["addresses"][0] == addr2
    assert r.json()["identity"]["principalId"] == ident["principalId"]

    # User-assigned only: no system principal.
    r = put_workload(server, name, [addr2], admin, system_assigned=False, user_assigned=[uami["id"]])
    assert r.status_code == 200, r.text
    assert r.json()["identity"]["type"] == "UserAssigned", r.json()
    assert "principalId" not in r.json()["identity"], r.json()
    assert attached(r.json(), uami)["clientId"] == uami["properties"]["clientId"]

    assert arm(server, "DELETE", path, admin, api_version=ARM_KEYHAVEN_API_VERSION).status_code == 200
    assert_arm_error(arm(server, "GET", path, admin, api_version=ARM_KEYHAVEN_API_VERSION), 404, "ResourceNotFound")
    assert arm(server, "DELETE", path, admin, api_version=ARM_KEYHAVEN_API_VERSION).status_code == 204


def test_only_admins_change_identity_resources(server, vm):
    app, _, secret = new_app_with_secret(server, prefix="notadmin")
    user_tok = management_token(server, app["appId"], secret)
    admin = management_token(server)

    assert_arm_error(put_uami(server, unique("uami"), user_tok), 403, "AuthorizationFailed")
    name = unique("wl")
    assert_arm_error(put_workload(server, name, [fresh_address()], user_tok), 403, "AuthorizationFailed")
    assert_arm_error(arm(server, "GET", workload_id(server, name), admin, api_version=ARM_KEYHAVEN_API_VERSION),
                     404, "ResourceNotFound")

    # Nobody but an admin re-points the module's workload or deletes its identities.
    assert_arm_error(put_workload(server, vm.workload["name"], [fresh_address()], user_tok), 403, "AuthorizationFailed")
    assert_arm_error(arm(server, "DELETE", vm.workload["id"], user_tok, api_version=ARM_KEYHAVEN_API_VERSION),
                     403, "AuthorizationFailed")
    assert_arm_error(arm(server, "DELETE", vm.uami["id"], user_tok), 403, "AuthorizationFailed")
    r = arm(server, "GET", vm.workload["id"], admin, api_version=ARM_KEYHAVEN_API_VERSION)
    assert r.status_code == 200 and r.json()["properties"]["addresses"] == ["127.0.0.1"], r.text
    assert arm(server, "GET", vm.uami["id"], admin).status_code == 200

    # Without a token nothing is created either.
    anon = unique("uami")
    r = arm(server, "PUT", uami_id(server, anon), None, json={"location": "local", "tags": {}})
    assert r.status_code in (401, 403), f"anonymous PUT: {r.status_code} {r.text[:300]}"
    assert_arm_error(arm(server, "GET", uami_id(server, anon), admin), 404, "ResourceNotFound")


def test_unknown_subscription_is_refused(server):
    """Only bootstrap.json's subscription exists."""
    admin = management_token(server)
    path = uami_id(server, unique("uami")).replace(server.subscription_id, str(uuid.uuid4()))
    r = arm(server, "PUT", path, admin, json={"location": "local", "tags": {}})
    assert 400 <= r.status_code < 500, f"PUT in an unknown subscription: {r.status_code} {r.text[:300]}"
    assert isinstance(r.json().get("error"), dict), r.text
    assert arm(server, "GET", path, admin).status_code in (403, 404)


# ---------------------------------------------------------------------------
# IMDS, raw
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["vault", "management", "graph"])
def test_imds_system_assigned_token(server, vm, which):
    resource = {"vault": server.vault_resource, "management": management_resource(server),
                "graph": graph_resource(server)}[which]
    body = assert_imds_token_body(imds_token(server.imds_listen, resource), resource)
    assert_mi_claims(jwt_claims(body["access_token"]), server, principal_id=system_principal(vm.workload),
                     client_id=body["client_id"], mirid=vm.workload["id"], audience=resource)
    assert body["client_id"] != vm.uami["properties"]["clientId"]
    if which == "vault":
        assert_vault_forbids(server, body["access_token"])


@pytest.mark.parametrize("selector", ["client_id", "object_id", "msi_res_id"])
def test_imds_user_assigned_token(server, vm, selector):
    props = vm.uami["properties"]
    value = {"client_id": props["clientId"], "object_id": props["principalId"], "msi_res_id": vm.uami["id"]}[selector]
    resource = server.vault_resource
    body = assert_imds_token_body(imds_token(server.imds_listen, resource, **{selector: value}), resource)
    assert body["client_id"] == props["clientId"], body
    assert_mi_claims(jwt_claims(body["access_token"]), server, principal_id=props["principalId"],
                     client_id=props["clientId"], mirid=vm.uami["id"], audience=resource)
    assert_vault_forbids(server, body["access_token"])


@pytest.mark.parametrize("metadata", [None, "false"], ids=["missing", "false"])
def test_imds_requires_the_metadata_header(server, vm, metadata):
    r = imds_token(server.imds_listen, server.vault_resource, metadata=metadata)
    assert r.status == 400, f"{r.status}: {r.text[:300]}"
    body = r.json()
    assert "access_token" not in body, body
    assert {k: body.get(k) for k in METADATA_REQUIRED} == METADATA_REQUIRED, body


@pytest.mark.parametrize("case", ["unregistered-caller", "unattached-client-id", "unknown-object-id",
                                  "unattached-msi-res-id", "no-system-assigned"])
def test_imds_identity_not_found(server, vm, case):
    resource = server.vault_resource
    if case == "unregistered-caller":
        r = imds_token(server.imds_listen, resource, source=fresh_address())
    elif case == "unattached-client-id":
        r = imds_token(server.imds_listen, resource, client_id=vm.spare["properties"]["clientId"])
    elif case == "unknown-object-id":
        r = imds_token(server.imds_listen, resource, object_id=str(uuid.uuid4()))
    elif case == "unattached-msi-res-id":
        r = imds_token(server.imds_listen, resource, msi_res_id=vm.spare["id"])
    else:
        addr = fresh_address()
        put = put_workload(server, unique("wl"), [addr], system_assigned=False, user_assigned=[vm.uami["id"]])
        assert put.status_code == 201, put.text
        r = imds_token(server.imds_listen, resource, source=addr)
        # ...while the user-assigned one is served to that caller.
        ok = imds_token(server.imds_listen, resource, source=addr, client_id=vm.uami["properties"]["clientId"])
        assert jwt_claims(assert_imds_token_body(ok, resource)["access_token"])["oid"] == \
            vm.uami["properties"]["principalId"]
    assert_identity_not_found(r)


def test_imds_ignores_forwarding_headers(server, vm):
    """Only the TCP source address identifies the caller: an unregistered
    caller claiming to forward for 127.0.0.1 (the module VM) gets nothing."""
    spoof = {"X-Forwarded-For": "127.0.0.1", "X-Real-IP": "127.0.0.1", "Forwarded": "for=127.0.0.1",
             "X-Client-IP": "127.0.0.1", "True-Client-IP": "127.0.0.1"}
    params = {"api-version": "2018-02-01", "resource": server.vault_resource}
    r = http_get(server.imds_listen, "/metadata/identity/oauth2/token", params, {"Metadata": "true", **spoof},
                 source=fresh_address())
    assert_identity_not_found(r)
    r = http_get(server.imds_listen, "/msi/token", {"api-version": "2019-08-01", "resource": server.vault_resource},
                 {"X-IDENTITY-HEADER": "x", **spoof}, source=fresh_address())
    assert r.status == 400 and b"access_token" not in r.body, f"{r.status}: {r.text[:300]}"


def test_imds_requires_a_resource(server, vm):
    r = http_get(server.imds_listen, "/metadata/identity/oauth2/token", {"api-version": "2018-02-01"},
                 {"Metadata": "true"})
    assert r.status == 400, f"{r.status}: {r.text[:300]}"
    assert "access_token" not in r.json(), r.text


def test_imds_unknown_resource(server, vm):
    r = imds_token(server.imds_listen, "https://unknown-resource.example.test")
    assert r.status == 400, f"{r.status}: {r.text[:300]}"
    body = r.json()
    assert body.get("error") == "invalid_resource", body
    assert "access_token" not in body, body


def test_imds_serves_each_workload_its_own_identity(server, vm):
    resource = server.vault_resource
    addr_a, addr_b = fresh_address(), fresh_address()
    wl_a = put_workload(server, unique("wl"), [addr_a])
    wl_b = put_workload(server, unique("wl"), [addr_b])
    assert wl_a.status_code == 201 and wl_b.status_code == 201, (wl_a.text, wl_b.text)
    for addr, wl in ((addr_a, wl_a.json()), (addr_b, wl_b.json())):
        body = assert_imds_token_body(imds_token(server.imds_listen, resource, source=addr), resource)
        assert_mi_claims(jwt_claims(body["access_token"]), server, principal_id=system_principal(wl),
                         client_id=body["client_id"], mirid=wl["id"], audience=resource)
    # B may not use the module VM's user-assigned identity.
    assert_identity_not_found(
        imds_token(server.imds_listen, resource, source=addr_b, client_id=vm.uami["properties"]["clientId"]))


def test_imds_follows_address_changes(server):
    resource = server.vault_resource
    old, new = fresh_address(), fresh_address()
    name = unique("wl")
    r = put_workload(server, name, [old])
    assert r.status_code == 201, r.text
    principal = system_principal(r.json())
    assert jwt_claims(imds_token(server.imds_listen, resource, source=old).json()["access_token"])["oid"] == principal

    r = put_workload(server, name, [new])
    assert r.status_code == 200, r.text
    assert system_principal(r.json()) == principal
    assert_identity_not_found(imds_token(server.imds_listen, resource, source=old))
    body = assert_imds_token_body(imds_token(server.imds_listen, resource, source=new), resource)
    assert jwt_claims(body["access_token"])["oid"] == principal


def test_imds_forgets_deleted_workloads_and_identities(server):
    admin = management_token(server)
    resource = server.vault_resource
    uami = create_uami(server, admin)
    addr = fresh_address()
    name = unique("wl")
    assert put_workload(server, name, [addr], admin, user_assigned=[uami["id"]]).status_code == 201
    cid = uami["properties"]["clientId"]
    assert imds_token(server.imds_listen, resource, source=addr, client_id=cid).status == 200

    # A deleted user-assigned identity is no longer handed out.
    assert arm(server, "DELETE", uami["id"], admin).status_code == 200
    assert_identity_not_found(imds_token(server.imds_listen, resource, source=addr, client_id=cid))
    assert imds_token(server.imds_listen, resource, source=addr).status == 200

    # A deleted workload's address is unregistered.
    assert arm(server, "DELETE", workload_id(server, name), admin, api_version=ARM_KEYHAVEN_API_VERSION).status_code == 200
    assert_identity_not_found(imds_token(server.imds_listen, resource, source=addr))


# ---------------------------------------------------------------------------
# App Service form, raw
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("selector", [None, "client_id", "principal_id", "mi_res_id"])
def test_app_service_endpoint(server, vm, selector):
    resource = server.vault_resource
    props = vm.uami["properties"]
    sel = {} if selector is None else {
        selector: {"client_id": props["clientId"], "principal_id": props["principalId"], "mi_res_id": vm.uami["id"]}[selector]}
    r = app_service_token(server.imds_listen, resource, **sel)
    assert r.status == 200, f"{r.status}: {r.text[:500]}"
    body = r.json()
    for f in ("access_token", "expires_on", "resource", "token_type", "client_id"):
        assert f in body, (f, body)
    assert body["token_type"] == "Bearer" and body["resource"] == resource, body
    assert isinstance(body["expires_on"], str) and body["expires_on"].isdigit(), body
    assert int(body["expires_on"]) > time.time() + 600, body
    claims = jwt_claims(body["access_token"])
    if selector is None:
        assert_mi_claims(claims, server, principal_id=system_principal(vm.workload), client_id=body["client_id"],
                         mirid=vm.workload["id"], audience=resource)
    else:
        assert body["client_id"] == props["clientId"], body
        assert_mi_claims(claims, server, principal_id=props["principalId"], client_id=props["clientId"],
                         mirid=vm.uami["id"], audience=resource)
    assert_vault_forbids(server, body["access_token"])


def test_app_service_endpoint_requires_the_identity_header(server, vm):
    for header in (None, ""):
        r = app_service_token(server.imds_listen, server.vault_resource, identity_header=header)
        assert r.status == 400, f"X-IDENTITY-HEADER={header!r}: {r.status} {r.text[:300]}"
        assert b"access_token" not in r.body


def test_app_service_endpoint_refuses_unregistered_callers(server, vm):
    r = app_service_token(server.imds_listen, server.vault_resource, source=fresh_address())
    assert r.status == 400, f"{r.status}: {r.text[:300]}"
    assert b"access_token" not in r.body


# ---------------------------------------------------------------------------
# azure-identity
# ---------------------------------------------------------------------------

def test_managed_identity_credential_system_assigned(server, vm, sdk_env):
    sdk_env.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", server.imds_endpoint)
    tok = token_from(mi_credential(), server.vault_scope)
    claims = jwt_claims(tok)
    assert_mi_claims(claims, server, principal_id=system_principal(vm.workload), client_id=claims["appid"],
                     mirid=vm.workload["id"], audience=server.vault_resource)
    assert_vault_forbids(server, tok)
    cred = mi_credential()
    try:
        assert_sdk_forbidden(server, cred)
    finally:
        cred.close()


@pytest.mark.parametrize("how", ["client_id", "object_id", "resource_id"])
def test_managed_identity_credential_user_assigned(server, vm, sdk_env, how):
    """resource_id travels as msi_res_id (msal managed_identity.py:52, 475-480)."""
    sdk_env.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", server.imds_endpoint)
    props = vm.uami["properties"]
    kwargs = {"client_id": {"client_id": props["clientId"]},
              "object_id": {"identity_config": {"object_id": props["principalId"]}},
              "resource_id": {"identity_config": {"resource_id": vm.uami["id"]}}}[how]
    tok = token_from(mi_credential(**kwargs), server.vault_scope)
    assert_mi_claims(jwt_claims(tok), server, principal_id=props["principalId"], client_id=props["clientId"],
                     mirid=vm.uami["id"], audience=server.vault_resource)
    cred = mi_credential(**kwargs)
    try:
        assert_sdk_forbidden(server, cred)
    finally:
        cred.close()


def test_managed_identity_credential_for_an_unattached_identity_fails(server, vm, sdk_env):
    sdk_env.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", server.imds_endpoint)
    cred = mi_credential(client_id=vm.spare["properties"]["clientId"])
    try:
        with pytest.raises(ClientAuthenticationError):  # CredentialUnavailableError is a subclass
            cred.get_token(server.vault_scope)
    finally:
        cred.close()


@pytest.mark.parametrize("how", ["system", "client_id", "resource_id"])
def test_app_service_managed_identity_credential(server, vm, sdk_env, how):
    sdk_env.setenv("IDENTITY_ENDPOINT", f"{server.imds_endpoint}/msi/token")
    sdk_env.setenv("IDENTITY_HEADER", "x")
    props = vm.uami["properties"]
    kwargs = {"system": {}, "client_id": {"client_id": props["clientId"]},
              "resource_id": {"identity_config": {"resource_id": vm.uami["id"]}}}[how]
    tok = token_from(mi_credential(**kwargs), server.vault_scope)
    claims = jwt_claims(tok)
    if how == "system":
        assert_mi_claims(claims, server, principal_id=system_principal(vm.workload), client_id=claims["appid"],
                         mirid=vm.workload["id"], audience=server.vault_resource)
    else:
        assert_mi_claims(claims, server, principal_id=props["principalId"], client_id=props["clientId"],
                         mirid=vm.uami["id"], audience=server.vault_resource)
    cred = mi_credential(**kwargs)
    try:
        assert_sdk_forbidden(server, cred)
    finally:
        cred.close()


def test_app_service_managed_identity_credential_by_object_id(server, vm, sdk_env):
    """msal 1.39 sends an object id to App Service as `object_id`
    (managed_identity.py:531-535), not as App Service's `principal_id`."""
    sdk_env.setenv("IDENTITY_ENDPOINT", f"{server.imds_endpoint}/msi/token")
    sdk_env.setenv("IDENTITY_HEADER", "x")
    props = vm.uami["properties"]
    tok = token_from(mi_credential(identity_config={"object_id": props["principalId"]}), server.vault_scope)
    assert_mi_claims(jwt_claims(tok), server, principal_id=props["principalId"], client_id=props["clientId"],
                     mirid=vm.uami["id"], audience=server.vault_resource)


@pytest.mark.parametrize("which", ["system", "user"])
def test_default_azure_credential_uses_the_managed_identity(server, vm, sdk_env, which):
    from azure.identity import DefaultAzureCredential

    sdk_env.setenv("AZURE_TOKEN_CREDENTIALS", "managedidentitycredential")
    sdk_env.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", server.imds_endpoint)
    props = vm.uami["properties"]
    if which == "user":
        sdk_env.setenv("AZURE_CLIENT_ID", props["clientId"])  # DefaultAzureCredential's managed_identity_client_id
    cred = DefaultAzureCredential(**CLIENT_KWARGS)
    try:
        claims = jwt_claims(cred.get_token(server.vault_scope).token)
        if which == "system":
            assert_mi_claims(claims, server, principal_id=system_principal(vm.workload), client_id=claims["appid"],
                             mirid=vm.workload["id"], audience=server.vault_resource)
        else:
            assert_mi_claims(claims, server, principal_id=props["principalId"], client_id=props["clientId"],
                             mirid=vm.uami["id"], audience=server.vault_resource)
        assert_sdk_forbidden(server, cred)
    finally:
        cred.close()


# ---------------------------------------------------------------------------
# a real second machine: a network namespace behind a veth pair
# ---------------------------------------------------------------------------

class NetNs(NamedTuple):
    name: str
    host_ip: str     # the host's end, where the IMDS listener binds
    ns_ip: str       # the namespace's end: the "machine" the workload is registered at
    other_ip: str    # an address of the same /30 that nobody uses


def _run(cmd, what):
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{what}: `{' '.join(cmd)}` timed out")
    if res.returncode != 0:
        pytest.fail(f"{what}: `{' '.join(cmd)}` failed ({res.returncode}): {res.stderr.strip()}")
    return res.stdout


def _free_slash30():
    """A /30 of 198.51.100.0/24 (TEST-NET-2) none of whose addresses this host
    already has or routes (so concurrent runs do not collide)."""
    used = set()
    for cmd in (["ip", "-4", "-o", "addr", "show"], ["ip", "-4", "route", "show", "table", "all"]):
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout
        used.update(int(m) for m in re.findall(r"198\.51\.100\.(\d+)", out))
    bases = list(range(0, 256, 4))
    random.shuffle(bases)
    for base in bases[:64]:
        if not used.intersection(range(base, base + 4)):
            return f"198.51.100.{base + 1}", f"198.51.100.{base + 2}", f"198.51.100.{base + 3}"
    pytest.fail(f"no free /30 in 198.51.100.0/24 (in use: {sorted(used)})")


@contextlib.contextmanager
def veth_namespace():
    if shutil.which("ip") is None:
        pytest.fail("the network-namespace test needs iproute2's `ip`")
    if os.geteuid() != 0:
        pytest.fail("the network-namespace test must run as root (it runs `ip netns add`); run scripts/compat as root")
    tag = uuid.uuid4().hex[:8]
    ns, host_if, ns_if = f"kh-mi-{tag}", f"khh{tag}", f"khn{tag}"
    host_ip, ns_ip, other_ip = _free_slash30()
    res = subprocess.run(["ip", "netns", "add", ns], capture_output=True, text=True, timeout=20)
    if res.returncode != 0:
        pytest.fail(f"`ip netns add {ns}` failed ({res.returncode}): {res.stderr.strip()} — "
                    "this test needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN)")
    try:
        _run(["ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if, "netns", ns], "veth pair")
        _run(["ip", "addr", "add", f"{host_ip}/30", "dev", host_if], "host address")
        _run(["ip", "link", "set", host_if, "up"], "host link up")
        _run(["ip", "-n", ns, "addr", "add", f"{ns_ip}/30", "dev", ns_if], "namespace address")
        _run(["ip", "-n", ns, "link", "set", ns_if, "up"], "namespace link up")
        _run(["ip", "-n", ns, "link", "set", "lo", "up"], "namespace loopback up")
        yield NetNs(ns, host_ip, ns_ip, other_ip)
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, timeout=20)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)


# Runs inside the namespace: one raw IMDS request, then ManagedIdentityCredential.
NS_PROBE = r"""
import json, sys, urllib.error, urllib.parse, urllib.request
endpoint, resource = sys.argv[1], sys.argv[2]
out = {}
url = endpoint + "/metadata/identity/oauth2/token?" + urllib.parse.urlencode(
    {"api-version": "2018-02-01", "resource": resource})
try:
    with urllib.request.urlopen(urllib.request.Request(url, headers={"Metadata": "true"}), timeout=10) as r:
        out["raw"] = {"status": r.status, "body": json.loads(r.read())}
except urllib.error.HTTPError as e:
    out["raw"] = {"status": e.code, "body": e.read().decode(errors="replace")}
except Exception as e:
    out["raw"] = {"status": None, "body": repr(e)}
from azure.identity import ManagedIdentityCredential
cred = ManagedIdentityCredential(connection_timeout=5, read_timeout=10, retry_total=0)
try:
    out["sdk"] = {"token": cred.get_token(resource + "/.default").token}
except Exception as e:
    out["sdk"] = {"classes": [c.__name__ for c in type(e).__mro__], "message": str(e)[:800]}
finally:
    cred.close()
print(json.dumps(out))
"""


def probe_from_namespace(netns: NetNs, imds_endpoint: str, resource: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy")}
    for var in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER", "IDENTITY_SERVER_THUMBPRINT", "IMDS_ENDPOINT", "MSI_ENDPOINT",
                "MSI_SECRET", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZUREPS_HOST_ENVIRONMENT"):
        env.pop(var, None)
    env["AZURE_POD_IDENTITY_AUTHORITY_HOST"] = imds_endpoint
    env["NO_PROXY"] = env["no_proxy"] = f"{netns.host_ip},localhost,127.0.0.1"
    cmd = ["ip", "netns", "exec", netns.name, sys.executable, "-c", NS_PROBE, imds_endpoint, resource]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=90, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail("the probe inside the namespace did not finish within 90 s")
    lines = res.stdout.strip().splitlines()
    assert res.returncode == 0 and lines, f"probe failed ({res.returncode}): {res.stderr[-2000:]}"
    return json.loads(lines[-1])


def test_network_namespace_caller(store_kind, tmp_path, monkeypatch):
    """A caller in another network namespace (a second "machine" at ns_ip)
    gets its workload's identity from the IMDS listener on the host's veth
    address; once the workload moves to another address it gets nothing, and
    the host itself (source host_ip) never gets an identity."""
    with veth_namespace() as netns:
        listen = f"{netns.host_ip}:{free_port()}"
        with running_server(ImdsServer, store_kind, tmp_path / "srv", imds_listen=listen) as srv:
            trust_server_ca(monkeypatch, srv)
            resource = srv.vault_resource
            name = unique("wl")
            r = put_workload(srv, name, [netns.ns_ip])
            assert r.status_code == 201, r.text
            wl = r.json()
            principal = system_principal(wl)

            out = probe_from_namespace(netns, srv.imds_endpoint, resource)
            assert out["raw"]["status"] == 200, out["raw"]
            assert "token" in out["sdk"], out["sdk"]
            claims = jwt_claims(out["sdk"]["token"])
            assert_mi_claims(claims, srv, principal_id=principal, client_id=claims["appid"], mirid=wl["id"],
                             audience=resource)
            assert jwt_claims(out["raw"]["body"]["access_token"])["oid"] == principal
            assert_vault_forbids(srv, out["sdk"]["token"])

            # The host reaches the same listener from host_ip, which is not registered.
            assert_identity_not_found(imds_token(listen, resource))

            # The workload moves to another address: the namespace has no identity any more.
            r = put_workload(srv, name, [netns.other_ip])
            assert r.status_code == 200, r.text
            assert system_principal(r.json()) == principal
            out = probe_from_namespace(netns, srv.imds_endpoint, resource)
            assert out["raw"]["status"] == 400, out["raw"]
            body = json.loads(out["raw"]["body"])
            assert {k: body.get(k) for k in IDENTITY_NOT_FOUND} == IDENTITY_NOT_FOUND, out["raw"]
            assert "ClientAuthenticationError" in out["sdk"].get("classes", []), out["sdk"]

            # ...and has it again once the workload is back.
            assert put_workload(srv, name, [netns.ns_ip]).status_code == 200
            out = probe_from_namespace(netns, srv.imds_endpoint, resource)
            assert "token" in out["sdk"], out["sdk"]
            assert jwt_claims(out["sdk"]["token"])["oid"] == principal
