"""Durability and scale-out, for real processes: a crash loop (SIGKILL while
clients write secret versions, restart, every acknowledged write readable and
intact) on SQLite and on PostgreSQL; and two nodes on one PostgreSQL database
(writes on one read on the other, an RBAC change on one enforced on the other
within a second, one node killed mid-load loses nothing and the other keeps
serving, a scheduled job runs once)."""

from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests

from khcompat import (
    HTTP_TIMEOUT,
    KEYHAVEN_BIN,
    KeyhavenServer,
    PgDatabase,
    arm,
    assign_role,
    delete_role_assignment,
    management_token,
    new_app_with_secret,
    running_server,
    trust_server_ca,
    unique,
    vault_token,
)

ROUNDS = int(os.environ.get("KEYHAVEN_CRASH_ROUNDS", "20"))
WRITERS = 4


class Writer(threading.Thread):
    """Writes new versions of one secret until told to stop or the server
    dies; keeps what was acknowledged."""

    def __init__(self, base_url: str, token: str, ca: str, name: str, stop: threading.Event):
        super().__init__(daemon=True)
        self.base, self.token, self.ca, self.name, self.stop_flag = base_url, token, ca, name, stop
        self.acked = []   # (version, value)

    def run(self):
        s = requests.Session()
        i = 0
        while not self.stop_flag.is_set() and i < 100_000:
            value = f"{self.name}-{i}-{random.random()}"
            try:
                r = s.put(f"{self.base}/secrets/{self.name}?api-version=7.5", json={"value": value},
                          headers={"Authorization": f"Bearer {self.token}"}, verify=self.ca, timeout=5)
            except requests.RequestException:
                return
            if r.status_code != 200:
                return
            self.acked.append((r.json()["id"].rsplit("/", 1)[1], value))
            i += 1


def read(base, token, ca, name, version):
    r = requests.get(f"{base}/secrets/{name}/{version}?api-version=7.5", headers={"Authorization": f"Bearer {token}"},
                     verify=ca, timeout=HTTP_TIMEOUT)
    return r.status_code, (r.json().get("value") if r.status_code == 200 else r.text)


def test_sigkill_while_writing_loses_no_acknowledged_write(store_kind, tmp_path, monkeypatch):
    with running_server(KeyhavenServer, store_kind, tmp_path / "srv") as s:
        trust_server_ca(monkeypatch, s)
        all_acked = []
        rng = random.Random(7)
        for round_no in range(ROUNDS):
            token = vault_token(s, s.client_id, s.client_secret)
            stop = threading.Event()
            writers = [Writer(s.vault_url, token, s.ca_cert, f"crash-{w}", stop) for w in range(WRITERS)]
            for w in writers:
                w.start()
            time.sleep(0.3 + rng.random() * 0.5)
            s.proc.kill()           # SIGKILL: no shutdown path runs
            s.proc.wait(timeout=30)
            stop.set()
            for w in writers:
                w.join(timeout=30)
            s.start()
            token = vault_token(s, s.client_id, s.client_secret)
            for w in writers:
                for version, value in w.acked:
                    got = read(s.vault_url, token, s.ca_cert, w.name, version)
                    assert got == (200, value), f"round {round_no}: acknowledged {w.name}/{version} lost: {got}"
                all_acked += [(w.name, v, val) for v, val in w.acked]
        assert len(all_acked) >= ROUNDS, f"too few writes were acknowledged to prove anything: {len(all_acked)}"
        # Everything acknowledged in every round is still there at the end.
        token = vault_token(s, s.client_id, s.client_secret)
        for name, version, value in all_acked:
            assert read(s.vault_url, token, s.ca_cert, name, version) == (200, value)


class SecondNode(KeyhavenServer):
    """A node joining an existing deployment: its bootstrap.json cannot hold
    the bootstrap secret (only the first node ever saw it), so it is taken
    from the first node."""

    inherited_secret = None

    def _load_bootstrap(self, boot):
        boot = dict(boot)
        if not boot.get("client_secret"):
            boot["client_secret"] = self.inherited_secret
        super()._load_bootstrap(boot)


def second_node(first: KeyhavenServer, workdir: Path, cls=None) -> KeyhavenServer:
    """A node sharing the first one's database and master key (and TLS CA)."""
    data = workdir / "data"
    data.mkdir(parents=True)
    shutil.copy2(first.data_dir / "master.key", data / "master.key")
    shutil.copytree(first.data_dir / "tls", data / "tls")
    node = (cls or SecondNode)("postgres", workdir, pg=first.pg)
    node.inherited_secret = first.client_secret
    return node


@pytest.fixture
def two_nodes(tmp_path, monkeypatch):
    """Two nodes on one PostgreSQL database (not parametrized by store: SQLite
    is single-node by design, its lock file refuses a second process)."""
    with running_server(KeyhavenServer, "postgres", tmp_path / "a") as a:
        b = second_node(a, tmp_path / "b").start()
        try:
            trust_server_ca(monkeypatch, a)
            yield a, b
        finally:
            b.stop()


