"""A scenario's step list (steps.py), with the windows each step is judged in.

- one patch: baseline → load → transition → hold → disable → unpatch →
  unload → cool-down (the windows ``baseline``, ``apply``, ``patched``,
  ``revert``, ``cooldown``);
- an upgrade from the patch in the field (``upgrade_from``): the old patch is
  loaded and settled before the baseline, then the new one goes in under load;
  an atomic replace retires the old one (its module must unload), a stack
  leaves it enabled: it is then held alone (the probe shows the old patch
  again), disabled and unloaded in turn;
- a lifecycle (``patches`` + ``steps``): the scenario's own steps between the
  baseline and the cool-down, each in a window of its own name; whatever they
  leave loaded is reverted at the end, newest first.
"""
from __future__ import annotations

import time
from typing import Callable, Optional

from .context import Step
from .record import HOLD, TRANSITION, RunRecord
from .setup import Setup
from .specs import Scenario, StepSpec
from .steps import (Baseline, Cooldown, CostArm, CostCycle, Disable, Hold, LoadPatch, LoadTarget, MemSample, RetireReplaced,
                    Sample, Unload, UnloadTarget, WaitTransition, WaitUnpatch)


class RevertRest(Step):
    """Disable and unload, newest first, the patches the steps left loaded (their windows named
    ``revert <patch>``); the revert of each is judged like any other."""

    def run(self, ctx) -> bool:
        for name in reversed(list(ctx.loaded)):
            window = (f"revert {name}", TRANSITION, None)
            for step in (Disable(name, window), WaitUnpatch(name, window), Unload(name, window, last=False)):
                t0 = time.time()
                if step.run(ctx) is not False:
                    ctx.done.append((step, t0, time.time()))
        ctx.events("reverted")
        return False   # no window of its own: its steps made theirs


class HoldIf(Hold):
    """A hold that happens only when ``when(ctx)``: e.g. the old patch is still enabled."""

    def __init__(self, seconds: float, window, when: Callable):
        super().__init__(seconds, window)
        self.when = when

    def run(self, ctx):
        if not self.when(ctx):
            return False
        return super().run(ctx)


def plan(sc: Scenario, patch: str, old: Optional[str], keys: dict[str, str], rec: RunRecord) -> list[Step]:
    """The steps of ``sc``; ``patch``/``old`` are module names, ``keys`` maps the scenario's names
    to module names. The probe expectations of lifecycle holds go into ``rec``."""
    tl = sc.timeline
    # the memory before the first load and after the cool-down: what the patches kept (a leak)
    before, after = MemSample("before"), MemSample("after")
    if sc.soak.cycles:
        return [Setup(), Baseline(tl.baseline), Sample(0), before, *_soak(sc, patch, rec), Cooldown(tl.cooldown),
                after]
    if sc.steps:
        return [Setup(), Baseline(tl.baseline), before, *_lifecycle(sc.steps, keys, rec), RevertRest(),
                Cooldown(tl.cooldown), after]
    steps: list[Step] = [Setup()]
    if old:
        steps += [LoadPatch(old, window=None), WaitTransition(old, window=None)]
    steps += [Baseline(tl.baseline), before, LoadPatch(patch), WaitTransition(patch)]
    if old:
        steps.append(RetireReplaced(patch))
    steps += [Hold(tl.patched), Disable(patch), WaitUnpatch(patch), Unload(patch, last=not old)]
    if old:   # stacked: the old patch alone again, then its own revert
        if sc.probe.command:
            rec.probe_same["old again"] = "before"
        revert = ("revert old", TRANSITION, None)
        steps += [HoldIf(tl.patched, ("old again", HOLD, "old again"), lambda ctx: old in ctx.loaded),
                  Disable(old, revert), WaitUnpatch(old, revert), Unload(old, revert)]
    # the cost workload (lab/overhead.py), once the judged windows are over: unpatched blocks, then
    # load/revert cycles, each timing patched and unpatched blocks (the arms interleaved)
    costs = [CostArm(), *(CostCycle(patch, i + 1) for i in range(sc.overhead.cycles))] if sc.overhead.enabled else []
    return steps + [Cooldown(tl.cooldown), after, *costs]


def _soak(sc: Scenario, patch: str, rec: RunRecord) -> list[Step]:
    """Cycle after cycle: apply, hold, revert, sample. Every hold is judged like the first (the
    probe's ``patched`` pattern, the service), every transition like any other."""
    out: list[Step] = []
    rec.soak_limits = {"leak_kib": sc.soak.leak_kib, "slowdown": sc.soak.slowdown, "mem_kib": sc.soak.mem_kib}
    for i in range(1, sc.soak.cycles + 1):
        phase = "patched" if i == 1 else f"patched {i}"
        if i > 1 and "patched" in rec.probe_expect:
            rec.probe_expect[phase] = rec.probe_expect["patched"]
        out += [LoadPatch(patch), WaitTransition(patch), Hold(sc.soak.hold, ("patched", HOLD, phase)),
                Disable(patch), WaitUnpatch(patch), Unload(patch, last=i == sc.soak.cycles), Sample(i)]
    return out


def _lifecycle(specs: tuple[StepSpec, ...], keys: dict[str, str], rec: RunRecord) -> list[Step]:
    out: list[Step] = []
    holds = 0
    for i, s in enumerate(specs):
        name = keys.get(s.subject or "", s.subject or "")
        window = (f"{s.action} {s.subject}", TRANSITION, None)
        if s.action == "load":
            out += [LoadPatch(name, window, refused=s.expect == "refused"), WaitTransition(name, window)]
        elif s.action == "disable":
            out += [Disable(name, window), WaitUnpatch(name, window)]
        elif s.action == "unload":
            out.append(Unload(name, window, last=False))
        elif s.action == "load_target":
            out.append(LoadTarget(name, window))
        elif s.action == "unload_target":
            out.append(UnloadTarget(name, window))
        else:
            holds += 1
            label = f"hold {holds}"
            expect = s.probe or (specs[i - 1].probe if i and specs[i - 1].action != "hold" else None)
            if expect:
                after = specs[i - 1] if i and specs[i - 1].action != "hold" else None
                label = f"after {after.action} {after.subject}" if after else label
                rec.probe_expect[label] = expect
            out.append(Hold(s.seconds, (label, HOLD, label if expect else None)))
    return out
