"""The directory through its Microsoft Graph v1.0 subset: users, groups and
memberships (direct and transitive), applications with password and
certificate credentials, service principals, /me, and who may write.

Raw REST via `requests`, as a Graph client sends it. Every test makes its own
objects with unique names; the admin is the bootstrap service principal (a
Global Administrator) with a client-credentials token for the Graph audience.
"""

from __future__ import annotations

import uuid

import pytest

from khcompat import (
    add_member,
    add_password,
    app_secret_credential,
    assert_graph_error,
    create_application,
    create_group,
    create_service_principal,
    create_user,
    directory_object_ref,
    graph,
    graph_list,
    graph_ok,
    graph_resource,
    graph_scope,
    graph_token,
    is_guid,
    jwt_claims,
    key_credential,
    new_app_with_secret,
    new_password,
    self_signed_certificate,
    unique,
    user_credential,
)

USER_TYPE = "#microsoft.graph.user"
GLOBAL_ADMIN = "62e90394-69f5-4237-9190-012177145e10"
GROUP_TYPE = "#microsoft.graph.group"
SP_TYPE = "#microsoft.graph.servicePrincipal"


@pytest.fixture
def admin(server) -> str:
    return graph_token(server)


def user_body(nick: str, password: str, **overrides):
    body = {
        "accountEnabled": True,
        "displayName": f"Test {nick}",
        "userPrincipalName": f"{nick}@keyhaven.localhost",
        "mailNickname": nick,
        "passwordProfile": {"password": password, "forceChangePasswordNextSignIn": False},
    }
    body.update(overrides)
    return body


def members(server, token, group_id, kind="members"):
    """{id: @odata.type} of a group's (transitive) members; each id exactly once."""
    items = graph_list(server, f"/groups/{group_id}/{kind}", token)
    ids = [m.get("id") for m in items]
    assert len(ids) == len(set(ids)), f"{kind} lists an object twice: {items}"
    return {m["id"]: m.get("@odata.type") for m in items}


# ---------------------------------------------------------------------------
# authentication of Graph itself
# ---------------------------------------------------------------------------

def test_admin_graph_token_has_the_graph_audience(server):
    claims = jwt_claims(graph_token(server))
    assert claims["aud"] == graph_resource(server)
    assert claims["tid"] == server.tenant_id
    assert claims["appid"] == server.client_id


def test_graph_refuses_missing_and_wrong_audience_tokens(server):
    r = graph(server, "GET", "/users", None)
    assert r.status_code == 401, f"{r.status_code}: {r.text[:300]}"
    vault_token = server.token(server.vault_scope)
    r = graph(server, "GET", "/users", vault_token)
    assert r.status_code == 401, f"vault-audience token accepted by Graph: {r.status_code}: {r.text[:300]}"
    r = graph(server, "POST", "/users", vault_token, json=user_body(unique("user"), new_password()))
    assert r.status_code == 401, f"{r.status_code}: {r.text[:300]}"


# ---------------------------------------------------------------------------
# users
# ---------------------------------------------------------------------------

def test_create_user_returns_the_user_without_its_password(server, admin):
    nick = unique("user")
    password = new_password()
    body = user_body(nick, password)
    r = graph(server, "POST", "/users", admin, json=body)
    assert r.status_code == 201, f"{r.status_code}: {r.text[:500]}"
    assert r.headers.get("Content-Type", "").startswith("application/json")
    assert password not in r.text
    user = r.json()
    assert is_guid(user.get("id")), user
    assert user["userPrincipalName"] == body["userPrincipalName"]
    assert user["displayName"] == body["displayName"]
    assert user["accountEnabled"] is True
    assert isinstance(user.get("@odata.context"), str) and "$metadata#users" in user["@odata.context"], user
    assert "passwordProfile" not in user or not (user["passwordProfile"] or {}).get("password"), user


def test_get_user_by_id_and_by_upn(server, admin):
    user, password = create_user(server, admin)
    for key in (user["id"], user["userPrincipalName"]):
        r = graph(server, "GET", f"/users/{key}", admin)
        assert r.status_code == 200, f"GET /users/{key}: {r.status_code} {r.text[:300]}"
        assert password not in r.text
        got = r.json()
        assert got["id"] == user["id"]
        assert got["userPrincipalName"] == user["userPrincipalName"]
        assert got["displayName"] == user["displayName"]
        assert got["accountEnabled"] is True


