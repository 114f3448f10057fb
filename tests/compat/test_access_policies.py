"""Vault access policies: the Microsoft.KeyVault/vaults resource on the
management plane (api-version 2023-07-01: GET/PATCH the vault, PUT
accessPolicies/add|replace|remove) and how the data plane enforces policies
when the vault is not in RBAC mode (enableRbacAuthorization: false).

Switching `dev` to access policies would break every other test that shares
a server, so this module runs its own server: the bootstrap principal first
gets an `all` policy (so it keeps access), then the vault leaves RBAC mode.
Tests that switch the permission model back and forth start a server of
their own.
"""

from __future__ import annotations

import pytest
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

from khcompat import (
    ACCESS_POLICIES_TYPE,
    AZURE_CLI_CLIENT_ID,
    KeyhavenServer,
    VAULT_TYPE,
    access_policy,
    add_member,
    assert_arm_error,
    assert_vault_forbidden,
    assign_role,
    bootstrap_object_id,
    create_application,
    create_group,
    create_user,
    delete_secret_as,
    expect_status,
    get_secret_as,
    get_vault,
    graph_token,
    jwt_claims,
    list_secrets_as,
    lower_set,
    module_server,
    new_principal,
    patch_vault,
    policies_for,
    poll_status,
    request_password_token,
    seed_secret,
    set_rbac_mode,
    set_secret_as,
    unique,
    update_access_policies,
    user_credential,
    vault_arm_id,
)

ALL = dict(keys=["all"], secrets=["all"], certificates=["all"], storage=["all"])


def leave_rbac_mode(srv: KeyhavenServer) -> None:
    """Give the bootstrap principal an `all` policy, then switch the vault to access policies."""
    boot = access_policy(srv, bootstrap_object_id(srv), **ALL)
    expect_status(update_access_policies(srv, "add", [boot]), 200)
    set_rbac_mode(srv, False)


@pytest.fixture(scope="module")
def ap_server(store_kind, tmp_path_factory):
    with module_server(KeyhavenServer, store_kind, tmp_path_factory.mktemp(f"ap-{store_kind}")) as srv:
        leave_rbac_mode(srv)
        yield srv


@pytest.fixture
def server(ap_server):
    """This module's private server, in access-policy mode (shadows conftest's shared `server`)."""
    return ap_server


@pytest.fixture
def admin(server) -> str:
    return graph_token(server)


def grant(server, object_id, *, application_id=None, **permissions):
    """accessPolicies/add for one entry; returns the response JSON."""
    entry = access_policy(server, object_id, application_id=application_id, **permissions)
    body = expect_status(update_access_policies(server, "add", [entry]), 200).json()
    assert_access_policies_response(server, body)
    return body


def assert_access_policies_response(server, body):
    assert body["id"].startswith(f"{vault_arm_id(server)}/accessPolicies/"), body
    assert body["type"] == ACCESS_POLICIES_TYPE, body
    assert isinstance(body["properties"]["accessPolicies"], list), body


def secret_perms(server, object_id, application_id=None):
    """The secrets permissions (lower-cased) of the one entry for the principal; None when it has none."""
    entries = policies_for(get_vault(server), object_id, application_id)
    assert len(entries) <= 1, f"more than one entry for {object_id}/{application_id}: {entries}"
    return lower_set(entries[0]["permissions"].get("secrets") or []) if entries else None


def value_of(resp) -> str:
    assert resp.status_code == 200, f"{resp.request.method} {resp.url}: {resp.status_code} {resp.text[:500]}"
    return resp.json()["value"]


def forbidden_by_policy(resp, principal_id, permission):
    """403 ForbiddenByPolicy naming the principal and e.g. "secrets set permission" on vault dev."""
    err = assert_vault_forbidden(resp, "ForbiddenByPolicy", principal_id, f"secrets {permission} permission")
    assert "dev" in err["message"], err
    return err


# ---------------------------------------------------------------------------
# the vault resource and policy updates
# ---------------------------------------------------------------------------

