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

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