def test_list_users_includes_new_users_and_no_passwords(server, admin):
    a, pa = create_user(server, admin)
    b, pb = create_user(server, admin)
    listed = graph_list(server, "/users", admin)
    by_id = {u["id"]: u for u in listed}
    assert a["id"] in by_id and b["id"] in by_id
    assert by_id[a["id"]]["userPrincipalName"] == a["userPrincipalName"]
    text = repr(listed)
    assert pa not in text and pb not in text


def test_duplicate_upn_is_bad_request(server, admin):
    user, _ = create_user(server, admin)
    nick = user["userPrincipalName"].split("@")[0]
    r = graph(server, "POST", "/users", admin, json=user_body(nick, new_password()))
    assert_graph_error(r, 400, "Request_BadRequest")
    # The first user is untouched.
    assert graph_ok(server, "GET", f"/users/{user['id']}", admin)["displayName"] == user["displayName"]


def test_duplicate_upn_differing_only_in_case_is_bad_request(server, admin):
    user, _ = create_user(server, admin)
    nick = user["userPrincipalName"].split("@")[0]
    body = user_body(nick.upper(), new_password(), userPrincipalName=user["userPrincipalName"].upper())
    assert_graph_error(graph(server, "POST", "/users", admin, json=body), 400, "Request_BadRequest")


def test_patch_user_display_name_and_account_enabled(server, admin):
    user, password = create_user(server, admin)
    r = graph(server, "PATCH", f"/users/{user['id']}", admin,
              json={"displayName": "Renamed " + user["displayName"], "accountEnabled": False})
    assert r.status_code == 204, f"{r.status_code}: {r.text[:300]}"
    got = graph_ok(server, "GET", f"/users/{user['id']}", admin)
    assert got["displayName"] == "Renamed " + user["displayName"]
    assert got["accountEnabled"] is False
    assert got["userPrincipalName"] == user["userPrincipalName"]

    graph_ok(server, "PATCH", f"/users/{user['id']}", admin, json={"accountEnabled": True}, status=204)
    got = graph_ok(server, "GET", f"/users/{user['id']}", admin)
    assert got["accountEnabled"] is True
    assert got["displayName"] == "Renamed " + user["displayName"]  # untouched by a partial PATCH


def test_patch_password_is_not_echoed(server, admin):
    user, _ = create_user(server, admin)
    new = new_password()
    r = graph(server, "PATCH", f"/users/{user['id']}", admin,
              json={"passwordProfile": {"password": new, "forceChangePasswordNextSignIn": False}})
    assert r.status_code == 204, f"{r.status_code}: {r.text[:300]}"
    assert new not in r.text
    r = graph(server, "GET", f"/users/{user['id']}", admin)
    assert r.status_code == 200 and new not in r.text


def test_delete_user(server, admin):
    user, _ = create_user(server, admin)
    r = graph(server, "DELETE", f"/users/{user['id']}", admin)
    assert r.status_code == 204, f"{r.status_code}: {r.text[:300]}"
    assert_graph_error(graph(server, "GET", f"/users/{user['id']}", admin), 404, "Request_ResourceNotFound")
    assert_graph_error(graph(server, "GET", f"/users/{user['userPrincipalName']}", admin), 404,
                       "Request_ResourceNotFound")
    assert_graph_error(graph(server, "DELETE", f"/users/{user['id']}", admin), 404, "Request_ResourceNotFound")
    assert user["id"] not in {u["id"] for u in graph_list(server, "/users", admin)}


def test_unknown_objects_are_not_found(server, admin):
    missing = str(uuid.uuid4())
    for method, path, body in (
        ("GET", f"/users/{missing}", None),
        ("GET", f"/users/{unique('nobody')}@keyhaven.localhost", None),
        ("PATCH", f"/users/{missing}", {"displayName": "x"}),
        ("DELETE", f"/users/{missing}", None),
        ("GET", f"/groups/{missing}", None),
        ("GET", f"/groups/{missing}/members", None),
        ("DELETE", f"/groups/{missing}", None),
        ("GET", f"/applications/{missing}", None),
        ("DELETE", f"/applications/{missing}", None),
        ("POST", f"/applications/{missing}/addPassword", {"passwordCredential": {"displayName": "x"}}),
        ("GET", f"/servicePrincipals/{missing}", None),
    ):
        assert_graph_error(graph(server, method, path, admin, json=body), 404, "Request_ResourceNotFound")


