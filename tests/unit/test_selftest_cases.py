"""The selftest scripts' cases and their outcomes, read from script text, output and kernel log.

The scripts and outputs here are written for these tests in the style of the kernel's
(``start_test``/``check_result`` from functions.sh); none is copied from the kernel.
"""
import json

import pytest

from livepatch_lab.lab.selftests import cases as C
from livepatch_lab.lab.selftests.results import LineResult, entries, entry, exit_status, report

SCRIPT = '''#!/bin/bash
. $(dirname $0)/functions.sh
setup_config

start_test "first thing"
load_lp $MOD
check_result "..."

start_test "module_coming + pre-patch callback -ENODEV"
check_result "..."

if [[ "$HAS_ATTR" == "1" ]]; then
	start_test "needs an attribute"
	check_result "..."
fi

start_test "first thing"
check_result "..."
'''


def cases():
    return C.cases_of("test-demo.sh", SCRIPT)


def test_cases_are_named_after_script_and_description_in_order():
    got = cases()
    assert [c.name for c in got] == ["test-demo-first_thing", "test-demo-module_coming_pre-patch_callback_-ENODEV",
                                     "test-demo-needs_an_attribute", "test-demo-first_thing-2"]
    assert [c.description for c in got][:2] == ["first thing", "module_coming + pre-patch callback -ENODEV"]
    assert {c.script for c in got} == {"test-demo.sh"}


def test_a_case_inside_an_if_carries_its_condition():
    got = {c.name: c.condition for c in cases()}
    assert got["test-demo-needs_an_attribute"] == '[[ "$HAS_ATTR" == "1" ]]'
    assert got["test-demo-first_thing"] is None


def test_scripts_run_in_the_makefiles_order_then_the_unlisted_ones(tmp_path):
    (tmp_path / "Makefile").write_text("TEST_PROGS_EXTENDED := functions.sh\nTEST_PROGS := \\\n"
                                       "\ttest-b.sh \\\n\ttest-a.sh\n\nTEST_FILES := settings\n")
    for name in ("test-a.sh", "test-b.sh", "test-c.sh", "functions.sh"):
        (tmp_path / name).write_text("")
    assert C.script_order(tmp_path) == ["test-b.sh", "test-a.sh", "test-c.sh"]


def judge(output, rc, **kw):
    return {r.case.name: r for r in C.judge_script("test-demo.sh", cases(), output, rc, **kw)}


ALL_OK = ("TEST: first thing ... ok\nTEST: module_coming + pre-patch callback -ENODEV ... ok\n"
          "TEST: needs an attribute ... ok\nTEST: first thing ... ok\n")


def test_ok_is_a_pass():
    got = judge(ALL_OK, 0)
    assert {r.outcome for r in got.values()} == {C.PASS}


DIFF = """--- expected
+++ result
@@ -1,3 +1,3 @@
 % modprobe test_klp_livepatch
-livepatch: enabling patch 'test_klp_livepatch'
+livepatch: enabling patch 'something else'
"""


def test_not_ok_fails_with_the_scripts_diff_and_the_rest_is_not_reached():
    out = f"TEST: first thing ... ok\nTEST: module_coming + pre-patch callback -ENODEV ... not ok\n\n{DIFF}\nERROR: livepatch kselftest(s) failed\n"
    got = judge(out, 1)
    bad = got["test-demo-module_coming_pre-patch_callback_-ENODEV"]
    assert bad.outcome == C.FAIL
    assert "-livepatch: enabling patch 'test_klp_livepatch'" in bad.output
    assert "+livepatch: enabling patch 'something else'" in bad.output
    assert got["test-demo-first_thing"].outcome == C.PASS
    rest = got["test-demo-needs_an_attribute"]
    assert rest.outcome == C.SKIP and "stops at its first failure" in rest.reason


def test_a_script_that_dies_inside_a_case_fails_it_with_its_words():
    out = "TEST: first thing ... ERROR: Unexpected access rights of /sys/kernel/livepatch/x/force\n"
    got = judge(out, 1)
    first = got["test-demo-first_thing"]
    assert first.outcome == C.FAIL and first.reason.startswith("ERROR: Unexpected access rights")


def test_a_whole_script_skip_skips_every_case_with_the_reason():
    got = judge("SKIP: test-kprobe requires CONFIG_KPROBES_ON_FTRACE\n", C.KSFT_SKIP)
    assert {r.outcome for r in got.values()} == {C.SKIP}
    assert got["test-demo-first_thing"].reason == "test-kprobe requires CONFIG_KPROBES_ON_FTRACE"


