"""The endpoints the Azure CLI needs beyond the SDKs', requested raw: their
shapes, their bad-input answers, and their authentication. The CLI itself
drives them in test_azure_cli.py."""

from __future__ import annotations

import re
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from khcompat import (
    AZURE_CLI_CLIENT_ID,
    HTTP_TIMEOUT,
    arm,
    assert_arm_error,
    assert_graph_error,
    create_group,
    create_user,
    graph,
    graph_token,
    jwt_claims,
    management_token,
    unique,
)

WS_API = "2025-02-01"


def test_cloud_metadata_is_public_and_names_every_endpoint(server):
    port = server.management_url.rsplit(":", 1)[1]
    for path in ("/metadata/endpoints", "//metadata/endpoints"):
        r = requests.get(server.management_url + path, params={"api-version": "2022-09-01"},
                         verify=server.ca_cert, timeout=HTTP_TIMEOUT)
        assert r.status_code == 200, r.text
        m = r.json()
        assert m["resourceManager"] == f"{server.management_url}/"
        assert m["authentication"]["loginEndpoint"] == server.authority_host
        assert m["authentication"]["audiences"] == [f"{server.management_url}/"]
        assert m["microsoftGraphResourceId"] == f"https://graph.localhost:{port}/"
        assert m["suffixes"]["keyVaultDns"] == server.vault_host_suffix
    r = requests.post(server.management_url + "/metadata/endpoints", params={"api-version": "2022-09-01"},
                      verify=server.ca_cert, timeout=HTTP_TIMEOUT)
    assert_arm_error(r, 405, "MethodNotAllowed")


def test_tenants_lists_the_one_tenant(server):
    r = arm(server, "GET", "/tenants", management_token(server), api_version="2022-12-01")
    assert r.status_code == 200, r.text
    assert [(t["tenantId"], t["id"]) for t in r.json()["value"]] == \
        [(server.tenant_id, f"/tenants/{server.tenant_id}")]
    assert_arm_error(arm(server, "GET", "/tenants", None, api_version="2022-12-01"), 401, "AuthenticationFailed")


