"""The `keyhaven` admin subcommands: HTTP clients of a running server that
read bootstrap.json, as an operator would use them."""

from __future__ import annotations

import json
import subprocess

from khcompat import KEYHAVEN_BIN, graph, graph_token, jwt_claims, unique

TIMEOUT = 60


def kh(server, *args: str, stdin: str | None = None) -> dict:
    out = subprocess.run(
        [KEYHAVEN_BIN, *args, "--bootstrap", str(server.data_dir / "bootstrap.json")],
        input=stdin, capture_output=True, text=True, timeout=TIMEOUT,
    )
    assert out.returncode == 0, f"keyhaven {' '.join(args)} failed: {out.stderr}"
    return json.loads(out.stdout) if out.stdout.strip() else {}


def test_cli_manages_users_groups_and_apps(server):
    upn = f"{unique('cli')}@example.test"
    user = kh(server, "user", "create", "--upn", upn, "--display-name", "CLI User", stdin="Pa55word-cli!\n")
    assert user["userPrincipalName"] == upn and user["accountEnabled"] is True
    assert "Pa55word" not in json.dumps(user)
    group = kh(server, "group", "create", "--display-name", unique("cligroup"))
    kh(server, "group", "add-member", group["id"], user["id"])
    members = kh(server, "group", "members", group["id"])
    assert [m["id"] for m in members["value"]] == [user["id"]]
    disabled = kh(server, "user", "set-enabled", user["id"], "false")
    assert disabled["accountEnabled"] is False

    made = kh(server, "app", "create", "--display-name", unique("cliapp"), "--secret")
    app_id = made["application"]["appId"]
    assert made["servicePrincipal"]["appId"] == app_id
    secret = made["password"]["secretText"]
    r = server.request_token(server.vault_scope, client_id=app_id, client_secret=secret)
    assert r.status_code == 200, r.text
    assert jwt_claims(r.json()["access_token"])["oid"] == made["servicePrincipal"]["id"]
    # Graph sees what the CLI made.
    admin = graph_token(server)
    got = graph(server, "GET", f"/users/{user['id']}", admin)
    assert got.status_code == 200 and got.json()["accountEnabled"] is False


def test_cli_reports_server_errors_and_exits_non_zero(server):
    out = subprocess.run(
        [KEYHAVEN_BIN, "user", "show", "00000000-0000-0000-0000-000000000000",
         "--bootstrap", str(server.data_dir / "bootstrap.json")],
        capture_output=True, text=True, timeout=TIMEOUT,
    )
    assert out.returncode != 0
    assert "404" in out.stderr and "Request_ResourceNotFound" in out.stderr


def test_cli_creates_identities_and_workloads(server):
    ident = kh(server, "identity", "create", "--name", unique("cliid"))
    assert ident["type"] == "Microsoft.ManagedIdentity/userAssignedIdentities"
    wl = kh(server, "workload", "create", "--name", unique("cliwl"), "--address", "192.0.2.77",
            "--system-assigned", "--identity", ident["id"])
    assert wl["properties"]["addresses"] == ["192.0.2.77"]
    assert wl["identity"]["principalId"]
    assert ident["id"] in wl["identity"]["userAssignedIdentities"]


def test_disabled_service_principal_gets_no_token(server):
    made = kh(server, "app", "create", "--display-name", unique("cliapp"), "--secret")
    app_id, secret = made["application"]["appId"], made["password"]["secretText"]
    admin = graph_token(server)
    r = graph(server, "PATCH", f"/servicePrincipals/{made['servicePrincipal']['id']}", admin,
              json={"accountEnabled": False})
    assert r.status_code == 204, r.text
    r = server.request_token(server.vault_scope, client_id=app_id, client_secret=secret)
    assert r.status_code == 401 and r.json()["error"] == "invalid_client", r.text
    assert r.json()["error_codes"] == [7000112]
