"""Waiting on a fake's state without polling: block on the condition its server notifies."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_on(
    condition: threading.Condition,
    check: Callable[[], T],
    timeout: float,
    what: str,
    summary: Callable[[], str],
) -> T:
    """Re-run check each time condition is notified until it returns something truthy.

    On timeout raises AssertionError naming `what` and the fake's summary of what it saw,
    which is what a failing test's report needs.
    """
    deadline = time.monotonic() + timeout
    with condition:
        while True:
            value = check()
            if value:
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{what} timed out after {timeout}s\n{summary()}")
            condition.wait(remaining)


def wait_until(what: str, condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll a condition nothing notifies (a file, a process, /metrics) until it holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(0.05)  # polling for the condition
