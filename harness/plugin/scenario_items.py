"""Scenario files as pytest items: one item per kernel a scenario runs on (lab/matrix.py
chooses them), run through the matrix driver, its verdict compared with the scenario's
``expect`` and carried in the item's user properties (JUnit, and the controller's summary).
"""
from __future__ import annotations

import pytest

from .settings import (chosen_kernels, defined_kernels, load_or_collect_error, mark_for_kernel, register_marker,
                       settings_for)


class ScenarioFile(pytest.File):
    def collect(self):
        from ..lab.scenario import loader as scenario
        sc = load_or_collect_error(self, scenario.load)
        debug = self.config.getoption("--lab-debug")
        if debug is not None:
            import dataclasses

            from ..lab.scenario.schema import debug_facilities
            from ..lab.scenario.specs import DebugSpec
            sc = dataclasses.replace(sc, debug=DebugSpec(debug_facilities(debug)))
        from ..lab import matrix
        for name in matrix.kernels_for(sc, chosen_kernels(self.config), defined_kernels(self)):
            item = mark_for_kernel(ScenarioItem.from_parent(self, name=item_name(sc.name, name), scenario=sc,
                                                            kernel=name), name)
            for tag in sc.tags:   # `-m lifecycle` picks scenarios by what they exercise
                register_marker(self.config, tag, f"{tag}: scenarios tagged {tag}")
                item.add_marker(getattr(pytest.mark, tag))
            yield item


class ScenarioFailure(Exception):
    pass


class ScenarioItem(pytest.Item):
    def __init__(self, *, scenario, kernel, **kwargs):
        super().__init__(**kwargs)
        self.scenario, self.kernel = scenario, kernel
        self.outcome = None
        self.duration_key = item_name(scenario.name, kernel)

    def runtest(self) -> None:
        from pathlib import Path

        from ..lab import matrix
        root = Path(self.config.getoption("--lab-artifacts") or
                    self.config.rootpath / "lab-artifacts")
        result = matrix.run_cell(matrix.Cell(self.scenario, self.kernel), settings_for(self.config), root)
        self.outcome = result.outcome
        v = self.outcome.verdict
        # JUnit <properties>, and what the controller's summary is built from (xdist ships them;
        # the document itself is read from the run's verdict.json on the controller)
        self.user_properties += [
            ("lab_scenario", self.scenario.name), ("lab_kernel", self.kernel),
            ("kernel_version", self.outcome.kernel_info.get("version", "?")),
            ("kernel_release", self.outcome.kernel_info.get("release", "?")),
            ("verdict", v.verdict), ("expected", result.expected),
            ("expected_checks", ",".join(result.expected_checks)), ("as_expected", result.as_expected),
            ("checks", ",".join(sorted({r.check for r in v.reasons}))), ("artifacts", self.outcome.artifacts),
            ("seconds", round(self.outcome.seconds, 1))]
        if not result.as_expected:
            raise ScenarioFailure(result)

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, ScenarioFailure) and self.outcome is not None:
            from ..lab.report.summary import explain
            want = excinfo.value.args[0]   # the matrix's Result
            expected = want.expected + (f" with failing checks {', '.join(want.expected_checks)}"
                                        if want.expected_checks else "")
            return f"expected {expected}, got:\n{explain(self.outcome)}"
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, 0, f"scenario {self.scenario.name} on {self.kernel}"


def item_name(scenario: str, kernel: str) -> str:
    """``good[debian-6.12]``: the item's name, its durations key and its summary label."""
    from ..lab.matrix import cell_name
    return cell_name(scenario, kernel)
