"""The secret lifecycle, driven through azure-keyvault-secrets' SecretClient
exactly as an application uses it (public API only).

Error mapping in azure-keyvault-secrets 4.12.0 (from its generated
operations): 401 -> ClientAuthenticationError, 404 -> ResourceNotFoundError,
409 -> ResourceExistsError, anything else -> HttpResponseError, whose
``.error.code`` is parsed from ``{"error": {"code": ..., "message": ...}}``.
The SDK does no client-side validation of secret names (its serializer has
client_side_validation=False), so invalid names reach the server.
"""

from __future__ import annotations

import re
import secrets as pysecrets
import string
import threading
from datetime import datetime, timedelta, timezone

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError

from khcompat import unique

VERSION_RE = re.compile(r"[0-9a-f]{32}")
MAX_VALUE_BYTES = 25 * 1024  # 25600


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def assert_recent(when: datetime, slack: timedelta = timedelta(minutes=5)) -> None:
    assert when is not None
    assert when.tzinfo is not None, f"{when!r} is not timezone-aware"
    assert abs(datetime.now(timezone.utc) - when) < slack, f"{when} is not close to now"


def status_of(exc: HttpResponseError) -> int:
    return exc.status_code if exc.status_code is not None else exc.response.status_code


def error_code(exc: HttpResponseError):
    return exc.error.code if exc.error is not None else None


# ---------------------------------------------------------------------------
# set / get
# ---------------------------------------------------------------------------

def test_set_then_get_latest_and_by_version(client, server, name):
    s1 = client.set_secret(name, "first value")
    s2 = client.set_secret(name, "second value", content_type="text/plain", tags={"env": "compat"})

    assert s1.name == name and s2.name == name
    assert s1.value == "first value" and s2.value == "second value"
    v1, v2 = s1.properties.version, s2.properties.version
    assert v1 != v2
    for v in (v1, v2):
        assert VERSION_RE.fullmatch(v), f"version {v!r} is not 32 lowercase hex digits like Azure's"
    assert s2.id == f"{server.vault_url}/secrets/{name}/{v2}"
    assert s2.properties.vault_url == server.vault_url
    assert s2.properties.enabled is True
    assert s2.properties.content_type == "text/plain"
    assert s2.properties.tags == {"env": "compat"}
    assert_recent(s2.properties.created_on)
    assert_recent(s2.properties.updated_on)

    latest = client.get_secret(name)
    assert latest.value == "second value"
    assert latest.properties.version == v2
    assert latest.id == s2.id
    assert latest.properties.content_type == "text/plain"
    assert latest.properties.tags == {"env": "compat"}

    old = client.get_secret(name, v1)
    assert old.value == "first value"
    assert old.properties.version == v1
    assert old.id == f"{server.vault_url}/secrets/{name}/{v1}"
    assert old.properties.content_type is None
    assert not old.properties.tags


@pytest.mark.parametrize(
    "value",
    [
        "pässwörd ✓ 密码 пароль كلمة 🔐🗝️",
        'line1\nline2\r\n\ttab "quoted" \\backslash\\ /slash/ {"json": [1, 2]}',
        "   leading and trailing spaces   ",
        "<xml attr='1'>&amp;</xml> %20 %% ${HOME} `cmd`",
        "e\u0301 combining, \u200b zero-width, \ufeff bom, \U0001f9d1\u200d\U0001f4bb zwj",
    ],
    ids=["multilingual-emoji", "escapes", "spaces", "markup", "combining"],
)
def test_unicode_values_round_trip(client, name, value):
    assert client.set_secret(name, value).value == value
    assert client.get_secret(name).value == value


def test_value_of_exactly_25600_bytes_round_trips(client, name):
    alphabet = string.ascii_letters + string.digits + string.punctuation
    value = "".join(pysecrets.choice(alphabet) for _ in range(MAX_VALUE_BYTES))
    assert len(value.encode("utf-8")) == MAX_VALUE_BYTES
    client.set_secret(name, value)
    assert client.get_secret(name).value == value


