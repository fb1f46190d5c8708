"""The run's timeline: timestamped events, and where the wall time went between them."""
from __future__ import annotations

import logging
import os
import time
from typing import Any, Optional

from .record import BASELINE, COOLDOWN, HOLD, TRANSITION, RunRecord

log = logging.getLogger(__name__)

# Where a run's wall time goes: each phase ends at the event that starts the next.
PHASES = (("prepare", "start", "built"), ("boot", "built", "booted"), ("setup", "booted", "baseline"),
          ("baseline", "baseline", "load-patch"), ("apply", "load-patch", "patched"),
          ("patched", "patched", "disable"), ("revert", "disable", "reverted"),
          ("cooldown", "reverted", "cooldown-end"), ("cost", "cost", "cost-end"), ("collect", "collect", "collected"),
          ("teardown", "collected", "verdict"))
# The phases that are a single patch's judged windows, with their kind (record.py): for runs
# saved before verdict.json kept the windows it judged, the report draws these.
WINDOW_KINDS = {"baseline": BASELINE, "apply": TRANSITION, "patched": HOLD, "revert": TRANSITION,
                "cooldown": COOLDOWN}


def phase_seconds(timeline: list[dict[str, Any]]) -> dict[str, float]:
    """{phase: seconds} for the phases whose two events both happened: from the first ``a`` that
    follows the previous phase's start to the first ``b`` after it (a lifecycle repeats events:
    an old patch's load precedes the baseline)."""
    out: dict[str, float] = {}
    since = float("-inf")
    for name, a, b in PHASES:
        t_a = next((e["t"] for e in timeline if e["event"] == a and e["t"] >= since), None)
        t_b = None if t_a is None else next((e["t"] for e in timeline if e["event"] == b and e["t"] >= t_a), None)
        if t_a is not None and t_b is not None:
            out[name] = round(t_b - t_a, 2)
            since = t_a
    return out


class Timeline:
    """``events("name", key=value)`` records an event now and returns its time."""

    def __init__(self, rec: Optional[RunRecord] = None) -> None:
        self.events: list[dict[str, Any]] = []
        self.rec = rec

    def __call__(self, name: str, **detail: Any) -> float:
        now = time.time()
        self.events.append({"t": round(now, 3), "event": name, **detail})
        if self.rec is not None:   # the host's load at every step: an overloaded host is evidence
            self.rec.host_load.append(round(os.getloadavg()[0], 2))
        log.info("%s%s", name, "".join(f" {k}={v}" for k, v in detail.items() if k != "stragglers"))
        return now