def test_a_skip_inside_a_case_skips_it():
    out = "TEST: first thing ... SKIP: failed to set kernel.ftrace_enabled = 1\n"
    got = judge(out, C.KSFT_SKIP)
    assert got["test-demo-first_thing"].outcome == C.SKIP
    assert got["test-demo-first_thing"].reason == "failed to set kernel.ftrace_enabled = 1"


def test_a_conditional_case_the_script_did_not_run_is_a_skip_naming_the_condition():
    out = "TEST: first thing ... ok\nTEST: module_coming + pre-patch callback -ENODEV ... ok\nTEST: first thing ... ok\n"
    got = judge(out, 0)
    skipped = got["test-demo-needs_an_attribute"]
    assert skipped.outcome == C.SKIP and 'HAS_ATTR' in skipped.reason
    assert got["test-demo-first_thing-2"].outcome == C.PASS


def test_the_lab_deadline_is_an_error_for_the_running_case_and_the_rest():
    got = judge("TEST: first thing ... ", C.TIMED_OUT, deadline=360)
    assert got["test-demo-first_thing"].outcome == C.ERROR
    assert "deadline (360 s)" in got["test-demo-first_thing"].reason
    assert got["test-demo-needs_an_attribute"].outcome == C.ERROR


def test_a_lost_guest_is_an_error_naming_why():
    got = judge("TEST: first thing ... ", None, lost="the guest did not answer a heartbeat for 30 s")
    assert got["test-demo-first_thing"].outcome == C.ERROR
    assert "heartbeat" in got["test-demo-first_thing"].reason


def test_a_script_failing_before_any_case_is_an_error_for_each():
    got = judge("bash: ./test-demo.sh: Permission denied\n", 126)
    assert {r.outcome for r in got.values()} == {C.ERROR}
    assert "exit 126" in got["test-demo-first_thing"].reason


DMESG = """[    6.43] livepatch-lab: selftests: begin test-demo.sh
[    7.00] livepatch: kernel.ftrace_enabled = 1
[    7.10] ===== TEST: first thing =====
[    7.20] % modprobe test_klp_livepatch
[    9.60] ===== TEST: module_coming + pre-patch callback -ENODEV =====
[   10.00] WARNING: CPU: 1 PID: 77 at kernel/livepatch/core.c:1 klp_x+0x1/0x2
[   12.10] ===== TEST: needs an attribute =====
[   13.00] ===== TEST: first thing =====
[   14.50] livepatch-lab: selftests: end test-demo.sh (exit 0)
[   15.00] livepatch-lab: selftests: begin test-other.sh""".splitlines()


def test_each_case_gets_its_time_and_the_trouble_logged_while_it_ran():
    results = C.judge_script("test-demo.sh", cases(), ALL_OK, 0)
    log = C.script_log(DMESG, "test-demo.sh")
    assert log[0].endswith("kernel.ftrace_enabled = 1") and log[-1].endswith("(exit 0)")
    C.attribute(results, log)
    first, warned = results[0], results[1]
    assert first.seconds == pytest.approx(2.5)
    assert (first.outcome, first.findings) == (C.PASS, ())
    assert warned.outcome == C.FAIL and warned.seconds == pytest.approx(2.5)
    assert warned.findings and warned.findings[0].startswith("warning: WARNING: CPU: 1")
    assert "the kernel logged trouble" in warned.reason


def test_the_exit_status_and_the_results_document_name_each_case_with_its_outcome():
    from livepatch_lab.lab import matrix
    from tests.results_schema import errors
    res = C.judge_script("test-demo.sh", cases(), ALL_OK, 0)
    line = LineResult("debian-6.1", res, {"version": "6.1.192-3"}, artifacts="art/selftests/debian-6.1")
    assert exit_status([line]) == 0
    # the one results document of `run`, `check` and the plugin's --lab-json, cases under ``selftests``
    doc = json.loads(json.dumps(matrix.document([], entries("selftests", line))))
    assert errors(doc) == []
    assert [(e["case"], e["outcome"]) for e in doc["selftests"]][0] == ("test-demo-first_thing", "pass")
    assert doc["kernels"] == {"debian-6.1": {"version": "6.1.192-3", "release": "?"}}
    lost = entries("selftests", LineResult("debian-6.1", [], {"version": "6.1.192-3"}, error="boot failed"))
    assert [(e["case"], e["outcome"], e["reason"]) for e in lost] == [(None, "error", "boot failed")]
    assert entry("selftests", line, "test-demo-nothing")["outcome"] == "error"
    res[1].outcome = C.SKIP
    assert exit_status([line]) == 0
    res[2].outcome = C.FAIL
    assert exit_status([line]) == 1
    res[3].outcome = C.ERROR
    assert exit_status([line]) == 2
    assert exit_status([LineResult("debian-6.1", [], error="boot failed")]) == 2


