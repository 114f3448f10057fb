"""The Keyhaven Portal in real headless Chromium (Debian's `chromium`, driven
by Selenium through Debian's `chromium-driver`; no tool downloads a browser).

A person signs in through the tenant's own sign-in page, finds the vault,
creates a secret and reveals it; the Python SDK reads the same secret, and a
secret the SDK wrote shows in the portal. Text from the server renders as
text (a content type that is markup does not become markup). A Reader sees
the vault but the Secrets blade answers as the API does (403). A state-
changing call without the CSRF token, or with a cookie this deployment never
issued, is refused; every portal page carries the Content-Security-Policy.
Screenshots of each step are saved under target/portal-screenshots/."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import requests
from azure.keyvault.secrets import SecretClient
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from khcompat import CLIENT_KWARGS, assign_role, create_user, unique

CHROMIUM = os.environ.get("KEYHAVEN_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("KEYHAVEN_CHROMEDRIVER", "/usr/bin/chromedriver")
SHOTS = Path(os.environ.get("KEYHAVEN_SCREENSHOTS", Path(__file__).resolve().parents[2] / "target" / "portal-screenshots"))
WAIT = 20
# Selenium Manager never fetches anything: the browser and driver are Debian's.
os.environ.setdefault("SE_OFFLINE", "true")


def spki_hash(cert_pem: Path) -> str:
    """The base64 SHA-256 of the server certificate's public key: Chromium
    trusts exactly this key (--ignore-certificate-errors-spki-list), nothing
    else."""
    cert = x509.load_pem_x509_certificate(cert_pem.read_bytes())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


class Browser:
    """One headless Chromium with a fresh profile."""

    def __init__(self, server, label: str):
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
        if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
            pytest.fail(f"Chromium or chromedriver missing ({CHROMIUM}, {CHROMEDRIVER}): scripts/test installs them")
        self.profile = tempfile.mkdtemp(prefix="kh-chromium-")
        opts = Options()
        opts.binary_location = CHROMIUM
        for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900",
                  f"--user-data-dir={self.profile}", "--no-first-run", "--disable-background-networking",
                  f"--ignore-certificate-errors-spki-list={spki_hash(server.data_dir / 'tls' / 'server.pem')}"):
            opts.add_argument(a)
        self.driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
        self.driver.set_page_load_timeout(60)
        self.server, self.label, self.step = server, label, 0

    def shot(self, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.step += 1
        self.driver.save_screenshot(str(SHOTS / f"{self.server.store_kind}-{self.label}-{self.step:02d}-{name}.png"))

    def wait(self, css: str, text: str | None = None):
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec
        from selenium.webdriver.support.ui import WebDriverWait
        w = WebDriverWait(self.driver, WAIT)
        if text is None:
            return w.until(ec.visibility_of_element_located((By.CSS_SELECTOR, css)))

        def holding(driver):
            # Any of the matching elements (a list's rows), not only the first;
            # a list redrawn meanwhile is looked at again.
            from selenium.common.exceptions import StaleElementReferenceException
            try:
                found = [e for e in driver.find_elements(By.CSS_SELECTOR, css) if text in e.text]
            except StaleElementReferenceException:
                return False
            return found[0] if found else False
        return w.until(holding)

    def until_rows(self, css: str, pred, present: bool = True, message: str = ""):
        """Waits until some element matching `css` satisfies `pred` (or, with
        present=False, none does), looking again when the list is redrawn."""
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.support.ui import WebDriverWait

        def check(driver):
            try:
                hits = [e for e in self.find(css) if pred(e.text)]
            except StaleElementReferenceException:
                return False
            return (hits or False) if present else not hits
        return WebDriverWait(self.driver, WAIT).until(check, message)

    def find(self, css: str):
        from selenium.webdriver.common.by import By
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def sign_in(self, upn: str, password: str) -> None:
        self.driver.get(self.server.bootstrap["portal_url"] + "/")
        self.wait("[data-test=signin]").click()
        self.wait("#username").send_keys(upn)
        self.find("#password")[0].send_keys(password)
        self.shot("sign-in-page")
        self.find("button[type=submit]")[0].click()
        self.wait("[data-test=vault-link]")
        self.shot("home")

    def session_cookie(self) -> str:
        return next(c["value"] for c in self.driver.get_cookies() if c["name"] == "__Host-kh_portal")

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture
def browser(server, request):
    b = Browser(server, request.node.name.split("[")[0].removeprefix("test_")[:40])
    try:
        yield b
    finally:
        try:
            b.shot("last")   # what the page showed when the test ended (or failed)
        finally:
            b.close()


def vault_arm_id(server) -> str:
    return (f"/subscriptions/{server.subscription_id}/resourceGroups/{server.resource_group}"
            "/providers/Microsoft.KeyVault/vaults/dev")


def portal_user(server, *roles):
    user, password = create_user(server, prefix="portal")
    for role in roles:
        assign_role(server, vault_arm_id(server), role, user["id"], principal_type="User")
    return user, password


def test_the_portal_serves_its_shell_with_a_strict_policy(server):
    url = server.bootstrap["portal_url"]
    assert url.startswith("https://portal.")
    for path in ("/", "/ui/vaults/x/y/z/secrets", "/static/app.js"):
        r = requests.get(url + path, verify=server.ca_cert, timeout=30)
        assert r.status_code == 200, (path, r.status_code)
        csp = r.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
        assert r.headers["X-Frame-Options"] == "DENY"
    session = requests.get(url + "/api/session", verify=server.ca_cert, timeout=30).json()
    assert session == {"signedIn": False}


def test_sign_in_create_reveal_and_read_back_with_the_sdk(server, credential, browser):
    user, password = portal_user(server, "Reader", "Key Vault Administrator")
    browser.sign_in(user["userPrincipalName"], password)
    assert browser.find("#who")[0].text == user["displayName"]
    browser.wait("[data-test=vault-link]").click()
    browser.wait("[data-test=new-secret-name]")
    sdk = SecretClient(server.vault_url, credential, **CLIENT_KWARGS)
    # A secret the SDK wrote, with markup in its content type, shows as text.
    markup = '<img src=x onerror="document.title=\'pwned\'">'
    from_sdk = unique("FromSdk")
    sdk.set_secret(from_sdk, "written-by-the-sdk", content_type=markup, tags={"owner": markup})
    name, value = unique("DbPassword"), "s3cr3t <b>not bold</b> & ünïcode"
    browser.find("[data-test=new-secret-name]")[0].send_keys(name)
    browser.find("[data-test=new-secret-value]")[0].send_keys(value)
    browser.find("[data-test=new-secret-content-type]")[0].send_keys("text/plain")
    browser.find("[data-test=new-secret-submit]")[0].click()
    browser.wait("[data-test=secret-detail] h2", name)
    browser.shot("created")
    browser.find("[data-test=show-value]")[0].click()
    shown = browser.wait("[data-test=secret-value]")
    assert shown.text == value
    browser.shot("value-shown")
    assert sdk.get_secret(name).value == value, "the SDK reads what the portal wrote"
    # The list (reloaded) has the SDK's secret; its content type is text.
    browser.driver.refresh()
    browser.wait("[data-test=secret-filter]").send_keys(from_sdk)
    browser.wait("[data-test=secret-row]", from_sdk)
    row = browser.find("[data-test=secret-row]")[0]
    assert markup in row.text
    assert not browser.find("img"), "markup from the server never becomes markup"
    assert browser.driver.title != "pwned"
    browser.find("[data-test=secret-link]")[0].click()
    assert browser.wait("[data-test=version-tags]").text == f"owner={markup}", "a tag is text too"
    browser.wait("[data-test=show-value]").click()
    assert browser.wait("[data-test=secret-value]").text == "written-by-the-sdk"
    assert not browser.find("img") and browser.driver.title != "pwned"
    browser.shot("sdk-secret")
    # Sign-out ends the session: its cookie no longer opens the API.
    cookie = browser.session_cookie()
    browser.find("[data-test=signout]")[0].click()
    browser.wait("[data-test=signin]")
    r = requests.get(server.bootstrap["portal_url"] + "/api/arm/subscriptions?api-version=2022-12-01",
                     cookies={"__Host-kh_portal": cookie}, verify=server.ca_cert, timeout=30)
    assert r.status_code == 401 and r.json()["error"]["code"] == "SessionExpired"


def test_a_reader_sees_the_vault_but_not_its_secrets(server, browser):
    user, password = portal_user(server, "Reader")
    browser.sign_in(user["userPrincipalName"], password)
    browser.wait("[data-test=vault-link]").click()
    err = browser.wait("[data-test=error]")
    assert "Forbidden" in err.text, err.text
    assert not browser.find("[data-test=secret-row]")
    browser.shot("reader-refused")


def test_csrf_and_foreign_cookies_are_refused(server, browser):
    user, password = portal_user(server, "Reader", "Key Vault Administrator")
    browser.sign_in(user["userPrincipalName"], password)
    base = server.bootstrap["portal_url"]
    cookie = {"__Host-kh_portal": browser.session_cookie()}
    put = f"{base}/api/vault/dev/secrets/{unique('csrf')}?api-version=7.5"
    r = requests.put(put, json={"value": "x"}, cookies=cookie, verify=server.ca_cert, timeout=30)
    assert r.status_code == 403 and r.json()["error"]["code"] == "CsrfTokenMissing"
    csrf = requests.get(f"{base}/api/session", cookies=cookie, verify=server.ca_cert, timeout=30).json()["csrf"]
    r = requests.put(put, json={"value": "x"}, cookies=cookie, headers={"X-CSRF-Token": csrf + "x"},
                     verify=server.ca_cert, timeout=30)
    assert r.status_code == 403
    r = requests.put(put, json={"value": "x"}, cookies=cookie, headers={"X-CSRF-Token": csrf},
                     verify=server.ca_cert, timeout=30)
    assert r.status_code == 200, r.text
    # A cookie this deployment never issued opens nothing.
    forged = {"__Host-kh_portal": base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")}
    r = requests.get(f"{base}/api/arm/subscriptions?api-version=2022-12-01", cookies=forged,
                     verify=server.ca_cert, timeout=30)
    assert r.status_code == 401
    # Signing out needs the token too.
    r = requests.post(f"{base}/signout", data={"csrf": "wrong"}, cookies=cookie, verify=server.ca_cert,
                      timeout=30, allow_redirects=False)
    assert r.status_code == 403


# ---------------------------------------------------------------------------
# The sign-in flow without a browser (each step as a browser would do it).

def begin_sign_in(server, http: requests.Session):
    """GET /signin and the sign-in page, post the credentials: the callback
    URL the login host sends the browser to (not followed)."""
    from browser_login import _Form
    base = server.bootstrap["portal_url"]
    r = http.get(f"{base}/signin", verify=server.ca_cert, timeout=30, allow_redirects=False)
    assert r.status_code == 303, r.text
    page = http.get(r.headers["Location"], verify=server.ca_cert, timeout=30)
    assert page.status_code == 200, page.text[:300]
    assert f"form-action 'self' {base}" in page.headers["Content-Security-Policy"]
    form = _Form()
    form.feed(page.text)
    return form, page.url


def finish_sign_in(server, http: requests.Session, upn: str, password: str) -> str:
    form, url = begin_sign_in(server, http)
    post = http.post(requests.compat.urljoin(url, form.action), verify=server.ca_cert, timeout=30,
                     data=dict(form.fields, username=upn, password=password), allow_redirects=False)
    assert post.status_code == 302, post.text[:300]
    return post.headers["Location"]


def test_a_sign_in_completes_only_in_the_browser_that_began_it(server):
    """Login CSRF: an attacker who stops at the callback and sends the
    victim there does not put the victim into the attacker's session."""
    user, password = portal_user(server, "Reader")
    attacker = requests.Session()
    callback = finish_sign_in(server, attacker, user["userPrincipalName"], password)
    assert callback.startswith(server.bootstrap["portal_url"] + "/signin/callback?")
    victim = requests.Session()
    r = victim.get(callback, verify=server.ca_cert, timeout=30, allow_redirects=False)
    assert r.status_code == 400 and "__Host-kh_portal" not in r.headers.get("Set-Cookie", "")
    # The browser that began it still can.
    r = attacker.get(callback, verify=server.ca_cert, timeout=30, allow_redirects=False)
    assert r.status_code == 303 and "__Host-kh_portal=" in r.headers["Set-Cookie"]
    base = server.bootstrap["portal_url"]
    me = attacker.get(f"{base}/api/session", verify=server.ca_cert, timeout=30).json()
    assert me["signedIn"] and me["oid"] == user["id"]
    # A cross-site sign-out (a form on another site) changes nothing.
    r = attacker.post(f"{base}/signout", data={"csrf": me["csrf"]}, headers={"Sec-Fetch-Site": "cross-site"},
                      verify=server.ca_cert, timeout=30, allow_redirects=False)
    assert r.status_code == 403 and "Set-Cookie" not in r.headers
    assert attacker.get(f"{base}/api/session", verify=server.ca_cert, timeout=30).json()["signedIn"]
    r = attacker.post(f"{base}/signout", data={"csrf": me["csrf"]}, verify=server.ca_cert, timeout=30,
                      allow_redirects=False)
    assert r.status_code == 303
    assert not attacker.get(f"{base}/api/session", verify=server.ca_cert, timeout=30).json()["signedIn"]