def test_two_nodes_share_one_consistent_vault(two_nodes):
    a, b = two_nodes
    assert a.tenant_id == b.tenant_id and a.client_id == b.client_id
    tok_a = vault_token(a, a.client_id, a.client_secret)
    tok_b = vault_token(b, b.client_id, b.client_secret)
    name = unique("shared")
    r = requests.put(f"{a.vault_url}/secrets/{name}?api-version=7.5", json={"value": "from-a"},
                     headers={"Authorization": f"Bearer {tok_a}"}, verify=a.ca_cert, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text
    version = r.json()["id"].rsplit("/", 1)[1]
    assert read(b.vault_url, tok_b, b.ca_cert, name, version) == (200, "from-a")
    # One signing key set for the deployment: both nodes publish the same
    # JWKS (behind one load balancer they also share the issuer URL, so a
    # token from either is valid on both; here each node has its own port).
    from khcompat import fetch_jwks
    def keyset(node):
        return sorted((k["kid"], k["n"], k["e"]) for k in fetch_jwks(node)["keys"])
    assert keyset(a) == keyset(b)

    # An RBAC change made through A is enforced by B within a second.
    app, sp, secret = new_app_with_secret(a)
    their = vault_token(b, app["appId"], secret)
    assert read(b.vault_url, their, b.ca_cert, name, version)[0] == 403
    vault_id = (f"/subscriptions/{a.subscription_id}/resourceGroups/{a.resource_group}"
                f"/providers/Microsoft.KeyVault/vaults/dev")
    assignment = assign_role(a, vault_id, "Key Vault Secrets User", sp["id"])
    started = time.monotonic()
    while read(b.vault_url, their, b.ca_cert, name, version)[0] != 200:
        assert time.monotonic() - started < 1.0, "B did not see the new assignment within a second"
        time.sleep(0.05)
    delete_role_assignment(a, assignment["id"])
    started = time.monotonic()
    while read(b.vault_url, their, b.ca_cert, name, version)[0] != 403:
        assert time.monotonic() - started < 1.0, "B did not see the removal within a second"
        time.sleep(0.05)


def test_killing_one_node_mid_load_loses_nothing(two_nodes):
    a, b = two_nodes
    stop = threading.Event()
    tok_a = vault_token(a, a.client_id, a.client_secret)
    tok_b = vault_token(b, b.client_id, b.client_secret)
    writers = ([Writer(a.vault_url, tok_a, a.ca_cert, unique("ka"), stop) for _ in range(2)]
               + [Writer(b.vault_url, tok_b, b.ca_cert, unique("kb"), stop) for _ in range(2)])
    for w in writers:
        w.start()
    time.sleep(1.0)
    a.proc.kill()
    a.proc.wait(timeout=30)
    time.sleep(0.5)
    stop.set()
    for w in writers:
        w.join(timeout=30)
    assert all(w.acked for w in writers), "every writer had acknowledged writes before the kill"
    # B holds every write acknowledged by either node, and keeps serving.
    for w in writers:
        for version, value in w.acked:
            assert read(b.vault_url, tok_b, b.ca_cert, w.name, version) == (200, value)
    r = requests.put(f"{b.vault_url}/secrets/{unique('after')}?api-version=7.5", json={"value": "x"},
                     headers={"Authorization": f"Bearer {tok_b}"}, verify=b.ca_cert, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200
    a.start()   # the fixture stops it again


class FastScheduler(KeyhavenServer):
    def command(self):
        return super().command() + ["--scheduler-interval", "1"]


class FastSecondNode(SecondNode):
    def command(self):
        return super().command() + ["--scheduler-interval", "1"]


def test_a_scheduled_job_runs_once_across_two_nodes(tmp_path, monkeypatch):
    """Both nodes run the scheduler every second; a due key lifetime action
    (Notify → a KeyNearExpiry event) is carried out by exactly one of them."""
    import datetime
    from azure.keyvault.keys import KeyClient, KeyRotationLifetimeAction, KeyRotationPolicy, KeyRotationPolicyAction
    from khcompat import CLIENT_KWARGS
    from test_events import Receiver, event_grid, subscribe
    with running_server(FastScheduler, "postgres", tmp_path / "a") as a:
        data = tmp_path / "b" / "data"
        data.mkdir(parents=True)
        shutil.copy2(a.data_dir / "master.key", data / "master.key")
        shutil.copytree(a.data_dir / "tls", data / "tls")
        b = FastSecondNode("postgres", tmp_path / "b", pg=a.pg)
        b.inherited_secret = a.client_secret
        b.start()
        receiver = Receiver()
        try:
            trust_server_ca(monkeypatch, a)
            path, r = subscribe(a, receiver.url, types=["Microsoft.KeyVault.KeyNearExpiry"])
            assert r.status_code == 201, r.text
            keys = KeyClient(a.vault_url, a.credential(), **CLIENT_KWARGS)
            name = unique("once")
            keys.create_ec_key(name, expires_on=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=2))
            keys.update_key_rotation_policy(name, KeyRotationPolicy(), lifetime_actions=[
                KeyRotationLifetimeAction(KeyRotationPolicyAction.notify, time_before_expiry="P30D")])
            receiver.wait_for(lambda e: event_grid(e) and event_grid(e)["subject"] == name, timeout=15)
            time.sleep(3)   # several more passes of both schedulers
            mine = [e for e in receiver.events if event_grid(e) and event_grid(e)["subject"] == name]
            assert len(mine) == 1, f"the action ran {len(mine)} times across two nodes"
        finally:
            receiver.close()
            b.stop()


class SlowRetryNode(KeyhavenServer):
    def command(self):
        return super().command() + ["--event-retry-base-ms", "1500"]


class SlowRetrySecondNode(SecondNode):
    def command(self):
        return super().command() + ["--event-retry-base-ms", "1500"]


def test_an_event_whose_node_died_is_delivered_by_the_node_that_is_alive(store_kind, tmp_path, monkeypatch):
    """The subscriber fails the first delivery; the node that wrote the
    secret is SIGKILLed while the retry waits. The event is still delivered,
    with the same event id: by the other node on PostgreSQL, by the restarted
    node on SQLite (single-node by design)."""
    from azure.keyvault.secrets import SecretClient
    from khcompat import CLIENT_KWARGS
    from test_events import Receiver, event_grid, subscribe
    receiver = Receiver(fail=True)
    with running_server(SlowRetryNode, store_kind, tmp_path / "a") as a:
        b = None
        try:
            trust_server_ca(monkeypatch, a)
            path, r = subscribe(a, receiver.url, types=["Microsoft.KeyVault.SecretNewVersionCreated"])
            assert r.status_code == 201, r.text
            if store_kind == "postgres":
                b = second_node(a, tmp_path / "b", SlowRetrySecondNode).start()
            name = unique("survive")
            SecretClient(a.vault_url, a.credential(), **CLIENT_KWARGS).set_secret(name, "v")
            first = receiver.wait_for(lambda e: event_grid(e) and event_grid(e)["subject"] == name, timeout=15)
            event_id = event_grid(first[0])["id"]
            time.sleep(0.3)   # the failed attempt is settled (a retry due in 1.5 s)
            a.proc.kill()     # SIGKILL: no shutdown path runs
            a.proc.wait(timeout=30)
            receiver.fail = False
            if b is None:
                a.start()
            delivered = len(receiver.events)
            receiver.wait_for(lambda e: e in receiver.events[delivered:] and event_grid(e)
                              and event_grid(e)["subject"] == name, timeout=30)
            mine = [event_grid(e) for e in receiver.events if event_grid(e) and event_grid(e)["subject"] == name]
            assert {e["id"] for e in mine} == {event_id}, "every attempt carries the same event id"
            assert len(mine) >= 2
            node = b or a
            letters = arm(node, "GET", f"{path}/deadLetters", management_token(node),
                          api_version="2026-05-15").json()["value"]
            assert letters == [], letters
        finally:
            receiver.close()
            if b is not None:
                b.stop()


# ---------------------------------------------------------------------------
# Master key rotation, online.

def master_key_ids(node: KeyhavenServer) -> list:
    """Key ids in the node's keyring file, oldest first (the `current` line skipped)."""
    lines = [ln.split() for ln in (node.data_dir / "master.key").read_text().splitlines()
             if ln.strip() and not ln.startswith("#") and not ln.startswith("current ")]
    return [0] if len(lines) == 1 and len(lines[0]) == 1 else [int(ln[0]) for ln in lines]


def wrapped_key_ids(node: KeyhavenServer) -> set:
    """Which master key wraps each vault's data key, read from the store."""
    if node.store_kind == "sqlite":
        db = sqlite3.connect(f"file:{node.data_dir / 'keyhaven.db'}?mode=ro", uri=True)
        try:
            rows = [bytes(r[0]) for r in db.execute("SELECT wrapped_key FROM vaults")]
        finally:
            db.close()
    else:
        out = node.pg._psql("SELECT encode(wrapped_key, 'hex') FROM vaults", db=node.pg.name)
        rows = [bytes.fromhex(x) for x in out.split()]
    ids = set()
    for w in rows:
        if not w:
            continue
        ids.add(0 if w[0] == 1 else int.from_bytes(w[1:5], "big"))
    return ids


def keyhaven_admin(node: KeyhavenServer, command: str) -> subprocess.CompletedProcess:
    args = [KEYHAVEN_BIN, command, "--data-dir", str(node.data_dir)]
    secret = getattr(node, "inherited_secret", None)
    if secret:
        # A joining node's bootstrap.json has no secret: the first node's is used.
        boot = json.loads((node.data_dir / "bootstrap.json").read_text())
        boot["client_secret"] = secret
        path = node.data_dir.parent / "bootstrap-with-secret.json"
        path.write_text(json.dumps(boot))
        path.chmod(0o600)
        args += ["--bootstrap", str(path)]
    return subprocess.run(args, capture_output=True, text=True, timeout=120, env={**os.environ})


def rotate_master_key(node: KeyhavenServer) -> dict:
    out = keyhaven_admin(node, "rotate-master-key")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def wait_for_current_key(node: KeyhavenServer, key_id: int, timeout: float = 15) -> None:
    """Until the node seals with `key_id` (it follows the store every 2 s)."""
    deadline = time.monotonic() + timeout
    while True:
        current = master_key_usage(node)["current"]
        if current == key_id:
            return
        assert time.monotonic() < deadline, f"still sealing with {current}, not {key_id}"
        time.sleep(0.5)


def master_key_usage(node: KeyhavenServer) -> dict:
    out = keyhaven_admin(node, "master-key-usage")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_master_key_rotation_under_load_loses_nothing(store_kind, tmp_path, monkeypatch):
    with running_server(KeyhavenServer, store_kind, tmp_path / "srv") as s:
        trust_server_ca(monkeypatch, s)
        token = vault_token(s, s.client_id, s.client_secret)
        auth = {"Authorization": f"Bearer {token}"}
        # Sealed under the first key: a value and a backup blob of it.
        r = requests.put(f"{s.vault_url}/secrets/before?api-version=7.5", json={"value": "v0"}, headers=auth,
                         verify=s.ca_cert, timeout=HTTP_TIMEOUT)
        assert r.status_code == 200
        blob = requests.post(f"{s.vault_url}/secrets/before/backup?api-version=7.5", headers=auth,
                             verify=s.ca_cert, timeout=HTTP_TIMEOUT).json()["value"]
        assert wrapped_key_ids(s) == {0} and master_key_ids(s) == [0]

        stop = threading.Event()
        writers = [Writer(s.vault_url, token, s.ca_cert, f"mk-{w}", stop) for w in range(WRITERS)]
        for w in writers:
            w.start()
        time.sleep(0.5)
        first = rotate_master_key(s)
        time.sleep(0.3)
        second = rotate_master_key(s)
        time.sleep(0.3)
        stop.set()
        for w in writers:
            w.join(timeout=30)
        assert all(w.is_alive() is False for w in writers)
        acked = [(w.name, v, val) for w in writers for v, val in w.acked]
        writes_during = sum(len(w.acked) for w in writers)
        assert writes_during >= 20, f"too few writes under load to prove anything: {writes_during}"
        k1, k2 = first["keyId"], second["keyId"]
        assert k1 not in (0, k2) and not first["adopted"] and not second["adopted"]
        assert first["vaultKeysRewrapped"] >= 1 and first["signingKeysRewrapped"]
        assert second["vaults"] == first["vaults"]
        assert master_key_ids(s) == [0, k1, k2], "old keys stay so older backups still restore"
        assert wrapped_key_ids(s) == {k2}, "every vault data key is under the current key"
        # What still uses each key: only the current one, so 0 and k1 could
        # be retired once no backup blob needs them.
        usage = master_key_usage(s)
        assert usage["current"] == k2 and usage["unknown"] == []
        by_id = {k["id"]: k for k in usage["keys"]}
        assert list(by_id) == [0, k1, k2] and by_id[k2]["fingerprint"] == second["fingerprint"]
        assert by_id[k2]["vaultKeys"] == second["vaults"] and by_id[k2]["signingKeys"]
        assert by_id[0]["vaultKeys"] == by_id[k1]["vaultKeys"] == 0

        def everything_readable():
            t = vault_token(s, s.client_id, s.client_secret)
            for name, version, value in acked:
                assert read(s.vault_url, t, s.ca_cert, name, version) == (200, value), (name, version)
            return t

        everything_readable()
        # Cold caches: a restarted server unwraps every data key with key 2.
        s.stop()
        s.start()
        t = everything_readable()
        h = {"Authorization": f"Bearer {t}"}
        # A backup sealed under key 0 still restores.
        for path, method in (("secrets/before", "DELETE"), ("deletedsecrets/before", "DELETE")):
            deadline = time.monotonic() + 10
            while True:
                r = requests.request(method, f"{s.vault_url}/{path}?api-version=7.5", headers=h, verify=s.ca_cert,
                                     timeout=HTTP_TIMEOUT)
                if r.status_code in (200, 204) or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert r.status_code in (200, 204), r.text
        r = requests.post(f"{s.vault_url}/secrets/restore?api-version=7.5", json={"value": blob}, headers=h,
                          verify=s.ca_cert, timeout=HTTP_TIMEOUT)
        assert r.status_code == 200, r.text
        assert read(s.vault_url, t, s.ca_cert, "before", "") == (200, "v0")
        # A new vault made after rotation is wrapped under the current key too.
        assert wrapped_key_ids(s) == {k2}


def test_master_key_rotation_reaches_the_other_node(two_nodes):
    """Two nodes share the database and (copied) keyring file. The operator
    gives every node the new key first — `keyhaven rotate-master-key` on A
    writes it, the file is copied to B — and B, meeting data wrapped under
    a key it has not used yet, re-reads its file."""
    a, b = two_nodes
    token = vault_token(a, a.client_id, a.client_secret)
    auth = {"Authorization": f"Bearer {token}"}
    r = requests.put(f"{a.vault_url}/secrets/shared?api-version=7.5", json={"value": "one"}, headers=auth,
                     verify=a.ca_cert, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200
    rotated = rotate_master_key(a)
    k = rotated["keyId"]
    assert k != 0 and not rotated["adopted"]
    # The same rotation retried through a load balancer reaches B, which
    # does not hold A's new key: refused (it must not make a rival key 1,
    # which would leave half the vaults under a key the other node lacks).
    out = keyhaven_admin(b, "rotate-master-key")
    assert out.returncode != 0 and "not in this node's master.key" in out.stderr, (out.stdout, out.stderr)
    assert master_key_ids(b) == [0], "the refused node made no key"
    shutil.copy2(a.data_dir / "master.key", b.data_dir / "master.key")
    # Given the file, B follows the store to A's key by itself.
    wait_for_current_key(b, k)
    # A vault made on A now is wrapped under key k; B, still running with the
    # keyring it started with, meets key k and re-reads its file.
    name = unique("mk")[:24]
    path = (f"/subscriptions/{a.subscription_id}/resourceGroups/{a.resource_group}"
            f"/providers/Microsoft.KeyVault/vaults/{name}")
    body = {"location": "local", "properties": {"tenantId": a.tenant_id, "sku": {"family": "A", "name": "standard"},
                                                "enableRbacAuthorization": True}}
    r = arm(a, "PUT", path, management_token(a), body, api_version="2023-07-01")
    assert r.status_code in (200, 201), r.text
    assert wrapped_key_ids(a) == {k}
    fresh_b = b.vault_url_for(name).rstrip("/")
    tb = vault_token(b, a.client_id, a.client_secret)
    hb = {"Authorization": f"Bearer {tb}"}
    r = requests.put(f"{fresh_b}/secrets/new?api-version=7.5", json={"value": "under key 1"}, headers=hb,
                     verify=b.ca_cert, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text
    assert read(a.vault_url_for(name).rstrip("/"), token, a.ca_cert, "new", "")[1] == "under key 1"
    assert read(b.vault_url, tb, b.ca_cert, "shared", "")[1] == "one"
    # B, caught up, rotates for real; A then lacks B's key and refuses to
    # make a rival one; given B's file, A adopts B's key instead.
    on_b = rotate_master_key(b)
    k2 = on_b["keyId"]
    assert k2 not in (0, k) and not on_b["adopted"] and wrapped_key_ids(a) == {k2}
    out = keyhaven_admin(a, "rotate-master-key")
    assert out.returncode != 0 and "not in this node's master.key" in out.stderr, (out.stdout, out.stderr)
    shutil.copy2(b.data_dir / "master.key", a.data_dir / "master.key")
    wait_for_current_key(a, k2)
    usage = master_key_usage(a)
    assert [k["id"] for k in usage["keys"]] == [0, k, k2] and wrapped_key_ids(a) == {k2}
    assert next(x for x in usage["keys"] if x["id"] == k2)["fingerprint"] == on_b["fingerprint"]
    assert read(a.vault_url_for(name).rstrip("/"), token, a.ca_cert, "new", "")[1] == "under key 1"


# ---------------------------------------------------------------------------
# Integrity check.

def keyhaven_check(node: KeyhavenServer):
    out = subprocess.run([KEYHAVEN_BIN, "check", "--data-dir", str(node.data_dir)],
                         capture_output=True, text=True, timeout=120, env={**os.environ})
    return out.returncode, json.loads(out.stdout) if out.stdout.strip() else out.stderr


def alter_payload(node: KeyhavenServer, name: str, version: str) -> None:
    """Flips one byte of a stored version's sealed payload, behind Keyhaven's back."""
    if node.store_kind == "sqlite":
        db = sqlite3.connect(str(node.data_dir / "keyhaven.db"), timeout=10)
        try:
            (payload,) = db.execute("SELECT payload FROM versions WHERE name_lower = ? AND version = ?",
                                    (name, version)).fetchone()
            payload = bytearray(payload)
            payload[20] ^= 0x01
            db.execute("UPDATE versions SET payload = ? WHERE name_lower = ? AND version = ?",
                       (bytes(payload), name, version))
            db.commit()
        finally:
            db.close()
    else:
        node.pg._psql(f"UPDATE versions SET payload = set_byte(payload, 20, get_byte(payload, 20) # 1) "
                      f"WHERE name_lower = '{name}' AND version = '{version}'", db=node.pg.name)


def test_the_integrity_check_finds_exactly_the_altered_version(store_kind, tmp_path, monkeypatch):
    with running_server(KeyhavenServer, store_kind, tmp_path / "srv") as s:
        trust_server_ca(monkeypatch, s)
        h = {"Authorization": f"Bearer {vault_token(s, s.client_id, s.client_secret)}"}
        versions = {}
        for name, value in (("alpha", "1"), ("beta", "1"), ("beta", "2"), ("gone", "x")):
            r = requests.put(f"{s.vault_url}/secrets/{name}?api-version=7.5", json={"value": value}, headers=h,
                             verify=s.ca_cert, timeout=HTTP_TIMEOUT)
            assert r.status_code == 200, r.text
            versions.setdefault(name, []).append(r.json()["id"].rsplit("/", 1)[1])
        r = requests.post(f"{s.vault_url}/keys/signer/create?api-version=7.5", json={"kty": "EC"}, headers=h,
                          verify=s.ca_cert, timeout=HTTP_TIMEOUT)
        assert r.status_code == 200, r.text
        r = requests.delete(f"{s.vault_url}/secrets/gone?api-version=7.5", headers=h, verify=s.ca_cert,
                            timeout=HTTP_TIMEOUT)
        assert r.status_code == 200, r.text

        rc, report = keyhaven_check(s)
        assert rc == 0 and report["problemCount"] == 0, report
        assert report["versions"] >= 5 and report["objects"] >= 4, report
        assert report["auditLog"]["intact"] is True and report["auditLog"]["records"] > 0

        alter_payload(s, "beta", versions["beta"][0])
        alter_payload(s, "gone", versions["gone"][0])
        rc, report = keyhaven_check(s)
        assert rc == 1 and report["problemCount"] == 2, report
        listed = "\n".join(report["problems"])
        assert f"/secret/beta/{versions['beta'][0]}:" in listed and f"/secret/gone/{versions['gone'][0]}:" in listed
        assert versions["beta"][1] not in listed and "alpha" not in listed
        assert "1" not in {p.rsplit(": ", 1)[-1] for p in report["problems"]}, "no values in the report"
        # After a restart (no cached copy), the altered version is refused when
        # read and the intact one still reads.
        s.stop()
        s.start()
        h = {"Authorization": f"Bearer {vault_token(s, s.client_id, s.client_secret)}"}
        r = requests.get(f"{s.vault_url}/secrets/beta/{versions['beta'][0]}?api-version=7.5", headers=h,
                         verify=s.ca_cert, timeout=HTTP_TIMEOUT)
        assert r.status_code == 500 and "secret" not in r.text.lower().replace("internalservererror", "")
        assert read(s.vault_url, h["Authorization"].split()[1], s.ca_cert, "beta", versions["beta"][1]) == (200, "2")


# ---------------------------------------------------------------------------
# Deployment backup and restore.

PASSPHRASE = "a long enough backup passphrase"


def deployment_cmd(node_data: Path, *args, store=None, passphrase=PASSPHRASE):
    env = {**os.environ, "KEYHAVEN_BACKUP_PASSPHRASE": passphrase}
    env.pop("KEYHAVEN_STORE", None)
    cmd = [KEYHAVEN_BIN, *args, "--data-dir", str(node_data)]
    if store:
        cmd += ["--store", store]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


def test_a_backup_whose_keyring_cannot_open_its_vaults_is_refused(store_kind, tmp_path, monkeypatch):
    """Issue 29, item 8: the master key was rotated with a key this data
    directory's master.key lacks (as on a node the new file never reached);
    an archive of it could never be restored, so the backup refuses."""
    with running_server(KeyhavenServer, store_kind, tmp_path / "srv") as s:
        trust_server_ca(monkeypatch, s)
        before = (s.data_dir / "master.key").read_bytes()
        k = rotate_master_key(s)["keyId"]
        after = (s.data_dir / "master.key").read_bytes()
        store = s.pg.url if s.pg else None
        (s.data_dir / "master.key").write_bytes(before)
        archive = tmp_path / "lagging.khbackup"
        out = deployment_cmd(s.data_dir, "backup", "--out", str(archive), store=store)
        assert out.returncode != 0 and f"current master key ({k} " in out.stderr, (out.stdout, out.stderr)
        assert "not in the master keyring" in out.stderr and not archive.exists()
        (s.data_dir / "master.key").write_bytes(after)
        out = deployment_cmd(s.data_dir, "backup", "--out", str(archive), store=store)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["vaults"] >= 1


def test_a_deployment_backup_taken_under_load_restores_into_a_new_deployment(store_kind, tmp_path, monkeypatch):
    archive = tmp_path / "deployment.khbackup"
    target_db = PgDatabase().create() if store_kind == "postgres" else None
    try:
        with running_server(KeyhavenServer, store_kind, tmp_path / "a") as a:
            trust_server_ca(monkeypatch, a)
            token = vault_token(a, a.client_id, a.client_secret)
            h = {"Authorization": f"Bearer {token}"}
            before = {}
            for i in range(10):
                r = requests.put(f"{a.vault_url}/secrets/b{i}?api-version=7.5", json={"value": f"value-{i}"},
                                 headers=h, verify=a.ca_cert, timeout=HTTP_TIMEOUT)
                assert r.status_code == 200
                before[f"b{i}"] = f"value-{i}"
            key = requests.post(f"{a.vault_url}/keys/signer/create?api-version=7.5", json={"kty": "EC"}, headers=h,
                                verify=a.ca_cert, timeout=HTTP_TIMEOUT).json()["key"]
            # The snapshot is taken while four writers keep writing.
            stop = threading.Event()
            writers = [Writer(a.vault_url, token, a.ca_cert, f"bk-{w}", stop) for w in range(WRITERS)]
            for w in writers:
                w.start()
            time.sleep(0.3)
            out = deployment_cmd(a.data_dir, "backup", "--out", str(archive),
                                 store=a.pg.url if a.pg else None)
            stop.set()
            for w in writers:
                w.join(timeout=30)
            assert out.returncode == 0, out.stderr
            assert json.loads(out.stdout)["snapshotBytes"] > 0
            assert sum(len(w.acked) for w in writers) > 0, "writes went on during the backup"
            raw = archive.read_bytes()
            assert raw.startswith(b"KHARCHIVE1\n") and b"value-3" not in raw and b"BEGIN" not in raw
            assert (a.data_dir / "master.key").read_text().split()[-1].encode() not in raw
            assert oct(archive.stat().st_mode & 0o777) == "0o600"
            client_secret, client_id = a.client_secret, a.client_id

        # Wrong passphrase, an altered archive and a cut one restore nothing.
        bad = [("wrong passphrase", archive, "another long passphrase")]
        altered = tmp_path / "altered"
        data = bytearray(raw)
        data[len(data) // 2] ^= 1
        altered.write_bytes(bytes(data))
        cut = tmp_path / "cut"
        cut.write_bytes(raw[: len(raw) - 100])
        bad += [("altered", altered, PASSPHRASE), ("cut", cut, PASSPHRASE)]
        for what, path, pw in bad:
            target = tmp_path / f"bad-{what.replace(' ', '-')}"
            out = deployment_cmd(target, "restore", "--in", str(path), passphrase=pw,
                                 store=target_db.url if target_db else None)
            assert out.returncode != 0 and "does not open" in out.stderr, (what, out.stderr)
            assert not (target / "master.key").exists() and not (target / "keyhaven.db").exists()

        restored = tmp_path / "b" / "data"
        out = deployment_cmd(restored, "restore", "--in", str(archive), store=target_db.url if target_db else None)
        assert out.returncode == 0, out.stderr
        again = deployment_cmd(restored, "restore", "--in", str(archive), store=target_db.url if target_db else None)
        assert again.returncode != 0 and ("already holds" in again.stderr or "not empty" in again.stderr)

        b = SecondNode(store_kind, tmp_path / "b", pg=target_db)
        b.inherited_secret = client_secret
        b.start()
        try:
            trust_server_ca(monkeypatch, b)
            assert b.client_id == client_id
            tb = vault_token(b, b.client_id, client_secret)
            for name, value in before.items():
                assert read(b.vault_url, tb, b.ca_cert, name, "") == (200, value)
            # The key came along with its private half: it signs as before.
            digest = "A" * 43
            r = requests.post(f"{b.vault_url}/keys/signer/sign?api-version=7.5", json={"alg": "ES256", "value": digest},
                              headers={"Authorization": f"Bearer {tb}"}, verify=b.ca_cert, timeout=HTTP_TIMEOUT)
            assert r.status_code == 200, r.text
            r = requests.post(f"{b.vault_url}/keys/signer/verify?api-version=7.5",
                              json={"alg": "ES256", "digest": digest, "value": r.json()["value"]},
                              headers={"Authorization": f"Bearer {tb}"}, verify=b.ca_cert, timeout=HTTP_TIMEOUT)
            assert r.json()["value"] is True
            got = requests.get(f"{b.vault_url}/keys/signer?api-version=7.5", headers={"Authorization": f"Bearer {tb}"},
                               verify=b.ca_cert, timeout=HTTP_TIMEOUT).json()["key"]
            assert (got["x"], got["y"]) == (key["x"], key["y"])
            # Everything restored authenticates (the restored node's
            # bootstrap.json holds no client secret, so the check is called
            # with the original one).
            r = arm(b, "POST", "/providers/Keyhaven.Security/checkIntegrity",
                    management_token(b, b.client_id, client_secret))
            assert r.status_code == 200, r.text
            report = r.json()
            assert report["problemCount"] == 0 and report["versions"] >= 11, report
        finally:
            b.stop()
    finally:
        if target_db is not None:
            target_db.drop()


# ---------------------------------------------------------------------------
# One service limit across nodes.

class LimitedNode(KeyhavenServer):
    def command(self):
        return super().command() + ["--limit-secrets", "40"]


class LimitedSecondNode(SecondNode):
    def command(self):
        return super().command() + ["--limit-secrets", "40"]


def test_two_nodes_share_one_service_limit(tmp_path, monkeypatch):
    """A vault allows 40 secret transactions per 10 s here. 30 through node
    A, then 30 through node B: B admits only what is left of the 40."""
    with running_server(LimitedNode, "postgres", tmp_path / "a") as a:
        b = second_node(a, tmp_path / "b", LimitedSecondNode).start()
        try:
            trust_server_ca(monkeypatch, a)
            ta = vault_token(a, a.client_id, a.client_secret)
            tb = vault_token(b, a.client_id, a.client_secret)
            r = requests.put(f"{a.vault_url}/secrets/limited?api-version=7.5", json={"value": "v"},
                             headers={"Authorization": f"Bearer {ta}"}, verify=a.ca_cert, timeout=HTTP_TIMEOUT)
            assert r.status_code == 200
            # Start right after a 10-second window begins, so both bursts fall in one.
            deadline = time.monotonic() + 12
            while time.time() % 10 > 0.5 and time.monotonic() < deadline:
                time.sleep(0.05)

            def burst(node, token, n):
                s = requests.Session()
                codes = []
                for _ in range(n):
                    r = s.get(f"{node.vault_url}/secrets/limited?api-version=7.5",
                              headers={"Authorization": f"Bearer {token}"}, verify=node.ca_cert, timeout=HTTP_TIMEOUT)
                    codes.append((r.status_code, r.headers.get("Retry-After")))
                return codes

            on_a = burst(a, ta, 30)
            assert all(c == 200 for c, _ in on_a), on_a
            time.sleep(0.8)  # a few sharing rounds
            on_b = burst(b, tb, 30)
            admitted = sum(1 for c, _ in on_b if c == 200)
            refused = [ra for c, ra in on_b if c == 429]
            assert admitted <= 10, f"node B admitted {admitted}: the limit is per vault, not per node"
            assert len(refused) >= 20 and all(ra and int(ra) >= 1 for ra in refused), on_b
            assert time.time() % 10 < 9.5, "the bursts stayed in one window"
        finally:
            b.stop()


# ---------------------------------------------------------------------------
# PostgreSQL restarted under write load.

class PrivatePostgres:
    """A PostgreSQL cluster of this test's own (initdb in a temporary
    directory, run as the postgres user on a free loopback port), so it can
    be restarted without touching the shared server."""

    def __init__(self):
        import tempfile
        from khcompat import free_port
        self.dir = Path(tempfile.mkdtemp(prefix="kh-pg-", dir="/tmp"))
        shutil.chown(self.dir, "postgres", "postgres")
        self.port = free_port()
        self.name = "kh"
        self._as_postgres("initdb", "-D", str(self.dir / "data"), "-A", "trust", "-U", "root", "--no-sync")
        self.start()
        subprocess.run(["createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "root", self.name],
                       check=True, capture_output=True, timeout=60)

    @property
    def url(self) -> str:
        return f"postgres://root@127.0.0.1:{self.port}/{self.name}"

    def _as_postgres(self, *cmd):
        out = subprocess.run(["runuser", "-u", "postgres", "--", *cmd], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, (cmd, out.stdout, out.stderr)

    def _ctl(self, *args):
        opts = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir}"
        self._as_postgres("pg_ctl", "-D", str(self.dir / "data"), "-l", str(self.dir / "log"), "-o", opts, "-w",
                          *args)

    def start(self):
        self._ctl("start")

    def crash_restart(self):
        """Stops at once (no shutdown checkpoint: like a crash) and starts."""
        self._ctl("-m", "immediate", "stop")
        self.start()

    def destroy(self):
        try:
            self._ctl("-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


class PersistentWriter(threading.Thread):
    """Writes new versions of one secret until told to stop, through errors
    (which it counts); keeps what was acknowledged and when."""

    def __init__(self, base_url: str, token: str, ca: str, name: str, stop: threading.Event):
        super().__init__(daemon=True)
        self.base, self.token, self.ca, self.name, self.stop_flag = base_url, token, ca, name, stop
        self.acked = []   # (time, version, value)
        self.failed = 0

    def run(self):
        s = requests.Session()
        i = 0
        while not self.stop_flag.is_set() and i < 20_000:
            value = f"{self.name}-{i}-{random.random()}"
            i += 1
            try:
                r = s.put(f"{self.base}/secrets/{self.name}?api-version=7.5", json={"value": value},
                          headers={"Authorization": f"Bearer {self.token}"}, verify=self.ca, timeout=10)
            except requests.RequestException:
                self.failed += 1
                time.sleep(0.05)
                continue
            if r.status_code == 200:
                self.acked.append((time.monotonic(), r.json()["id"].rsplit("/", 1)[1], value))
            else:
                self.failed += 1
                time.sleep(0.05)


def test_a_postgresql_restart_under_write_load_loses_nothing(tmp_path, monkeypatch):
    """Issue 29: PostgreSQL crashes and restarts while four clients add
    secret versions. Every acknowledged version reads back, writes succeed
    again after the restart, and no value is stored twice (Keyhaven never
    retries a commit that may have landed)."""
    pg = PrivatePostgres()
    try:
        s = KeyhavenServer("postgres", tmp_path / "srv", pg=pg)
        s.start()
        try:
            trust_server_ca(monkeypatch, s)
            token = vault_token(s, s.client_id, s.client_secret)
            stop = threading.Event()
            writers = [PersistentWriter(s.vault_url, token, s.ca_cert, f"pgr-{w}", stop) for w in range(WRITERS)]
            for w in writers:
                w.start()
            time.sleep(1.0)
            restarted_at = time.monotonic()
            pg.crash_restart()
            back_at = time.monotonic()
            # Writes land again within a bounded time after the restart.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not all(
                    any(t > back_at for t, _, _ in w.acked) for w in writers):
                time.sleep(0.2)
            time.sleep(0.5)
            stop.set()
            for w in writers:
                w.join(timeout=30)
            for w in writers:
                assert any(t < restarted_at for t, _, _ in w.acked), f"{w.name}: no write before the restart"
                assert any(t > back_at for t, _, _ in w.acked), f"{w.name}: no write after the restart"
            token = vault_token(s, s.client_id, s.client_secret)
            auth = {"Authorization": f"Bearer {token}"}
            for w in writers:
                for _, version, value in w.acked:
                    assert read(s.vault_url, token, s.ca_cert, w.name, version) == (200, value), (w.name, version)
                # Every stored version's value is distinct: nothing committed twice.
                versions, url = [], f"{s.vault_url}/secrets/{w.name}/versions?api-version=7.5&maxresults=25"
                for _ in range(2000):
                    page = requests.get(url, headers=auth, verify=s.ca_cert, timeout=HTTP_TIMEOUT).json()
                    versions += [v["id"].rsplit("/", 1)[1] for v in page["value"]]
                    url = page.get("nextLink")
                    if not url:
                        break
                assert len(versions) >= len(w.acked)
                values = [read(s.vault_url, token, s.ca_cert, w.name, v)[1] for v in versions]
                assert len(values) == len(set(values)), f"{w.name}: a value was stored twice"
            print(f"acked {sum(len(w.acked) for w in writers)}, failed {sum(w.failed for w in writers)} "
                  f"across the restart")
        finally:
            s.stop()
    finally:
        pg.destroy()


def test_two_nodes_metrics_add_up(two_nodes):
    """Azure Monitor's metrics of a vault are the deployment's: requests
    served by node A and by node B add up, asked of either node."""
    a, b = two_nodes
    ta = vault_token(a, a.client_id, a.client_secret)
    tb = vault_token(b, a.client_id, a.client_secret)
    name = f"metric-{uuid.uuid4().hex[:8]}"
    r = requests.put(f"{a.vault_url}/secrets/{name}?api-version=7.5", json={"value": "v"},
                     headers={"Authorization": f"Bearer {ta}"}, verify=a.ca_cert, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text
    for node, token, n in ((a, ta, 3), (b, tb, 2)):
        for _ in range(n):
            r = requests.get(f"{node.vault_url}/secrets/{name}?api-version=7.5",
                             headers={"Authorization": f"Bearer {token}"}, verify=node.ca_cert, timeout=HTTP_TIMEOUT)
            assert r.status_code == 200
    vault = f"/subscriptions/{a.subscription_id}/resourceGroups/{a.resource_group}/providers/Microsoft.KeyVault/vaults/dev"
    deadline = time.monotonic() + 30
    while True:
        counts = []
        for node in (a, b):
            got = arm(node, "GET", f"{vault}/providers/Microsoft.Insights/metrics", management_token(node),
                      api_version="2018-01-01", params={"metricnames": "ServiceApiHit", "aggregation": "Count",
                                                        "$filter": "ActivityName eq 'SecretGet'"}).json()
            counts.append(sum(p["count"] for ts in got["value"][0]["timeseries"] for p in ts["data"]))
        if counts == [5, 5]:
            break
        assert time.monotonic() < deadline, counts
        time.sleep(0.5)
