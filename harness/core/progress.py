"""Progress of long host work: while a download or a build runs, a line every so often saying how
far it is (bytes so far, when they can be counted) and how long it has taken, so a first run's
minutes of downloads and image builds are not minutes of silence. The lines go to the lab's log
(the CLI's stderr at the default verbosity). Nothing here waits for the work: the ticker stops when
the work's ``with`` block ends, however it ends."""
from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

log = logging.getLogger(__name__)
EVERY = 15.0   # seconds between lines: often enough to show life, rare enough to read


def size_of(path: Path) -> int:
    """Bytes under ``path`` so far (a file, or a directory's files), 0 while it does not exist."""
    try:
        if path.is_file():
            return path.stat().st_size
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    except OSError:   # files come and go under a running download
        return 0


def bytes_done(path: Path, total: Optional[int]) -> Callable[[], str]:
    """How much of a download ``path`` holds: '12.3 of 92.1 MB (13 %)'."""
    def said() -> str:
        have = size_of(path) / 1e6
        if total:
            return f"{have:.1f} of {total / 1e6:.1f} MB ({min(100.0, 100 * have * 1e6 / total):.0f} %)"
        return f"{have:.1f} MB"
    return said


@contextmanager
def ticking(what: str, *, done: Optional[Callable[[], str]] = None, usually: str = "",
            every: float = EVERY, logger: logging.Logger = log) -> Iterator[None]:
    """Log '<what>: <done>, <n> s so far (usually <usually>)' every ``every`` seconds until the
    block ends."""
    stop = threading.Event()
    start = time.monotonic()

    def tick() -> None:
        while not stop.wait(every):
            parts = [done()] if done else []
            parts.append(f"{time.monotonic() - start:.0f} s so far" + (f" (usually {usually})" if usually else ""))
            logger.info("%s: %s", what, ", ".join(parts))

    ticker = threading.Thread(target=tick, name=f"progress: {what}", daemon=True)
    ticker.start()
    try:
        yield
    finally:
        stop.set()
        ticker.join(timeout=5)
