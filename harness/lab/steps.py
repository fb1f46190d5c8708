"""The steps a run is made of, from the workload's set-up to the collection of evidence.

A run is a list of steps (``default_steps`` for the single-patch scenario).
Each step is small, does one thing in the guest under its own deadline (a
``Timeouts`` entry, scaled for TCG), puts its events on the timeline, and
writes what it saw into the ``RunRecord``. A step that finds the patch at
fault raises ``faults.Failed`` with its reasons; anything else it raises is
classed by ``faults.classify``. The runner (runner.py) runs them in order,
unwinds the patches left loaded when one fails, and always ends with
``Collect``. Each step names the window its time belongs to, which is how
the service and the probe are judged around every transition.
"""
from __future__ import annotations

import logging
import shlex
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..core.errors import GuestCommandError, GuestConnectionError, HarnessError, LivepatchError
from ..core.settings import Timeouts
from . import livepatch
from .events import Timeline
from .faults import Failed
from .forensics import HangEvidence
from .record import BASELINE, COOLDOWN, HOLD, TRANSITION, Reason, RunRecord
from .specs import Scenario
from .workload import clock, httpload, probe, service, stress

log = logging.getLogger(__name__)
REMOTE_DIR = "/run/lab/modules"


@dataclass
class Context:
    """What the steps of one run share."""
    scenario: Scenario
    guest: Any                       # machine.session.Guest
    timeouts: Timeouts
    rec: RunRecord
    events: Timeline
    out_dir: Path
    evidence: HangEvidence
    modules: dict[str, Any]          # module name -> supply.modinfo.Module: the patch, then its targets
    patch: str                       # the patch under test's module name
    targets: list[str] = field(default_factory=list)
    lost: threading.Event = field(default_factory=threading.Event)   # set by the heartbeat
    load: Optional[httpload.HttpLoad] = None
    offset: float = 0.0              # guest clock - host clock
    marker: str = ""
    console_from: int = 0
    loaded: list[str] = field(default_factory=list)   # patches loaded and not yet unloaded, oldest first

    def remote(self, name: str) -> str:
        return f"{REMOTE_DIR}/{self.modules[name].path.name}"


class Step:
    """One step: ``run`` does it; ``window`` is (name, kind, probe phase) of the stretch of the
    run its time belongs to, or None for time that is not judged."""
    window: Optional[tuple[str, str, Optional[str]]] = None

    def run(self, ctx: Context) -> None:
        raise NotImplementedError


def _hold(ctx: Context, seconds: float) -> None:
    """Let the workload run; a guest the heartbeat gave up on ends the wait at once."""
    if ctx.lost.wait(seconds):
        raise GuestConnectionError(f"guest lost while holding: {ctx.guest.channel.lost}")


# set-up -----------------------------------------------------------------------------
class Setup(Step):
    """Upload the modules, load the targets, start probe, service, load and stress."""

    def run(self, ctx: Context) -> None:
        g, t, sc, rec = ctx.guest, ctx.timeouts, ctx.scenario, ctx.rec
        g.run(f"mkdir -p {REMOTE_DIR}", t.command, check=True)
        for name in ctx.modules:
            g.upload(ctx.modules[name].path, ctx.remote(name))
        ctx.evidence.prepare()
        for name in ctx.targets:
            command = f"insmod {shlex.quote(ctx.remote(name))}"
            res = g.run(command, t.command)
            if not res.ok:   # before the patch: the scenario's module or the guest, not the patch
                raise GuestCommandError(command, res.rc, res.stdout, res.stderr or
                                        f"target module {name} does not load")
            ctx.evidence.add_module(name, ctx.modules[name].path)
            ctx.events("target-loaded", module=name)
        ctx.offset = clock.clock_offset(g)
        rec.taint_before = livepatch.taint(g, t.command)
        ctx.marker = f"livepatch-lab: run {uuid.uuid4().hex[:8]} start"
        ctx.console_from = len(g.machine.console.lines)
        livepatch.mark_kmsg(g, ctx.marker, t.command)
        if sc.probe.command:  # first, so its first (slow, under TCG) runs precede the baseline
            probe.start(g, sc.probe)
        if sc.service.enabled:
            service.start(g, sc.service)
            ctx.load = httpload.HttpLoad("127.0.0.1", g.host_port(sc.service.port), sc.service,
                                         ctx.out_dir / "requests.jsonl")
        if sc.stress.enabled:
            stress.start(g, sc.stress)
        if ctx.load:
            ctx.load.start()


