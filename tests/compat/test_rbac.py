"""Azure RBAC: role definitions and role assignments on the management plane
(Microsoft.Authorization, api-version 2022-04-01, raw and through
azure-mgmt-authorization), the vault's own role-assignment API
(azure-keyvault-administration's KeyVaultAccessControlClient), and how the
data plane enforces them on the `dev` vault (enableRbacAuthorization: true).

Everything runs on the shared server: every test makes its own principals
(through Graph, as the bootstrap principal, a directory admin and Owner of the
subscription) and secrets, and grants only to them.
"""

from __future__ import annotations

import uuid
from urllib.parse import parse_qsl, urlsplit

import pytest
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

from khcompat import (
    BUILTIN_ROLES,
    CLIENT_KWARGS,
    DEFAULT_API_VERSION,
    ROLE_ASSIGNMENT_TYPE,
    ROLE_DEFINITION_TYPE,
    SECRET_ACTION,
    add_member,
    assert_arm_error,
    assert_vault_forbidden,
    assign_role,
    authz,
    create_group,
    create_user,
    delete_role_assignment,
    delete_secret_as,
    expect_status,
    get_secret_as,
    graph_token,
    is_guid,
    jwt_claims,
    list_secrets_as,
    new_principal,
    odata_filter,
    poll_status,
    put_role_assignment,
    remove_member,
    resource_group_scope,
    role_definition_id,
    seed_secret,
    set_secret_as,
    subscription_scope,
    unique,
    user_credential,
    vault_arm_id,
)

GET_SECRET = f"{SECRET_ACTION}/getSecret/action"
SET_SECRET = f"{SECRET_ACTION}/setSecret/action"
READ_METADATA = f"{SECRET_ACTION}/readMetadata/action"
DELETE_SECRET = f"{SECRET_ACTION}/delete"


@pytest.fixture
def admin(server) -> str:
    return graph_token(server)


def definitions_path(server, guid=None) -> str:
    base = f"{subscription_scope(server)}/providers/{ROLE_DEFINITION_TYPE}"
    return f"{base}/{guid}" if guid else base


def assignments_path(scope) -> str:
    return f"{scope}/providers/{ROLE_ASSIGNMENT_TYPE}"


def listed_names(resp) -> list:
    body = expect_status(resp, 200).json()
    assert isinstance(body.get("value"), list), body
    return [a.get("name") for a in body["value"]]


def assert_role_assignment(body, scope, name, role_guid, principal_id, principal_type, server):
    assert body["id"] == f"{scope}/providers/{ROLE_ASSIGNMENT_TYPE}/{name}", body
    assert body["name"] == name, body
    assert body["type"] == ROLE_ASSIGNMENT_TYPE, body
    props = body["properties"]
    assert props["roleDefinitionId"] == role_definition_id(server, role_guid), body
    assert props["principalId"] == principal_id, body
    assert props["principalType"] == principal_type, body
    assert props["scope"] == scope, body


def secret_value(resp) -> str:
    assert resp.status_code == 200, f"{resp.request.method} {resp.url}: {resp.status_code} {resp.text[:500]}"
    return resp.json()["value"]


def secret_names(resp) -> list:
    assert resp.status_code == 200, f"{resp.request.method} {resp.url}: {resp.status_code} {resp.text[:500]}"
    return [item["id"].rstrip("/").rsplit("/", 1)[-1] for item in resp.json()["value"]]


def all_secret_names(server, token) -> set:
    """Every secret name the data plane lists, following nextLink."""
    names = set()
    r = list_secrets_as(server, token)
    for _ in range(500):
        names.update(secret_names(r))
        link = r.json().get("nextLink")
        if not link:
            return names
        parts = urlsplit(link)
        params = dict(parse_qsl(parts.query))
        api_version = params.pop("api-version", DEFAULT_API_VERSION)
        r = server.vault_request("GET", parts.path, token=token, api_version=api_version, params=params)
    raise AssertionError("more than 500 pages of secrets")


# ---------------------------------------------------------------------------
# role definitions (management plane)
# ---------------------------------------------------------------------------

