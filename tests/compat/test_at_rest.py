"""Encryption at rest: secret values and the bootstrap client secret must not
be recoverable from what the store keeps on disk (the SQLite files with their
-wal/-shm companions, or a pg_dump of the PostgreSQL database), in raw, hex or
base64 form."""

from __future__ import annotations

import secrets as pysecrets

import pytest

from khcompat import find_leaks, unique


def canary() -> str:
    return "kh-canary-" + pysecrets.token_hex(24)


@pytest.fixture(scope="module")
def canaries(server, client):
    """Secret values in every state the store keeps: live (two versions),
    soft-deleted, restored from a backup, and disabled. Returns
    (values, store snapshot taken before any of them was written)."""
    before = server.store_snapshot()
    values = {}

    live = unique("rest-live")
    values["live-v1"] = canary()
    client.set_secret(live, values["live-v1"])
    values["live-v2"] = canary()
    client.set_secret(live, values["live-v2"], content_type="text/plain")
    client.update_secret_properties(live, tags={"touched": "yes"})

    deleted = unique("rest-del")
    values["soft-deleted"] = canary()
    client.set_secret(deleted, values["soft-deleted"])
    client.begin_delete_secret(deleted).wait(timeout=30)

    restored = unique("rest-restored")
    values["restored"] = canary()
    client.set_secret(restored, values["restored"])
    backup = client.backup_secret(restored)
    client.begin_delete_secret(restored).wait(timeout=30)
    client.purge_deleted_secret(restored)
    client.restore_secret_backup(backup)

    disabled = unique("rest-disabled")
    values["disabled"] = canary()
    client.set_secret(disabled, values["disabled"], enabled=False)

    # Sanity: they are really stored.
    assert client.get_secret(live).value == values["live-v2"]
    assert client.get_secret(restored).value == values["restored"]
    return values, before


def test_store_records_writes(server, canaries):
    """Non-vacuity: the snapshot we search is where the server writes."""
    _, before = canaries
    after = server.store_snapshot()
    assert after != before, "the store snapshot did not change after writing secrets"
    if server.store_kind == "postgres":
        assert b"CREATE TABLE" in after


def test_secret_values_are_not_in_the_store(server, canaries):
    values, _ = canaries
    snapshot = server.store_snapshot()
    leaks = {state: find_leaks(snapshot, v.encode()) for state, v in values.items()}
    assert not any(leaks.values()), f"secret values found in the {server.store_kind} store: {leaks}"


def test_secret_values_are_nowhere_in_the_data_dir(server, canaries):
    values, _ = canaries
    for path in server.data_files():
        data = path.read_bytes()
        for state, v in values.items():
            found = find_leaks(data, v.encode())
            assert not found, f"{state} secret value found in {path} as {found}"


def test_client_secret_is_not_in_the_store(server, canaries):
    snapshot = server.store_snapshot()
    found = find_leaks(snapshot, server.client_secret.encode())
    assert not found, f"bootstrap client_secret found in the {server.store_kind} store as {found}"


def test_secret_values_are_not_logged(server, canaries):
    values, _ = canaries
    logs = server.log_bytes()
    for state, v in values.items():
        assert v.encode() not in logs, f"{state} secret value appears in the server's output"


def test_backup_blob_does_not_reveal_the_value(client, name):
    value = canary()
    client.set_secret(name, value)
    backup = client.backup_secret(name)
    found = find_leaks(backup, value.encode())
    assert not found, f"backup blob contains the secret value as {found}"
