"""A kernel line's selftest results: per case, the JSON document, the text report, the exit status."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from ..report.summary import columns
from .cases import ERROR, FAIL, OUTCOMES, PASS, SKIP, Case, CaseResult


@dataclass
class LineResult:
    """Every case of one kernel line's run. ``error``: why none could run (the source,
    a build or the guest failed before the first script)."""
    kernel: str
    cases: list[CaseResult]
    kernel_info: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    scripts: dict[str, dict[str, Any]] = field(default_factory=dict)   # script -> rc, seconds
    seconds: float = 0.0
    artifacts: str = ""
    error: Optional[str] = None
    notes: list[str] = field(default_factory=list)    # how the lab ran them (what it adapted)

    def counts(self) -> dict[str, int]:
        return {o: sum(1 for c in self.cases if c.outcome == o) for o in OUTCOMES}

    def case(self, name: str) -> Optional[CaseResult]:
        return next((c for c in self.cases if c.case.name == name), None)

    def as_dict(self) -> dict[str, Any]:
        return {"kernel": self.kernel, "kernel_info": self.kernel_info, "source": self.source,
                "counts": self.counts(), "cases": [c.as_dict() for c in self.cases],
                "scripts": self.scripts, "seconds": round(self.seconds, 1), "artifacts": self.artifacts,
                "error": self.error, "notes": self.notes}


def from_dict(d: dict[str, Any]) -> LineResult:
    """A ``LineResult`` back from ``as_dict`` (pytest-xdist workers share a line's run this way)."""
    cases = [CaseResult(Case(c["script"], c["description"], c["name"]), c["outcome"], c["reason"], c["output"],
                        c["seconds"], tuple(c["findings"])) for c in d["cases"]]
    return LineResult(d["kernel"], cases, d["kernel_info"], d["source"], d["scripts"], d["seconds"],
                      d["artifacts"], d["error"], d["notes"])


def exit_status(lines: Sequence[LineResult]) -> int:
    """0: every case passed or was skipped with a reason; 1: a case failed; 2: an error."""
    outcomes = {c.outcome for line in lines for c in line.cases}
    if any(line.error for line in lines) or ERROR in outcomes:
        return 2
    return 1 if FAIL in outcomes else 0


def entry(suite: str, line: LineResult, case: Optional[str]) -> dict[str, Any]:
    """One case as the results document holds it (``matrix.document``'s ``selftests``); a case
    the line's run did not report is an ``error`` saying why (``case`` None: the line ran none)."""
    res = line.case(case) if case is not None else None
    if res is not None:
        found = res.as_dict()
        found.pop("name")
    else:
        why = (line.error or "no case ran" if case is None else
               "the run reported no such case" + (f": {line.error}" if line.error else ""))
        found = {"script": None, "description": None, "outcome": ERROR, "reason": why, "output": "",
                 "seconds": None, "findings": []}
    return {"selftests": suite, "kernel": line.kernel, "kernel_version": line.kernel_info.get("version", "?"),
            "case": case, "artifacts": line.artifacts, **found}


def entries(suite: str, line: LineResult) -> list[dict[str, Any]]:
    """Every case of a line; a line that ran none (it could not be staged or booted) is one
    ``error`` entry without a case."""
    return [entry(suite, line, c.case.name) for c in line.cases] or [entry(suite, line, None)]


def explain_case(res: CaseResult) -> str:
    """What a person needs about one case that did not pass: why, and the script's own words."""
    text = f"{res.case.name}: {res.outcome.upper()}" + (f" ({res.reason})" if res.reason else "")
    if res.findings:
        text += "\n  kernel log: " + "\n  kernel log: ".join(res.findings)
    if res.output and res.outcome in (FAIL, ERROR):
        text += "\n" + "\n".join("  | " + line for line in res.output.splitlines())
    return text


def report(line: LineResult) -> str:
    """The line's table of cases, then every case that did not pass, explained."""
    version = line.kernel_info.get("version", "?")
    src = line.source
    head = f"selftests on {line.kernel} ({version})"
    if src:
        head += f", from {src.get('package')} {src.get('version')}"
        if src.get("note"):
            head += f" [{src['note']}]"
    rows = [("case", "outcome", "seconds")] + [
        (c.case.name, c.outcome.upper(), "-" if c.seconds is None else f"{c.seconds:.1f}") for c in line.cases]
    parts = [head, columns(rows) if line.cases else "(no cases)"]
    parts += [explain_case(c) for c in line.cases if c.outcome != PASS]
    if line.error:
        parts.append(f"error: {line.error}")
    counts = line.counts()
    parts.append(f"{len(line.cases)} cases: " + ", ".join(f"{counts[o]} {o}" for o in OUTCOMES if counts[o])
                 + f"; {line.seconds:.0f} s" + (f"; artifacts: {line.artifacts}" if line.artifacts else ""))
    parts += [f"note: {n}" for n in line.notes]
    return "\n".join(parts)


__all__ = ["LineResult", "exit_status", "entry", "entries", "report", "explain_case",
           "PASS", "FAIL", "SKIP", "ERROR"]
