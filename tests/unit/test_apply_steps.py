"""A run whose patch goes in and out through a vendor's tool: the kernel judges, the tool is
heard out and recorded, and the verdict says where the two disagree.

The pretend guest and kernel of test_runner.py, with ``KpatchModel`` standing in for kpatch
in the guest: what ``kpatch load`` and ``kpatch unload`` do to the kernel, and what they print
and return, while the real ``apply.Tool`` starts, watches and hears them out.
"""
from __future__ import annotations

import dataclasses
import json

import pytest

from livepatch_lab.core.errors import LivepatchError
from livepatch_lab.lab.run import apply, plans, steps
from livepatch_lab.lab import runner
from livepatch_lab.lab.run.events import Timeline
from livepatch_lab.lab.report.outcome import Outcome, write
from livepatch_lab.lab.run.record import Revert, RunRecord
from livepatch_lab.lab.scenario.specs import ApplySpec, TransitionSpec
from livepatch_lab.lab.judge.verdict import decide
from livepatch_lab.lab.run.workload import detached

from .fakes.lab_guest import FakeKernel, LabGuest
from .test_runner import PATCH, QUIET, TIMEOUTS, Evidence, module, names

KPATCH = dataclasses.replace(QUIET, apply=ApplySpec("kpatch"))


class KpatchModel:
    """kpatch on the pretend kernel. ``load``: insmod, then (when the lab hears it out) wait for
    the transition; on a stall it gives up, disables and unloads the patch and fails, or, with
    ``lies``, says it succeeded. ``unload``: disable, then unload; ``revert_rc`` is what it returns."""

    def __init__(self, kernel: FakeKernel, lies: bool = False, load_rc: int = 0, revert_rc: int = 0):
        self.kernel, self.lies, self.load_rc, self.revert_rc = kernel, lies, load_rc, revert_rc
        self.running: dict[str, tuple[str, str]] = {}

    def install(self, monkeypatch) -> "KpatchModel":
        hear = apply.Tool._hear

        def heard(tool, ctx, call):
            if call.key in self.running:
                self._end(call.key)
            return hear(tool, ctx, call)
        monkeypatch.setattr(detached, "start", self.start)
        monkeypatch.setattr(apply, "_await", self.wait)
        monkeypatch.setattr(apply.Tool, "_hear", heard)
        return self

    def start(self, guest, key, command, env=None, stop_first=True):
        _, op, name = key.split("-", 2)
        self.running[key] = (op, name)
        if op == "load":
            try:
                self.kernel.load(guest, f"/run/lab/modules/{name}.ko", 1)
            except LivepatchError as exc:
                self._write(key, 1, f"loading patch module: {name}.ko\n{exc}\nkpatch: failed to load module\n")
        else:
            self.kernel.disable(guest, name, 1)

    def wait(self, guest, call, until, slack):
        listed = self.kernel.enabled.get(call.patch)
        if call.key in self.running and (listed if until == "listed" else not listed):
            return apply.Seen(until, 0.5, "0xffffffffc0000000\n" if until == "listed" else "")
        return apply.Seen("ended", None)

    def _end(self, key):
        op, name = self.running.pop(key)
        if op == "revert":
            self.kernel.unload(None, name, 1)
            self._write(key, self.revert_rc, f"disabling patch module: {name}\nunloading patch module: {name}\n")
        elif name in self.kernel.stall and not self.lies:
            self.kernel.disable(None, name, 1)
            self.kernel.unload(None, name, 1)
            self._write(key, 1, f"module {name} did not complete its transition, unloading...\n"
                                f"kpatch: error: failed to load module {name} (transition stalled)\n")
        else:
            self._write(key, self.load_rc, "transition complete (1 seconds)\n")

    def _write(self, key, rc, output):
        self.running.pop(key, None)
        for ext, text in (("log", output), ("t0", "100.0"), ("t1", "101.5"), ("rc", str(rc))):
            with open(detached.path(f"{key}.{ext}"), "w") as fh:
                fh.write(text + "\n" if ext != "log" else text)


