"""Selftests files as pytest items: one item per case per kernel line, a line run once.

Fetching and running are replaced (in a conftest the xdist workers load too) by fakes
that answer from a small tree written here: this is the plugin's collection and
bookkeeping under test, not the lab's judgement (tests/unit/test_selftest_cases.py).
"""
import json

import pytest

pytest_plugins = ["pytester"]

FAKES = '''
import json
from pathlib import Path

import livepatch_lab.lab.selftests.suite as suite
from livepatch_lab.lab.selftests import cases as C
from livepatch_lab.lab.selftests.results import LineResult
from livepatch_lab.supply.kernels import fetch as kernelfetch, source as kernelsource
from livepatch_lab.supply.kernels.source import KernelSource

HERE = Path(__file__).parent
RUNS = HERE / "runs.log"

class FakeKernel:
    def __init__(self, name):
        self.name, self.version, self.release = name, "9.9.1-1", "9.9.0-1-amd64"

def fake_fetch_kernel(defn, settings, refresh=False):
    if defn.name == "debian-7":
        from livepatch_lab.core.errors import InfraError
        raise InfraError("apt: no such package linux-image-7")
    return FakeKernel(defn.name)

def fake_fetch_source(kernel, settings):
    return KernelSource(kernel.name, kernel.version, "linux-source-9.9", "9.9.1-1", "ab", HERE / "src")

DIFF = "--- expected\\n+++ result\\n@@ -1 +1 @@\\n-livepatch: enabling patch 'a'\\n+livepatch: enabling patch 'b'"

def fake_run_line(kernel, settings, out_dir, scripts=None, extra_scripts=()):
    with open(RUNS, "a") as fh:
        fh.write(kernel + "\\n")
    src = fake_fetch_source(FakeKernel(kernel), settings)
    got = C.list_cases(src.selftests_dir)
    outcomes = [(C.PASS, "", ""), (C.FAIL, "the kernel log differs from what the case expects", DIFF),
                (C.SKIP, "not run on this kernel: test-demo.sh runs it only if attr", "")]
    res = [C.CaseResult(c, *o) for c, o in zip(got, outcomes)]
    line = LineResult(kernel, res, {"name": kernel, "version": "9.9.1-1"}, artifacts=str(out_dir))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(line.as_dict()))
    return line

_real = (kernelfetch.fetch, kernelsource.fetch, suite.run_line)
kernelfetch.fetch, kernelsource.fetch, suite.run_line = fake_fetch_kernel, fake_fetch_source, fake_run_line

def pytest_unconfigure(config):   # in-process runs share these modules: give them back
    kernelfetch.fetch, kernelsource.fetch, suite.run_line = _real
'''

SCRIPT = """#!/bin/bash
start_test "first thing"
check_result "..."
start_test "second thing"
check_result "..."
if [[ $HAS_ATTR == 1 ]]; then
\tstart_test "needs an attribute"
fi
"""


def _project(pytester: pytest.Pytester, kernels="[debian-6.1]") -> None:
    pytester.makeconftest(FAKES)
    pytester.makeini(f"[pytest]\nlab_cache_dir = {pytester.path / 'cache'}\nlab_scenarios = selftests.yaml\n")
    selftests = pytester.mkdir("src").joinpath("tree/tools/testing/selftests/livepatch")
    selftests.mkdir(parents=True)
    selftests.joinpath("Makefile").write_text("TEST_PROGS := test-demo.sh\n")
    selftests.joinpath("test-demo.sh").write_text(SCRIPT)
    pytester.path.joinpath("selftests.yaml").write_text(f"selftests: livepatch\nkernels: {kernels}\n")


def test_one_item_per_case_on_the_files_kernels(pytester: pytest.Pytester):
    _project(pytester)
    result = pytester.runpytest("--collect-only", "-q")
    result.stdout.fnmatch_lines(["selftests.yaml::selftests[[]debian-6.1-test-demo-first_thing]",
                                 "selftests.yaml::selftests[[]debian-6.1-test-demo-second_thing]",
                                 "selftests.yaml::selftests[[]debian-6.1-test-demo-needs_an_attribute]",
                                 "3 tests collected*"])


def test_a_kernel_named_on_the_command_line_wins_over_the_files_default(pytester: pytest.Pytester):
    _project(pytester)
    result = pytester.runpytest("--collect-only", "-q", "--lab-kernel", "debian-6.12")
    result.stdout.fnmatch_lines(["*selftests[[]debian-6.12-test-demo-first_thing]", "3 tests collected*"])


def test_a_line_that_cannot_be_fetched_is_one_failing_item_saying_why(pytester: pytest.Pytester):
    _project(pytester, kernels="[debian-6.1, debian-7]")
    result = pytester.runpytest("-k", "debian-7", "-rf")
    result.assert_outcomes(failed=1, deselected=3)
    result.stdout.fnmatch_lines(["*could not be listed*apt: no such package linux-image-7*"])


def test_cases_report_their_own_outcome_and_a_failure_shows_the_log_diff(pytester: pytest.Pytester):
    _project(pytester)
    result = pytester.runpytest("-rs", "--lab-json", "v.json")
    result.assert_outcomes(passed=1, failed=1, skipped=1)
    result.stdout.fnmatch_lines(["*test-demo-second_thing: FAIL (the kernel log differs*",
                                 "*| -livepatch: enabling patch 'a'",
                                 "*| +livepatch: enabling patch 'b'",
                                 "SKIPPED*runs it only if attr*"])
    assert pytester.path.joinpath("runs.log").read_text() == "debian-6.1\n"   # one run for three items
    result.stdout.fnmatch_lines(["*livepatch-lab: the kernel's selftests (cases per outcome)*",
                                 "selftests  kernel                pass  fail  skip  error",
                                 "selftests  debian-6.1 (9.9.1-1)  1     1     1     0"])
    doc = json.loads(pytester.path.joinpath("v.json").read_text())
    assert sorted((r["case"], r["outcome"]) for r in doc["selftests"]) == [
        ("test-demo-first_thing", "pass"), ("test-demo-needs_an_attribute", "skip"),
        ("test-demo-second_thing", "fail")]


@pytest.mark.parametrize("dist", ["load", "loadgroup"])
def test_under_xdist_a_line_still_runs_once(pytester: pytest.Pytester, dist):
    _project(pytester)
    result = pytester.runpytest_subprocess("-n", "2", "--dist", dist, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1, skipped=1)
    assert pytester.path.joinpath("runs.log").read_text() == "debian-6.1\n"
