"""One scenario on one kernel, from its modules to its verdict.

prepare (kernel, image, modules) → boot → the steps (steps.py) under a
heartbeat → collect → verdict. Data flows one way: the scenario's specs go
in, the plan (plans.py) makes the steps and what they are judged against
(``Expect``), the steps fill a ``RunRecord`` with what they saw,
``verdict.decide`` reads the two, the outcome
and its artifacts come out. Trouble is classed where it arises (faults.py):
the patch's makes a ``fail``, everything else an ``error`` with its
evidence. The guest is always torn down (``session.boot``).
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Optional, Sequence

from ..core import diskspace
from ..core.errors import DiskFull, HarnessError
from ..core.settings import Settings
from ..machine import heartbeat, hostcpu, session
from ..supply import images, recipes
from ..supply.kernels import defs as kerneldefs, fetch as kernelfetch
from .run import apply, livepatch, memdebug
from .report import criteria, outcome as outcomes
from .run import prepare as modules
from .run.context import Context, Step
from .run.events import Timeline
from .run.faults import Failed, host_cause, patch_is_to_blame
from .run.forensics import HangEvidence
from .report.outcome import Outcome
from .run.plans import expectations, plan
from .run.ports import Kernel
from .run.record import TRANSITION, Reason, RunRecord, Window
from .scenario.judgeable import TRANSITION_TAIL
from .run.setup import Collect, keep_console
from .scenario.specs import Scenario
from .run.steps import unwind
from .judge.verdict import decide

log = logging.getLogger(__name__)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a run: raised once its outcome (an ``error``, with what was
    seen so far) is written, carrying it, so a matrix can still report it."""

    def __init__(self, outcome: Outcome, cause: BaseException):
        super().__init__(*cause.args)
        self.outcome = outcome


def run(sc: Scenario, kernel_spec: str, settings: Settings, out_dir: Path,
        interface: Kernel = livepatch) -> Outcome:
    """Run ``sc`` on one kernel. Never raises for the patch's, the guest's or the host's
    faults (they are the verdict); an interrupt is recorded as an ``error``, then re-raised
    as ``Interrupted``. ``interface``: the kernel's livepatch interface (a model in unit tests)."""
    started = time.monotonic()
    outcomes.clear(out_dir)
    rec = RunRecord(host_cpus=os.cpu_count() or 0)
    expect = expectations(sc)   # the plan's, once the modules are known: a run can end before
    events = Timeline(rec)
    kernel_info = {"name": kernel_spec}
    events("start")
    interrupted: Optional[BaseException] = None
    modules_info: list = []
    try:
        kernel = kernelfetch.fetch(kerneldefs.get_definition(kernel_spec), settings)
        kernel_info = kernel.describe()
        modules.refuse_early(sc, kernel)
        debug = memdebug.for_kernel(sc.debug, kernel)
        rec.debug = debug.describe()
        for name, why in debug.absent.items():
            log.info("debug facility %s is absent on %s: %s", name, kernel_spec, why)
        image = images.build(recipes.load_recipe(sc.image or recipes.DEFAULT_RECIPE), settings)
        events("build")
        mods = modules.prepare(sc, kernel, settings, out_dir)
        rec.patch_name = mods.patch
        modules_info = mods.describe()
        planned = plan(sc, mods.patch, mods.old, mods.keys)
        expect = planned.expect
        built = mods.by_name()
        events("built", patch=str(built[mods.patch].path), patch_source=sc.patch.label,
               modules={n: str(m.path) for n, m in built.items()},
               targets=[str(built[n].path) for n, p in mods.all.items() if not p.livepatch],
               target_sources=[t.label for t in sc.targets])
        with diskspace.guard(out_dir, "keeping the run's evidence", hint=diskspace.ARTIFACTS_HINT):
            _in_guest(sc, kernel, image, mods, planned.steps, settings, out_dir, events, rec, debug.append,
                      interface)
    except Failed as exc:            # build or compat: the patch's files themselves
        rec.early += exc.reasons
    except HarnessError as exc:      # the input, the lab, the host, or a guest that never came up
        rec.error = f"{type(exc).__name__}: {exc}"
    except KeyboardInterrupt as exc:
        rec.error = f"interrupted ({str(exc) or 'Ctrl-C'}): the run was stopped before its verdict"
        interrupted = exc
    verdict = decide(expect, rec)
    events("verdict", verdict=verdict.verdict)
    result = Outcome(sc.name, kernel_spec, verdict, kernel_info, events.events, str(out_dir),
                     time.monotonic() - started, modules_info, criteria.record(sc, expect, kernel_spec),
                     sc.release.as_dict())
    try:
        with diskspace.guard(out_dir, "writing the run's verdict and artifacts", hint=diskspace.ARTIFACTS_HINT):
            outcomes.write(out_dir, result, rec)
    except DiskFull as exc:   # a verdict whose evidence is not kept signs nothing off
        rec.error = rec.error or f"DiskFull: {exc}"
        result.verdict = decide(expect, rec)
        log.error("%s", exc)
        (out_dir / "verdict.json").unlink(missing_ok=True)   # it would claim the first verdict
    if interrupted is not None:
        raise Interrupted(result, interrupted) from interrupted
    return result


