"""The run's two ends in the guest: ``Setup`` (modules up, targets in, the workload started) and
``Collect`` (the workload stopped, what it and the kernel recorded read back, nothing left).
Each makes as few round trips as it can: one costs ~0.1-0.3 s under TCG."""
from __future__ import annotations

import io
import tarfile
import uuid
from pathlib import Path

from . import lifecycle
from .context import REMOTE_DIR, Context, Step, load_target
from .workload import clock, detached, httpload, probe, service, stress


class Setup(Step):
    """Upload the modules, load the targets, note the unpatched probe output, start probe,
    stress and service together, wait for the service, start the load: few round trips, as
    every one is ~0.1-0.3 s under TCG."""

    def run(self, ctx: Context) -> None:
        g, t, sc, rec = ctx.guest, ctx.timeouts, ctx.scenario, ctx.rec
        g.run(f"mkdir -p {REMOTE_DIR} && tar -x -C {REMOTE_DIR}", t.command, check=True,
              stdin=_tar({ctx.modules[n].path.name: ctx.modules[n].path for n in ctx.modules}))
        ctx.evidence.prepare()
        for name in ctx.targets:
            load_target(ctx, name)
        ctx.marker = f"livepatch-lab: run {uuid.uuid4().hex[:8]} start"
        ctx.console_from = rec.console_from = len(g.machine.console.lines)
        rec.taint_before, rec.cmdline = ctx.kernel.begin(g, ctx.marker, t.command)
        ctx.offset = clock.clock_offset(g, samples=3)   # before the load: quicker and steadier round trips
        scripts = []
        if sc.probe.command:
            # what the kernel shows before any patch: the revert is judged against it
            first = g.run(sc.probe.command, t.probe_command)
            rec.probe_unpatched = first.stdout + first.stderr
            scripts.append(probe.start_script(sc.probe, t))   # first: its first (slow) runs precede the baseline
        if sc.stress.enabled:
            scripts.append(stress.start_script(sc.stress))
        if sc.service.enabled:
            scripts.append(service.start_script(sc.service))
        if scripts:
            g.run("".join(scripts), t.command, check=True)
        if sc.service.enabled:
            service.wait_ready(g, sc.service)
            ctx.load = httpload.HttpLoad("127.0.0.1", g.host_port(sc.service.port), sc.service,
                                         ctx.out_dir / "requests.jsonl")
        if sc.stress.enabled:   # stress-ng refuses bad arguments before it forks: it had its moment
            stress.check_running(g, sc.stress)
        if ctx.load:
            ctx.load.start()


def keep_console(ctx: Context) -> None:
    """The console since the run's start, and what it found there, into the record."""
    console = ctx.guest.machine.console
    ctx.rec.console = [line.text for line in console.lines[ctx.console_from:]]
    ctx.rec.console_findings = [f for f in console.findings if f.lineno > ctx.console_from]


def _tar(files: dict[str, Path]) -> bytes:
    """The run's modules as one tar stream: one upload for all of them."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, path in files.items():
            tar.add(str(path), arcname=name)
    return buf.getvalue()

class Collect(Step):
    """Stop the workload and read what it and the kernel recorded; unload the targets and check
    that the run left nothing behind: two round trips. Runs whatever happened before, as long
    as the guest answers."""

    def run(self, ctx: Context) -> None:
        g, t, sc, rec = ctx.guest, ctx.timeouts, ctx.scenario, ctx.rec
        ctx.events("collect")
        ctx.applier.finish(ctx)   # a tool's revert a stalled unpatch left running
        try:
            if ctx.load:
                rec.requests = ctx.load.stop(timeout=sc.service.timeout + 2)
        finally:
            if ctx.load:   # stopped whatever happened: its thread must not outlive the run
                ctx.load.stop(timeout=0)
        started = [n for n, on in (("probe", bool(sc.probe.command)), ("stress", sc.stress.enabled),
                                   ("service", sc.service.enabled)) if on]
        if started:
            out = detached.stop_all(g, started, t.service_stop,
                                    then=probe.read_log() if sc.probe.command else "")
            rec.probe = [probe.ProbeSample(s.t - ctx.offset, s.rc, s.output,
                                           None if s.t_end is None else s.t_end - ctx.offset)
                         for s in probe.parse_log(out)] if sc.probe.command else []
        end = ctx.kernel.finish(g, ctx.marker, list(reversed(ctx.late_loaded + ctx.targets)), t.command)
        rec.dmesg, rec.taint_after = end.dmesg, end.taint
        keep_console(ctx)
        lifecycle.left_behind(ctx, end)
        ctx.events("collected")
