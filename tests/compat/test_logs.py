"""Logs you can query (issue #25): a vault's diagnostic setting routes its
audit records into a Log Analytics workspace, and Microsoft's
`LogsQueryClient` (azure-monitor-query) queries them with KQL through the
Log Analytics query API. Every query's answer is checked against an
independent evaluation in plain Python over the same records."""

from __future__ import annotations

import hashlib
import statistics
import time
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

import pytest
import requests
from azure.core.exceptions import HttpResponseError
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, SignatureAlgorithm
from azure.keyvault.secrets import SecretClient
from azure.monitor.query import LogsQueryClient, LogsQueryStatus

from khcompat import (CLIENT_KWARGS, HTTP_TIMEOUT, KeyhavenServer, app_secret_credential, arm, assign_role,
                      management_token,
                      new_app_with_secret, running_server, trust_server_ca, unique)

WS_API = "2022-10-01"
DIAG_API = "2021-05-01-preview"
# Records reach the workspace within about a second (batched every 250 ms);
# the polls below wait at most this long, in bounded steps.
ARRIVAL_S = 10


@pytest.fixture
def srv(store_kind, tmp_path, monkeypatch):
    with running_server(KeyhavenServer, store_kind, tmp_path / "srv") as s:
        trust_server_ca(monkeypatch, s)
        yield s


def logs_url(server) -> str:
    netloc = urlsplit(server.authority_host).netloc
    assert netloc.startswith("login."), server.authority_host
    return f"https://loganalytics.{netloc[len('login.'):]}"


def group_path(server) -> str:
    return f"/subscriptions/{server.subscription_id}/resourceGroups/{server.resource_group}"


def vault_id(server) -> str:
    return f"{group_path(server)}/providers/Microsoft.KeyVault/vaults/dev"


def create_workspace(server, tok, name) -> dict:
    r = arm(server, "PUT", f"{group_path(server)}/providers/Microsoft.OperationalInsights/workspaces/{name}", tok,
            {"location": "westeurope", "properties": {"sku": {"name": "PerGB2018"}, "retentionInDays": 30}},
            api_version=WS_API)
    assert r.status_code in (200, 201), r.text
    return r.json()


def route_to(server, tok, workspace_id, name, dedicated=False):
    props = {"workspaceId": workspace_id, "logs": [{"category": "AuditEvent", "enabled": True}]}
    if dedicated:
        props["logAnalyticsDestinationType"] = "Dedicated"
    r = arm(server, "PUT", f"{vault_id(server)}/providers/microsoft.insights/diagnosticSettings/{name}", tok,
            {"properties": props}, api_version=DIAG_API)
    assert r.status_code == 200, r.text
    return r.json()


def client(server, credential=None) -> LogsQueryClient:
    return LogsQueryClient(credential or server.credential(), endpoint=logs_url(server), **CLIENT_KWARGS)


def rows_of(resp):
    assert resp.status == LogsQueryStatus.SUCCESS, resp
    t = resp.tables[0]
    return t.columns, [list(r) for r in t.rows]


def wait_for(fn, what):
    """Polls fn() until it is truthy; bounded in count and time."""
    deadline = time.monotonic() + ARRIVAL_S
    for _ in range(200):
        got = fn()
        if got:
            return got
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    pytest.fail(f"{what}: not there after {ARRIVAL_S} s")


def generate_accesses(server):
    """Secret sets, reads, a miss, a key and a signature: what seed 002's lab does."""
    cred = server.credential()
    secrets = SecretClient(server.vault_url, cred, **CLIENT_KWARGS)
    names = [unique("logs"), unique("logs")]
    for n in names:
        secrets.set_secret(n, "value-" + n)
    for _ in range(3):
        secrets.get_secret(names[0])
    secrets.get_secret(names[1])
    with pytest.raises(HttpResponseError):
        secrets.get_secret(unique("absent"))
    keys = KeyClient(server.vault_url, cred, **CLIENT_KWARGS)
    key = keys.create_ec_key(unique("logk"))
    CryptographyClient(key.id, cred, **CLIENT_KWARGS).sign(SignatureAlgorithm.es256, hashlib.sha256(b"x").digest())
    return names


COLUMNS = ["TimeGenerated", "OperationName", "ResultType", "ResultSignature", "CallerIPAddress", "httpStatusCode_d",
           "DurationMs", "id_s", "requestUri_s", "identity_claim_oid_g", "ResourceProvider", "Resource", "ResourceId",
           "Category"]


