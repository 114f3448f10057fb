"""The audit log: one record per request of every plane in Azure's AuditEvent
shape, hash-chained, checked by `keyhaven audit verify`; no secret value, key
material or token ever appears in it."""

from __future__ import annotations

import hashlib
import http.client
import json
import select
import shutil
import socket
import ssl
import subprocess
import time
from urllib.parse import urlparse

import pytest
from azure.core.exceptions import HttpResponseError
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, SignatureAlgorithm
from azure.keyvault.secrets import SecretClient

from khcompat import CLIENT_KWARGS, KEYHAVEN_BIN, PG_HOST, PG_PORT, PG_USER, arm, management_token, running_server, \
    trust_server_ca, unique, KeyhavenServer

API = {"api_version": "2026-05-15"}


@pytest.fixture
def srv(store_kind, tmp_path, monkeypatch):
    with running_server(KeyhavenServer, store_kind, tmp_path / "srv") as s:
        trust_server_ca(monkeypatch, s)
        yield s


def records(server) -> list:
    path = server.data_dir / "audit" / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def verify(data_dir) -> subprocess.CompletedProcess:
    return subprocess.run([KEYHAVEN_BIN, "audit", "verify", "--data-dir", str(data_dir)],
                          capture_output=True, text=True, timeout=60)


def test_every_request_leaves_an_audit_event_and_the_chain_verifies(srv, tmp_path):
    planted = f"planted-{unique('v')}"
    cred = srv.credential()
    secrets = SecretClient(srv.vault_url, cred, **CLIENT_KWARGS)
    name = unique("aud")
    secrets.set_secret(name, planted)
    assert secrets.get_secret(name).value == planted
    keys = KeyClient(srv.vault_url, cred, **CLIENT_KWARGS)
    key = keys.create_ec_key(unique("audk"))
    CryptographyClient(key.id, cred, **CLIENT_KWARGS).sign(SignatureAlgorithm.es256, hashlib.sha256(b"x").digest())
    with pytest.raises(HttpResponseError):
        secrets.get_secret(unique("missing"))
    arm(srv, "GET", f"/subscriptions/{srv.subscription_id}/resourceGroups/{srv.resource_group}"
                    f"/providers/Microsoft.KeyVault/vaults/dev", management_token(srv), **API)

    recs = records(srv)
    ops = [r["operationName"] for r in recs]
    for op in ("SecretSet", "SecretGet", "KeyCreate", "KeySign", "Authentication", "VaultGet"):
        assert op in ops, ops
    got = next(r for r in recs if r["operationName"] == "SecretGet" and r["resultType"] == "Success")
    assert got["category"] == "AuditEvent" and got["resultSignature"] == "OK"
    assert got["properties"]["httpStatusCode"] == 200 and got["operationVersion"]
    assert got["properties"]["id"].endswith(f"/secrets/{name}")
    assert got["properties"]["isRbacAuthorized"] is True and got["properties"]["tlsVersion"] in ("TLS1_2", "TLS1_3")
    assert got["callerIpAddress"] == "127.0.0.1" and got["resourceId"].endswith("/VAULTS/DEV")
    assert got["identity"]["claim"]["appid"] == srv.client_id and int(got["durationMs"]) >= 0
    missing = [r for r in recs if r["operationName"] == "SecretGet" and r["properties"]["httpStatusCode"] == 404]
    assert missing and missing[0]["resultType"] == "Failure" and missing[0]["resultSignature"] == "Not Found"
    challenge = [r for r in recs if r["operationName"] == "VaultAccess" and r["properties"]["httpStatusCode"] == 401]
    assert challenge, "the SDK's unauthenticated first request is audited too"

    raw = (srv.data_dir / "audit" / "audit.jsonl").read_text()
    for forbidden in (planted, srv.client_secret, "eyJ"):
        assert forbidden not in raw, f"{forbidden[:6]}… leaked into the audit log"

    out = verify(srv.data_dir)
    assert out.returncode == 0 and "intact" in out.stdout, out.stderr

    # A copy with one record edited fails verification, naming the line.
    copy = tmp_path / "copy"
    shutil.copytree(srv.data_dir / "audit", copy / "audit")
    lines = (copy / "audit" / "audit.jsonl").read_text().splitlines()
    edited = json.loads(lines[2])
    edited["properties"]["httpStatusCode"] = 299
    lines[2] = json.dumps(edited)
    (copy / "audit" / "audit.jsonl").write_text("\n".join(lines) + "\n")
    out = verify(copy)
    assert out.returncode == 1 and ":3:" in out.stderr and "edited" in out.stderr, out.stderr
    # Dropping a record is caught too.
    original = (srv.data_dir / "audit" / "audit.jsonl").read_text().splitlines()
    (copy / "audit" / "audit.jsonl").write_text("\n".join(original[:1] + original[2:]) + "\n")
    out = verify(copy)
    assert out.returncode == 1 and ":2:" in out.stderr, out.stderr