@pytest.fixture
def kernel():
    return FakeKernel()


@pytest.fixture
def run(tmp_path, kernel, monkeypatch):
    """``run(model, scenario)``: the steps of a run through the model's kpatch -> its context."""
    (tmp_path / "guest").mkdir()
    monkeypatch.setattr(detached, "GUEST_DIR", str(tmp_path / "guest"))
    guests = []

    def go(model: KpatchModel, sc=KPATCH) -> steps.Context:
        model.install(monkeypatch)
        guest = LabGuest(TIMEOUTS, kernel, tmp_path)
        guests.append(guest)
        rec = RunRecord(patch_name=PATCH)
        ctx = steps.Context(sc, guest, TIMEOUTS, rec, Timeline(rec), tmp_path, Evidence(),
                            {PATCH: module(tmp_path, PATCH)}, PATCH, applier=apply.applier(sc.apply),
                            kernel=kernel)
        guest.lost = ctx.lost
        runner.execute(ctx, plans.plan(sc, PATCH, None, {}).steps)
        return ctx
    yield go
    for guest in guests:
        guest.machine.stop()


def judge(ctx):
    """The verdict on the run, against what its plan expected."""
    return decide(plans.plan(ctx.scenario, PATCH, None, {}).expect, ctx.rec)


def reasons(ctx) -> list[tuple[str, str]]:
    return [(r.check, r.message) for r in judge(ctx).reasons]


def test_a_good_patch_through_the_tool_passes_with_every_call_recorded(run, kernel, tmp_path):
    ctx = run(KpatchModel(kernel))
    assert judge(ctx).verdict == "pass", reasons(ctx)
    assert names(ctx) == ["baseline", "load-patch", "tool-started", "loaded", "transition-complete", "tool-ended",
                          "livepatch-state", "patched", "disable", "tool-started", "livepatch-state",
                          "unpatch-complete", "tool-ended", "unloaded", "reverted", "grace-periods", "cooldown-end",
                          "collect", "collected"]
    load, revert = ctx.rec.tool_runs
    assert (load.op, load.command, load.rc, load.seconds) == ("load", "kpatch load /run/lab/modules/lab_good.ko", 0, 1.5)
    assert (revert.op, revert.command, revert.rc) == ("revert", "kpatch unload lab_good", 0)
    said = ctx.rec.main.transition.tool
    assert said and said.kernel == "patched"
    assert ctx.rec.main.revert.module_gone and kernel.modules == set()
    # one load, one disable, one rmmod: all the tool's (the lab did none of its own)
    assert [c for c in kernel.calls if not c.startswith("wait")] == [f"insmod {PATCH}", f"disable {PATCH}",
                                                                     f"rmmod {PATCH}"]
    measured = judge(ctx).measurements["tool_runs"]
    assert [m["op"] for m in measured] == ["load", "revert"] and "output" not in measured[0]
    out = tmp_path / "art"
    out.mkdir()
    write(out, Outcome("kpatch-good", "debian-6.1", judge(ctx)), ctx.rec)
    log = (out / "apply.log").read_text()
    assert log.startswith("== kpatch load lab_good: kpatch load /run/lab/modules/lab_good.ko\n"
                          "== rc 0 after 1.50 s\ntransition complete (1 seconds)\n")
    assert "== kpatch revert lab_good: kpatch unload lab_good\n" in log


