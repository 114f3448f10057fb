"""The async recording decorator of Keyhaven's ``devtools_testutils``
stand-in: in live mode without recording it awaits the test."""

from __future__ import annotations

import functools
from typing import Any, Callable

from .. import _accepted, _require_live

__all__ = ["recorded_by_proxy_async"]


def recorded_by_proxy_async(test_func: Callable) -> Callable:
    @functools.wraps(test_func)
    async def record_wrap(*args: Any, **kwargs: Any) -> Any:
        _require_live()
        kwargs.pop("variables", None)
        return await test_func(*args, **_accepted(test_func, kwargs))

    return record_wrap