def test_the_report_shows_a_failing_case_with_its_diff():
    out = f"TEST: first thing ... not ok\n\n{DIFF}\nERROR: livepatch kselftest(s) failed\n"
    line = LineResult("debian-6.1", C.judge_script("test-demo.sh", cases(), out, 1), {"version": "6.1.192-3"})
    text = report(line)
    assert "test-demo-first_thing: FAIL (the kernel log differs" in text
    assert "  | +livepatch: enabling patch 'something else'" in text
    assert "1 fail" in text and "3 skip" in text


def source_with(tmp_path, scripts):
    from livepatch_lab.supply.kernels.source import SELFTESTS, KernelSource
    d = tmp_path / "src/tree" / SELFTESTS
    d.mkdir(parents=True)
    (d / "Makefile").write_text("TEST_PROGS := " + " ".join(scripts) + "\n")
    for s in scripts:
        (d / s).write_text(f'start_test "{s} case"\n')
    return KernelSource("debian-6.1", "6.1.192-3", "linux-source-6.1", "6.1.192-3", "ab", tmp_path / "src")


def test_a_plan_takes_the_kernels_scripts_or_those_named_then_extra_ones(tmp_path):
    from livepatch_lab.lab.selftests.stage import plan
    src = source_with(tmp_path, ["test-b.sh", "test-a.sh"])
    assert [p.name for p in plan(src).scripts] == ["test-b.sh", "test-a.sh"]
    mine = tmp_path / "test-mine.sh"
    mine.write_text('start_test "mine"\n')
    got = plan(src, ["test-a.sh"], [mine])
    assert [p.name for p in got.scripts] == ["test-a.sh", "test-mine.sh"]
    assert [c.name for c in got.cases] == ["test-a-test-a.sh_case", "test-mine-mine"]
    assert plan(src, [], [mine]).cases[0].script == "test-mine.sh"


def test_a_plan_refuses_unknown_scripts_and_extra_ones_that_would_replace_the_kernels(tmp_path):
    from livepatch_lab.core.errors import ConfigError
    from livepatch_lab.lab.selftests.stage import plan
    src = source_with(tmp_path, ["test-a.sh"])
    with pytest.raises(ConfigError, match="no selftest script test-x.sh .*it has: test-a.sh"):
        plan(src, ["test-x.sh"])
    clash = tmp_path / "elsewhere" / "functions.sh"
    clash.parent.mkdir()
    clash.write_text("")
    with pytest.raises(ConfigError, match="would replace the kernel's own"):
        plan(src, None, [clash])


def test_a_selftests_file_is_validated_like_a_scenario(tmp_path):
    from livepatch_lab.core.errors import ConfigError
    from livepatch_lab.lab.selftests import spec
    (tmp_path / "mine.sh").write_text("")
    path = tmp_path / "st.yaml"
    path.write_text("selftests: livepatch\nkernels: [debian-6.1]\nextra_scripts: [mine.sh]\n")
    sp = spec.load(path)
    assert (sp.name, sp.kernels, sp.scripts, sp.extra_scripts) == ("st", ("debian-6.1",), None, (tmp_path / "mine.sh",))
    path.write_text("selftests: livepatch\nscript: [test-a.sh]\n")
    with pytest.raises(ConfigError, match=r"st.yaml:2 \[script\]"):
        spec.load(path)
    path.write_text("selftests: kunit\n")
    with pytest.raises(ConfigError, match=r"st.yaml:1 \[selftests\]: must be one of livepatch"):
        spec.load(path)
    path.write_text("selftests: livepatch\nextra_scripts: [gone.sh]\n")
    with pytest.raises(ConfigError, match=r"\[extra_scripts\[0\]\]: .*gone.sh does not exist"):
        spec.load(path)


def test_the_shipped_selftests_file_runs_debian_6_1_by_default():
    from pathlib import Path

    from livepatch_lab.lab.selftests import spec
    sp = spec.load(Path(__file__).resolve().parents[2] / "scenarios/selftests/livepatch.yaml")
    assert (sp.name, sp.suite, sp.kernels, sp.scripts) == ("selftests", "livepatch", ("debian-6.1",), None)
