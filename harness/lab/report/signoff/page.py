"""The report's one page, rendered from its Jinja2 template (package data beside this file).

Everything the page shows is put in its context here; the template only lays it
out. Autoescaping is on: log lines and probe outputs are shown, never interpreted.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from . import acceptance
from .collect import EVENT_LABELS, Run

TEMPLATES = Path(__file__).parent / "templates"
VERDICTS = ("pass", "fail", "error")


def _ms(seconds: Optional[float]) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def _secs(seconds: Optional[float]) -> str:
    return "-" if seconds is None else f"{seconds:.2f} s"


def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(ms=_ms, secs=_secs)
    return env


def matrix(runs: Sequence[Run]) -> dict[str, Any]:
    """Scenario rows x kernel columns, each kernel with its exact version."""
    kernels = sorted({r.kernel for r in runs})
    return {"scenarios": list(dict.fromkeys(r.scenario for r in runs)),
            "kernels": [(k, next(r.kernel_info for r in runs if r.kernel == k)) for k in kernels],
            "cells": {(r.scenario, r.kernel): r for r in runs}}


def _events(run: Run, t0: Optional[float]) -> list[dict[str, Any]]:
    rows = []
    for e in run.events:
        detail = {k: v for k, v in e.items() if k not in ("t", "event", "stragglers", "patch", "targets")}
        rows.append({"event": e["event"], "label": EVENT_LABELS.get(e["event"], ""),
                     "at": None if t0 is None else e["t"] - t0, "detail": detail})
    return rows


def run_view(run: Run, svg: Optional[str], modules: list[dict[str, Any]],
             cost_svg: Optional[str] = None) -> dict[str, Any]:
    m = run.verdict.get("measurements") or {}
    booted = run.event("booted") or {}
    t0 = run.at("baseline")
    phases = list((run.verdict.get("phases") or {}).items())
    total = max(run.verdict.get("seconds") or 0.0, sum(s for _, s in phases)) or 1.0
    rest = total - sum(s for _, s in phases)
    bars = [(name, secs, 100.0 * secs / total, f"seg-{i % 10}") for i, (name, secs) in enumerate(phases)]
    if phases and rest >= 0.5:   # a phase that never ended (a frozen guest) has no length of its own
        bars.append(("in a phase that did not end", round(rest, 2), 100.0 * rest / total, "seg-unended"))
    timings = [m.get(k) for k in ("load_s", "transition_s", "disable_s", "unpatch_s")]
    return {"run": run, "anchor": run.anchor, "svg": Markup(svg) if svg else None,
            "criteria": acceptance.view(run), "release": run.release, "emulated": run.emulated,
            "reasons": run.verdict.get("reasons") or [], "modules": modules,
            "booted": booted, "events": _events(run, t0), "service": m.get("service") or {},
            "timings": [("insmod (load_s)", m.get("load_s")), ("patching transition", m.get("transition_s")),
                        ("disable (disable_s)", m.get("disable_s")), ("unpatching transition", m.get("unpatch_s"))],
            "kernel_clock": m.get("kernel_clock") or {}, "probe": run.probe_by_phase(), "taint": run.taint(),
            "taint_read": any(mask is not None for _, mask, _ in run.taint()),
            "phases": bars, "timed": any(t is not None for t in timings) or bool(m.get("kernel_clock")),
            "seconds": run.verdict.get("seconds"), "host_load": m.get("host_load") or {},
            "debug": m.get("debug") or {}, "memory": m.get("memory") or {},
            "overhead": m.get("overhead"), "overhead_svg": Markup(cost_svg) if cost_svg else None,
            "files": sorted(p.name for p in run.folder.iterdir() if p.is_file() and not p.name.startswith("."))}


def releases(runs: Sequence[Run]) -> list[tuple[dict[str, str], list[Run]]]:
    """Each distinct patch identity the runs' scenarios give (``release:``), with its runs."""
    out: list[tuple[dict[str, str], list[Run]]] = []
    for r in runs:
        if r.release:
            same = next((group for release, group in out if release == r.release), None)
            if same is None:
                out.append((r.release, [r]))
            else:
                same.append(r)
    return out


def render(runs: Sequence[Run], svgs: dict[str, Optional[str]], modules: dict[str, list[dict[str, Any]]],
           environment: dict[str, Any], cost_svgs: Optional[dict[str, Optional[str]]] = None,
           title: Optional[str] = None, note: Optional[str] = None) -> str:
    """The page; ``title`` and ``note`` are the report's own (what is signed off, a word to the reader)."""
    counts = {v: sum(1 for r in runs if r.verdict["verdict"] == v) for v in VERDICTS}
    judged = [r for r in runs if r.as_expected is not None]
    return _environment().get_template("index.html.j2").render(
        runs=[run_view(r, svgs.get(r.slug), modules.get(r.slug, []), (cost_svgs or {}).get(r.slug)) for r in runs],
        matrix=matrix(runs), counts=counts, environment=environment,
        overall=("error" if counts["error"] else "fail" if counts["fail"] else "pass"),
        not_as_expected=[r for r in judged if not r.as_expected], judged=bool(judged),
        title=title, note=note, releases=releases(runs), emulated=[r for r in runs if r.emulated])
