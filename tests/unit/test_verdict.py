"""Each check of the verdict, passing on a clean record and failing on the evidence it is for."""
import dataclasses
from dataclasses import dataclass
from typing import Optional

import pytest

from livepatch_lab.lab.judge import memcheck
from livepatch_lab.lab.judge import verdict as V
from livepatch_lab.lab.scenario.expect import Expect
from livepatch_lab.lab.scenario.specs import SoakSpec, Thresholds
from livepatch_lab.lab.run.record import (BASELINE, COOLDOWN, HOLD, TRANSITION, PatchRecord, Reason, Revert, SoakSample,
                                    ToolRun, Transition, Window)
from livepatch_lab.machine.kmsg import Finding


@dataclass
class Req:
    intended: float
    done: Optional[float]
    status: Optional[int] = 200
    error: Optional[str] = None

    @property
    def latency(self):
        return None if self.done is None else self.done - self.intended

    @property
    def ok(self):
        return self.error is None and self.status is not None and 200 <= self.status < 400


@dataclass
class Sample:
    t: float
    rc: int
    output: str


NAME = "lab_good"
DMESG_OK = [
    "[   10.1] lab_good: tainting kernel with TAINT_LIVEPATCH",
    f"[   10.1] livepatch: enabling patch '{NAME}'",
    f"[   10.2] livepatch: '{NAME}': starting patching transition",
    f"[   11.0] livepatch: '{NAME}': patching complete",
    f"[   15.0] livepatch: '{NAME}': starting unpatching transition",
    f"[   16.0] livepatch: '{NAME}': unpatching complete",
]


PATCH_FIELDS = ("loaded", "transition", "unpatch", "revert")


def clean_record(**changes) -> V.RunRecord:
    """A record of a good single-patch run; ``changes`` to the patch's own fields (loaded,
    transition, unpatch, revert) go to its ``PatchRecord``, the rest to the ``RunRecord``."""
    windows = {"baseline": Window("baseline", 0, 10, BASELINE, "before"),
               "apply": Window("apply", 10, 12, TRANSITION),
               "patched": Window("patched", 12, 20, HOLD, "patched"),
               "revert": Window("revert", 20, 22, TRANSITION),
               "cooldown": Window("cooldown", 22, 26, COOLDOWN, "after")}
    requests = [Req(i * 0.1, i * 0.1 + 0.02) for i in range(260)]
    probe = ([Sample(t, 0, "console=ttyS0 root\n") for t in (1, 5, 9)] +
             [Sample(t, 0, "livepatch-lab: patched\n") for t in (13, 16, 19)] +
             [Sample(t, 0, "console=ttyS0 root\n") for t in (23, 25)])
    patch = PatchRecord(NAME, loaded=True, transition=Transition(completed=True, seconds=0.8, deadline=60),
                        unpatch=Transition(completed=True, seconds=0.5, deadline=60),
                        revert=Revert(disabled=True, rmmod_rc=0, sysfs_gone=True, module_gone=True))
    rec = V.RunRecord(
        patch_name=NAME, patch_issued=True, patches={NAME: patch},
        ops=[("enabled", NAME), ("patched", NAME), ("disabled", NAME), ("unpatched", NAME)],
        windows=windows, requests=requests, probe=probe,
        dmesg=list(DMESG_OK), taint_before=0, taint_patched=(1 << 15) | (1 << 12) | (1 << 13),
        taint_after=(1 << 15) | (1 << 12) | (1 << 13))
    for k, v in changes.items():
        setattr(patch if k in PATCH_FIELDS else rec, k, v)
    return rec


# what a good single-patch run is judged against: the default thresholds and the probe's patterns
CLEAN = Expect(probe={"before": "console=", "patched": "^livepatch-lab: patched$", "after": "console="})
SOAK = SoakSpec(cycles=20)


def judge(rec, **expect) -> V.Verdict:
    """The verdict on ``rec`` against the clean expectations with ``expect``'s changes."""
    return V.decide(dataclasses.replace(CLEAN, **expect), rec)


def checks_of(rec, **expect) -> set[str]:
    return {r.check for r in judge(rec, **expect).reasons}


