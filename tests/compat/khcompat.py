"""Shared helpers of the Azure SDK compatibility suite: the live server
wrapper (KeyhavenServer), throw-away PostgreSQL databases (PgDatabase),
constants, and small utilities. Fixtures live in conftest.py.
"""

from __future__ import annotations

import atexit
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Dict, List, Optional

import pytest
import requests

from azure.identity import ClientSecretCredential
from azure.keyvault.secrets import SecretClient

# --------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------

REPO_ROOT = Path(__file__).resolve().parents[2]
KEYHAVEN_BIN = os.environ.get("KEYHAVEN_BIN", str(REPO_ROOT / "target" / "debug" / "keyhaven"))
STORES = [s.strip() for s in os.environ.get("KEYHAVEN_COMPAT_STORES", "sqlite,postgres").split(",") if s.strip()]

PG_HOST = os.environ.get("KEYHAVEN_PG_HOST", "127.0.0.1")
PG_PORT = os.environ.get("KEYHAVEN_PG_PORT", "5432")
PG_USER = os.environ.get("KEYHAVEN_PG_USER", "root")
PG_ADMIN_DB = os.environ.get("KEYHAVEN_PG_ADMIN_DB", "test")

READY_TIMEOUT = float(os.environ.get("KEYHAVEN_COMPAT_READY_TIMEOUT", "60"))
STOP_TIMEOUT = 15.0
HTTP_TIMEOUT = 30  # seconds, for raw `requests` calls

# The default api-version of azure-keyvault-secrets 4.12.0.
DEFAULT_API_VERSION = "2026-04-01"
# Every api-version the server must accept.
ACCEPTED_API_VERSIONS = [
    "2016-10-01", "7.0", "7.1", "7.2", "7.3", "7.4", "7.5", "7.6",
    "2025-06-01", "2025-07-01", "2026-04-01",
]

# Bounded network behaviour for SDK clients and credentials: azure-core's
# defaults are 300 s timeouts and 10 retries with exponential back-off, which
# would turn a server bug into a many-minute hang.
CLIENT_KWARGS = dict(connection_timeout=10, read_timeout=60, retry_total=3, retry_backoff_max=2)

BOOTSTRAP_FIELDS = [
    "tenant_id", "client_id", "client_secret", "authority_host", "vault_url",
    "vault_host_suffix", "management_url", "management_scope", "subscription_id",
    "resource_group", "ca_cert",
]

# Loopback traffic must never go through a proxy from the environment.
_no_proxy = os.environ.get("NO_PROXY") or os.environ.get("no_proxy") or ""
for _var in ("NO_PROXY", "no_proxy"):
    os.environ[_var] = ",".join(x for x in [_no_proxy, "localhost", ".localhost", "127.0.0.1"] if x)


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------

_HANDED_OUT: set = set()


