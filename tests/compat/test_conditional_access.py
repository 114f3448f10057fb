"""Sign-in conditions (issue #27): Conditional Access policies and named
locations in Microsoft Graph v1.0's shapes, applied when Keyhaven issues a
token, and a second factor from an authenticator app (RFC 6238 TOTP, codes
computed here with hmac, independently of the server).

One server per store (Conditional Access is tenant-wide, so it must not
touch the other modules' tenants), also listening on 127.0.0.1:443 for
`az login -u/-p`. Every test removes the policies it made.

- A policy requiring MFA for Key Vault and ARM makes `az login -u -p` fail
  with AADSTS50076 (and the raw password grant answer Entra's error body),
  while a member of an excluded group signs in; a user with no authenticator
  gets AADSTS50079.
- The sign-in pages ask for the code: the portal's sign-in in headless
  Chromium (screenshots saved), and the device-code page; the tokens then
  carry `amr: ["pwd", "mfa"]`, and refreshing keeps it; a token from before
  the policy cannot be refreshed into one the policy covers.
- A used code is refused the second time; wrong codes lock the user's codes.
- A block policy for an untrusted named location refuses a token requested
  from that address (127.0.0.2) and allows it from a trusted one (127.0.0.1);
  a workload policy does the same for a service principal.
- A report-only policy refuses nothing and writes what it would have done
  into the sign-in's audit record.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import struct
import time
from typing import Any, Dict, List, Optional

import pytest
import requests
from requests.adapters import HTTPAdapter

from khcompat import (
    AZURE_CLI_CLIENT_ID,
    HTTP_TIMEOUT,
    add_member,
    assign_role,
    assert_graph_error,
    create_group,
    create_user,
    graph,
    graph_ok,
    graph_scope,
    graph_token,
    jwt_claims,
    module_server,
    new_app_with_secret,
    request_password_token,
)
from test_azure_cli import AZ, Az, LabServer

KEY_VAULT_APP = "cfa8b339-82a2-471a-a3c9-0fc0be7a4093"
ARM_APP = "797f4846-ba00-4fd7-ba43-dac1f8f63013"
CA = "/identity/conditionalAccess"


# -- TOTP, computed here -------------------------------------------------------

def totp(secret_b32: str, step: int) -> str:
    key = base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8))
    mac = hmac.new(key, struct.pack(">q", step), hashlib.sha1).digest()
    off = mac[-1] & 0x0F
    n = (struct.unpack(">I", mac[off:off + 4])[0] & 0x7FFFFFFF) % 1_000_000
    return f"{n:06d}"


class Authenticator:
    """A user's authenticator app: hands out codes of steps the server has
    not seen yet (the current step, or the next within the skew it allows;
    waits for a new step only when both are used)."""

    def __init__(self, secret: str):
        self.secret = secret
        self.last = -1

    def code(self) -> str:
        for _ in range(40):
            now = int(time.time()) // 30
            step = max(now, self.last + 1)
            if step <= now + 1:
                self.last = step
                return totp(self.secret, step)
            time.sleep(1)
        raise AssertionError("no fresh TOTP step within 40 s")

    def wrong(self) -> str:
        now = int(time.time()) // 30
        valid = {totp(self.secret, s) for s in range(now - 2, now + 3)}
        return next(c for c in (f"{i:06d}" for i in range(1000, 2000)) if c not in valid)


# -- the deployment ------------------------------------------------------------

class Tenant:
    def __init__(self, server, az: Az):
        self.server = server
        self.az = az
        self.admin = graph_token(server)


@pytest.fixture(scope="module")
def tenant(store_kind, tmp_path_factory):
    work = tmp_path_factory.mktemp(f"ca-{store_kind}")
    with module_server(LabServer, store_kind, work / "server") as srv:
        az = Az(srv, work / "azure")
        if AZ:
            proc = keyhaven_cloud(srv, az)
            assert proc.returncode == 0, proc.stderr[-2000:]
        yield Tenant(srv, az)


def keyhaven_cloud(srv, az):
    import subprocess
    from khcompat import KEYHAVEN_BIN
    return subprocess.run([KEYHAVEN_BIN, "cloud", "--run", "--data-dir", str(srv.data_dir)], env=az.env,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


class Policies:
    """Policies and locations a test makes, removed when it ends."""

    def __init__(self, t: Tenant):
        self.t = t
        self.made: List[str] = []

    def location(self, name: str, cidrs: List[str], trusted: bool = False) -> str:
        body = {"@odata.type": "#microsoft.graph.ipNamedLocation", "displayName": name, "isTrusted": trusted,
                "ipRanges": [{"@odata.type": "#microsoft.graph.iPv4CidrRange", "cidrAddress": c} for c in cidrs]}
        loc = graph_ok(self.t.server, "POST", f"{CA}/namedLocations", self.t.admin, json=body, status=201)
        self.made.append(f"{CA}/namedLocations/{loc['id']}")
        return loc["id"]

    def policy(self, name: str, state: str = "enabled", *, users: Optional[Dict[str, Any]] = None,
               apps: Optional[List[str]] = None, grant: Optional[List[str]] = None,
               locations: Optional[Dict[str, Any]] = None, workloads: bool = False,
               session: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        conditions: Dict[str, Any] = {
            "users": users or {"includeUsers": ["All"]},
            "applications": {"includeApplications": apps or ["All"]},
            "clientAppTypes": ["all"],
        }
        if locations:
            conditions["locations"] = locations
        if workloads:
            conditions["users"] = {"includeUsers": ["None"]}
            conditions["clientApplications"] = {"includeServicePrincipals": ["ServicePrincipalsInMyTenant"]}
        body: Dict[str, Any] = {"displayName": name, "state": state, "conditions": conditions}
        if grant:
            body["grantControls"] = {"operator": "OR", "builtInControls": grant}
        if session:
            body["sessionControls"] = session
        p = graph_ok(self.t.server, "POST", f"{CA}/policies", self.t.admin, json=body, status=201)
        # Policies go first when removed (a location in use cannot go).
        self.made.insert(0, f"{CA}/policies/{p['id']}")
        return p

    def remove(self) -> None:
        for path in self.made:
            r = graph(self.t.server, "DELETE", path, self.t.admin)
            assert r.status_code in (204, 404), r.text


@pytest.fixture
def policies(tenant):
    p = Policies(tenant)
    try:
        yield p
    finally:
        p.remove()


def user_graph_token(t: Tenant, upn: str, password: str) -> str:
    r = request_password_token(t.server, upn, password, graph_scope(t.server))
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def enrolled_user(t: Tenant, prefix: str = "mfa"):
    """A user with a confirmed authenticator app (registered before any
    policy applies): (user, password, Authenticator)."""
    user, password = create_user(t.server, prefix=prefix)
    tok = user_graph_token(t, user["userPrincipalName"], password)
    reg = graph_ok(t.server, "POST", "/me/authentication/softwareOathMethods", tok, json={}, status=201)
    app = Authenticator(reg["secretKey"])
    graph_ok(t.server, "POST", f"/me/authentication/softwareOathMethods/{reg['id']}/verify", tok,
             json={"code": app.code()}, status=204)
    return user, password, app


def oauth_error(r: requests.Response, status: int, code: int) -> Dict[str, Any]:
    assert r.status_code == status, f"expected {status} AADSTS{code}, got {r.status_code}: {r.text[:800]}"
    body = r.json()
    assert body["error_codes"] == [code], body
    assert body["error_description"].startswith(f"AADSTS{code}: "), body
    assert body["error_uri"].endswith(f"/error?code={code}"), body
    return body


def audit_records(t: Tenant) -> List[Dict[str, Any]]:
    path = t.server.data_dir / "audit" / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class SourceAdapter(HTTPAdapter):
    """Connects from a given loopback address (the caller's IP the server sees)."""

    def __init__(self, source: str, **kw):
        self.source = source
        super().__init__(**kw)

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self.source, 0)
        super().init_poolmanager(*args, **kwargs)