class ProxiedServer(__import__("khcompat").KeyhavenServer):
    """Trusts the reverse proxy at 127.0.0.3."""

    def command(self):
        return super().command() + ["--trusted-proxy", "127.0.0.3/32"]


def test_the_vault_firewall_judges_the_browsers_address_through_the_portal(store_kind, tmp_path, monkeypatch):
    """Behind a trusted reverse proxy, the portal's calls are judged by the
    address the proxy names, exactly as a direct call would be."""
    from khcompat import arm, management_token, running_server, trust_server_ca
    from test_network import session_from
    with running_server(ProxiedServer, store_kind, tmp_path / "srv") as srv:
        trust_server_ca(monkeypatch, srv)
        name = unique("pfw")[:24]
        path = (f"/subscriptions/{srv.subscription_id}/resourceGroups/{srv.resource_group}"
                f"/providers/Microsoft.KeyVault/vaults/{name}")
        r = arm(srv, "PUT", path, management_token(srv), {"location": "local", "properties": {
            "tenantId": srv.tenant_id, "sku": {"family": "A", "name": "standard"}, "enableRbacAuthorization": True,
            "networkAcls": {"defaultAction": "Deny", "ipRules": [{"value": "198.51.100.50"}]}}},
            api_version="2023-07-01")
        assert r.status_code == 201, r.text
        user, password = create_user(srv, prefix="portal")
        assign_role(srv, path, "Key Vault Administrator", user["id"], principal_type="User")
        browser = session_from("127.0.0.3")
        browser.headers["X-Forwarded-For"] = "198.51.100.50"
        callback = finish_sign_in(srv, browser, user["userPrincipalName"], password)
        assert browser.get(callback, verify=srv.ca_cert, timeout=30, allow_redirects=False).status_code == 303
        base = srv.bootstrap["portal_url"]
        url = f"{base}/api/vault/{name}/secrets?api-version=7.5"
        assert browser.get(url, verify=srv.ca_cert, timeout=30).status_code == 200
        r = browser.get(url, verify=srv.ca_cert, timeout=30, headers={"X-Forwarded-For": "203.0.113.1"})
        assert r.status_code == 403 and "Client address: 203.0.113.1" in r.json()["error"]["message"], r.text


def listed_names_are_names(browser, collection):
    """The list drew rows (the first page: a shared vault may hold more than
    one page) named like objects, with no error."""
    import re
    browser.wait(f"[data-test={collection}-row]")
    assert not browser.find("[data-test=error]"), browser.find("[data-test=error]")[0].text
    names = [a.text for a in browser.find(f"[data-test={collection}-link]")]
    assert names and all(re.fullmatch(r"[0-9a-zA-Z-]{1,127}", n) for n in names), names


