"""The one matrix driver: which kernels a scenario runs on, how a result is compared with the
scenario's `expect`, and the versioned document `check`, `run` and the plugin all write."""
import json
from pathlib import Path

from livepatch_lab.lab import matrix
from livepatch_lab.lab.report.outcome import Outcome
from livepatch_lab.lab.run.record import Reason, Window
from livepatch_lab.lab.scenario.specs import Expectation, ModuleSpec, Scenario
from livepatch_lab.lab.judge.verdict import Verdict

DEFINED = ["debian-5.10", "debian-6.1", "debian-6.12", "debian-7"]
ANY = Scenario(name="any", patch=ModuleSpec(source=Path("/nowhere")))
LISTED = Scenario(name="listed", patch=ModuleSpec(source=Path("/nowhere")), kernels=("debian-6.1", "debian-7"),
                  expect=Expectation("fail", ("overhead",)), per_kernel={"debian-7": Expectation("pass")})


def test_a_scenario_without_a_list_runs_on_every_kernel_or_on_the_chosen_ones_as_given():
    assert matrix.kernels_for(ANY, [], DEFINED) == DEFINED
    assert matrix.kernels_for(ANY, ["debian-7", "debian-6.1@6.1.192-3"], DEFINED) == ["debian-7",
                                                                                      "debian-6.1@6.1.192-3"]
    assert matrix.kernels_for(ANY, ["all"], DEFINED) == DEFINED


def test_a_scenarios_own_list_is_narrowed_by_the_chosen_kernels_never_widened():
    assert matrix.kernels_for(LISTED, [], DEFINED) == ["debian-6.1", "debian-7"]
    assert matrix.kernels_for(LISTED, ["debian-7"], DEFINED) == ["debian-7"]
    assert matrix.kernels_for(LISTED, ["debian-5.10"], DEFINED) == []
    assert [c.name for c in matrix.expand([ANY, LISTED], ["debian-7"], DEFINED)] == ["any[debian-7]",
                                                                                    "listed[debian-7]"]


def outcome(kernel: str, verdict: str, *checks: str) -> Outcome:
    v = Verdict(verdict, [Reason(c, f"{c} went wrong") for c in checks], {},
                [Window("baseline", 100.0, 103.0, "baseline", "before")])
    return Outcome("listed", kernel, v, {"name": kernel, "version": "1-1", "release": "r"}, [], "/art", 1.0)


def test_a_result_is_as_expected_when_the_verdict_matches_and_every_expected_check_failed():
    fail_6_1 = matrix.Cell(LISTED, "debian-6.1")
    assert matrix.judge(fail_6_1, outcome("debian-6.1", "fail", "overhead", "service")).as_expected
    assert not matrix.judge(fail_6_1, outcome("debian-6.1", "fail", "service")).as_expected
    assert not matrix.judge(fail_6_1, outcome("debian-6.1", "pass")).as_expected
    # the scenario's per-kernel expectation wins on its kernel
    assert matrix.judge(matrix.Cell(LISTED, "debian-7"), outcome("debian-7", "pass")).as_expected


def test_the_document_is_versioned_and_holds_each_run_with_its_comparison_and_judged_windows(tmp_path):
    results = [matrix.judge(matrix.Cell(LISTED, k), outcome(k, v, *c)).as_dict()
               for k, v, c in (("debian-6.1", "fail", ("overhead",)), ("debian-7", "error", ("lab",)))]
    doc = matrix.document(results)
    matrix.write(tmp_path / "out" / "v.json", doc)
    back = json.loads((tmp_path / "out" / "v.json").read_text())
    assert back["schema"] == matrix.SCHEMA == 1
    assert back["summary"] == {"pass": 0, "fail": 1, "error": 1}
    assert back["not_as_expected"] == ["listed[debian-7]"]
    assert back["kernels"]["debian-7"] == {"version": "1-1", "release": "r"}
    first = back["results"][0]
    assert (first["scenario"], first["kernel"], first["verdict"]) == ("listed", "debian-6.1", "fail")
    assert (first["expected"], first["expected_checks"], first["failing_checks"], first["as_expected"]) == (
        "fail", ["overhead"], ["overhead"], True)
    assert first["windows"] == [{"name": "baseline", "start": 100.0, "end": 103.0, "kind": "baseline",
                                 "probe_phase": "before"}]
    assert matrix.exit_status(back["results"]) == 2


def test_the_document_goes_to_stdout_for_a_dash(capsys):
    matrix.write(Path("-"), matrix.document([]))
    assert json.loads(capsys.readouterr().out)["schema"] == 1


def test_the_document_meets_its_published_schema_and_a_broken_one_is_named_where_it_breaks():
    from tests.results_schema import errors
    doc = matrix.document([matrix.judge(matrix.Cell(LISTED, "debian-6.1"),
                                        outcome("debian-6.1", "fail", "overhead")).as_dict()])
    assert errors(json.loads(json.dumps(doc, default=str))) == []
    doc["results"][0]["verdict"] = "maybe"
    del doc["summary"]
    assert errors(doc) == ["(top): 'summary' is a required property",
                           "results/0/verdict: 'maybe' is not one of ['pass', 'fail', 'error']"]
