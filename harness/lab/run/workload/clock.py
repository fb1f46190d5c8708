"""The guest's clock against the host's: probe and service times are compared on one clock."""
from __future__ import annotations

import logging
import time
from typing import Optional

log = logging.getLogger(__name__)


def measure_clock(guest, samples: int = 5) -> tuple[float, float]:
    """(guest_epoch - host_epoch, its uncertainty): the SSH round trip with the smallest
    RTT, the guest time taken as the midpoint; the uncertainty is half that RTT."""
    best: Optional[tuple[float, float]] = None
    for _ in range(max(1, samples)):
        before = time.time()
        # the shell's own clock if it has one: no fork, so a shorter, steadier round trip
        res = guest.run("echo ${EPOCHREALTIME:-$(date +%s.%N)}", check=True)
        after = time.time()
        rtt = after - before
        offset = float(res.stdout.strip()) - (before + after) / 2
        if best is None or rtt < best[1]:
            best = (offset, rtt)
    assert best is not None
    return best[0], best[1] / 2


def clock_offset(guest, samples: int = 5) -> float:
    """guest_epoch - host_epoch (subtract it from a guest time to get host time)."""
    offset, uncertainty = measure_clock(guest, samples)
    log.debug("guest clock offset %+.3fs (±%.3fs)", offset, uncertainty)
    return offset