def test_a_clean_run_passes():
    result = judge(clean_record())
    assert result.verdict == "pass", result.reasons


def test_a_lab_error_is_an_error_not_a_fail():
    assert judge(clean_record(error="qemu vanished")).verdict == "error"


def test_a_failed_request_fails_the_service():
    rec = clean_record()
    rec.requests[150] = Req(15.0, None, None, "connection reset")
    assert checks_of(rec) == {"service"}


def test_a_stall_in_the_apply_window_fails_the_service():
    rec = clean_record()
    rec.requests = [r if not 10 <= r.intended < 11.5 else Req(r.intended, 11.6) for r in rec.requests]
    reasons = [r.message for r in judge(rec).reasons]
    assert any("apply window: max latency" in m for m in reasons)
    assert any("without a response" in m for m in reasons)


def test_added_latency_while_patched_fails_the_service_by_its_median():
    rec = clean_record()
    rec.requests = [Req(r.intended, r.done + (0.15 if 12 <= r.intended < 20 else 0)) for r in rec.requests]
    msgs = [r.message for r in judge(rec).reasons if r.check == "service"]
    assert any("patched window: median latency" in m for m in msgs)


def test_a_probe_that_does_not_show_the_patch_fails_the_probe():
    rec = clean_record()
    rec.probe = [Sample(s.t, s.rc, "console=ttyS0 root\n") for s in rec.probe]
    assert "probe" in checks_of(rec)


def test_a_probe_not_back_to_the_old_output_fails_the_revert_when_no_after_pattern_is_given():
    rec = clean_record()
    rec.probe[-1] = Sample(25, 0, "livepatch-lab: patched\n")
    assert checks_of(rec, probe={"patched": "patched"}) == {"revert"}


@pytest.mark.parametrize("line, kind", [
    ("[ 12.0] BUG: kernel NULL pointer dereference, address: 0000000000000000", "oops"),
    ("[ 12.0] WARNING: CPU: 1 PID: 300 at lab_warn.c:20 livepatch_cmdline_proc_show+0x1a/0x40", "warning"),
    ("[ 12.0] livepatch: failed to enable patch 'lab_good'", "livepatch-trouble"),
    ("[ 12.0] Call Trace:", "call-trace"),
    ("[ 12.0] INFO: task cat:123 blocked for more than 120 seconds.", "hung-task"),
])
def test_an_alarming_kernel_line_fails_the_dmesg(line, kind):
    rec = clean_record(dmesg=DMESG_OK[:3] + [line] + DMESG_OK[3:])
    reasons = [r for r in judge(rec).reasons if r.check == "dmesg"]
    assert reasons and reasons[0].message.startswith(kind)


def test_a_missing_or_reordered_livepatch_line_fails_the_dmesg():
    rec = clean_record(dmesg=[l for l in DMESG_OK if "patching complete" not in l])
    assert any("patching complete" in r.message for r in judge(rec).reasons)
    swapped = list(DMESG_OK)
    swapped[2], swapped[3] = swapped[3], swapped[2]
    assert "dmesg" in checks_of(clean_record(dmesg=swapped))


def test_a_console_oops_fails_the_dmesg_even_when_dmesg_never_saw_it():
    rec = clean_record(console_findings=[Finding("oops", False, "Oops: 0000 [#1] PREEMPT SMP", 400)])
    assert checks_of(rec) == {"dmesg"}


def test_taint_must_be_exactly_what_a_livepatch_implies():
    assert "taint" in checks_of(clean_record(taint_patched=(1 << 12)))          # no K
    rec = clean_record(taint_after=(1 << 15) | (1 << 9))                        # W appeared
    msgs = [r.message for r in judge(rec).reasons if r.check == "taint"]
    assert msgs == ["W: kernel issued a warning"]
    assert checks_of(clean_record(taint_before=1 << 9, taint_after=(1 << 15) | (1 << 9))) == set()


