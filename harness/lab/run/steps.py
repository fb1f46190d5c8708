"""The steps a run is made of between its set-up and its collection (setup.py): the baseline,
the patches' loads, transitions and reverts, targets, holds, the cool-down, soak samples.

A run is a list of steps (plans.py builds it from the scenario). Each step is
small, does one thing in the guest under its own deadline (a ``Timeouts``
entry, scaled for TCG), puts its events on the timeline, and writes what it
saw into the ``RunRecord``. A step that finds the patch at fault raises
``faults.Failed`` with its reasons; anything else it raises is classed by
faults.py. The runner runs them in order, unwinds the patches left loaded
when one fails, and always ends with ``Collect``. Each step names the window
its time belongs to, which is how the service and the probe are judged
around every transition. ``run`` returns False when the step found nothing
to do (e.g. no old patch left to revert): it then makes no window.
"""
from __future__ import annotations

import logging
import re
import shlex
from dataclasses import replace
from typing import Optional

from ...core.errors import LivepatchError
from ...core.settings import Timeouts
from . import lifecycle, livepatch
from .context import Context, Step, Window, console_index, hold, load_target
from .faults import Failed
from .record import BASELINE, COOLDOWN, HOLD, TRANSITION, Reason, SoakSample, Transition

log = logging.getLogger(__name__)
# what insmod and the kernel say when module.sig_enforce refuses a module (EKEYREJECTED, ENOKEY)
_SIGNATURE_REFUSED = re.compile(r"Key was rejected by service|Required key not available|"
                                r"Loading of (unsigned )?module .*is rejected")


class Baseline(Step):
    window = ("baseline", BASELINE, "before")

    def __init__(self, seconds: float):
        self.seconds = seconds

    def run(self, ctx: Context) -> None:
        ctx.events("baseline")
        hold(ctx, self.seconds)


# the patch ----------------------------------------------------------------------------
class LoadPatch(Step):
    """insmod the patch (or have the scenario's tool load it); ``refused``: the kernel must refuse
    it (and keep nothing of it)."""

    def __init__(self, name: str, window: Window = ("apply", TRANSITION, None), refused: bool = False):
        self.name, self.window, self.refused = name, window, refused

    def run(self, ctx: Context) -> None:
        ctx.events("load-patch", module=self.name)
        ctx.rec.patch_issued = True   # from here on, a guest that dies is the patch's doing
        if ctx.rec.console_at_load is None:   # what the console showed before is not the patch's doing
            ctx.rec.console_at_load = console_index(ctx)
        prec = ctx.rec.patch(self.name)
        if ctx.applier.name != "insmod":   # the lab's insmod marks the log in the same breath
            ctx.kernel.mark_kmsg(ctx.guest, livepatch.LOADING + self.name, ctx.timeouts.command)
        try:
            loaded = ctx.applier.load(ctx, self.name)
        except LivepatchError as exc:
            if ctx.scenario.security.sig_enforce and _SIGNATURE_REFUSED.search(str(exc)):
                mod = ctx.modules[self.name]
                raise Failed(Reason("signature", f"the kernel, enforcing module signatures, refused {self.name} "
                                                 f"({mod.describe_signature()}): a host with Secure Boot or "
                                                 f"lockdown would refuse this patch too. {exc}")) from None
            if not self.refused:
                raise Failed(Reason("load", str(exc))) from None
            prec.refused = str(exc)
            ctx.events("refused", module=self.name)
            lifecycle.check(ctx, f"the refused load of {self.name}", gone=[self.name])
            return
        prec.loaded = True
        prec.transition.load_seconds = round(loaded.seconds, 3)
        ctx.loaded.append(self.name)
        ctx.rec.ops.append(("enabled", self.name))
        ctx.events("loaded", seconds=round(loaded.seconds, 3))
        prec.sections, prec.core = (livepatch.parse_sections(loaded.stdout) if ctx.applier.name == "insmod" else
                                    ctx.kernel.module_sections(ctx.guest, self.name, ctx.timeouts.command))
        text = f"{prec.sections['.text']:#x}" if ".text" in prec.sections else ""
        prec.functions = ctx.evidence.add_module(self.name, ctx.modules[self.name].path, text)
        if self.refused:
            raise Failed(Reason("load", f"the kernel accepted {self.name}, but the scenario expects it to "
                                        "refuse it"))