def test_the_chain_continues_across_a_restart(srv):
    SecretClient(srv.vault_url, srv.credential(), **CLIENT_KWARGS).set_secret(unique("r"), "x")
    before = len(records(srv))
    srv.stop()
    srv.start()
    SecretClient(srv.vault_url, srv.credential(), **CLIENT_KWARGS).set_secret(unique("r"), "y")
    recs = records(srv)
    assert len(recs) > before
    seqs = [r["keyhavenChain"]["seq"] for r in recs]
    assert seqs == list(range(1, len(recs) + 1))
    assert verify(srv.data_dir).returncode == 0


class LimitedServer(KeyhavenServer):
    """20 secret transactions per vault per 10 seconds."""

    def command(self):
        return super().command() + ["--limit-secrets", "20"]


def test_a_burst_is_throttled_and_the_sdk_still_succeeds(store_kind, tmp_path, monkeypatch):
    import requests
    from khcompat import HTTP_TIMEOUT, vault_token
    with running_server(LimitedServer, store_kind, tmp_path / "srv") as s:
        trust_server_ca(monkeypatch, s)
        client = SecretClient(s.vault_url, s.credential(), retry_total=10, retry_backoff_max=3,
                              connection_timeout=10, read_timeout=60)
        client.set_secret("hot", "v")
        token = vault_token(s, s.client_id, s.client_secret)
        statuses, throttled = [], None
        with requests.Session() as http:
            for _ in range(40):
                r = http.get(f"{s.vault_url}/secrets/hot?api-version=7.5", verify=s.ca_cert, timeout=HTTP_TIMEOUT,
                             headers={"Authorization": f"Bearer {token}"})
                statuses.append(r.status_code)
                if r.status_code == 429 and throttled is None:
                    throttled = r
        assert 200 in statuses and 429 in statuses, statuses
        assert set(statuses) <= {200, 429}, statuses
        assert throttled.json()["error"]["code"] == "Throttled"
        assert int(throttled.headers["Retry-After"]) >= 1
        # The SDK's retry policy honours Retry-After: every call succeeds.
        for _ in range(8):
            assert client.get_secret("hot").value == "v"
        # Throttled requests are audited as failures too.
        assert any(r["properties"]["httpStatusCode"] == 429 for r in records(s))
        # Key transactions have their own bucket.
        KeyClient(s.vault_url, s.credential(), **CLIENT_KWARGS).create_ec_key(unique("k"))