def test_a_stalled_transition_names_the_tasks():
    rec = clean_record(transition=Transition(completed=False, seconds=9, deadline=9,
                                   stragglers=["lab_sleeper (pid 77, tid 77) at lab_target_sleep"]),
                       revert=Revert(disabled=True, rmmod_rc=0))
    msgs = [r.message for r in judge(rec).reasons if r.check == "transition"]
    assert msgs and "lab_sleeper" in msgs[0]


def test_a_forced_transition_is_flagged_as_unsafe_and_possibly_never_unloadable():
    rec = clean_record(transition=Transition(completed=True, forced=True, seconds=9, deadline=9))
    msgs = [r.message for r in judge(rec).reasons if r.check == "transition"]
    assert msgs and "forced" in msgs[0] and "never be unloadable" in msgs[0]


def test_a_module_that_cannot_be_removed_fails_the_revert():
    rec = clean_record(revert=Revert(disabled=True, rmmod_rc=1, rmmod_err="ERROR: Module lab_pinned is in use",
                               sysfs_gone=True, module_gone=False))
    msgs = [r.message for r in judge(rec).reasons if r.check == "revert"]
    assert any("rmmod failed" in m and "in use" in m for m in msgs)
    assert any("still in /proc/modules" in m for m in msgs)


def test_a_guest_lost_mid_run_fails_for_the_silence_not_for_a_dmesg_it_could_not_read():
    lost = "the guest stopped answering (no heartbeat for 30 s); vCPU 0 at lab_hang_forever"
    rec = clean_record(dmesg=[], guest_lost=lost, early=[Reason("service", lost)],
                       revert=Revert(), unpatch=None, taint_patched=None, taint_after=None)
    reasons = judge(rec).reasons
    assert [(r.check, r.message) for r in reasons] == [("service", lost)]


def test_a_guest_lost_with_a_panic_on_its_console_still_reports_the_panic():
    rec = clean_record(dmesg=[], guest_lost="gone", early=[Reason("dmesg", "gone")],
                       console_findings=[Finding("panic", True, "Kernel panic - not syncing: x", 9)])
    assert any(r.message.startswith("panic (console)") for r in judge(rec).reasons)


def test_a_stall_that_signalling_did_not_clear_says_so():
    rec = clean_record(transition=Transition(completed=False, signaled=True, seconds=22.4, deadline=9,
                                   stragglers=["lab_sleeper (pid 149, tid 149) at lab_target_sleep+0x22"]))
    msg = next(r.message for r in judge(rec).reasons if r.check == "transition")
    assert "within 9 s, nor 22 s in after the stragglers were signalled" in msg and "lab_sleeper" in msg


def test_a_runs_wall_time_is_split_into_phases_that_happened():
    from livepatch_lab.lab.run.events import phase_seconds
    names = ["start", "build", "built", "booted", "baseline", "load-patch", "loaded", "transition-complete",
             "patched", "disable", "unpatch-complete", "reverted", "cooldown-end", "collect", "collected", "verdict"]
    timeline = [{"t": 100.0 + i, "event": n} for i, n in enumerate(names)]
    phases = phase_seconds(timeline)
    assert list(phases) == ["prepare", "boot", "setup", "baseline", "apply", "patched", "revert",
                            "cooldown", "collect", "teardown"]
    assert phases["prepare"] == 2 and phases["apply"] == 3 and phases["teardown"] == 1
    lost = phase_seconds([e for e in timeline if e["event"] in ("start", "built", "booted", "baseline")])
    assert lost == {"prepare": 2.0, "boot": 1.0, "setup": 1.0}   # only what happened


def test_a_service_failure_on_an_overloaded_host_says_the_host_may_be_to_blame():
    slow = [Req(i * 0.1, i * 0.1 + (0.02 if i < 100 else 0.4)) for i in range(260)]
    rec = clean_record(requests=slow, host_load=[1.2, 3.4, 2.0], host_cpus=2)
    msgs = [r.message for r in judge(rec).reasons if r.check == "service"]
    assert msgs and all("host load average reached 3.4 on 2 cores" in m for m in msgs)
    calm = clean_record(requests=slow, host_load=[0.5, 1.1], host_cpus=2)
    assert not any("host load" in r.message for r in judge(calm).reasons)
    assert judge(clean_record(host_load=[9.0], host_cpus=2)).verdict == "pass"  # a note, never a reason


