"""The end-of-run matrix: kernel x scenario verdicts with exact versions, also as JSON and
JUnit properties, collected from xdist workers by the controller.

The runner is replaced (in a conftest the workers load too) by one that answers from a
table: this is the plugin's bookkeeping under test, not the lab's judgement.
"""
import json
import xml.etree.ElementTree as ET

import pytest

from .fake_runner import use_fake_runner

pytest_plugins = ["pytester"]

FAKE_RUNNER = '''
import livepatch_lab.lab.runner as runner
from livepatch_lab.lab.report.outcome import Outcome
from livepatch_lab.lab.run.record import Reason
from livepatch_lab.lab.judge.verdict import Verdict

VERSIONS = {"debian-5.10": "5.10.262-1", "debian-6.1": "6.1.192-2",
            "debian-6.12": "6.12.118-1", "debian-7": "7.2.13-1"}

def fake_run(sc, kernel, settings, out_dir):
    if kernel == "debian-7":   # a kernel that cannot be fetched errors its own items only
        v = Verdict("error", [Reason("lab", "InfraError: apt: no such package")], {})
        info = {"name": kernel}
    elif sc.name == "bad":
        v = Verdict("fail", [Reason("dmesg", "oops: Oops: 0000")], {})
        info = {"name": kernel, "version": VERSIONS[kernel], "release": kernel + "-amd64"}
    else:
        v = Verdict("pass", [], {})
        info = {"name": kernel, "version": VERSIONS[kernel], "release": kernel + "-amd64"}
    return Outcome(sc.name, kernel, v, info, [], str(out_dir), 1.0)
'''


@pytest.fixture
def matrix(pytester: pytest.Pytester, monkeypatch):
    use_fake_runner(pytester, monkeypatch, FAKE_RUNNER)
    pytester.path.joinpath("good.yaml").write_text("name: good\npatch:\n  source: patch\n")
    pytester.path.joinpath("bad.yaml").write_text(
        "name: bad\npatch:\n  source: patch\nexpect:\n  verdict: fail\n  checks: [dmesg]\n")
    return pytester


def test_the_summary_is_a_kernel_by_scenario_table_with_exact_versions(matrix):
    result = matrix.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=6, failed=2)    # debian-7 errors, for both scenarios
    result.stdout.fnmatch_lines([
        "*livepatch-lab: verdicts (kernel x scenario)*",
        "scenario  debian-5.10 (5.10.262-1)  debian-6.1 (6.1.192-2)  debian-6.12 (6.12.118-1)  debian-7 (?)",
        "bad       FAIL                      FAIL                    FAIL                      ERROR ! (expected fail)",
        "good      PASS                      PASS                    PASS                      ERROR ! (expected pass)",
        "8 runs, 2 not as expected (marked !)",
    ])
    # a failed item says what its scenario expected, and what the run found instead
    result.stdout.fnmatch_lines(["expected fail with failing checks dmesg, got:", "bad on debian-7 *: ERROR"])


def test_xdist_workers_report_to_one_summary_and_one_json(matrix):
    result = matrix.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider", "--lab-json", "out/v.json")
    result.assert_outcomes(passed=6, failed=2)
    assert result.stdout.str().count("livepatch-lab: verdicts") == 1
    doc = json.loads(matrix.path.joinpath("out/v.json").read_text())
    assert doc["schema"] == 1    # the document `check` and `run` write too (lab/matrix.py)
    from tests.results_schema import errors
    assert errors(doc) == []
    assert doc["summary"] == {"pass": 3, "fail": 3, "error": 2}
    assert doc["kernels"]["debian-6.12"] == {"version": "6.12.118-1", "release": "debian-6.12-amd64"}
    assert sorted(doc["not_as_expected"]) == ["bad[debian-7]", "good[debian-7]"]
    row = next(r for r in doc["results"] if r["scenario"] == "bad" and r["kernel"] == "debian-6.1")
    assert row["verdict"] == "fail" and row["failing_checks"] == ["dmesg"] and row["as_expected"] is True
    assert row["expected"] == "fail" and row["expected_checks"] == ["dmesg"]


def test_junit_carries_the_verdict_and_kernel_version_as_properties(matrix):
    matrix.runpytest("-p", "no:cacheprovider", "--junitxml", "j.xml", "--lab-kernel", "debian-6.1")
    tree = ET.parse(matrix.path / "j.xml")
    case = next(c for c in tree.iter("testcase") if c.get("name") == "bad[debian-6.1]")
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert props["verdict"] == "fail" and props["kernel_version"] == "6.1.192-2"
    assert props["checks"] == "dmesg" and props["expected"] == "fail"


def test_a_marker_picks_one_kernel_line(matrix):
    result = matrix.runpytest("-p", "no:cacheprovider", "-m", "debian_6_12", "--collect-only", "-q")
    result.stdout.fnmatch_lines(["bad.yaml::bad[[]debian-6.12]", "good.yaml::good[[]debian-6.12]",
                                 "2/8 tests collected*"])


def test_the_fake_runner_never_outlives_the_test():
    import livepatch_lab.lab.runner
    assert livepatch_lab.lab.runner.run.__module__ == "livepatch_lab.lab.runner"


def test_no_scenario_no_summary(pytester: pytest.Pytester):
    pytester.makepyfile("def test_x():\n    pass\n")
    assert "livepatch-lab: verdicts" not in pytester.runpytest().stdout.str()


def test_scenario_items_run_longest_first_by_the_last_runs_durations(matrix):
    cache = matrix.path / "cache"
    first = matrix.runpytest("-p", "no:cacheprovider", "--lab-cache-dir", str(cache), "--co", "-q")
    first.stdout.fnmatch_lines(["bad.yaml::bad[[]debian-5.10]", "bad.yaml::bad[[]debian-6.1]"])
    matrix.runpytest("-p", "no:cacheprovider", "--lab-cache-dir", str(cache))   # records seconds
    recorded = json.loads((cache / "durations.json").read_text())
    assert recorded["good[debian-6.1]"] == 1.0 and len(recorded) == 8
    recorded.update({"good[debian-6.12]": 170.0, "bad[debian-6.1]": 40.0})
    recorded.pop("good[debian-7]")            # never seen: goes first
    (cache / "durations.json").write_text(json.dumps(recorded))
    result = matrix.runpytest("-p", "no:cacheprovider", "--lab-cache-dir", str(cache), "--co", "-q")
    lines = [line for line in result.stdout.lines if "::" in line]
    assert lines[:3] == ["good.yaml::good[debian-7]", "good.yaml::good[debian-6.12]",
                         "bad.yaml::bad[debian-6.1]"]
