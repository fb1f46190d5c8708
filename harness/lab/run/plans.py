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

The plan also says what the run is judged against (``Expect``): the scenario's thresholds and
probe patterns, and those its steps imply (each soak cycle's hold, each lifecycle hold).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Callable, Optional

from .context import Step
from ..scenario.expect import Expect
from .record import HOLD, TRANSITION
from .setup import Setup
from ..scenario.specs import Scenario, StepSpec
from .coststeps import CostArm, CostCycle
from .steps import (Baseline, Cooldown, Disable, Hold, LoadPatch, LoadTarget, MemSample,
                    RetireReplaced, Sample, Unload, UnloadTarget, WaitTransition, WaitUnpatch)


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


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...]
    expect: Expect


def expectations(sc: Scenario) -> Expect:
    """What ``sc`` is judged against before any step is planned: enough to judge a run that
    ended before its steps (a build failure, a guest that never came up)."""
    return Expect(thresholds=sc.thresholds, service=sc.service.enabled, probe=sc.probe.patterns,
                  dmesg=sc.dmesg_expect, soak=sc.soak if sc.soak.cycles else None)


def plan(sc: Scenario, patch: str, old: Optional[str], keys: dict[str, str]) -> Plan:
    """The steps of ``sc`` and what they are judged against; ``patch``/``old`` are module names,
    ``keys`` maps the scenario's names to module names."""
    base = expectations(sc)
    probe = dict(base.probe)
    same: dict[str, str] = {}
    tl = sc.timeline
    # the memory before the first load and after the cool-down: what the patches kept (a leak)
    before, after = MemSample("before"), MemSample("after")
    steps: list[Step] = [Setup()]
    if sc.soak.cycles:
        steps += [Baseline(tl.baseline), Sample(0), before, *_soak(sc, patch, probe), Cooldown(tl.cooldown), after]
    elif sc.steps:
        steps += [Baseline(tl.baseline), before, *_lifecycle(sc.steps, keys, probe), RevertRest(),
                  Cooldown(tl.cooldown), after]
    else:
        steps += _single(sc, patch, old, same, before, after)
    return Plan(tuple(steps), replace(base, probe=probe, probe_same=same))


def _single(sc: Scenario, patch: str, old: Optional[str], same: dict[str, str], before: Step,
            after: Step) -> list[Step]:
    tl = sc.timeline
    steps: list[Step] = []
    if old:
        steps += [LoadPatch(old, window=None), WaitTransition(old, window=None)]
    steps += [Baseline(tl.baseline), before, LoadPatch(patch), WaitTransition(patch)]
    if old:
        steps.append(RetireReplaced(patch))
    steps += [Hold(tl.patched), Disable(patch), WaitUnpatch(patch), Unload(patch, last=not old)]
    if old:   # stacked: the old patch alone again, then its own revert
        if sc.probe.command:
            same["old again"] = "before"
        revert = ("revert old", TRANSITION, None)
        steps += [HoldIf(tl.patched, ("old again", HOLD, "old again"), lambda ctx: old in ctx.loaded),
                  Disable(old, revert), WaitUnpatch(old, revert), Unload(old, revert)]
    # the cost workload (lab/judge/overhead.py), once the judged windows are over: unpatched blocks, then
    # load/revert cycles, each timing patched and unpatched blocks (the arms interleaved)
    costs = [CostArm(), *(CostCycle(patch, i + 1) for i in range(sc.overhead.cycles))] if sc.overhead.enabled else []
    return steps + [Cooldown(tl.cooldown), after, *costs]


def _soak(sc: Scenario, patch: str, probe: dict[str, str]) -> list[Step]:
    """Cycle after cycle: apply, hold, revert, sample. Every hold is judged like the first (the
    probe's ``patched`` pattern, the service), every transition like any other."""
    out: list[Step] = []
    for i in range(1, sc.soak.cycles + 1):
        phase = "patched" if i == 1 else f"patched {i}"
        if i > 1 and "patched" in probe:
            probe[phase] = probe["patched"]
        out += [LoadPatch(patch), WaitTransition(patch), Hold(sc.soak.hold, ("patched", HOLD, phase)),
                Disable(patch), WaitUnpatch(patch), Unload(patch, last=i == sc.soak.cycles), Sample(i)]
    return out


def _lifecycle(specs: tuple[StepSpec, ...], keys: dict[str, str], probe: dict[str, str]) -> list[Step]:
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
                probe[label] = expect
            out.append(Hold(s.seconds, (label, HOLD, label if expect else None)))
    return out
