"""Inter-process file locks with a deadline, for caches shared by xdist workers."""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from pathlib import Path
from typing import Iterator

from .errors import DeadlineExceeded

log = logging.getLogger(__name__)


@contextlib.contextmanager
def file_lock(path: Path, *, timeout: float, what: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing).

    Waiting is announced once, so a worker blocked behind another one's
    download says why it is idle. The lock dies with the process, so a crash
    never leaves a stale lock behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        announced = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not announced:
                    log.info("waiting for another process: %s", what)
                    announced = True
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DeadlineExceeded(f"lock for {what} ({path})", timeout) from None
                time.sleep(min(0.2, left))
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def try_file_lock(path: Path) -> Iterator[bool]:
    """Take ``path``'s exclusive ``flock`` if it is free: yields True while holding it, False
    (at once, holding nothing) when another process has it. For work that another process
    doing it meanwhile makes unnecessary."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)
