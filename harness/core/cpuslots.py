"""Host CPUs shared out between the lab's guests, across processes (xdist workers, two labs).

A guest whose vCPU threads outnumber the host's free cores runs, but not as the guest it is: a
vCPU waits on the host's run queue while another vCPU spins for it (a livepatch transition's
cross-CPU syncs, the service's latency), and the verdict measures the host. So a guest holds
one slot per host thread it runs on (its vCPUs under KVM or multi-threaded TCG, one under
single-threaded TCG) for its whole life; the slots are flock'd files, one per host core, so a
killed process frees its slots with its file descriptors.
"""
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


def _take(root: Path, capacity: int, weight: int) -> list[int]:
    """File descriptors of ``weight`` free slots, or [] (holding nothing) when fewer are free."""
    held: list[int] = []
    for k in range(capacity):
        fd = os.open(root / f"slot-{k}", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        held.append(fd)
        if len(held) == weight:
            return held
    for fd in held:   # not enough: hold none, so two waiting guests cannot each hold half
        os.close(fd)
    return []


@contextlib.contextmanager
def cpu_slots(root: Path, capacity: int, weight: int, *, timeout: float, what: str) -> Iterator[float]:
    """Hold ``weight`` of ``capacity`` slots under ``root`` while the block runs; yields the
    seconds waited. ``capacity`` 0 or ``weight`` 0: no limit. A guest wider than the host takes
    every slot."""
    if capacity <= 0 or weight <= 0:
        yield 0.0
        return
    weight = min(weight, capacity)
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    deadline = t0 + timeout
    announced = False
    while not (held := _take(root, capacity, weight)):
        if not announced:
            log.info("waiting for %d of the host's %d CPU slots (other guests hold them): %s",
                     weight, capacity, what)
            announced = True
        left = deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded(f"{weight} host CPU slots for {what} ({root})", timeout)
        time.sleep(min(0.2, left))
    try:
        yield time.monotonic() - t0
    finally:
        for fd in held:
            os.close(fd)
