"""What the patch costs: the cost workload's arms compared (overhead.py's statistics), judged
only against a threshold the whole interval exceeds; the service's latency difference per
held window, reported. Pure, like the verdict it serves (verdict.decide)."""
from __future__ import annotations

from typing import Any, Optional

from . import overhead
from ..run.record import BASELINE, HOLD, Reason, RunRecord, Window
from ..scenario.expect import Expect


def cost_measurement(rec: RunRecord) -> Optional[dict[str, Any]]:
    return overhead.compare(rec.cost, rec.cost_repeat, rec.cost_workload) if rec.cost else None


def check_overhead(expect: Expect, measured: Optional[dict[str, Any]]) -> list[Reason]:
    """Only with a threshold, and only when the whole 95 % interval of the ratio lies above it: a
    noisy host widens the interval, it cannot make a false alarm."""
    limit = expect.thresholds.overhead_max_percent
    if limit is None or not measured:
        return []
    low, high = measured["ratio"]["ci95"]
    if (low - 1.0) * 100.0 <= limit:
        return []
    d = measured["difference_ms"]
    return [Reason("overhead", f"the patch costs {(measured['ratio']['estimate'] - 1) * 100:+.1f} % a call of "
                               f"{measured['workload']!r} (95% CI {(low - 1) * 100:+.1f} .. {(high - 1) * 100:+.1f} %, "
                               f"{d['estimate']:+.3f} ms a call), more than the {limit:g} % allowed "
                               f"(p={measured['p_value']:.2g})")]


def service_difference(rec: RunRecord) -> Optional[dict[str, Any]]:
    """The service's median latency in each held window against the baseline's, in ms, with its
    interval: what the patch costs the service (reported, judged by check_service's limits)."""
    base = next((w for w in rec.windows.values() if w.kind == BASELINE), None)
    if base is None:
        return None
    def lat(w: Window) -> list[float]:
        return [1000.0 * r.latency for r in rec.requests
                if r.ok and r.latency is not None and w.start <= r.intended < w.end]
    a = lat(base)
    out = {}
    for name, w in rec.windows.items():
        b = lat(w) if w.kind == HOLD else []
        if len(a) >= overhead.MIN_BLOCKS and len(b) >= overhead.MIN_BLOCKS:
            out[name] = overhead.difference(a, b).as_dict(digits=2)
    return out or None