def free_port() -> int:
    """A free loopback port never handed out before in this test session:
    the Key Vault SDKs cache each vault URL's auth challenge (tenant
    included) for the life of the process, so a new server on an old
    server's port would inherit the old server's tenant."""
    for _ in range(1000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no fresh free port")


def unique(prefix: str = "kh") -> str:
    """A fresh secret name matching ^[0-9a-zA-Z-]{1,127}$."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def tail(path: Path, lines: int = 60) -> str:
    try:
        data = path.read_text(errors="replace").splitlines()
    except OSError:
        return "<no log>"
    return "\n".join(data[-lines:])


class PgDatabase:
    """A throw-away PostgreSQL database, created and dropped with psql."""

    def __init__(self, name: Optional[str] = None):
        self.name = name or f"kh_e2e_{uuid.uuid4().hex[:12]}"

    @property
    def url(self) -> str:
        return f"postgres://{PG_USER}@{PG_HOST}:{PG_PORT}/{self.name}"

    def _psql(self, sql: str, db: str = PG_ADMIN_DB) -> str:
        cmd = ["psql", "-h", PG_HOST, "-p", PG_PORT, "-U", PG_USER, "-d", db,
               "-v", "ON_ERROR_STOP=1", "-X", "-q", "-A", "-t", "-c", sql]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if res.returncode != 0:
            raise RuntimeError(f"psql failed ({' '.join(cmd)}): {res.stderr.strip()}")
        return res.stdout

    def create(self) -> "PgDatabase":
        if shutil.which("psql") is None:
            pytest.fail("psql not found: the postgres store needs the PostgreSQL client tools")
        self._psql(f'CREATE DATABASE "{self.name}"')
        return self

    def drop(self) -> None:
        # WITH (FORCE) terminates leftover connections (PostgreSQL >= 13).
        self._psql(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def dump(self) -> bytes:
        """Plain-text pg_dump of the whole database (schema and data)."""
        cmd = ["pg_dump", "-h", PG_HOST, "-p", PG_PORT, "-U", PG_USER, "--no-owner", "-d", self.name]
        res = subprocess.run(cmd, capture_output=True, timeout=120)
        if res.returncode != 0:
            raise RuntimeError(f"pg_dump failed: {res.stderr.decode(errors='replace').strip()}")
        return res.stdout

    def query(self, sql: str) -> str:
        return self._psql(sql, db=self.name)


_LIVE_SERVERS: List["KeyhavenServer"] = []
_LIVE_LOCK = threading.Lock()


class KeyhavenServer:
    """One `keyhaven serve` process plus what its bootstrap.json says."""

    def __init__(self, store_kind: str, workdir: Path, pg: Optional[PgDatabase] = None, port: Optional[int] = None):
        self.store_kind = store_kind
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = workdir / "server.stdout.log"
        self.stderr_path = workdir / "server.stderr.log"
        self.pg = pg
        self.port = port or free_port()
        self.proc: Optional[subprocess.Popen] = None
        self.bootstrap: Dict[str, str] = {}
        self.starts = 0

    # -- process control -------------------------------------------------
    @property
    def store_arg(self) -> str:
        if self.store_kind == "sqlite":
            return "sqlite"
        assert self.pg is not None
        return self.pg.url

    def command(self) -> List[str]:
        return [
            KEYHAVEN_BIN, "serve",
            "--data-dir", str(self.data_dir),
            "--listen", f"127.0.0.1:{self.port}",
            "--store", self.store_arg,
            "--domain", "localhost",
            # The HTTP audit destination test ships to a listener here.
            "--audit-http-allow", "127.0.0.1",
        ]

    def start(self) -> "KeyhavenServer":
        if not os.access(KEYHAVEN_BIN, os.X_OK):
            pytest.fail(f"keyhaven binary not found at {KEYHAVEN_BIN} (set KEYHAVEN_BIN; build it first)")
        env = {k: v for k, v in os.environ.items()
               if k not in ("KEYHAVEN_DATA_DIR", "KEYHAVEN_LISTEN", "KEYHAVEN_STORE", "KEYHAVEN_DOMAIN")}
        self.starts += 1
        marker = f"===== start #{self.starts}: {' '.join(self.command())}\n".encode()
        out = open(self.stdout_path, "ab")
        err = open(self.stderr_path, "ab")
        out.write(marker)
        err.write(marker)
        out.flush()
        err.flush()
        try:
            self.proc = subprocess.Popen(self.command(), stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                         env=env, cwd=str(self.workdir), start_new_session=True)
        finally:
            out.close()
            err.close()
        with _LIVE_LOCK:
            _LIVE_SERVERS.append(self)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        bootstrap_path = self.data_dir / "bootstrap.json"
        last_error = "bootstrap.json not written yet"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(
                    f"keyhaven exited early with status {self.proc.returncode} "
                    f"(store={self.store_kind}).\n--- stderr ---\n{tail(self.stderr_path, 200)}",
                    pytrace=False,
                )
            if bootstrap_path.exists():
                try:
                    boot = json.loads(bootstrap_path.read_text())
                    ca = boot.get("ca_cert") or str(self.data_dir / "tls" / "ca.pem")
                    r = requests.get(f"https://localhost:{self.port}/healthz", verify=ca, timeout=2)
                    if r.status_code == 200:
                        self._load_bootstrap(boot)
                        return
                    last_error = f"/healthz answered {r.status_code}: {r.text[:200]}"
                except (ValueError, OSError, requests.RequestException) as exc:
                    last_error = f"{type(exc).__name__}: {exc}"
            time.sleep(0.1)
        pytest.fail(
            f"keyhaven not ready within {READY_TIMEOUT:.0f}s on port {self.port} "
            f"(last: {last_error}).\n--- stderr ---\n{tail(self.stderr_path, 200)}",
            pytrace=False,
        )

    def _load_bootstrap(self, boot: Dict[str, str]) -> None:
        missing = [f for f in BOOTSTRAP_FIELDS if not boot.get(f)]
        if missing:
            pytest.fail(f"bootstrap.json lacks fields {missing}: {sorted(boot)}", pytrace=False)
        self.bootstrap = boot

    def stop(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT)
            except ProcessLookupError:
                pass
        self.proc = None
        with _LIVE_LOCK:
            if self in _LIVE_SERVERS:
                _LIVE_SERVERS.remove(self)

    def restart(self) -> "KeyhavenServer":
        """Stop, then start again on the same data dir, store and port."""
        self.stop()
        return self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- bootstrap facts -------------------------------------------------
    def __getattr__(self, item):
        boot = self.__dict__.get("bootstrap") or {}
        if item in boot:
            return boot[item]
        raise AttributeError(item)

    @property
    def vault_resource(self) -> str:
        """The audience / challenge resource of the data plane: https://vault.localhost:PORT"""
        return f"https://{self.bootstrap['vault_host_suffix']}"

    @property
    def vault_scope(self) -> str:
        return f"{self.vault_resource}/.default"

    def token_url(self, tenant: Optional[str] = None) -> str:
        return f"{self.bootstrap['authority_host']}/{tenant or self.bootstrap['tenant_id']}/oauth2/v2.0/token"

    def vault_url_for(self, vault_name: str) -> str:
        return f"https://{vault_name}.{self.bootstrap['vault_host_suffix']}"

    # -- clients -----------------------------------------------------------
    def credential(self, client_secret: Optional[str] = None, **kwargs) -> ClientSecretCredential:
        kw = dict(CLIENT_KWARGS)
        kw.update(kwargs)
        return ClientSecretCredential(
            self.bootstrap["tenant_id"],
            self.bootstrap["client_id"],
            client_secret or self.bootstrap["client_secret"],
            authority=self.bootstrap["authority_host"],
            disable_instance_discovery=True,
            **kw,
        )

    def secret_client(self, credential=None, vault_url: Optional[str] = None, **kwargs) -> SecretClient:
        kw = dict(CLIENT_KWARGS)
        kw.update(kwargs)
        return SecretClient(vault_url=vault_url or self.bootstrap["vault_url"],
                            credential=credential or self.credential(), **kw)

    def request_token(self, scope: Optional[str] = None, *, tenant: Optional[str] = None,
                      client_id: Optional[str] = None, client_secret: Optional[str] = None) -> requests.Response:
        """Raw client-credentials grant against the token endpoint."""
        return requests.post(
            self.token_url(tenant),
            data={
                "grant_type": "client_credentials",
                "client_id": client_id or self.bootstrap["client_id"],
                "client_secret": client_secret or self.bootstrap["client_secret"],
                "scope": scope or self.vault_scope,
            },
            verify=self.bootstrap["ca_cert"],
            timeout=HTTP_TIMEOUT,
        )

    def token(self, scope: Optional[str] = None) -> str:
        r = self.request_token(scope)
        assert r.status_code == 200, f"token endpoint answered {r.status_code}: {r.text}"
        return r.json()["access_token"]

    def vault_request(self, method: str, path: str, *, token: Optional[str] = None,
                      api_version: Optional[str] = DEFAULT_API_VERSION, vault_url: Optional[str] = None,
                      headers: Optional[Dict[str, str]] = None, **kwargs) -> requests.Response:
        """Raw data-plane request. api_version=None omits the query parameter;
        token=None sends no Authorization header."""
        url = (vault_url or self.bootstrap["vault_url"]) + path
        params = dict(kwargs.pop("params", None) or {})
        if api_version is not None:
            params["api-version"] = api_version
        hdrs = dict(headers or {})
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        return requests.request(method, url, params=params, headers=hdrs,
                                verify=self.bootstrap["ca_cert"], timeout=HTTP_TIMEOUT, **kwargs)

    # -- at-rest inspection ------------------------------------------------
    def data_files(self) -> List[Path]:
        return [p for p in self.data_dir.rglob("*") if p.is_file()]

    def sqlite_files(self) -> List[Path]:
        """SQLite database files in the data dir plus their -wal/-shm/-journal companions."""
        dbs = []
        for p in self.data_files():
            try:
                with open(p, "rb") as fh:
                    if fh.read(16) == b"SQLite format 3\x00":
                        dbs.append(p)
            except OSError:
                pass
        out = set(dbs)
        for db in dbs:
            for suffix in ("-wal", "-shm", "-journal"):
                companion = db.with_name(db.name + suffix)
                if companion.exists():
                    out.add(companion)
        return sorted(out)

    def store_snapshot(self) -> bytes:
        """Every byte the store holds: SQLite files, or a pg_dump of the database."""
        if self.store_kind == "sqlite":
            files = self.sqlite_files()
            assert files, f"no SQLite database found under {self.data_dir}: {self.data_files()}"
            return b"".join(p.read_bytes() for p in files)
        assert self.pg is not None
        return self.pg.dump()

    def log_bytes(self) -> bytes:
        out = b""
        for p in (self.stdout_path, self.stderr_path):
            try:
                out += p.read_bytes()
            except OSError:
                pass
        return out


def _kill_leftovers() -> None:
    with _LIVE_LOCK:
        servers = list(_LIVE_SERVERS)
    for s in servers:
        try:
            s.stop()
        except Exception:  # pragma: no cover - best effort at interpreter exit
            pass


atexit.register(_kill_leftovers)


def live_servers() -> List["KeyhavenServer"]:
    with _LIVE_LOCK:
        return list(_LIVE_SERVERS)


# --------------------------------------------------------------------------
# Encodings and JWT helpers
# --------------------------------------------------------------------------

def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def jwt_parts(token: str):
    """(header dict, payload dict, signature bytes, signing input bytes) of a compact JWS."""
    h, p, s = token.split(".")
    return json.loads(b64url_decode(h)), json.loads(b64url_decode(p)), b64url_decode(s), f"{h}.{p}".encode()


def leak_patterns(secret: bytes) -> Dict[str, bytes]:
    """Byte patterns whose presence would reveal `secret` at rest: the raw
    bytes, lower/upper hex (PostgreSQL dumps bytea as hex), and the standard
    and URL-safe base64 of the secret at each of the three possible byte
    alignments inside a larger encoded blob (the 4 characters at either end,
    which depend on neighbouring bytes or padding, are dropped)."""
    pats = {"raw": secret, "hex": secret.hex().encode(), "HEX": secret.hex().upper().encode()}
    for shift in range(3):
        for label, enc in (("b64", base64.b64encode), ("b64url", base64.urlsafe_b64encode)):
            core = enc(b"\0" * shift + secret).rstrip(b"=")[4:-4]
            if len(core) >= 12:  # shorter cores would match by chance
                pats[f"{label}@{shift}"] = core
    return pats


def find_leaks(haystack: bytes, secret: bytes) -> List[str]:
    return [label for label, pat in leak_patterns(secret).items() if pat in haystack]


# --------------------------------------------------------------------------
# Directory (Microsoft Graph v1.0 subset) and the user / certificate / new-app
# token grants. Used by test_directory.py and test_credentials.py.
# --------------------------------------------------------------------------

import datetime as _dt  # noqa: E402  (helpers appended after the original module)
import hashlib as _hashlib  # noqa: E402
import re as _re  # noqa: E402
from typing import Any, Iterable, NamedTuple, Optional as _Opt, Tuple, Union  # noqa: E402
from urllib.parse import urlsplit as _urlsplit  # noqa: E402

# The Azure CLI's well-known public client id (registered at bootstrap).
AZURE_CLI_CLIENT_ID = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"
# What msal adds to every user-flow scope list (PublicClientApplication._decorate_scope).
OIDC_SCOPES = ("offline_access", "openid", "profile")
GUID_RE = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


def is_guid(value: Any) -> bool:
    """A lower-case, hyphenated GUID as Graph prints object and app ids."""
    return isinstance(value, str) and _re.match(GUID_RE, value) is not None


def jwt_claims(token: str) -> Dict[str, Any]:
    """The payload of a compact JWS, without checking its signature."""
    return jwt_parts(token)[1]


def expect_status(resp: requests.Response, status: Union[int, Iterable[int]]) -> requests.Response:
    wanted = {status} if isinstance(status, int) else set(status)
    assert resp.status_code in wanted, (
        f"{resp.request.method} {resp.url}: expected {sorted(wanted)}, got {resp.status_code}: {resp.text[:800]}")
    return resp


# -- Graph -----------------------------------------------------------------

def graph_resource(server: "KeyhavenServer") -> str:
    """https://graph.localhost:PORT: the Graph audience (token scope without /.default)."""
    netloc = _urlsplit(server.authority_host).netloc
    assert netloc.startswith("login."), server.authority_host
    return f"https://graph.{netloc[len('login.'):]}"


def graph_scope(server: "KeyhavenServer") -> str:
    return graph_resource(server) + "/.default"


def graph_url(server: "KeyhavenServer", path: str) -> str:
    """Absolute URL of a Graph v1.0 path ("/users/..."); absolute URLs pass through."""
    if path.startswith("https://"):
        return path
    return f"{graph_resource(server)}/v1.0{path}"


def directory_object_ref(server: "KeyhavenServer", object_id: str) -> Dict[str, str]:
    """The body of POST /groups/{id}/members/$ref."""
    return {"@odata.id": graph_url(server, f"/directoryObjects/{object_id}")}


_GRAPH_TOKENS: Dict[Tuple[int, str, str], Tuple[str, float]] = {}


def graph_token(server: "KeyhavenServer", client_id: _Opt[str] = None, client_secret: _Opt[str] = None) -> str:
    """A Graph token from the client-credentials grant: the bootstrap service
    principal (a Global Administrator) by default. Cached for 20 minutes per
    server port and client, so the suite does not pay an argon2 verification
    per test."""
    cid = client_id or server.client_id
    secret = client_secret or server.client_secret
    key = (server.port, cid, secret)
    cached = _GRAPH_TOKENS.get(key)
    if cached and cached[1] > time.monotonic():
        return cached[0]
    r = server.request_token(graph_scope(server), client_id=cid, client_secret=secret)
    assert r.status_code == 200, f"graph token for {cid}: {r.status_code} {r.text[:500]}"
    tok = r.json()["access_token"]
    _GRAPH_TOKENS[key] = (tok, time.monotonic() + 20 * 60)
    return tok


def graph(server: "KeyhavenServer", method: str, path: str, token: _Opt[str], json: Any = None,
          **kwargs) -> requests.Response:
    """Raw Graph request. token=None sends no Authorization header."""
    headers = dict(kwargs.pop("headers", None) or {})
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return requests.request(method, graph_url(server, path), headers=headers, json=json,
                            verify=server.ca_cert, timeout=HTTP_TIMEOUT, **kwargs)


def graph_ok(server: "KeyhavenServer", method: str, path: str, token: str, json: Any = None,
             status: Union[int, Iterable[int]] = 200) -> Any:
    """A Graph request that must answer `status`; returns the JSON body (None when empty)."""
    r = expect_status(graph(server, method, path, token, json=json), status)
    if not r.content:
        return None
    return r.json()


def graph_list(server: "KeyhavenServer", path: str, token: str, max_pages: int = 50) -> List[Dict[str, Any]]:
    """Every item of a Graph collection, following @odata.nextLink."""
    items: List[Dict[str, Any]] = []
    url: _Opt[str] = path
    for _ in range(max_pages):
        body = graph_ok(server, "GET", url, token)
        assert isinstance(body.get("value"), list), body
        items.extend(body["value"])
        url = body.get("@odata.nextLink")
        if not url:
            return items
    raise AssertionError(f"{path}: more than {max_pages} pages")


def assert_graph_error(resp: requests.Response, status: int, code: str) -> Dict[str, Any]:
    """Graph's error shape: {"error": {"code", "message", "innerError": {"date", "request-id"}}}."""
    assert resp.status_code == status, (
        f"{resp.request.method} {resp.url}: expected {status} {code}, got {resp.status_code}: {resp.text[:800]}")
    assert resp.headers.get("Content-Type", "").startswith("application/json"), resp.headers
    body = resp.json()
    err = body.get("error")
    assert isinstance(err, dict), body
    assert err.get("code") == code, body
    assert isinstance(err.get("message"), str) and err["message"], body
    inner = err.get("innerError")
    assert isinstance(inner, dict), body
    assert isinstance(inner.get("date"), str) and inner["date"], body
    assert isinstance(inner.get("request-id"), str) and inner["request-id"], body
    return body


def new_password() -> str:
    """A password any complexity rule accepts, unique per call."""
    return f"Kh-{uuid.uuid4().hex[:16]}-Pw9!"


def create_user(server: "KeyhavenServer", token: _Opt[str] = None, *, prefix: str = "user",
                password: _Opt[str] = None, enabled: bool = True) -> Tuple[Dict[str, Any], str]:
    """POST /users as the admin (default); returns (user JSON, password)."""
    nick = unique(prefix)
    password = password or new_password()
    body = {
        "accountEnabled": enabled,
        "displayName": f"Test {nick}",
        "userPrincipalName": f"{nick}@keyhaven.localhost",
        "mailNickname": nick,
        "passwordProfile": {"password": password, "forceChangePasswordNextSignIn": False},
    }
    user = graph_ok(server, "POST", "/users", token or graph_token(server), json=body, status=201)
    return user, password


def create_group(server: "KeyhavenServer", token: _Opt[str] = None, *, prefix: str = "group") -> Dict[str, Any]:
    nick = unique(prefix)
    body = {"displayName": f"Test {nick}", "mailNickname": nick, "mailEnabled": False, "securityEnabled": True}
    return graph_ok(server, "POST", "/groups", token or graph_token(server), json=body, status=201)


def add_member(server: "KeyhavenServer", group_id: str, member_id: str, token: _Opt[str] = None) -> requests.Response:
    return graph(server, "POST", f"/groups/{group_id}/members/$ref", token or graph_token(server),
                 json=directory_object_ref(server, member_id))


def create_application(server: "KeyhavenServer", token: _Opt[str] = None, *, prefix: str = "app") -> Dict[str, Any]:
    return graph_ok(server, "POST", "/applications", token or graph_token(server),
                    json={"displayName": unique(prefix)}, status=201)


def create_service_principal(server: "KeyhavenServer", app_id: str, token: _Opt[str] = None) -> Dict[str, Any]:
    return graph_ok(server, "POST", "/servicePrincipals", token or graph_token(server),
                    json={"appId": app_id}, status=201)


def add_password(server: "KeyhavenServer", app_object_id: str, token: _Opt[str] = None, *,
                 display_name: str = "test", end: _Opt[str] = "2030-01-01T00:00:00Z") -> Dict[str, Any]:
    cred: Dict[str, Any] = {"displayName": display_name}
    if end is not None:
        cred["endDateTime"] = end
    return graph_ok(server, "POST", f"/applications/{app_object_id}/addPassword", token or graph_token(server),
                    json={"passwordCredential": cred}, status=200)


def new_app_with_secret(server: "KeyhavenServer", *, with_sp: bool = True, prefix: str = "app"):
    """An application with one client secret, and (by default) its service
    principal. Returns (application JSON, service principal JSON or None, secretText)."""
    app = create_application(server, prefix=prefix)
    sp = create_service_principal(server, app["appId"]) if with_sp else None
    secret = add_password(server, app["id"])["secretText"]
    return app, sp, secret


# -- certificates and client assertions --------------------------------------

class SelfSignedCert(NamedTuple):
    key: Any            # cryptography RSAPrivateKey
    der: bytes          # the certificate, DER
    pem: bytes          # private key (PKCS#8) followed by the certificate, PEM
    sha1: bytes         # SHA-1 of the DER (x5t)
    sha256: bytes       # SHA-256 of the DER (x5t#S256)

    @property
    def key_b64(self) -> str:
        """The standard base64 of the DER certificate (Graph keyCredential.key)."""
        return base64.b64encode(self.der).decode("ascii")

    def write(self, directory: Path, name: str = "cert.pem") -> Path:
        path = Path(directory) / name
        path.write_bytes(self.pem)
        return path


def self_signed_certificate(common_name: _Opt[str] = None, *, days: int = 365) -> SelfSignedCert:
    """A self-signed RSA-2048 / SHA-256 certificate and its key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name or unique("cert"))])
    now = _dt.datetime.now(_dt.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(days=1))
            .not_valid_after(now + _dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    der = cert.public_bytes(serialization.Encoding.DER)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()) + cert.public_bytes(serialization.Encoding.PEM)
    return SelfSignedCert(key, der, pem, _hashlib.sha1(der).digest(), _hashlib.sha256(der).digest())


def key_credential(cert: SelfSignedCert, display_name: str = "c") -> Dict[str, str]:
    """One entry of PATCH /applications/{id} {"keyCredentials": [...]}."""
    return {"type": "AsymmetricX509Cert", "usage": "Verify", "key": cert.key_b64, "displayName": display_name}


def client_assertion(cert: SelfSignedCert, client_id: str, audience: str, *,
                     thumbprint_of: _Opt[SelfSignedCert] = None, lifetime: int = 600,
                     issued_offset: int = 0, extra: _Opt[Dict[str, Any]] = None) -> str:
    """An RS256 client assertion (RFC 7523) as msal builds it for
    azure-identity's CertificateCredential: header x5t = SHA-1 thumbprint,
    claims aud/iss/sub/jti/iat/nbf/exp. `thumbprint_of` puts another
    certificate's thumbprint in the header (a key/thumbprint mismatch)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    now = int(time.time()) + issued_offset
    header = {"alg": "RS256", "typ": "JWT", "x5t": b64url((thumbprint_of or cert).sha1)}
    payload = {"aud": audience, "iss": client_id, "sub": client_id, "jti": str(uuid.uuid4()),
               "iat": now, "nbf": now, "exp": now + lifetime}
    payload.update(extra or {})
    seg = lambda obj: b64url(json.dumps(obj, separators=(",", ":")).encode())  # noqa: E731
    signing_input = f"{seg(header)}.{seg(payload)}".encode()
    sig = cert.key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input.decode()}.{b64url(sig)}"


