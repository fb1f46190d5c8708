"""One matrix driver: scenarios × kernels, each run judged against its scenario's ``expect``, and
one versioned JSON document of the lot.

The CLI (``check``, ``soak``, ``run``) and the pytest plugin both go through here, so both
choose kernels the same way, keep a run's artifacts in the same folder, compare a verdict with
what the scenario expects the same way, and write the same document (``SCHEMA``; docs/matrix.md "The
results document"). They only present it.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from ..core import atomic
from ..core.settings import Settings
from .report.outcome import Outcome
from .scenario.specs import Scenario

SCHEMA = 1
SCHEMA_FILE = Path(__file__).with_name("results.schema.json")   # the document's JSON Schema
DEFAULT_KERNEL = "debian-6.1"    # what `check` and `soak` run on when no --kernel is given
ALL = "all"                      # --kernel all / --lab-kernel all: every defined kernel


@dataclass(frozen=True)
class Cell:
    scenario: Scenario
    kernel: str

    @property
    def name(self) -> str:
        """``good[debian-6.12]``: a pytest item's name, the durations key, the summary label."""
        return cell_name(self.scenario.name, self.kernel)


def cell_name(scenario: str, kernel: str) -> str:
    return f"{scenario}[{kernel}]"


def kernels_for(sc: Scenario, chosen: Sequence[str], defined: Sequence[str]) -> list[str]:
    """The kernels ``sc`` runs on: the ``chosen`` ones (``all``: every defined kernel), as
    given, for a scenario without a list of its own; the scenario's list narrowed to the chosen
    ones (a name or its line: ``debian-6.1`` picks ``debian-6.1@6.1.192-3``) for one with a
    list; with nothing chosen, the scenario's list, else every defined kernel."""
    if not chosen:
        return list(sc.kernels or defined)
    wanted = list(defined) if ALL in chosen else list(chosen)
    if sc.kernels is None:
        return wanted
    return [n for n in sc.kernels if n in wanted or n.split("@")[0] in wanted]


def expand(scenarios: Iterable[Scenario], chosen: Sequence[str], defined: Sequence[str]) -> list[Cell]:
    return [Cell(sc, k) for sc in scenarios for k in kernels_for(sc, chosen, defined)]


def artifact_dir(root: Path, cell: Cell) -> Path:
    return root / cell.scenario.name / cell.kernel.replace("@", "_")


@dataclass
class Result:
    """One cell's outcome, and whether it is what the scenario expects on that kernel."""
    outcome: Outcome
    expected: str
    expected_checks: tuple[str, ...]
    as_expected: bool

    def as_dict(self) -> dict[str, Any]:
        return entry(self.outcome.as_dict(), self.expected, self.expected_checks, self.as_expected)


def judge(cell: Cell, outcome: Outcome) -> Result:
    """The verdict against the scenario's ``expect`` (its per-kernel one where given): the same
    verdict, and every check it expects among those that failed."""
    want = cell.scenario.expectation(cell.kernel)
    met = want.met_by(outcome.verdict.verdict, (r.check for r in outcome.verdict.reasons))
    return Result(outcome, want.verdict, tuple(want.checks), met)


def run_cell(cell: Cell, settings: Settings, root: Path) -> Result:
    from . import runner   # the runner's machinery loads only when something runs
    return judge(cell, runner.run(cell.scenario, cell.kernel, settings, artifact_dir(root, cell)))


def entry(outcome: dict[str, Any], expected: str, expected_checks: Sequence[str], as_expected: bool) -> dict[str, Any]:
    """A result as the document holds it: the run's ``verdict.json`` and the comparison."""
    failing = sorted({r["check"] for r in outcome.get("reasons", [])})
    return {**outcome, "expected": expected, "expected_checks": list(expected_checks),
            "as_expected": bool(as_expected), "failing_checks": failing}


def document(results: Sequence[dict[str, Any]], selftests: Optional[list[dict[str, Any]]] = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "results": list(results),
        "kernels": {**{e["kernel"]: {"version": e["kernel_version"], "release": "?"} for e in selftests or ()},
                    **{r["kernel"]: {"version": r.get("kernel_info", {}).get("version", "?"),
                                     "release": r.get("kernel_info", {}).get("release", "?")} for r in results}},
        "summary": {v: sum(1 for r in results if r["verdict"] == v) for v in ("pass", "fail", "error")},
        "not_as_expected": [cell_name(r["scenario"], r["kernel"]) for r in results if not r["as_expected"]],
    }
    if selftests:
        doc["selftests"] = selftests
    return doc


def write(path: Path, doc: dict[str, Any]) -> None:
    """The document to ``path``, or to stdout for ``-``."""
    text = json.dumps(doc, indent=2, default=str) + "\n"
    if str(path) == "-":
        sys.stdout.write(text)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write(path, text)


def exit_status(results: Iterable[dict[str, Any]]) -> int:
    """2 when any run is an error, 1 when any failed, else 0."""
    verdicts = {r["verdict"] for r in results}
    return 2 if "error" in verdicts else 1 if "fail" in verdicts else 0