def test_certificate_details_match_what_cryptography_reads(server, credential, browser):
    """A certificate created in the portal: its details (subject, issuer,
    serial, SANs, validity, key, SHA-1 and SHA-256 thumbprints) are what
    pyca/cryptography reads from the certificate the SDK fetches. A key
    created in the portal is the key the SDK reads."""
    from azure.keyvault.certificates import CertificateClient
    from azure.keyvault.keys import KeyClient
    from cryptography.hazmat.primitives import hashes
    user, password = portal_user(server, "Reader", "Key Vault Administrator")
    browser.sign_in(user["userPrincipalName"], password)
    browser.wait("[data-test=vault-link]").click()
    browser.wait("[data-test=tab-certificates]").click()
    name = unique("portal-cert")
    browser.wait("[data-test=new-cert-name]").send_keys(name)
    subject = browser.find("[data-test=new-cert-subject]")[0]
    subject.clear()
    subject.send_keys("CN=portal.example.test, O=Keyhaven Tests")
    browser.find("[data-test=new-cert-dns]")[0].send_keys("portal.example.test, www.example.test")
    browser.find("[data-test=new-cert-submit]")[0].click()
    browser.wait("[data-test=cert-detail] h2", name)
    browser.wait("[data-test=cert-sha-256-thumbprint]")
    listed_names_are_names(browser, "certificates")
    browser.shot("certificate-details")
    got = {k: browser.find(f"[data-test=cert-{k}]")[0].text for k in (
        "subject", "issuer", "serial-number", "subject-alternative-names", "not-before", "not-after", "key",
        "sha-1-thumbprint", "sha-256-thumbprint")}
    cer = CertificateClient(server.vault_url, credential, **CLIENT_KWARGS).get_certificate(name).cer
    cert = x509.load_der_x509_certificate(bytes(cer))
    assert got["subject"] == cert.subject.rfc4514_string().replace(",", ", ")
    assert "CN=portal.example.test" in got["subject"] and "O=Keyhaven Tests" in got["subject"]
    assert got["issuer"] == cert.issuer.rfc4514_string().replace(",", ", ")
    assert got["serial-number"].lstrip("0") == f"{cert.serial_number:X}"
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert got["subject-alternative-names"] == ", ".join("DNS:" + d for d in sans.get_values_for_type(x509.DNSName))
    assert got["not-before"] == cert.not_valid_before_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert got["not-after"] == cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert got["key"] == f"RSA {cert.public_key().key_size} bits"
    assert got["sha-1-thumbprint"] == cert.fingerprint(hashes.SHA1()).hex().upper()
    assert got["sha-256-thumbprint"] == cert.fingerprint(hashes.SHA256()).hex().upper()
    href = browser.find("[data-test=download-cer]")[0].get_attribute("href")
    assert base64.b64decode(href.split(",", 1)[1]) == bytes(cer), "the CER download is the certificate"

    browser.find("[data-test=tab-keys]")[0].click()
    key = unique("portal-key")
    browser.wait("[data-test=new-key-name]").send_keys(key)
    from selenium.webdriver.support.ui import Select
    Select(browser.find("[data-test=new-key-type]")[0]).select_by_visible_text("EC P-384")
    browser.find("[data-test=new-key-submit]")[0].click()
    browser.wait("[data-test=key-detail] h2", key)
    listed_names_are_names(browser, "keys")
    browser.shot("key-details")
    sdk_key = KeyClient(server.vault_url, credential, **CLIENT_KWARGS).get_key(key)
    assert sdk_key.key.crv == "P-384" and sdk_key.key_type == "EC"
    assert browser.find("[data-test=key-size-curve]")[0].text == "P-384"
    assert browser.find("[data-test=key-key-identifier]")[0].text == sdk_key.id


def test_a_firewalled_vault_refuses_the_portal_until_the_client_ip_is_added(server, browser):
    """Seed 000's lab by clicking: the vault admits one other address, so
    the portal's own data-plane calls are refused; "Add my client IP" on the
    Networking blade and Save, and the Secrets blade works."""
    from khcompat import arm, management_token
    name, _ = fresh_vault(server, browser, "secrets", roles=("Key Vault Contributor", "Key Vault Secrets Officer"),
                          networkAcls={"defaultAction": "Deny", "bypass": "None", "ipRules": [{"value": "203.0.113.7"}]})
    path = (f"/subscriptions/{server.subscription_id}/resourceGroups/{server.resource_group}"
            f"/providers/Microsoft.KeyVault/vaults/{name}")
    base = f"{server.bootstrap['portal_url']}/ui/vaults/{server.subscription_id}/{server.resource_group}/{name}"
    err = browser.wait("[data-test=error]")
    assert "Client address is not authorized" in err.text and "127.0.0.1" in err.text, err.text
    browser.shot("firewalled")
    browser.find("[data-test=tab-networking]")[0].click()
    browser.wait("[data-test=add-my-ip]").click()
    browser.wait("[data-test=ip-rules]", "127.0.0.1")
    browser.shot("client-ip-added")
    browser.find("[data-test=network-save]")[0].click()
    browser.wait("[data-test=network-saved]")
    acls = arm(server, "GET", path, management_token(server), api_version="2023-07-01").json()["properties"]["networkAcls"]
    assert {r["value"] for r in acls["ipRules"]} >= {"203.0.113.7", "127.0.0.1"} and acls["defaultAction"] == "Deny"
    browser.find("[data-test=tab-secrets]")[0].click()
    browser.wait("[data-test=new-secret-name]")
    assert not browser.find("[data-test=error]"), browser.find("[data-test=error]")[0].text
    browser.shot("secrets-reachable")