def from_address(source: str) -> requests.Session:
    s = requests.Session()
    s.mount("https://", SourceAdapter(source))
    return s


# -- device-code sign-in, driven over HTTP ---------------------------------------

def hidden(page: str, name: str) -> Optional[str]:
    m = re.search(rf'name="{name}" value="([^"]*)"', page)
    return m.group(1) if m else None


def device_sign_in(t: Tenant, upn: str, password: str, scope: str):
    """Starts a device code and signs in on the verification page; returns
    (device_code, the page after the password)."""
    s = t.server
    dc = requests.post(f"{s.authority_host}/{s.tenant_id}/oauth2/v2.0/devicecode",
                       data={"client_id": AZURE_CLI_CLIENT_ID, "scope": f"{scope} offline_access"},
                       verify=s.ca_cert, timeout=HTTP_TIMEOUT)
    assert dc.status_code == 200, dc.text
    page = requests.post(f"{s.authority_host}/device",
                         data={"code": dc.json()["user_code"], "confirm": "yes", "username": upn,
                               "password": password}, verify=s.ca_cert, timeout=HTTP_TIMEOUT)
    return dc.json()["device_code"], page


def device_code_answer(t: Tenant, ticket: str, code: str) -> requests.Response:
    s = t.server
    return requests.post(f"{s.authority_host}/device", data={"mfa_ticket": ticket, "otc": code},
                         verify=s.ca_cert, timeout=HTTP_TIMEOUT)