@pytest.mark.parametrize("alias", ["common", "organizations", "ORGANIZATIONS"])
def test_multi_tenant_aliases_name_the_deployment_tenant(server, alias):
    r = requests.get(f"{server.authority_host}/{alias}/v2.0/.well-known/openid-configuration",
                     verify=server.ca_cert, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text
    assert r.json()["token_endpoint"] == f"{server.authority_host}/{alias}/oauth2/v2.0/token"
    r = requests.post(f"{server.authority_host}/{alias}/oauth2/v2.0/token", data={
        "grant_type": "client_credentials", "client_id": server.client_id,
        "client_secret": server.client_secret, "scope": server.vault_scope},
        verify=server.ca_cert, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text
    r = requests.get(f"{server.authority_host}/consumers/v2.0/.well-known/openid-configuration",
                     verify=server.ca_cert, timeout=HTTP_TIMEOUT)
    assert r.status_code == 400 and "AADSTS90002" in r.json()["error_description"]


def test_get_by_ids_returns_known_objects_of_the_asked_types(server):
    token = graph_token(server)
    user, _ = create_user(server, token, prefix="byid")
    group = create_group(server, token, prefix="byid")
    missing = str(uuid.uuid4())
    ids = [user["id"], group["id"], missing]

    def by_ids(body):
        return graph(server, "POST", "/directoryObjects/getByIds", token, json=body)

    r = by_ids({"ids": ids, "types": ["user", "group", "servicePrincipal"]})
    assert r.status_code == 200, r.text
    got = {o["id"]: o for o in r.json()["value"]}
    assert set(got) == {user["id"], group["id"]}
    assert got[user["id"]]["@odata.type"] == "#microsoft.graph.user"
    assert got[user["id"]]["userPrincipalName"] == user["userPrincipalName"]
    assert got[group["id"]]["@odata.type"] == "#microsoft.graph.group"
    r = by_ids({"ids": ids, "types": ["user"]})
    assert [o["id"] for o in r.json()["value"]] == [user["id"]]
    r = by_ids({"ids": ids})
    assert {o["id"] for o in r.json()["value"]} == {user["id"], group["id"]}
    assert_graph_error(by_ids({"ids": ["not-a-guid"]}), 400, "Request_BadRequest")
    assert_graph_error(by_ids({"ids": []}), 400, "Request_BadRequest")
    assert_graph_error(by_ids({"ids": [missing] * 1001}), 400, "Request_BadRequest")
    assert_graph_error(by_ids({"types": ["user"]}), 400, "Request_BadRequest")
    assert_graph_error(graph(server, "POST", "/directoryObjects/getByIds", None, json={"ids": ids}),
                       401, "InvalidAuthenticationToken")


def test_workspaces_lifecycle_and_bad_input(server):
    token = management_token(server)
    sub = server.subscription_id
    rg = unique("wsrg")
    assert arm(server, "PUT", f"/subscriptions/{sub}/resourcegroups/{rg}", token, json={"location": "eastus"},
               api_version="2022-09-01").status_code == 201
    base = f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.OperationalInsights/workspaces"
    r = arm(server, "PUT", f"{base}/law-one", token, json={"location": "eastus"}, api_version=WS_API)
    assert r.status_code == 201, r.text
    ws = r.json()
    assert ws["properties"]["provisioningState"] == "Succeeded" and ws["properties"]["retentionInDays"] == 30
    customer = ws["properties"]["customerId"]
    r = arm(server, "PUT", f"{base}/law-one", token, json={"location": "eastus", "tags": {"a": "b"},
            "properties": {"retentionInDays": 90}}, api_version=WS_API)
    assert r.status_code == 200, r.text
    assert r.json()["properties"]["customerId"] == customer
    assert r.json()["properties"]["retentionInDays"] == 90 and r.json()["tags"] == {"a": "b"}
    listed = arm(server, "GET", base, token, api_version=WS_API).json()["value"]
    assert [w["name"] for w in listed] == ["law-one"]
    for name, body in [("law-one", {"location": "eastus", "properties": {"retentionInDays": 5}}),
                       ("law-one", {"location": "eastus", "properties": {"retentionInDays": "x"}}),
                       ("x", {"location": "eastus"}),
                       ("bad_name", {"location": "eastus"})]:
        assert_arm_error(arm(server, "PUT", f"{base}/{name}", token, json=body, api_version=WS_API),
                         400, "InvalidParameter")
    assert_arm_error(arm(server, "PUT", f"{base}/law-two", token, json={}, api_version=WS_API),
                     400, "LocationRequired")
    missing_rg = f"/subscriptions/{sub}/resourceGroups/{unique('nosuch')}/providers/Microsoft.OperationalInsights/workspaces/law-x"
    assert arm(server, "PUT", missing_rg, token, json={"location": "eastus"}, api_version=WS_API).status_code == 404
    # Deleting the group removes its workspaces.
    assert arm(server, "DELETE", f"/subscriptions/{sub}/resourcegroups/{rg}", token,
               api_version="2022-09-01").status_code == 200
    assert_arm_error(arm(server, "GET", f"{base}/law-one", token, api_version=WS_API), 404, "ResourceNotFound")
    assert arm(server, "DELETE", f"{base}/law-one", token, api_version=WS_API).status_code == 204


def test_managed_hsm_lists_are_empty(server):
    token = management_token(server)
    sub = server.subscription_id
    for path in (f"/subscriptions/{sub}/providers/Microsoft.KeyVault/managedHSMs",
                 f"/subscriptions/{sub}/providers/Microsoft.KeyVault/deletedManagedHSMs",
                 f"/subscriptions/{sub}/resourceGroups/{server.resource_group}/providers/Microsoft.KeyVault/managedHSMs"):
        r = arm(server, "GET", path, token, api_version="2026-02-01")
        assert r.status_code == 200 and r.json() == {"value": []}, r.text


@pytest.mark.parametrize("version", ["7.6-preview.2", "7.5-preview.1", "7.4-preview.1"])
def test_preview_api_versions_the_cli_sends_are_accepted(server, token, version):
    r = requests.get(f"{server.vault_url}/secrets", params={"api-version": version},
                     headers={"Authorization": f"Bearer {token}"}, verify=server.ca_cert, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text
    r = requests.get(f"{server.vault_url}/secrets", params={"api-version": "7.6-preview.9"},
                     headers={"Authorization": f"Bearer {token}"}, verify=server.ca_cert, timeout=HTTP_TIMEOUT)
    assert r.status_code == 400 and r.json()["error"]["code"] == "BadParameter"


# -- Browser sign-in: the authorization endpoint (authorization code + PKCE) ------

def _pkce():
    import base64
    import hashlib
    import secrets
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def _authorize_url(server) -> str:
    return f"{server.authority_host}/{server.tenant_id}/oauth2/v2.0/authorize"


def _authorize_params(server, challenge, **over):
    p = {"client_id": AZURE_CLI_CLIENT_ID, "response_type": "code", "redirect_uri": "http://localhost:49152",
         "scope": f"{server.management_url}//.default offline_access openid profile",
         "state": 'st"><script>alert(1)</script>', "code_challenge": challenge,
         "code_challenge_method": "S256", "nonce": "n-123"}
    p.update(over)
    return {k: v for k, v in p.items() if v is not None}


def _sign_in(server, params, username, password):
    return requests.post(_authorize_url(server), data=dict(params, username=username, password=password),
                         verify=server.ca_cert, timeout=HTTP_TIMEOUT, allow_redirects=False)


def _redeem(server, code, verifier, redirect_uri="http://localhost:49152"):
    return requests.post(server.token_url(), data={
        "grant_type": "authorization_code", "client_id": AZURE_CLI_CLIENT_ID, "code": code,
        "redirect_uri": redirect_uri, "code_verifier": verifier, "client_info": "1",
        "scope": f"{server.management_url}//.default offline_access openid profile"},
        verify=server.ca_cert, timeout=HTTP_TIMEOUT)


def test_authorize_page_escapes_what_it_echoes_and_refuses_bad_requests(server):
    _, challenge = _pkce()
    r = requests.get(_authorize_url(server), params=_authorize_params(server, challenge),
                     verify=server.ca_cert, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html"), r.text[:300]
    assert "<script>" not in r.text and "&lt;script&gt;" in r.text
    assert r.headers["Cache-Control"] == "no-store" and "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
    for over in ({"redirect_uri": "https://evil.example/cb"}, {"redirect_uri": "http://localhost.evil.example"},
                 {"client_id": server.client_id}, {"client_id": str(uuid.uuid4())},
                 {"code_challenge": None}, {"code_challenge_method": "plain"}, {"response_type": "token"},
                 {"scope": "https://elsewhere.example/.default"}, {"response_mode": "fragment"}):
        r = requests.get(_authorize_url(server), params=_authorize_params(server, challenge, **over),
                         verify=server.ca_cert, timeout=HTTP_TIMEOUT, allow_redirects=False)
        assert r.status_code == 400 and "Location" not in r.headers, (over, r.status_code, r.text[:300])
        assert r.headers["Content-Type"].startswith("text/html")
    r = requests.get(f"{server.authority_host}/consumers/oauth2/v2.0/authorize",
                     params=_authorize_params(server, challenge), verify=server.ca_cert, timeout=HTTP_TIMEOUT)
    assert r.status_code == 400


def test_authorization_code_flow_with_pkce(server):
    user, password = create_user(server, graph_token(server), prefix="browser")
    upn = user["userPrincipalName"]
    verifier, challenge = _pkce()
    params = _authorize_params(server, challenge, response_mode="query")
    # A wrong password shows the form again; nothing is redirected.
    r = _sign_in(server, params, upn, "wrong-" + password)
    assert r.status_code == 200 and "Location" not in r.headers and "incorrect" in r.text
    assert password not in r.text

    def signed_in_code():
        r = _sign_in(server, params, upn, password)
        assert r.status_code == 302, r.text[:300]
        loc = r.headers["Location"]
        assert loc.startswith("http://localhost:49152?")
        q = parse_qs(urlsplit(loc).query)
        assert q["state"] == [params["state"]]
        return q["code"][0]

    # A wrong verifier burns the code: the right one cannot use it afterwards.
    code = signed_in_code()
    bad = _redeem(server, code, verifier[:-1] + ("A" if verifier[-1] != "A" else "B"))
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_grant", bad.text
    again = _redeem(server, code, verifier)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant", again.text
    # Another redirect URI than the request's is refused.
    code = signed_in_code()
    r = _redeem(server, code, verifier, redirect_uri="http://localhost:49153")
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    # The right verifier gets tokens; the id token carries the request's nonce.
    code = signed_in_code()
    r = _redeem(server, code, verifier)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["refresh_token"] and body["client_info"]
    access = jwt_claims(body["access_token"])
    assert access["oid"] == user["id"] and access["aud"] == server.management_url
    assert access["appid"] == AZURE_CLI_CLIENT_ID
    idt = jwt_claims(body["id_token"])
    assert idt["nonce"] == "n-123" and idt["aud"] == AZURE_CLI_CLIENT_ID and idt["oid"] == user["id"]
    # The code was single use.
    assert _redeem(server, code, verifier).status_code == 400


def test_form_post_response_posts_the_code_to_the_listener(server):
    user, password = create_user(server, graph_token(server), prefix="formpost")
    verifier, challenge = _pkce()
    params = _authorize_params(server, challenge, response_mode="form_post")
    r = _sign_in(server, params, user["userPrincipalName"], password)
    assert r.status_code == 200 and "Location" not in r.headers, r.text[:300]
    assert 'action="http://localhost:49152"' in r.text
    assert "script-src 'sha256-" in r.headers["Content-Security-Policy"]
    code = re.search(r'name="code" value="([^"]+)"', r.text).group(1)
    assert 'name="state" value="st&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"' in r.text
    assert _redeem(server, code, verifier).status_code == 200


def test_interactive_browser_credential(server, tmp_path, monkeypatch):
    """azure-identity's InteractiveBrowserCredential (msal's interactive flow,
    as `az login` uses it) with the Azure CLI's client id; the browser is
    browser_login.py (see test_azure_cli.py)."""
    import sys
    import webbrowser
    from pathlib import Path

    from azure.identity import InteractiveBrowserCredential

    user, password = create_user(server, graph_token(server), prefix="ibc")
    log = tmp_path / "browser.json"
    monkeypatch.setenv("BROWSER", f"{sys.executable} {Path(__file__).with_name('browser_login.py')} %s")
    for k, v in {"KH_BROWSER_USER": user["userPrincipalName"], "KH_BROWSER_PASSWORD": password,
                 "KH_BROWSER_CA": server.ca_cert, "KH_BROWSER_LOG": str(log)}.items():
        monkeypatch.setenv(k, v)
    # webbrowser reads BROWSER once, when it first registers browsers.
    monkeypatch.setattr(webbrowser, "_tryorder", None)
    monkeypatch.setattr(webbrowser, "_browsers", {})
    cred = InteractiveBrowserCredential(client_id=AZURE_CLI_CLIENT_ID, tenant_id=server.tenant_id,
                                        authority=server.authority_host, disable_instance_discovery=True,
                                        timeout=60)
    token = cred.get_token(server.vault_scope)
    assert jwt_claims(token.token)["oid"] == user["id"], log.read_text() if log.exists() else "no browser log"