def test_builtin_role_definitions_have_their_azure_ids(server):
    body = expect_status(authz(server, "GET", definitions_path(server)), 200).json()
    assert isinstance(body.get("value"), list), body
    by_name = {d["properties"]["roleName"]: d for d in body["value"]}
    for role_name, guid in BUILTIN_ROLES.items():
        assert role_name in by_name, f"{role_name} not listed: {sorted(by_name)}"
        d = by_name[role_name]
        assert d["id"] == definitions_path(server, guid), d
        assert d["name"] == guid, d
        assert d["type"] == ROLE_DEFINITION_TYPE, d
        props = d["properties"]
        assert props["type"] == "BuiltInRole", d
        assert isinstance(props.get("description"), str), d
        assert isinstance(props.get("assignableScopes"), list) and props["assignableScopes"], d
        assert isinstance(props.get("permissions"), list) and props["permissions"], d
        for perm in props["permissions"]:
            for field in ("actions", "notActions", "dataActions", "notDataActions"):
                assert isinstance(perm.get(field), list), (role_name, field, perm)

    def data_actions(role_name):
        return {a for p in by_name[role_name]["properties"]["permissions"] for a in p["dataActions"]}

    assert {GET_SECRET, READ_METADATA} <= data_actions("Key Vault Secrets User")
    assert SET_SECRET not in data_actions("Key Vault Secrets User")
    assert READ_METADATA in data_actions("Key Vault Reader")
    assert GET_SECRET not in data_actions("Key Vault Reader")


def test_role_definitions_filter_by_role_name(server):
    r = authz(server, "GET", odata_filter(definitions_path(server), "roleName eq 'Key Vault Secrets User'"))
    body = expect_status(r, 200).json()
    assert [d["name"] for d in body["value"]] == [BUILTIN_ROLES["Key Vault Secrets User"]], body
    assert body["value"][0]["properties"]["roleName"] == "Key Vault Secrets User"


def test_get_role_definition_by_guid(server):
    guid = BUILTIN_ROLES["Key Vault Secrets Officer"]
    d = expect_status(authz(server, "GET", definitions_path(server, guid)), 200).json()
    assert d["id"] == definitions_path(server, guid)
    assert d["name"] == guid and d["type"] == ROLE_DEFINITION_TYPE
    assert d["properties"]["roleName"] == "Key Vault Secrets Officer"
    assert d["properties"]["type"] == "BuiltInRole"

    r = authz(server, "GET", definitions_path(server, str(uuid.uuid4())))
    assert r.status_code == 404, f"unknown role definition: {r.status_code} {r.text[:300]}"


def custom_role_body(server, role_name, data_actions):
    return {"properties": {
        "roleName": role_name,
        "description": "compat suite custom role",
        "type": "CustomRole",
        "assignableScopes": [subscription_scope(server)],
        "permissions": [{"actions": [], "dataActions": list(data_actions)}],
    }}


def test_custom_role_definition_lifecycle(server):
    guid = str(uuid.uuid4())
    role_name = unique("custom-role")
    r = authz(server, "PUT", definitions_path(server, guid),
              json=custom_role_body(server, role_name, [GET_SECRET]))
    created = expect_status(r, 201).json()
    assert created["id"] == definitions_path(server, guid), created
    assert created["name"] == guid and created["type"] == ROLE_DEFINITION_TYPE, created
    assert created["properties"]["roleName"] == role_name
    assert created["properties"]["type"] == "CustomRole"
    assert created["properties"]["assignableScopes"] == [subscription_scope(server)]
    assert [p["dataActions"] for p in created["properties"]["permissions"]] == [[GET_SECRET]]

    got = expect_status(authz(server, "GET", definitions_path(server, guid)), 200).json()
    assert got["properties"]["roleName"] == role_name and got["properties"]["type"] == "CustomRole"

    listed = expect_status(authz(server, "GET", odata_filter(definitions_path(server), f"roleName eq '{role_name}'")),
                           200).json()
    assert [d["name"] for d in listed["value"]] == [guid], listed

    deleted = expect_status(authz(server, "DELETE", definitions_path(server, guid)), 200)
    assert deleted.json()["name"] == guid
    assert authz(server, "GET", definitions_path(server, guid)).status_code == 404


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
def test_builtin_role_definitions_cannot_be_changed(server, method):
    guid = BUILTIN_ROLES["Key Vault Secrets User"]
    body = custom_role_body(server, "Key Vault Secrets User", [SET_SECRET]) if method == "PUT" else None
    r = authz(server, method, definitions_path(server, guid), json=body)
    assert r.status_code in (400, 403), f"{method} of a built-in role: {r.status_code} {r.text[:500]}"
    assert isinstance(r.json().get("error", {}).get("code"), str), r.text

    d = expect_status(authz(server, "GET", definitions_path(server, guid)), 200).json()
    assert d["properties"]["type"] == "BuiltInRole"
    actions = {a for p in d["properties"]["permissions"] for a in p["dataActions"]}
    assert GET_SECRET in actions and SET_SECRET not in actions


