"""A full disk, said plainly: which directory ran out, how much room it has, whose fault.

A host that runs out of space (ENOSPC, or a quota: EDQUOT) fails a download, an
unpack, a build or a run in as many ways as there are tools: apt's "Write error",
tar's "Cannot write", gcc's "error writing to", a Python ``OSError`` without a file
name, and some say nothing of it at all (kbuild's fixdep: "not all data was written
to the output"). So a tool that failed while the directory it writes into has less
than ``NEARLY_FULL`` left counts as having run out too. ``guard`` turns each of
these, inside the block it wraps, into one ``DiskFull`` naming the directory the
block writes into and its free space. A full disk is the host's fault (never the
patch's: a build that runs out of space did not fail to compile) and is not retried.
"""
from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import Iterator, Optional

from .errors import DiskFull, HostCommandError

NO_SPACE = ("No space left on device", "Disk quota exceeded")
CACHE_HINT = "free some space there, or give the lab a cache on a larger disk (--cache-dir, LIVEPATCH_LAB_CACHE)"
ARTIFACTS_HINT = "free some space there, or give another artifact folder (--artifacts, --lab-artifacts)"
NEARLY_FULL = 1 << 20    # bytes: a tool that fails with less than this left ran out of space
_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def human(n: float) -> str:
    """``1536`` -> ``1.5 KiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def says_no_space(text: str) -> bool:
    """A tool's output that says the disk (or the quota) is full."""
    return any(s in text for s in NO_SPACE)


def is_no_space(exc: BaseException, where: Optional[Path] = None) -> bool:
    """``exc`` is the host running out of space: an OSError or a host command saying so, or (given
    ``where``, the directory it wrote into) a host command that failed with that nearly full."""
    if isinstance(exc, DiskFull):
        return True
    if isinstance(exc, OSError):
        return exc.errno in _ERRNOS
    if not isinstance(exc, HostCommandError) or exc.rc is None:   # a timeout is no full disk
        return False
    if says_no_space(exc.output):
        return True
    space = room(where) if where is not None else None
    return space is not None and space[0] < NEARLY_FULL


def room(path: Path) -> Optional[tuple[int, int]]:
    """(free, total) bytes of the filesystem holding ``path`` (its nearest existing parent)."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize


def _telling_line(output: str) -> str:
    """The line of a tool's output that says it could not write (else its last line)."""
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    for test in (says_no_space, lambda line: "writ" in line.lower()):
        found = next((line for line in lines if test(line)), None)
        if found:
            return found
    return lines[-1] if lines else ""


def full(path: Path, what: str, *, hint: str = "", said: str = "") -> DiskFull:
    """The error for running out of space in ``path`` while doing ``what``; ``said``: the
    failing tool's output, of which the line about writing is quoted."""
    space = room(path)
    have = f"; {human(space[0])} free of {human(space[1])}" if space else ""
    line = _telling_line(said)
    return DiskFull(path, f"no space left on device in {path} while {what}{have}"
                          f" ({hint or CACHE_HINT})"
                          + (f"; the tool said: {line}" if line else ""))


@contextlib.contextmanager
def guard(path: Path, what: str, *, hint: str = "") -> Iterator[None]:
    """Inside the block, running out of space is one ``DiskFull`` naming ``path``."""
    try:
        yield
    except DiskFull:
        raise
    except (OSError, HostCommandError) as exc:
        if not is_no_space(exc, path):
            raise
        raise full(path, what, hint=hint, said=getattr(exc, "output", "")) from exc