# ---------------------------------------------------------------------------
# groups and membership
# ---------------------------------------------------------------------------

def test_group_create_get_delete(server, admin):
    nick = unique("group")
    body = {"displayName": f"Test {nick}", "mailNickname": nick, "mailEnabled": False, "securityEnabled": True}
    r = graph(server, "POST", "/groups", admin, json=body)
    assert r.status_code == 201, f"{r.status_code}: {r.text[:300]}"
    group = r.json()
    assert is_guid(group.get("id")), group
    assert group["displayName"] == body["displayName"]

    got = graph_ok(server, "GET", f"/groups/{group['id']}", admin)
    assert got["id"] == group["id"] and got["displayName"] == body["displayName"]
    assert members(server, admin, group["id"]) == {}

    assert graph(server, "DELETE", f"/groups/{group['id']}", admin).status_code == 204
    assert_graph_error(graph(server, "GET", f"/groups/{group['id']}", admin), 404, "Request_ResourceNotFound")


def test_group_members_of_every_kind(server, admin):
    group = create_group(server, admin)
    user, _ = create_user(server, admin)
    app = create_application(server, admin)
    sp = create_service_principal(server, app["appId"], admin)
    child = create_group(server, admin)

    for member in (user, sp, child):
        r = add_member(server, group["id"], member["id"], admin)
        assert r.status_code == 204, f"add {member['id']}: {r.status_code} {r.text[:300]}"

    assert members(server, admin, group["id"]) == {
        user["id"]: USER_TYPE, sp["id"]: SP_TYPE, child["id"]: GROUP_TYPE,
    }

    r = graph(server, "DELETE", f"/groups/{group['id']}/members/{sp['id']}/$ref", admin)
    assert r.status_code == 204, f"{r.status_code}: {r.text[:300]}"
    assert members(server, admin, group["id"]) == {user["id"]: USER_TYPE, child["id"]: GROUP_TYPE}


def test_adding_a_member_twice_is_bad_request(server, admin):
    group = create_group(server, admin)
    user, _ = create_user(server, admin)
    assert add_member(server, group["id"], user["id"], admin).status_code == 204
    assert_graph_error(add_member(server, group["id"], user["id"], admin), 400, "Request_BadRequest")
    assert members(server, admin, group["id"]) == {user["id"]: USER_TYPE}


def test_adding_an_unknown_object_is_refused(server, admin):
    group = create_group(server, admin)
    r = add_member(server, group["id"], str(uuid.uuid4()), admin)
    assert 400 <= r.status_code < 500, f"{r.status_code}: {r.text[:300]}"
    assert members(server, admin, group["id"]) == {}


def test_transitive_members_flatten_nesting_once_each(server, admin):
    top = create_group(server, admin, prefix="top")
    mid = create_group(server, admin, prefix="mid")
    leaf = create_group(server, admin, prefix="leaf")
    u_top, _ = create_user(server, admin)
    u_mid, _ = create_user(server, admin)
    u_both, _ = create_user(server, admin)

    for group, member in ((top, mid), (mid, leaf), (top, u_top), (mid, u_mid), (mid, u_both), (leaf, u_both)):
        r = add_member(server, group["id"], member["id"], admin)
        assert r.status_code == 204, f"{r.status_code}: {r.text[:300]}"

    assert members(server, admin, top["id"]) == {mid["id"]: GROUP_TYPE, u_top["id"]: USER_TYPE}
    assert members(server, admin, top["id"], "transitiveMembers") == {
        mid["id"]: GROUP_TYPE, leaf["id"]: GROUP_TYPE,
        u_top["id"]: USER_TYPE, u_mid["id"]: USER_TYPE, u_both["id"]: USER_TYPE,
    }
    assert members(server, admin, leaf["id"], "transitiveMembers") == {u_both["id"]: USER_TYPE}