def redeem_device_code(t: Tenant, device_code: str) -> requests.Response:
    s = t.server
    return requests.post(s.token_url(), data={"grant_type": "urn:ietf:params:oauth:grant-type:device_code",
                                              "client_id": AZURE_CLI_CLIENT_ID, "device_code": device_code},
                         verify=s.ca_cert, timeout=HTTP_TIMEOUT)


def refresh(t: Tenant, rt: str, scope: str) -> requests.Response:
    s = t.server
    return requests.post(s.token_url(), data={"grant_type": "refresh_token", "client_id": AZURE_CLI_CLIENT_ID,
                                              "refresh_token": rt, "scope": f"{scope} offline_access"},
                         verify=s.ca_cert, timeout=HTTP_TIMEOUT)


# -- Graph shapes ----------------------------------------------------------------

def test_policies_and_named_locations_in_graph_shapes(tenant, policies):
    t = tenant
    loc = policies.location("Branch office", ["198.51.100.0/24"], trusted=True)
    got = graph_ok(t.server, "GET", f"{CA}/namedLocations/{loc}", t.admin)
    assert got["@odata.type"] == "#microsoft.graph.ipNamedLocation" and got["isTrusted"] is True
    assert got["ipRanges"] == [{"@odata.type": "#microsoft.graph.iPv4CidrRange", "cidrAddress": "198.51.100.0/24"}]
    p = policies.policy("MFA for Key Vault", "disabled", apps=[KEY_VAULT_APP], grant=["mfa"],
                        locations={"includeLocations": ["All"], "excludeLocations": [loc]})
    assert p["@odata.context"].endswith("$metadata#identity/conditionalAccess/policies/$entity")
    assert p["state"] == "disabled" and p["modifiedDateTime"] is None and p["createdDateTime"]
    # Graph echoes every list, empty ones included.
    users = p["conditions"]["users"]
    assert users["includeUsers"] == ["All"] and users["excludeGroups"] == [] and users["includeRoles"] == []
    assert p["conditions"]["applications"]["excludeApplications"] == []
    assert p["grantControls"] == {"operator": "OR", "builtInControls": ["mfa"],
                                  "customAuthenticationFactors": [], "termsOfUse": []}
    # PATCH is partial and answers 204.
    r = graph(t.server, "PATCH", f"{CA}/policies/{p['id']}", t.admin,
              json={"state": "enabledForReportingButNotEnforced"})
    assert r.status_code == 204, r.text
    again = graph_ok(t.server, "GET", f"{CA}/policies/{p['id']}", t.admin)
    assert again["state"] == "enabledForReportingButNotEnforced" and again["modifiedDateTime"]
    assert again["conditions"] == p["conditions"]
    listed = graph_ok(t.server, "GET", f"{CA}/policies", t.admin)["value"]
    assert [x["id"] for x in listed] == [p["id"]]
    # What Keyhaven would not evaluate is refused, not ignored.
    for bad in (
        {"displayName": "x", "state": "enabled", "conditions": {
            "users": {"includeUsers": ["All"]}, "applications": {"includeApplications": ["All"]}},
         "grantControls": {"operator": "OR", "builtInControls": ["compliantDevice"]}},
        {"displayName": "x", "state": "enabled", "conditions": {
            "users": {"includeUsers": ["All"]}, "applications": {"includeApplications": ["All"]},
            "signInRiskLevels": ["high"]}, "grantControls": {"operator": "OR", "builtInControls": ["mfa"]}},
        {"displayName": "x", "state": "enabled", "conditions": {
            "users": {"includeUsers": ["All"]}, "applications": {"includeApplications": ["All"]},
            "authenticationFlows": {"transferMethods": "deviceCodeFlow"}},
         "grantControls": {"operator": "OR", "builtInControls": ["block"]}},
        {"displayName": "x", "state": "sometimes", "conditions": {
            "users": {"includeUsers": ["All"]}, "applications": {"includeApplications": ["All"]}},
         "grantControls": {"operator": "OR", "builtInControls": ["mfa"]}},
    ):
        assert_graph_error(graph(t.server, "POST", f"{CA}/policies", t.admin, json=bad), 400, "Request_BadRequest")
    country = {"@odata.type": "#microsoft.graph.countryNamedLocation", "displayName": "c",
               "countriesAndRegions": ["US"]}
    assert_graph_error(graph(t.server, "POST", f"{CA}/namedLocations", t.admin, json=country), 400,
                       "Request_BadRequest")
    # A location a policy names cannot be deleted.
    assert_graph_error(graph(t.server, "DELETE", f"{CA}/namedLocations/{loc}", t.admin), 400, "Request_BadRequest")
    # Only directory administrators read or write Conditional Access.
    user, password = create_user(t.server, prefix="plain")
    tok = user_graph_token(t, user["userPrincipalName"], password)
    assert_graph_error(graph(t.server, "GET", f"{CA}/policies", tok), 403, "Authorization_RequestDenied")
    assert_graph_error(graph(t.server, "DELETE", f"{CA}/policies/{p['id']}", tok), 403,
                       "Authorization_RequestDenied")
    assert graph(t.server, "DELETE", f"{CA}/policies/{p['id']}", t.admin).status_code == 204
    assert_graph_error(graph(t.server, "GET", f"{CA}/policies/{p['id']}", t.admin), 404, "Request_ResourceNotFound")


