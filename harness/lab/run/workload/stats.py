"""Service statistics per window: latency percentiles and the longest gap without a response."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence, cast

from .httpload import Request


@dataclass(frozen=True)
class WindowStats:
    count: int                      # requests intended in the window
    failed: int                     # of those, no 2xx/3xx response (errors, overload, other statuses)
    max_latency: Optional[float]    # over successful requests, from the intended send time
    p50: Optional[float]
    p99: Optional[float]
    longest_gap: Optional[float]    # longest time without a successful response (edges included)


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest rank: the smallest value with at least ``q`` of the values at or below it."""
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


def window_stats(requests: Iterable[Request], start: float, end: float) -> WindowStats:
    """Statistics of the requests whose intended send time is in ``[start, end)``.

    Latencies are those of successful requests. ``longest_gap`` is the longest
    of: window start → first success's completion, between consecutive
    successes' completions, last success's completion → window end (0 if it
    completed after the end); the whole window if nothing succeeded. An empty
    window has only zeros and Nones.
    """
    inside = [r for r in requests if start <= r.intended < end]
    if not inside:
        return WindowStats(0, 0, None, None, None, None)
    # a request that got a response was sent and ended: its done (so its latency) is set
    ok = sorted((r for r in inside if r.ok), key=lambda r: cast(float, r.done))
    lat = sorted(cast(float, r.latency) for r in ok)
    prev, gap = start, 0.0
    for r in ok:
        done = cast(float, r.done)
        gap = max(gap, done - prev)
        prev = max(prev, done)
    gap = max(gap, end - prev)
    return WindowStats(count=len(inside), failed=len(inside) - len(ok),
                       max_latency=lat[-1] if lat else None,
                       p50=_percentile(lat, 0.5) if lat else None,
                       p99=_percentile(lat, 0.99) if lat else None,
                       longest_gap=gap)