def _in_guest(sc: Scenario, kernel, image, mods: modules.Modules, steps: Sequence[Step], settings: Settings,
              out_dir: Path, events: Timeline, rec: RunRecord, debug_append: str = "",
              interface: Kernel = livepatch) -> None:
    ports = (sc.service.port,) if sc.service.enabled else ()
    append = " ".join(a for a in ("module.sig_enforce=1" if sc.security.sig_enforce else "", debug_append) if a)
    with session.boot(kernel, image, settings, forward_ports=ports, append=append,
                      artifacts_dir=out_dir) as guest:
        where = guest.machine.describe()
        events("booted", accel=guest.accel, seconds=round(guest.timings.get("ssh_ready", 0), 2),
               backend=where.get("backend"), **({"uri": where["uri"]} if "uri" in where else {}),
               **({"tcg_thread": where["tcg_thread"]} if "tcg_thread" in where else {}),
               **({"icount": where["icount"]} if "icount" in where else {}),
               **({"restored_from": guest.restored_from} if guest.restored_from else {}),
               **({"cpu_wait": round(guest.timings["cpu_wait"], 1)} if guest.timings.get("cpu_wait", 0) >= 0.5 else {}))
        t = guest.timeouts
        ctx = Context(sc, guest, t, rec, events, out_dir, HangEvidence(guest, settings, t.command),
                      mods.by_name(), mods.patch, mods.targets,
                      {n: mods.params(n) for n in mods.all if mods.params(n)}, applier=apply.applier(sc.apply),
                      kernel=interface)
        try:
            with heartbeat.Heartbeat(guest.channel, t.heartbeat, on_lost=lambda _why: ctx.lost.set()):
                execute(ctx, steps)
        except HarnessError as exc:
            trouble(ctx, exc)


def execute(ctx: Context, steps: Sequence[Step]) -> None:
    """Run ``steps`` in order, then ``Collect``. A step that fails the patch ends the list early
    and the patches it left loaded are unwound; any other exception propagates, once the
    host-side load is stopped (its requests are evidence)."""
    pid = ctx.guest.machine.host_pid()
    keep = ctx.rec.host_cpu.append
    try:
        try:
            with hostcpu.Sampler(pid, lambda got: keep((got.t, got.host_busy, got.guest_run, got.guest_wait))):
                for step in steps:
                    t0 = time.time()
                    ran = step.run(ctx) is not False
                    if ran:
                        ctx.done.append((step, t0, time.time()))
        except Failed as exc:
            ctx.rec.early += exc.reasons
            unwind(ctx)
        finally:
            ctx.rec.windows = windows(ctx.done)
        Collect().run(ctx)
    except BaseException:
        if ctx.load is not None:
            ctx.rec.requests = ctx.load.stop(timeout=ctx.scenario.service.timeout + 2)
        raise


def windows(done: Sequence[tuple[Step, float, float]]) -> dict[str, Window]:
    """The judged windows, from the steps that completed: consecutive steps of one window make
    one; a transition window runs ``TRANSITION_TAIL`` past its last step (the service settles),
    and the window after it starts there. A window name that comes again is numbered."""
    out: dict[str, Window] = {}
    seen: dict[str, int] = {}
    last: Optional[Window] = None
    last_step_window = None
    for step, t0, t1 in done:
        if step.window is None:
            continue
        name, kind, phase = step.window
        tail = TRANSITION_TAIL if kind == TRANSITION else 0.0
        if last is not None and step.window == last_step_window:
            last.end = t1 + tail
            continue
        last_step_window = step.window
        start = max(t0, last.end) if last is not None and last.kind == TRANSITION else t0
        seen[name] = seen.get(name, 0) + 1
        unique = name if seen[name] == 1 else f"{name} {seen[name]}"
        last = out[unique] = Window(unique, start, t1 + tail, kind, phase)
    return out


def trouble(ctx: Context, exc: HarnessError) -> None:
    """A step raised: record it as the patch's fault (a fail, with the guest's last words and
    where its vCPUs are) or as an error with its evidence, by faults.py's rule."""
    guest, rec = ctx.guest, ctx.rec
    machine = guest.machine
    # a dying kernel's last lines reach the console just after the silence, and with panic=-1
    # its machine ends about a second after a panic
    if machine.console.wait_for(lambda c: c.fatal() is not None, 1.0):
        machine.wait_exit(2.0)
    by_host = host_cause(machine)
    why = guest.channel.lost or f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    if not machine.is_running():
        why = f"the machine ended: {machine.exit_reason() or 'no reason given'}"
    tail = machine.console.tail(12)
    if not patch_is_to_blame(exc.fault, rec.patch_issued, by_host):
        when = "after" if rec.patch_issued else "before"
        cause = (f"{by_host}, not the patch" if by_host else
                 f"{when} the patch's module was loaded: the lab's, the host's or the guest's fault, "
                 "not the patch's")
        rec.error = f"{type(exc).__name__}: {exc}\n({cause})\n--- console tail ---\n{tail}"
        ctx.events("lab-error", error=why, fault=exc.fault)
        return
    where = ctx.evidence.collect(machine, ctx.out_dir)
    findings = machine.console.findings
    message = f"the guest stopped answering ({why})"
    if machine.is_running():   # what the lab can and cannot tell, said
        message += "; its machine runs, and the host did not pause it or cut its network"
    if where:
        message += "; " + "; ".join(where)
    message += "\n--- console tail ---\n" + tail
    rec.guest_lost = message
    rec.early.append(Reason("dmesg" if findings else "service", message))
    keep_console(ctx)
    ctx.events("guest-lost", error=why, vcpus=where)