def test_the_expected_kernel_lines_follow_the_operations_of_every_patch_in_order():
    ops = [("enabled", "v1"), ("patched", "v1"), ("enabled", "v2"), ("patched", "v2"),
           ("disabled", "v2"), ("unpatched", "v2")]
    rec = clean_record(ops=ops)
    assert V.expected_lines(rec) == [
        "livepatch: enabling patch 'v1'", "livepatch: 'v1': starting patching transition",
        "livepatch: 'v1': patching complete",
        "livepatch: enabling patch 'v2'", "livepatch: 'v2': starting patching transition",
        "livepatch: 'v2': patching complete", "livepatch: 'v2': starting unpatching transition",
        "livepatch: 'v2': unpatching complete"]
    assert any("expected, in order, but missing: \"livepatch: enabling patch 'v1'\"" in r.message
               for r in judge(rec).reasons)


def test_transition_and_revert_are_judged_for_every_patch_of_the_run():
    rec = clean_record()
    rec.patches["v2"] = PatchRecord("v2", loaded=True,
                                    transition=Transition(completed=False, deadline=9, stragglers=["kt"]),
                                    revert=Revert(disabled=True, rmmod_rc=1, rmmod_err="in use"))
    msgs = [(r.check, r.message) for r in judge(rec).reasons]
    assert ("transition", "patching did not complete within 9 s; still unpatched: kt") in msgs
    assert ("revert", "rmmod failed (rc 1): in use") in msgs


def test_service_windows_are_judged_by_their_kind_not_their_name():
    rec = clean_record()
    rec.windows["patched v2"] = Window("patched v2", 26, 30, HOLD)
    rec.requests += [Req(26 + i * 0.1, 26 + i * 0.1 + 0.3) for i in range(40)]   # slow while v2 holds
    msgs = [r.message for r in judge(rec).reasons if r.check == "service"]
    assert any(m.startswith("patched v2 window: median latency 300 ms") for m in msgs)
    rec.windows["patched v2"].kind = COOLDOWN   # cool-down is not judged
    assert not [r for r in judge(rec).reasons if r.check == "service"]


def test_a_probe_phase_whose_window_never_came_is_left_to_the_checks_that_say_why():
    rec = clean_record()
    del rec.windows["patched"], rec.windows["revert"], rec.windows["cooldown"]
    assert not [r for r in judge(rec).reasons if r.check == "probe"]
    rec.windows["patched"] = Window("patched", 12, 12.1, HOLD, "patched")   # came, but empty
    assert [r.message for r in judge(rec).reasons if r.check == "probe"] == \
        ["no probe sample in the patched phase"]


def test_the_old_patch_alone_again_must_show_what_it_showed_before_the_upgrade():
    rec, same = clean_record(), {"old again": "before"}
    rec.windows["old again"] = Window("old again", 30, 34, HOLD, "old again")
    rec.probe += [Sample(31, 0, "console=ttyS0 root\n")]
    assert judge(rec, probe_same=same).verdict == "pass"
    rec.probe[-1] = Sample(31, 0, "livepatch-lab: patched\n")
    assert [r.message for r in judge(rec, probe_same=same).reasons] == [
        "old again: 1 of 1 samples differ from the before phase: 'livepatch-lab: patched' vs 'console=ttyS0 root'"]


def test_an_upgrade_that_brings_back_the_unpatched_output_says_a_fix_was_lost():
    rec = clean_record(probe_unpatched="cmdline original\nversion original\n", replaced={"lab_v1": NAME})
    upgrade = {"before": "v1", "patched": "v2 cmdline\nv2 version"}
    rec.probe = ([Sample(t, 0, "v1 cmdline\nv1 version\n") for t in (1, 5, 9)] +
                 [Sample(t, 0, "v2 cmdline\nversion original\n") for t in (13, 16, 19)])
    msg = next(r.message for r in judge(rec, probe=upgrade).reasons if r.check == "probe")
    assert msg.startswith("patched: 3 of 3 samples do not match")
    assert msg.endswith("a fix was lost in the upgrade: 'version original' is the unpatched kernel's output "
                        "again (an atomic replace reverts what the new patch does not carry)")