def test_authenticator_registration_listing_and_admin_reset(tenant):
    t = tenant
    user, password = create_user(t.server, prefix="enrol")
    tok = user_graph_token(t, user["userPrincipalName"], password)
    reg = graph_ok(t.server, "POST", "/me/authentication/softwareOathMethods", tok, json={}, status=201)
    assert re.fullmatch(r"[A-Z2-7]{32}", reg["secretKey"]), reg
    assert reg["keyhaven.provisioningUri"].startswith("otpauth://totp/Keyhaven:")
    assert f"secret={reg['secretKey']}" in reg["keyhaven.provisioningUri"]
    app = Authenticator(reg["secretKey"])
    # Unconfirmed: not listed; a wrong first code does not confirm it.
    assert graph_ok(t.server, "GET", "/me/authentication/softwareOathMethods", tok)["value"] == []
    assert_graph_error(graph(t.server, "POST", f"/me/authentication/softwareOathMethods/{reg['id']}/verify", tok,
                             json={"code": app.wrong()}), 400, "Request_BadRequest")
    graph_ok(t.server, "POST", f"/me/authentication/softwareOathMethods/{reg['id']}/verify", tok,
             json={"code": app.code()}, status=204)
    mine = graph_ok(t.server, "GET", "/me/authentication/softwareOathMethods", tok)["value"]
    assert [(m["id"], m["secretKey"], m["@odata.type"]) for m in mine] == \
        [(reg["id"], None, "#microsoft.graph.softwareOathAuthenticationMethod")]
    # With an app registered, a password-only token cannot change the methods
    # (a stolen password must not add an app or remove the real one)...
    assert_graph_error(graph(t.server, "POST", "/me/authentication/softwareOathMethods", tok, json={}), 403,
                       "Authorization_RequestDenied")
    assert_graph_error(graph(t.server, "DELETE", f"/me/authentication/softwareOathMethods/{reg['id']}", tok), 403,
                       "Authorization_RequestDenied")
    # ...a token from a sign-in with the code can: the sign-in page asks for
    # it for Graph once the user has an app.
    device_code, page = device_sign_in(t, user["userPrincipalName"], password, graph_scope(t.server))
    assert "Verify your identity" in page.text, page.text[:400]
    assert "You have signed in" in device_code_answer(t, hidden(page.text, "mfa_ticket"), app.code()).text
    mfa_tok = redeem_device_code(t, device_code).json()["access_token"]
    assert jwt_claims(mfa_tok)["amr"] == ["pwd", "mfa"]
    second = graph_ok(t.server, "POST", "/me/authentication/softwareOathMethods", mfa_tok, json={}, status=201)
    assert second["id"] != reg["id"]
    # The admin sees the user's methods (password and app) and resets them.
    methods = graph_ok(t.server, "GET", f"/users/{user['id']}/authentication/methods", t.admin)["value"]
    assert sorted(m["@odata.type"] for m in methods) == [
        "#microsoft.graph.passwordAuthenticationMethod", "#microsoft.graph.softwareOathAuthenticationMethod"]
    # Another user may not.
    other, other_pw = create_user(t.server, prefix="other")
    other_tok = user_graph_token(t, other["userPrincipalName"], other_pw)
    assert_graph_error(graph(t.server, "GET", f"/users/{user['id']}/authentication/softwareOathMethods", other_tok),
                       403, "Authorization_RequestDenied")
    assert graph(t.server, "DELETE", f"/users/{user['id']}/authentication/softwareOathMethods/{reg['id']}",
                 t.admin).status_code == 204
    assert graph_ok(t.server, "GET", "/me/authentication/softwareOathMethods", tok)["value"] == []
    # The secret is sealed at rest: its base32 form is nowhere in the store.
    raw = t.server.store_snapshot()
    assert reg["secretKey"].encode() not in raw
    assert base64.b32decode(reg["secretKey"]) not in raw


