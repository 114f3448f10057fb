"""Raw REST checks of the data plane (requests + a real token): api-version
handling, wire formats the SDK depends on, and error bodies."""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import pytest
import requests

from khcompat import ACCEPTED_API_VERSIONS, unique


def assert_azure_error(resp, status: int, code: str = None) -> dict:
    assert resp.status_code == status, f"want {status}, got {resp.status_code}: {resp.text[:500]}"
    assert resp.headers.get("Content-Type", "").startswith("application/json"), resp.headers.get("Content-Type")
    body = resp.json()
    assert isinstance(body.get("error"), dict), f"not an Azure error body: {body}"
    assert isinstance(body["error"].get("code"), str) and body["error"]["code"], body
    assert isinstance(body["error"].get("message"), str) and body["error"]["message"], body
    if code is not None:
        assert body["error"]["code"] == code, body
    return body


@pytest.fixture(scope="module")
def stored(server, client):
    """One secret (two versions) that the raw tests read."""
    n = unique("rest")
    client.set_secret(n, "rest value 1")
    s = client.set_secret(n, "rest value 2", content_type="text/plain", tags={"t": "1"})
    return n, s.properties.version


@pytest.mark.parametrize("api_version", ACCEPTED_API_VERSIONS)
def test_every_supported_api_version_is_served(server, token, stored, api_version):
    n, version = stored
    r = server.vault_request("GET", f"/secrets/{n}", token=token, api_version=api_version)
    assert r.status_code == 200, f"api-version={api_version}: {r.status_code} {r.text[:300]}"
    body = r.json()
    assert body["value"] == "rest value 2"
    assert body["id"] == f"{server.vault_url}/secrets/{n}/{version}"

    r = server.vault_request("GET", f"/secrets/{n}/{version}", token=token, api_version=api_version)
    assert r.status_code == 200 and r.json()["value"] == "rest value 2"


def test_missing_api_version_is_bad_parameter(server, token, stored):
    n, _ = stored
    r = server.vault_request("GET", f"/secrets/{n}", token=token, api_version=None)
    assert_azure_error(r, 400, "BadParameter")


@pytest.mark.parametrize("api_version", ["1999-01-01", "7.9", "banana", ""])
def test_unknown_api_version_is_bad_parameter(server, token, stored, api_version):
    n, _ = stored
    r = server.vault_request("GET", f"/secrets/{n}", token=token, api_version=api_version)
    assert_azure_error(r, 400, "BadParameter")


def test_unknown_api_version_on_write_changes_nothing(server, token):
    n = unique("rest")
    r = server.vault_request("PUT", f"/secrets/{n}", token=token, api_version="1999-01-01", json={"value": "x"})
    assert_azure_error(r, 400, "BadParameter")
    r = server.vault_request("GET", f"/secrets/{n}", token=token)
    assert r.status_code == 404


def test_secret_bundle_wire_format(server, token, stored):
    """Field names and types that the SDK's deserializer relies on."""
    n, version = stored
    r = server.vault_request("GET", f"/secrets/{n}", token=token)
    assert r.status_code == 200
    assert r.headers.get("Content-Type", "").startswith("application/json")
    body = r.json()
    assert body["contentType"] == "text/plain"
    assert body["tags"] == {"t": "1"}
    attrs = body["attributes"]
    assert attrs["enabled"] is True
    for field in ("created", "updated"):
        assert isinstance(attrs[field], int), f"attributes.{field} must be unix seconds, got {attrs[field]!r}"
    assert isinstance(attrs.get("recoveryLevel"), str) and attrs["recoveryLevel"].startswith("Recoverable")
    assert attrs.get("recoverableDays") == 90


def test_put_response_is_the_new_bundle(server, token):
    n = unique("rest")
    r = server.vault_request("PUT", f"/secrets/{n}", token=token,
                             json={"value": "via rest", "contentType": "ct", "tags": {"a": "b"},
                                   "attributes": {"enabled": True}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["value"] == "via rest" and body["contentType"] == "ct" and body["tags"] == {"a": "b"}
    assert body["id"].startswith(f"{server.vault_url}/secrets/{n}/")


def test_list_is_paged_with_absolute_next_link_and_no_values(server, token, stored):
    # Make sure there are more than two secrets.
    for _ in range(3):
        r = server.vault_request("PUT", f"/secrets/{unique('rest')}", token=token, json={"value": "v"})
        assert r.status_code == 200
    r = server.vault_request("GET", "/secrets", token=token, params={"maxresults": "2"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body["value"], list) and 0 < len(body["value"]) <= 2
    for item in body["value"]:
        assert "value" not in item, "list items must not carry secret values"
        assert item["id"].startswith(f"{server.vault_url}/secrets/")
        assert "attributes" in item
    next_link = body.get("nextLink")
    assert next_link, "more secrets exist than maxresults: nextLink expected"
    parsed = urlparse(next_link)
    # The SDK follows nextLink as an absolute URL on the same vault (it only swaps in its api-version).
    assert f"{parsed.scheme}://{parsed.netloc}" == server.vault_url
    assert parsed.path == "/secrets"
    query = parse_qs(parsed.query)
    params = {} if "api-version" in query else {"api-version": "2026-04-01"}
    r2 = requests.get(next_link, params=params, headers={"Authorization": f"Bearer {token}"},
                      verify=server.ca_cert, timeout=30)
    assert r2.status_code == 200, r2.text
    page2 = r2.json()["value"]
    assert 0 < len(page2) <= 2
    assert not {i["id"] for i in page2} & {i["id"] for i in body["value"]}


def test_missing_secret_error_body(server, token):
    r = server.vault_request("GET", f"/secrets/{unique('missing')}", token=token)
    assert_azure_error(r, 404)


@pytest.mark.parametrize("bad_name", ["bad_name", "a" * 128, "bad.name"])
def test_invalid_name_raw_is_400(server, token, bad_name):
    r = server.vault_request("PUT", f"/secrets/{bad_name}", token=token, json={"value": "x"})
    assert_azure_error(r, 400)


def test_malformed_json_body_is_400(server, token):
    n = unique("rest")
    r = server.vault_request("PUT", f"/secrets/{n}", token=token, data=b"{not json",
                             headers={"Content-Type": "application/json"})
    assert_azure_error(r, 400)
    r = server.vault_request("PUT", f"/secrets/{n}", token=token, json={"contentType": "no value"})
    assert_azure_error(r, 400)


def test_unauthenticated_bodiless_put_gets_the_challenge(server):
    """The SDK's first request to a vault is a copy of the real one with the
    body stripped (Content-Length: 0, Content-Type still set) and no token;
    it needs a 401 challenge back, not a body-validation error."""
    r = server.vault_request("PUT", f"/secrets/{unique('rest')}", data=b"",
                             headers={"Content-Type": "application/json", "Content-Length": "0"})
    assert r.status_code == 401, f"{r.status_code}: {r.text[:300]}"
    assert r.headers.get("WWW-Authenticate", "").startswith("Bearer ")