def test_the_revert_is_judged_against_the_kernel_before_any_patch():
    rec, probe = clean_record(probe_unpatched="console=ttyS0 root\n"), {"patched": "patched"}
    assert judge(rec, probe=probe).verdict == "pass"
    rec.probe_unpatched = "something else\n"
    assert [r.check for r in judge(rec, probe=probe).reasons] == ["revert"]


def test_lines_the_scenario_expects_must_be_in_dmesg_in_their_order():
    callbacks = ["lab_callbacks: pre_patch vmlinux", "lab_callbacks: post_patch vmlinux"]
    dmesg = DMESG_OK[:2] + ["[ 10.15] " + callbacks[0], "[ 10.9] " + callbacks[1]] + DMESG_OK[2:]
    assert judge(clean_record(dmesg=dmesg), dmesg=callbacks).verdict == "pass"
    rec = clean_record(dmesg=dmesg)
    assert [r.message for r in judge(rec, dmesg=list(reversed(callbacks))).reasons] == [
        "expected, in order, but missing: 'lab_callbacks: pre_patch vmlinux'"]


def test_phases_of_an_upgrade_count_from_the_baseline_not_from_the_old_patchs_load():
    from livepatch_lab.lab.run.events import phase_seconds
    names = ["start", "built", "booted", "load-patch", "patched", "baseline", "load-patch", "patched", "disable",
             "reverted", "cooldown-end", "collect", "collected", "verdict"]
    phases = phase_seconds([{"t": 100.0 + i, "event": n} for i, n in enumerate(names)])
    assert phases == {"prepare": 1, "boot": 1, "setup": 3, "baseline": 1, "apply": 1, "patched": 1,
                      "revert": 1, "cooldown": 1, "collect": 1, "teardown": 1}


def soak_samples(slab_step: float, transition=lambda i: 0.5, left=lambda i: []):
    return [SoakSample(i, load_s=1.0, transition_s=transition(i) if i else None, unpatch_s=0.4,
                       mem_available_kib=800_000, slab_kib=40_000,
                       sunreclaim_kib=20_000 + int(i * slab_step) + (37 if i % 2 else -41), vmalloc_kib=7000,
                       modules=40, left=left(i)) for i in range(0, 21)]


def test_a_soak_of_a_clean_patch_passes_and_its_cycles_are_in_the_measurements():
    rec = clean_record(soak=soak_samples(0))
    v = judge(rec, soak=SOAK)
    assert v.verdict == "pass", v.reasons
    assert len(v.measurements["soak"]) == 21


def test_a_soak_fails_a_leak_a_leftover_and_a_steady_slow_down():
    leak = clean_record(soak=soak_samples(1024))
    msgs = [r.message for r in judge(leak, soak=SOAK).reasons if r.check == "soak"]
    assert len(msgs) == 1 and msgs[0].startswith("unreclaimable slab grew 20.0 MiB over 20 cycles, 1024 KiB a "
                                                 "cycle (> 256 allowed)")
    left = clean_record(soak=soak_samples(0, left=lambda i: ["lab_good"] if i == 7 else []))
    assert [r.message for r in judge(left, soak=SOAK).reasons] == ["cycle 7 left lab_good behind"]
    slow = clean_record(soak=soak_samples(0, transition=lambda i: 0.5 + 0.3 * i))
    msgs = [r.message for r in judge(slow, soak=SOAK).reasons if r.check == "soak"]
    assert msgs and msgs[0].startswith("transitions slowed down steadily: 1.70 s in the first cycles, 5.90 s")


# a vendor's tool against the kernel ----------------------------------------------------------
def tool(rc, kernel="patched", said="transition complete (1 seconds)", op="load"):
    return ToolRun("kpatch", op, NAME, "kpatch load x.ko", rc=rc, seconds=80.4, deadline=600.0, said=said,
                   kernel=kernel)