# -- MFA at token issuance -----------------------------------------------------------

def test_mfa_for_key_vault_and_arm_refuses_password_sign_ins_and_az_login(tenant, policies):
    t = tenant
    user, password, _app = enrolled_user(t)
    bare, bare_pw = create_user(t.server, prefix="noapp")
    exempt, exempt_pw = create_user(t.server, prefix="breakglass")
    group = create_group(t.server, prefix="ca-exempt")
    assert add_member(t.server, group["id"], exempt["id"]).status_code == 204
    p = policies.policy("Require MFA for Key Vault and ARM", apps=[KEY_VAULT_APP, ARM_APP], grant=["mfa"],
                        users={"includeUsers": ["All"], "excludeGroups": [group["id"]]})
    r = request_password_token(t.server, user["userPrincipalName"], password)
    body = oauth_error(r, 400, 50076)
    assert body["error"] == "invalid_grant" and body["suberror"] == "basic_action"
    assert f"access '{KEY_VAULT_APP}'" in body["error_description"]
    # No authenticator registered: told to enrol.
    oauth_error(request_password_token(t.server, bare["userPrincipalName"], bare_pw), 400, 50079)
    # Another resource (Graph) is not covered; the excluded group passes.
    assert request_password_token(t.server, user["userPrincipalName"], password,
                                  graph_scope(t.server)).status_code == 200
    assert request_password_token(t.server, exempt["userPrincipalName"], exempt_pw).status_code == 200
    # Applications are not users: the bootstrap service principal gets its token.
    assert t.server.request_token().status_code == 200
    if not AZ:
        pytest.fail("the Azure CLI was not found (KEYHAVEN_AZ); run through scripts/compat", pytrace=False)
    err = t.az.fails("login", "-u", user["userPrincipalName"], f"--password={password}")
    assert "AADSTS50076" in err and "multi-factor authentication" in err, err[-2000:]
    accounts = t.az.json("login", "-u", exempt["userPrincipalName"], f"--password={exempt_pw}")
    assert accounts and accounts[0]["user"]["name"] == exempt["userPrincipalName"]
    # The refusal is in the sign-in's audit record.
    recs = [r for r in audit_records(t) if r["operationName"] == "Authentication"
            and (r.get("identity") or {}).get("claim", {}).get("oid") == user["id"]
            and r["properties"].get("conditionalAccessStatus") == "failure"]
    assert recs, "the refused sign-in is audited with its Conditional Access result"
    applied = recs[-1]["properties"]["appliedConditionalAccessPolicies"]
    assert {"id": p["id"], "displayName": p["displayName"], "result": "failure",
            "enforcedGrantControls": ["mfa"]} in applied


