"""Across a soak's cycles: what stayed behind, memory that grew steadily, transitions that
slowed down. Pure, like the verdict it serves (verdict.decide)."""
from __future__ import annotations

from typing import Optional

from ..run.record import Reason, RunRecord
from ..scenario.expect import Expect


def _slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs."""
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else 0.0


def _thirds(values: list[float]) -> tuple[float, float]:
    """Medians of the first and the last third."""
    k = max(1, len(values) // 3)
    first, last = sorted(values[:k]), sorted(values[-k:])
    return first[len(first) // 2], last[len(last) // 2]


def _growth(points: list[tuple[float, float]], limit: float,
            rising_share: float = 0.6) -> Optional[tuple[float, float, float]]:
    """(total growth, least-squares growth a cycle, share of cycles it rose in) of the (cycle,
    value) points when the value grows by more than ``limit`` a cycle, steadily; else None."""
    if len(points) < 3:
        return None
    xs, ys = [x for x, _ in points], [y for _, y in points]
    per_cycle = _slope(xs, ys)
    rising = sum(1 for a, b in zip(ys, ys[1:]) if b > a) / (len(ys) - 1)
    return (ys[-1] - ys[0], per_cycle, rising) if per_cycle > limit and rising >= rising_share else None


def check_soak(expect: Expect, rec: RunRecord) -> list[Reason]:
    """Across the cycles of a soak: nothing left after a cycle, no steady growth of unreclaimable
    slab or vmalloc'ed memory and no steady fall of MemAvailable (a leak), no steady slow-down of
    the transitions."""
    cycles = [s for s in rec.soak if s.cycle > 0]
    if not cycles or expect.soak is None:
        return []
    spec = expect.soak
    reasons = [Reason("soak", f"cycle {s.cycle} left {', '.join(s.left)} behind") for s in cycles if s.left][:3]
    limit = spec.leak_kib
    for key, what in (("sunreclaim_kib", "unreclaimable slab"), ("vmalloc_kib", "vmalloc'ed memory")):
        grew = _growth([(s.cycle, getattr(s, key)) for s in rec.soak], limit)
        if grew:
            reasons.append(Reason("soak", f"{what} grew {grew[0] / 1024:.1f} MiB over {len(cycles)} cycles, "
                                          f"{grew[1]:.0f} KiB a cycle (> {limit:.0f} allowed), rising in "
                                          f"{grew[2]:.0%} of them: a leak on every apply/revert"))
    mem_limit = spec.mem_kib
    fell = _growth([(s.cycle, -s.mem_available_kib) for s in rec.soak], mem_limit, rising_share=0.5)
    if fell:
        reasons.append(Reason("soak", f"MemAvailable fell {fell[0] / 1024:.1f} MiB over {len(cycles)} cycles, "
                                      f"{fell[1]:.0f} KiB a cycle (> {mem_limit:.0f} allowed): memory the patch "
                                      "takes on every apply/revert and never gives back"))
    times = [s.transition_s for s in cycles if s.transition_s is not None]
    factor = spec.slowdown
    if len(times) >= 6:
        first, last = _thirds(times)
        if last > factor * first and last - first > 1.0 and _slope(list(range(len(times))), times) > 0:
            reasons.append(Reason("soak", f"transitions slowed down steadily: {first:.2f} s in the first "
                                          f"cycles, {last:.2f} s in the last (> {factor:g}x)"))
    return reasons