def test_seed_002_lab_by_clicking_role_assignments_decide_what_the_portal_can_do(server, browser):
    """Seed 002's lab in the portal: an Owner of the vault gives themself Key
    Vault Administrator on the Access control blade, creates DbPassword and
    reads it; then swaps to Key Vault Secrets User and sees a write refused
    while the read still works."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    user, password = portal_user(server, "Owner")
    upn = user["userPrincipalName"]
    browser.sign_in(upn, password)
    base = (f"{server.bootstrap['portal_url']}/ui/vaults/{server.subscription_id}/{server.resource_group}/dev")

    def grant(role):
        browser.driver.get(base + "/access")
        Select(browser.wait("[data-test=role-select]")).select_by_visible_text(role)
        browser.find("[data-test=principal-search]")[0].send_keys(upn)
        browser.wait("[data-test=principal-select] option", upn)
        # The list settles once the last keystroke's search has drawn it.
        Select(browser.find("[data-test=principal-select]")[0]).select_by_value(f"User|{user['id']}")
        browser.find("[data-test=add-assignment]")[0].click()
        return browser.until_rows("[data-test=assignment-row]",
                                  lambda t: t.startswith(role) and upn in t and "This resource" in t,
                                  message=f"an assignment of {role} to the user")

    grant("Key Vault Administrator")
    browser.shot("administrator-granted")
    browser.driver.get(base + "/secrets")
    name = unique("DbPassword")
    browser.wait("[data-test=new-secret-name]").send_keys(name)
    browser.find("[data-test=new-secret-value]")[0].send_keys("hunter2-but-longer")
    browser.find("[data-test=new-secret-submit]")[0].click()
    browser.wait("[data-test=secret-detail] h2", name)
    browser.find("[data-test=show-value]")[0].click()
    assert browser.wait("[data-test=secret-value]").text == "hunter2-but-longer"

    browser.driver.get(base + "/access")
    mine = browser.until_rows("[data-test=assignment-row]",
                              lambda t: "Key Vault Administrator" in t and upn in t and "This resource" in t)
    assert len(mine) == 1, [r.text for r in browser.find("[data-test=assignment-row]")]
    mine[0].find_element(By.CSS_SELECTOR, "[data-test=remove-assignment]").click()
    browser.until_rows("[data-test=assignment-row]",
                       lambda t: "Key Vault Administrator" in t and upn in t and "This resource" in t,
                       present=False, message="the removed assignment leaves the list")
    grant("Key Vault Secrets User")
    browser.shot("swapped-to-secrets-user")
    browser.driver.get(base + "/secrets")
    browser.wait("[data-test=new-secret-name]").send_keys(unique("refused"))
    browser.find("[data-test=new-secret-value]")[0].send_keys("x")
    browser.find("[data-test=new-secret-submit]")[0].click()
    err = browser.wait("[data-test=error]")
    assert "Forbidden" in err.text and "secrets/setSecret" in err.text, err.text
    browser.shot("write-refused")
    browser.wait("[data-test=secret-filter]").send_keys(name)
    browser.wait("[data-test=secret-row]", name)
    browser.find("[data-test=secret-link]")[0].click()
    browser.wait("[data-test=show-value]").click()
    assert browser.wait("[data-test=secret-value]").text == "hunter2-but-longer"


def test_create_a_vault_with_the_wizard_then_recover_it_after_deletion(server, browser):
    """The create-vault wizard writes what it shows (checked through ARM):
    a new resource group, an access-policy vault with 7-day retention,
    selected networks and tags; the name's availability is checked live.
    Deleted (through ARM), the vault is listed on Home and Recover brings it
    back."""
    from selenium.webdriver.support.ui import Select
    from khcompat import arm, assign_role as grant, management_token
    user, password = create_user(server, prefix="portal")
    grant(server, f"/subscriptions/{server.subscription_id}", "Contributor", user["id"], principal_type="User")
    browser.sign_in(user["userPrincipalName"], password)
    browser.find("[data-test=create-vault]")[0].click()
    rg, name = unique("rg-portal"), unique("cv")[:24]
    browser.wait("[data-test=cv-name]").send_keys("dev")
    browser.wait("[data-test=cv-available]", "already")
    browser.find("[data-test=cv-name]")[0].clear()
    browser.find("[data-test=cv-name]")[0].send_keys(name)
    browser.wait("[data-test=cv-available]", "Available")
    browser.find("[data-test=cv-new-group]")[0].send_keys(rg)
    Select(browser.find("[data-test=cv-model]")[0]).select_by_value("policies")
    retention = browser.find("[data-test=cv-retention]")[0]
    retention.clear()
    retention.send_keys("7")
    Select(browser.find("[data-test=cv-network]")[0]).select_by_value("selected")
    browser.find("[data-test=cv-tags]")[0].send_keys("team=payments\nenv=dev")
    browser.shot("wizard")
    browser.find("[data-test=cv-submit]")[0].click()
    browser.wait("[data-test=vault-uri]")
    browser.shot("created-vault")
    path = f"/subscriptions/{server.subscription_id}/resourceGroups/{rg}/providers/Microsoft.KeyVault/vaults/{name}"
    v = arm(server, "GET", path, management_token(server), api_version="2023-07-01").json()
    p = v["properties"]
    assert v["tags"] == {"team": "payments", "env": "dev"}
    assert p["enableRbacAuthorization"] is False and p["softDeleteRetentionInDays"] == 7
    assert p["networkAcls"]["defaultAction"] == "Deny" and p.get("publicNetworkAccess", "Enabled") == "Enabled"
    assert browser.find("[data-test=vault-uri]")[0].text == p["vaultUri"]
    # The creator of an access-policy vault can use it: a policy for them.
    policies = p["accessPolicies"]
    assert [a["objectId"] for a in policies] == [user["id"]]
    assert {"get", "set", "list"} <= set(policies[0]["permissions"]["secrets"])
    r = arm(server, "DELETE", path, management_token(server), api_version="2023-07-01")
    assert r.status_code in (200, 204), r.text
    browser.driver.get(server.bootstrap["portal_url"] + "/")
    row = browser.wait("[data-test=deleted-vault-row]", name)
    browser.shot("deleted-vaults")
    from selenium.webdriver.common.by import By
    row.find_element(By.CSS_SELECTOR, "[data-test=recover-vault]").click()
    browser.wait("[data-test=vault-link]", name)
    back = arm(server, "GET", path, management_token(server), api_version="2023-07-01")
    assert back.status_code == 200
    assert back.json()["tags"] == {"team": "payments", "env": "dev"}
    assert back.json()["properties"]["softDeleteRetentionInDays"] == 7


def test_disable_delete_and_recover_a_secret_in_the_portal(server, credential, browser):
    """A secret's version disabled in the portal is refused to the SDK and
    served again once enabled; deleted in the portal it is a deleted secret
    for the SDK; Recover on the Deleted secrets list brings it back."""
    from azure.core.exceptions import HttpResponseError
    name, uri = fresh_vault(server, browser, "secrets")
    sdk = SecretClient(uri, credential, **CLIENT_KWARGS)
    secret = unique("life")
    sdk.set_secret(secret, "still-here")
    browser.driver.refresh()
    browser.wait("[data-test=secret-row]", secret)
    browser.find("[data-test=secret-link]")[0].click()
    browser.wait("[data-test=disable-version]").click()
    browser.wait("[data-test=version-row]", "Disabled")
    browser.shot("disabled")
    with pytest.raises(HttpResponseError) as e:
        sdk.get_secret(secret)
    assert e.value.status_code == 403
    browser.wait("[data-test=enable-version]").click()
    browser.wait("[data-test=version-row]", "Enabled")
    assert sdk.get_secret(secret).value == "still-here"
    browser.wait("[data-test=delete-secret]").click()
    browser.driver.switch_to.alert.accept()
    browser.wait("[data-test=secret-deleted]")
    assert sdk.get_deleted_secret(secret).name == secret
    browser.until_rows("[data-test=secret-row]", lambda t: secret in t, present=False,
                       message="the deleted secret leaves the list")
    browser.find("[data-test=show-deleted-secrets]")[0].click()
    row = browser.wait("[data-test=deleted-secret-row]", secret)
    browser.shot("deleted-secrets")
    from selenium.webdriver.common.by import By
    row.find_element(By.CSS_SELECTOR, "[data-test=recover-secret]").click()
    browser.wait("[data-test=show-deleted-secrets]")
    import time
    deadline = time.monotonic() + 15
    while True:
        try:
            assert sdk.get_secret(secret).value == "still-here"
            break
        except HttpResponseError:
            assert time.monotonic() < deadline, "recovered in the portal, readable through the SDK"
            time.sleep(0.3)


def fresh_vault(server, browser, blade: str, roles=("Reader", "Key Vault Administrator"), group_roles=(), **properties):
    """A new RBAC vault of its own (so its lists hold only this test's
    objects; `properties` added to its ARM properties), a user who holds
    `roles` on it (and `group_roles` on its resource group), signed in, on
    `blade`. Returns the vault's name and URI."""
    from khcompat import arm, management_token
    name = unique("pv")[:24]
    path = (f"/subscriptions/{server.subscription_id}/resourceGroups/{server.resource_group}"
            f"/providers/Microsoft.KeyVault/vaults/{name}")
    r = arm(server, "PUT", path, management_token(server), {"location": "local", "properties": {
        "tenantId": server.tenant_id, "sku": {"family": "A", "name": "standard"}, "enableRbacAuthorization": True,
        **properties}}, api_version="2023-07-01")
    assert r.status_code == 201, r.text
    user, password = create_user(server, prefix="portal")
    for role in roles:
        assign_role(server, path, role, user["id"], principal_type="User")
    for role in group_roles:
        assign_role(server, path.split("/providers/")[0], role, user["id"], principal_type="User")
    browser.user = user
    browser.sign_in(user["userPrincipalName"], password)
    browser.driver.get(f"{server.bootstrap['portal_url']}/ui/vaults/{server.subscription_id}/"
                       f"{server.resource_group}/{name}/{blade}")
    return name, r.json()["properties"]["vaultUri"]


def data_url_bytes(browser, css: str) -> bytes:
    href = browser.wait(css).get_attribute("href")
    assert href.startswith("data:"), href[:40]
    return base64.b64decode(href.split(",", 1)[1])