def stalled(with_tool):
    return clean_record(transition=Transition(completed=False, seconds=9, deadline=9, tool=with_tool,
                                    stragglers=["lab_sleeper (pid 77, tid 77) at lab_target_sleep"]),
                        revert=Revert(disabled=True, by="kpatch load", sysfs_gone=True, module_gone=True))


@pytest.mark.parametrize("said_by_tool,ending", [
    (tool(1, "gone", "kpatch: error: failed to load module lab_good (transition stalled)"),
     "; kpatch load failed (rc 1 after 80 s): 'kpatch: error: failed to load module lab_good (transition "
     "stalled)'; after it the patch is gone from the kernel"),
    (tool(None, "in transition", "[<0>] ret_from_fork+0x22/0x30"),    # killed mid-sentence: no last words
     "; kpatch load did not end within 600 s (killed); after it the patch is still in transition"),
    (tool(0, "in transition"),
     "; yet kpatch load succeeded (rc 0 after 80 s): 'transition complete (1 seconds)': the tool and the kernel "
     "disagree (the patch is still in transition)"),
    (tool(0, "patched"),
     "; kpatch load waited longer and succeeded (rc 0 after 80 s): the kernel had completed the transition by "
     "then"),
])
def test_a_stall_says_what_the_tool_did_about_it(said_by_tool, ending):
    (check, message), = [(r.check, r.message) for r in judge(stalled(said_by_tool)).reasons]
    assert check == "transition"
    assert message == ("patching did not complete within 9 s; still unpatched: lab_sleeper (pid 77, tid 77) at "
                       "lab_target_sleep" + ending)


def test_a_completed_transition_needs_the_tool_to_agree():
    agreed = clean_record(transition=Transition(completed=True, seconds=1, deadline=9, tool=tool(0)))
    assert checks_of(agreed) == set()
    gone = clean_record(transition=Transition(completed=True, seconds=1, deadline=9,
                                    tool=tool(1, "gone", "kpatch: error")))
    assert [r.message for r in judge(gone).reasons if r.check == "transition"] == [
        "the transition completed, but once kpatch load ended (failed (rc 1 after 80 s): 'kpatch: error') the "
        "patch was gone from the kernel"]


def test_a_revert_tool_must_agree_with_the_kernel():
    ok = Revert(disabled=True, rmmod_rc=0, sysfs_gone=True, module_gone=True)
    assert checks_of(clean_record(revert=dataclasses.replace(ok, tool=tool(0, op="revert")))) == set()
    left = clean_record(revert=dataclasses.replace(ok, module_gone=False, tool=tool(0, op="revert")))
    assert [r.message for r in judge(left).reasons if r.check == "revert"] == [
        f"module {NAME} still in /proc/modules although kpatch revert succeeded (rc 0 after 80 s)"]


# the kernel's memory detectors, a use after unload, leaks in one run ---------------------------
from pathlib import Path  # noqa: E402

from livepatch_lab.lab.run.livepatch import LOADING  # noqa: E402

CONSOLE = Path(__file__).parent / "data" / "console"


def with_lines(lines, name=NAME):
    """The clean record's log with the lab's load mark, then ``lines`` after the patch's load."""
    return DMESG_OK[:1] + [f"[   10.0] {LOADING}{name}"] + DMESG_OK[1:4] + lines + DMESG_OK[4:]


def test_a_slub_report_after_the_load_fails_dmesg_quoting_it_and_the_function_it_names():
    report = (CONSOLE / "slub-redzone.log").read_text().splitlines()
    at = next(i for i, line in enumerate(report) if "Right Redzone" in line)
    rec = clean_record(dmesg=with_lines(report[at - 1:at + 40], "lab_overflow"), patch_name="lab_overflow",
                       patches={"lab_overflow": clean_record().patches[NAME]})
    dmesg = [r.message for r in judge(rec).reasons if r.check == "dmesg"]
    assert dmesg[0] == ("slub: BUG lab_overflow (Tainted: G           OE K   ): Right Redzone overwritten "
                        "(in lab_overflow_cmdline_show+0x4b/0x62 [lab_overflow])")