def test_lab_accesses_are_found_with_kql_and_match_an_independent_evaluation(srv):
    tok = management_token(srv)
    ws = create_workspace(srv, tok, unique("ws"))
    customer = ws["properties"]["customerId"]
    route_to(srv, tok, ws["id"], "to-workspace")
    names = generate_accesses(srv)
    logs = client(srv)
    span = timedelta(hours=1)

    def secret_gets():
        _, rows = rows_of(logs.query_workspace(customer, "AzureDiagnostics | where OperationName == 'SecretGet' | count",
                                               timespan=span))
        return rows[0][0] >= 5
    wait_for(secret_gets, "the lab's five SecretGet records")
    # The signature is the last request: wait for it too, then read all.
    wait_for(lambda: rows_of(logs.query_workspace(customer, "AzureDiagnostics | where OperationName == 'KeySign'",
                                                  timespan=span))[1], "the KeySign record")

    cols, raw = rows_of(logs.query_workspace(customer, "AzureDiagnostics | project " + ", ".join(COLUMNS),
                                             timespan=span))
    assert cols == COLUMNS
    recs = [dict(zip(COLUMNS, r)) for r in raw]
    assert all(isinstance(r["TimeGenerated"], datetime) for r in recs), recs[:1]
    assert all(r["ResourceProvider"] == "MICROSOFT.KEYVAULT" and r["Resource"] == "DEV" for r in recs)
    assert all(r["ResourceId"] == vault_id(srv).upper() and r["Category"] == "AuditEvent" for r in recs)
    ops = Counter(r["OperationName"] for r in recs)
    assert ops["SecretSet"] >= 2 and ops["SecretGet"] >= 5 and ops["KeySign"] >= 1, ops
    miss = [r for r in recs if r["OperationName"] == "SecretGet" and r["ResultType"] == "Failure"]
    assert miss and all(r["httpStatusCode_d"] == 404.0 and r["ResultSignature"] == "Not Found" for r in miss), miss
    got = [r for r in recs if r["OperationName"] == "SecretGet" and r["ResultType"] == "Success"]
    assert any(r["id_s"].endswith(f"/secrets/{names[0]}") for r in got), got
    # No secret value reaches the logs.
    assert not any("value-" in str(v) for r in raw for v in r)

    # The conformance table: each query against Keyhaven and against plain
    # Python over the records read above.
    def q(text):
        return rows_of(logs.query_workspace(customer, text, timespan=span))[1]

    def hour(t):
        return t.replace(minute=0, second=0, microsecond=0)

    base = "AzureDiagnostics | where ResourceProvider == 'MICROSOFT.KEYVAULT'"
    # Microsoft's sample "How active has this KeyVault been?"
    got = q(f"{base} | summarize count() by bin(TimeGenerated, 1h), OperationName")
    want = Counter((hour(r["TimeGenerated"]), r["OperationName"]) for r in recs)
    assert sorted((t, op, n) for t, op, n in got) == sorted((t, op, n) for (t, op), n in want.items())
    # "Who is calling this KeyVault?"
    got = q(f"{base} | summarize count() by CallerIPAddress, identity_claim_oid_g")
    want = Counter((r["CallerIPAddress"], r["identity_claim_oid_g"]) for r in recs)
    assert sorted(map(tuple, got)) == sorted((ip, oid, n) for (ip, oid), n in want.items())
    # "Are there any failures?" (failed requests by caller)
    got = q(f"{base} | where httpStatusCode_d >= 300 and not(OperationName == 'Authentication' and httpStatusCode_d == 401)"
            " | summarize count() by requestUri_s, ResultSignature")
    want = Counter((r["requestUri_s"], r["ResultSignature"]) for r in recs
                   if r["httpStatusCode_d"] >= 300
                   and not (r["OperationName"] == "Authentication" and r["httpStatusCode_d"] == 401))
    assert sorted(map(tuple, got)) == sorted((u, s, n) for (u, s), n in want.items()) and want
    # "How fast is this KeyVault serving requests?"
    got = q(f"{base} | summarize avg(DurationMs) by requestUri_s, bin(TimeGenerated, 1h) | render timechart")
    groups = defaultdict(list)
    for r in recs:
        groups[(r["requestUri_s"], hour(r["TimeGenerated"]))].append(r["DurationMs"])
    assert sorted((u, t, pytest.approx(a)) for u, t, a in got) == \
        sorted((u, t, pytest.approx(statistics.mean(v))) for (u, t), v in groups.items())
    # Who is reading secrets, busiest first.
    got = q(f"{base} | where OperationName == 'SecretGet' and ResultType == 'Success'"
            " | summarize Reads = count() by CallerIPAddress, id_s | order by Reads desc, id_s asc")
    want = Counter((r["CallerIPAddress"], r["id_s"]) for r in recs
                   if r["OperationName"] == "SecretGet" and r["ResultType"] == "Success")
    assert got == [[ip, i, n] for (ip, i), n in sorted(want.items(), key=lambda kv: (-kv[1], kv[0][1]))]
    # Operations by volume, top 3.
    got = q(f"{base} | summarize n = count() by OperationName | top 3 by n desc")
    assert [r[1] for r in got] == sorted(ops.values(), reverse=True)[:3]
    assert all(ops[op] == n for op, n in got)
    # Slow requests, slowest first, ties by time.
    got = q(f"{base} | where DurationMs >= 0 | project TimeGenerated, OperationName, DurationMs"
            " | order by DurationMs desc, TimeGenerated asc | take 5")
    want = sorted(recs, key=lambda r: (-r["DurationMs"], r["TimeGenerated"]))[:5]
    assert [(r[2]) for r in got] == [w["DurationMs"] for w in want]
    # Text predicates: has (a whole term), contains, startswith, in, between.
    got = q(f"AzureDiagnostics | where id_s has '{names[0]}' | count")
    assert got == [[sum(1 for r in recs if f"/{names[0]}/" in r["id_s"] or r["id_s"].endswith(f"/{names[0]}"))]]
    got = q("AzureDiagnostics | where OperationName startswith 'secret' | distinct OperationName | order by OperationName asc")
    assert got == [[op] for op in sorted({r["OperationName"] for r in recs if r["OperationName"].lower().startswith("secret")})]
    got = q("AzureDiagnostics | where OperationName in ('KeyCreate', 'KeySign') and httpStatusCode_d between (200 .. 299) | count")
    assert got == [[sum(1 for r in recs if r["OperationName"] in ("KeyCreate", "KeySign")
                        and 200 <= r["httpStatusCode_d"] <= 299)]]
    got = q("let op = 'SecretSet'; AzureDiagnostics | where OperationName == op and isnotempty(id_s)"
            " | summarize dcount(id_s), max(DurationMs), min(DurationMs), sum(DurationMs)")
    sets = [r for r in recs if r["OperationName"] == "SecretSet" and r["id_s"]]
    assert got == [[len({r["id_s"] for r in sets}), max(r["DurationMs"] for r in sets),
                    min(r["DurationMs"] for r in sets), sum(r["DurationMs"] for r in sets)]]
    # The time span bounds the table: nothing an hour before the records.
    first = min(r["TimeGenerated"] for r in recs)
    early = logs.query_workspace(customer, "AzureDiagnostics | count",
                                 timespan=(first - timedelta(hours=2), first - timedelta(hours=1)))
    assert rows_of(early)[1] == [[0]]
    # ago() and now() are the server's time.
    # (Nothing has touched the vault since: the queries are recorded as
    # the workspace's, not the vault's.)
    assert q("AzureDiagnostics | where TimeGenerated > ago(1h) | count") == [[len(recs)]]
    assert q("AzureDiagnostics | where TimeGenerated > now() | count") == [[0]]


