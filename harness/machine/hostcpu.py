"""What the host's CPUs did for a guest: evidence for telling a slow patch from a busy host.

Under TCG a guest runs only while its QEMU threads hold a host CPU. When other processes on
the host want more CPU, the vCPU threads wait on the host's run queue and the guest's service
slows exactly as if a patch had slowed it. Two numbers tell these apart: the CPU the rest of
the host used (a patch cannot raise it; it burns the guest's own threads' time) and how long
the guest's threads waited for a CPU (the kernel's schedstat ``run_delay``).
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class CpuSample:
    t: float            # wall clock (time.time())
    host_busy: float    # CPU-seconds every host CPU spent busy since the host booted
    guest_run: float    # CPU-seconds the guest's QEMU threads ran
    guest_wait: float   # seconds they waited runnable for a CPU (schedstat run_delay)


def host_busy_seconds(stat: str) -> float:
    """Busy CPU-seconds from /proc/stat's ``cpu`` line: all but idle and iowait (guest time is
    already in user)."""
    fields = stat.split("\n", 1)[0].split()
    if not fields or fields[0] != "cpu":
        raise ValueError("no cpu line")
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / _TICK


def process_schedstat(pid: int, proc: Path = Path("/proc")) -> tuple[float, float]:
    """(run, wait) seconds summed over the process's threads (each /proc/PID/task/TID/schedstat:
    run ns, run_delay ns, timeslices); threads gone meanwhile are skipped."""
    run = wait = 0
    for task in (proc / str(pid) / "task").iterdir():
        try:
            parts = (task / "schedstat").read_text().split()
        except OSError:
            continue
        run += int(parts[0])
        wait += int(parts[1])
    return run / 1e9, wait / 1e9


def sample(pid: Optional[int], t: float, proc: Path = Path("/proc")) -> Optional[CpuSample]:
    """A sample now, or None where there is nothing to read (no local QEMU, no schedstat)."""
    if pid is None:
        return None
    try:
        busy = host_busy_seconds((proc / "stat").read_text())
        run, wait = process_schedstat(pid, proc)
    except (OSError, ValueError, IndexError):
        return None
    return CpuSample(t, busy, run, wait)


# Samples are this far apart while a guest runs, so every judged window, even a transition of
# a second, has one near each of its ends. A sample reads /proc/stat and one schedstat file per
# QEMU thread: tens of microseconds.
PERIOD = 0.25


class Sampler:
    """Takes a sample every ``period`` seconds in a thread while the block runs, and at its start
    and end, passing each to ``sink``. Nothing happens without a local QEMU (``pid`` None)."""

    def __init__(self, pid: Optional[int], sink: Callable[[CpuSample], None], period: float = PERIOD):
        self.pid, self.sink, self.period = pid, sink, period
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def take(self) -> None:
        got = sample(self.pid, time.time())
        if got is not None:
            self.sink(got)

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            self.take()

    def __enter__(self) -> "Sampler":
        if self.pid is not None:
            self.take()
            self._thread = threading.Thread(target=self._loop, name="host-cpu", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()   # at most one sample's time: it waits on the event, never sleeps
            self._thread = None
            self.take()
