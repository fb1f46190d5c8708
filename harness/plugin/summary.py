"""The end of a session with lab items: the kernel x scenario summary (and the selftests'),
the results document (--lab-json), the sign-off report (--lab-report) and the durations
recorded for the next run's order. Under xdist, the controller's, from its workers' reports.
"""
from __future__ import annotations

from typing import Any, Optional

import pytest

from .durations import durations_path, record_durations
from .settings import settings_for


class LabSummary:
    """Collects scenario results from reports (under xdist, the controller gets every
    worker's reports with their user_properties) and prints/writes the matrix."""

    def __init__(self, config: pytest.Config):
        self.config = config
        self.rows: list[dict] = []
        self.report_line = ""
        self.selftests: list[dict] = []     # one per selftest case (plugin/selftest_items.py)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        props: dict[str, Any] = dict(report.user_properties)
        if report.when == "call" and "lab_scenario" in props:
            self.rows.append(props)
        if report.when == "call" and "lab_selftests" in props:
            self.selftests.append(props["lab_selftests"])   # selftests.results.entry

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if self.selftests:
            terminalreporter.write_sep("=", "livepatch-lab: the kernel's selftests (cases per outcome)")
            terminalreporter.write_line(selftests_table(self.selftests))
        if not self.rows:
            return
        terminalreporter.write_sep("=", "livepatch-lab: verdicts (kernel x scenario)")
        terminalreporter.write_line(summary_table(self.rows))
        odd = sum(1 for r in self.rows if not r["as_expected"])
        terminalreporter.write_line(f"{len(self.rows)} runs, {odd} not as expected"
                                    + (" (marked !)" if odd else ""))
        if self.report_line:   # written at session finish, which runs before this summary
            terminalreporter.write_line(self.report_line)

    def pytest_sessionfinish(self) -> None:
        try:
            if self.rows:
                record_durations(durations_path(self.config), self.rows)
        except OSError as exc:  # a read-only cache costs the ordering, nothing else
            import logging
            logging.getLogger(__name__).warning("durations not recorded: %s", exc)
        path = self.config.getoption("--lab-json")
        if path:
            from pathlib import Path

            from ..lab import matrix
            matrix.write(Path(path), summary_document(self.rows, self.selftests))
        if self.config.getoption("--lab-report") and self.rows:
            self.report_line = write_report(self.config, self.rows)


def write_report(config: pytest.Config, rows: list[dict]) -> str:
    """The sign-off report of the runs in ``rows`` (built on the controller from the artifact
    folders the workers name); the line the summary prints about it."""
    from pathlib import Path

    from ..core.errors import HarnessError
    from ..lab.report import signoff
    dest = Path(config.getoption("--lab-report"))
    runs = {Path(r["artifacts"]): (r["expected"], bool(r["as_expected"])) for r in rows
            if r.get("artifacts") and (Path(r["artifacts"]) / "verdict.json").is_file()}
    try:
        digest = signoff.write(dest, list(runs), settings_for(config), expected=runs,
                               title=config.getoption("--lab-report-title"), note=config.getoption("--lab-report-note"))
    except (HarnessError, OSError) as exc:
        return f"livepatch-lab: no sign-off report: {exc}"
    return f"sign-off report: {dest / 'index.html'} (manifest sha256 {digest})"


def selftests_table(rows: list[dict]) -> str:
    """Per selftests file and kernel line: its version and how many cases ended how."""
    from ..lab.report.summary import columns
    from ..lab.selftests.cases import OUTCOMES
    lines: dict[tuple[str, str], dict] = {}
    for r in rows:
        line = lines.setdefault((r["selftests"], r["kernel"]), {"version": r["kernel_version"]})
        line[r["outcome"]] = line.get(r["outcome"], 0) + 1
    return columns([("selftests", "kernel", *OUTCOMES)] + [
        (name, f"{kernel} ({c['version']})", *(str(c.get(o, 0)) for o in OUTCOMES))
        for (name, kernel), c in sorted(lines.items())])


def summary_table(rows: list[dict]) -> str:
    """Scenario rows x kernel columns; a cell not as the scenario expects is marked ``!``."""
    from ..lab.report.summary import table
    # what the table shows, the rows carry: no run's verdict.json need be read for it
    return table(sorted((_entry(r, read=False) for r in rows), key=lambda e: e["scenario"]))


def _entry(row: dict, read: bool = True) -> dict:
    """A row's result as the matrix document holds it: its run's verdict.json (on this host:
    xdist's workers are local) with the comparison; what the row itself says when not ``read``
    or when that file is gone (a full disk refuses to keep a verdict whose evidence is missing)."""
    import json
    from pathlib import Path

    from ..lab import matrix
    outcome = None
    if read and row.get("artifacts"):
        try:
            outcome = json.loads((Path(row["artifacts"]) / "verdict.json").read_text())
        except (OSError, ValueError):
            pass
    if outcome is None:
        outcome = {"scenario": row["lab_scenario"], "kernel": row["lab_kernel"], "verdict": row["verdict"],
                   "reasons": [{"check": c, "message": ""} for c in filter(None, row.get("checks", "").split(","))],
                   "measurements": {}, "windows": [],
                   "kernel_info": {"name": row["lab_kernel"], "version": row["kernel_version"],
                                   "release": row["kernel_release"]},
                   "artifacts": row.get("artifacts", "")}
    checks = tuple(filter(None, str(row.get("expected_checks", "")).split(",")))
    return matrix.entry(outcome, row["expected"], checks, bool(row["as_expected"]))


def summary_document(rows: list[dict], selftests: Optional[list[dict]] = None) -> dict:
    """The matrix document (lab/matrix.py, the one ``check`` and ``run`` write)."""
    from ..lab import matrix
    return matrix.document([_entry(r) for r in rows], selftests or None)