def test_errors_are_worded_as_azure_words_them(srv):
    tok = management_token(srv)
    ws = create_workspace(srv, tok, unique("ws"))
    customer = ws["properties"]["customerId"]
    cred = srv.credential()
    token = cred.get_token(logs_url(srv) + "/.default").token
    post = lambda body, path=f"/v1/workspaces/{customer}/query", t=token: requests.post(
        logs_url(srv) + path, json=body, headers={"Authorization": f"Bearer {t}"}, verify=srv.ca_cert,
        timeout=HTTP_TIMEOUT)

    r = post({"query": "AzureDiagnostics\n| where ResultType = 'Failure'"})
    assert r.status_code == 400, r.text
    e = r.json()["error"]
    assert e["code"] == "BadArgumentError" and e["message"] == "The request had some invalid properties", e
    inner = e["innererror"]
    assert inner["code"] == "SyntaxError", inner
    assert inner["innererror"]["line"] == 2 and "on line [2," in inner["innererror"]["message"], inner

    r = post({"query": "AzureDiagnostics | where NoSuchColumn == 1"})
    assert r.status_code == 400 and r.json()["error"]["innererror"]["code"] == "SemanticError", r.text
    assert "NoSuchColumn" in r.json()["error"]["innererror"]["innererror"]["message"], r.text
    r = post({"query": "AzureDiagnostics | mv-expand x"})
    assert r.status_code == 400 and "'mv-expand'" in r.text, r.text
    r = post({"query": "AzureDiagnostics | count", "timespan": "yesterday"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "BadArgumentError", r.text
    r = post({"timespan": "PT1H"})
    assert r.status_code == 400, r.text
    r = post({"query": "AzureDiagnostics | count"}, path=f"/v1/workspaces/{unique('nope')}/query")
    assert r.status_code == 404 and r.json()["error"]["code"] == "WorkspaceNotFoundError", r.text
    r = post({"query": "AzureDiagnostics | count"}, t="not-a-token")
    assert r.status_code == 401 and r.json()["error"]["code"] == "AuthorizationRequiredError", r.text
    # A token for another audience (the vault's) is refused here.
    r = post({"query": "AzureDiagnostics | count"}, t=cred.get_token(srv.vault_scope).token)
    assert r.status_code == 401, r.text
    # The SDK raises them as HttpResponseError.
    with pytest.raises(HttpResponseError) as err:
        client(srv).query_workspace(customer, "AzureDiagnostics | where", timespan=timedelta(hours=1))
    assert err.value.status_code == 400


def test_a_query_reads_only_what_its_caller_may_read(srv):
    tok = management_token(srv)
    mine = create_workspace(srv, tok, unique("ws"))
    other = create_workspace(srv, tok, unique("ws"))
    route_to(srv, tok, mine["id"], "mine")
    generate_accesses(srv)
    owner_logs = client(srv)
    wait_for(lambda: rows_of(owner_logs.query_workspace(mine["properties"]["customerId"], "AzureDiagnostics | count",
                                                        timespan=timedelta(hours=1)))[1][0][0] > 0,
             "records in the routed workspace")
    # Another workspace of the same deployment has none of them.
    assert rows_of(owner_logs.query_workspace(other["properties"]["customerId"],
                                              "union AzureDiagnostics, AZKVAuditLogs | count",
                                              timespan=timedelta(hours=1)))[1] == [[0]]

    app, sp, secret = new_app_with_secret(srv, prefix="logreader")
    reader = client(srv, app_secret_credential(srv, app["appId"], secret))
    with pytest.raises(HttpResponseError) as err:
        reader.query_workspace(mine["properties"]["customerId"], "AzureDiagnostics | count",
                               timespan=timedelta(hours=1))
    assert err.value.status_code == 403
    # Log Analytics Reader on the other workspace does not open this one.
    assign_role(srv, other["id"], "Log Analytics Reader", sp["id"])
    with pytest.raises(HttpResponseError) as err:
        reader.query_workspace(mine["properties"]["customerId"], "AzureDiagnostics | count",
                               timespan=timedelta(hours=1))
    assert err.value.status_code == 403
    assert rows_of(reader.query_workspace(other["properties"]["customerId"], "AzureDiagnostics | count",
                                          timespan=timedelta(hours=1)))[1] == [[0]]
    assign_role(srv, mine["id"], "Log Analytics Reader", sp["id"])
    deadline = time.monotonic() + ARRIVAL_S
    while True:
        try:
            n = rows_of(reader.query_workspace(mine["properties"]["customerId"], "AzureDiagnostics | count",
                                               timespan=timedelta(hours=1)))[1][0][0]
            break
        except HttpResponseError:
            assert time.monotonic() < deadline, "the role assignment did not take effect"
            time.sleep(0.2)
    assert n > 0
    # Resource context: the vault's records need read on the vault's logs.
    with pytest.raises(HttpResponseError) as err:
        reader.query_resource(vault_id(srv), "AzureDiagnostics | count", timespan=timedelta(hours=1))
    assert err.value.status_code == 403
    got = rows_of(owner_logs.query_resource(vault_id(srv), "AzureDiagnostics | summarize dcount(Resource)",
                                            timespan=timedelta(hours=1)))[1]
    assert got == [[1]]


def test_dedicated_tables_the_arm_route_and_cloud_metadata(srv):
    tok = management_token(srv)
    ws = create_workspace(srv, tok, unique("ws"))
    customer = ws["properties"]["customerId"]
    s = route_to(srv, tok, ws["id"], "dedicated", dedicated=True)
    assert s["properties"]["logAnalyticsDestinationType"] == "Dedicated", s
    generate_accesses(srv)
    logs = client(srv)
    wait_for(lambda: rows_of(logs.query_workspace(customer, "AZKVAuditLogs | where OperationName == 'KeySign' | count",
                                                  timespan=timedelta(hours=1)))[1][0][0] > 0,
             "AZKVAuditLogs records")
    assert rows_of(logs.query_workspace(customer, "AzureDiagnostics | count", timespan=timedelta(hours=1)))[1] == [[0]]
    cols, rows = rows_of(logs.query_workspace(
        customer, "AZKVAuditLogs | where OperationName == 'SecretGet' | project HttpStatusCode, Identity, _ResourceId"
                  " | take 1", timespan=timedelta(hours=1)))
    assert cols == ["HttpStatusCode", "Identity", "_ResourceId"]
    assert rows[0][2] == vault_id(srv).lower() and isinstance(rows[0][0], int)

    # The ARM-routed form answers the same, with an ARM token.
    r = arm(srv, "POST", f"{ws['id']}/api/query", tok,
            {"query": "AZKVAuditLogs | summarize count() by OperationName | order by OperationName asc",
             "timespan": "PT1H"}, api_version="2020-08-01")
    assert r.status_code == 200, r.text
    table = r.json()["tables"][0]
    assert table["name"] == "PrimaryResult"
    assert [c["name"] for c in table["columns"]] == ["OperationName", "count_"]
    assert [c["type"] for c in table["columns"]] == ["string", "long"]
    assert any(row[0] == "KeySign" for row in table["rows"]), table
    # The cloud's metadata names the query API, as az cloud register reads it.
    meta = requests.get(srv.management_url.rstrip("/") + "/metadata/endpoints", params={"api-version": "2022-09-01"},
                        verify=srv.ca_cert, timeout=HTTP_TIMEOUT).json()
    assert meta["logAnalyticsResourceId"] == logs_url(srv), meta
    # Records older than now come back with their time, in the span given.
    now = datetime.now(timezone.utc)
    got = rows_of(logs.query_workspace(customer, "AZKVAuditLogs | summarize max(TimeGenerated)",
                                       timespan=(now - timedelta(hours=1), now + timedelta(minutes=5))))[1]
    assert abs((got[0][0] - now).total_seconds()) < 600


def test_a_setting_sends_only_where_its_writer_may_send(srv):
    tok = management_token(srv)
    real = create_workspace(srv, tok, unique("ws"))
    # A vault Contributor with no right on the workspace cannot name it.
    app, sp, secret = new_app_with_secret(srv, prefix="vaultcontrib")
    assign_role(srv, vault_id(srv), "Contributor", sp["id"])
    their = app_secret_credential(srv, app["appId"], secret)
    their_tok = their.get_token(srv.management_scope).token
    body = {"properties": {"workspaceId": real["id"], "logs": [{"category": "AuditEvent", "enabled": True}]}}
    deadline = time.monotonic() + ARRIVAL_S
    while True:
        r = arm(srv, "PUT", f"{vault_id(srv)}/providers/microsoft.insights/diagnosticSettings/theirs", their_tok,
                body, api_version=DIAG_API)
        if r.status_code != 403 or "sharedKeys" in r.text or time.monotonic() > deadline:
            break
        time.sleep(0.2)  # the role assignment takes effect within a second
    assert r.status_code == 403 and "sharedKeys" in r.text, r.text
    # A workspace that does not exist yet is accepted by name, but gets
    # nothing when it is made later (it was never shown to be theirs).
    later_name = unique("later")
    later_id = f"{group_path(srv)}/providers/Microsoft.OperationalInsights/workspaces/{later_name}"
    body["properties"]["workspaceId"] = later_id
    r = arm(srv, "PUT", f"{vault_id(srv)}/providers/microsoft.insights/diagnosticSettings/theirs", their_tok,
            body, api_version=DIAG_API)
    assert r.status_code == 200, r.text
    later = create_workspace(srv, tok, later_name)
    route_to(srv, tok, real["id"], "real")
    generate_accesses(srv)
    logs = client(srv)
    wait_for(lambda: rows_of(logs.query_workspace(real["properties"]["customerId"],
                                                  "AzureDiagnostics | where OperationName == 'KeySign' | count",
                                                  timespan=timedelta(hours=1)))[1][0][0] > 0, "the real workspace's records")
    assert rows_of(logs.query_workspace(later["properties"]["customerId"], "AzureDiagnostics | count",
                                        timespan=timedelta(hours=1)))[1] == [[0]]
    # A refused resource-context query is not recorded in the vault's logs.
    before = rows_of(logs.query_workspace(real["properties"]["customerId"], "AzureDiagnostics | count",
                                          timespan=timedelta(hours=1)))[1][0][0]
    app2, _, secret2 = new_app_with_secret(srv, prefix="intruder")
    intruder = client(srv, app_secret_credential(srv, app2["appId"], secret2))
    for _ in range(3):
        with pytest.raises(HttpResponseError):
            intruder.query_resource(vault_id(srv), "AzureDiagnostics | count", timespan=timedelta(hours=1))
    # (A marker request after them, to know the queue has been written.)
    SecretClient(srv.vault_url, srv.credential(), **CLIENT_KWARGS).set_secret(unique("marker"), "m")
    wait_for(lambda: rows_of(logs.query_workspace(real["properties"]["customerId"], "AzureDiagnostics | count",
                                                  timespan=timedelta(hours=1)))[1][0][0] > before, "the marker")
    ops = rows_of(logs.query_workspace(real["properties"]["customerId"],
                                       "AzureDiagnostics | summarize count() by OperationName",
                                       timespan=timedelta(hours=1)))[1]
    assert "LogsQuery" not in {op for op, _ in ops}, ops


def test_azure_metrics_count_the_vaults_requests(srv):
    tok = management_token(srv)
    ws = create_workspace(srv, tok, unique("ws"))
    customer = ws["properties"]["customerId"]
    r = arm(srv, "PUT", f"{vault_id(srv)}/providers/microsoft.insights/diagnosticSettings/with-metrics", tok,
            {"properties": {"workspaceId": ws["id"], "logs": [{"category": "AuditEvent", "enabled": True}],
                            "metrics": [{"category": "AllMetrics", "enabled": True}]}}, api_version=DIAG_API)
    assert r.status_code == 200, r.text
    generate_accesses(srv)
    logs = client(srv)
    span = timedelta(hours=1)

    def agree():
        hits = rows_of(logs.query_workspace(
            customer, "AzureMetrics | where MetricName == 'ServiceApiHit' | summarize sum(Total)", timespan=span))[1]
        records = rows_of(logs.query_workspace(customer, "AzureDiagnostics | count", timespan=span))[1]
        return hits[0][0] is not None and records[0][0] >= 8 and hits[0][0] == records[0][0]
    # Nodes add their counts every few seconds; records arrive within one.
    deadline = time.monotonic() + 30
    while not agree():
        assert time.monotonic() < deadline, "AzureMetrics' ServiceApiHit never matched the records"
        time.sleep(0.5)
    cols, rows = rows_of(logs.query_workspace(
        customer, "AzureMetrics | distinct MetricName, UnitName, TimeGrain, ResourceId | order by MetricName asc",
        timespan=span))
    assert rows == [["Availability", "Percent", "PT1M", vault_id(srv).upper()],
                    ["ServiceApiHit", "Count", "PT1M", vault_id(srv).upper()],
                    ["ServiceApiLatency", "MilliSeconds", "PT1M", vault_id(srv).upper()],
                    ["ServiceApiResult", "Count", "PT1M", vault_id(srv).upper()]], rows
    # The one miss (a 404) leaves availability at 100: only 5xx count against it.
    avail = rows_of(logs.query_workspace(
        customer, "AzureMetrics | where MetricName == 'Availability' | summarize min(Average)", timespan=span))[1]
    assert avail == [[100.0]], avail
    # A workspace that the metrics are not sent to has none.
    other = create_workspace(srv, tok, unique("ws"))
    assert rows_of(logs.query_workspace(other["properties"]["customerId"], "AzureMetrics | count",
                                        timespan=span))[1] == [[0]]