class WaitTransition(Step):
    """Until the patching transition completes; a stall is handled as the scenario says. Then
    /sys/kernel/livepatch must hold what the kernel's rules say (lifecycle.py)."""

    def __init__(self, name: str, window: Window = ("apply", TRANSITION, None)):
        self.name, self.window = name, window

    def deadline(self, ctx: Context) -> float:
        t, own = ctx.timeouts, ctx.scenario.transition.timeout
        # a scenario's seconds are at KVM speed, scaled like the rest
        return t.transition if own is None else own * (t.transition / Timeouts.transition)

    def run(self, ctx: Context) -> Optional[bool]:
        prec = ctx.rec.patch(self.name)
        if not prec.loaded:      # refused, as expected
            return False
        g, t, on_stall = ctx.guest, ctx.timeouts, ctx.scenario.transition.on_stall
        deadline = self.deadline(ctx)
        done, secs = ctx.kernel.wait_transition(g, self.name, deadline)
        tr = prec.transition
        tr.completed, tr.seconds, tr.deadline = done, round(secs, 3), deadline
        if done:
            ctx.events("transition-complete", seconds=round(secs, 3))
        else:
            stuck = [s.describe() for s in ctx.kernel.stragglers(g, True, t.command)]
            tr.stragglers = stuck
            ctx.events("transition-stalled", seconds=round(secs, 3), stragglers=stuck)
            if on_stall == "signal":
                extra = deadline
                if not ctx.kernel.signal_stragglers(g, self.name, t.command):
                    # The kernel's retries run on the guest's clock, which keeps wall time even
                    # under TCG: wait until its signal round plus a grace, not a scaled figure.
                    extra = max(deadline, livepatch.KERNEL_SIGNALS_AFTER + 5.0 - secs)
                    log.info("this kernel signals stragglers itself; waiting %.0f s more", extra)
                done, more = ctx.kernel.wait_transition(g, self.name, extra)
                tr.completed, tr.signaled, tr.seconds = done, True, round(secs + more, 3)
                ctx.events("signaled", completed=done)
            elif on_stall == "force":
                ctx.kernel.force(g, self.name, t.command)
                done, more = ctx.kernel.wait_transition(g, self.name, deadline)
                tr.completed, tr.forced, tr.seconds = done, True, round(secs + more, 3)
                ctx.events("forced", completed=done)
        # a tool at work is heard out: what it said, and what the kernel shows once it is done
        tool = ctx.applier.settle(ctx, self.name)
        if tool is not None and tool.kernel != "patched":
            done = False
        if not done:
            raise Failed()   # check_transition says why; the runner unwinds the patch
        ctx.rec.ops.append(("patched", self.name))
        lifecycle.patched(ctx, self.name)
        ctx.events("patched")
        return None


class RetireReplaced(Step):
    """After an atomic replace: the replaced patches' modules must unload (the kernel disabled
    them; nothing holds them)."""

    def __init__(self, name: str, window: Window = ("apply", TRANSITION, None)):
        self.name, self.window = name, window

    def run(self, ctx: Context) -> Optional[bool]:
        replaced = [n for n, by in ctx.state.replaced.items() if by == self.name and n in ctx.loaded]
        for old in replaced:
            _rmmod(ctx, old)
        return bool(replaced) or False


