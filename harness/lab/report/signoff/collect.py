"""What a finished run left in its artifact folder, read back for the report.

Only the folder is read (``verdict.json`` and the logs beside it), never the
runner's objects: a report can be made from any run's folder, by the CLI right
after the run, by the pytest controller from its workers' folders, or later.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, cast

from ....core.errors import ConfigError
from ....machine import kmsg
from ...run.events import PHASES, WINDOW_KINDS
from ...run.livepatch import taint_letters
from ...scenario.specs import Expectation

# For runs saved before verdict.json kept its judged windows: the in-guest phases, each with
# its kind, from the event that opens it to the one that opens the next (the event names are
# part of verdict.json's format).
WINDOWS = tuple((name, WINDOW_KINDS[name], a, b) for name, a, b in PHASES if name in WINDOW_KINDS)
# Timeline events worth a line on the plot, with the words a reader knows them by.
EVENT_LABELS = {"target-loaded": "target insmod", "load-patch": "insmod", "loaded": "insmod returned",
                "transition-complete": "transition complete", "transition-stalled": "transition stalled",
                "signaled": "signaled", "forced": "forced", "disable": "disable",
                "unpatch-complete": "unpatch complete", "unpatch-stalled": "unpatch stalled",
                "unloaded": "rmmod", "guest-lost": "guest lost"}


@dataclass
class DmesgLine:
    text: str
    finding: Optional[str] = None    # the kind of trouble, None for an ordinary line
    livepatch: bool = False          # the kernel's livepatch news


@dataclass
class ProbeOutput:
    output: str
    runs: int
    exit_codes: list[Optional[int]]   # None: a record without its rc


@dataclass
class Run:
    """One scenario on one kernel, as its artifact folder tells it."""
    folder: Path
    verdict: dict[str, Any]
    requests: list[dict[str, Any]] = field(default_factory=list)
    probe: list[dict[str, Any]] = field(default_factory=list)
    dmesg: list[DmesgLine] = field(default_factory=list)
    expected: Optional[str] = None       # what the scenario expects, when the caller knows it
    as_expected: Optional[bool] = None
    slug: str = ""                       # where its files go in the report, and its anchor

    @property
    def scenario(self) -> str:
        return self.verdict.get("scenario", "?")

    @property
    def kernel(self) -> str:
        return self.verdict.get("kernel", "?")

    @property
    def anchor(self) -> str:
        """The id of the run's section on the page."""
        return "run-" + self.slug.replace("/", "-")

    @property
    def kernel_info(self) -> dict[str, Any]:
        return self.verdict.get("kernel_info") or {}

    @property
    def criteria(self) -> dict[str, Any]:
        """What the run was judged against (report/criteria.py); empty for a run saved before."""
        return self.verdict.get("criteria") or {}

    @property
    def release(self) -> dict[str, str]:
        """The patch the run signs off, as its scenario's ``release:`` names it."""
        return self.verdict.get("release") or {}

    @property
    def emulated(self) -> bool:
        """Its guest ran on QEMU's emulated CPU (TCG), not on hardware virtualization."""
        return (self.event("booted") or {}).get("accel") == "tcg"

    @property
    def events(self) -> list[dict[str, Any]]:
        return self.verdict.get("timeline") or []

    def event(self, name: str) -> Optional[dict[str, Any]]:
        return next((e for e in self.events if e.get("event") == name), None)

    def at(self, name: str) -> Optional[float]:
        e = self.event(name)
        return None if e is None else e["t"]

    def windows(self) -> list[tuple[str, str, float, float, bool]]:
        """(name, kind, start, end, finished): the windows the verdict judged, as it judged them
        (verdict.json's ``windows``); for a run saved before they were kept, the in-guest phases
        that began, from the timeline, one that never ended lasting until the run gave up on it."""
        judged = self.verdict.get("windows")
        if judged is not None:
            return [(w["name"], w["kind"], w["start"], w["end"], True) for w in judged]
        out = []
        for name, kind, a, b in WINDOWS:
            start, end = self.at(a), self.at(b)
            if start is None:
                continue
            if end is None:
                end = next((t for t in map(self.at, ("guest-lost", "collected", "verdict")) if t), None)
                if end is not None and end > start:
                    out.append((name, kind, start, end, False))
                break
            out.append((name, kind, start, end, True))
        return out

    def modules(self) -> list[tuple[str, str, Optional[str]]]:
        """(role, .ko path, what the user gave: source directory or .ko) of the modules the run
        built or was given, from its ``built`` event (``patch``/``targets``; the optional
        ``patch_source``/``target_sources`` name the inputs)."""
        built = self.event("built") or {}
        targets = built.get("targets") or []
        given = list(built.get("target_sources") or []) + [None] * len(targets)
        mods = [("target", p, given[i]) for i, p in enumerate(targets)]
        return mods + ([("patch", built["patch"], built.get("patch_source"))] if built.get("patch") else [])

    def probe_by_phase(self) -> dict[str, list[ProbeOutput]]:
        """The probe's distinct outputs before, while and after patched (a run counts for a
        phase only when it ran wholly inside it, as the verdict counts it)."""
        edges = {"before": (None, self.at("load-patch")), "patched": (self.at("patched"), self.at("disable")),
                 "after": (self.at("reverted"), None)}
        out: dict[str, list[ProbeOutput]] = {}
        for phase, (start, end) in edges.items() if self.probe else ():
            if (start is None and phase != "before") or (end is None and phase != "after"):
                continue
            seen: dict[str, ProbeOutput] = {}
            for s in self.probe:
                t0, t1 = s.get("t"), s.get("t_end") or s.get("t")
                # t1 falls back on t0: not None past the first test
                if t0 is None or (start is not None and t0 < start) or (end is not None and cast(float, t1) > end):
                    continue
                o = seen.setdefault(s.get("output", ""), ProbeOutput(s.get("output", ""), 0, []))
                o.runs += 1
                if s.get("rc") not in o.exit_codes:
                    o.exit_codes.append(s.get("rc"))
            out[phase] = list(seen.values())
        return out

    def taint(self) -> list[tuple[str, Optional[int], list[tuple[str, str]]]]:
        """(when, mask, [(letter, meaning)]) before, while patched and after."""
        t = (self.verdict.get("measurements") or {}).get("taint") or {}
        return [(when, t.get(when), taint_letters(t[when]) if t.get(when) is not None else [])
                for when in ("before", "patched", "after")]


