"""A run's timeline as an SVG: every request's latency over time, the phases shaded,
the lifecycle events drawn as lines, and the probe's runs beneath.

matplotlib's object API (``Figure``, no pyplot): no global state, no display.
Text stays text in the SVG (searchable, selectable), and the salt keeps the ids
of two plots on one page apart.
"""
from __future__ import annotations

import io
from typing import Optional

import matplotlib
from matplotlib.figure import Figure
from matplotlib.transforms import blended_transform_factory

from .collect import EVENT_LABELS, Run

# a horizontal boxplot: `orientation` from Matplotlib 3.10, which deprecates `vert`
_HORIZONTAL = ({"orientation": "horizontal"} if tuple(matplotlib.__version_info__[:2]) >= (3, 10)
               else {"vert": False})

# by the window's kind (record.py): how the verdict judged the service in it
PHASE_COLOURS = {"baseline": "#ececec", "transition": "#ffe3bf", "hold": "#d8f5dc", "cooldown": "#ececec"}
OK, FAILED, EVENT = "#1f5fa8", "#d1242f", "#444444"
PROBE_ROWS = 5    # distinct probe outputs shown on their own row; the rest share one


def _is_ok(r: dict) -> bool:
    status = r.get("status")
    return r.get("error") is None and status is not None and 200 <= status < 400


def _origin(run: Run) -> Optional[float]:
    for name in ("baseline", "load-patch", "booted", "start"):
        if run.at(name) is not None:
            return run.at(name)
    return run.requests[0]["intended"] if run.requests else None


def _requests(ax, run: Run, t0: float) -> None:
    ok = [(r["intended"] - t0, (r["done"] - r["intended"]) * 1000) for r in run.requests
          if _is_ok(r) and r.get("done") is not None]
    bad = [r for r in run.requests if not _is_ok(r)]
    top = max([y for _, y in ok] + [1.0])
    if ok:
        ax.scatter([x for x, _ in ok], [y for _, y in ok], s=6, color=OK, linewidths=0,
                   label=f"request ({len(ok)})", zorder=3)
    if bad:
        ys = [(r["done"] - r["intended"]) * 1000 if r.get("done") is not None else top for r in bad]
        ax.scatter([r["intended"] - t0 for r in bad], ys, s=28, marker="x", color=FAILED,
                   label=f"failed request ({len(bad)})", zorder=4)
        top = max([top] + ys)
    ax.set_ylim(0, top * 1.12)
    ax.set_ylabel("latency (ms)")
    if ok or bad:
        ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=2, fontsize=8, frameon=False,
                  borderaxespad=0.2)
    else:
        ax.text(0.5, 0.5, "no service requests in this run", transform=ax.transAxes, ha="center",
                color="#666666")


def _phases_and_events(ax, run: Run, t0: float, label: bool) -> None:
    top = blended_transform_factory(ax.transData, ax.transAxes)
    for name, kind, start, end, finished in run.windows():
        ax.axvspan(start - t0, end - t0, color=PHASE_COLOURS.get(kind, "#f4f4f4"), zorder=0, linewidth=0)
        if label:
            ax.text((start + end) / 2 - t0, 0.985, name if finished else f"{name} (never ended)",
                    transform=top, ha="center", va="top", fontsize=8, color="#555555")
    span = max(1.0, max(e["t"] for e in run.events) - t0)
    last, level = None, 0
    for e in run.events:
        if e.get("event") in EVENT_LABELS:
            x = e["t"] - t0
            ax.axvline(x, color=EVENT, linewidth=0.8, linestyle="--", zorder=2)
            if label:   # a label close to the one before it goes lower, so the two stay readable
                level = (level + 1) % 2 if last is not None and x - last < 0.04 * span else 0
                ax.text(x, 0.9 - 0.3 * level, " " + EVENT_LABELS[e["event"]], transform=top, rotation=90,
                        ha="right", va="top", fontsize=7, color=EVENT)
                last = x