# ---------------------------------------------------------------------------
# role assignments (management plane)
# ---------------------------------------------------------------------------

def test_role_assignment_lifecycle_at_vault_scope(server):
    p = new_principal(server)
    scope = vault_arm_id(server)
    name = str(uuid.uuid4())
    role = BUILTIN_ROLES["Key Vault Secrets User"]

    r = put_role_assignment(server, scope, "Key Vault Secrets User", p.object_id, name=name)
    created = expect_status(r, 201).json()
    assert_role_assignment(created, scope, name, role, p.object_id, "ServicePrincipal", server)

    got = expect_status(authz(server, "GET", created["id"]), 200).json()
    assert_role_assignment(got, scope, name, role, p.object_id, "ServicePrincipal", server)

    r = authz(server, "GET", odata_filter(assignments_path(scope), f"principalId eq '{p.object_id}'"))
    assert name in listed_names(r)
    assert name in listed_names(authz(server, "GET", assignments_path(scope)))

    # The same PUT again does not make a second assignment.
    again = put_role_assignment(server, scope, "Key Vault Secrets User", p.object_id, name=name)
    assert again.status_code in (200, 201, 409), f"repeated PUT: {again.status_code} {again.text[:500]}"
    r = authz(server, "GET", odata_filter(assignments_path(scope), f"principalId eq '{p.object_id}'"))
    assert listed_names(r).count(name) == 1

    deleted = expect_status(delete_role_assignment(server, created["id"]), 200).json()
    assert_role_assignment(deleted, scope, name, role, p.object_id, "ServicePrincipal", server)
    assert authz(server, "GET", created["id"]).status_code == 404
    r = authz(server, "GET", odata_filter(assignments_path(scope), f"principalId eq '{p.object_id}'"))
    assert name not in listed_names(r)


def test_role_assignment_to_a_user_and_a_group(server, admin):
    user, _ = create_user(server, admin)
    group = create_group(server, admin)
    scope = vault_arm_id(server)
    for principal_id, principal_type in ((user["id"], "User"), (group["id"], "Group")):
        a = assign_role(server, scope, "Key Vault Reader", principal_id, principal_type=principal_type)
        assert_role_assignment(a, scope, a["name"], BUILTIN_ROLES["Key Vault Reader"], principal_id, principal_type,
                               server)
        assert is_guid(a["name"]), a
        expect_status(delete_role_assignment(server, a["id"]), 200)


@pytest.mark.parametrize("role", [None, "Key Vault Secrets Officer", "Key Vault Administrator",
                                  "Key Vault Contributor", "Contributor"])
def test_only_role_assignment_writers_may_assign(server, role):
    """Microsoft.Authorization/roleAssignments/write is Owner's, User Access
    Administrator's and Key Vault Data Access Administrator's alone."""
    caller = new_principal(server, prefix="caller")
    target = new_principal(server, prefix="target")
    scope = vault_arm_id(server)
    if role is not None:
        assign_role(server, scope, role, caller.object_id)
    r = put_role_assignment(server, scope, "Key Vault Secrets User", target.object_id,
                            token=caller.management_token(server))
    err = assert_arm_error(r, 403, "AuthorizationFailed")
    assert caller.object_id in err["message"], err
    assert "Microsoft.Authorization/roleAssignments/write" in err["message"], err

    # Nothing was assigned: the target still cannot read.
    name, _ = seed_secret(server)
    assert_vault_forbidden(get_secret_as(server, target.vault_token(server), name), "ForbiddenByRbac")

    # Nor may the caller remove someone else's assignment.
    granted = assign_role(server, scope, "Key Vault Secrets User", target.object_id)
    assert_arm_error(delete_role_assignment(server, granted["id"], caller.management_token(server)),
                     403, "AuthorizationFailed")
    expect_status(authz(server, "GET", granted["id"]), 200)
    expect_status(delete_role_assignment(server, granted["id"]), 200)