class AdminServer(KeyhavenServer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from khcompat import free_port
        self.admin = f"127.0.0.1:{free_port()}"

    def command(self):
        return super().command() + ["--admin-listen", self.admin]


def test_metrics_and_health_on_the_admin_listener(store_kind, tmp_path, monkeypatch):
    import requests
    with running_server(AdminServer, store_kind, tmp_path / "srv") as s:
        trust_server_ca(monkeypatch, s)
        client = SecretClient(s.vault_url, s.credential(), **CLIENT_KWARGS)
        client.set_secret("m", "v")
        for _ in range(3):
            client.get_secret("m")
        with pytest.raises(HttpResponseError):
            client.get_secret(unique("none"))
        base = f"http://{s.admin}"
        assert requests.get(f"{base}/healthz", timeout=10).status_code == 200
        assert requests.get(f"{base}/readyz", timeout=10).status_code == 200
        r = requests.get(f"{base}/metrics", timeout=10)
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
        text = r.text
        lines = {l.rsplit(" ", 1)[0]: float(l.rsplit(" ", 1)[1]) for l in text.splitlines() if l and not l.startswith("#")}
        assert lines['keyhaven_requests_total{plane="data",vault="dev",operation="SecretGet",status="200"}'] == 3
        assert lines['keyhaven_requests_total{plane="data",vault="dev",operation="SecretGet",status="404"}'] == 1
        assert lines['ServiceApiHit{vault="dev",ActivityName="SecretSet"}'] == 1
        assert lines['ServiceApiResult{vault="dev",ActivityName="SecretGet",StatusCode="404"}'] == 1
        assert 0 < lines['Availability{vault="dev"}'] <= 100
        assert lines['SaturationShoebox{vault="dev"}'] == 0
        assert any(k.startswith('keyhaven_requests_total{plane="login"') for k in lines)
        assert 'keyhaven_request_duration_seconds_count{plane="data",vault="dev"}' in lines
        # The admin listener is not the API: no vault is served there.
        assert requests.get(f"{base}/secrets", timeout=10).status_code == 404


def test_diagnostic_settings_route_records_to_the_log_store_and_stdout(srv):
    from khcompat import arm, management_token
    vault = (f"/subscriptions/{srv.subscription_id}/resourceGroups/{srv.resource_group}"
             f"/providers/Microsoft.KeyVault/vaults/dev")
    tok = management_token(srv)
    cats = arm(srv, "GET", f"{vault}/providers/microsoft.insights/diagnosticSettingsCategories", tok,
               api_version="2021-05-01-preview").json()["value"]
    assert {(c["name"], c["properties"]["categoryType"]) for c in cats} == {("AuditEvent", "Logs"), ("AllMetrics", "Metrics")}
    bad = arm(srv, "PUT", f"{vault}/providers/microsoft.insights/diagnosticSettings/nowhere", tok,
              {"properties": {"logs": [{"category": "AuditEvent", "enabled": True}]}}, api_version="2021-05-01-preview")
    assert bad.status_code == 400, bad.text
    r = arm(srv, "PUT", f"{vault}/providers/microsoft.insights/diagnosticSettings/to-store", tok,
            {"properties": {"workspaceId": "/subscriptions/x/resourceGroups/y/providers/Microsoft.OperationalInsights/workspaces/w",
                            "logs": [{"categoryGroup": "audit", "enabled": True}],
                            "metrics": [{"category": "AllMetrics", "enabled": True}],
                            "keyhavenStdout": True}}, api_version="2021-05-01-preview")
    assert r.status_code == 200, r.text
    listed = arm(srv, "GET", f"{vault}/providers/microsoft.insights/diagnosticSettings", tok,
                 api_version="2021-05-01-preview").json()["value"]
    assert [s["name"] for s in listed] == ["to-store"]

    client = SecretClient(srv.vault_url, srv.credential(), **CLIENT_KWARGS)
    name = unique("diag")
    client.set_secret(name, "v")
    client.get_secret(name)
    with pytest.raises(HttpResponseError):
        client.get_secret(unique("absent"))
    q = lambda **p: arm(srv, "GET", f"{vault}/providers/Keyhaven.Insights/auditEvents", tok,
                        api_version="2021-05-01-preview", params=p).json()["value"]
    # Records are written in batches off the request path (within about a
    # second): wait for the last request's, bounded.
    deadline = time.monotonic() + 10
    while True:
        ops = [e["operationName"] for e in q()]
        if "SecretSet" in ops and any(e["operationName"] == "SecretGet" and e["resultType"] == "Failure"
                                      for e in q(result="Failure")):
            break
        assert time.monotonic() < deadline, ops
        time.sleep(0.1)
    assert "SecretSet" in ops and "SecretGet" in ops
    failures = q(result="Failure", operation="SecretGet")
    assert failures and all(e["resultType"] == "Failure" and e["operationName"] == "SecretGet" for e in failures)
    assert q(caller="203.0.113.1") == []
    assert len(q(top=1)) == 1
    assert q(**{"from": "2000-01-01T00:00:00Z", "to": "2000-01-02T00:00:00Z"}) == []
    out = subprocess.run([KEYHAVEN_BIN, "logs", "--data-dir", str(srv.data_dir), "--vault", "dev",
                          "--operation", "SecretGet", "--result", "Failure", "--top", "5"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    listed = json.loads(out.stdout)["value"]
    assert listed and all(e["operationName"] == "SecretGet" and e["resultType"] == "Failure" for e in listed)
    stdout = srv.stdout_path.read_text()
    assert f"/secrets/{name}" in stdout and '"category":"AuditEvent"' in stdout
    assert arm(srv, "DELETE", f"{vault}/providers/microsoft.insights/diagnosticSettings/to-store", tok,
               api_version="2021-05-01-preview").status_code == 200


def test_requests_are_refused_while_the_audit_log_cannot_be_written(store_kind, tmp_path, monkeypatch):
    """Fail closed, for real: the audit directory is a tiny tmpfs that fills up."""
    import os
    import requests
    from khcompat import vault_token, HTTP_TIMEOUT
    if os.geteuid() != 0:
        pytest.fail("this test mounts a tmpfs and needs root (CI runs as root)", pytrace=False)
    audit_dir = tmp_path / "srv" / "data" / "audit"
    audit_dir.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(audit_dir)], check=True, timeout=30)
    try:
        with running_server(KeyhavenServer, store_kind, tmp_path / "srv") as s:
            trust_server_ca(monkeypatch, s)
            token = vault_token(s, s.client_id, s.client_secret)
            http = requests.Session()

            def put(name):
                return http.put(f"{s.vault_url}/secrets/{name}?api-version=7.5", json={"value": "v"},
                                headers={"Authorization": f"Bearer {token}"}, verify=s.ca_cert, timeout=HTTP_TIMEOUT)

            refused, succeeded = None, []
            for i in range(400):
                r = put(f"fill-{i}")
                if r.status_code == 503:
                    refused = r
                    break
                assert r.status_code == 200, r.text
                succeeded.append(f"fill-{i}")
            assert refused is not None, "the tmpfs never filled"
            assert refused.json()["error"]["code"] == "ServiceUnavailable"
            assert refused.headers.get("Connection", "").lower() == "close", "the unread body ends the connection"
            # While the log stays full, every request is refused.
            assert [put(f"while-full-{i}").status_code for i in range(5)] == [503] * 5
            subprocess.run(["mount", "-o", "remount,size=4m", str(audit_dir)], check=True, timeout=30)
            assert put("after").status_code == 200
            recs = records(s)
            assert any(r["operationName"] == "AuditLogRecovered" for r in recs)
            # No success went unrecorded: every 200 has its SecretSet record.
            recorded = {r["properties"].get("id", "").rsplit("/", 1)[-1] for r in recs
                        if r.get("operationName") == "SecretSet" and r["resultType"] == "Success"}
            assert set(succeeded) | {"after"} <= recorded
            out = verify(s.data_dir)
            assert out.returncode == 0, "no half-written record breaks the chain: " + out.stderr
    finally:
        subprocess.run(["umount", str(audit_dir)], timeout=30)


def test_http_destination_receives_batched_records(srv):
    import threading
    import time as _time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from khcompat import arm, management_token
    batches = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            batches.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        vault = (f"/subscriptions/{srv.subscription_id}/resourceGroups/{srv.resource_group}"
                 f"/providers/Microsoft.KeyVault/vaults/dev")
        tok = management_token(srv)
        r = arm(srv, "PUT", f"{vault}/providers/microsoft.insights/diagnosticSettings/ship", tok,
                {"properties": {"logs": [{"category": "AuditEvent", "enabled": True}],
                                "keyhavenHttpEndpoint": f"http://127.0.0.1:{httpd.server_address[1]}/ingest"}},
                api_version="2021-05-01-preview")
        assert r.status_code == 200, r.text
        client = SecretClient(srv.vault_url, srv.credential(), **CLIENT_KWARGS)
        names = [unique("ship") for _ in range(3)]
        for n in names:
            client.set_secret(n, "v")
        deadline = _time.monotonic() + 15
        shipped = []
        while _time.monotonic() < deadline:
            shipped = [rec for b in list(batches) for rec in b]
            if all(any(rec["properties"].get("id", "").endswith(f"/secrets/{n}") for rec in shipped) for n in names):
                break
            _time.sleep(0.2)
        else:
            raise AssertionError(f"records not shipped: {shipped}")
        assert any(len(b) > 1 for b in batches), "records arrive batched"
        assert all(rec["category"] == "AuditEvent" for rec in shipped)
        arm(srv, "DELETE", f"{vault}/providers/microsoft.insights/diagnosticSettings/ship", tok,
            api_version="2021-05-01-preview")
    finally:
        httpd.shutdown()


def metric_series(server, names: str, **params) -> dict:
    vault = (f"/subscriptions/{server.subscription_id}/resourceGroups/{server.resource_group}"
             f"/providers/Microsoft.KeyVault/vaults/dev")
    r = arm(server, "GET", f"{vault}/providers/Microsoft.Insights/metrics", management_token(server),
            api_version="2018-01-01", params={"metricnames": names, **params})
    assert r.status_code == 200, r.text
    return r.json()


def wait_for_metric(server, names: str, pred, **params) -> dict:
    """Nodes add their counts to the store every 5 s: polls (bounded) until
    the answer satisfies `pred`."""
    import time
    deadline = time.monotonic() + 30
    while True:
        got = metric_series(server, names, **params)
        if pred(got):
            return got
        assert time.monotonic() < deadline, got
        time.sleep(0.5)


def test_azure_monitor_metrics_of_the_data_plane(srv):
    """`GET {vault}/providers/Microsoft.Insights/metrics` answers in Azure
    Monitor's shape: per-minute ServiceApiHit split by ActivityName,
    ServiceApiResult by StatusCode, ServiceApiLatency averages, Availability;
    empty minutes count 0; unknown metrics, intervals and dimensions are 400."""
    import datetime
    client = SecretClient(srv.vault_url, srv.credential(), **CLIENT_KWARGS)
    name = unique("met")
    client.set_secret(name, "v")
    for _ in range(4):
        client.get_secret(name)
    for _ in range(2):
        with pytest.raises(HttpResponseError):
            client.get_secret(unique("absent"))
    now = datetime.datetime.now(datetime.timezone.utc).replace(second=0, microsecond=0)
    span = f"{(now - datetime.timedelta(minutes=10)).strftime('%Y-%m-%dT%H:%M:%SZ')}/" \
           f"{(now + datetime.timedelta(minutes=2)).strftime('%Y-%m-%dT%H:%M:%SZ')}"

    def total(got, metric, agg="count", **dims):
        m = next(v for v in got["value"] if v["name"]["value"] == metric)
        n = 0
        for ts in m["timeseries"]:
            meta = {x["name"]["value"]: x["value"] for x in ts["metadatavalues"]}
            if all(meta.get(k.lower()) == v for k, v in dims.items()):
                n += sum(p.get(agg, 0) for p in ts["data"])
        return n

    got = wait_for_metric(srv, "ServiceApiHit,ServiceApiResult", lambda g: total(g, "ServiceApiHit", ActivityName="secretget") >= 6,
                          timespan=span, interval="PT1M", aggregation="Count", **{"$filter": "ActivityName eq '*'"})
    assert got["interval"] == "PT1M" and got["namespace"] == "Microsoft.KeyVault/vaults"
    hit = got["value"][0]
    assert hit["name"] == {"value": "ServiceApiHit", "localizedValue": "Total Service Api Hits"} and hit["unit"] == "Count"
    assert total(got, "ServiceApiHit", ActivityName="secretget") == 6
    assert total(got, "ServiceApiHit", ActivityName="secretset") == 1
    points = hit["timeseries"][0]["data"]
    assert len(points) == 12 and all(p["timeStamp"].endswith(":00Z") for p in points), points
    assert any(p["count"] == 0 for p in points), "an empty minute counts 0"

    res = metric_series(srv, "ServiceApiResult", timespan=span, aggregation="Count",
                        **{"$filter": "ActivityName eq 'SecretGet' and StatusCode eq '*'"})
    assert total(res, "ServiceApiResult", StatusCode="200") == 4
    assert total(res, "ServiceApiResult", StatusCode="404") == 2
    lat = metric_series(srv, "ServiceApiLatency,Availability", timespan=span, interval="PT5M")
    lat_points = [p for p in lat["value"][0]["timeseries"][0]["data"] if "average" in p]
    assert lat_points and all(p["average"] >= 0 for p in lat_points)
    assert lat["value"][0]["unit"] == "MilliSeconds"
    avail = [p["average"] for p in lat["value"][1]["timeseries"][0]["data"] if "average" in p]
    assert avail and all(a == 100.0 for a in avail), "a 404 is available; only 5xx and 429 are not"

    vault = (f"/subscriptions/{srv.subscription_id}/resourceGroups/{srv.resource_group}"
             f"/providers/Microsoft.KeyVault/vaults/dev")
    tok = management_token(srv)
    for params in ({"metricnames": "NoSuchMetric"}, {"interval": "PT2M"}, {"timespan": "yesterday"},
                   {"metricnames": "ServiceApiHit", "$filter": "StatusCode eq '*'"},
                   {"$filter": "ActivityName eq 'a' or ActivityName eq 'b'"}, {"aggregation": "Maximum"},
                   {"top": "0"}, {"timespan": "99999999999999-01-01T00:00:00Z/2026-01-01T00:00:00Z"}):
        r = arm(srv, "GET", f"{vault}/providers/Microsoft.Insights/metrics", tok, api_version="2018-01-01", params=params)
        assert r.status_code == 400 and r.json()["error"]["code"] == "BadRequest", (params, r.text)
    defs = arm(srv, "GET", f"{vault}/providers/Microsoft.Insights/metricDefinitions", tok,
               api_version="2018-01-01").json()["value"]
    assert {d["name"]["value"] for d in defs} >= {"ServiceApiHit", "ServiceApiLatency", "ServiceApiResult", "Availability"}


def test_a_write_whose_client_went_away_still_completes_and_is_audited(tmp_path, monkeypatch):
    """hyper drops a request's handler when its connection closes. A write
    must not be cut off between its commit and its audit record, so a
    state-changing request runs to its end anyway: the change commits and is
    audited. The write is held mid-flight on the secret's PostgreSQL row lock
    (taken with psql), so the client's disconnect lands while it waits; then
    the lock is released. (PostgreSQL only: SQLite has no lock another
    process can hold on one object.)"""
    with running_server(KeyhavenServer, "postgres", tmp_path / "srv") as srv:
        trust_server_ca(monkeypatch, srv)
        name = unique("gone")
        SecretClient(srv.vault_url, srv.credential(), **CLIENT_KWARGS).set_secret(name, "before")
        token = srv.token()
        holder = subprocess.Popen(
            ["psql", "-h", PG_HOST, "-p", PG_PORT, "-U", PG_USER, "-d", srv.pg.name,
             "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            holder.stdin.write("BEGIN;\nSELECT 'locked' FROM objects WHERE kind = 'secret' "
                               f"AND name_lower = '{name.lower()}' FOR UPDATE;\n")
            holder.stdin.flush()
            ready, _, _ = select.select([holder.stdout], [], [], 30)
            assert ready and holder.stdout.readline().strip() == "locked", "psql took the row lock"

            url = urlparse(srv.vault_url)
            ctx = ssl.create_default_context(cafile=srv.ca_cert)
            conn = http.client.HTTPSConnection(url.hostname, url.port, context=ctx, timeout=30)
            conn.request("PUT", f"/secrets/{name}?api-version=7.5", body=json.dumps({"value": "after"}),
                         headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
            waiting = "0"
            for _ in range(300):
                waiting = srv.pg.query("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                       "AND wait_event_type = 'Lock'").strip()
                if waiting != "0":
                    break
                time.sleep(0.1)
            assert waiting != "0", "the write reached the store and waits on the row lock"
            conn.sock.shutdown(socket.SHUT_RDWR)
            conn.close()
            # Time for the server to see the connection close (a FIN over
            # loopback) and drop the connection's handler, before the lock goes.
            time.sleep(1.0)
            holder.stdin.write("COMMIT;\n")
            holder.stdin.close()
            assert holder.wait(timeout=30) == 0, holder.stderr.read()
        finally:
            if holder.poll() is None:
                holder.kill()

        value = None
        for _ in range(100):
            value = srv.vault_request("GET", f"/secrets/{name}", token=token).json()["value"]
            if value == "after":
                break
            time.sleep(0.1)
        assert value == "after", "the write ran to its end after the client went away"
        sets = []
        for _ in range(100):
            sets = [r for r in records(srv) if r["operationName"] == "SecretSet"
                    and r["properties"]["id"].endswith(f"/secrets/{name}")
                    and r["properties"]["httpStatusCode"] == 200]
            if len(sets) == 2:
                break
            time.sleep(0.1)
        assert len(sets) == 2, "the committed write has its audit record"
