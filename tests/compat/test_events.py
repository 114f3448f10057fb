"""Change events as Event Grid delivers Key Vault's: event subscriptions on a
vault (ARM) with the validation handshake, Event Grid and CloudEvents 1.0
schemas, type filters, near-expiry from the scheduler, retries and dead
letters. A small webhook receiver in the test plays the subscriber."""

from __future__ import annotations

import datetime
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from azure.keyvault.certificates import CertificateClient, CertificatePolicy
from azure.keyvault.keys import KeyClient, KeyRotationLifetimeAction, KeyRotationPolicy, KeyRotationPolicyAction
from azure.keyvault.secrets import SecretClient

from khcompat import CLIENT_KWARGS, KeyhavenServer, arm, management_token, module_server, unique

API = {"api_version": "2026-05-15"}


class EventServer(KeyhavenServer):
    def command(self):
        return super().command() + ["--scheduler-interval", "1", "--event-retry-base-ms", "50"]


@pytest.fixture(scope="module")
def srv(store_kind, tmp_path_factory):
    with module_server(EventServer, store_kind, tmp_path_factory.mktemp(f"ev-{store_kind}")) as s:
        yield s


class Receiver:
    """A webhook endpoint: answers the handshake, records events, or fails."""

    def __init__(self, *, echo=True, fail=False):
        self.events, self.echo, self.fail, self.validations = [], echo, fail, 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_OPTIONS(self):
                self.send_response(200)
                self.send_header("WebHook-Allowed-Origin", self.headers.get("WebHook-Request-Origin", ""))
                self.end_headers()

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"null")
                if self.headers.get("aeg-event-type") == "SubscriptionValidation":
                    outer.validations += 1
                    code = body[0]["data"]["validationCode"] if outer.echo else "wrong"
                    payload = json.dumps({"validationResponse": code}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                outer.events.append({"content_type": self.headers.get("Content-Type"), "body": body})
                self.send_response(500 if outer.fail else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def wait_for(self, predicate, timeout=20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [e for e in list(self.events) if predicate(e)]
            if found:
                return found
            time.sleep(0.1)
        raise AssertionError(f"no matching event within {timeout}s; got {self.events}")

    def close(self):
        self.httpd.shutdown()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def subscribe(server, receiver_url, name=None, types=None, schema=None):
    path = (f"/subscriptions/{server.subscription_id}/resourceGroups/{server.resource_group}"
            f"/providers/Microsoft.KeyVault/vaults/dev/providers/Microsoft.EventGrid/eventSubscriptions/{name or unique('es')}")
    props = {"destination": {"endpointType": "WebHook", "properties": {"endpointUrl": receiver_url}}}
    if types:
        props["filter"] = {"includedEventTypes": types}
    if schema:
        props["eventDeliverySchema"] = schema
    return path, arm(server, "PUT", path, management_token(server), {"properties": props}, **API)


def event_grid(e):
    return e["body"][0] if isinstance(e["body"], list) else None


def test_event_grid_subscription_gets_filtered_new_version_events(srv, receiver):
    path, r = subscribe(srv, receiver.url, types=["Microsoft.KeyVault.SecretNewVersionCreated",
                                                  "Microsoft.KeyVault.KeyNewVersionCreated"])
    assert r.status_code == 201, r.text
    assert receiver.validations == 1
    props = r.json()["properties"]
    assert props["provisioningState"] == "Succeeded" and props["topic"].lower().endswith("/vaults/dev")
    # Listed under the vault, as `az eventgrid event-subscription list --source-resource-id` asks.
    listed = arm(srv, "GET", path.rsplit("/", 1)[0], management_token(srv), **API)
    assert listed.status_code == 200, listed.text
    assert [s["id"] for s in listed.json()["value"]] == [r.json()["id"]]
    name, planted = unique("evs"), unique("planted-value")
    secret = SecretClient(srv.vault_url, srv.credential(), **CLIENT_KWARGS).set_secret(name, planted)
    got = receiver.wait_for(lambda e: event_grid(e) and event_grid(e)["subject"] == name)
    ev = event_grid(got[0])
    assert ev["eventType"] == "Microsoft.KeyVault.SecretNewVersionCreated"
    assert ev["topic"] == props["topic"] and ev["dataVersion"] and ev["metadataVersion"] == "1"
    assert ev["data"]["Id"] == secret.id and ev["data"]["VaultName"] == "dev"
    assert ev["data"]["ObjectType"] == "Secret" and ev["data"]["Version"] == secret.properties.version
    assert planted not in json.dumps(got), "no secret value in an event"
    kname = unique("evk")
    KeyClient(srv.vault_url, srv.credential(), **CLIENT_KWARGS).create_ec_key(kname)
    receiver.wait_for(lambda e: event_grid(e) and event_grid(e)["subject"] == kname
                      and event_grid(e)["eventType"] == "Microsoft.KeyVault.KeyNewVersionCreated")
    # Filtered out: a certificate.
    cname = unique("evc")
    CertificateClient(srv.vault_url, srv.credential(), **CLIENT_KWARGS).begin_create_certificate(
        cname, CertificatePolicy(issuer_name="Self", subject="CN=x"), _polling_interval=0.2).result()
    time.sleep(1)
    assert not [e for e in receiver.events if event_grid(e) and event_grid(e)["subject"] == cname]
    assert arm(srv, "DELETE", path, management_token(srv), **API).status_code == 200


def test_cloud_events_schema_and_vault_events(srv, receiver):
    path, r = subscribe(srv, receiver.url, schema="CloudEventSchemaV1_0")
    assert r.status_code == 201, r.text
    name = unique("ce")
    SecretClient(srv.vault_url, srv.credential(), **CLIENT_KWARGS).set_secret(name, "v")
    got = receiver.wait_for(lambda e: isinstance(e["body"], dict) and e["body"].get("subject") == name)
    ce = got[0]["body"]
    assert got[0]["content_type"].startswith("application/cloudevents+json")
    assert ce["specversion"] == "1.0" and ce["type"] == "Microsoft.KeyVault.SecretNewVersionCreated"
    assert ce["source"].lower().endswith("/vaults/dev") and ce["data"]["ObjectName"] == name
    # An access-policy change is a vault event.
    vault = f"/subscriptions/{srv.subscription_id}/resourceGroups/{srv.resource_group}/providers/Microsoft.KeyVault/vaults/dev"
    entry = {"tenantId": srv.tenant_id, "objectId": "00000000-0000-0000-0000-00000000000a",
             "permissions": {"secrets": ["get"]}}
    r = arm(srv, "PUT", f"{vault}/accessPolicies/add", management_token(srv),
            {"properties": {"accessPolicies": [entry]}}, **API)
    assert r.status_code == 200, r.text
    receiver.wait_for(lambda e: isinstance(e["body"], dict)
                      and e["body"]["type"] == "Microsoft.KeyVault.VaultAccessPolicyChanged")
    arm(srv, "PUT", f"{vault}/accessPolicies/remove", management_token(srv),
        {"properties": {"accessPolicies": [entry]}}, **API)
    arm(srv, "DELETE", path, management_token(srv), **API)


def test_near_expiry_comes_from_the_scheduler(srv, receiver):
    path, r = subscribe(srv, receiver.url, types=["Microsoft.KeyVault.KeyNearExpiry"])
    assert r.status_code == 201, r.text
    keys = KeyClient(srv.vault_url, srv.credential(), **CLIENT_KWARGS)
    name = unique("exp")
    soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=2)
    keys.create_ec_key(name, expires_on=soon)
    keys.update_key_rotation_policy(name, KeyRotationPolicy(), lifetime_actions=[
        KeyRotationLifetimeAction(KeyRotationPolicyAction.notify, time_before_expiry="P30D")])
    got = receiver.wait_for(lambda e: event_grid(e) and event_grid(e)["subject"] == name, timeout=15)
    assert event_grid(got[0])["eventType"] == "Microsoft.KeyVault.KeyNearExpiry"
    assert event_grid(got[0])["data"]["EXP"] == int(soon.timestamp())
    time.sleep(2.5)
    assert len([e for e in receiver.events if event_grid(e) and event_grid(e)["subject"] == name]) == 1, \
        "notified once per version"
    arm(srv, "DELETE", path, management_token(srv), **API)


def test_handshake_failure_refuses_the_subscription_and_failed_deliveries_dead_letter(srv):
    liar = Receiver(echo=False)
    try:
        _, r = subscribe(srv, liar.url)
        assert r.status_code == 400 and "validation" in r.json()["error"]["message"].lower(), r.text
    finally:
        liar.close()
    broken = Receiver(fail=True)
    try:
        path, r = subscribe(srv, broken.url, types=["Microsoft.KeyVault.SecretNewVersionCreated"])
        assert r.status_code == 201, r.text
        name = unique("dl")
        SecretClient(srv.vault_url, srv.credential(), **CLIENT_KWARGS).set_secret(name, "v")
        deadline = time.monotonic() + 20
        letters = []
        while time.monotonic() < deadline and not letters:
            letters = arm(srv, "GET", f"{path}/deadLetters", management_token(srv), **API).json()["value"]
            time.sleep(0.2)
        assert letters, "the failed delivery was dead-lettered"
        props = letters[0]["properties"]
        assert props["attempts"] == 5 and props["event"][0]["subject"] == name and props["lastError"]
        # The webhook URL (whose query may hold the subscriber's secret) is never echoed.
        assert props["lastError"] == "HTTP 500" and broken.url not in json.dumps(letters)
        assert len([e for e in broken.events if event_grid(e) and event_grid(e)["subject"] == name]) == 5
    finally:
        broken.close()
