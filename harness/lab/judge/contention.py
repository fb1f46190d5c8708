"""Whether the host took the guest's CPU in a judged window, so that the guest's service says
nothing about the patch. Pure: reads the ``RunRecord``'s CPU samples (machine/hostcpu.py takes
them every quarter second while the steps run, so even a short transition window has
samples near both ends).

A window counts as taken by the host when, against the baseline, both rose: the CPU the rest
of the host used (other guests, builds; a patch cannot raise it, it burns the guest's own
threads' time) and the time the guest's QEMU threads waited runnable for a host CPU. A patch
that spins in the guest raises neither the first nor, on its own, the second.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from ..run.record import RunRecord, Window

# What "rose" means: other processes used half a host core more, and the guest's threads
# waited 0.1 s more per second for a CPU (a slowdown of the guest's service by the host's
# scheduler, not by its own kernel). Measured on a debian-6.1 guest under single-threaded TCG:
# a host core taken by other processes while patched, its thread waiting 0.135 s/s more, made
# the good patch's service median 181 ms against 13 ms in the baseline (14x).
# Once, with nice -10 burners, the same good patch's service timed out (medians of a second):
# what a TCG guest's service does while the host is busy says nothing about the patch.
OTHERS_RISE = 0.5
WAIT_RISE = 0.1


@dataclass(frozen=True)
class Share:
    others: float   # host cores the rest of the host used, on average
    wait: float     # seconds per second the guest's threads waited for a host CPU
    seconds: float


def share(rec: RunRecord, w: Window) -> Optional[Share]:
    """The window's CPU share between the samples nearest its start and its end; None without
    two samples half a window apart (no local QEMU, a remote libvirt host)."""
    if len(rec.host_cpu) < 2:
        return None
    a = min(rec.host_cpu, key=lambda s: abs(s[0] - w.start))
    b = min(rec.host_cpu, key=lambda s: abs(s[0] - w.end))
    span = b[0] - a[0]
    if span <= 0 or span < 0.5 * (w.end - w.start):
        return None
    busy, run, wait = b[1] - a[1], b[2] - a[2], b[3] - a[3]
    return Share(max(0.0, busy - run) / span, wait / span, span)


def host_took(rec: RunRecord, base: Window, w: Window) -> Optional[str]:
    """Why window ``w``'s slowness is the host's doing, or None when it may be the patch's."""
    s0, s1 = share(rec, base), share(rec, w)
    if s0 is None or s1 is None:
        return None
    if s1.others - s0.others >= OTHERS_RISE and s1.wait - s0.wait >= WAIT_RISE:
        return (f"in the {w.name} window other host processes used {s1.others:.2f} cores against "
                f"{s0.others:.2f} in the {base.name} window, and the guest's vCPU threads waited "
                f"{s1.wait:.2f} s per second for a host CPU against {s0.wait:.2f}")
    return None


def describe(rec: RunRecord) -> dict[str, Any]:
    """Each window's share, for the verdict's measurements."""
    out = {}
    for name, w in rec.windows.items():
        s = share(rec, w)
        if s is not None:
            out[name] = {"others_cores": round(s.others, 2), "guest_wait": round(s.wait, 3)}
    return out