def test_vault_resource_in_access_policy_mode(server):
    v = get_vault(server)
    assert v["id"] == vault_arm_id(server), v
    assert v["name"] == "dev" and v["type"] == VAULT_TYPE, v
    props = v["properties"]
    assert props["enableRbacAuthorization"] is False, v
    assert props["tenantId"] == server.tenant_id, v
    assert isinstance(props["accessPolicies"], list), v
    entries = policies_for(v, bootstrap_object_id(server))
    assert len(entries) == 1, props["accessPolicies"]
    entry = entries[0]
    assert entry["tenantId"] == server.tenant_id, entry
    for category in ("keys", "secrets", "certificates", "storage"):
        assert "all" in lower_set(entry["permissions"][category]), entry


def test_bootstrap_principal_keeps_access_through_its_policy(server):
    token = server.token()
    name = unique("boot")
    assert set_secret_as(server, token, name, "x").status_code == 200
    assert value_of(get_secret_as(server, token, name)) == "x"
    assert list_secrets_as(server, token).status_code == 200
    assert delete_secret_as(server, token, name).status_code == 200


def test_add_merges_permissions_into_one_entry(server):
    p = new_principal(server)
    name, value = seed_secret(server)
    grant(server, p.object_id, secrets=["get"])
    assert secret_perms(server, p.object_id) == {"get"}
    grant(server, p.object_id, secrets=["list"])
    assert secret_perms(server, p.object_id) == {"get", "list"}

    token = p.vault_token(server)
    assert value_of(poll_status(lambda: get_secret_as(server, token, name), 200)) == value
    assert poll_status(lambda: list_secrets_as(server, token), 200).status_code == 200
    forbidden_by_policy(set_secret_as(server, token, name), p.object_id, "set")


def test_remove_drops_listed_permissions_then_the_entry(server):
    p = new_principal(server)
    name, value = seed_secret(server)
    grant(server, p.object_id, secrets=["get", "list", "set"])
    token = p.vault_token(server)
    assert poll_status(lambda: set_secret_as(server, token, name, value), 200).status_code == 200

    body = expect_status(update_access_policies(server, "remove",
                                                [access_policy(server, p.object_id, secrets=["set"])]), 200).json()
    assert_access_policies_response(server, body)
    assert secret_perms(server, p.object_id) == {"get", "list"}
    forbidden_by_policy(poll_status(lambda: set_secret_as(server, token, name, value), 403), p.object_id, "set")
    assert value_of(get_secret_as(server, token, name)) == value

    expect_status(update_access_policies(server, "remove",
                                         [access_policy(server, p.object_id, secrets=["get", "list"])]), 200)
    assert secret_perms(server, p.object_id) is None, "an entry without permissions is dropped"
    forbidden_by_policy(poll_status(lambda: get_secret_as(server, token, name), 403), p.object_id, "get")
    # The bootstrap principal's entry is untouched.
    assert "all" in secret_perms(server, bootstrap_object_id(server))


def test_replace_overwrites_the_entry(server):
    p = new_principal(server)
    name, _ = seed_secret(server)
    grant(server, p.object_id, secrets=["get", "list"])
    body = expect_status(update_access_policies(server, "replace",
                                                [access_policy(server, p.object_id, secrets=["set"])]), 200).json()
    assert_access_policies_response(server, body)
    assert secret_perms(server, p.object_id) == {"set"}

    token = p.vault_token(server)
    assert poll_status(lambda: set_secret_as(server, token, name, "replaced"), 200).status_code == 200
    forbidden_by_policy(get_secret_as(server, token, name), p.object_id, "get")
    assert value_of(get_secret_as(server, server.token(), name)) == "replaced"


# ---------------------------------------------------------------------------
# enforcement
# ---------------------------------------------------------------------------

def test_principal_without_policy_is_forbidden(server):
    p = new_principal(server)
    name, _ = seed_secret(server)
    token = p.vault_token(server)
    forbidden_by_policy(get_secret_as(server, token, name), p.object_id, "get")
    forbidden_by_policy(list_secrets_as(server, token), p.object_id, "list")
    forbidden_by_policy(set_secret_as(server, token, unique("nope")), p.object_id, "set")