def test_keys_public_pem_rotation_policy_rotate_backup_purge_restore(server, credential, browser, tmp_path):
    """A key made in the portal: its PEM download is the public key the SDK
    reads; the rotation policy saved in the portal is the one the SDK reads;
    Rotate now makes a second version; a version disabled in the portal is
    disabled for the SDK; a backup downloaded, the key deleted and purged in
    the portal, then the backup uploaded, brings the same key back."""
    from azure.keyvault.keys import KeyClient
    from selenium.webdriver.support.ui import Select
    vault, uri = fresh_vault(server, browser, "keys")
    sdk = KeyClient(uri, credential, **CLIENT_KWARGS)
    browser.wait("[data-test=new-key-name]").send_keys("signing")
    Select(browser.find("[data-test=new-key-type]")[0]).select_by_visible_text("RSA 3072")
    browser.find("[data-test=new-key-submit]")[0].click()
    browser.wait("[data-test=key-detail] h2", "signing")
    key = sdk.get_key("signing")
    pem = serialization.load_pem_public_key(data_url_bytes(browser, "[data-test=download-pem]"))
    assert pem.public_numbers().n == int.from_bytes(key.key.n, "big") and pem.key_size == 3072

    Select(browser.find("[data-test=rotate-when]")[0]).select_by_value("timeAfterCreate")
    browser.find("[data-test=rotate-period]")[0].send_keys("P90D")
    browser.find("[data-test=notify-before]")[0].clear()
    browser.find("[data-test=notify-before]")[0].send_keys("P30D")
    browser.find("[data-test=policy-expiry]")[0].clear()
    browser.find("[data-test=policy-expiry]")[0].send_keys("P2Y")
    browser.find("[data-test=rotation-save]")[0].click()
    browser.wait("[data-test=rotation-saved]")
    policy = sdk.get_key_rotation_policy("signing")
    assert policy.expires_in == "P2Y"
    got = sorted((a.action.lower(), a.time_after_create, a.time_before_expiry) for a in policy.lifetime_actions)
    assert got == [("notify", None, "P30D"), ("rotate", "P90D", None)], got

    browser.find("[data-test=rotate-key]")[0].click()
    browser.until_rows("[data-test=version-row]", lambda t: True)
    import time
    deadline = time.monotonic() + WAIT
    while len(browser.find("[data-test=version-row]")) < 2:
        assert time.monotonic() < deadline, "Rotate now shows a second version"
        time.sleep(0.2)
    assert len(list(sdk.list_properties_of_key_versions("signing"))) == 2
    browser.find("[data-test=disable-version]")[0].click()
    browser.wait("[data-test=version-row]", "Disabled")
    browser.shot("key-versions")
    assert sorted(v.enabled for v in sdk.list_properties_of_key_versions("signing")) == [False, True]

    before = sorted((v.version, v.enabled) for v in sdk.list_properties_of_key_versions("signing"))
    browser.find("[data-test=backup-key]")[0].click()
    blob = data_url_bytes(browser, "[data-test=backup-file]")
    backup = tmp_path / "signing.keyvault-key-backup"
    backup.write_bytes(blob)
    browser.find("[data-test=delete-key]")[0].click()
    browser.driver.switch_to.alert.accept()
    browser.wait("[data-test=key-deleted]")
    browser.find("[data-test=show-deleted-keys]")[0].click()
    browser.wait("[data-test=deleted-key-row]", "signing")
    browser.find("[data-test=purge-key]")[0].click()
    browser.driver.switch_to.alert.accept()
    browser.wait("#main", "No deleted keys.")
    from azure.core.exceptions import ResourceNotFoundError
    with pytest.raises(ResourceNotFoundError):
        sdk.get_deleted_key("signing")
    browser.find("[data-test=restore-key-file]")[0].send_keys(str(backup))
    browser.find("[data-test=restore-key]")[0].click()
    browser.wait("[data-test=restored]", "signing")
    after = sorted((v.version, v.enabled) for v in sdk.list_properties_of_key_versions("signing"))
    assert after == before, "the backup brings back the same key, every version as it was"
    browser.wait("[data-test=keys-row]", "signing")


def test_certificates_csr_merge_pfx_import_contacts_and_policy(server, credential, browser, tmp_path):
    """A certificate for an external CA: the portal's CSR, signed here by a
    test CA, merged through the portal, is the certificate the SDK reads.
    Its PFX download (the certificate's secret) holds the key that matches.
    A PFX imported through the portal is the certificate the SDK reads; a
    contact added and a policy edited in the portal are what the SDK reads."""
    import datetime
    from azure.keyvault.certificates import CertificateClient
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import pkcs12
    from cryptography.x509.oid import NameOID
    from selenium.webdriver.support.ui import Select
    vault, uri = fresh_vault(server, browser, "certificates")
    sdk = CertificateClient(uri, credential, **CLIENT_KWARGS)
    browser.wait("[data-test=new-cert-name]").send_keys("external")
    Select(browser.find("[data-test=new-cert-issuer]")[0]).select_by_value("Unknown")
    subject = browser.find("[data-test=new-cert-subject]")[0]
    subject.clear()
    subject.send_keys("CN=external.example.test")
    browser.find("[data-test=new-cert-submit]")[0].click()
    browser.wait("[data-test=op-status]", "inProgress")
    browser.shot("pending-request")
    csr = x509.load_pem_x509_csr(data_url_bytes(browser, "[data-test=download-csr]"))
    assert csr.subject.rfc4514_string() == "CN=external.example.test" and csr.is_signature_valid

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Portal Test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(csr.subject).issuer_name(ca_name).public_key(csr.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=30)).sign(ca_key, hashes.SHA256()))
    signed = tmp_path / "signed.pem"
    signed.write_bytes(leaf.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM))
    browser.find("[data-test=merge-file]")[0].send_keys(str(signed))
    browser.find("[data-test=merge]")[0].click()
    browser.wait("[data-test=cert-issuer]", "CN=Portal Test CA")
    browser.shot("merged")
    assert bytes(sdk.get_certificate("external").cer) == leaf.public_bytes(serialization.Encoding.DER)

    browser.find("[data-test=download-with-key]")[0].click()
    key, cert, _ = pkcs12.load_key_and_certificates(data_url_bytes(browser, "[data-test=key-file]"), None)
    assert cert == leaf and key.public_key().public_numbers() == leaf.public_key().public_numbers()

    own_key = ec.generate_private_key(ec.SECP384R1())
    own_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "imported.example.test")])
    own = (x509.CertificateBuilder().subject_name(own_name).issuer_name(own_name).public_key(own_key.public_key())
           .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
           .not_valid_after(now + datetime.timedelta(days=60)).sign(own_key, hashes.SHA384()))
    pfx = tmp_path / "own.pfx"
    pfx.write_bytes(pkcs12.serialize_key_and_certificates(b"own", own_key, own, None,
                                                         serialization.BestAvailableEncryption(b"s3cret-pfx")))
    browser.find("[data-test=import-cert-name]")[0].send_keys("imported")
    browser.find("[data-test=import-cert-file]")[0].send_keys(str(pfx))
    browser.find("[data-test=import-cert-password]")[0].send_keys("s3cret-pfx")
    browser.find("[data-test=import-cert-submit]")[0].click()
    browser.wait("[data-test=cert-detail] h2", "imported")
    browser.wait("[data-test=cert-key]", "EC P-384")
    assert bytes(sdk.get_certificate("imported").cer) == own.public_bytes(serialization.Encoding.DER)

    browser.find("[data-test=policy-open]")[0].click()
    import json as _json
    box = browser.wait("[data-test=policy-json]")
    policy = _json.loads(box.get_attribute("value"))
    policy["x509_props"]["validity_months"] = 7
    browser.driver.execute_script("arguments[0].value = arguments[1]", box, _json.dumps(policy))
    browser.find("[data-test=policy-save]")[0].click()
    browser.wait("[data-test=policy-saved]")
    assert sdk.get_certificate_policy("imported").validity_in_months == 7

    # A subject holding markup shows as text.
    from azure.keyvault.certificates import CertificatePolicy
    sdk.begin_create_certificate("markup", CertificatePolicy(issuer_name="Self", subject="CN=<img src=x onerror=alert(1)>"),
                                 _polling_interval=0.2).result()
    browser.driver.refresh()
    browser.wait("[data-test=certificates-row]", "markup")
    next(a for a in browser.find("[data-test=certificates-link]") if a.text == "markup").click()
    assert "<img src=x onerror=alert(1)>" in browser.wait("[data-test=cert-subject]").text
    assert not browser.find("img"), "a certificate subject never becomes markup"
    browser.find("[data-test=show-authorities]")[0].click()
    browser.wait("[data-test=new-contact-email]").send_keys("pki-team@example.test")
    browser.find("[data-test=new-contact-submit]")[0].click()
    browser.wait("[data-test=contact-row]", "pki-team@example.test")
    browser.shot("authorities")
    assert [c.email for c in sdk.get_contacts()] == ["pki-team@example.test"]


