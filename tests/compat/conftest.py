"""Fixtures for the Azure SDK compatibility suite.

Every test runs against a live ``keyhaven serve`` process, once per store
backend: the session-scoped ``store_kind`` fixture is parametrized over
KEYHAVEN_COMPAT_STORES (default "sqlite,postgres"), so each test id ends in
``[sqlite]`` or ``[postgres]``. For postgres a fresh database
``kh_e2e_<random>`` is created and dropped after the server is stopped.

Clients are built exactly as an application builds them:

    cred = ClientSecretCredential(tenant_id, client_id, client_secret,
                                  authority=authority_host,
                                  disable_instance_discovery=True)
    client = SecretClient(vault_url=vault_url, credential=cred)

with REQUESTS_CA_BUNDLE / SSL_CERT_FILE pointing at the server's CA
(bootstrap.json's ca_cert). The only non-default client settings are bounded
timeouts and retries (khcompat.CLIENT_KWARGS), so that a misbehaving server
fails a test quickly instead of hanging it.

Run through ``scripts/compat`` (it sets up the venv and *.localhost name
resolution); KEYHAVEN_BIN must point at a built binary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, List

import pytest

from khcompat import STORES, KeyhavenServer, PgDatabase, live_servers, tail, unique


def _new_server(store_kind: str, workdir: Path) -> KeyhavenServer:
    pg = PgDatabase().create() if store_kind == "postgres" else None
    server = KeyhavenServer(store_kind, workdir, pg=pg)
    try:
        server.start()
    except BaseException:
        if pg is not None:
            pg.drop()
        raise
    return server


def _dispose(server: KeyhavenServer) -> None:
    try:
        server.stop()
    finally:
        if server.pg is not None:
            server.pg.drop()


@pytest.fixture(scope="session", params=STORES)
def store_kind(request) -> str:
    if request.param not in ("sqlite", "postgres"):
        pytest.fail(f"unknown store {request.param!r} in KEYHAVEN_COMPAT_STORES")
    return request.param


@pytest.fixture(scope="session")
def server(store_kind, tmp_path_factory):
    """The shared server for one store kind; the CA env vars point at its CA."""
    srv = _new_server(store_kind, tmp_path_factory.mktemp(f"keyhaven-{store_kind}"))
    mp = pytest.MonkeyPatch()
    mp.setenv("REQUESTS_CA_BUNDLE", srv.ca_cert)
    mp.setenv("SSL_CERT_FILE", srv.ca_cert)
    try:
        yield srv
    finally:
        mp.undo()
        _dispose(srv)


@pytest.fixture
def server_factory(store_kind, tmp_path, monkeypatch) -> Callable[[], KeyhavenServer]:
    """Private servers of the current store kind, each with a fresh data dir
    (and database). The CA env vars point at the most recently started one
    for the duration of the test; all are stopped (and databases dropped)
    afterwards."""
    made: List[KeyhavenServer] = []

    def make() -> KeyhavenServer:
        srv = _new_server(store_kind, tmp_path / f"server{len(made)}")
        made.append(srv)
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", srv.ca_cert)
        monkeypatch.setenv("SSL_CERT_FILE", srv.ca_cert)
        return srv

    yield make
    for srv in made:
        _dispose(srv)


@pytest.fixture(scope="session")
def credential(server):
    cred = server.credential()
    yield cred
    cred.close()


@pytest.fixture(scope="session")
def client(server, credential):
    c = server.secret_client(credential)
    yield c
    c.close()


@pytest.fixture(scope="session")
def token(server) -> str:
    """A valid data-plane access token from a raw client-credentials grant."""
    return server.token(server.vault_scope)


@pytest.fixture
def name() -> str:
    """A fresh, valid secret name."""
    return unique()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On failure, attach the tail of each live server's stderr to the report."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and call.when in ("setup", "call"):
        for s in live_servers():
            report.sections.append((f"keyhaven[{s.store_kind}:{s.port}] stderr (tail)", tail(s.stderr_path, 40)))
