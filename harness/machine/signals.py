"""SIGINT and SIGTERM as the lab wants them: SIGTERM a ``KeyboardInterrupt`` so teardowns run,
and both held while a teardown runs so a second one does not cut it short. Apart from the boot
because the entry points (CLI, plugin) install them before any guest exists.
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Iterator


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Inside: SIGINT and SIGTERM wait. A teardown cut short by a second Ctrl-C leaves what it
    had not yet removed; the teardown is bounded by its own deadlines, so the signal waits
    until it is done and is raised then, unless an interrupt is already on its way."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    old = {s: signal.signal(s, lambda signum, _frame: got.append(signum)) for s in held}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    if got and not isinstance(sys.exc_info()[1], KeyboardInterrupt):
        raise KeyboardInterrupt(f"signal {got[0]}")


def raise_on_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt so ``finally`` blocks (teardown) run."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)
