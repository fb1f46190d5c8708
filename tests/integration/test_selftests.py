"""The kernel's selftest machinery in a real guest, judged by the lab: a case that holds
passes, a deliberately broken expectation (in the lab's own script, never in the kernel's
files) fails with the expected-vs-actual kernel log diff in pytest's report.

The kernel's own 22 cases on debian-6.1 run as items of scenarios/selftests/livepatch.yaml.
"""
from pathlib import Path

import pytest

pytestmark = [pytest.mark.vm, pytest.mark.network]
pytest_plugins = ["pytester"]
DATA = Path(__file__).resolve().parent / "data"


def test_a_broken_expectation_fails_with_the_kernel_log_diff(pytester: pytest.Pytester, lab_settings,
                                                            monkeypatch, no_leftovers):
    monkeypatch.setenv("LIVEPATCH_LAB_RUNS", str(lab_settings.runs_dir))
    pytester.makeini(f"[pytest]\nlab_cache_dir = {lab_settings.cache_dir}\nlab_scenarios = lab.yaml\n")
    pytester.path.joinpath("lab.yaml").write_text(
        "selftests: livepatch\nname: lab-selftests\nkernels: [debian-6.1]\n"
        f"scripts: []          # none of the kernel's: only the lab's own script\n"
        f"extra_scripts: [{DATA / 'test-lab-expectations.sh'}]\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "--lab-artifacts", str(pytester.path / "art"))
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*selftest test-lab-expectations-a_deliberately_broken_expectation on debian-6.1*",
        "test-lab-expectations-a_deliberately_broken_expectation: FAIL (the kernel log differs*",
        "  | --- expected",
        "  | +++ result",
        "  | -livepatch: enabling patch 'a patch that was never loaded'",
        "  | +livepatch: enabling patch 'test_klp_livepatch'",
        "FAILED lab.yaml::lab-selftests[[]debian-6.1-test-lab-expectations-a_deliberately_broken_expectation]*",
    ])
    art = pytester.path / "art/lab-selftests/debian-6.1"
    assert "not ok" in (art / "test-lab-expectations.log").read_text()
    assert "===== TEST: a deliberately broken expectation =====" in (art / "dmesg.txt").read_text()