def test_a_stall_the_tool_gives_up_on_fails_on_transition_and_leaves_nothing_to_unwind(run, kernel):
    kernel.stall.add(PATCH)
    ctx = run(KpatchModel(kernel), dataclasses.replace(KPATCH, transition=TransitionSpec(timeout=3)))
    assert reasons(ctx) == [("transition", "patching did not complete within 3 s; still unpatched: lab_sleeper "
                                           "(pid 77, tid 77) at lab_target_sleep+0x22/0x40; kpatch load failed "
                                           "(rc 1 after 2 s): 'kpatch: error: failed to load module lab_good "
                                           "(transition stalled)'; after it the patch is gone from the kernel")]
    assert ctx.rec.main.revert == Revert(disabled=True, by="kpatch load", sysfs_gone=True, module_gone=True)
    assert ctx.loaded == [] and kernel.modules == set()
    assert "disable" not in names(ctx)     # the lab had nothing left to revert


def test_a_tool_that_reports_success_on_a_stalled_transition_is_contradicted(run, kernel):
    kernel.stall.add(PATCH)
    ctx = run(KpatchModel(kernel, lies=True), dataclasses.replace(KPATCH, transition=TransitionSpec(timeout=3)))
    (check, message), = [r for r in reasons(ctx) if r[0] == "transition"]
    assert message.endswith("; yet kpatch load succeeded (rc 0 after 2 s): 'transition complete (1 seconds)': "
                            "the tool and the kernel disagree (the patch is still in transition)")
    assert kernel.modules == set()        # the lab unwound it


def test_a_tool_that_fails_although_the_kernel_completed_the_transition_fails_on_load(run, kernel):
    ctx = run(KpatchModel(kernel, load_rc=1))
    assert reasons(ctx) == [("load", "kpatch load failed (rc 1 after 2 s): 'transition complete (1 seconds)' "
                                     "although the kernel completed the transition: the tool and the kernel "
                                     "disagree")]
    assert kernel.modules == set()


def test_a_load_the_tool_fails_fails_on_load_in_the_tools_words(run, kernel):
    kernel.refuse[PATCH] = "Invalid parameters"
    ctx = run(KpatchModel(kernel))
    (check, message), = reasons(ctx)
    assert check == "load" and message.startswith("kpatch load /run/lab/modules/lab_good.ko failed (rc 1):")
    assert "Invalid parameters" in message and "kpatch: failed to load module" in message


def test_a_revert_the_tool_fails_although_the_kernel_reverted_is_contradicted(run, kernel):
    ctx = run(KpatchModel(kernel, revert_rc=1))
    assert reasons(ctx) == [("revert", "kpatch revert failed (rc 1 after 2 s): 'unloading patch module: lab_good': "
                                       "the tool and the kernel disagree (the kernel reverted the patch and its "
                                       "module is gone)")]


def test_a_scenario_with_an_image_boots_that_image(tmp_path, monkeypatch):
    """runner.run builds the scenario's recipe (the tool's, here), not the default one."""
    from livepatch_lab.supply import images, recipes
    from livepatch_lab.supply.kernels import defs as kerneldefs, fetch as kernelfetch
    built = []
    monkeypatch.setattr(kerneldefs, "get_definition", lambda spec: spec)
    monkeypatch.setattr(kernelfetch, "fetch", lambda defn, settings: type(
        "K", (), {"config": None, "describe": lambda self: {"name": "debian-6.1"}})())
    monkeypatch.setattr(recipes, "load_recipe", lambda path: path)

    def build(recipe, settings):
        built.append(recipe)
        raise LivepatchError("stop here")
    monkeypatch.setattr(images, "build", build)
    from livepatch_lab.core.settings import Settings
    sc = dataclasses.replace(KPATCH, image=tmp_path / "kpatch.yaml")
    runner.run(sc, "debian-6.1", Settings(cache_dir=tmp_path / "cache"), tmp_path / "out")
    runner.run(QUIET, "debian-6.1", Settings(cache_dir=tmp_path / "cache"), tmp_path / "out")
    assert built == [tmp_path / "kpatch.yaml", recipes.DEFAULT_RECIPE]
    assert json.loads((tmp_path / "out" / "verdict.json").read_text())["verdict"] == "error"