def test_device_code_page_asks_for_the_code_and_tokens_say_mfa(tenant, policies):
    t = tenant
    user, password, app = enrolled_user(t)
    # Before the policy: a password token with amr pwd, and its refresh token.
    before = request_password_token(t.server, user["userPrincipalName"], password, t.server.vault_scope)
    assert before.status_code == 200, before.text
    assert jwt_claims(before.json()["access_token"])["amr"] == ["pwd"]
    old_rt = before.json()["refresh_token"]
    policies.policy("MFA for Key Vault", apps=[KEY_VAULT_APP], grant=["mfa"])
    device_code, page = device_sign_in(t, user["userPrincipalName"], password, t.server.vault_scope)
    assert page.status_code == 200 and "Verify your identity" in page.text, page.text[:500]
    ticket = hidden(page.text, "mfa_ticket")
    assert ticket
    # Not approved yet: the device keeps waiting.
    oauth_error(redeem_device_code(t, device_code), 400, 70016)
    wrong = device_code_answer(t, ticket, app.wrong())
    assert "That code is not right" in wrong.text
    code = app.code()
    ok = device_code_answer(t, ticket, code)
    assert ok.status_code == 200 and "You have signed in" in ok.text, ok.text[:500]
    tokens = redeem_device_code(t, device_code)
    assert tokens.status_code == 200, tokens.text
    assert jwt_claims(tokens.json()["access_token"])["amr"] == ["pwd", "mfa"]
    # The session keeps its second factor through a refresh.
    again = refresh(t, tokens.json()["refresh_token"], t.server.vault_scope)
    assert again.status_code == 200, again.text
    assert jwt_claims(again.json()["access_token"])["amr"] == ["pwd", "mfa"]
    # A session from before, without it, must sign in again; the refusal
    # does not spend the token (it refreshes once the policy is gone).
    body = oauth_error(refresh(t, old_rt, t.server.vault_scope), 400, 50076)
    assert body["error"] == "interaction_required"
    body = oauth_error(refresh(t, old_rt, t.server.vault_scope), 400, 50076)
    # The same code is never accepted twice.
    device_code2, page2 = device_sign_in(t, user["userPrincipalName"], password, t.server.vault_scope)
    replay = device_code_answer(t, hidden(page2.text, "mfa_ticket"), code)
    assert "That code is not right" in replay.text
    oauth_error(redeem_device_code(t, device_code2), 400, 70016)
    # An administrator's reset of the app ends the second factor of every
    # session: the refreshed token no longer says mfa, and the policy asks
    # for it (50079: there is no app now).
    rt = again.json()["refresh_token"]
    methods = graph_ok(t.server, "GET", f"/users/{user['id']}/authentication/softwareOathMethods", t.admin)["value"]
    for m in methods:
        assert graph(t.server, "DELETE", f"/users/{user['id']}/authentication/softwareOathMethods/{m['id']}",
                     t.admin).status_code == 204
    oauth_error(refresh(t, rt, t.server.vault_scope), 400, 50079)
    policies.remove()
    policies.made.clear()
    assert refresh(t, old_rt, t.server.vault_scope).status_code == 200, "a refused refresh left the token current"


