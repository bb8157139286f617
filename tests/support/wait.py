"""Bounded polling for state that changes behind an API (attempt lists, endpoint status)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

POLL_SECONDS = 0.05


def until(
    fetch: Callable[[], T],
    ok: Callable[[T], bool],
    *,
    what: str,
    timeout: float = 10.0,
    interval: float = POLL_SECONDS,
) -> T:
    """Call ``fetch`` until ``ok`` accepts its value and return that value.

    Raises ``AssertionError`` naming ``what`` and quoting the last value after ``timeout``
    seconds. Exceptions from ``fetch`` propagate at once: an API error is not "not yet".
    """
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:g} s waiting for {what}; last: {value!r}"
            )
        time.sleep(interval)