def test_transitive_members_terminate_on_a_cycle(server, admin):
    a = create_group(server, admin, prefix="cyc-a")
    b = create_group(server, admin, prefix="cyc-b")
    c = create_group(server, admin, prefix="cyc-c")
    user, _ = create_user(server, admin)
    for group, member in ((a, b), (b, c), (c, a), (c, user)):
        r = add_member(server, group["id"], member["id"], admin)
        assert r.status_code == 204, f"{r.status_code}: {r.text[:300]}"

    got = members(server, admin, a["id"], "transitiveMembers")
    # Whether a group shows up among its own transitive members through the
    # cycle is not specified; everything else is, each exactly once.
    got.pop(a["id"], None)
    assert got == {b["id"]: GROUP_TYPE, c["id"]: GROUP_TYPE, user["id"]: USER_TYPE}


# ---------------------------------------------------------------------------
# applications and service principals
# ---------------------------------------------------------------------------

def test_application_create_get_delete(server, admin):
    name = unique("app")
    r = graph(server, "POST", "/applications", admin, json={"displayName": name})
    assert r.status_code == 201, f"{r.status_code}: {r.text[:300]}"
    app = r.json()
    assert is_guid(app.get("id")) and is_guid(app.get("appId")), app
    assert app["id"] != app["appId"]
    assert app["displayName"] == name
    assert app["passwordCredentials"] == [] and app["keyCredentials"] == []

    got = graph_ok(server, "GET", f"/applications/{app['id']}", admin)
    assert (got["id"], got["appId"], got["displayName"]) == (app["id"], app["appId"], name)

    assert graph(server, "DELETE", f"/applications/{app['id']}", admin).status_code == 204
    assert_graph_error(graph(server, "GET", f"/applications/{app['id']}", admin), 404, "Request_ResourceNotFound")


def test_two_applications_get_distinct_ids(server, admin):
    a = create_application(server, admin)
    b = create_application(server, admin)
    assert len({a["id"], a["appId"], b["id"], b["appId"]}) == 4


def test_add_password_shows_the_secret_once(server, admin):
    app = create_application(server, admin)
    r = graph(server, "POST", f"/applications/{app['id']}/addPassword", admin,
              json={"passwordCredential": {"displayName": "x", "endDateTime": "2030-01-01T00:00:00Z"}})
    assert r.status_code == 200, f"{r.status_code}: {r.text[:300]}"
    cred = r.json()
    secret = cred.get("secretText")
    assert isinstance(secret, str) and len(secret) >= 16, cred
    assert is_guid(cred.get("keyId")), cred
    assert cred["displayName"] == "x"
    assert cred["endDateTime"].startswith("2030-01-01T00:00:00"), cred
    assert isinstance(cred.get("startDateTime"), str) and cred["startDateTime"], cred
    assert isinstance(cred.get("hint"), str) and cred["hint"] and len(cred["hint"]) < len(secret), cred
    assert secret.startswith(cred["hint"]), cred

    r = graph(server, "GET", f"/applications/{app['id']}", admin)
    assert r.status_code == 200
    assert secret not in r.text
    listed = r.json()["passwordCredentials"]
    assert len(listed) == 1, listed
    assert listed[0]["keyId"] == cred["keyId"]
    assert listed[0]["hint"] == cred["hint"]
    assert listed[0]["displayName"] == "x"
    assert listed[0].get("secretText") is None, listed


def test_remove_password(server, admin):
    app = create_application(server, admin)
    first = add_password(server, app["id"], admin, display_name="one")
    second = add_password(server, app["id"], admin, display_name="two")
    assert first["keyId"] != second["keyId"] and first["secretText"] != second["secretText"]
    keys = {c["keyId"] for c in graph_ok(server, "GET", f"/applications/{app['id']}", admin)["passwordCredentials"]}
    assert keys == {first["keyId"], second["keyId"]}

    r = graph(server, "POST", f"/applications/{app['id']}/removePassword", admin, json={"keyId": first["keyId"]})
    assert r.status_code == 204, f"{r.status_code}: {r.text[:300]}"
    keys = {c["keyId"] for c in graph_ok(server, "GET", f"/applications/{app['id']}", admin)["passwordCredentials"]}
    assert keys == {second["keyId"]}