# -- raw token requests --------------------------------------------------------

def request_password_token(server: "KeyhavenServer", username: str, password: str, scope: _Opt[str] = None,
                           *, client_id: str = AZURE_CLI_CLIENT_ID) -> requests.Response:
    """Raw ROPC grant, with the body msal sends (scopes decorated with
    openid/profile/offline_access, sorted; client_info=1)."""
    scopes = sorted({scope or server.vault_scope, *OIDC_SCOPES})
    return requests.post(
        server.token_url(),
        data={"client_id": client_id, "grant_type": "password", "client_info": "1",
              "username": username, "password": password, "scope": " ".join(scopes)},
        verify=server.ca_cert, timeout=HTTP_TIMEOUT,
    )


def request_assertion_token(server: "KeyhavenServer", client_id: str, assertion: str,
                            scope: _Opt[str] = None) -> requests.Response:
    """Raw client-credentials grant authenticated with a client assertion."""
    return requests.post(
        server.token_url(),
        data={"client_id": client_id, "grant_type": "client_credentials", "client_info": "1",
              "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
              "client_assertion": assertion, "scope": scope or server.vault_scope},
        verify=server.ca_cert, timeout=HTTP_TIMEOUT,
    )


def assert_oauth_error(resp: requests.Response, status: Union[int, Iterable[int]],
                       error: Union[str, Iterable[str]], aadsts: _Opt[int] = None) -> Dict[str, Any]:
    """Entra's OAuth error: JSON with `error`, `error_description` starting
    `AADSTS<code>:` and `error_codes` [int]; never an access token."""
    statuses = {status} if isinstance(status, int) else set(status)
    errors = {error} if isinstance(error, str) else set(error)
    assert resp.status_code in statuses, (
        f"expected {sorted(statuses)} {sorted(errors)} {aadsts or ''}, got {resp.status_code}: {resp.text[:800]}")
    assert resp.headers.get("Content-Type", "").startswith("application/json"), resp.headers
    body = resp.json()
    assert "access_token" not in body and "id_token" not in body, body
    assert body.get("error") in errors, body
    desc = body.get("error_description")
    codes = body.get("error_codes")
    assert isinstance(desc, str) and desc.startswith("AADSTS"), body
    assert isinstance(codes, list) and codes and all(isinstance(c, int) for c in codes), body
    assert desc.startswith(f"AADSTS{codes[0]}:"), body
    if aadsts is not None:
        assert codes[0] == aadsts, body
    return body