def test_wrong_codes_lock_the_users_codes(tenant, policies):
    t = tenant
    user, password, app = enrolled_user(t, prefix="guesser")
    policies.policy("MFA everywhere", grant=["mfa"])
    texts = []
    for _ in range(2):
        _, page = device_sign_in(t, user["userPrincipalName"], password, t.server.vault_scope)
        ticket = hidden(page.text, "mfa_ticket")
        for _ in range(3):
            r = device_code_answer(t, ticket, app.wrong())
            texts.append(r.text)
            if "locked" in r.text:
                break
        if "locked" in texts[-1]:
            break
    assert "AADSTS50053" in texts[-1] and len(texts) == 5, [x[-300:] for x in texts]
    # Locked: even the right code is refused now.
    _, page = device_sign_in(t, user["userPrincipalName"], password, t.server.vault_scope)
    r = device_code_answer(t, hidden(page.text, "mfa_ticket"), app.code())
    assert "AADSTS50053" in r.text


def test_sign_in_frequency_every_time_asks_for_a_new_sign_in(tenant, policies):
    t = tenant
    user, password = create_user(t.server, prefix="freq")
    first = request_password_token(t.server, user["userPrincipalName"], password)
    assert first.status_code == 200
    policies.policy("Sign in every time for Key Vault", apps=[KEY_VAULT_APP],
                    session={"signInFrequency": {"isEnabled": True, "frequencyInterval": "everyTime",
                                                 "authenticationType": "primaryAndSecondaryAuthentication"}})
    time.sleep(1.2)
    oauth_error(refresh(t, first.json()["refresh_token"], t.server.vault_scope), 400, 70044)
    oauth_error(refresh(t, first.json()["refresh_token"], t.server.vault_scope), 400, 70044)
    # A fresh password sign-in is fine.
    fresh = request_password_token(t.server, user["userPrincipalName"], password)
    assert fresh.status_code == 200, fresh.text


# -- locations -----------------------------------------------------------------------