def test_get_only_policy(server):
    p = new_principal(server)
    name, value = seed_secret(server)
    grant(server, p.object_id, secrets=["get"])
    token = p.vault_token(server)

    assert value_of(poll_status(lambda: get_secret_as(server, token, name), 200)) == value
    forbidden_by_policy(set_secret_as(server, token, name, "changed"), p.object_id, "set")
    forbidden_by_policy(list_secrets_as(server, token), p.object_id, "list")
    forbidden_by_policy(delete_secret_as(server, token, name), p.object_id, "delete")
    assert value_of(get_secret_as(server, token, name)) == value

    cred = p.credential(server)
    client = server.secret_client(cred)
    try:
        assert client.get_secret(name).value == value
        with pytest.raises(HttpResponseError) as info:
            client.set_secret(name, "changed")
        assert not isinstance(info.value, ClientAuthenticationError), info.value
        assert info.value.status_code == 403
        assert info.value.error is not None and info.value.error.code == "Forbidden"
    finally:
        client.close()
        cred.close()


def test_all_grants_every_secret_operation(server):
    p = new_principal(server)
    grant(server, p.object_id, secrets=["all"])
    token = p.vault_token(server)
    poll_status(lambda: list_secrets_as(server, token), 200)

    cred = p.credential(server)
    client = server.secret_client(cred)
    name = unique("all")
    try:
        assert client.set_secret(name, "one").value == "one"
        assert client.get_secret(name).value == "one"
        assert name in {s.name for s in client.list_properties_of_secrets()}
        assert len(list(client.list_properties_of_secret_versions(name))) == 1
    finally:
        client.close()
        cred.close()
    r = delete_secret_as(server, token, name)
    assert r.status_code == 200, f"delete: {r.status_code} {r.text[:300]}"
    assert get_secret_as(server, server.token(), name).status_code == 404


def test_permission_names_are_case_insensitive(server):
    p = new_principal(server)
    name, value = seed_secret(server)
    grant(server, p.object_id, secrets=["GET", "List"])
    token = p.vault_token(server)
    assert value_of(poll_status(lambda: get_secret_as(server, token, name), 200)) == value
    assert list_secrets_as(server, token).status_code == 200
    forbidden_by_policy(set_secret_as(server, token, name), p.object_id, "set")


def test_group_policy_applies_to_its_members(server, admin):
    group = create_group(server, admin)
    member = new_principal(server, prefix="member")
    outsider = new_principal(server, prefix="outsider")
    expect_status(add_member(server, group["id"], member.object_id, admin), 204)
    name, value = seed_secret(server)
    grant(server, group["id"], secrets=["get"])

    assert value_of(poll_status(lambda: get_secret_as(server, member.vault_token(server), name), 200)) == value
    forbidden_by_policy(set_secret_as(server, member.vault_token(server), name), member.object_id, "set")
    forbidden_by_policy(get_secret_as(server, outsider.vault_token(server), name), outsider.object_id, "get")


def user_token(server, user, password) -> str:
    """A data-plane token of the user through the Azure CLI's public client (ROPC)."""
    r = request_password_token(server, user["userPrincipalName"], password)
    assert r.status_code == 200, f"ROPC: {r.status_code} {r.text[:300]}"
    tok = r.json()["access_token"]
    assert jwt_claims(tok)["oid"] == user["id"]
    return tok


def test_user_policy_without_application(server, admin):
    user, password = create_user(server, admin)
    name, value = seed_secret(server)
    grant(server, user["id"], secrets=["get"])
    cred = user_credential(server, user["userPrincipalName"], password)
    client = server.secret_client(cred)
    try:
        assert client.get_secret(name).value == value
    finally:
        client.close()
        cred.close()
    forbidden_by_policy(set_secret_as(server, user_token(server, user, password), name), user["id"], "set")


def test_compound_identity_matches_only_its_application(server, admin):
    """An entry with objectId = a user and applicationId = an app applies to
    that user's tokens obtained through that app, and to nothing else."""
    name, value = seed_secret(server)

    via_cli, cli_password = create_user(server, admin, prefix="viacli")
    grant(server, via_cli["id"], application_id=AZURE_CLI_CLIENT_ID, secrets=["get"])
    assert secret_perms(server, via_cli["id"], AZURE_CLI_CLIENT_ID) == {"get"}
    assert secret_perms(server, via_cli["id"]) is None
    token = user_token(server, via_cli, cli_password)
    assert jwt_claims(token).get("azp", jwt_claims(token).get("appid")) == AZURE_CLI_CLIENT_ID
    assert value_of(poll_status(lambda: get_secret_as(server, token, name), 200)) == value
    forbidden_by_policy(set_secret_as(server, token, name), via_cli["id"], "set")

    elsewhere, other_password = create_user(server, admin, prefix="elsewhere")
    other_app = create_application(server, admin)
    grant(server, elsewhere["id"], application_id=other_app["appId"], secrets=["get"])
    assert secret_perms(server, elsewhere["id"], other_app["appId"]) == {"get"}
    forbidden_by_policy(get_secret_as(server, user_token(server, elsewhere, other_password), name),
                        elsewhere["id"], "get")