@pytest.mark.parametrize("role", ["Owner", "User Access Administrator", "Key Vault Data Access Administrator"])
def test_role_assignment_writers_can_grant_vault_access(server, role):
    delegate = new_principal(server, prefix="delegate")
    target = new_principal(server, prefix="target")
    scope = vault_arm_id(server)
    assign_role(server, scope, role, delegate.object_id)

    a = assign_role(server, scope, "Key Vault Secrets User", target.object_id,
                    token=delegate.management_token(server))
    assert a["properties"]["principalId"] == target.object_id
    name, value = seed_secret(server)
    assert secret_value(poll_status(lambda: get_secret_as(server, target.vault_token(server), name), 200)) == value

    expect_status(delete_role_assignment(server, a["id"], delegate.management_token(server)), 200)


def test_azure_mgmt_authorization_client(server):
    """AuthorizationManagementClient against Keyhaven's management endpoint."""
    from azure.mgmt.authorization import AuthorizationManagementClient
    from azure.mgmt.authorization.models import RoleAssignmentCreateParameters

    target = new_principal(server)
    scope = vault_arm_id(server)
    name, value = seed_secret(server)
    cred = server.credential()
    client = AuthorizationManagementClient(cred, server.subscription_id, base_url=server.management_url,
                                           credential_scopes=[server.management_scope], **CLIENT_KWARGS)
    try:
        defs = list(client.role_definitions.list(subscription_scope(server),
                                                 filter="roleName eq 'Key Vault Secrets User'"))
        assert [d.name for d in defs] == [BUILTIN_ROLES["Key Vault Secrets User"]], [d.as_dict() for d in defs]
        definition = defs[0]
        assert definition.role_name == "Key Vault Secrets User" and definition.role_type == "BuiltInRole"
        assert definition.id == role_definition_id(server, "Key Vault Secrets User")
        assert client.role_definitions.get(subscription_scope(server), definition.name).role_name == \
            "Key Vault Secrets User"

        assignment_name = str(uuid.uuid4())
        created = client.role_assignments.create(
            scope, assignment_name,
            RoleAssignmentCreateParameters(role_definition_id=definition.id, principal_id=target.object_id,
                                           principal_type="ServicePrincipal"))
        assert created.name == assignment_name
        assert created.scope == scope
        assert created.principal_id == target.object_id
        assert created.role_definition_id == definition.id
        assert created.id == f"{scope}/providers/{ROLE_ASSIGNMENT_TYPE}/{assignment_name}"

        got = client.role_assignments.get(scope, assignment_name)
        assert (got.name, got.principal_id) == (assignment_name, target.object_id)
        listed = list(client.role_assignments.list_for_scope(scope, filter=f"principalId eq '{target.object_id}'"))
        assert assignment_name in [a.name for a in listed]

        token = target.vault_token(server)
        assert secret_value(poll_status(lambda: get_secret_as(server, token, name), 200)) == value

        deleted = client.role_assignments.delete(scope, assignment_name)
        assert deleted is not None and deleted.name == assignment_name
        assert_vault_forbidden(poll_status(lambda: get_secret_as(server, token, name), 403), "ForbiddenByRbac")
        assert assignment_name not in [
            a.name for a in client.role_assignments.list_for_scope(scope, filter=f"principalId eq '{target.object_id}'")]
    finally:
        client.close()
        cred.close()


# ---------------------------------------------------------------------------
# the vault's own role-assignment API (azure-keyvault-administration)
# ---------------------------------------------------------------------------

def access_control_client(server, credential=None):
    from azure.keyvault.administration import KeyVaultAccessControlClient

    return KeyVaultAccessControlClient(server.vault_url, credential or server.credential(), **CLIENT_KWARGS)