def test_a_kfence_report_names_the_function_from_its_first_line():
    rec = clean_record(dmesg=with_lines([
        "[   12.0] ==================================================================",
        "[   12.0] BUG: KFENCE: use-after-free read in lab_uaf_cmdline_show+0x3a/0x80 [lab_uaf]"]))
    assert [r.message for r in judge(rec).reasons] == [
        "kfence: BUG: KFENCE: use-after-free read in lab_uaf_cmdline_show+0x3a/0x80 [lab_uaf] "
        "(in lab_uaf_cmdline_show+0x3a/0x80 [lab_uaf])"]


def test_trouble_the_kernel_reported_before_the_patchs_load_is_an_error_not_a_fail():
    early = DMESG_OK[:1] + ["[    9.0] BUG kmalloc-64 (Not tainted): Poison overwritten",
                            f"[   10.0] {LOADING}{NAME}"] + DMESG_OK[1:]
    v = judge(clean_record(dmesg=early))
    assert v.verdict == "error"
    assert v.reasons[0].message.startswith("the kernel reported trouble before the patch's module was loaded, "
                                           "so it is not the patch's doing: slub: BUG kmalloc-64")


def test_without_the_load_mark_a_report_counts_as_the_patchs_once_its_load_was_sent():
    # a report storm can overrun the kernel's log and take the lab's mark with it
    rec = clean_record(dmesg=DMESG_OK + ["[   12.0] BUG kmalloc-64 (Not tainted): Object already free"])
    assert judge(rec).verdict == "fail"
    assert judge(clean_record(dmesg=rec.dmesg, patch_issued=False)).verdict == "error"


def test_a_console_report_before_the_load_is_an_error():
    f = Finding("slub", False, "BUG kmalloc-64 (Not tainted): Poison overwritten", 103)
    rec = clean_record(console_findings=[f], console_from=100, console_at_load=5, console=["x"] * 10)
    assert judge(rec).verdict == "error"
    rec = clean_record(console_findings=[f], console_from=100, console_at_load=1, console=["x"] * 10)
    assert judge(rec).verdict == "fail"


def unloaded_timer():
    """The lab_timer run of the golden console: where its module lay, and the console after."""
    patch = PatchRecord("lab_timer", loaded=True, revert=Revert(disabled=True, rmmod_rc=0, module_gone=True),
                        sections={".text": 0xffffffffc0273000, ".data": 0xffffffffc0275000,
                                  ".bss": 0xffffffffc0275700, ".gnu.linkonce.this_module": 0xffffffffc0275380},
                        core=(0xffffffffc0273000, 16384),
                        functions=[(0xffffffffc0273000, "lab_timer_tick [lab_timer]"),
                                   (0xffffffffc0273030, "lab_timer_cmdline_show [lab_timer]")])
    return patch, (CONSOLE / "use-after-unload.log").read_text().splitlines()


def test_a_fault_where_the_unloaded_module_lay_is_named_a_use_after_unload():
    patch, console = unloaded_timer()
    rec = clean_record(patch_name="lab_timer", patches={"lab_timer": patch}, console=console, dmesg=[],
                       guest_lost="the guest stopped answering", early=[Reason("dmesg", "the guest stopped")])
    reasons = judge(rec).reasons
    assert reasons[0] == Reason("revert", (
        "use after unload: lab_timer's module was unloaded, then the kernel faulted at 0xffffffffc0275728, where "
        "the module lay (.bss+0x28): the patch left a timer, a work item or a callback armed after unload "
        "(console: BUG: unable to handle page fault for address: ffffffffc0275728)"))