class Hold(Step):
    """Hold the state under load; the taint is read at its end (K while a patch is loaded)."""

    def __init__(self, seconds: float, window: Window = ("patched", HOLD, "patched")):
        self.seconds, self.window = seconds, window

    def run(self, ctx: Context) -> None:
        hold(ctx, self.seconds)
        if ctx.loaded:
            value = ctx.kernel.taint(ctx.guest, ctx.timeouts.command)
            ctx.rec.taint_held.append((self.window[0] if self.window else "hold", value))
            if ctx.rec.taint_patched is None:
                ctx.rec.taint_patched = value


# the revert -------------------------------------------------------------------------------
class Disable(Step):
    def __init__(self, name: str, window: Window = ("revert", TRANSITION, None)):
        self.name, self.window = name, window

    def run(self, ctx: Context) -> Optional[bool]:
        if self.name not in ctx.loaded:
            return False
        ctx.events("disable", module=self.name)
        res = ctx.applier.disable(ctx, self.name)
        rv = ctx.rec.patch(self.name).revert
        rv.disabled, rv.disable_err, rv.disable_seconds = res.ok, res.stderr.strip(), round(res.seconds, 3)
        if res.ok:
            ctx.rec.ops.append(("disabled", self.name))
        return None


class WaitUnpatch(Step):
    def __init__(self, name: str, window: Window = ("revert", TRANSITION, None)):
        self.name, self.window = name, window

    def run(self, ctx: Context) -> Optional[bool]:
        prec = ctx.rec.patch(self.name)
        if not prec.revert.disabled or self.name not in ctx.loaded:
            return False
        t = ctx.timeouts
        done, secs = ctx.kernel.wait_transition(ctx.guest, self.name, t.transition)
        prec.unpatch = Transition(completed=done, seconds=round(secs, 3), deadline=t.transition)
        if not done:
            prec.unpatch.stragglers = [s.describe() for s in ctx.kernel.stragglers(ctx.guest, False, t.command)]
            ctx.events("unpatch-stalled", seconds=round(secs, 3))
            return None
        ctx.rec.ops.append(("unpatched", self.name))
        lifecycle.unpatched(ctx, self.name)
        ctx.events("unpatch-complete", seconds=round(secs, 3))
        return None


def _rmmod(ctx: Context, name: str) -> None:
    """Unload a patch's module (rmmod, or hear the tool's revert out), then what is gone."""
    prec = ctx.rec.patch(name)
    gone = ctx.applier.unload(ctx, name)
    prec.revert = replace(prec.revert, rmmod_rc=gone.rc, rmmod_err=gone.err, sysfs_gone=gone.sysfs_gone,
                          module_gone=gone.module_gone)
    if gone.module_gone and name in ctx.loaded:
        ctx.loaded.remove(name)
    ctx.events("unloaded", module=name, rc=gone.rc)


class Unload(Step):
    """rmmod a patch that was disabled (by the lab, or by an atomic replace)."""

    def __init__(self, name: str, window: Window = ("revert", TRANSITION, None), last: bool = True):
        self.name, self.window, self.last = name, window, last

    def run(self, ctx: Context) -> Optional[bool]:
        prec = ctx.rec.patch(self.name)
        ready = self.name in ctx.loaded and ((prec.unpatch and prec.unpatch.completed)
                                             or self.name in ctx.state.replaced)
        if ready:
            _rmmod(ctx, self.name)
        if self.last:
            ctx.events("reverted")
        return None if ready else False


class LoadTarget(Step):
    """insmod a target module mid-run: a patch waiting for it is applied as it loads."""

    def __init__(self, name: str, window: Window):
        self.name, self.window = name, window

    def run(self, ctx: Context) -> None:
        load_target(ctx, self.name)
        ctx.late_loaded.append(self.name)


class UnloadTarget(Step):
    """rmmod a target module mid-run (a patch on it is reverted from it as it goes)."""

    def __init__(self, name: str, window: Window):
        self.name, self.window = name, window

    def run(self, ctx: Context) -> None:
        command = f"rmmod {shlex.quote(self.name)}"
        res = ctx.guest.run(command, ctx.timeouts.command)
        if not res.ok:
            raise Failed(Reason("revert", f"target module {self.name} does not unload: {res.stderr.strip()}"))
        for lst in (ctx.late_loaded, ctx.targets):
            if self.name in lst:
                lst.remove(self.name)
        ctx.events("target-unloaded", module=self.name)