def test_access_control_client_lists_key_vault_role_definitions(server):
    from azure.keyvault.administration import KeyVaultRoleScope

    client = access_control_client(server)
    try:
        definitions = list(client.list_role_definitions(KeyVaultRoleScope.GLOBAL))
    finally:
        client.close()
    by_name = {d.role_name: d for d in definitions}
    for role_name in ("Key Vault Administrator", "Key Vault Reader", "Key Vault Secrets Officer",
                      "Key Vault Secrets User", "Key Vault Crypto Officer", "Key Vault Crypto User",
                      "Key Vault Certificates Officer", "Key Vault Certificate User"):
        assert role_name in by_name, f"{role_name} not listed: {sorted(by_name)}"
        d = by_name[role_name]
        assert d.name == BUILTIN_ROLES[role_name], (role_name, d.name)
        assert d.id and d.id.endswith(f"/{BUILTIN_ROLES[role_name]}"), (role_name, d.id)
        assert d.type == ROLE_DEFINITION_TYPE, (role_name, d.type)
    user = by_name["Key Vault Secrets User"]
    assert {GET_SECRET, READ_METADATA} <= {a for p in user.permissions for a in (p.data_actions or [])}


def test_access_control_client_assignment_lifecycle(server):
    from azure.keyvault.administration import KeyVaultRoleScope

    target = new_principal(server)
    name, value = seed_secret(server)
    token = target.vault_token(server)
    assert_vault_forbidden(get_secret_as(server, token, name), "ForbiddenByRbac")

    client = access_control_client(server)
    try:
        definition = next(d for d in client.list_role_definitions(KeyVaultRoleScope.GLOBAL)
                          if d.role_name == "Key Vault Secrets User")
        created = client.create_role_assignment(KeyVaultRoleScope.GLOBAL, definition.id, target.object_id)
        assert is_guid(created.name), created.name
        assert created.properties.principal_id == target.object_id
        assert created.properties.role_definition_id == definition.id
        assert created.type == ROLE_ASSIGNMENT_TYPE

        listed = {a.name: a for a in client.list_role_assignments(KeyVaultRoleScope.GLOBAL)}
        assert created.name in listed, sorted(listed)
        assert listed[created.name].properties.principal_id == target.object_id
        got = client.get_role_assignment(KeyVaultRoleScope.GLOBAL, created.name)
        assert (got.name, got.properties.principal_id) == (created.name, target.object_id)

        # Scope "/" is the vault itself: the management plane sees the same assignment there.
        r = authz(server, "GET", odata_filter(assignments_path(vault_arm_id(server)),
                                              f"principalId eq '{target.object_id}'"))
        assert created.name in listed_names(r)

        assert secret_value(poll_status(lambda: get_secret_as(server, token, name), 200)) == value
        assert_vault_forbidden(set_secret_as(server, token, name), "ForbiddenByRbac", SET_SECRET)

        client.delete_role_assignment(KeyVaultRoleScope.GLOBAL, created.name)
        assert created.name not in {a.name for a in client.list_role_assignments(KeyVaultRoleScope.GLOBAL)}
        assert_vault_forbidden(poll_status(lambda: get_secret_as(server, token, name), 403), "ForbiddenByRbac")
    finally:
        client.close()


def test_access_control_client_sees_management_plane_assignments(server):
    target = new_principal(server)
    a = assign_role(server, vault_arm_id(server), "Key Vault Secrets User", target.object_id)
    client = access_control_client(server)
    try:
        listed = {x.name: x for x in client.list_role_assignments("/")}
        assert a["name"] in listed, sorted(listed)
        assert listed[a["name"]].properties.principal_id == target.object_id
    finally:
        client.close()
        delete_role_assignment(server, a["id"])


def test_access_control_client_needs_role_assignment_write(server):
    """A data-only role (Secrets Officer) cannot hand out roles through the vault either."""
    caller = new_principal(server, prefix="caller")
    target = new_principal(server, prefix="target")
    assign_role(server, vault_arm_id(server), "Key Vault Secrets Officer", caller.object_id)
    cred = caller.credential(server)
    client = access_control_client(server, cred)
    try:
        with pytest.raises(HttpResponseError) as info:
            client.create_role_assignment("/", role_definition_id(server, "Key Vault Secrets Officer"),
                                          target.object_id)
        assert not isinstance(info.value, ClientAuthenticationError), info.value
        assert info.value.status_code == 403, info.value
    finally:
        client.close()
        cred.close()
    name, _ = seed_secret(server)
    assert_vault_forbidden(get_secret_as(server, target.vault_token(server), name), "ForbiddenByRbac")