def test_patch_key_credentials_replaces_the_set(server, admin):
    app = create_application(server, admin)
    c1, c2 = self_signed_certificate(), self_signed_certificate()

    r = graph(server, "PATCH", f"/applications/{app['id']}", admin,
              json={"keyCredentials": [key_credential(c1, "c1")]})
    assert r.status_code == 204, f"{r.status_code}: {r.text[:300]}"
    keys = graph_ok(server, "GET", f"/applications/{app['id']}", admin)["keyCredentials"]
    assert [(k["displayName"], k["type"], k["usage"]) for k in keys] == [("c1", "AsymmetricX509Cert", "Verify")]
    assert is_guid(keys[0].get("keyId")), keys

    graph_ok(server, "PATCH", f"/applications/{app['id']}", admin,
             json={"keyCredentials": [key_credential(c2, "c2")]}, status=204)
    keys = graph_ok(server, "GET", f"/applications/{app['id']}", admin)["keyCredentials"]
    assert [k["displayName"] for k in keys] == ["c2"]

    graph_ok(server, "PATCH", f"/applications/{app['id']}", admin,
             json={"keyCredentials": [key_credential(c1, "c1"), key_credential(c2, "c2")]}, status=204)
    keys = graph_ok(server, "GET", f"/applications/{app['id']}", admin)["keyCredentials"]
    assert sorted(k["displayName"] for k in keys) == ["c1", "c2"]

    graph_ok(server, "PATCH", f"/applications/{app['id']}", admin, json={"keyCredentials": []}, status=204)
    assert graph_ok(server, "GET", f"/applications/{app['id']}", admin)["keyCredentials"] == []


def test_patch_key_credentials_refuses_a_non_certificate(server, admin):
    app = create_application(server, admin)
    bad = {"type": "AsymmetricX509Cert", "usage": "Verify", "key": "bm90IGEgY2VydGlmaWNhdGU=", "displayName": "x"}
    r = graph(server, "PATCH", f"/applications/{app['id']}", admin, json={"keyCredentials": [bad]})
    assert r.status_code == 400, f"{r.status_code}: {r.text[:300]}"
    assert isinstance(r.json().get("error", {}).get("code"), str), r.text
    assert graph_ok(server, "GET", f"/applications/{app['id']}", admin)["keyCredentials"] == []


def test_service_principal_create_and_get(server, admin):
    app = create_application(server, admin)
    r = graph(server, "POST", "/servicePrincipals", admin, json={"appId": app["appId"]})
    assert r.status_code == 201, f"{r.status_code}: {r.text[:300]}"
    sp = r.json()
    assert is_guid(sp.get("id")) and sp["id"] not in (app["id"], app["appId"]), sp
    assert sp["appId"] == app["appId"]
    assert sp["displayName"] == app["displayName"]
    assert sp["servicePrincipalType"] == "Application"

    got = graph_ok(server, "GET", f"/servicePrincipals/{sp['id']}", admin)
    assert (got["id"], got["appId"], got["servicePrincipalType"]) == (sp["id"], app["appId"], "Application")


def test_service_principal_for_an_unknown_app_is_refused(server, admin):
    r = graph(server, "POST", "/servicePrincipals", admin, json={"appId": str(uuid.uuid4())})
    assert 400 <= r.status_code < 500, f"{r.status_code}: {r.text[:300]}"
    assert isinstance(r.json().get("error"), dict)


# ---------------------------------------------------------------------------
# /me and authorization
# ---------------------------------------------------------------------------

def test_me_returns_the_signed_in_user(server, admin):
    user, password = create_user(server, admin)
    cred = user_credential(server, user["userPrincipalName"], password)
    try:
        token = cred.get_token(graph_scope(server)).token
    finally:
        cred.close()
    assert jwt_claims(token)["aud"] == graph_resource(server)
    r = graph(server, "GET", "/me", token)
    assert r.status_code == 200, f"{r.status_code}: {r.text[:300]}"
    me = r.json()
    assert me["id"] == user["id"]
    assert me["userPrincipalName"] == user["userPrincipalName"]
    assert me["displayName"] == user["displayName"]
    assert password not in r.text


