"""Keyhaven's stand-in for ``devtools_testutils``, the test tooling of the
azure-sdk-for-python repository (not published on PyPI), for running the
tests shipped in the Key Vault SDK sdists unchanged, in live mode only.

In live mode with recording skipped (AZURE_TEST_RUN_LIVE=true,
AZURE_SKIP_LIVE_RECORDING=true) upstream's tooling does little: no proxy is
started, sanitizers and matchers are not sent anywhere, and the recording
decorators call the test. This module does that much and no more. The one
deliberate difference: credentials are built against Keyhaven's authority
(KEYHAVEN_AUTHORITY) with instance discovery off, because the sync
credential would otherwise ask login.microsoftonline.com about it.
"""

from __future__ import annotations

import functools
import inspect
import os
import time
import zlib
from typing import Any, Callable, Dict

import pytest

__all__ = [
    "AzureMgmtPreparer",
    "AzureRecordedTestCase",
    "PowerShellPreparer",
    "add_body_key_sanitizer",
    "add_general_regex_sanitizer",
    "add_general_string_sanitizer",
    "add_oauth_response_sanitizer",
    "add_remove_header_sanitizer",
    "add_uri_regex_sanitizer",
    "is_live",
    "recorded_by_proxy",
    "remove_batch_sanitizers",
    "set_bodiless_matcher",
    "set_custom_default_matcher",
    "test_proxy",
]

_TRUE = ("true", "yes", "1")


def is_live() -> bool:
    """True when AZURE_TEST_RUN_LIVE says so (the only mode this shim runs)."""
    return os.environ.get("AZURE_TEST_RUN_LIVE", "").lower() in _TRUE


def _require_live() -> None:
    if not is_live() or os.environ.get("AZURE_SKIP_LIVE_RECORDING", "").lower() not in _TRUE:
        raise RuntimeError(
            "this devtools_testutils stand-in runs live only: set AZURE_TEST_RUN_LIVE=true "
            "and AZURE_SKIP_LIVE_RECORDING=true"
        )


# ---- sanitizers and matchers: they configure the recording proxy, which a
# live run without recording does not start.


def _no_proxy(*_args: Any, **_kwargs: Any) -> None:
    return None


add_body_key_sanitizer = _no_proxy
add_general_regex_sanitizer = _no_proxy
add_general_string_sanitizer = _no_proxy
add_oauth_response_sanitizer = _no_proxy
add_remove_header_sanitizer = _no_proxy
add_uri_regex_sanitizer = _no_proxy
remove_batch_sanitizers = _no_proxy
set_bodiless_matcher = _no_proxy
set_custom_default_matcher = _no_proxy


@pytest.fixture(scope="session")
def test_proxy():
    """Upstream starts the test proxy here unless recording is skipped."""
    _require_live()
    yield


# ---- the recording decorators: in live mode without recording they call
# the test with the keyword arguments it accepts.


def _accepted(fn: Callable, kwargs: Dict[str, Any]) -> Dict[str, Any]:
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(kwargs)
    return {k: v for k, v in kwargs.items() if k in params}


def recorded_by_proxy(test_func: Callable) -> Callable:
    @functools.wraps(test_func)
    def record_wrap(*args: Any, **kwargs: Any) -> Any:
        _require_live()
        kwargs.pop("variables", None)
        return test_func(*args, **_accepted(test_func, kwargs))

    return record_wrap


# ---- test case base and preparers.


def resource_name(prefix: str, identifier: bytes) -> str:
    """A name that is the same for the same test on every run (upstream
    appends a checksum of the test's id), so each suite needs a fresh vault."""
    return f"{prefix}{zlib.adler32(identifier) & 0xFFFFFFFF:x}"


class AzureRecordedTestCase:
    """The test-case base the suites derive from (live paths only)."""

    @property
    def is_live(self) -> bool:
        return is_live()

    @property
    def in_recording(self) -> bool:
        return self.is_live

    @property
    def recording_processors(self) -> list:
        return []

    def is_playback(self) -> bool:
        return not self.is_live

    def get_settings_value(self, key: str) -> str:
        value = os.environ.get("AZURE_" + key)
        if not value:
            raise KeyError(f"AZURE_{key} is not set")
        return value

    def get_credential(self, client_class: Any, **kwargs: Any) -> Any:
        """A service principal's ClientSecretCredential from AZURE_TENANT_ID,
        AZURE_CLIENT_ID and AZURE_CLIENT_SECRET (what upstream builds in live
        mode once no developer tool is signed in); other keyword arguments
        (e.g. additionally_allowed_tenants) go to the credential."""
        _require_live()
        is_async = kwargs.pop("is_async", False)
        tenant = os.environ["AZURE_TENANT_ID"]
        client_id = os.environ["AZURE_CLIENT_ID"]
        secret = os.environ["AZURE_CLIENT_SECRET"]
        authority = os.environ["KEYHAVEN_AUTHORITY"]
        if is_async:
            from azure.identity.aio import ClientSecretCredential as AsyncCredential

            return AsyncCredential(tenant, client_id, secret, authority=authority, **kwargs)
        from azure.identity import ClientSecretCredential

        return ClientSecretCredential(
            tenant, client_id, secret, authority=authority, disable_instance_discovery=True, **kwargs
        )

    def create_client_from_credential(self, client_class: Any, credential: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("logging_enable", True)
        return client_class(credential=credential, **kwargs)

    def create_random_name(self, name: str) -> str:
        return resource_name(name, os.environ["PYTEST_CURRENT_TEST"].encode("utf-8"))

    def get_resource_name(self, name: str) -> str:
        return self.create_random_name(name)

    def get_preparer_resource_name(self, prefix: str) -> str:
        return self.get_resource_name(prefix)

    @staticmethod
    def await_prepared_test(test_fn: Callable) -> Callable:
        import asyncio

        @functools.wraps(test_fn)
        def run(test_class_instance: Any, *args: Any, **kwargs: Any) -> Any:
            return asyncio.run(test_fn(test_class_instance, **_accepted(test_fn, kwargs)))

        return run

    def sleep(self, seconds: float) -> None:
        if self.is_live:
            time.sleep(seconds)


class AzureMgmtPreparer:
    """Base of the suites' resource preparers; the Key Vault suites only
    subclass it (their live tests build clients in the test-case classes)."""

    def __init__(self, name_prefix: str, random_name_length: int, random_name_enabled: bool = True,
                 disable_recording: bool = True, playback_fake_resource: Any = None,
                 client_kwargs: Any = None, **_kwargs: Any) -> None:
        self.name_prefix = name_prefix
        self.random_name_length = random_name_length
        self.random_name_enabled = random_name_enabled
        self.client_kwargs = client_kwargs or {}

    @property
    def is_live(self) -> bool:
        return is_live()


def PowerShellPreparer(directory: str, **defaults: str) -> Callable:
    """Passes each named setting to the test: in live mode the environment
    variable of the same name upper-cased (e.g. AZURE_KEYVAULT_URL)."""

    def decorator(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for key, default in defaults.items():
                kwargs.setdefault(key, os.environ.get(key.upper(), default) if is_live() else default)
            return fn(*args, **kwargs)

        # pytest must not take the settings for fixtures.
        wrapper.__signature__ = _without(fn, defaults)  # type: ignore[attr-defined]
        return wrapper

    return decorator


def _without(fn: Callable, names: Dict[str, str]) -> inspect.Signature:
    sig = inspect.signature(fn)
    return sig.replace(parameters=[p for n, p in sig.parameters.items() if n not in names])