def test_multibyte_value_of_exactly_25600_utf8_bytes_round_trips(client, name):
    value = "é" * (MAX_VALUE_BYTES // 2)  # 12800 characters, 25600 UTF-8 bytes
    assert len(value.encode("utf-8")) == MAX_VALUE_BYTES
    client.set_secret(name, value)
    assert client.get_secret(name).value == value


@pytest.mark.parametrize(
    "value",
    ["a" * (MAX_VALUE_BYTES + 1), "é" * (MAX_VALUE_BYTES // 2 + 1)],
    ids=["25601-ascii-bytes", "25602-utf8-bytes-12801-chars"],
)
def test_value_over_25600_bytes_is_rejected_with_bad_parameter(client, name, value):
    with pytest.raises(HttpResponseError) as info:
        client.set_secret(name, value)
    assert status_of(info.value) == 400
    assert error_code(info.value) == "BadParameter"
    with pytest.raises(ResourceNotFoundError):
        client.get_secret(name)


def test_get_missing_secret_or_version_is_not_found(client, name):
    with pytest.raises(ResourceNotFoundError) as info:
        client.get_secret(name)
    assert status_of(info.value) == 404
    assert error_code(info.value), "404 must carry an Azure-style error body"

    client.set_secret(name, "v")
    with pytest.raises(ResourceNotFoundError):
        client.get_secret(name, "0" * 32)


# ---------------------------------------------------------------------------
# names
# ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    "bad_name",
    ["bad_name", "bad.name", "a" * 128, "ünïcode", "spa ce"],
    ids=["underscore", "dot", "128-chars", "non-ascii", "space"],
)
def test_invalid_secret_names_are_rejected_with_400(client, bad_name):
    # The SDK sends any name as-is (URL-quoted): the server must refuse it.
    with pytest.raises(HttpResponseError) as info:
        client.set_secret(bad_name, "value")
    assert status_of(info.value) == 400, str(info.value)
    assert error_code(info.value), "400 must carry an Azure-style error body"


def test_name_of_127_characters_is_accepted(client):
    long_name = unique("n") + "-" + "x" * 127
    long_name = long_name[:127]
    assert len(long_name) == 127
    client.set_secret(long_name, "v")
    got = client.get_secret(long_name)
    assert got.name == long_name and got.value == "v"


# ---------------------------------------------------------------------------
# properties
# ---------------------------------------------------------------------------

def test_update_secret_properties(client, name):
    created = client.set_secret(name, "keep-me", content_type="text/plain", tags={"a": "1"})
    nbf = utcnow() - timedelta(hours=1)
    exp = utcnow() + timedelta(days=30)

    props = client.update_secret_properties(
        name,
        content_type="application/json",
        tags={"env": "test", "owner": "compat"},
        not_before=nbf,
        expires_on=exp,
    )
    assert props.name == name
    assert props.version == created.properties.version, "updating properties must not create a version"
    assert props.content_type == "application/json"
    assert props.tags == {"env": "test", "owner": "compat"}
    assert props.not_before == nbf
    assert props.expires_on == exp
    assert props.enabled is True
    assert props.updated_on >= props.created_on

    got = client.get_secret(name)
    assert got.value == "keep-me"
    assert got.properties.version == created.properties.version
    assert got.properties.content_type == "application/json"
    assert got.properties.tags == {"env": "test", "owner": "compat"}
    assert got.properties.not_before == nbf
    assert got.properties.expires_on == exp

    # Fields left out of an update are unchanged.
    props = client.update_secret_properties(name, enabled=False)
    assert props.enabled is False
    assert props.content_type == "application/json"
    assert props.tags == {"env": "test", "owner": "compat"}
    assert props.expires_on == exp

    versions = list(client.list_properties_of_secret_versions(name))
    assert len(versions) == 1


def test_update_properties_of_an_older_version(client, name):
    v1 = client.set_secret(name, "one").properties.version
    v2 = client.set_secret(name, "two").properties.version

    props = client.update_secret_properties(name, v1, enabled=False, tags={"old": "yes"})
    assert props.version == v1 and props.enabled is False and props.tags == {"old": "yes"}

    with pytest.raises(HttpResponseError) as info:
        client.get_secret(name, v1)
    assert status_of(info.value) == 403

    latest = client.get_secret(name)
    assert latest.properties.version == v2 and latest.value == "two"
    assert latest.properties.enabled is True and not latest.properties.tags

    by_version = {p.version: p for p in client.list_properties_of_secret_versions(name)}
    assert by_version[v1].enabled is False
    assert by_version[v2].enabled is True


def test_disabled_secret_get_is_forbidden(client, name):
    created = client.set_secret(name, "hidden", enabled=False)
    assert created.properties.enabled is False

    with pytest.raises(HttpResponseError) as info:
        client.get_secret(name)
    assert status_of(info.value) == 403
    assert error_code(info.value) == "Forbidden"

    with pytest.raises(HttpResponseError) as info:
        client.get_secret(name, created.properties.version)
    assert status_of(info.value) == 403

    # Still listed, with enabled=False, and never with its value.
    listed = [p for p in client.list_properties_of_secrets() if p.name == name]
    assert len(listed) == 1 and listed[0].enabled is False

    client.update_secret_properties(name, enabled=True)
    assert client.get_secret(name).value == "hidden"


# ---------------------------------------------------------------------------
# listing
# ---------------------------------------------------------------------------

def test_list_properties_of_secrets_pages_with_max_page_size(client, server):
    prefix = unique("page")
    names = {f"{prefix}-{i}" for i in range(5)}
    for n in sorted(names):
        client.set_secret(n, f"value of {n}", tags={"batch": prefix})

    pages = [list(page) for page in client.list_properties_of_secrets(max_page_size=2).by_page()]
    assert len(pages) >= 3, f"5+ secrets with max_page_size=2 must span at least 3 pages, got {len(pages)}"
    assert all(len(p) <= 2 for p in pages), f"page sizes {[len(p) for p in pages]} exceed maxresults=2"

    items = [p for page in pages for p in page]
    ids = [p.id for p in items]
    assert len(ids) == len(set(ids)), "an item appeared on two pages"
    found = {p.name: p for p in items if p.name in names}
    assert set(found) == names
    for n, p in found.items():
        assert p.id == f"{server.vault_url}/secrets/{n}", "list items identify the secret, not a version"
        assert p.tags == {"batch": prefix}
        assert p.enabled is True
        assert_recent(p.created_on)


def test_list_versions(client, server, name):
    created = [client.set_secret(name, f"value {i}").properties.version for i in range(3)]

    versions = list(client.list_properties_of_secret_versions(name))
    assert sorted(v.version for v in versions) == sorted(created)
    for v in versions:
        assert v.name == name
        assert v.id == f"{server.vault_url}/secrets/{name}/{v.version}"

    pages = [list(p) for p in client.list_properties_of_secret_versions(name, max_page_size=2).by_page()]
    assert len(pages) >= 2 and all(len(p) <= 2 for p in pages)
    assert sorted(v.version for p in pages for v in p) == sorted(created)


def test_list_versions_of_missing_secret_is_empty_or_not_found(client, name):
    try:
        versions = list(client.list_properties_of_secret_versions(name))
    except ResourceNotFoundError:
        return
    assert versions == []


# ---------------------------------------------------------------------------
# soft delete, recover, purge
# ---------------------------------------------------------------------------

def test_delete_then_recover(client, server, name):
    client.set_secret(name, "v1")
    v2 = client.set_secret(name, "v2", content_type="text/plain").properties.version

    poller = client.begin_delete_secret(name)
    deleted = poller.result()
    assert deleted.name == name
    assert deleted.recovery_id == f"{server.vault_url}/deletedsecrets/{name}"
    assert deleted.properties.version == v2
    assert_recent(deleted.deleted_date)
    retention = deleted.scheduled_purge_date - deleted.deleted_date
    assert abs(retention - timedelta(days=90)) < timedelta(hours=1), f"retention is {retention}, want 90 days"
    assert deleted.properties.recovery_level and deleted.properties.recovery_level.startswith("Recoverable")
    poller.wait(timeout=30)
    assert poller.done()

    with pytest.raises(ResourceNotFoundError):
        client.get_secret(name)
    assert name not in {p.name for p in client.list_properties_of_secrets()}

    got = client.get_deleted_secret(name)
    assert got.name == name and got.recovery_id == deleted.recovery_id
    assert got.properties.version == v2
    assert got.scheduled_purge_date == deleted.scheduled_purge_date
    assert name in {d.name for d in client.list_deleted_secrets()}

    recover = client.begin_recover_deleted_secret(name)
    recovered = recover.result()
    assert recovered.name == name and recovered.version == v2
    recover.wait(timeout=30)
    assert recover.done()

    got = client.get_secret(name)
    assert got.value == "v2" and got.properties.version == v2
    assert got.properties.content_type == "text/plain"
    assert len(list(client.list_properties_of_secret_versions(name))) == 2
    with pytest.raises(ResourceNotFoundError):
        client.get_deleted_secret(name)
    assert name not in {d.name for d in client.list_deleted_secrets()}


def test_list_deleted_secrets_pages(client, server):
    prefix = unique("del")
    names = {f"{prefix}-{i}" for i in range(3)}
    for n in sorted(names):
        client.set_secret(n, "x")
        client.begin_delete_secret(n).wait(timeout=30)

    pages = [list(p) for p in client.list_deleted_secrets(max_page_size=2).by_page()]
    assert all(len(p) <= 2 for p in pages)
    items = {d.name: d for p in pages for d in p if d.name in names}
    assert set(items) == names
    for n, d in items.items():
        assert d.recovery_id == f"{server.vault_url}/deletedsecrets/{n}"
        assert d.deleted_date is not None and d.scheduled_purge_date is not None
        assert d.id == f"{server.vault_url}/secrets/{n}"


def test_set_on_soft_deleted_name_conflicts(client, name):
    client.set_secret(name, "v")
    client.begin_delete_secret(name).wait(timeout=30)

    with pytest.raises(ResourceExistsError) as info:
        client.set_secret(name, "again")
    assert status_of(info.value) == 409
    # The conflict left the deleted secret alone.
    assert client.get_deleted_secret(name).name == name


def test_delete_then_purge(client, name):
    client.set_secret(name, "doomed")
    client.begin_delete_secret(name).wait(timeout=30)

    client.purge_deleted_secret(name)

    with pytest.raises(ResourceNotFoundError):
        client.get_deleted_secret(name)
    with pytest.raises(ResourceNotFoundError):
        client.get_secret(name)
    assert name not in {d.name for d in client.list_deleted_secrets()}

    # The name is free again: a brand-new secret with a single version.
    assert client.set_secret(name, "reborn").value == "reborn"
    assert len(list(client.list_properties_of_secret_versions(name))) == 1


def test_purge_of_a_live_secret_fails_and_keeps_it(client, name):
    client.set_secret(name, "alive")
    with pytest.raises(HttpResponseError) as info:
        client.purge_deleted_secret(name)
    assert 400 <= status_of(info.value) < 500
    assert client.get_secret(name).value == "alive"


def test_recover_of_a_live_secret_fails(client, name):
    client.set_secret(name, "alive")
    with pytest.raises(HttpResponseError) as info:
        client.begin_recover_deleted_secret(name)
    assert 400 <= status_of(info.value) < 500
    assert client.get_secret(name).value == "alive"


def test_delete_of_missing_secret_is_not_found(client, name):
    with pytest.raises(ResourceNotFoundError):
        client.begin_delete_secret(name)


# ---------------------------------------------------------------------------
# backup / restore
# ---------------------------------------------------------------------------

def test_backup_and_restore_after_purge(client, name):
    v1 = client.set_secret(name, "old value").properties.version
    v2 = client.set_secret(name, "new value", content_type="text/plain", tags={"k": "v"}).properties.version

    backup = client.backup_secret(name)
    assert isinstance(backup, bytes) and len(backup) > 0

    # Restore is refused while the name exists, live ...
    with pytest.raises(ResourceExistsError) as info:
        client.restore_secret_backup(backup)
    assert status_of(info.value) == 409

    # ... or soft-deleted.
    client.begin_delete_secret(name).wait(timeout=30)
    with pytest.raises(ResourceExistsError) as info:
        client.restore_secret_backup(backup)
    assert status_of(info.value) == 409

    client.purge_deleted_secret(name)
    with pytest.raises(ResourceNotFoundError):
        client.get_deleted_secret(name)

    restored = client.restore_secret_backup(backup)
    assert restored.name == name
    assert restored.version == v2

    got = client.get_secret(name)
    assert got.value == "new value" and got.properties.version == v2
    assert got.properties.content_type == "text/plain" and got.properties.tags == {"k": "v"}
    assert client.get_secret(name, v1).value == "old value"
    assert sorted(p.version for p in client.list_properties_of_secret_versions(name)) == sorted([v1, v2])


def test_backup_of_missing_secret_is_not_found(client, name):
    with pytest.raises(ResourceNotFoundError):
        client.backup_secret(name)


def test_restore_of_garbage_is_rejected(client):
    with pytest.raises(HttpResponseError) as info:
        client.restore_secret_backup(b"this is not a keyhaven backup blob" * 4)
    assert 400 <= status_of(info.value) < 500


def test_tampered_backup_is_rejected(client, name):
    client.set_secret(name, "tamper target")
    backup = bytearray(client.backup_secret(name))
    client.begin_delete_secret(name).wait(timeout=30)
    client.purge_deleted_secret(name)

    backup[len(backup) // 2] ^= 0x01
    with pytest.raises(HttpResponseError) as info:
        client.restore_secret_backup(bytes(backup))
    assert 400 <= status_of(info.value) < 500
    with pytest.raises(ResourceNotFoundError):
        client.get_secret(name)


# ---------------------------------------------------------------------------
# concurrency
# ---------------------------------------------------------------------------

def test_concurrent_sets_create_distinct_versions(server, credential, name):
    threads_n, per_thread = 8, 5
    client = server.secret_client(credential)
    # Elicit the auth challenge once, so the threads race on the store, not on the SDK's first request.
    with pytest.raises(ResourceNotFoundError):
        client.get_secret(name)

    results, errors = [], []
    lock = threading.Lock()
    start = threading.Barrier(threads_n)

    def worker(t):
        try:
            start.wait(timeout=30)
            for i in range(per_thread):
                s = client.set_secret(name, f"t{t}-i{i}")
                with lock:
                    results.append((s.properties.version, s.value))
        except Exception as exc:  # surfaced below
            with lock:
                errors.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(threads_n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert not any(th.is_alive() for th in threads), "set_secret calls hung"
    assert not errors, errors

    total = threads_n * per_thread
    versions = [v for v, _ in results]
    assert len(versions) == total
    assert len(set(versions)) == total, "two concurrent sets were given the same version"

    listed = list(client.list_properties_of_secret_versions(name))
    assert sorted(p.version for p in listed) == sorted(versions)

    value_of = dict(results)
    for version in pysecrets.SystemRandom().sample(versions, 5):
        assert client.get_secret(name, version).value == value_of[version]
    latest = client.get_secret(name)
    assert latest.properties.version in value_of
    assert latest.value == value_of[latest.properties.version]
    client.close()


# ---------------------------------------------------------------------------
# api-version
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("api_version", ["2016-10-01", "7.0", "7.4", "7.6", "2025-07-01"])
def test_sdk_works_with_older_api_versions(server, credential, name, api_version):
    client = server.secret_client(credential, api_version=api_version)
    try:
        s = client.set_secret(name, f"value for {api_version}")
        assert client.get_secret(name).value == f"value for {api_version}"
        assert client.get_secret(name, s.properties.version).value == f"value for {api_version}"
        assert [p.version for p in client.list_properties_of_secret_versions(name)] == [s.properties.version]
        client.begin_delete_secret(name).wait(timeout=30)
        assert client.get_deleted_secret(name).name == name
    finally:
        client.close()
