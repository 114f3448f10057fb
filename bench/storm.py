#!/usr/bin/env python3
"""bench/storm.py: the client program of scripts/bench-storm (issue 28's
"startup storm"). The same code drives both servers: the set-up here
(standard library only), the timed phases by the keyhaven-storm driver
(crates/bench, Rust: tokio + rustls; $STORM_DRIVER), from a plan this
script writes, because a Python client cost more CPU than the server it
measured on the 2-CPU machine the two share.

  storm.py keyhaven --data DIR --port P --pid PID --out FILE
  storm.py openbao  --url URL --ca FILE --pid PID --out FILE  (root token: $STORM_ROOT_TOKEN)
  storm.py report FILE...

A target run is: set-up (not timed), then
  storm   BENCH_CLIENTS tasks released at once; each opens a NEW HTTPS
          connection (TCP + TLS handshake), gets a token with its own
          credential (Keyhaven: client credentials of its own service
          principal; OpenBao: AppRole login with its own secret_id), then
          reads BENCH_READS secrets, all on that one keep-alive connection.
          Measured: release -> last client done.
  tokens  BENCH_TOKEN_THREADS tasks, each on a connection opened before the
          release, fetch BENCH_TOKENS tokens in all: tokens/s.
Client i (and token task t) binds its connection to source address
127.0.0.(2 + i % BENCH_SOURCES), for both servers alike: Keyhaven limits
sign-ins per source address (300 at once, 20/s), as Entra does, and 300
clients on one address would measure that limiter, not the server.
Any error, non-2xx answer, wrong body or connection the server closes
fails the run (exit 1): no numbers are reported from a run with errors.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import ssl
import string
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from concurrent.futures import ThreadPoolExecutor

CLIENTS = int(os.environ.get("BENCH_CLIENTS", "300"))
READS = int(os.environ.get("BENCH_READS", "10"))
SOURCES = int(os.environ.get("BENCH_SOURCES", "8"))
TOKEN_THREADS = int(os.environ.get("BENCH_TOKEN_THREADS", "8"))
TOKENS = int(os.environ.get("BENCH_TOKENS", "1200"))
SETUP_THREADS = int(os.environ.get("BENCH_SETUP_THREADS", "4"))
VALUE_SIZE = int(os.environ.get("BENCH_VALUE_SIZE", "100"))
SETTLE = float(os.environ.get("BENCH_SETTLE", "2"))
PHASE_TIMEOUT = float(os.environ.get("BENCH_PHASE_TIMEOUT", "300"))
IO_TIMEOUT = 60
CONNECT_ADDR = "127.0.0.1"
KV_API = "7.5"
AUTHZ_API = "2022-04-01"
SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"  # Key Vault Secrets User


def log(*a):
    print("bench-storm:", *a, file=sys.stderr, flush=True)


def die(msg):
    log("ERROR:", msg)
    sys.exit(1)


def source(i: int) -> str:
    return f"127.0.0.{2 + i % SOURCES}"


def random_value(n: int) -> str:  # alphanumeric: appears verbatim in any JSON
    a = string.ascii_letters + string.digits
    return "".join(secrets.choice(a) for _ in range(n))


class Failure(Exception):
    pass


class Conn:
    """One HTTPS connection to CONNECT_ADDR from a chosen source address,
    with `host` for SNI and the certificate check: a minimal HTTP/1.1 client
    (http.client costs the client ~40% more CPU in the storm, and the client
    shares the machine's two cores with the server). It never
    reconnects: an answer that closes the connection is a failure."""

    def __init__(self, host, port, ctx, src="127.0.0.1"):
        self.host, self.port, self.ctx, self.src = host, port, ctx, src
        self.sock = None
        self.buf = b""

    def connect(self):
        if self.sock is not None:
            return
        raw = socket.create_connection((CONNECT_ADDR, self.port), timeout=IO_TIMEOUT,
                                       source_address=(self.src, 0))
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = self.ctx.wrap_socket(raw, server_hostname=self.host)

    def close(self):
        if self.sock is not None:
            self.sock.close()

    def _fill(self, what):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise Failure(f"the server closed the connection {what}")
        self.buf += chunk

    def _take(self, n, what):
        while len(self.buf) < n:
            self._fill(what)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _line(self, what):
        while b"\r\n" not in self.buf:
            self._fill(what)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def call(self, method, host, path, body=None, headers=None, want=(200,)):
        """One request with Host: `host`; returns the body. A status outside
        `want`, or an answer that closes the connection, raises."""
        what = f"{method} {host}{path.split('?')[0]}"
        self.connect()
        data = body.encode() if isinstance(body, str) else (body or b"")
        head = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if method in ("POST", "PUT", "PATCH") or data:
            head.append(f"Content-Length: {len(data)}")
        self.sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + data)
        while b"\r\n\r\n" not in self.buf:
            self._fill(f"before answering {what}")
        raw, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        hdr = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            hdr[k.strip().lower()] = v.strip()
        if "chunked" in hdr.get("transfer-encoding", "").lower():
            out = b""
            while True:
                n = int(self._line(what).split(b";")[0], 16)
                if n == 0:
                    while self._line(what):  # trailers, then an empty line
                        pass
                    break
                out += self._take(n + 2, what)[:n]
        else:
            out = self._take(int(hdr.get("content-length", "0")), what)
        if status not in want:
            raise Failure(f"{what}: HTTP {status} {out[:300]!r}")
        if hdr.get("connection", "").lower() == "close" or lines[0].startswith("HTTP/1.0"):
            raise Failure(f"{what}: the server closed the connection")
        return out


def cpu_ticks(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


NET_COUNTERS = ("ListenOverflows", "ListenDrops", "TCPSynRetrans", "SyncookiesSent")


def net_counters() -> dict:
    """Host-wide TCP counters (every process on the machine counts): SYNs
    dropped by a full accept queue, and SYNs the clients had to resend."""
    out = {}
    with open("/proc/net/netstat") as f:
        lines = f.read().splitlines()
    for names, values in zip(lines[::2], lines[1::2]):
        for k, v in zip(names.split()[1:], values.split()[1:]):
            if k in NET_COUNTERS:
                out[k] = int(v)
    return out


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else 0.0


def driver() -> str:
    path = os.environ.get("STORM_DRIVER") or die("STORM_DRIVER (the keyhaven-storm binary) is not set")
    if not os.access(path, os.X_OK):
        die(f"STORM_DRIVER {path} is not an executable")
    return path


class Target:
    """What a server must provide: the storm's host names and requests."""

    name = ""
    conn_host = ""  # SNI / certificate name of the one connection
    port = 0
    ctx: ssl.SSLContext
    pid = 0

    ca = ""  # the CA file the certificate is checked against

    def login(self, i: int) -> dict:
        """Client i's sign-in request (method, host, path, headers, body)."""
        raise NotImplementedError

    def reads(self) -> list:
        """The BENCH_READS secret reads: request and the value each holds."""
        raise NotImplementedError

    token_pointer = ""  # JSON pointer to the token in the sign-in answer
    token_header, token_prefix = "", ""

    def run(self, work: str) -> dict:
        """The timed phases, by the keyhaven-storm driver (Rust, tokio +
        rustls): a Python client cost more CPU than the server it measured
        on this shared 2-CPU machine. Returns the phases' summaries."""
        plan = {
            "addr": CONNECT_ADDR, "port": self.port, "sni": self.conn_host, "ca": self.ca,
            "server_pid": self.pid, "token_pointer": self.token_pointer,
            "token_header": self.token_header, "token_prefix": self.token_prefix,
            "clients": [{"source": source(i), "login": self.login(i)} for i in range(CLIENTS)],
            "reads": self.reads(), "reads_per_client": READS,
            "token_threads": TOKEN_THREADS, "tokens": TOKENS,
            "settle_secs": SETTLE, "phase_timeout_secs": int(PHASE_TIMEOUT),
        }
        pf, of = os.path.join(work, f"plan-{self.name}.json"), os.path.join(work, f"raw-{self.name}.json")
        with open(pf, "w") as f:
            json.dump(plan, f)
        log(f"{self.name}: storm of {CLIENTS} clients x (new TLS connection, token, {READS} reads)"
            f" over {SOURCES} source addresses, then {TOKENS} tokens on {TOKEN_THREADS} kept-alive connections")
        try:
            r = subprocess.run([driver(), pf, of], timeout=3 * PHASE_TIMEOUT)
        except subprocess.TimeoutExpired:
            die(f"{self.name}: the storm driver did not finish")
        os.unlink(pf)  # it holds every client's credential
        if r.returncode != 0:
            die(f"{self.name}: the storm driver failed (exit {r.returncode}); refusing to report numbers")
        with open(of) as f:
            raw = json.load(f)
        st, tk = raw["storm"], raw["tokens"]
        res = st["clients"]
        hs = [r[1] - r[0] for r in res]
        tl = [r[2] - r[1] for r in res]
        rd = [r[3] - r[2] for r in res]
        storm = {
            "wall": max(r[3] for r in res),
            "last_token": max(r[2] for r in res),
            "first_read_start": min(r[2] for r in res),
            "start_spread": max(r[0] for r in res),
            "handshake_p50": pct(hs, 50), "handshake_max": max(hs),
            "token_p50": pct(tl, 50), "token_max": max(tl),
            "reads_p50": pct(rd, 50), "reads_max": max(rd),
            "done_p50": pct([r[3] for r in res], 50),
            "server_cpu": st["server_cpu"], "client_cpu": st["client_cpu"],
            "requests": CLIENTS * (1 + READS), "net": st["net"],
        }
        log(f"{self.name}: storm {storm['wall']:.3f} s (last token at {storm['last_token']:.3f} s), "
            f"server CPU {storm['server_cpu']:.2f} s, client CPU {storm['client_cpu']:.2f} s, "
            f"{storm['requests']} requests, all 2xx; host TCP: "
            + ", ".join(f"{k} +{v}" for k, v in storm["net"].items()))
        lat = tk["lat"]
        tokens = {"tokens": tk["tokens"], "wall": tk["wall"], "per_s": tk["tokens"] / tk["wall"],
                  "p50": pct(lat, 50), "p99": pct(lat, 99),
                  "server_cpu_ms_per_token": 1000 * tk["server_cpu"] / tk["tokens"],
                  "client_cpu": tk["client_cpu"]}
        log(f"{self.name}: {tokens['per_s']:.0f} tokens/s, p50 {1000 * tokens['p50']:.1f} ms, "
            f"p99 {1000 * tokens['p99']:.1f} ms, server CPU {tokens['server_cpu_ms_per_token']:.2f} ms/token")
        return {"storm": storm, "tokens": tokens}


# ------------------------------------------------------------------ Keyhaven --
class Keyhaven(Target):
    name = "keyhaven"

    def __init__(self, a):
        self.port, self.pid = a.port, a.pid
        with open(os.path.join(a.data, "bootstrap.json")) as f:
            self.boot = b = json.load(f)
        self.ca = b.get("ca_cert") or os.path.join(a.data, "tls", "ca.pem")
        self.ctx = ssl.create_default_context(cafile=self.ca)
        hp = lambda url: urllib.parse.urlsplit(url).netloc  # noqa: E731
        self.login_host = hp(b["authority_host"])
        self.vault = hp(b["vault_url"])
        self.mgmt = hp(b["management_url"])
        self.graph = "graph." + self.login_host.split(".", 1)[1]
        self.conn_host = self.vault.split(":")[0]
        self.token_path = f"/{b['tenant_id']}/oauth2/v2.0/token"
        self.scope = f"https://{b['vault_host_suffix']}/.default"
        self.vault_arm = (f"/subscriptions/{b['subscription_id']}/resourceGroups/{b['resource_group']}"
                          f"/providers/Microsoft.KeyVault/vaults/{self.vault.split('.')[0]}")
        self.apps = []  # (client_id, client_secret)
        self.values = {}

    def _token(self, conn, client_id, secret, scope):
        form = urllib.parse.urlencode({"grant_type": "client_credentials", "client_id": client_id,
                                       "client_secret": secret, "scope": scope})
        out = conn.call("POST", self.login_host, self.token_path, form,
                        {"Content-Type": "application/x-www-form-urlencoded"})
        tok = json.loads(out).get("access_token")
        if not tok:
            raise Failure(f"no access_token in {out[:200]!r}")
        return tok

    token_pointer, token_header, token_prefix = "/access_token", "Authorization", "Bearer "

    def login(self, i):
        cid, sec = self.apps[i]
        form = urllib.parse.urlencode({"grant_type": "client_credentials", "client_id": cid,
                                       "client_secret": sec, "scope": self.scope})
        return {"method": "POST", "host": self.login_host, "path": self.token_path,
                "headers": [["Content-Type", "application/x-www-form-urlencoded"]], "body": form}

    def reads(self):
        return [{"method": "GET", "host": self.vault, "path": f"/secrets/storm-{k}?api-version={KV_API}",
                 "expect": self.values[k]} for k in range(READS)]

    def setup(self):
        b = self.boot
        n = max(CLIENTS, TOKEN_THREADS)
        log(f"keyhaven: set-up: {READS} secrets, {n} applications, each with a service principal, "
            "a client secret and Key Vault Secrets User on the vault")
        t0 = time.perf_counter()
        admin = Conn("localhost", self.port, self.ctx)
        admin_id, admin_secret = b["client_id"], b["client_secret"]
        graph_tok = self._token(admin, admin_id, admin_secret, f"https://{self.graph}/.default")
        mgmt_tok = self._token(admin, admin_id, admin_secret, b["management_scope"])
        vault_tok = self._token(admin, admin_id, admin_secret, self.scope)
        for k in range(READS):
            self.values[k] = random_value(VALUE_SIZE)
            admin.call("PUT", self.vault, f"/secrets/storm-{k}?api-version={KV_API}",
                       json.dumps({"value": self.values[k]}),
                       {"Authorization": f"Bearer {vault_tok}", "Content-Type": "application/json"})
        admin.close()
        local = threading.local()
        gh = {"Authorization": f"Bearer {graph_tok}", "Content-Type": "application/json"}
        mh = {"Authorization": f"Bearer {mgmt_tok}", "Content-Type": "application/json"}
        role = f"/subscriptions/{b['subscription_id']}/providers/Microsoft.Authorization/roleDefinitions/{SECRETS_USER}"
        stamp = uuid.uuid4().hex[:8]

        def make(i):
            if not hasattr(local, "conn"):
                local.conn = Conn("localhost", self.port, self.ctx)
            c = local.conn
            app = json.loads(c.call("POST", self.graph, "/v1.0/applications",
                                    json.dumps({"displayName": f"storm-{stamp}-{i}"}), gh, want=(201,)))
            sp = json.loads(c.call("POST", self.graph, "/v1.0/servicePrincipals",
                                   json.dumps({"appId": app["appId"]}), gh, want=(201,)))
            pw = json.loads(c.call("POST", self.graph, f"/v1.0/applications/{app['id']}/addPassword",
                                   json.dumps({"passwordCredential": {"displayName": "storm"}}), gh))
            body = {"properties": {"roleDefinitionId": role, "principalId": sp["id"],
                                   "principalType": "ServicePrincipal"}}
            c.call("PUT", self.mgmt,
                   f"{self.vault_arm}/providers/Microsoft.Authorization/roleAssignments/{uuid.uuid4()}"
                   f"?api-version={AUTHZ_API}", json.dumps(body), mh, want=(200, 201))
            return app["appId"], pw["secretText"]

        with ThreadPoolExecutor(SETUP_THREADS) as ex:
            self.apps = list(ex.map(make, range(n)))
        log(f"keyhaven: set-up took {time.perf_counter() - t0:.1f} s "
            f"({(time.perf_counter() - t0) / n * 1000:.0f} ms per application)")
        time.sleep(SETTLE)  # role assignments in force everywhere (1 s promise)


# ------------------------------------------------------------------- OpenBao --
class OpenBao(Target):
    name = "openbao"

    def __init__(self, a):
        u = urllib.parse.urlsplit(a.url)
        self.conn_host, self.port, self.pid = u.hostname, u.port, a.pid
        self.host = u.netloc
        self.ca = a.ca
        self.ctx = ssl.create_default_context(cafile=a.ca)
        self.root = os.environ.get("STORM_ROOT_TOKEN") or die("STORM_ROOT_TOKEN is not set")
        self.secret_ids = []
        self.values = {}

    token_pointer, token_header, token_prefix = "/auth/client_token", "X-Vault-Token", ""

    def login(self, i):
        return {"method": "POST", "host": self.host, "path": "/v1/auth/approle/login",
                "headers": [["Content-Type", "application/json"]],
                "body": json.dumps({"role_id": self.role_id, "secret_id": self.secret_ids[i]})}

    def reads(self):
        return [{"method": "GET", "host": self.host, "path": f"/v1/secret/data/storm-{k}",
                 "expect": self.values[k]} for k in range(READS)]

    def setup(self):
        n = max(CLIENTS, TOKEN_THREADS)
        log(f"openbao: set-up: {READS} KV v2 secrets, approle with one role and {n} secret_ids")
        t0 = time.perf_counter()
        c = Conn(self.conn_host, self.port, self.ctx)
        h = {"X-Vault-Token": self.root, "Content-Type": "application/json"}
        ok = (200, 204)
        c.call("POST", self.host, "/v1/sys/auth/approle", json.dumps({"type": "approle"}), h, want=ok)
        policy = 'path "secret/data/*" {\n  capabilities = ["read"]\n}\n'
        c.call("PUT", self.host, "/v1/sys/policies/acl/storm", json.dumps({"policy": policy}), h, want=ok)
        c.call("POST", self.host, "/v1/auth/approle/role/storm",
               json.dumps({"token_policies": ["storm"], "token_ttl": "1h"}), h, want=ok)
        self.role_id = json.loads(c.call("GET", self.host, "/v1/auth/approle/role/storm/role-id",
                                         headers=h))["data"]["role_id"]
        for k in range(READS):
            self.values[k] = random_value(VALUE_SIZE)
            body = json.dumps({"data": {"value": self.values[k]}})
            deadline = time.monotonic() + 60
            while True:  # the KV v2 mount may still be upgrading right after start
                try:
                    c.call("POST", self.host, f"/v1/secret/data/storm-{k}", body, h)
                    break
                except Failure:
                    if time.monotonic() > deadline:
                        raise
                    c.close()
                    c = Conn(self.conn_host, self.port, self.ctx)
                    time.sleep(0.2)
        for _ in range(n):
            out = c.call("POST", self.host, "/v1/auth/approle/role/storm/secret-id", "{}", h)
            self.secret_ids.append(json.loads(out)["data"]["secret_id"])
        c.close()
        log(f"openbao: set-up took {time.perf_counter() - t0:.1f} s")
        time.sleep(SETTLE)


# -------------------------------------------------------------------- report --
def report(files):
    res = {}
    for f in files:
        with open(f) as fh:
            d = json.load(fh)
        res[d["target"]] = d
    print()
    print(f"startup storm: {CLIENTS} clients x (new TLS connection, client-credentials token / AppRole login, "
          f"{READS} reads), one barrier, {SOURCES} source addresses, {os.cpu_count()} CPUs (client and server share them)")
    print(f"{'target':<9} {'storm_s':>8} {'spread_s':>8} {'last_tok_s':>10} {'hs_p50_ms':>9} {'tok_p50_ms':>10} {'tok_max_ms':>10} "
          f"{'reads_p50_ms':>12} {'reads_max_ms':>12} {'srv_cpu_s':>9} {'cli_cpu_s':>9}")
    for t, d in res.items():
        s = d["storm"]
        print(f"{t:<9} {s['wall']:>8.3f} {s['start_spread']:>8.3f} {s['last_token']:>10.3f} {1000 * s['handshake_p50']:>9.1f} "
              f"{1000 * s['token_p50']:>10.1f} {1000 * s['token_max']:>10.1f} {1000 * s['reads_p50']:>12.1f} "
              f"{1000 * s['reads_max']:>12.1f} {s['server_cpu']:>9.2f} {s['client_cpu']:>9.2f}")
    for t, d in res.items():
        print(f"{t:<9} host TCP during the storm: " + ", ".join(f"{k} +{v}" for k, v in d["storm"]["net"].items())
              + " (SYNs dropped on a full accept queue cost a client a 1 s retransmit)")
    print()
    print(f"token issuance: {TOKEN_THREADS} threads on kept-alive connections, {SOURCES} source addresses")
    print(f"{'target':<9} {'tokens':>7} {'tokens/s':>9} {'p50_ms':>8} {'p99_ms':>8} {'srv_cpu_ms/token':>16} {'cli_cpu_s':>9}")
    for t, d in res.items():
        k = d["tokens"]
        print(f"{t:<9} {k['tokens']:>7} {k['per_s']:>9.0f} {1000 * k['p50']:>8.2f} {1000 * k['p99']:>8.2f} "
              f"{k['server_cpu_ms_per_token']:>16.2f} {k['client_cpu']:>9.2f}")
    print()
    goal = float(os.environ.get("BENCH_MAX_STORM_RATIO", "0.3"))
    met = None
    if "keyhaven" in res and "openbao" in res:
        r = res["keyhaven"]["storm"]["wall"] / res["openbao"]["storm"]["wall"]
        q = res["keyhaven"]["tokens"]["per_s"] / res["openbao"]["tokens"]["per_s"]
        print(f"ratio storm keyhaven/openbao = {r:.2f}")
        print(f"ratio tokens/s keyhaven/openbao = {q:.2f}")
        met = r <= goal
        print(f"goal storm <= {goal}x openbao: {'met' if met else 'NOT met'}")
    else:
        print("ratio storm keyhaven/openbao = n/a (both targets are needed)")
        print("ratio tokens/s keyhaven/openbao = n/a (both targets are needed)")
    if met is False and os.environ.get("BENCH_ENFORCE", "0") == "1":
        sys.exit(3)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("keyhaven")
    k.add_argument("--data", required=True)
    k.add_argument("--port", type=int, required=True)
    o = sub.add_parser("openbao")
    o.add_argument("--url", required=True)
    o.add_argument("--ca", required=True)
    for s in (k, o):
        s.add_argument("--pid", type=int, required=True)
        s.add_argument("--out", required=True)
    r = sub.add_parser("report")
    r.add_argument("files", nargs="+")
    a = p.parse_args()
    if a.cmd == "report":
        return report(a.files)
    if TOKEN_THREADS > CLIENTS:
        die("BENCH_TOKEN_THREADS must not exceed BENCH_CLIENTS")
    t = Keyhaven(a) if a.cmd == "keyhaven" else OpenBao(a)
    try:
        t.setup()
    except (Failure, OSError, KeyError, ValueError) as e:
        die(f"{t.name}: set-up failed: {type(e).__name__}: {e}")
    out = t.run(os.path.dirname(os.path.abspath(a.out)))
    with open(a.out, "w") as f:
        json.dump({"target": t.name, **out}, f, indent=1)


if __name__ == "__main__":
    main()