class Baseline(Step):
    window = ("baseline", BASELINE, "before")

    def __init__(self, seconds: float):
        self.seconds = seconds

    def run(self, ctx: Context) -> None:
        ctx.events("baseline")
        _hold(ctx, self.seconds)


# the patch ----------------------------------------------------------------------------
class LoadPatch(Step):
    window = ("apply", TRANSITION, None)

    def __init__(self, name: str):
        self.name = name

    def run(self, ctx: Context) -> None:
        ctx.events("load-patch", module=self.name)
        ctx.rec.patch_issued = True   # from here on, a guest that dies is the patch's doing
        prec = ctx.rec.patch(self.name)
        try:
            loaded = livepatch.load(ctx.guest, ctx.remote(self.name), ctx.timeouts.command,
                                    report_text_of=self.name)
        except LivepatchError as exc:
            raise Failed(Reason("load", str(exc))) from None
        prec.loaded = True
        prec.transition["load_seconds"] = round(loaded.seconds, 3)
        ctx.loaded.append(self.name)
        ctx.rec.ops.append(("enabled", self.name))
        ctx.events("loaded", seconds=round(loaded.seconds, 3))
        ctx.evidence.add_module(self.name, ctx.modules[self.name].path, loaded.stdout)


class WaitTransition(Step):
    """Until the patching transition completes; a stall is handled as the scenario says."""
    window = ("apply", TRANSITION, None)

    def __init__(self, name: str):
        self.name = name

    def deadline(self, ctx: Context) -> float:
        t, own = ctx.timeouts, ctx.scenario.transition.timeout
        # a scenario's seconds are at KVM speed, scaled like the rest
        return t.transition if own is None else own * (t.transition / Timeouts.transition)

    def run(self, ctx: Context) -> None:
        g, t, on_stall = ctx.guest, ctx.timeouts, ctx.scenario.transition.on_stall
        deadline = self.deadline(ctx)
        prec = ctx.rec.patch(self.name)
        done, secs = livepatch.wait_transition(g, self.name, deadline)
        prec.transition.update(completed=done, seconds=round(secs, 3), deadline=deadline)
        if done:
            ctx.events("transition-complete", seconds=round(secs, 3))
        else:
            stuck = [s.describe() for s in livepatch.stragglers(g, True, t.command)]
            prec.transition["stragglers"] = stuck
            ctx.events("transition-stalled", seconds=round(secs, 3), stragglers=stuck)
            if on_stall == "signal":
                extra = deadline
                if not livepatch.signal_stragglers(g, self.name, t.command):
                    # The kernel's retries run on the guest's clock, which keeps wall time even
                    # under TCG: wait until its signal round plus a grace, not a scaled figure.
                    extra = max(deadline, livepatch.KERNEL_SIGNALS_AFTER + 5.0 - secs)
                    log.info("this kernel signals stragglers itself; waiting %.0f s more", extra)
                done, more = livepatch.wait_transition(g, self.name, extra)
                prec.transition.update(completed=done, signaled=True, seconds=round(secs + more, 3))
                ctx.events("signaled", completed=done)
            elif on_stall == "force":
                livepatch.force(g, self.name, t.command)
                done, more = livepatch.wait_transition(g, self.name, deadline)
                prec.transition.update(completed=done, forced=True, seconds=round(secs + more, 3))
                ctx.events("forced", completed=done)
        if not done:
            raise Failed()   # check_transition says why; the runner unwinds the patch
        ctx.rec.ops.append(("patched", self.name))
        ctx.events("patched")


class Hold(Step):
    """Hold the patched state under load; the taint is read at its end."""
    window = ("patched", HOLD, "patched")

    def __init__(self, seconds: float):
        self.seconds = seconds

    def run(self, ctx: Context) -> None:
        _hold(ctx, self.seconds)
        if ctx.loaded and ctx.rec.taint_patched is None:
            ctx.rec.taint_patched = livepatch.taint(ctx.guest, ctx.timeouts.command)


# the revert -------------------------------------------------------------------------------
class Disable(Step):
    window = ("revert", TRANSITION, None)

    def __init__(self, name: str):
        self.name = name

    def run(self, ctx: Context) -> None:
        ctx.events("disable")
        res = livepatch.disable(ctx.guest, self.name, ctx.timeouts.command)
        ctx.rec.patch(self.name).revert.update(disabled=res.ok, disable_err=res.stderr.strip(),
                                               disable_seconds=round(res.seconds, 3))
        if res.ok:
            ctx.rec.ops.append(("disabled", self.name))