def test_block_from_an_untrusted_location_allows_a_trusted_one(tenant, policies):
    t = tenant
    user, password = create_user(t.server, prefix="traveller")
    outside = policies.location("Untrusted", ["127.0.0.2/32"])
    policies.location("Office", ["127.0.0.1/32"], trusted=True)
    p = policies.policy("Block sign-ins from outside", grant=["block"],
                        locations={"includeLocations": [outside], "excludeLocations": ["AllTrusted"]})
    scopes = f"{t.server.vault_scope} openid profile offline_access"
    form = {"client_id": AZURE_CLI_CLIENT_ID, "grant_type": "password", "username": user["userPrincipalName"],
            "password": password, "scope": scopes}
    blocked = from_address("127.0.0.2").post(t.server.token_url(), data=form, verify=t.server.ca_cert,
                                             timeout=HTTP_TIMEOUT)
    body = oauth_error(blocked, 400, 53003)
    assert body["suberror"] == "message_only"
    assert json.loads(body["claims"])["access_token"]["capolids"]["values"] == [p["id"]]
    allowed = from_address("127.0.0.1").post(t.server.token_url(), data=form, verify=t.server.ca_cert,
                                             timeout=HTTP_TIMEOUT)
    assert allowed.status_code == 200, allowed.text
    # Users' policies leave applications alone; a workload policy does not.
    app, _sp, secret = new_app_with_secret(t.server, prefix="ca-workload")
    cc = {"client_id": app["appId"], "client_secret": secret, "grant_type": "client_credentials",
          "scope": t.server.vault_scope}
    assert from_address("127.0.0.2").post(t.server.token_url(), data=cc, verify=t.server.ca_cert,
                                          timeout=HTTP_TIMEOUT).status_code == 200
    policies.policy("Workloads only from the office", grant=["block"], workloads=True,
                    locations={"includeLocations": ["All"], "excludeLocations": ["AllTrusted"]})
    oauth_error(from_address("127.0.0.2").post(t.server.token_url(), data=cc, verify=t.server.ca_cert,
                                               timeout=HTTP_TIMEOUT), 400, 53003)
    assert from_address("127.0.0.1").post(t.server.token_url(), data=cc, verify=t.server.ca_cert,
                                          timeout=HTTP_TIMEOUT).status_code == 200


def test_report_only_records_what_it_would_have_done(tenant, policies):
    t = tenant
    user, password = create_user(t.server, prefix="reported")
    p = policies.policy("MFA for Key Vault (report only)", "enabledForReportingButNotEnforced",
                        apps=[KEY_VAULT_APP], grant=["mfa"])
    r = request_password_token(t.server, user["userPrincipalName"], password)
    assert r.status_code == 200, r.text
    recs = [x for x in audit_records(t) if x["operationName"] == "Authentication"
            and (x.get("identity") or {}).get("claim", {}).get("oid") == user["id"]]
    assert recs, "the sign-in is audited"
    props = recs[-1]["properties"]
    assert props["conditionalAccessStatus"] == "notApplied"
    assert {"id": p["id"], "displayName": p["displayName"], "result": "reportOnlyInterrupted",
            "enforcedGrantControls": ["mfa"]} in props["appliedConditionalAccessPolicies"]


# -- the browser ------------------------------------------------------------------

def test_portal_sign_in_in_chromium_asks_for_the_code(tenant, policies):
    from test_portal import Browser, vault_arm_id
    t = tenant
    user, password, app = enrolled_user(t, prefix="browser")
    # Reader on the dev vault, so the portal lists it.
    assign_role(t.server, vault_arm_id(t.server), "Reader", user["id"], principal_type="User")
    policies.policy("MFA for every application", grant=["mfa"])
    b = Browser(t.server, "ca-mfa")
    try:
        b.driver.get(t.server.bootstrap["portal_url"] + "/")
        b.wait("[data-test=signin]").click()
        b.wait("#username").send_keys(user["userPrincipalName"])
        b.find("#password")[0].send_keys(password)
        b.shot("password")
        b.find("button[type=submit]")[0].click()
        b.wait("#otc")
        assert "Verify your identity" in b.driver.page_source
        b.shot("asks-for-code")
        b.find("#otc")[0].send_keys(app.wrong())
        b.find("button[type=submit]")[0].click()
        b.wait(".msg", "not right")
        b.shot("wrong-code")
        b.find("#otc")[0].send_keys(app.code())
        b.find("button[type=submit]")[0].click()
        b.wait("[data-test=vault-link]")
        b.shot("signed-in")
        assert b.find("#who")[0].text == user["displayName"]
    finally:
        try:
            b.shot("last")
        finally:
            b.close()
