"""A pytest plugin standing in for the azure-sdk-for-python repository's
root conftest.py, which the sdists do not ship: it registers the
``live_test_only`` and ``playback_test_only`` markers, skips playback-only
tests in live mode as upstream does, and provides the ``test_proxy``
fixture that the suites' own conftests request."""

from __future__ import annotations

import pytest

from devtools_testutils import is_live, test_proxy  # noqa: F401  (the fixture)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "live_test_only: runs only in live mode")
    config.addinivalue_line("markers", "playback_test_only: runs only in playback mode")


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    live = is_live()
    for item in items:
        if live and item.get_closest_marker("playback_test_only"):
            item.add_marker(pytest.mark.skip(reason="playback test only (upstream's rule in live mode)"))
        if not live and item.get_closest_marker("live_test_only"):
            item.add_marker(pytest.mark.skip(reason="live test only"))
