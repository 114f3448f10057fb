"""The device authorization grant (RFC 8628) as Entra ID and msal speak it:
the device-code endpoint, the verification page at {authority}/device where
the user signs in with the code, and polling the token endpoint; then
azure-identity's DeviceCodeCredential end to end.

What the SDK does (msal 1.39.0): discovery's device_authorization_endpoint is
required (authority.py:118; oauth2cli/oauth2.py:377-379). Initiation POSTs
client_id and the scopes decorated with offline_access/openid/profile
(application.py:2557-2565, oauth2.py:380-385) and reads interval and
expires_in as ints, defaulting to 5 and 1800 (oauth2.py:389-390). Polling
POSTs grant_type=urn:ietf:params:oauth:grant-type:device_code with
device_code AND code (the same value), client_id and client_info=1
(application.py:2589-2597, oauth2.py:400-405); "authorization_pending" and
"slow_down" keep it polling every `interval` seconds (oauth2.py:356, 442-450),
anything else ends it. azure-identity then builds an AuthenticationRecord from
the id token (aud, iss, tid, preferred_username or upn) and client_info
(_internal/interactive.py:58-83), and calls prompt_callback(verification_uri,
user_code, expires_on) before polling (_credentials/device_code.py:96-99).
"""

from __future__ import annotations

import json
import threading
import time

import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

from khcompat import (
    AZURE_CLI_CLIENT_ID,
    CLIENT_KWARGS,
    DEVICE_CODE_GRANT,
    HTTP_TIMEOUT,
    OIDC_SCOPES,
    KeyhavenServer,
    b64url_decode,
    create_user,
    graph_token,
    jwt_claims,
    module_server,
    unique,
)


@pytest.fixture(scope="module")
def dc_server(store_kind, tmp_path_factory):
    with module_server(KeyhavenServer, store_kind, tmp_path_factory.mktemp(f"dc-{store_kind}")) as srv:
        yield srv


@pytest.fixture
def server(dc_server):
    """This module's private server (shadows conftest's shared `server`)."""
    return dc_server


@pytest.fixture
def user(server):
    """(user JSON, password) of a new user."""
    return create_user(server, graph_token(server), prefix="dc")


def devicecode_url(server) -> str:
    return f"{server.authority_host}/{server.tenant_id}/oauth2/v2.0/devicecode"


def start_flow(server, scope=None, client_id=AZURE_CLI_CLIENT_ID) -> requests.Response:
    """The initiation request as msal sends it."""
    scopes = sorted({scope or server.vault_scope, *OIDC_SCOPES})
    return requests.post(devicecode_url(server), data={"client_id": client_id, "scope": " ".join(scopes)},
                         verify=server.ca_cert, timeout=HTTP_TIMEOUT)


def started_flow(server, scope=None) -> dict:
    r = start_flow(server, scope)
    assert r.status_code == 200, f"devicecode: {r.status_code} {r.text[:500]}"
    return r.json()


def poll(server, device_code, client_id=AZURE_CLI_CLIENT_ID) -> requests.Response:
    """One polling request as msal sends it (device_code and code, client_info=1)."""
    return requests.post(server.token_url(), data={
        "grant_type": DEVICE_CODE_GRANT, "device_code": device_code, "code": device_code,
        "client_id": client_id, "client_info": "1"}, verify=server.ca_cert, timeout=HTTP_TIMEOUT)


def submit(server, code, username, password, url=None) -> requests.Response:
    """The verification pages' forms, as a browser posts them: the code, then
    (on the page that names the application and resource) the credentials."""
    url = url or f"{server.authority_host}/device"
    first = requests.post(url, data={"code": code}, verify=server.ca_cert,
                          timeout=HTTP_TIMEOUT, allow_redirects=False)
    if first.status_code != 200:
        return first
    assert "asks to act as you" in first.text, first.text[:800]
    return requests.post(url, data={"code": code, "username": username, "password": password,
                                    "confirm": "yes"},
                         verify=server.ca_cert, timeout=HTTP_TIMEOUT, allow_redirects=False)


def assert_html(resp, status):
    assert resp.status_code == status, f"expected {status}, got {resp.status_code}: {resp.text[:500]}"
    assert resp.headers.get("Content-Type", "").startswith("text/html"), resp.headers