def test_a_guest_that_died_during_the_rmmod_is_judged_from_the_unloading_mark():
    # debian-6.12 once: the timer fired as rmmod freed the module, before the "unloaded" mark
    patch, console = unloaded_timer()
    cut = [line.replace("livepatch-lab: unloaded lab_timer", "livepatch-lab: unloading lab_timer")
           for line in console]
    assert cut != console
    lost = clean_record(patch_name="lab_timer", patches={"lab_timer": patch}, console=cut, dmesg=[],
                        guest_lost="the guest stopped answering", early=[Reason("dmesg", "the guest stopped")])
    assert judge(lost).reasons[0].message.startswith("use after unload: lab_timer's module was unloaded, then the "
                                                     "kernel faulted at 0xffffffffc0275728")
    # a guest that lived on wrote the "unloaded" mark, or its rmmod failed: the mark alone decides
    lived = clean_record(patch_name="lab_timer", patches={"lab_timer": patch}, console=cut, dmesg=[])
    assert not [r for r in judge(lived).reasons if r.message.startswith("use after unload")]


def test_a_fault_elsewhere_after_the_unload_is_not_blamed_on_the_modules_memory():
    patch, console = unloaded_timer()
    moved = [line.replace("ffffffffc0275728", "ffffffffc0900028").replace("ffffffffc0275720", "ffffffffc0900020")
             for line in console]
    rec = clean_record(patch_name="lab_timer", patches={"lab_timer": patch}, console=moved, dmesg=[])
    assert not [r for r in judge(rec).reasons if r.message.startswith("use after unload")]


def test_an_address_in_the_modules_text_is_named_by_its_function():
    patch, _ = unloaded_timer()
    assert memcheck._where(patch, 0xffffffffc0273010) == "lab_timer_tick+0x10 [lab_timer]"
    assert memcheck._where(patch, 0xffffffffc0275390) == ".gnu.linkonce.this_module+0x10"


MEM = {"SUnreclaim": 9000, "Slab": 20000, "VmallocUsed": 7372, "MemAvailable": 800000, "Percpu": 1000,
       "modules": ["ext4", "virtio_net"], "patches": []}


@pytest.mark.parametrize("after,message", [
    ({"VmallocUsed": 7372 + 8208}, "vmalloc'ed memory (VmallocUsed) grew 8208 KiB from before the patch's load to "
                                   "after its unload (7372 -> 15580 KiB; > 1024 allowed)"),
    ({"SUnreclaim": 9000 + 1500}, "unreclaimable slab (SUnreclaim) grew 1500 KiB"),
    ({"modules": ["ext4", "virtio_net", "lab_helper"]}, "module(s) lab_helper came during the run and stayed"),
])
def test_memory_kept_after_the_unload_fails_the_revert(after, message):
    rec = clean_record(memory={"before": MEM, "after": {**MEM, **after}})
    reasons = judge(rec, thresholds=Thresholds(slab_growth_kib=1024, vmalloc_growth_kib=1024)).reasons
    assert [r.check for r in reasons] == ["revert"] and reasons[0].message.startswith(message)


def test_memory_within_the_thresholds_or_with_the_patch_still_in_is_not_a_leak():
    small = {**MEM, "SUnreclaim": 9000 + 300, "VmallocUsed": 7372 + 100, "MemAvailable": 700000}
    assert judge(clean_record(memory={"before": MEM, "after": small})).verdict == "pass"
    grown = {**MEM, "VmallocUsed": 99999}
    rec = clean_record(memory={"before": MEM, "after": grown})
    rec.patches[NAME].revert.module_gone = False   # still loaded: the revert check says so, not a leak
    assert not [r for r in judge(rec).reasons if "grew" in r.message]
    rec.patches[NAME].revert.module_gone = True
    assert [r for r in judge(rec).reasons if "grew" in r.message]


def test_a_soak_fails_vmalloc_growth_and_a_steady_fall_of_memavailable():
    samples = soak_samples(0)
    for s in samples:
        s.vmalloc_kib = 7000 + 8192 * s.cycle
        s.mem_available_kib = 800000 - 8192 * s.cycle
    msgs = [r.message for r in judge(clean_record(soak=samples), soak=SoakSpec(cycles=20, mem_kib=4096)).reasons]
    assert msgs[0].startswith("vmalloc'ed memory grew 160.0 MiB over 20 cycles, 8192 KiB a cycle (> 256 allowed)")
    assert msgs[1].startswith("MemAvailable fell 160.0 MiB over 20 cycles, 8192 KiB a cycle (> 4096 allowed)")