def test_secret_versions_with_attributes_tags_and_backup_restore(server, credential, browser, tmp_path):
    """A secret made in the portal with content type, expiry and tags reads
    so through the SDK; a new version from its details is the latest; its
    backup, after the secret is deleted and purged, restores it."""
    import datetime
    import time
    vault, uri = fresh_vault(server, browser, "secrets")
    sdk = SecretClient(uri, credential, **CLIENT_KWARGS)
    browser.wait("[data-test=new-secret-name]").send_keys("api-token")
    browser.find("[data-test=new-secret-value]")[0].send_keys("first")
    browser.find("[data-test=new-secret-content-type]")[0].send_keys("text/plain")
    exp = browser.find("[data-test=new-secret-exp]")[0]
    browser.driver.execute_script("arguments[0].value = '2031-05-06T07:08'", exp)
    browser.find("[data-test=new-secret-tags]")[0].send_keys("owner=payments\nenv=dev")
    browser.find("[data-test=new-secret-submit]")[0].click()
    browser.wait("[data-test=secret-detail] h2", "api-token")
    s = sdk.get_secret("api-token")
    assert (s.value, s.properties.content_type, s.properties.tags) == ("first", "text/plain", {"owner": "payments", "env": "dev"})
    assert s.properties.expires_on == datetime.datetime(2031, 5, 6, 7, 8, tzinfo=datetime.timezone.utc)
    browser.find("[data-test=new-version-open]")[0].click()
    browser.wait("[data-test=new-version-value]").send_keys("second")
    browser.find("[data-test=new-version-submit]")[0].click()
    deadline = time.monotonic() + WAIT
    while len(browser.find("[data-test=version-row]")) < 2:
        assert time.monotonic() < deadline, "the new version is listed"
        time.sleep(0.2)
    assert sdk.get_secret("api-token").value == "second"
    browser.find("[data-test=backup-secret]")[0].click()
    backup = tmp_path / "api-token.keyvault-secret-backup"
    backup.write_bytes(data_url_bytes(browser, "[data-test=backup-file]"))
    sdk.begin_delete_secret("api-token").wait()
    sdk.purge_deleted_secret("api-token")
    browser.find("[data-test=restore-secret-file]")[0].send_keys(str(backup))
    browser.find("[data-test=restore-secret]")[0].click()
    browser.wait("[data-test=restored]", "api-token")
    assert sdk.get_secret("api-token").value == "second"
    assert len(list(sdk.list_properties_of_secret_versions("api-token"))) == 2


def test_monitoring_blade_metrics_chart_logs_and_diagnostic_settings(server, credential, browser):
    """The Monitoring blade: a diagnostic setting added there (to a Log
    Analytics workspace) is the one ARM lists; the SDK's reads then show on
    the Logs blade (operation filter) and as a line on the ServiceApiHit
    chart split by operation; the event subscriptions list answers."""
    import time
    from khcompat import arm, management_token
    law = unique("law")
    ws = arm(server, "PUT", f"/subscriptions/{server.subscription_id}/resourceGroups/{server.resource_group}"
             f"/providers/Microsoft.OperationalInsights/workspaces/{law}", management_token(server),
             {"location": "local"}, api_version="2022-10-01")
    assert ws.status_code in (200, 201), ws.text
    # Reader on the group: the workspace picker lists what the user may read.
    # Reader on the group: the workspace picker lists what the user may read;
    # Log Analytics Contributor: the user may send records to the workspace.
    vault, uri = fresh_vault(server, browser, "monitoring", roles=("Contributor", "Key Vault Administrator"),
                             group_roles=("Reader", "Log Analytics Contributor"))
    browser.wait("[data-test=metric-chart], [data-test=metric-refresh]")
    browser.wait("#main", "No event subscriptions.")
    browser.find("[data-test=diag-open]")[0].click()
    browser.wait("[data-test=diag-name]").send_keys("to-law")
    from selenium.webdriver.support.ui import Select
    Select(browser.find("[data-test=diag-workspace]")[0]).select_by_visible_text(f"Log Analytics workspace: {law}")
    browser.find("[data-test=diag-save]")[0].click()
    browser.wait("[data-test=diag-row]", "to-law")
    vault_id = (f"/subscriptions/{server.subscription_id}/resourceGroups/{server.resource_group}"
                f"/providers/Microsoft.KeyVault/vaults/{vault}")
    listed = arm(server, "GET", f"{vault_id}/providers/Microsoft.Insights/diagnosticSettings", management_token(server),
                 api_version="2021-05-01-preview").json()["value"]
    assert [(d["name"], d["properties"]["workspaceId"]) for d in listed] == [("to-law", ws.json()["id"])]

    sdk = SecretClient(uri, credential, **CLIENT_KWARGS)
    sdk.set_secret("watched", "v")
    for _ in range(3):
        sdk.get_secret("watched")
    browser.find("[data-test=logs-operation]")[0].send_keys("SecretGet")
    deadline = time.monotonic() + WAIT
    while len(browser.find("[data-test=log-row]")) < 3:
        assert time.monotonic() < deadline, "the SDK's reads reach the Logs blade"
        browser.find("[data-test=logs-run]")[0].click()
        time.sleep(0.5)
    assert all("SecretGet" in r.text for r in browser.find("[data-test=log-row]"))

    # The same reads through KQL (the vault's resource-context query), drawn.
    kql = browser.find("[data-test=kql-text]")[0]
    kql.clear()
    kql.send_keys("AzureDiagnostics | where OperationName startswith 'Secret' | summarize n = count() by OperationName"
                  " | order by OperationName asc | render barchart")
    browser.find("[data-test=kql-run]")[0].click()
    browser.wait("[data-test=kql-row]", "SecretGet")
    rows = [r.text for r in browser.find("[data-test=kql-row]")]
    assert any(r.startswith("SecretGet") and r.split()[-1].isdigit() and int(r.split()[-1]) >= 3 for r in rows), rows
    assert any(r.startswith("SecretSet") for r in rows), rows
    assert len(browser.find("[data-test=kql-bar]")) == len(rows)
    browser.driver.execute_script(
        "document.querySelector('[data-test=kql-text]').scrollIntoView({block: 'start'})")
    browser.shot("monitoring-kql-bars")
    kql.clear()
    kql.send_keys("AzureDiagnostics | where OperationName == | count")
    browser.find("[data-test=kql-run]")[0].click()
    browser.wait("#main", "Query could not be parsed")
    kql.clear()
    kql.send_keys("AzureDiagnostics | summarize count() by bin(TimeGenerated, 1m), OperationName | render timechart")
    browser.find("[data-test=kql-run]")[0].click()
    browser.wait("[data-test=kql-chart] [data-test=chart-dot]")
    assert len(browser.find("[data-test=kql-chart] [data-test=legend]")) >= 2  # SecretSet, SecretGet
    browser.driver.execute_script(
        "document.querySelector('[data-test=kql-text]').scrollIntoView({block: 'start'})")
    browser.shot("monitoring-kql")

    Select(browser.find("[data-test=metric-split]")[0]).select_by_value("ActivityName")
    deadline = time.monotonic() + 30
    while not any(l.text.startswith("secretget: 3") for l in browser.find("[data-test=legend]")):
        if time.monotonic() > deadline:
            direct = arm(server, "GET", f"{vault_id}/providers/Microsoft.Insights/metrics", management_token(server),
                         api_version="2018-01-01", params={"metricnames": "ServiceApiHit", "interval": "PT1M",
                                                           "$filter": "ActivityName eq '*'", "aggregation": "Count"})
            pytest.fail(f"no secretget line: legend {[l.text for l in browser.find('[data-test=legend]')]}, "
                        f"chart box {browser.find('.chart')[0].text!r}, at {time.time()}, ARM says {direct.text[:1500]}")
        time.sleep(1)
        browser.find("[data-test=metric-refresh]")[0].click()
    lines = browser.find("[data-test=chart-line]")
    assert lines and all(l.get_attribute("points") for l in lines)
    browser.driver.execute_script("window.scrollTo(0, 0)")
    browser.shot("monitoring")


