"""What a patch costs a call: two samples of per-call times, compared with intervals that hold on
a noisy host.

The cost workload (workload/cost.py) times blocks of calls inside the guest in three arms:
before the patch, while patched, after the revert. The unpatched arms bracket the patched one,
so a drift of the host shows as before != after. The comparison is the one criterion,
Google Benchmark and pyperf make: the difference and the ratio of medians, each with a 95 %
percentile-bootstrap interval (numpy), and a two-sided Mann-Whitney U test (scipy) for whether
the two samples differ at all. Pure: numbers in, numbers out.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
from scipy import stats

# (patched median(s), unpatched median(s)) -> the figure: a difference or a ratio, on arrays too
Statistic = Callable[[Any, Any], Any]

RESAMPLES = 10_000
SEED = 20261207        # a fixed seed: the same blocks give the same interval, run after run
MIN_BLOCKS = 5         # fewer blocks an arm and the interval means nothing


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float

    def as_dict(self, digits: int = 4) -> dict[str, Any]:
        return {"estimate": round(self.estimate, digits), "ci95": [round(self.low, digits), round(self.high, digits)]}


def bootstrap(a: Sequence[float], b: Sequence[float], statistic: Statistic, resamples: int = RESAMPLES,
              seed: int = SEED) -> Interval:
    """``statistic(median of b, median of a)`` with its 95 % percentile-bootstrap interval
    (each sample resampled with replacement on its own)."""
    x, y = np.asarray(a, float), np.asarray(b, float)
    rng = np.random.default_rng(seed)
    mx = np.median(rng.choice(x, (resamples, len(x))), axis=1)
    my = np.median(rng.choice(y, (resamples, len(y))), axis=1)
    dist = statistic(my, mx)
    low, high = np.percentile(dist, [2.5, 97.5])
    return Interval(float(statistic(np.median(y), np.median(x))), float(low), float(high))


def difference(a: Sequence[float], b: Sequence[float]) -> Interval:
    """median(b) - median(a), with its interval."""
    return bootstrap(a, b, lambda mb, ma: mb - ma)


def ratio(a: Sequence[float], b: Sequence[float]) -> Interval:
    """median(b) / median(a), with its interval."""
    return bootstrap(a, b, lambda mb, ma: mb / ma)


def p_value(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided Mann-Whitney U: how likely samples this different are if both came from one
    distribution."""
    return float(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue)


def bracketed(before: Sequence[float], after: Sequence[float], patched: Sequence[float], measure: Statistic) -> Interval:
    """``measure`` of the patched arm against the two unpatched arms pooled (the estimate), with
    an interval that also holds against each arm alone: the hull of the three intervals. A host
    that drifted between the arms widens the interval instead of moving it (the good patch's arms
    drifted 1.3 ms a call apart under TCG while a 1 ms cost was to be told)."""
    pooled = measure(list(before) + list(after), patched)
    parts = [pooled] + [measure(arm, patched) for arm in (before, after) if len(arm) >= MIN_BLOCKS]
    return Interval(pooled.estimate, min(p.low for p in parts), max(p.high for p in parts))


def compare(arms: Mapping[str, Sequence[float]], repeat: int, workload: str) -> Optional[dict[str, Any]]:
    """The JSON's ``measurements.overhead`` from the arms' block times (seconds a block of
    ``repeat`` calls): per-call milliseconds; None when an arm has too few blocks."""
    per_call = {arm: [1000.0 * s / repeat for s in blocks] for arm, blocks in arms.items()}
    before, after = per_call.get("before", []), per_call.get("after", [])
    unpatched = before + after
    patched = per_call.get("patched", [])
    if len(patched) < MIN_BLOCKS or len(unpatched) < MIN_BLOCKS:
        return None
    out: dict[str, Any] = {
        "workload": workload, "repeat": repeat, "blocks": {arm: len(v) for arm, v in per_call.items()},
        "median_ms": {arm: round(float(np.median(v)), 4) for arm, v in per_call.items() if v},
        "difference_ms": bracketed(before, after, patched, difference).as_dict(),
        "ratio": bracketed(before, after, patched, ratio).as_dict(),
        "p_value": p_value(unpatched, patched),
        "per_call_ms": {arm: [round(x, 4) for x in v] for arm, v in per_call.items()},
    }
    if len(per_call.get("before", [])) >= MIN_BLOCKS and len(per_call.get("after", [])) >= MIN_BLOCKS:
        # the unpatched arms against each other: what the host's drift alone makes
        out["drift_ms"] = difference(per_call["before"], per_call["after"]).as_dict()
    return out


def describe(o: dict[str, Any]) -> str:
    """One line for the CLI's summary."""
    d, r = o["difference_ms"], o["ratio"]
    return (f"{d['estimate']:+.3f} ms a call (95% CI {d['ci95'][0]:+.3f} .. {d['ci95'][1]:+.3f}), "
            f"x{r['estimate']:.3f} ({r['ci95'][0]:.3f} .. {r['ci95'][1]:.3f}), p={o['p_value']:.2g}, "
            f"{o['blocks'].get('patched', 0)} blocks patched / "
            f"{o['blocks'].get('before', 0) + o['blocks'].get('after', 0)} unpatched of {o['repeat']} calls "
            f"of {o['workload']!r}")