class WaitUnpatch(Step):
    window = ("revert", TRANSITION, None)

    def __init__(self, name: str):
        self.name = name

    def run(self, ctx: Context) -> None:
        prec = ctx.rec.patch(self.name)
        if not prec.revert.get("disabled"):
            return
        t = ctx.timeouts
        done, secs = livepatch.wait_transition(ctx.guest, self.name, t.transition)
        prec.unpatch = {"completed": done, "seconds": round(secs, 3), "deadline": t.transition}
        if not done:
            prec.unpatch["stragglers"] = [s.describe() for s in livepatch.stragglers(ctx.guest, False, t.command)]
            ctx.events("unpatch-stalled", seconds=round(secs, 3))
            return
        ctx.rec.ops.append(("unpatched", self.name))
        ctx.events("unpatch-complete", seconds=round(secs, 3))


class Unload(Step):
    """rmmod, then check that the sysfs entry and the module are gone."""
    window = ("revert", TRANSITION, None)

    def __init__(self, name: str):
        self.name = name

    def run(self, ctx: Context) -> None:
        prec, g, t = ctx.rec.patch(self.name), ctx.guest, ctx.timeouts
        if prec.unpatch.get("completed"):
            rmmod = livepatch.unload(g, self.name, t.command)
            prec.revert.update(rmmod_rc=rmmod.rc, rmmod_err=rmmod.stderr.strip())
            prec.revert["sysfs_gone"] = not g.run(f"test -e {livepatch.SYSFS}/{self.name}", t.command).ok
            prec.revert["module_gone"] = not livepatch.module_loaded(g, self.name, t.command)
            if prec.revert["module_gone"] and self.name in ctx.loaded:
                ctx.loaded.remove(self.name)
            ctx.events("unloaded", rc=rmmod.rc)
        ctx.events("reverted")


class Cooldown(Step):
    window = ("cooldown", COOLDOWN, "after")

    def __init__(self, seconds: float):
        self.seconds = seconds

    def run(self, ctx: Context) -> None:
        _hold(ctx, self.seconds)
        ctx.events("cooldown-end")


# after a failed step ---------------------------------------------------------------------
def unwind(ctx: Context) -> None:
    """Disable and unload the patches a failed step left loaded, newest first, recording what
    happened (the revert check judges it: a forced patch may never unload)."""
    g, t = ctx.guest, ctx.timeouts
    for name in reversed(list(ctx.loaded)):
        prec = ctx.rec.patch(name)
        if prec.revert.get("disabled") is None:
            livepatch.disable(g, name, t.command)
            prec.revert["disabled"] = True
        livepatch.wait_transition(g, name, t.transition)
        rmmod = livepatch.unload(g, name, t.command)
        prec.revert.update(rmmod_rc=rmmod.rc, rmmod_err=rmmod.stderr)
        ctx.loaded.remove(name)


# evidence -------------------------------------------------------------------------------
class Collect(Step):
    """Stop the workload and read what it and the kernel recorded. Runs whatever happened before,
    as long as the guest answers."""

    def run(self, ctx: Context) -> None:
        g, t, sc, rec = ctx.guest, ctx.timeouts, ctx.scenario, ctx.rec
        try:
            if ctx.load:
                rec.requests = ctx.load.stop(timeout=sc.service.timeout + 2)
            if sc.probe.command:
                try:
                    rec.probe = [probe.ProbeSample(s.t - ctx.offset, s.rc, s.output,
                                                   None if s.t_end is None else s.t_end - ctx.offset)
                                 for s in probe.stop(g)]
                except HarnessError as exc:
                    log.warning("probe log lost: %s", exc)
        finally:
            if ctx.load:   # stopped whatever happened: its thread must not outlive the run
                ctx.load.stop(timeout=0)
        if sc.stress.enabled:
            stress.stop(g)
        if sc.service.enabled:
            service.stop(g)
        rec.dmesg = livepatch.dmesg_since(g, ctx.marker, t.command)
        rec.taint_after = livepatch.taint(g, t.command)
        rec.console_findings = [f for f in g.machine.console.findings if f.lineno > ctx.console_from]
        for name in reversed(ctx.targets):
            g.run(f"rmmod {shlex.quote(name)}", t.command)
        ctx.events("collected")


def default_steps(sc: Scenario, patch: str) -> list[Step]:
    """The single-patch timeline: baseline → load → transition → hold → disable → unpatch →
    unload → cool-down."""
    tl = sc.timeline
    return [Setup(), Baseline(tl.baseline), LoadPatch(patch), WaitTransition(patch), Hold(tl.patched),
            Disable(patch), WaitUnpatch(patch), Unload(patch), Cooldown(tl.cooldown)]