def pick(browser, prefix: str, text: str, value: str) -> None:
    """Types `text` in a principal picker and chooses the option `value`."""
    from selenium.webdriver.support.ui import Select
    browser.wait(f"[data-test={prefix}-search]").send_keys(text)
    browser.wait(f"[data-test={prefix}-select] option", text)
    Select(browser.find(f"[data-test={prefix}-select]")[0]).select_by_value(value)


def test_check_access_through_a_group_and_the_access_policy_editor(server, browser):
    """Check access on the IAM blade names a role a user holds through a
    group. On an access-policy vault, a policy added in the portal lets its
    user read but not write secrets (checked with the SDK as that user), an
    edit adds set, and Remove takes the policy away (checked through ARM)."""
    from khcompat import add_member, arm, create_group, graph_token, management_token, user_credential
    from azure.core.exceptions import HttpResponseError
    vault, uri = fresh_vault(server, browser, "access", roles=("Owner", "Key Vault Administrator"))
    path = (f"/subscriptions/{server.subscription_id}/resourceGroups/{server.resource_group}"
            f"/providers/Microsoft.KeyVault/vaults/{vault}")
    member, member_password = create_user(server, prefix="member")
    group = create_group(server, graph_token(server))
    add_member(server, group["id"], member["id"])
    assign_role(server, path, "Key Vault Secrets User", group["id"], principal_type="Group")
    browser.driver.refresh()
    browser.wait("[data-test=assignment-row]")
    pick(browser, "check", member["displayName"], f"User|{member['id']}")
    browser.find("[data-test=check-access]")[0].click()
    row = browser.wait("[data-test=check-row]", "Key Vault Secrets User")
    assert f"Through group {group['id']}" in row.text
    browser.shot("check-access")

    # An access-policy vault, its Owner the portal user.
    vault2 = unique("pap")[:24]
    path2 = path.rsplit("/", 1)[0] + "/" + vault2
    r = arm(server, "PUT", path2, management_token(server), {"location": "local", "properties": {
        "tenantId": server.tenant_id, "sku": {"family": "A", "name": "standard"}, "enableRbacAuthorization": False,
        "accessPolicies": []}}, api_version="2023-07-01")
    assert r.status_code == 201, r.text
    uri2 = r.json()["properties"]["vaultUri"]
    assign_role(server, path2, "Owner", browser.user["id"], principal_type="User")
    browser.driver.get(f"{server.bootstrap['portal_url']}/ui/vaults/{server.subscription_id}/"
                       f"{server.resource_group}/{vault2}/access")
    pick(browser, "policy", member["displayName"], f"User|{member['id']}")
    browser.find("[data-test=perm-secrets-get]")[0].click()
    browser.find("[data-test=perm-secrets-list]")[0].click()
    browser.find("[data-test=policy-add]")[0].click()
    browser.wait("[data-test=policy-row]", member["displayName"])
    browser.shot("access-policies")
    policies = arm(server, "GET", path2, management_token(server), api_version="2023-07-01").json()["properties"]["accessPolicies"]
    mine = [p for p in policies if p["objectId"] == member["id"]]
    assert len(mine) == 1 and sorted(mine[0]["permissions"]["secrets"]) == ["get", "list"], policies
    cred = user_credential(server, member["userPrincipalName"], member_password)
    try:
        as_member = SecretClient(uri2, cred, **CLIENT_KWARGS)
        list(as_member.list_properties_of_secrets())
        with pytest.raises(HttpResponseError) as denied:
            as_member.set_secret("nope", "x")
        assert denied.value.status_code == 403
    finally:
        cred.close()
    row = browser.wait("[data-test=policy-row]", member["displayName"])
    from selenium.webdriver.common.by import By
    row.find_element(By.CSS_SELECTOR, "[data-test=policy-edit]").click()
    assert browser.find("[data-test=perm-secrets-get]")[0].is_selected()
    browser.find("[data-test=perm-secrets-set]")[0].click()
    browser.find("[data-test=policy-add]")[0].click()
    browser.wait("[data-test=policy-row]", "get, list, set")
    row = browser.wait("[data-test=policy-row]", member["displayName"])
    row.find_element(By.CSS_SELECTOR, "[data-test=policy-remove]").click()
    browser.until_rows("[data-test=policy-row]", lambda t: member["displayName"] in t, present=False,
                       message="the removed policy leaves the list")
    policies = arm(server, "GET", path2, management_token(server), api_version="2023-07-01").json()["properties"]["accessPolicies"]
    assert not [p for p in policies if p["objectId"] == member["id"]]


def test_directory_blade_users_groups_applications_and_managed_identities(server, browser):
    """A directory administrator (made one through Graph's directory role
    assignments) creates a user whose shown password signs in, disables it
    (sign-in then fails), makes a group with that user in it, registers an
    application whose new client secret gets a token and adds a federated
    credential, and creates a managed identity and a workload using it; each
    checked through Graph, ARM or the token endpoint."""
    from khcompat import (arm, graph, graph_ok, graph_token, management_token, request_password_token,
                          vault_token)
    admin = graph_token(server)
    me, password = portal_user(server, "Reader")
    # Identities are ARM resources: the user also contributes to the group.
    assign_role(server, f"/subscriptions/{server.subscription_id}/resourceGroups/{server.resource_group}",
                "Contributor", me["id"], principal_type="User")
    graph_ok(server, "POST", "/roleManagement/directory/roleAssignments", admin, status=201,
             json={"principalId": me["id"], "roleDefinitionId": "62e90394-69f5-4237-9190-012177145e10"})
    browser.sign_in(me["userPrincipalName"], password)
    browser.find("[data-test=directory]")[0].click()
    nick = unique("dir")[:20]
    browser.wait("[data-test=new-user-name]").send_keys(f"Dir {nick}")
    browser.find("[data-test=new-user-upn]")[0].send_keys(f"{nick}@keyhaven.localhost")
    browser.find("[data-test=new-user-submit]")[0].click()
    shown = browser.wait("[data-test=new-password-value]").text
    assert request_password_token(server, f"{nick}@keyhaven.localhost", shown).status_code == 200
    browser.find("[data-test=user-filter]")[0].send_keys(nick)
    row = browser.wait("[data-test=user-row]", nick)
    from selenium.webdriver.common.by import By
    row.find_element(By.CSS_SELECTOR, "[data-test=disable-user]").click()
    browser.wait("[data-test=user-row]", "Disabled")
    assert request_password_token(server, f"{nick}@keyhaven.localhost", shown).status_code != 200
    browser.shot("directory-users")
    new_user = graph_ok(server, "GET", f"/users/{nick}@keyhaven.localhost", admin)
    assert new_user["accountEnabled"] is False

    browser.find("[data-test=dir-tab-groups]")[0].click()
    group_name = f"Group {nick}"
    browser.wait("[data-test=new-group-name]").send_keys(group_name)
    browser.find("[data-test=new-group-submit]")[0].click()
    browser.wait("[data-test=group-detail] h2", group_name)
    pick(browser, "member", nick, f"User|{new_user['id']}")
    browser.find("[data-test=add-member]")[0].click()
    browser.wait("[data-test=member-row]", f"Dir {nick}")
    gid = browser.driver.current_url.rstrip("/").split("/")[-1]
    assert [m["id"] for m in graph_ok(server, "GET", f"/groups/{gid}/members", admin)["value"]] == [new_user["id"]]

    browser.find("[data-test=dir-tab-applications]")[0].click()
    browser.wait("[data-test=new-app-name]").send_keys(f"App {nick}")
    browser.find("[data-test=new-app-submit]")[0].click()
    app_id = browser.wait("[data-test=app-application]").text
    browser.find("[data-test=new-app-secret-name]")[0].send_keys("ci")
    browser.find("[data-test=new-app-secret]")[0].click()
    secret = browser.wait("[data-test=app-secret-value]").text
    assert vault_token(server, app_id, secret)
    browser.find("[data-test=fic-name]")[0].send_keys("github-main")
    browser.find("[data-test=fic-issuer]")[0].send_keys("https://token.actions.githubusercontent.com")
    browser.find("[data-test=fic-subject]")[0].send_keys("repo:example/app:ref:refs/heads/main")
    browser.find("[data-test=fic-add]")[0].click()
    browser.wait("[data-test=fic-row]", "github-main")
    browser.shot("directory-application")
    app_obj = browser.driver.current_url.rstrip("/").split("/")[-1]
    fics = graph_ok(server, "GET", f"/applications/{app_obj}/federatedIdentityCredentials", admin)["value"]
    assert [(f["name"], f["subject"]) for f in fics] == [("github-main", "repo:example/app:ref:refs/heads/main")]

    browser.find("[data-test=dir-tab-identities]")[0].click()
    from selenium.webdriver.support.ui import Select
    Select(browser.wait("[data-test=mi-group]")).select_by_value(server.resource_group)
    mi = f"mi-{nick}"
    browser.wait("[data-test=new-mi-name]").send_keys(mi)
    browser.find("[data-test=new-mi-submit]")[0].click()
    browser.wait("[data-test=mi-row]", mi)
    browser.find("[data-test=new-wl-open]")[0].click()
    # An address no workload of this shared server holds (an address
    # identifies one workload only).
    import random
    group_path = f"/subscriptions/{server.subscription_id}/resourceGroups/{server.resource_group}/providers"
    from khcompat import ARM_KEYHAVEN_API_VERSION
    held = {a for w in arm(server, "GET", f"{group_path}/Keyhaven.Compute/workloads", management_token(server),
                           api_version=ARM_KEYHAVEN_API_VERSION).json()["value"] for a in w["properties"]["addresses"]}
    address = random.choice([f"203.0.113.{i}" for i in range(10, 250) if f"203.0.113.{i}" not in held])
    browser.wait("[data-test=new-wl-name]").send_keys(f"wl-{nick}")
    browser.find("[data-test=new-wl-addresses]")[0].send_keys(address)
    Select(browser.find("[data-test=new-wl-identities]")[0]).select_by_visible_text(mi)
    browser.find("[data-test=new-wl-submit]")[0].click()
    browser.wait("[data-test=wl-row]", f"wl-{nick}")
    browser.shot("directory-identities")
    wl = arm(server, "GET", f"{group_path}/Keyhaven.Compute/workloads/wl-{nick}", management_token(server),
             api_version=ARM_KEYHAVEN_API_VERSION).json()
    assert wl["properties"]["addresses"] == [address]
    assert [k.split("/")[-1] for k in wl["identity"]["userAssignedIdentities"]] == [mi]
    for path in (f"Keyhaven.Compute/workloads/wl-{nick}", f"Microsoft.ManagedIdentity/userAssignedIdentities/{mi}"):
        arm(server, "DELETE", f"{group_path}/{path}", management_token(server), api_version=ARM_KEYHAVEN_API_VERSION)
    graph(server, "DELETE", f"/users/{new_user['id']}", admin)