# ---------------------------------------------------------------------------
# enforcement on the data plane
# ---------------------------------------------------------------------------

def test_principal_without_assignment_is_forbidden_by_rbac(server):
    p = new_principal(server)
    name, _ = seed_secret(server)
    token = p.vault_token(server)
    assert_vault_forbidden(get_secret_as(server, token, name), "ForbiddenByRbac", p.object_id, GET_SECRET)
    assert_vault_forbidden(set_secret_as(server, token, unique("nope")), "ForbiddenByRbac", p.object_id, SET_SECRET)
    assert_vault_forbidden(list_secrets_as(server, token), "ForbiddenByRbac", p.object_id)

    cred = p.credential(server)
    client = server.secret_client(cred)
    try:
        with pytest.raises(HttpResponseError) as info:
            client.get_secret(name)
        assert not isinstance(info.value, ClientAuthenticationError), info.value
        assert info.value.status_code == 403
        assert info.value.error is not None and info.value.error.code == "Forbidden"
    finally:
        client.close()
        cred.close()


def test_secrets_user_reads_but_cannot_write(server):
    p = new_principal(server)
    name, value = seed_secret(server)
    assign_role(server, vault_arm_id(server), "Key Vault Secrets User", p.object_id)
    token = p.vault_token(server)

    assert secret_value(poll_status(lambda: get_secret_as(server, token, name), 200)) == value
    assert name in all_secret_names(server, token)
    assert_vault_forbidden(set_secret_as(server, token, name, "changed"), "ForbiddenByRbac", p.object_id, SET_SECRET)
    assert_vault_forbidden(delete_secret_as(server, token, name), "ForbiddenByRbac", p.object_id, DELETE_SECRET)
    # The refused writes changed nothing.
    assert secret_value(get_secret_as(server, server.token(), name)) == value


def test_secrets_officer_sets_gets_and_deletes(server):
    p = new_principal(server)
    assign_role(server, vault_arm_id(server), "Key Vault Secrets Officer", p.object_id)
    token = p.vault_token(server)
    poll_status(lambda: list_secrets_as(server, token), 200)

    cred = p.credential(server)
    client = server.secret_client(cred)
    try:
        name = unique("officer")
        assert client.set_secret(name, "first").value == "first"
        assert client.get_secret(name).value == "first"
        client.set_secret(name, "second")
        assert client.get_secret(name).value == "second"
    finally:
        client.close()
        cred.close()
    r = delete_secret_as(server, token, name)
    assert r.status_code == 200, f"delete: {r.status_code} {r.text[:300]}"
    assert get_secret_as(server, server.token(), name).status_code == 404


def test_reader_lists_metadata_but_cannot_read_values(server):
    p = new_principal(server)
    name, value = seed_secret(server)
    assign_role(server, vault_arm_id(server), "Key Vault Reader", p.object_id)
    token = p.vault_token(server)

    listed = poll_status(lambda: list_secrets_as(server, token), 200)
    assert listed.status_code == 200, listed.text
    assert value not in listed.text
    assert name in all_secret_names(server, token)
    assert_vault_forbidden(get_secret_as(server, token, name), "ForbiddenByRbac", p.object_id, GET_SECRET)
    assert_vault_forbidden(set_secret_as(server, token, unique("nope")), "ForbiddenByRbac", p.object_id, SET_SECRET)


def test_assignment_on_one_secret(server):
    p = new_principal(server)
    name, value = seed_secret(server)
    other, _ = seed_secret(server)
    scope = f"{vault_arm_id(server)}/secrets/{name}"
    a = assign_role(server, scope, "Key Vault Secrets User", p.object_id)
    assert a["properties"]["scope"] == scope, a
    token = p.vault_token(server)

    assert secret_value(poll_status(lambda: get_secret_as(server, token, name), 200)) == value
    assert_vault_forbidden(get_secret_as(server, token, other), "ForbiddenByRbac", p.object_id, GET_SECRET)
    # Listing is an operation on the vault, which an assignment on one secret does not cover.
    assert_vault_forbidden(list_secrets_as(server, token), "ForbiddenByRbac", p.object_id)

    r = authz(server, "GET", odata_filter(assignments_path(scope), f"principalId eq '{p.object_id}'"))
    assert a["name"] in listed_names(r)


