"""Restart: stop the server and start it again on the same data dir, store and
port. Uses a private server (server_factory), not the shared one."""

from __future__ import annotations

from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError

from khcompat import unique


def test_restart_keeps_credentials_and_secrets(server_factory):
    srv = server_factory()
    boot_before = dict(srv.bootstrap)
    ca_before = Path(srv.ca_cert).read_bytes()

    cred = srv.credential()
    client = srv.secret_client(cred)
    a, b, d = unique("rs-a"), unique("rs-b"), unique("rs-d")
    va1 = client.set_secret(a, "alpha-1").properties.version
    va2 = client.set_secret(a, "alpha-2", content_type="text/plain", tags={"k": "v"}).properties.version
    client.set_secret(b, "beta", enabled=False)
    client.set_secret(d, "delta")
    client.begin_delete_secret(d).wait(timeout=30)
    client.close()
    cred.close()

    srv.restart()

    assert srv.bootstrap == boot_before, "bootstrap.json changed across a restart"
    assert Path(srv.ca_cert).read_bytes() == ca_before, "the CA changed across a restart: clients pin it"

    # A fresh application start with the same bootstrap credentials.
    cred = srv.credential()
    client = srv.secret_client(cred)
    try:
        got = client.get_secret(a)
        assert got.value == "alpha-2" and got.properties.version == va2
        assert got.properties.content_type == "text/plain" and got.properties.tags == {"k": "v"}
        assert client.get_secret(a, va1).value == "alpha-1"
        assert sorted(p.version for p in client.list_properties_of_secret_versions(a)) == sorted([va1, va2])

        with pytest.raises(HttpResponseError) as info:
            client.get_secret(b)
        assert info.value.status_code == 403

        assert client.get_deleted_secret(d).name == d
        client.begin_recover_deleted_secret(d).wait(timeout=30)
        assert client.get_secret(d).value == "delta"

        c = unique("rs-c")
        assert client.set_secret(c, "gamma").value == "gamma"
        assert {a, b, c, d} <= {p.name for p in client.list_properties_of_secrets()}
    finally:
        client.close()
        cred.close()


def test_running_client_survives_a_restart(server_factory):
    """A long-running application keeps its SecretClient (with its cached token
    and challenge) across a server restart: tokens issued before the restart
    must still be accepted, i.e. the signing key persists."""
    srv = server_factory()
    cred = srv.credential()
    client = srv.secret_client(cred)
    n = unique("rs")
    try:
        client.set_secret(n, "before")
        raw_token = srv.token(srv.vault_scope)

        srv.restart()

        r = srv.vault_request("GET", f"/secrets/{n}", token=raw_token)
        assert r.status_code == 200, f"pre-restart token refused: {r.status_code} {r.text[:300]}"
        assert client.get_secret(n).value == "before"
        client.set_secret(n, "after")
        assert client.get_secret(n).value == "after"
    finally:
        client.close()
        cred.close()


def test_a_store_with_vaults_is_never_given_a_new_master_key(server_factory):
    """Issue 29, item 10: a data directory whose master.key is gone (a
    restore that stopped half-way, a mis-pointed --store) used to start with a
    new key that opens none of the vaults; now serve refuses and says why."""
    import subprocess
    srv = server_factory()
    srv.stop()
    key = srv.data_dir / "master.key"
    saved = key.read_bytes()
    key.unlink()
    out = subprocess.run(srv.command(), capture_output=True, text=True, timeout=60,
                         stdin=subprocess.DEVNULL)
    assert out.returncode != 0, out.stdout[-2000:]
    assert "master.key is missing but the store already holds vaults" in out.stderr + out.stdout, \
        (out.stderr + out.stdout)[-2000:]
    assert not key.exists(), "no new master key was written"
    key.write_bytes(saved)
    key.chmod(0o600)
    srv.start()
    assert srv.running
