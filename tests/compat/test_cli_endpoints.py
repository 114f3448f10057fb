"""The endpoints the Azure CLI needs beyond the SDKs', requested raw: their
shapes, their bad-input answers, and their authentication. The CLI itself
drives them in test_azure_cli.py."""

from __future__ import annotations

import uuid

import pytest
import requests

from khcompat import (
    HTTP_TIMEOUT,
    arm,
    assert_arm_error,
    assert_graph_error,
    create_group,
    create_user,
    graph,
    graph_token,
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