def test_group_assignment_applies_to_a_user_member(server, admin):
    group = create_group(server, admin)
    user, password = create_user(server, admin)
    expect_status(add_member(server, group["id"], user["id"], admin), 204)
    name, value = seed_secret(server)
    assign_role(server, vault_arm_id(server), "Key Vault Secrets User", group["id"], principal_type="Group")

    cred = user_credential(server, user["userPrincipalName"], password)
    client = server.secret_client(cred)
    try:
        token = cred.get_token(server.vault_scope).token
        assert secret_value(poll_status(lambda: get_secret_as(server, token, name), 200)) == value
        assert client.get_secret(name).value == value
        with pytest.raises(HttpResponseError) as info:
            client.set_secret(name, "changed")
        assert info.value.status_code == 403

        # The token still carries the group in its claims; membership is what counts.
        expect_status(remove_member(server, group["id"], user["id"], admin), 204)
        assert_vault_forbidden(poll_status(lambda: get_secret_as(server, token, name), 403), "ForbiddenByRbac",
                               user["id"], GET_SECRET)
    finally:
        client.close()
        cred.close()


def test_group_assignment_applies_to_a_service_principal_member(server, admin):
    group = create_group(server, admin)
    member = new_principal(server, prefix="member")
    outsider = new_principal(server, prefix="outsider")
    name, value = seed_secret(server)
    assign_role(server, vault_arm_id(server), "Key Vault Secrets User", group["id"], principal_type="Group")
    token = member.vault_token(server)
    # Not a member yet (a decision the server may have cached)...
    assert_vault_forbidden(get_secret_as(server, token, name), "ForbiddenByRbac", member.object_id)

    # ...then added to the group: the same token now reads.
    expect_status(add_member(server, group["id"], member.object_id, admin), 204)
    assert secret_value(poll_status(lambda: get_secret_as(server, token, name), 200)) == value
    assert_vault_forbidden(get_secret_as(server, outsider.vault_token(server), name), "ForbiddenByRbac")

    expect_status(remove_member(server, group["id"], member.object_id, admin), 204)
    assert_vault_forbidden(poll_status(lambda: get_secret_as(server, token, name), 403), "ForbiddenByRbac",
                           member.object_id, GET_SECRET)


def test_group_assignment_applies_through_nested_groups(server, admin):
    outer = create_group(server, admin, prefix="outer")
    inner = create_group(server, admin, prefix="inner")
    member = new_principal(server, prefix="member")
    expect_status(add_member(server, outer["id"], inner["id"], admin), 204)
    expect_status(add_member(server, inner["id"], member.object_id, admin), 204)
    name, value = seed_secret(server)
    assign_role(server, vault_arm_id(server), "Key Vault Secrets User", outer["id"], principal_type="Group")

    token = member.vault_token(server)
    assert secret_value(poll_status(lambda: get_secret_as(server, token, name), 200)) == value

    expect_status(remove_member(server, outer["id"], inner["id"], admin), 204)
    assert_vault_forbidden(poll_status(lambda: get_secret_as(server, token, name), 403), "ForbiddenByRbac")


def test_deleting_the_assignment_revokes_access(server):
    p = new_principal(server)
    name, value = seed_secret(server)
    a = assign_role(server, vault_arm_id(server), "Key Vault Secrets User", p.object_id)
    token = p.vault_token(server)
    assert secret_value(poll_status(lambda: get_secret_as(server, token, name), 200)) == value

    expect_status(delete_role_assignment(server, a["id"]), 200)
    assert_vault_forbidden(poll_status(lambda: get_secret_as(server, token, name), 403), "ForbiddenByRbac",
                           p.object_id, GET_SECRET)


