"""The runner: its steps in order, the windows they make, and whose fault the trouble is.

Driven by a pretend guest (tests/unit/fakes/lab_guest.py): a small model of the
kernel's livepatch rules, the real workload scripts on this host, a real console
follower, and a machine the test can panic or have killed. The record, the
verdict and the outcome are the real ones.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import socket
from pathlib import Path

import pytest

from livepatch_lab.core.errors import ConfigError, GuestConnectionError, HarnessError
from livepatch_lab.core.settings import Settings, Timeouts
from livepatch_lab.lab.run import context
from livepatch_lab.lab.run import plans
from livepatch_lab.lab import runner
from livepatch_lab.lab.run.events import Timeline
from livepatch_lab.lab.run.prepare import Modules, Prepared
from livepatch_lab.lab.run.record import BASELINE, COOLDOWN, HOLD, TRANSITION, Revert, RunRecord
from livepatch_lab.lab.scenario.specs import (ModuleSpec, ProbeSpec, Scenario, ServiceSpec, StepSpec, StressSpec,
                                        TimelineSpec, TransitionSpec)
from livepatch_lab.lab.scenario.expect import Expect
from livepatch_lab.lab.judge.verdict import Verdict, decide
from livepatch_lab.lab.run.workload import detached
from livepatch_lab.supply.modinfo import Module

from .fakes.lab_guest import FakeKernel, K, LabGuest

PATCH, TARGET = "lab_good", "lab_target"
QUIET = Scenario(name="unit", patch=ModuleSpec(source=Path("/nowhere")), probe=ProbeSpec(),
                 service=ServiceSpec(enabled=False), stress=StressSpec(enabled=False),
                 timeline=TimelineSpec(0.05, 0.05, 0.05))
TIMEOUTS = dataclasses.replace(Timeouts(), service_start=1.0, service_stop=1.0, command=10.0)


class Evidence:
    """HangEvidence's part the runner uses, without a guest's kallsyms."""

    def prepare(self):
        pass

    def add_module(self, name, ko, text_base=""):
        pass

    def collect(self, machine, out_dir):
        return ["vCPU 0 at lab_hang_forever+0x7"]


def module(tmp_path: Path, name: str) -> Module:
    ko = tmp_path / f"{name}.ko"
    ko.write_bytes(b"\x7fELF a module")   # uploaded (to the pretend guest's nowhere) as it is
    return Module(ko, name, "6.1.0-1-amd64 SMP", name != TARGET, "6.1.0-1-amd64")


@pytest.fixture
def kernel():
    return FakeKernel()


@pytest.fixture
def lab(tmp_path, kernel, monkeypatch):
    """A run context on the pretend guest; ``lab(scenario, targets=...)``."""
    monkeypatch.setattr(detached, "GUEST_DIR", str(tmp_path / "guest"))
    made = []

    def make(sc: Scenario = QUIET, targets: tuple[str, ...] = (), patches: tuple[str, ...] = ()) -> context.Context:
        guest = LabGuest(TIMEOUTS, kernel, tmp_path)
        made.append(guest)
        rec = RunRecord(patch_name=PATCH)
        mods = {m.name: m for m in (module(tmp_path, PATCH), *(module(tmp_path, p) for p in patches),
                                    *(module(tmp_path, t) for t in targets))}
        ctx = context.Context(sc, guest, TIMEOUTS, rec, Timeline(rec), tmp_path, Evidence(), mods, PATCH,
                              list(targets), kernel=kernel)
        guest.lost = ctx.lost
        return ctx
    yield make
    for guest in made:
        guest.machine.stop()


def names(ctx: context.Context) -> list[str]:
    return [e["event"] for e in ctx.events.events]


# what each context's run was planned to show: ``judge`` reads it beside the record
EXPECT: dict[int, Expect] = {}


def run_steps(ctx: context.Context) -> None:
    """What runner._in_guest does inside the heartbeat: the steps, and trouble classed."""
    run_plan(ctx)


def judge(ctx: context.Context) -> Verdict:
    return decide(EXPECT.get(id(ctx), plans.expectations(ctx.scenario)), ctx.rec)


# the good path ------------------------------------------------------------------------------
def test_a_good_run_goes_through_every_step_in_order_and_passes(lab, kernel):
    ctx = lab(targets=(TARGET,))
    run_steps(ctx)
    assert names(ctx) == ["target-loaded", "baseline", "load-patch", "loaded", "transition-complete",
                          "livepatch-state", "patched", "disable", "livepatch-state", "unpatch-complete",
                          "unloaded", "reverted", "grace-periods", "cooldown-end", "collect", "collected"]
    rec = ctx.rec
    assert rec.ops == [("enabled", PATCH), ("patched", PATCH), ("disabled", PATCH), ("unpatched", PATCH)]
    assert rec.main.revert == Revert(disabled=True, disable_err="", disable_seconds=0.01, rmmod_rc=0, rmmod_err="",
                                     sysfs_gone=True, module_gone=True)
    assert (rec.taint_before, rec.taint_patched, rec.taint_after) == (0, K, K)
    assert kernel.modules == set() and ctx.loaded == []     # the target too: Collect unloads it
    assert judge(ctx).verdict == "pass", judge(ctx).reasons


def test_the_steps_make_the_judged_windows(lab):
    ctx = lab()
    run_steps(ctx)
    at = {e["event"]: e["t"] for e in ctx.events.events}
    w = ctx.rec.windows
    assert [(n, x.kind, x.probe_phase) for n, x in w.items()] == [
        ("baseline", BASELINE, "before"), ("apply", TRANSITION, None), ("patched", HOLD, "patched"),
        ("revert", TRANSITION, None), ("cooldown", COOLDOWN, "after")]
    # a transition window runs 1 s past its last step, and the next window starts there
    assert w["apply"].start == pytest.approx(at["load-patch"], abs=0.01)
    assert w["apply"].end == pytest.approx(at["patched"] + 1.0, abs=0.01) == w["patched"].start
    assert w["revert"].start == pytest.approx(at["disable"], abs=0.01)
    assert w["revert"].end == pytest.approx(at["reverted"] + 1.0, abs=0.01) == w["cooldown"].start


def test_windows_of_repeated_steps_get_their_own_names():
    class S(context.Step):
        def __init__(self, window):
            self.window = window
    hold, tr = ("patched", HOLD, None), ("apply", TRANSITION, None)
    got = runner.windows([(S(tr), 0, 1), (S(tr), 1, 2), (S(hold), 2, 5), (S(tr), 5, 6), (S(hold), 6, 9)])
    assert [(n, x.start, x.end) for n, x in got.items()] == [
        ("apply", 0, 3.0), ("patched", 3.0, 5), ("apply 2", 5, 7.0), ("patched 2", 7.0, 9)]


# the patch's fault: fail ----------------------------------------------------------------------
def test_a_refused_load_fails_on_load_and_goes_straight_to_collecting(lab, kernel):
    kernel.refuse[PATCH] = "Invalid parameters"
    ctx = lab()
    run_steps(ctx)
    assert names(ctx) == ["baseline", "load-patch", "collect", "collected"]
    v = judge(ctx)
    assert v.verdict == "fail" and [r.check for r in v.reasons] == ["load"]
    assert "Invalid parameters" in v.reasons[0].message


def test_a_stalled_transition_is_unwound_and_fails_on_transition(lab, kernel):
    kernel.stall.add(PATCH)
    ctx = lab(dataclasses.replace(QUIET, transition=TransitionSpec(timeout=3)))
    run_steps(ctx)
    assert "transition-stalled" in names(ctx) and "patched" not in names(ctx)
    assert kernel.calls[-3:] == [f"disable {PATCH}", f"wait {PATCH}", f"rmmod {PATCH}"]
    assert kernel.modules == set()
    v = judge(ctx)
    assert {r.check for r in v.reasons} == {"transition"}
    assert v.reasons[0].message == ("patching did not complete within 3 s; still unpatched: "
                                    "lab_sleeper (pid 77, tid 77) at lab_target_sleep+0x22/0x40")


def test_a_guest_that_stops_answering_after_the_patch_is_the_patchs_fault(lab, kernel):
    ctx = lab()

    def freeze(name):   # the heartbeat's doing, as the patch goes in
        ctx.guest.channel.mark_lost("the guest did not answer a heartbeat for 30 s")
        ctx.lost.set()
    kernel.on_load = freeze
    run_steps(ctx)
    v = judge(ctx)
    assert v.verdict == "fail" and [r.check for r in v.reasons] == ["service"]
    assert v.reasons[0].message.startswith("the guest stopped answering (the guest did not answer a heartbeat "
                                           "for 30 s); its machine runs, and the host did not pause it or "
                                           "cut its network; vCPU 0 at lab_hang_forever+0x7")
    assert "guest-lost" in names(ctx)


@pytest.mark.parametrize("trouble", [
    "the host cut the guest's network link (QMP set_link off)",
    "the host paused the guest: write of its disk disk0 (/runs/x/root.qcow2) failed on the host: "
    "no space left on device"])
def test_a_guest_silenced_by_the_host_after_the_patch_is_an_error_not_a_fail(lab, kernel, trouble):
    """The machine still runs, but the host pulled its network cable or paused it on a full disk:
    no guest can do that to itself, so the patch is not judged."""
    ctx = lab()

    def silenced(name):
        ctx.guest.machine.trouble = trouble
        ctx.guest.channel.mark_lost("the guest did not answer a heartbeat for 30 s")
        ctx.lost.set()
    kernel.on_load = silenced
    run_steps(ctx)
    v = judge(ctx)
    assert v.verdict == "error" and ctx.rec.patch_issued
    assert f"({trouble}, not the patch)" in v.reasons[0].message


def test_a_panic_after_the_patch_fails_on_what_the_console_said(lab, kernel):
    ctx = lab()

    def panic(name):
        ctx.guest.machine.print("Kernel panic - not syncing: livepatch-lab: lab_panic was called")
        ctx.guest.machine.end("guest", "reset")
        ctx.guest.channel.mark_lost("connection closed")
    kernel.on_load = panic
    run_steps(ctx)
    v = judge(ctx)
    assert v.verdict == "fail"
    assert [r.check for r in v.reasons][:1] == ["dmesg"] and "the machine ended: reset" in v.reasons[0].message
    assert any(r.message.startswith("panic (console): Kernel panic") for r in v.reasons)


# not the patch's fault: error ------------------------------------------------------------------
def test_qemu_killed_by_the_host_after_the_patch_is_an_error_not_a_fail(lab, kernel):
    ctx = lab()

    def killed(name):
        ctx.guest.machine.end("host", "QEMU was killed by signal 9 (SIGKILL)")
        ctx.guest.channel.mark_lost("connection reset")
    kernel.on_load = killed
    run_steps(ctx)
    v = judge(ctx)
    assert v.verdict == "error" and ctx.rec.patch_issued
    assert "the host ended the guest's machine (QEMU was killed by signal 9 (SIGKILL)), not the patch" \
        in v.reasons[0].message


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_service_that_never_answers_is_an_error_and_no_patch_is_loaded(lab, kernel):
    sc = dataclasses.replace(QUIET, service=ServiceSpec(port=free_port(), command="sleep 600"))
    ctx = lab(sc)
    run_steps(ctx)
    v = judge(ctx)
    assert v.verdict == "error" and not ctx.rec.patch_issued and kernel.calls == []
    assert v.reasons[0].message.startswith(f"DeadlineExceeded: service on guest port {sc.service.port} "
                                           "answering GET /")
    assert "before the patch's module was loaded: the lab's, the host's or the guest's fault" \
        in v.reasons[0].message


def test_a_target_module_that_does_not_load_is_an_error(lab, kernel):
    kernel.refuse[TARGET] = "Unknown symbol in module"
    ctx = lab(targets=(TARGET,))
    run_steps(ctx)
    v = judge(ctx)
    assert v.verdict == "error" and "insmod" in v.reasons[0].message and kernel.calls == []


def test_a_guest_lost_during_set_up_is_an_error(lab, kernel):
    ctx = lab()
    ctx.guest.channel.mark_lost("ssh: connection reset")
    run_steps(ctx)
    assert judge(ctx).verdict == "error" and "GuestConnectionError" in ctx.rec.error


# the whole run --------------------------------------------------------------------------------
@pytest.fixture
def whole_run(tmp_path, kernel, monkeypatch):
    """runner.run with the supply and the boot stood in for: ``whole_run(sc)`` -> Outcome."""
    from livepatch_lab.lab.run import prepare as prep
    from livepatch_lab.machine import heartbeat, session
    from livepatch_lab.supply import images
    from livepatch_lab.supply.kernels import defs as kerneldefs, fetch as kernelfetch
    fake_kernel = type("K", (), {"name": "debian-6.1", "release": "6.1.0-1-amd64", "version": "6.1.1-1", "config": None,
                                 "describe": lambda self: {"name": "debian-6.1", "version": "6.1.1-1"}})()
    monkeypatch.setattr(kerneldefs, "get_definition", lambda spec: spec)
    monkeypatch.setattr(kernelfetch, "fetch", lambda defn, settings: fake_kernel)
    monkeypatch.setattr(images, "build", lambda recipe, settings: None)
    monkeypatch.setattr(prep, "prepare", lambda sc, k, s, artifacts=None: Modules(
        PATCH, {PATCH: Prepared(module(tmp_path, PATCH), sc.patch, True)}))
    monkeypatch.setattr(runner, "HangEvidence", lambda guest, settings, timeout: Evidence())
    monkeypatch.setattr(detached, "GUEST_DIR", str(tmp_path / "guest"))

    class NoHeartbeat(contextlib.nullcontext):
        def __init__(self, channel, timeout, on_lost=None):
            super().__init__()
    monkeypatch.setattr(heartbeat, "Heartbeat", NoHeartbeat)
    guests = []

    @contextlib.contextmanager
    def boot(k, image, settings, forward_ports=(), append="", artifacts_dir=None):
        guest = LabGuest(TIMEOUTS, kernel, tmp_path)
        guest.accel, guest.timings, guest.timeouts, guest.restored_from = "tcg", {}, TIMEOUTS, None
        guests.append(guest)
        try:
            yield guest
        finally:
            guest.machine.stop()
    monkeypatch.setattr(session, "boot", boot)
    return lambda sc=QUIET: runner.run(sc, "debian-6.1", Settings(cache_dir=tmp_path / "cache"),
                                       tmp_path / "out", interface=kernel)


def test_a_whole_run_writes_its_verdict_and_timeline(whole_run, tmp_path):
    outcome = whole_run()
    assert outcome.verdict.verdict == "pass"
    saved = json.loads((tmp_path / "out" / "verdict.json").read_text())
    assert saved["verdict"] == "pass" and saved["kernel_info"]["version"] == "6.1.1-1"
    assert list(saved["phases"]) == ["prepare", "boot", "setup", "baseline", "apply", "patched", "revert",
                                     "cooldown", "collect", "teardown"]


def test_bad_input_found_late_is_an_error(whole_run, monkeypatch):
    from livepatch_lab.supply.kernels import defs as kerneldefs

    def unknown(spec):
        raise ConfigError("unknown kernel 'debian-9' (known: debian-6.1)", source=spec, field="kernel")
    monkeypatch.setattr(kerneldefs, "get_definition", unknown)
    outcome = whole_run()
    assert outcome.verdict.verdict == "error" and "unknown kernel" in outcome.verdict.reasons[0].message


def test_an_interrupt_mid_run_is_recorded_as_an_error_then_raised(whole_run, kernel, tmp_path):
    def interrupt(name):
        raise KeyboardInterrupt("signal 15")
    kernel.on_load = interrupt
    with pytest.raises(KeyboardInterrupt):
        whole_run()
    saved = json.loads((tmp_path / "out" / "verdict.json").read_text())
    assert saved["verdict"] == "error" and saved["reasons"][0]["message"].startswith("interrupted (signal 15)")


def test_a_lost_channel_is_a_guest_connection_error(lab):
    ctx = lab()
    ctx.guest.channel.mark_lost("gone")
    with pytest.raises(GuestConnectionError):
        ctx.guest.run("true")


# lifecycles --------------------------------------------------------------------------------
OLD = "lab_old"


def run_plan(ctx: context.Context, old=None, keys=None) -> None:
    planned = plans.plan(ctx.scenario, PATCH, old, keys or {})
    EXPECT[id(ctx)] = planned.expect
    try:
        runner.execute(ctx, planned.steps)
    except HarnessError as exc:
        runner.trouble(ctx, exc)


def test_an_upgrade_by_atomic_replace_retires_the_old_patch_and_unloads_it(lab, kernel):
    kernel.replace.add(PATCH)
    ctx = lab(patches=(OLD,))
    run_plan(ctx, old=OLD)
    rec = ctx.rec
    assert rec.replaced == {OLD: PATCH} and kernel.modules == set()
    assert rec.patches[OLD].revert.module_gone and rec.patches[OLD].revert.disabled is None
    assert "old again" not in rec.windows and "revert old" not in rec.windows
    assert [w for w in rec.windows] == ["baseline", "apply", "patched", "revert", "cooldown"]
    assert rec.lifecycle == [] and judge(ctx).verdict == "pass", judge(ctx).reasons
    assert kernel.calls.index(f"rmmod {OLD}") < kernel.calls.index(f"disable {PATCH}")   # while NEW holds


def test_a_stacked_upgrade_holds_the_old_patch_alone_then_reverts_it(lab, kernel):
    ctx = lab(patches=(OLD,))
    run_plan(ctx, old=OLD)
    rec = ctx.rec
    assert rec.replaced == {} and kernel.modules == set()
    assert list(rec.windows) == ["baseline", "apply", "patched", "revert", "old again", "revert old", "cooldown"]
    assert rec.ops == [("enabled", OLD), ("patched", OLD), ("enabled", PATCH), ("patched", PATCH),
                       ("disabled", PATCH), ("unpatched", PATCH), ("disabled", OLD), ("unpatched", OLD)]
    assert judge(ctx).verdict == "pass", judge(ctx).reasons


def test_a_new_patch_the_kernel_refuses_fails_on_load_and_the_old_one_is_cleaned_up(lab, kernel):
    kernel.refuse[PATCH] = ("livepatch: Livepatch patch (lab_good) is not compatible with the already "
                            "installed livepatches.")
    ctx = lab(patches=(OLD,))
    run_plan(ctx, old=OLD)
    v = judge(ctx)
    assert [r.check for r in v.reasons] == ["load"] and "not compatible" in v.reasons[0].message
    assert kernel.modules == set() and kernel.calls[-3:] == [f"disable {OLD}", f"wait {OLD}", f"rmmod {OLD}"]


def lifecycle_scenario(*specs: StepSpec) -> Scenario:
    return dataclasses.replace(QUIET, steps=specs)


def test_a_lifecycle_runs_its_steps_each_in_a_window_of_its_own_and_reverts_what_is_left(lab, kernel):
    sc = lifecycle_scenario(StepSpec("load", "a"), StepSpec("hold", seconds=0.05), StepSpec("load", "b"),
                            StepSpec("hold", seconds=0.05), StepSpec("disable", "b"), StepSpec("unload", "b"))
    ctx = lab(sc, patches=(OLD,))
    run_plan(ctx, keys={"a": OLD, "b": PATCH})
    rec = ctx.rec
    assert list(rec.windows) == ["baseline", "load a", "hold 1", "load b", "hold 2", "disable b", "unload b",
                                 f"revert {OLD}", "cooldown"]
    assert [w.kind for w in rec.windows.values()] == [BASELINE, TRANSITION, HOLD, TRANSITION, HOLD, TRANSITION,
                                                       TRANSITION, TRANSITION, COOLDOWN]
    assert rec.taint_held == [("hold 1", K), ("hold 2", K)] and kernel.modules == set()
    assert rec.lifecycle == [] and judge(ctx).verdict == "pass", judge(ctx).reasons


def test_a_load_the_scenario_expects_refused_passes_when_the_kernel_refuses_it(lab, kernel):
    kernel.refuse[PATCH] = "Invalid argument"
    kernel.log.append(f"[ 1.0] livepatch: failed to enable patch '{PATCH}'")   # said by the kernel: excused
    sc = lifecycle_scenario(StepSpec("load", "a"), StepSpec("load", "b", expect="refused"),
                            StepSpec("hold", seconds=0.05))
    ctx = lab(sc, patches=(OLD,))
    run_plan(ctx, keys={"a": OLD, "b": PATCH})
    assert ctx.rec.patches[PATCH].refused.endswith("Invalid argument") and "refused" in names(ctx)
    assert judge(ctx).verdict == "pass", judge(ctx).reasons
    kernel.refuse.clear()
    ctx = lab(sc, patches=(OLD,))
    run_plan(ctx, keys={"a": OLD, "b": PATCH})
    assert [r.message for r in judge(ctx).reasons] == [
        "the kernel accepted lab_good, but the scenario expects it to refuse it"]
    assert kernel.modules == set()


def test_sysfs_not_as_the_lifecycle_implies_fails_on_lifecycle(lab, kernel, monkeypatch):
    ctx = lab(lifecycle_scenario(StepSpec("load", "a"), StepSpec("load", "b")), patches=(OLD,))
    real = kernel.patches
    monkeypatch.setattr(kernel, "patches", lambda g, t: {n: s for n, s in real(g, t).items() if n != OLD}
                        if PATCH in kernel.enabled else real(g, t))   # a replaces b "by half"
    run_plan(ctx, keys={"a": OLD, "b": PATCH})
    msgs = [r.message for r in judge(ctx).reasons if r.check == "lifecycle"]
    assert msgs == []   # one patch before: gone entirely reads as a replace
    assert ctx.rec.replaced == {OLD: PATCH}


def test_a_patch_refused_under_signature_enforcement_fails_on_signature_naming_its_signature(lab, kernel):
    from livepatch_lab.lab.scenario.specs import SecuritySpec
    kernel.refuse[PATCH] = "ERROR: could not insert module lab_good.ko: Key was rejected by service"
    ctx = lab(dataclasses.replace(QUIET, security=SecuritySpec(sig_enforce=True)))
    run_steps(ctx)
    v = judge(ctx)
    assert [r.check for r in v.reasons] == ["signature"]
    assert v.reasons[0].message.startswith("the kernel, enforcing module signatures, refused lab_good (unsigned): "
                                           "a host with Secure Boot or lockdown would refuse this patch too")
    kernel.refuse[PATCH] = "ERROR: could not insert module lab_good.ko: Invalid parameters"
    ctx = lab(dataclasses.replace(QUIET, security=SecuritySpec(sig_enforce=True)))
    run_steps(ctx)
    assert [r.check for r in judge(ctx).reasons] == ["load"]   # another refusal stays a load failure


def test_a_full_artifact_folder_makes_the_run_an_error_naming_it(whole_run, tmp_path, monkeypatch):
    from livepatch_lab.lab.report import outcome as outcomes

    def write(out_dir, result, rec):
        (out_dir / "verdict.json").write_text("{}")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(outcomes, "write", write)
    result = whole_run()
    assert result.verdict.verdict == "error"
    assert result.verdict.reasons[0].message.startswith(
        f"DiskFull: no space left on device in {tmp_path / 'out'} while writing the run's verdict")
    assert not (tmp_path / "out" / "verdict.json").exists()   # a verdict.json would claim a pass


def test_a_ctrl_c_mid_run_says_so_in_its_error(whole_run, kernel, tmp_path):
    def interrupt(name):
        raise KeyboardInterrupt    # what Python's own SIGINT handler raises: no message
    kernel.on_load = interrupt
    with pytest.raises(KeyboardInterrupt):
        whole_run()
    saved = json.loads((tmp_path / "out" / "verdict.json").read_text())
    assert saved["reasons"][0]["message"].startswith("interrupted (Ctrl-C): the run was stopped before its verdict")