def assert_cannot_write(server, token, victim_user, victim_group, victim_app):
    denied = (
        ("POST", "/users", user_body(unique("user"), new_password())),
        ("PATCH", f"/users/{victim_user['id']}", {"accountEnabled": False, "displayName": "pwned"}),
        ("PATCH", f"/users/{victim_user['id']}",
         {"passwordProfile": {"password": new_password(), "forceChangePasswordNextSignIn": False}}),
        ("DELETE", f"/users/{victim_user['id']}", None),
        ("POST", "/groups", {"displayName": unique("g"), "mailNickname": unique("g"), "mailEnabled": False,
                             "securityEnabled": True}),
        ("POST", f"/groups/{victim_group['id']}/members/$ref", directory_object_ref(server, victim_user["id"])),
        ("DELETE", f"/groups/{victim_group['id']}", None),
        ("POST", "/applications", {"displayName": unique("app")}),
        ("POST", f"/applications/{victim_app['id']}/addPassword", {"passwordCredential": {"displayName": "x"}}),
        ("PATCH", f"/applications/{victim_app['id']}",
         {"keyCredentials": [key_credential(self_signed_certificate())]}),
        ("DELETE", f"/applications/{victim_app['id']}", None),
        ("POST", "/servicePrincipals", {"appId": victim_app["appId"]}),
        # Nor make anyone (itself included) a directory administrator.
        ("POST", "/roleManagement/directory/roleAssignments",
         {"principalId": victim_user["id"], "roleDefinitionId": GLOBAL_ADMIN, "directoryScopeId": "/"}),
    )
    for method, path, body in denied:
        assert_graph_error(graph(server, method, path, token, json=body), 403, "Authorization_RequestDenied")


def assert_nothing_changed(server, admin, user, group, app):
    got = graph_ok(server, "GET", f"/users/{user['id']}", admin)
    assert got["accountEnabled"] is True and got["displayName"] == user["displayName"]
    assert members(server, admin, group["id"]) == {}
    got_app = graph_ok(server, "GET", f"/applications/{app['id']}", admin)
    assert got_app["passwordCredentials"] == [] and got_app["keyCredentials"] == []


def assert_can_read(server, token, user, group, app):
    assert graph_ok(server, "GET", f"/users/{user['id']}", token)["id"] == user["id"]
    assert graph_ok(server, "GET", f"/users/{user['userPrincipalName']}", token)["id"] == user["id"]
    assert user["id"] in {u["id"] for u in graph_list(server, "/users", token)}
    assert graph_ok(server, "GET", f"/groups/{group['id']}", token)["id"] == group["id"]
    graph_ok(server, "GET", f"/groups/{group['id']}/members", token)
    assert graph_ok(server, "GET", f"/applications/{app['id']}", token)["id"] == app["id"]


def test_new_service_principal_can_read_but_not_write(server, admin):
    victim_user, _ = create_user(server, admin)
    victim_group = create_group(server, admin)
    victim_app = create_application(server, admin)
    app, sp, secret = new_app_with_secret(server)

    token = graph_token(server, client_id=app["appId"], client_secret=secret)
    assert jwt_claims(token)["oid"] == sp["id"]
    assert_can_read(server, token, victim_user, victim_group, victim_app)
    assert_cannot_write(server, token, victim_user, victim_group, victim_app)
    assert_nothing_changed(server, admin, victim_user, victim_group, victim_app)


def test_new_user_can_read_but_not_write(server, admin):
    victim_user, _ = create_user(server, admin)
    victim_group = create_group(server, admin)
    victim_app = create_application(server, admin)
    user, password = create_user(server, admin)

    cred = user_credential(server, user["userPrincipalName"], password)
    try:
        token = cred.get_token(graph_scope(server)).token
    finally:
        cred.close()
    assert jwt_claims(token)["oid"] == user["id"]
    assert_can_read(server, token, victim_user, victim_group, victim_app)
    assert_cannot_write(server, token, victim_user, victim_group, victim_app)
    assert_nothing_changed(server, admin, victim_user, victim_group, victim_app)