def _json_lines(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue   # a line cut short by a killed run says nothing
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _dmesg(path: Path, reasons: list[dict[str, Any]]) -> list[DmesgLine]:
    if not path.is_file():
        return []
    # the verdict's own dmesg findings quote their lines: those are highlighted too
    quoted = "\n".join(r.get("message", "") for r in reasons if r.get("check") == "dmesg")
    lines = []
    for raw in path.read_text(errors="replace").splitlines():
        text = kmsg.strip_prefix(raw)
        hit = kmsg.classify(raw)
        kind = hit[0] if hit else ("dmesg finding" if text and text in quoted else None)
        lines.append(DmesgLine(raw, kind, "livepatch" in text.lower()))
    return lines


def load(folder: Path) -> Run:
    """The run whose artifacts are in ``folder`` (it must hold the run's verdict.json)."""
    folder = Path(folder)
    try:
        verdict = json.loads((folder / "verdict.json").read_text())
    except OSError as exc:
        raise ConfigError(f"{folder} is not a run's artifact folder: {exc.strerror}: verdict.json") from None
    except ValueError as exc:
        raise ConfigError(f"{folder}/verdict.json is not JSON: {exc}") from None
    if not isinstance(verdict, dict) or "verdict" not in verdict:
        raise ConfigError(f"{folder}/verdict.json holds no verdict")
    run = Run(folder, verdict, _json_lines(folder / "requests.jsonl"), _json_lines(folder / "probe.jsonl"),
              _dmesg(folder / "dmesg.txt", verdict.get("reasons") or []))
    want = run.criteria.get("expect")
    if want:   # what its scenario expected on its kernel, kept with the run
        expectation = Expectation(want["verdict"], tuple(want.get("checks") or ()))
        run.expected = expectation.verdict
        run.as_expected = expectation.met_by(verdict["verdict"], (r.get("check") for r in verdict.get("reasons") or []))
    return run
