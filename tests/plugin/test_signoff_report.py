"""--lab-report: the controller builds one sign-off report at the end from the artifact
folders its xdist workers name, with each run's expectation.

The runner is replaced (in a conftest the workers load too) by one that writes a run's
verdict.json as the real one does and nothing else: the plugin's part is under test.
"""
import re

import pytest

from livepatch_lab.lab.report import signoff

from .fake_runner import use_fake_runner

pytest_plugins = ["pytester"]

FAKE_RUNNER = '''
import json
import livepatch_lab.lab.runner as runner
from livepatch_lab.lab.report.outcome import Outcome
from livepatch_lab.lab.run.record import Reason
from livepatch_lab.lab.judge.verdict import Verdict

def fake_run(sc, kernel, settings, out_dir):
    if sc.name == "bad":
        v = Verdict("fail", [Reason("dmesg", "oops: Oops: 0000")], {})
    else:
        v = Verdict("pass", [], {})
    info = {"name": kernel, "version": "6.1.192-3" if kernel == "debian-6.1" else "6.12.118-1",
            "release": kernel + "-amd64"}
    outcome = Outcome(sc.name, kernel, v, info, [{"t": 1.0, "event": "start"}], str(out_dir), 1.0)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "verdict.json").write_text(json.dumps(outcome.as_dict()))
    return outcome
'''


@pytest.fixture
def scenarios(pytester: pytest.Pytester, monkeypatch):
    use_fake_runner(pytester, monkeypatch, FAKE_RUNNER)
    pytester.path.joinpath("good.yaml").write_text("name: good\npatch:\n  source: patch\n")
    pytester.path.joinpath("bad.yaml").write_text("name: bad\npatch:\n  source: patch\n")   # expects pass
    return pytester


def test_one_report_of_every_workers_runs_with_their_expectations(scenarios):
    result = scenarios.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider", "--lab-kernel", "debian-6.1",
                                            "--lab-kernel", "debian-6.12", "--lab-report", "rep",
                                            "--lab-report-title", "lp-cmdline 1.2 (TICKET-42)",
                                            "--lab-report-note", "approver: J. Doe")
    result.assert_outcomes(passed=2, failed=2)
    line = next(x for x in result.stdout.lines if x.startswith("sign-off report:"))
    assert re.fullmatch(r"sign-off report: rep/index\.html \(manifest sha256 [0-9a-f]{64}\)", line)
    report = scenarios.path / "rep"
    assert signoff.verify(report).ok
    page = (report / "index.html").read_text()
    assert "2 not as the scenarios expect" in page and page.count("! expected pass") == 2
    assert "6.1.192-3" in page and "6.12.118-1" in page
    assert "lp-cmdline 1.2 (TICKET-42)" in page and "approver: J. Doe" in page
    assert sorted(p.relative_to(report).as_posix() for p in report.glob("runs/*/*/verdict.json")) == [
        "runs/bad/debian-6.1/verdict.json", "runs/bad/debian-6.12/verdict.json",
        "runs/good/debian-6.1/verdict.json", "runs/good/debian-6.12/verdict.json"]


def test_a_report_directory_holding_other_files_is_refused_before_any_run(scenarios):
    scenarios.path.joinpath("rep").mkdir()
    scenarios.path.joinpath("rep", "notes.txt").write_text("mine")
    result = scenarios.runpytest("-p", "no:cacheprovider", "--lab-report", "rep")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--lab-report: report directory rep is not empty*"])