def test_custom_role_grants_only_its_data_actions(server):
    guid = str(uuid.uuid4())
    expect_status(authz(server, "PUT", definitions_path(server, guid),
                        json=custom_role_body(server, unique("get-only"), [GET_SECRET])), 201)
    p = new_principal(server)
    name, value = seed_secret(server)
    a = assign_role(server, vault_arm_id(server), guid, p.object_id)
    assert a["properties"]["roleDefinitionId"] == role_definition_id(server, guid)
    token = p.vault_token(server)

    assert secret_value(poll_status(lambda: get_secret_as(server, token, name), 200)) == value
    assert_vault_forbidden(set_secret_as(server, token, name, "changed"), "ForbiddenByRbac", p.object_id, SET_SECRET)
    assert_vault_forbidden(list_secrets_as(server, token), "ForbiddenByRbac", p.object_id)

    expect_status(delete_role_assignment(server, a["id"]), 200)
    expect_status(authz(server, "DELETE", definitions_path(server, guid)), 200)


@pytest.mark.parametrize("kind, role", [("secrets", "Key Vault Secrets User"), ("keys", "Key Vault Crypto User"),
                                        ("certificates", "Key Vault Certificate User")])
def test_assignment_at_an_object_scope(server, kind, role):
    """{vault id}/{secrets|keys|certificates}/{name} is an assignable scope; the
    vault's own API sees the assignment at /{kind}/{name}."""
    p = new_principal(server)
    object_name = unique(kind[:4])
    scope = f"{vault_arm_id(server)}/{kind}/{object_name}"
    a = assign_role(server, scope, role, p.object_id)
    assert_role_assignment(a, scope, a["name"], BUILTIN_ROLES[role], p.object_id, "ServicePrincipal", server)
    assert a["name"] in listed_names(authz(server, "GET", assignments_path(scope)))
    assert a["name"] not in listed_names(
        authz(server, "GET", assignments_path(f"{vault_arm_id(server)}/{kind}/{unique('other')}")))

    client = access_control_client(server)
    try:
        listed = {x.name: x for x in client.list_role_assignments(f"/{kind}/{object_name}")}
    finally:
        client.close()
    assert a["name"] in listed, sorted(listed)
    assert listed[a["name"]].properties.principal_id == p.object_id
    expect_status(delete_role_assignment(server, a["id"]), 200)


@pytest.mark.parametrize("level", ["resource-group", "subscription"])
def test_assignment_above_the_vault_applies_to_it(server, level):
    p = new_principal(server)
    name, value = seed_secret(server)
    scope = resource_group_scope(server) if level == "resource-group" else subscription_scope(server)
    a = assign_role(server, scope, "Key Vault Secrets User", p.object_id)
    assert a["properties"]["scope"] == scope, a
    assert a["id"] == f"{scope}/providers/{ROLE_ASSIGNMENT_TYPE}/{a['name']}", a
    token = p.vault_token(server)

    assert secret_value(poll_status(lambda: get_secret_as(server, token, name), 200)) == value
    assert_vault_forbidden(set_secret_as(server, token, name, "changed"), "ForbiddenByRbac", SET_SECRET)

    r = authz(server, "GET", odata_filter(assignments_path(scope), f"principalId eq '{p.object_id}'"))
    assert a["name"] in listed_names(r)
    expect_status(delete_role_assignment(server, a["id"]), 200)
    assert_vault_forbidden(poll_status(lambda: get_secret_as(server, token, name), 403), "ForbiddenByRbac")


def test_bootstrap_principal_keeps_full_access(server):
    """Owner at the subscription (assigned at bootstrap) keeps the bootstrap principal in charge."""
    token = server.token()
    name = unique("boot")
    assert set_secret_as(server, token, name, "x").status_code == 200
    assert secret_value(get_secret_as(server, token, name)) == "x"
    assert list_secrets_as(server, token).status_code == 200
    assert delete_secret_as(server, token, name).status_code == 200

    r = authz(server, "GET", odata_filter(assignments_path(subscription_scope(server)),
                                          f"principalId eq '{jwt_claims(token)['oid']}'"))
    body = expect_status(r, 200).json()
    owner = role_definition_id(server, "Owner")
    assert any(a["properties"]["roleDefinitionId"] == owner and a["properties"]["scope"] == subscription_scope(server)
               for a in body["value"]), body