# -- SDK credentials -------------------------------------------------------------

def assume_no_user_realm(server: "KeyhavenServer") -> None:
    """Before a password grant msal GETs
    https://{authority hostname}/common/userrealm/{upn}?api-version=1.0
    (msal 1.39 authority.py:187-201, called from application.py:2084-2086),
    and the hostname there has NO port: Authority.instance comes from
    canonicalize(), which returns urlparse(...).hostname (authority.py:260-274).
    Against Keyhaven on a non-443 port that request goes to login.localhost:443
    and fails, so UsernamePasswordCredential raises before any token request.
    msal remembers a host that answered that request with 404 in the
    class-level set Authority._domains_without_user_realm_discovery
    (authority.py:73, 197-200) and then skips it; we record the authority's
    host there, exactly as if login.localhost:443 had answered 404.
    test_credentials.py exercises the full path (realm discovery on :443
    forwarded to the server) separately."""
    import msal.authority

    msal.authority.Authority._domains_without_user_realm_discovery.add(_urlsplit(server.authority_host).hostname)


def user_credential(server: "KeyhavenServer", username: str, password: str, *, realm_discovery: bool = False,
                    **kwargs):
    """azure-identity's UsernamePasswordCredential as the Azure CLI's client.
    Unless realm_discovery=True, msal's user-realm request (which ignores the
    authority's port) is skipped; see assume_no_user_realm."""
    import warnings
    from azure.identity import UsernamePasswordCredential

    if not realm_discovery:
        assume_no_user_realm(server)
    kw = dict(CLIENT_KWARGS)
    kw.update(kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return UsernamePasswordCredential(
            client_id=AZURE_CLI_CLIENT_ID, username=username, password=password,
            tenant_id=server.tenant_id, authority=server.authority_host,
            disable_instance_discovery=True, **kw)


def certificate_credential(server: "KeyhavenServer", client_id: str, certificate_path: Union[str, Path], **kwargs):
    from azure.identity import CertificateCredential

    kw = dict(CLIENT_KWARGS)
    kw.update(kwargs)
    return CertificateCredential(server.tenant_id, client_id, certificate_path=str(certificate_path),
                                 authority=server.authority_host, disable_instance_discovery=True, **kw)


def app_secret_credential(server: "KeyhavenServer", client_id: str, client_secret: str, **kwargs):
    kw = dict(CLIENT_KWARGS)
    kw.update(kwargs)
    return ClientSecretCredential(server.tenant_id, client_id, client_secret, authority=server.authority_host,
                                  disable_instance_discovery=True, **kw)


# --------------------------------------------------------------------------
# Private servers, the management plane (ARM subset), the IMDS listener,
# external JWTs for workload identity federation, and JWKS verification.
# Used by test_managed_identity.py, test_workload_identity.py,
# test_device_code.py and test_key_rotation.py.
# --------------------------------------------------------------------------

import contextlib as _contextlib  # noqa: E402
import http.client as _http_client  # noqa: E402
from urllib.parse import urlencode as _urlencode  # noqa: E402

# api-versions of the management plane.
ARM_MI_API_VERSION = "2023-01-31"        # Microsoft.ManagedIdentity
ARM_KEYHAVEN_API_VERSION = "2026-01-01"  # Keyhaven.Compute, Keyhaven.Identity
UAMI_TYPE = "Microsoft.ManagedIdentity/userAssignedIdentities"
WORKLOAD_TYPE = "Keyhaven.Compute/workloads"
# The audience Entra requires in a federated credential (and in the external token).
TOKEN_EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"

# Everything azure-identity / msal read to pick a credential or a managed
# identity source (msal managed_identity.py get_managed_identity_source,
# azure-identity ManagedIdentityCredential.__init__, EnvironmentCredential,
# DefaultAzureCredential). Tests clear them and set only what they mean.
IDENTITY_ENV_VARS = (
    "IDENTITY_ENDPOINT", "IDENTITY_HEADER", "IDENTITY_SERVER_THUMBPRINT", "IMDS_ENDPOINT",
    "MSI_ENDPOINT", "MSI_SECRET", "AZUREPS_HOST_ENVIRONMENT", "AZURE_POD_IDENTITY_AUTHORITY_HOST",
    "AZURE_FEDERATED_TOKEN_FILE", "AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH", "AZURE_CLIENT_CERTIFICATE_PASSWORD", "AZURE_USERNAME", "AZURE_PASSWORD",
    "AZURE_AUTHORITY_HOST", "AZURE_TOKEN_CREDENTIALS", "AZURE_REGIONAL_AUTHORITY_NAME",
    "AZURE_KUBERNETES_TOKEN_PROXY", "AZURE_KUBERNETES_SNI_NAME", "AZURE_KUBERNETES_CA_FILE",
    "AZURE_KUBERNETES_CA_DATA",
)


def clear_identity_env(monkeypatch) -> None:
    for var in IDENTITY_ENV_VARS:
        monkeypatch.delenv(var, raising=False)


def trust_server_ca(monkeypatch, server: "KeyhavenServer") -> None:
    """Point requests / azure-core at the server's CA (as conftest's fixtures do)."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", server.ca_cert)
    monkeypatch.setenv("SSL_CERT_FILE", server.ca_cert)


@_contextlib.contextmanager
def running_server(server_cls, store_kind: str, workdir: Path, **kwargs):
    """A private server of `server_cls` (KeyhavenServer or a subclass that adds
    flags), with a fresh data dir and, for postgres, a fresh database. Stopped,
    and the database dropped, however the block ends."""
    pg = PgDatabase().create() if store_kind == "postgres" else None
    srv = None
    try:
        srv = server_cls(store_kind, Path(workdir), pg=pg, **kwargs)
        srv.start()
        yield srv
    finally:
        try:
            if srv is not None:
                srv.stop()
        finally:
            if pg is not None:
                pg.drop()


@_contextlib.contextmanager
def module_server(server_cls, store_kind: str, workdir: Path, **kwargs):
    """running_server plus the CA environment variables for the duration (for
    module-scoped fixtures, which cannot use the function-scoped monkeypatch)."""
    mp = pytest.MonkeyPatch()
    try:
        with running_server(server_cls, store_kind, workdir, **kwargs) as srv:
            trust_server_ca(mp, srv)
            yield srv
    finally:
        mp.undo()


# -- management plane ---------------------------------------------------------

_MGMT_TOKENS: Dict[Tuple[int, str, str], Tuple[str, float]] = {}


def management_token(server: "KeyhavenServer", client_id: _Opt[str] = None,
                     client_secret: _Opt[str] = None) -> str:
    """A management-plane token from the client-credentials grant (the
    bootstrap principal, a directory admin, by default); cached 20 minutes."""
    cid = client_id or server.client_id
    secret = client_secret or server.client_secret
    key = (server.port, cid, secret)
    cached = _MGMT_TOKENS.get(key)
    if cached and cached[1] > time.monotonic():
        return cached[0]
    r = server.request_token(server.management_scope, client_id=cid, client_secret=secret)
    assert r.status_code == 200, f"management token for {cid}: {r.status_code} {r.text[:500]}"
    tok = r.json()["access_token"]
    _MGMT_TOKENS[key] = (tok, time.monotonic() + 20 * 60)
    return tok


def management_resource(server: "KeyhavenServer") -> str:
    """https://management.localhost:PORT (the management scope without /.default)."""
    scope = server.management_scope
    assert scope.endswith("/.default"), scope
    return scope[: -len("/.default")]


def arm(server: "KeyhavenServer", method: str, path: str, token: _Opt[str], json: Any = None, *,
        api_version: _Opt[str] = ARM_MI_API_VERSION, **kwargs) -> requests.Response:
    """Raw management-plane request; `path` starts with "/subscriptions/..." or
    "/providers/...". token=None sends no Authorization header."""
    headers = dict(kwargs.pop("headers", None) or {})
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    params = dict(kwargs.pop("params", None) or {})
    if api_version is not None:
        params["api-version"] = api_version
    return requests.request(method, server.management_url.rstrip("/") + path, headers=headers, params=params,
                            json=json, verify=server.ca_cert, timeout=HTTP_TIMEOUT, **kwargs)


def assert_arm_error(resp: requests.Response, status: int, code: str) -> Dict[str, Any]:
    """ARM's error shape: {"error": {"code", "message"}}."""
    assert resp.status_code == status, (
        f"{resp.request.method} {resp.url}: expected {status} {code}, got {resp.status_code}: {resp.text[:800]}")
    assert resp.headers.get("Content-Type", "").startswith("application/json"), resp.headers
    err = resp.json().get("error")
    assert isinstance(err, dict), resp.text
    assert err.get("code") == code, resp.text
    assert isinstance(err.get("message"), str) and err["message"], resp.text
    return err


def uami_id(server: "KeyhavenServer", name: str, resource_group: _Opt[str] = None) -> str:
    rg = resource_group or server.resource_group
    return (f"/subscriptions/{server.subscription_id}/resourceGroups/{rg}"
            f"/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}")


def workload_id(server: "KeyhavenServer", name: str, resource_group: _Opt[str] = None) -> str:
    rg = resource_group or server.resource_group
    return f"/subscriptions/{server.subscription_id}/resourceGroups/{rg}/providers/Keyhaven.Compute/workloads/{name}"


def put_uami(server: "KeyhavenServer", name: str, token: _Opt[str] = None, *, tags: _Opt[Dict[str, str]] = None,
             resource_group: _Opt[str] = None) -> requests.Response:
    return arm(server, "PUT", uami_id(server, name, resource_group), token or management_token(server),
               json={"location": "local", "tags": tags or {}}, api_version=ARM_MI_API_VERSION)


def create_uami(server: "KeyhavenServer", token: _Opt[str] = None, *, prefix: str = "uami") -> Dict[str, Any]:
    """A new user-assigned identity (201); returns its ARM JSON."""
    return expect_status(put_uami(server, unique(prefix), token), 201).json()


def workload_body(addresses: Iterable[str], *, system_assigned: bool = True,
                  user_assigned: Iterable[str] = ()) -> Dict[str, Any]:
    uamis = list(user_assigned)
    kinds = (["SystemAssigned"] if system_assigned else []) + (["UserAssigned"] if uamis else [])
    identity: Dict[str, Any] = {"type": ", ".join(kinds) or "None"}
    if uamis:
        identity["userAssignedIdentities"] = {rid: {} for rid in uamis}
    return {"location": "local", "properties": {"addresses": list(addresses)}, "identity": identity}


def put_workload(server: "KeyhavenServer", name: str, addresses: Iterable[str], token: _Opt[str] = None, *,
                 system_assigned: bool = True, user_assigned: Iterable[str] = (),
                 resource_group: _Opt[str] = None) -> requests.Response:
    """PUT a Keyhaven.Compute/workloads resource; `user_assigned` are UAMI resource ids."""
    return arm(server, "PUT", workload_id(server, name, resource_group), token or management_token(server),
               json=workload_body(addresses, system_assigned=system_assigned, user_assigned=user_assigned),
               api_version=ARM_KEYHAVEN_API_VERSION)


# -- the IMDS listener (plain HTTP) ----------------------------------------------

class RawResponse(NamedTuple):
    status: int
    headers: Dict[str, str]   # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


def http_get(address: str, path: str, params: _Opt[Dict[str, str]] = None, headers: _Opt[Dict[str, str]] = None,
             *, source: _Opt[str] = None, timeout: float = 15) -> RawResponse:
    """A plain-HTTP GET to `address` ("host:port"), optionally from the local
    source address `source` (any 127.x.y.z works on Linux loopback), so that
    tests can call the IMDS listener as different "machines"."""
    host, _, port = address.rpartition(":")
    conn = _http_client.HTTPConnection(host, int(port), timeout=timeout,
                                       source_address=(source, 0) if source else None)
    try:
        url = path + ("?" + _urlencode(params) if params else "")
        conn.request("GET", url, headers=dict(headers or {}))
        resp = conn.getresponse()
        return RawResponse(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def imds_token(address: str, resource: str, *, metadata: _Opt[str] = "true", source: _Opt[str] = None,
               **selector: str) -> RawResponse:
    """GET /metadata/identity/oauth2/token as an Azure VM's IMDS; `selector`
    is one of client_id=, object_id=, msi_res_id=. metadata=None omits the header."""
    params = {"api-version": "2018-02-01", "resource": resource, **selector}
    headers = {"Metadata": metadata} if metadata is not None else {}
    return http_get(address, "/metadata/identity/oauth2/token", params, headers, source=source)


def app_service_token(address: str, resource: str, *, identity_header: _Opt[str] = "x", source: _Opt[str] = None,
                      **selector: str) -> RawResponse:
    """GET /msi/token as App Service's identity endpoint; `selector` is one of
    client_id=, principal_id=, object_id=, mi_res_id=. identity_header=None omits X-IDENTITY-HEADER."""
    params = {"api-version": "2019-08-01", "resource": resource, **selector}
    headers = {"X-IDENTITY-HEADER": identity_header} if identity_header is not None else {}
    return http_get(address, "/msi/token", params, headers, source=source)


# -- external JWTs (workload identity federation) and JWKs --------------------------

def rsa_private_key(bits: int = 2048):
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def ec_private_key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _int_b64url(value: int, length: _Opt[int] = None) -> str:
    length = length or max(1, (value.bit_length() + 7) // 8)
    return b64url(value.to_bytes(length, "big"))


def public_jwk(private_key, kid: str) -> Dict[str, str]:
    """The public JWK of an RSA (RS256) or EC P-256 (ES256) private key."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    pub = private_key.public_key()
    if isinstance(pub, rsa.RSAPublicKey):
        nums = pub.public_numbers()
        return {"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": _int_b64url(nums.n), "e": _int_b64url(nums.e)}
    if isinstance(pub, ec.EllipticCurvePublicKey):
        nums = pub.public_numbers()
        return {"kty": "EC", "use": "sig", "alg": "ES256", "crv": "P-256", "kid": kid,
                "x": _int_b64url(nums.x, 32), "y": _int_b64url(nums.y, 32)}
    raise TypeError(f"unsupported key {type(private_key).__name__}")


def sign_jwt(private_key, header: Dict[str, Any], payload: Dict[str, Any]) -> str:
    """A compact JWS: RS256 with an RSA key, ES256 (raw r||s) with an EC key.
    header["alg"] defaults to the key's algorithm."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    hdr = dict(header)
    if isinstance(private_key, rsa.RSAPrivateKey):
        hdr.setdefault("alg", "RS256")
    else:
        hdr.setdefault("alg", "ES256")
    seg = lambda obj: b64url(json.dumps(obj, separators=(",", ":")).encode())  # noqa: E731
    signing_input = f"{seg(hdr)}.{seg(payload)}".encode()
    if isinstance(private_key, rsa.RSAPrivateKey):
        sig = private_key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    elif isinstance(private_key, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(private_key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    else:
        raise TypeError(f"unsupported key {type(private_key).__name__}")
    return f"{signing_input.decode()}.{b64url(sig)}"


def external_jwt(private_key, kid: _Opt[str], *, iss: str, sub: str, aud: Any = TOKEN_EXCHANGE_AUDIENCE,
                 lifetime: int = 3600, issued_offset: int = 0, extra: _Opt[Dict[str, Any]] = None,
                 header_extra: _Opt[Dict[str, Any]] = None) -> str:
    """A token as an external identity provider (e.g. a Kubernetes service
    account issuer) signs it: claims iss, sub, aud, iat, nbf, exp, jti.
    kid=None leaves the header without a kid."""
    now = int(time.time()) + issued_offset
    header: Dict[str, Any] = {"typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    header.update(header_extra or {})
    payload = {"iss": iss, "sub": sub, "aud": aud, "iat": now, "nbf": now, "exp": now + lifetime,
               "jti": str(uuid.uuid4())}
    payload.update(extra or {})
    return sign_jwt(private_key, header, payload)


def fetch_jwks(server: "KeyhavenServer") -> Dict[str, Any]:
    """GET {authority}/{tenant}/discovery/v2.0/keys."""
    r = requests.get(f"{server.authority_host}/{server.tenant_id}/discovery/v2.0/keys",
                     verify=server.ca_cert, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, f"JWKS: {r.status_code} {r.text[:300]}"
    body = r.json()
    assert isinstance(body.get("keys"), list), body
    return body


def jwks_kids(jwks: Dict[str, Any]) -> List[str]:
    return [k.get("kid") for k in jwks["keys"]]


def verify_rs256(token: str, jwks: Dict[str, Any]) -> Dict[str, Any]:
    """Verify an RS256 token against the JWKS entry named by its kid; returns
    the claims. Fails the test when the kid is absent or the signature is bad."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicNumbers

    header, payload, signature, signing_input = jwt_parts(token)
    assert header.get("alg") == "RS256", header
    keys = [k for k in jwks["keys"] if k.get("kid") == header.get("kid")]
    assert len(keys) == 1, f"kid {header.get('kid')!r} not exactly once in JWKS {jwks_kids(jwks)}"
    key = keys[0]
    assert key.get("kty") == "RSA", key
    n = int.from_bytes(b64url_decode(key["n"]), "big")
    e = int.from_bytes(b64url_decode(key["e"]), "big")
    try:
        RSAPublicNumbers(e, n).public_key().verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        pytest.fail(f"token with kid {header.get('kid')!r} does not verify against its JWKS key")
    return payload


# --------------------------------------------------------------------------
# Authorization: Azure RBAC (Microsoft.Authorization role definitions and
# assignments on the management plane and on the vault's data plane) and
# vault access policies (Microsoft.KeyVault/vaults). Used by test_rbac.py and
# test_access_policies.py.
# --------------------------------------------------------------------------

from urllib.parse import quote as _quote  # noqa: E402

AUTHZ_API_VERSION = "2022-04-01"         # Microsoft.Authorization (azure-mgmt-authorization 4.0.0's default)
KEYVAULT_ARM_API_VERSION = "2023-07-01"  # Microsoft.KeyVault/vaults
ROLE_DEFINITION_TYPE = "Microsoft.Authorization/roleDefinitions"
ROLE_ASSIGNMENT_TYPE = "Microsoft.Authorization/roleAssignments"
VAULT_TYPE = "Microsoft.KeyVault/vaults"
ACCESS_POLICIES_TYPE = "Microsoft.KeyVault/vaults/accessPolicies"
SECRET_ACTION = "Microsoft.KeyVault/vaults/secrets"  # prefix of the secrets data actions

# Azure's built-in role definitions: role name -> role definition name (GUID).
BUILTIN_ROLES: Dict[str, str] = {
    "Key Vault Administrator": "00482a5a-887f-4fb3-b363-3b7fe8e74483",
    "Key Vault Reader": "21090545-7ca7-4776-b22c-e363652d74d2",
    "Key Vault Secrets Officer": "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",
    "Key Vault Secrets User": "4633458b-17de-408a-b874-0445c86b69e6",
    "Key Vault Crypto Officer": "14b46e9e-c2b7-41b4-b07b-48a6ebf60603",
    "Key Vault Crypto User": "12338af0-0e69-4776-bea7-57ae8d297424",
    "Key Vault Crypto Service Encryption User": "e147488a-f6f5-4113-8e2d-b22465e65bf6",
    "Key Vault Crypto Service Release User": "08bbd89e-9f13-488c-ac41-acfcb10c90ab",
    "Key Vault Certificates Officer": "a4417e6f-fecd-4de8-b567-7b0420556985",
    "Key Vault Certificate User": "db79e9a7-68ee-4b58-9aeb-b90e7c24fcba",
    "Key Vault Contributor": "f25e0fa2-a7c8-4377-a976-54943a77a395",
    "Key Vault Data Access Administrator": "8b54135c-b56d-4d72-a534-26097cfdc8d8",
    "Owner": "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",
    "Contributor": "b24988ac-6180-42a0-ab88-20f7382dd24c",
    "Reader": "acdd72a7-3385-48ef-bd42-f606fba81ae7",
    "Log Analytics Reader": "73c42c96-874c-492b-b04d-ab87d138a893",
    "Log Analytics Contributor": "92aaf0da-9dab-42b6-94a3-d43ce8d16293",
    "User Access Administrator": "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9",
    "Resource Policy Contributor": "36243c78-bf99-498c-9df9-86d9f8d28608",
    "Monitoring Contributor": "749f88d5-cbae-40b8-bcfc-e573ddc772fa",
}


def subscription_scope(server: "KeyhavenServer") -> str:
    return f"/subscriptions/{server.subscription_id}"


def resource_group_scope(server: "KeyhavenServer", resource_group: _Opt[str] = None) -> str:
    return f"{subscription_scope(server)}/resourceGroups/{resource_group or server.resource_group}"


def vault_arm_id(server: "KeyhavenServer", vault: str = "dev") -> str:
    """/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.KeyVault/vaults/{vault}"""
    return f"{resource_group_scope(server)}/providers/Microsoft.KeyVault/vaults/{vault}"


def role_definition_id(server: "KeyhavenServer", role: str) -> str:
    """The full id of a role definition; `role` is a built-in role's name or a GUID."""
    guid = BUILTIN_ROLES.get(role, role)
    return f"{subscription_scope(server)}/providers/{ROLE_DEFINITION_TYPE}/{guid}"


def odata_filter(path: str, expression: str) -> str:
    """`path?$filter=...` encoded as the Azure SDKs send it (%20 for spaces,
    quotes as they are), never with '+' for spaces."""
    return f"{path}?$filter={_quote(expression, safe=chr(39))}"


def authz(server: "KeyhavenServer", method: str, path: str, token: _Opt[str] = None, json: Any = None,
          **kwargs) -> requests.Response:
    """A Microsoft.Authorization (api-version 2022-04-01) request on the
    management plane; the bootstrap principal's token by default."""
    return arm(server, method, path, token or management_token(server), json=json,
               api_version=AUTHZ_API_VERSION, **kwargs)


def role_assignment_body(server: "KeyhavenServer", role: str, principal_id: str,
                         principal_type: str = "ServicePrincipal") -> Dict[str, Any]:
    return {"properties": {"roleDefinitionId": role_definition_id(server, role), "principalId": principal_id,
                           "principalType": principal_type}}


def put_role_assignment(server: "KeyhavenServer", scope: str, role: str, principal_id: str, *,
                        principal_type: str = "ServicePrincipal", token: _Opt[str] = None,
                        name: _Opt[str] = None) -> requests.Response:
    """PUT {scope}/providers/Microsoft.Authorization/roleAssignments/{name} (a new GUID by default)."""
    path = f"{scope}/providers/{ROLE_ASSIGNMENT_TYPE}/{name or uuid.uuid4()}"
    return authz(server, "PUT", path, token, json=role_assignment_body(server, role, principal_id, principal_type))


def assign_role(server: "KeyhavenServer", scope: str, role: str, principal_id: str, *,
                principal_type: str = "ServicePrincipal", token: _Opt[str] = None) -> Dict[str, Any]:
    """A new role assignment (201); returns its JSON."""
    r = put_role_assignment(server, scope, role, principal_id, principal_type=principal_type, token=token)
    return expect_status(r, 201).json()


def delete_role_assignment(server: "KeyhavenServer", assignment_id: str, token: _Opt[str] = None) -> requests.Response:
    """DELETE an assignment by its full id."""
    return authz(server, "DELETE", assignment_id, token)


_VAULT_TOKENS: Dict[Tuple[int, str, str], Tuple[str, float]] = {}


def vault_token(server: "KeyhavenServer", client_id: str, client_secret: str) -> str:
    """A data-plane token from the client-credentials grant; cached 20 minutes."""
    key = (server.port, client_id, client_secret)
    cached = _VAULT_TOKENS.get(key)
    if cached and cached[1] > time.monotonic():
        return cached[0]
    r = server.request_token(server.vault_scope, client_id=client_id, client_secret=client_secret)
    assert r.status_code == 200, f"vault token for {client_id}: {r.status_code} {r.text[:500]}"
    tok = r.json()["access_token"]
    _VAULT_TOKENS[key] = (tok, time.monotonic() + 20 * 60)
    return tok


class AppPrincipal(NamedTuple):
    """A new application with a client secret and its service principal."""
    app: Dict[str, Any]
    sp: Dict[str, Any]
    secret: str

    @property
    def app_id(self) -> str:
        return self.app["appId"]

    @property
    def object_id(self) -> str:
        return self.sp["id"]

    def vault_token(self, server: "KeyhavenServer") -> str:
        return vault_token(server, self.app_id, self.secret)

    def management_token(self, server: "KeyhavenServer") -> str:
        return management_token(server, self.app_id, self.secret)

    def credential(self, server: "KeyhavenServer", **kwargs):
        return app_secret_credential(server, self.app_id, self.secret, **kwargs)


def new_principal(server: "KeyhavenServer", prefix: str = "sp") -> AppPrincipal:
    app, sp, secret = new_app_with_secret(server, prefix=prefix)
    return AppPrincipal(app, sp, secret)


def bootstrap_object_id(server: "KeyhavenServer") -> str:
    return jwt_claims(management_token(server))["oid"]


def remove_member(server: "KeyhavenServer", group_id: str, member_id: str, token: _Opt[str] = None) -> requests.Response:
    return graph(server, "DELETE", f"/groups/{group_id}/members/{member_id}/$ref", token or graph_token(server))


# -- the data plane as a principal sees it ---------------------------------------

def get_secret_as(server: "KeyhavenServer", token: str, name: str) -> requests.Response:
    return server.vault_request("GET", f"/secrets/{name}", token=token)


def set_secret_as(server: "KeyhavenServer", token: str, name: str, value: str = "v") -> requests.Response:
    return server.vault_request("PUT", f"/secrets/{name}", token=token, json={"value": value})


def list_secrets_as(server: "KeyhavenServer", token: str) -> requests.Response:
    return server.vault_request("GET", "/secrets", token=token)


def delete_secret_as(server: "KeyhavenServer", token: str, name: str) -> requests.Response:
    return server.vault_request("DELETE", f"/secrets/{name}", token=token)


def seed_secret(server: "KeyhavenServer", name: _Opt[str] = None, value: _Opt[str] = None) -> Tuple[str, str]:
    """A secret set by the bootstrap principal; returns (name, value)."""
    name = name or unique("seed")
    value = value or f"value-{uuid.uuid4().hex}"
    r = set_secret_as(server, server.token(), name, value)
    assert r.status_code == 200, f"seeding secret {name}: {r.status_code} {r.text[:500]}"
    return name, value


def assert_vault_forbidden(resp: requests.Response, inner_code: str, *mentions: str) -> Dict[str, Any]:
    """The data plane's authorization refusal: 403 {"error": {"code": "Forbidden",
    "message", "innererror": {"code": inner_code}}}; the message mentions each
    of `mentions` (case-insensitively)."""
    assert resp.status_code == 403, (
        f"{resp.request.method} {resp.url}: expected 403 {inner_code}, got {resp.status_code}: {resp.text[:800]}")
    assert resp.headers.get("Content-Type", "").startswith("application/json"), resp.headers
    err = resp.json().get("error")
    assert isinstance(err, dict), resp.text
    assert err.get("code") == "Forbidden", resp.text
    inner = err.get("innererror")
    assert isinstance(inner, dict) and inner.get("code") == inner_code, resp.text
    message = err.get("message")
    assert isinstance(message, str) and message, resp.text
    for m in mentions:
        assert m.lower() in message.lower(), f"403 message does not mention {m!r}: {message!r}"
    return err


def poll_status(send, status: int, timeout: float = 3.0, interval: float = 0.1) -> requests.Response:
    """Call `send()` until it answers `status` or `timeout` seconds pass;
    returns the last response (the caller asserts on it)."""
    deadline = time.monotonic() + timeout
    while True:
        resp = send()
        if resp.status_code == status or time.monotonic() >= deadline:
            return resp
        time.sleep(interval)


# -- vaults and access policies (Microsoft.KeyVault) --------------------------------

def keyvault_arm(server: "KeyhavenServer", method: str, path: str, token: _Opt[str] = None, json: Any = None,
                 **kwargs) -> requests.Response:
    return arm(server, method, path, token or management_token(server), json=json,
               api_version=KEYVAULT_ARM_API_VERSION, **kwargs)


def get_vault(server: "KeyhavenServer", token: _Opt[str] = None, vault: str = "dev") -> Dict[str, Any]:
    return expect_status(keyvault_arm(server, "GET", vault_arm_id(server, vault), token), 200).json()


def patch_vault(server: "KeyhavenServer", properties: Dict[str, Any], token: _Opt[str] = None,
                vault: str = "dev") -> requests.Response:
    return keyvault_arm(server, "PATCH", vault_arm_id(server, vault), token, json={"properties": properties})


def set_rbac_mode(server: "KeyhavenServer", enabled: bool, token: _Opt[str] = None) -> Dict[str, Any]:
    """PATCH enableRbacAuthorization (200); returns the vault JSON."""
    body = expect_status(patch_vault(server, {"enableRbacAuthorization": enabled}, token), 200).json()
    assert body["properties"]["enableRbacAuthorization"] is enabled, body
    return body


def access_policy(server: "KeyhavenServer", object_id: str, *, application_id: _Opt[str] = None,
                  secrets: Iterable[str] = (), keys: Iterable[str] = (), certificates: Iterable[str] = (),
                  storage: Iterable[str] = ()) -> Dict[str, Any]:
    """One access policy entry of this server's tenant."""
    entry: Dict[str, Any] = {
        "tenantId": server.tenant_id,
        "objectId": object_id,
        "permissions": {"keys": list(keys), "secrets": list(secrets), "certificates": list(certificates),
                        "storage": list(storage)},
    }
    if application_id is not None:
        entry["applicationId"] = application_id
    return entry


def update_access_policies(server: "KeyhavenServer", operation: str, policies: List[Dict[str, Any]],
                           token: _Opt[str] = None, vault: str = "dev") -> requests.Response:
    """PUT .../vaults/{vault}/accessPolicies/{add|replace|remove}."""
    return keyvault_arm(server, "PUT", f"{vault_arm_id(server, vault)}/accessPolicies/{operation}", token,
                        json={"properties": {"accessPolicies": policies}})


def policies_for(vault_json: Dict[str, Any], object_id: str, application_id: _Opt[str] = None) -> List[Dict[str, Any]]:
    """The access policy entries of a vault for (objectId, applicationId)."""
    return [p for p in vault_json["properties"].get("accessPolicies") or []
            if p.get("objectId") == object_id and (p.get("applicationId") or None) == application_id]


def lower_set(values: Iterable[str]) -> set:
    return {v.lower() for v in values}
