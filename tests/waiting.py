"""Waiting in tests: on the event itself, and always with a deadline.

A test that needs another thread or process to have done something waits for
exactly that: an Event or a Condition, a line read, ``proc.wait(timeout=...)``.
Where the only sign is a state to look at (a file written, a process gone, a
count reached), ``wait_until`` looks again until the state holds, and past its
deadline fails naming what it waited for. It is the one place in tests/ that
sleeps to do so; tests/unit/test_layers.py keeps it that way.
"""
from __future__ import annotations

import time
from typing import Callable, TypeVar, Union

T = TypeVar("T")


class NotInTime(AssertionError):
    """What a test waited for did not happen by its deadline."""


def wait_until(condition: Callable[[], T], what: Union[str, Callable[[], str]], timeout: float = 10.0, *,
               interval: float = 0.01) -> T:
    """``condition()``'s first truthy value, looked at every ``interval`` s. Past ``timeout`` s,
    NotInTime naming ``what`` (a callable is asked then: the state at the deadline).
    ``condition`` may raise to end the wait early (the other side ended, say)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        left = deadline - time.monotonic()
        if left <= 0:
            raise NotInTime(f"waited {timeout:g} s for {what() if callable(what) else what}")
        time.sleep(min(interval, left))