def test_networking_subnet_rule_private_endpoint_and_recently_used(server, browser):
    """On the Networking blade a virtual-network rule added by subnet id and
    saved is the vault's (ARM), a private endpoint created there in a subnet
    shows as an approved connection (and in ARM) and is deleted again; Home
    then lists the vault under Recently used."""
    from khcompat import arm, management_token
    vault, _ = fresh_vault(server, browser, "networking", roles=("Contributor",), group_roles=("Contributor",))
    group = f"/subscriptions/{server.subscription_id}/resourceGroups/{server.resource_group}"
    vnet = unique("vnet")[:24]
    r = arm(server, "PUT", f"{group}/providers/Microsoft.Network/virtualNetworks/{vnet}", management_token(server), {
        "location": "local", "properties": {"addressSpace": {"addressPrefixes": ["198.51.100.0/24"]}, "subnets": [
            {"name": "app", "properties": {"addressPrefix": "198.51.100.0/25",
                                           "serviceEndpoints": [{"service": "Microsoft.KeyVault"}]}},
            {"name": "endpoints", "properties": {"addressPrefix": "198.51.100.128/25"}}]}},
        api_version="2023-09-01")
    assert r.status_code in (200, 201), r.text
    subnet_app = f"{group}/providers/Microsoft.Network/virtualNetworks/{vnet}/subnets/app"
    subnet_pe = f"{group}/providers/Microsoft.Network/virtualNetworks/{vnet}/subnets/endpoints"
    browser.wait("[data-test=vnet-input]").send_keys(subnet_app)
    browser.find("[data-test=vnet-add]")[0].click()
    browser.wait("[data-test=vnet-rule]", subnet_app)
    browser.find("[data-test=network-save]")[0].click()
    browser.wait("[data-test=network-saved]")
    path = f"{group}/providers/Microsoft.KeyVault/vaults/{vault}"
    acls = arm(server, "GET", path, management_token(server), api_version="2023-07-01").json()["properties"]["networkAcls"]
    assert [x["id"].lower() for x in acls["virtualNetworkRules"]] == [subnet_app.lower()]

    browser.find("[data-test=pe-open]")[0].click()
    browser.wait("[data-test=pe-name]").send_keys("portal-pe")
    browser.find("[data-test=pe-subnet]")[0].send_keys(subnet_pe)
    browser.find("[data-test=pe-ip]")[0].send_keys("198.51.100.140")
    browser.find("[data-test=pe-submit]")[0].click()
    browser.wait("[data-test=pe-row]", "Approved")
    browser.shot("private-endpoint")
    conns = arm(server, "GET", path, management_token(server), api_version="2023-07-01").json()["properties"]["privateEndpointConnections"]
    assert [c["properties"]["privateEndpoint"]["id"].split("/")[-1] for c in conns] == ["portal-pe"]
    browser.find("[data-test=pe-delete]")[0].click()
    browser.driver.switch_to.alert.accept()
    browser.wait("#main", "No private endpoints.")
    assert arm(server, "GET", path, management_token(server), api_version="2023-07-01").json()["properties"]["privateEndpointConnections"] == []
    arm(server, "DELETE", f"{group}/providers/Microsoft.Network/virtualNetworks/{vnet}", management_token(server),
        api_version="2023-09-01")

    browser.driver.get(server.bootstrap["portal_url"] + "/")
    browser.wait("[data-test=recent-vault]", vault)


def test_overview_saves_what_arm_lets_change(server, browser):
    """The Overview's properties: pricing tier, permission model, purge
    protection (on only, after a confirmation) and tags, saved with one ARM
    PATCH and read back through ARM; then purge protection cannot be unticked.
    (Switching the permission model needs roleAssignments/write: an Owner.)"""
    from khcompat import arm, management_token
    from selenium.webdriver.support.ui import Select
    vault, _ = fresh_vault(server, browser, "overview", roles=("Owner",))
    Select(browser.wait("[data-test=ov-sku]")).select_by_value("premium")
    Select(browser.find("[data-test=ov-model]")[0]).select_by_value("policies")
    tags = browser.find("[data-test=ov-tags]")[0]
    tags.clear()
    tags.send_keys("team=payments\nenv=prod")
    browser.find("[data-test=ov-purge]")[0].click()
    browser.find("[data-test=ov-save]")[0].click()
    browser.driver.switch_to.alert.accept()
    browser.wait("[data-test=ov-saved]")
    path = (f"/subscriptions/{server.subscription_id}/resourceGroups/{server.resource_group}"
            f"/providers/Microsoft.KeyVault/vaults/{vault}")
    v = arm(server, "GET", path, management_token(server), api_version="2023-07-01").json()
    assert v["tags"] == {"team": "payments", "env": "prod"}
    p = v["properties"]
    assert (p["sku"]["name"], p["enableRbacAuthorization"], p["enablePurgeProtection"]) == ("premium", False, True)
    assert not browser.find("[data-test=ov-purge]")[0].is_enabled(), "purge protection cannot be turned off"