def test_secret_credential_of_a_new_app_is_usable_through_the_sdk(server, admin):
    """ClientSecretCredential of an app made through Graph gets a Graph token for its own SP."""
    app, sp, secret = new_app_with_secret(server)
    cred = app_secret_credential(server, app["appId"], secret)
    try:
        claims = jwt_claims(cred.get_token(graph_scope(server)).token)
    finally:
        cred.close()
    assert claims["aud"] == graph_resource(server)
    assert claims["appid"] == app["appId"] and claims["oid"] == sp["id"]


def test_a_directory_role_assignment_makes_a_user_an_administrator_until_it_is_removed(server, admin):
    """Graph's roleManagement/directory/roleAssignments: the bootstrap
    administrator makes a user Global Administrator; the user can then write
    the directory (and grant the role on); removed, the user cannot. Only
    Global Administrator exists; groups cannot hold it."""
    user, password = create_user(server, admin)
    other, _ = create_user(server, admin)

    def user_token():
        cred = user_credential(server, user["userPrincipalName"], password)
        try:
            return cred.get_token(graph_scope(server)).token
        finally:
            cred.close()
    body = {"principalId": user["id"], "roleDefinitionId": GLOBAL_ADMIN, "directoryScopeId": "/"}
    a = graph_ok(server, "POST", "/roleManagement/directory/roleAssignments", admin, json=body, status=201)
    assert (a["principalId"], a["roleDefinitionId"], a["directoryScopeId"]) == (user["id"], GLOBAL_ADMIN, "/")
    assert_graph_error(graph(server, "POST", "/roleManagement/directory/roleAssignments", admin, json=body),
                       400, "Request_BadRequest")
    listed = graph(server, "GET", "/roleManagement/directory/roleAssignments", admin,
                   params={"$filter": f"principalId eq '{user['id']}'"}).json()["value"]
    assert [x["id"] for x in listed] == [a["id"]]
    assert a["id"] in {x["id"] for x in graph_ok(server, "GET", "/roleManagement/directory/roleAssignments", admin)["value"]}

    outsider, outsider_password = create_user(server, admin)
    cred = user_credential(server, outsider["userPrincipalName"], outsider_password)
    try:
        outsider_token = cred.get_token(graph_scope(server)).token
    finally:
        cred.close()
    # One principal's role is anyone's to read; the whole list is the admins'.
    assert graph(server, "GET", "/roleManagement/directory/roleAssignments", outsider_token,
                 params={"$filter": f"principalId eq '{user['id']}'"}).json()["value"][0]["id"] == a["id"]
    assert_graph_error(graph(server, "GET", "/roleManagement/directory/roleAssignments", outsider_token),
                       403, "Authorization_RequestDenied")

    token = user_token()
    made = graph_ok(server, "POST", "/users", token, json=user_body(unique("byadmin"), new_password()), status=201)
    graph_ok(server, "POST", "/roleManagement/directory/roleAssignments", token, status=201,
             json={"principalId": other["id"], "roleDefinitionId": GLOBAL_ADMIN})

    for bad in ({**body, "roleDefinitionId": "9b895d92-2cd3-44c7-9d02-a6ac2d5ea5c3"},
                {**body, "principalId": create_group(server, admin)["id"]},
                {**body, "directoryScopeId": "/administrativeUnits/x"}):
        assert_graph_error(graph(server, "POST", "/roleManagement/directory/roleAssignments", admin, json=bad),
                           400, "Request_BadRequest")

    assert graph(server, "DELETE", f"/roleManagement/directory/roleAssignments/{a['id']}", admin).status_code == 204
    assert_graph_error(graph(server, "DELETE", f"/roleManagement/directory/roleAssignments/{a['id']}", admin),
                       404, "Request_ResourceNotFound")
    assert graph(server, "GET", "/roleManagement/directory/roleAssignments", admin,
                 params={"$filter": f"principalId eq '{user['id']}'"}).json()["value"] == []
    assert_graph_error(graph(server, "POST", "/users", user_token(), json=user_body(unique("late"), new_password())),
                       403, "Authorization_RequestDenied")
    graph(server, "DELETE", f"/users/{made['id']}", admin)