# Two RCU grace periods, from the guest's user space: membarrier(MEMBARRIER_CMD_GLOBAL) waits in
# synchronize_rcu(). Callbacks a patch queued before its unload (call_rcu, a timer's softirq) have
# then run, or are due: the cool-down that follows watches for their faults.
_GRACE_PERIODS = ("python3 -c 'import ctypes; s = ctypes.CDLL(None).syscall; "
                  "[s(324, 1, 0, 0) for _ in range(2)]' 2>/dev/null; true")


class Cooldown(Step):
    """The cool-down after the revert: after a patch's module was unloaded, two RCU grace periods
    first, then the hold (a timer the module left armed fires within it, if its period is under
    the hold's length), under the same load."""
    window = ("cooldown", COOLDOWN, "after")

    def __init__(self, seconds: float):
        self.seconds = seconds

    def run(self, ctx: Context) -> None:
        if any(p.revert.module_gone for p in ctx.rec.patches.values()):
            ctx.guest.run(_GRACE_PERIODS, ctx.timeouts.command)
            ctx.events("grace-periods")
        hold(ctx, self.seconds)
        ctx.events("cooldown-end")


class MemSample(Step):
    """What the kernel holds just before the patch's load (``before``) and once the cool-down is
    over (``after``): the revert check's leak comparison."""

    def __init__(self, label: str):
        self.label = label

    def run(self, ctx: Context) -> bool:
        mem = ctx.kernel.memory(ctx.guest, ctx.timeouts.command)
        # the run's own modules (patches, targets a step loads) come and go by the scenario's steps
        mem["modules"] = [m for m in mem["modules"] if m not in ctx.modules]
        ctx.rec.memory[self.label] = mem
        return False


class Sample(Step):
    """A soak's sample after a cycle: memory, slab, vmalloc, the modules and patches still there."""

    def __init__(self, cycle: int):
        self.cycle = cycle

    def run(self, ctx: Context) -> bool:
        mem = ctx.kernel.memory(ctx.guest, ctx.timeouts.command)
        loaded = set(mem["modules"])
        prec = ctx.rec.main
        ctx.rec.soak.append(SoakSample(
            self.cycle, prec.transition.load_seconds, prec.transition.seconds,
            prec.unpatch.seconds if prec.unpatch else None,
            mem_available_kib=mem["MemAvailable"], slab_kib=mem["Slab"], sunreclaim_kib=mem["SUnreclaim"],
            vmalloc_kib=mem["VmallocUsed"], modules=len(loaded),
            left=sorted({n for n in ctx.modules if n in loaded and n not in ctx.targets} | set(mem["patches"]))))
        ctx.events("soak-sample", cycle=self.cycle, sunreclaim_kib=mem["SUnreclaim"], vmalloc_kib=mem["VmallocUsed"])
        return False


# after a failed step ---------------------------------------------------------------------
def unwind(ctx: Context) -> None:
    """Disable and unload the patches a failed step left loaded, newest first, recording what
    happened (the revert check judges it: a forced patch may never unload). A tool still at work
    is heard out first: it may revert a patch on its own."""
    g, t = ctx.guest, ctx.timeouts
    ctx.applier.finish(ctx)
    for name in reversed(list(ctx.loaded)):
        prec = ctx.rec.patch(name)
        if prec.revert.disabled is None and name not in ctx.state.replaced:
            ctx.applier.disable(ctx, name)
            prec.revert.disabled = True
        ctx.kernel.wait_transition(g, name, t.transition)
        gone = ctx.applier.unload(ctx, name)
        prec.revert.rmmod_rc, prec.revert.rmmod_err = gone.rc, gone.err
        ctx.loaded.remove(name)


# evidence -------------------------------------------------------------------------------