def assert_pending(resp):
    assert resp.status_code == 400, f"expected 400 authorization_pending, got {resp.status_code}: {resp.text[:500]}"
    body = resp.json()
    assert body.get("error") == "authorization_pending", body
    assert "access_token" not in body, body


# ---------------------------------------------------------------------------
# raw protocol
# ---------------------------------------------------------------------------

def test_discovery_names_the_device_authorization_endpoint(server):
    r = requests.get(f"{server.authority_host}/{server.tenant_id}/v2.0/.well-known/openid-configuration",
                     verify=server.ca_cert, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text
    assert r.json().get("device_authorization_endpoint") == devicecode_url(server), r.json()


def test_device_code_response(server):
    r = start_flow(server)
    assert r.status_code == 200, f"{r.status_code}: {r.text[:500]}"
    assert r.headers.get("Content-Type", "").startswith("application/json"), r.headers
    flow = r.json()
    assert isinstance(flow.get("device_code"), str) and len(flow["device_code"]) >= 20, flow
    code = flow.get("user_code")
    assert isinstance(code, str) and code and not any(c.isspace() for c in code), flow
    assert flow.get("verification_uri") == f"{server.authority_host}/device", flow
    assert flow.get("expires_in") == 900, flow
    assert flow.get("interval") == 2, flow
    assert isinstance(flow.get("message"), str) and code in flow["message"], flow
    assert flow["verification_uri"] in flow["message"], flow

    other = started_flow(server)
    assert other["device_code"] != flow["device_code"] and other["user_code"] != code


def test_verification_page_is_a_form(server):
    r = requests.get(f"{server.authority_host}/device", verify=server.ca_cert, timeout=HTTP_TIMEOUT)
    assert_html(r, 200)
    page = r.text.lower()
    assert "<form" in page and 'name="code"' in page, r.text[:500]
    # The code leads to a page that names the application and the resource
    # before it asks for credentials, and approves nothing by itself.
    flow = started_flow(server)
    r = requests.post(f"{server.authority_host}/device", data={"code": flow["user_code"]},
                      verify=server.ca_cert, timeout=HTTP_TIMEOUT)
    assert_html(r, 200)
    page = r.text
    assert "asks to act as you" in page and "vault.localhost" in page, page[:1200]
    for field in ("username", "password"):
        assert f'name="{field}"' in page, (field, page[:1200])
    assert_pending(poll(server, flow["device_code"]))


def test_full_flow(server, user):
    account, password = user
    flow = started_flow(server)
    assert_pending(poll(server, flow["device_code"]))

    r = submit(server, flow["user_code"], account["userPrincipalName"], password)
    assert_html(r, 200)
    assert "signed in" in r.text.lower(), r.text[:500]

    r = poll(server, flow["device_code"])
    assert r.status_code == 200, f"{r.status_code}: {r.text[:500]}"
    body = r.json()
    assert body.get("token_type", "").lower() == "bearer", body
    assert int(body["expires_in"]) > 600, body
    scopes = body["scope"].split()
    assert server.vault_scope in scopes or server.vault_resource + "/user_impersonation" in scopes, body

    claims = jwt_claims(body["access_token"])
    assert claims["aud"] == server.vault_resource, claims
    assert claims["oid"] == account["id"], claims
    assert claims["tid"] == server.tenant_id, claims
    assert claims["upn"].lower() == account["userPrincipalName"].lower(), claims
    assert claims.get("azp") == AZURE_CLI_CLIENT_ID, claims
    assert claims.get("idtyp") == "user", claims

    idt = jwt_claims(body["id_token"])
    assert idt["aud"] == AZURE_CLI_CLIENT_ID, idt
    assert idt["oid"] == account["id"] and idt["tid"] == server.tenant_id, idt
    assert (idt.get("preferred_username") or idt.get("upn", "")).lower() == account["userPrincipalName"].lower()
    info = json.loads(b64url_decode(body["client_info"]))
    assert (info.get("uid"), info.get("utid")) == (account["id"], server.tenant_id), info
    assert isinstance(body.get("refresh_token"), str) and body["refresh_token"], body

    r = server.vault_request("GET", "/secrets", token=body["access_token"], api_version="7.5")
    assert r.status_code == 403, f"expected 403 (authenticated, not authorized): {r.status_code} {r.text[:300]}"

    # The refresh token works like any other user's.
    r = requests.post(server.token_url(), data={
        "client_id": AZURE_CLI_CLIENT_ID, "grant_type": "refresh_token", "client_info": "1",
        "refresh_token": body["refresh_token"], "scope": " ".join(sorted({server.vault_scope, *OIDC_SCOPES}))},
        verify=server.ca_cert, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, f"refresh: {r.status_code} {r.text[:300]}"
    assert jwt_claims(r.json()["access_token"])["oid"] == account["id"]


def test_device_code_is_redeemed_once(server, user):
    account, password = user
    flow = started_flow(server)
    assert_html(submit(server, flow["user_code"], account["userPrincipalName"], password), 200)
    assert poll(server, flow["device_code"]).status_code == 200
    r = poll(server, flow["device_code"])
    assert r.status_code == 400, f"second redemption: {r.status_code} {r.text[:300]}"
    assert "access_token" not in r.json(), r.text
    assert r.json().get("error") in ("invalid_grant", "expired_token", "bad_verification_code"), r.text


def test_an_approved_code_cannot_be_approved_again(server, user):
    """Once a user has approved a code, another sign-in with the same code is
    refused and the token stays the first user's."""
    account, password = user
    other, other_password = create_user(server, graph_token(server), prefix="dc")
    flow = started_flow(server)
    assert_html(submit(server, flow["user_code"], account["userPrincipalName"], password), 200)
    assert_html(submit(server, flow["user_code"], other["userPrincipalName"], other_password), 400)
    r = poll(server, flow["device_code"])
    assert r.status_code == 200, f"{r.status_code}: {r.text[:300]}"
    assert jwt_claims(r.json()["access_token"])["oid"] == account["id"]


@pytest.mark.parametrize("case", ["wrong-password", "unknown-user", "wrong-code"])
def test_failed_submission_leaves_the_flow_pending(server, user, case):
    account, password = user
    flow = started_flow(server)
    code, upn, pw = flow["user_code"], account["userPrincipalName"], password
    if case == "wrong-password":
        pw = "wrong-" + password
    elif case == "unknown-user":
        upn = f"{unique('nobody')}@keyhaven.localhost"
    else:
        code = "ZZZZ-ZZZZ" if code != "ZZZZ-ZZZZ" else "YYYY-YYYY"
    r = submit(server, code, upn, pw)
    assert_html(r, 400)
    assert_pending(poll(server, flow["device_code"]))

    # The right submission still completes it.
    assert_html(submit(server, flow["user_code"], account["userPrincipalName"], password), 200)
    r = poll(server, flow["device_code"])
    assert r.status_code == 200, f"{r.status_code}: {r.text[:300]}"
    assert jwt_claims(r.json()["access_token"])["oid"] == account["id"]


def test_disabled_user_cannot_approve(server):
    account, password = create_user(server, graph_token(server), prefix="dc", enabled=False)
    flow = started_flow(server)
    assert_html(submit(server, flow["user_code"], account["userPrincipalName"], password), 400)
    assert_pending(poll(server, flow["device_code"]))


def test_unknown_device_code(server):
    r = poll(server, "not-a-device-code-" + unique("x"))
    assert r.status_code == 400, f"{r.status_code}: {r.text[:300]}"
    assert r.json().get("error") in ("invalid_grant", "expired_token"), r.text
    assert "access_token" not in r.json()


def test_device_code_of_another_client_is_refused(server, user):
    """A device code is bound to the client that started the flow."""
    account, password = user
    flow = started_flow(server)
    assert_html(submit(server, flow["user_code"], account["userPrincipalName"], password), 200)
    r = poll(server, flow["device_code"], client_id="00000000-0000-0000-0000-000000000001")
    assert r.status_code in (400, 401), f"{r.status_code}: {r.text[:300]}"
    assert "access_token" not in r.json(), r.text


# ---------------------------------------------------------------------------
# azure-identity's DeviceCodeCredential
# ---------------------------------------------------------------------------

class Approver:
    """A prompt_callback that, like a user with a browser, opens the
    verification URI it is given and submits the code and credentials, in a
    thread (the callback must return for msal to start polling)."""

    def __init__(self, server, username, password):
        self.server, self.username, self.password = server, username, password
        self.prompts = []
        self.results = []
        self.threads = []

    def __call__(self, verification_uri, user_code, expires_on):
        self.prompts.append((verification_uri, user_code, expires_on))

        def approve():
            try:
                time.sleep(0.3)
                r = submit(self.server, user_code, self.username, self.password, url=verification_uri)
                self.results.append((r.status_code, r.text[:300]))
            except Exception as exc:  # reported by the test
                self.results.append((None, repr(exc)))

        t = threading.Thread(target=approve, daemon=True)
        t.start()
        self.threads.append(t)

    def join(self):
        for t in self.threads:
            t.join(timeout=HTTP_TIMEOUT + 5)


def device_code_credential(server, callback, **kwargs):
    from azure.identity import DeviceCodeCredential

    kw = dict(CLIENT_KWARGS, timeout=60)  # timeout: stop polling after 60 s (device_code.py:103-108)
    kw.update(kwargs)
    return DeviceCodeCredential(client_id=AZURE_CLI_CLIENT_ID, tenant_id=server.tenant_id,
                                authority=server.authority_host, disable_instance_discovery=True,
                                prompt_callback=callback, **kw)


def test_device_code_credential(server, user):
    account, password = user
    approver = Approver(server, account["userPrincipalName"], password)
    cred = device_code_credential(server, approver)
    try:
        started = time.monotonic()
        tok = cred.get_token(server.vault_scope).token
        assert time.monotonic() - started < 30, "polling took too long for interval 2"
        approver.join()
        assert approver.prompts, "prompt_callback was never called"
        uri, code, expires_on = approver.prompts[0]
        assert uri == f"{server.authority_host}/device"
        assert code and " " not in code
        assert expires_on.timestamp() > time.time() + 600
        assert approver.results and approver.results[0][0] == 200, approver.results

        claims = jwt_claims(tok)
        assert claims["oid"] == account["id"], claims
        assert claims["upn"].lower() == account["userPrincipalName"].lower(), claims
        assert claims["aud"] == server.vault_resource, claims
        assert claims["tid"] == server.tenant_id, claims

        r = server.vault_request("GET", "/secrets", token=tok, api_version="7.5")
        assert r.status_code == 403, f"expected 403 (authenticated, not authorized): {r.status_code} {r.text[:300]}"

        # SecretClient with the same credential: authenticated (possibly after
        # another device-code round, which the approver handles), not authorized.
        client = server.secret_client(cred)
        try:
            with pytest.raises(HttpResponseError) as info:
                list(client.list_properties_of_secrets())
            assert not isinstance(info.value, ClientAuthenticationError), info.value
            assert info.value.status_code == 403, info.value
        finally:
            client.close()
        approver.join()
    finally:
        cred.close()


def test_device_code_credential_authentication_record(server, user):
    """authenticate() returns the AuthenticationRecord azure-identity builds
    from the id token and client_info."""
    account, password = user
    approver = Approver(server, account["userPrincipalName"], password)
    cred = device_code_credential(server, approver)
    try:
        record = cred.authenticate(scopes=[server.vault_scope])
        approver.join()
    finally:
        cred.close()
    assert record.username.lower() == account["userPrincipalName"].lower()
    assert record.tenant_id == server.tenant_id
    assert record.client_id == AZURE_CLI_CLIENT_ID
    assert record.home_account_id == f"{account['id']}.{server.tenant_id}"


def test_device_code_credential_times_out_without_approval(server):
    """Nobody approves: the credential gives up at its timeout with
    ClientAuthenticationError (device_code.py:103-115), having polled."""
    prompts = []
    cred = device_code_credential(server, lambda uri, code, exp: prompts.append(code), timeout=5)
    try:
        started = time.monotonic()
        with pytest.raises(ClientAuthenticationError):
            cred.get_token(server.vault_scope)
        assert time.monotonic() - started < 30
    finally:
        cred.close()
    assert len(prompts) == 1