def test_model_switch_and_policy_writes_need_vault_write(server):
    """Only Owner / Contributor / Key Vault Contributor may change the vault
    (Microsoft.KeyVault/vaults/write); a data role is not enough."""
    nobody = new_principal(server, prefix="nobody")
    officer = new_principal(server, prefix="officer")
    contributor = new_principal(server, prefix="kvcontrib")
    assign_role(server, vault_arm_id(server), "Key Vault Secrets Officer", officer.object_id)
    assign_role(server, vault_arm_id(server), "Key Vault Contributor", contributor.object_id)

    # The refused PATCHes re-state the current mode, so a wrongly accepted one breaks no other test.
    for caller in (nobody, officer):
        token = caller.management_token(server)
        err = assert_arm_error(patch_vault(server, {"enableRbacAuthorization": False}, token), 403,
                               "AuthorizationFailed")
        assert caller.object_id in err["message"], err
        assert_arm_error(update_access_policies(server, "add", [access_policy(server, caller.object_id, **ALL)],
                                                token), 403, "AuthorizationFailed")
        assert secret_perms(server, caller.object_id) is None
    assert get_vault(server)["properties"]["enableRbacAuthorization"] is False

    # Key Vault Contributor may (here it re-states the current mode, so nothing changes).
    body = expect_status(patch_vault(server, {"enableRbacAuthorization": False},
                                     contributor.management_token(server)), 200).json()
    assert body["properties"]["enableRbacAuthorization"] is False, body
    assert get_vault(server)["properties"]["enableRbacAuthorization"] is False


# ---------------------------------------------------------------------------
# switching the permission model (a server of its own)
# ---------------------------------------------------------------------------

def test_rbac_mode_ignores_policies_and_switching_back_restores_them(server_factory):
    srv = server_factory()
    v = get_vault(srv)
    assert v["properties"]["enableRbacAuthorization"] is True, v

    name, value = seed_secret(srv)
    by_policy = new_principal(srv, prefix="bypolicy")
    by_role = new_principal(srv, prefix="byrole")
    expect_status(update_access_policies(srv, "add", [access_policy(srv, bootstrap_object_id(srv), **ALL),
                                                      access_policy(srv, by_policy.object_id, secrets=["get"])]), 200)
    assign_role(srv, vault_arm_id(srv), "Key Vault Secrets User", by_role.object_id)
    policy_token, role_token, boot_token = by_policy.vault_token(srv), by_role.vault_token(srv), srv.token()

    # RBAC mode: the policy counts for nothing, the role assignment does.
    assert_vault_forbidden(get_secret_as(srv, policy_token, name), "ForbiddenByRbac", by_policy.object_id)
    assert value_of(poll_status(lambda: get_secret_as(srv, role_token, name), 200)) == value

    # Access-policy mode: the other way round.
    set_rbac_mode(srv, False)
    assert value_of(poll_status(lambda: get_secret_as(srv, policy_token, name), 200)) == value
    forbidden_by_policy(poll_status(lambda: get_secret_as(srv, role_token, name), 403), by_role.object_id, "get")
    assert value_of(get_secret_as(srv, boot_token, name)) == value
    assert get_vault(srv)["properties"]["enableRbacAuthorization"] is False

    # And back.
    set_rbac_mode(srv, True)
    assert_vault_forbidden(poll_status(lambda: get_secret_as(srv, policy_token, name), 403), "ForbiddenByRbac",
                           by_policy.object_id)
    assert value_of(poll_status(lambda: get_secret_as(srv, role_token, name), 200)) == value
    assert value_of(get_secret_as(srv, boot_token, name)) == value
    # The policies survived the round trip.
    assert secret_perms(srv, by_policy.object_id) == {"get"}