def _probe(ax, run: Run, t0: float) -> None:
    outputs: list[str] = []
    for s in run.probe:
        if s.get("output", "") not in outputs:
            outputs.append(s.get("output", ""))
    rows = outputs[:PROBE_ROWS]
    names = [(o.strip().splitlines() or ["(empty)"])[0][:36] for o in rows]
    if len(outputs) > PROBE_ROWS:
        names.append(f"{len(outputs) - PROBE_ROWS} other outputs")
    for s in run.probe:
        out = s.get("output", "")
        row = rows.index(out) if out in rows else PROBE_ROWS
        start = s["t"] - t0
        width = max((s.get("t_end") or s["t"]) - s["t"], 0.05)
        ax.broken_barh([(start, width)], (row - 0.35, 0.7), color=OK if s.get("rc") == 0 else FAILED,
                       zorder=3)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_ylim(len(names) - 0.5, -0.5)
    ax.set_ylabel("probe", fontsize=8)


def timeline_svg(run: Run, salt: str) -> Optional[str]:
    """The plot as an ``<svg>`` element, or None for a run that never reached its guest."""
    t0 = _origin(run)
    if t0 is None or not (run.requests or run.probe or run.windows()):
        return None
    fig = Figure(figsize=(11, 4.8 if run.probe else 3.8), layout="constrained")
    if run.probe:
        ax, pax = fig.subplots(2, 1, sharex=True, height_ratios=(4, 1))
    else:
        ax, pax = fig.subplots(1, 1), None
    _phases_and_events(ax, run, t0, label=True)
    _requests(ax, run, t0)
    ax.grid(axis="y", color="#dddddd", linewidth=0.6)
    ax.set_title(f"{run.scenario} on {run.kernel}: request latency over time", fontsize=10, loc="left")
    if pax is not None:
        _phases_and_events(pax, run, t0, label=False)
        _probe(pax, run, t0)
    if run.requests:   # the probe starts before the load: show the load's span, not the probe's
        ax.set_xlim(left=min(r["intended"] for r in run.requests) - t0 - 2.0)
    (pax or ax).set_xlabel("seconds from the start of the baseline")
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": salt, "svg.fonttype": "none"}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    svg = buf.getvalue()
    return svg[svg.index("<svg"):]


def overhead_svg(run: Run, salt: str) -> Optional[str]:
    """Each cost arm's per-call times as a distribution (box and points), or None without them."""
    o = (run.verdict.get("measurements") or {}).get("overhead")
    if not o or not o.get("per_call_ms"):
        return None
    arms = [a for a in ("before", "patched", "after") if o["per_call_ms"].get(a)]
    data = [o["per_call_ms"][a] for a in arms]
    fig = Figure(figsize=(7, 2.6), layout="constrained")
    ax = fig.subplots(1, 1)
    ax.boxplot(data, **_HORIZONTAL, widths=0.5, showfliers=False,
               medianprops={"color": "#b03030"}, boxprops={"color": "#555555"})
    for i, values in enumerate(data, start=1):
        jitter = [i + 0.18 * ((k * 0.618) % 1.0 - 0.5) for k in range(len(values))]   # spread, deterministic
        ax.scatter(values, jitter, s=8, color="#3060a0" if arms[i - 1] == "patched" else "#808080", zorder=3)
    ax.set_yticks(range(1, len(arms) + 1), [f"{a} ({len(o['per_call_ms'][a])} blocks)" for a in arms], fontsize=8)
    ax.set_ylim(len(arms) + 0.5, 0.5)
    ax.set_xlabel(f"ms a call of {o['workload']!r} (block of {o['repeat']} calls / {o['repeat']})", fontsize=8)
    ax.grid(axis="x", color="#dddddd", linewidth=0.6)
    d = o["difference_ms"]
    ax.set_title(f"cost: {d['estimate']:+.3f} ms a call (95% CI {d['ci95'][0]:+.3f} .. {d['ci95'][1]:+.3f})",
                 fontsize=10, loc="left")
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": salt + "-cost", "svg.fonttype": "none"}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    svg = buf.getvalue()
    return svg[svg.index("<svg"):]
