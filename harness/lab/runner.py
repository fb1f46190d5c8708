"""The timeline of one scenario on one kernel, from build to verdict.

build → boot → baseline under load → load the patch → transition → hold
patched → disable → unpatch transition → unload → cool-down → verdict.
Every step runs under a deadline and is recorded as a timestamped event.
Patch-caused trouble ends in ``fail`` with evidence; a broken host or lab
ends in ``error``. The guest is always torn down (``session.boot``).
"""
from __future__ import annotations

import json
import logging
import os
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..core.errors import (BootError, ConfigError, DeadlineExceeded, GuestConnectionError, HarnessError,
                           InfraError, LivepatchError)
from ..core.settings import Settings
from ..machine import heartbeat, session
from ..supply import images, kbuild, kerneldefs, kernelfetch, modinfo, recipes
from . import forensics, livepatch, workload
from .scenario import Scenario
from .verdict import Reason, RunRecord, Verdict, Window, decide

log = logging.getLogger(__name__)
REMOTE_DIR = "/run/lab/modules"
# What a run writes into its artifact folder; an earlier run's copies are removed first,
# so a folder never mixes two runs (a stale cpus.txt would accuse a patch that is fine).
ARTIFACTS = ("console.log", "dmesg.txt", "requests.jsonl", "probe.jsonl", "timeline.json",
             "verdict.json", "cpus.txt")


@dataclass
class Outcome:
    """One scenario × kernel: the verdict and everything needed to act on it."""
    scenario: str
    kernel: str
    verdict: Verdict
    kernel_info: dict[str, Any] = field(default_factory=dict)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    artifacts: str = ""
    seconds: float = 0.0

    @property
    def phases(self) -> dict[str, float]:
        return phase_seconds(self.timeline)

    def as_dict(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "kernel": self.kernel, **self.verdict.as_dict(),
                "kernel_info": self.kernel_info, "timeline": self.timeline,
                "phases": self.phases,
                "artifacts": self.artifacts, "seconds": round(self.seconds, 2)}


# Where a run's wall time goes: each phase ends at the event that starts the next.
PHASES = (("prepare", "start", "built"), ("boot", "built", "booted"), ("setup", "booted", "baseline"),
          ("baseline", "baseline", "load-patch"), ("apply", "load-patch", "patched"),
          ("patched", "patched", "disable"), ("revert", "disable", "reverted"),
          ("cooldown", "reverted", "cooldown-end"), ("collect", "cooldown-end", "collected"),
          ("teardown", "collected", "verdict"))


def phase_seconds(timeline: list[dict[str, Any]]) -> dict[str, float]:
    """{phase: seconds} for the phases whose two events both happened."""
    at: dict[str, float] = {}
    for e in timeline:
        at.setdefault(e["event"], e["t"])
    return {name: round(at[b] - at[a], 2) for name, a, b in PHASES if a in at and b in at}


class _Timeline:
    def __init__(self, rec: Optional[RunRecord] = None) -> None:
        self.events: list[dict[str, Any]] = []
        self.rec = rec

    def __call__(self, name: str, **detail: Any) -> float:
        now = time.time()
        self.events.append({"t": round(now, 3), "event": name, **detail})
        if self.rec is not None:   # the host's load at every step: an overloaded host is evidence
            self.rec.host_load.append(round(os.getloadavg()[0], 2))
        log.info("%s%s", name, "".join(f" {k}={v}" for k, v in detail.items() if k != "stragglers"))
        return now


class _Failed(Exception):
    """Ends the run early with reasons (the patch's fault)."""

    def __init__(self, *reasons: Reason):
        self.reasons = list(reasons)


def _module_for(inp, kernel, settings: Settings) -> modinfo.Module:
    if inp.ko is not None:
        return modinfo.inspect(inp.ko)
    target = kernel
    if inp.build_for:
        target = kernelfetch.fetch(kerneldefs.get_definition(inp.build_for), settings)
    try:
        return kbuild.build(inp.source, target, settings)
    except kbuild.BuildError as exc:
        raise _Failed(Reason("build", f"{inp.label} does not build for {target.name} "
                                      f"({target.release}):\n{exc.output[-3000:]}")) from None


def _prepare_modules(sc: Scenario, kernel, settings: Settings) -> tuple[modinfo.Module, list[modinfo.Module]]:
    patch = _module_for(sc.patch, kernel, settings)
    modinfo.require_livepatch(patch)
    try:
        modinfo.check_compatible(patch, kernel)
    except modinfo.CompatError as exc:
        raise _Failed(Reason("compat", str(exc))) from None
    targets = []
    for t in sc.targets:
        mod = _module_for(t, kernel, settings)
        try:
            modinfo.check_compatible(mod, kernel)
        except modinfo.CompatError as exc:
            raise _Failed(Reason("compat", f"target module: {exc}")) from None
        targets.append(mod)
    return patch, targets


def run(sc: Scenario, kernel_spec: str, settings: Settings, out_dir: Path) -> Outcome:
    """Run ``sc`` on one kernel; never raises for the patch's or the host's faults."""
    started = time.monotonic()
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ARTIFACTS:
        (out_dir / name).unlink(missing_ok=True)
    rec = RunRecord(service_enabled=sc.service_enabled, probe_expect=dict(sc.probe_expect),
                    thresholds={"max_latency": sc.max_latency, "latency_factor": sc.latency_factor,
                                "max_gap": sc.max_gap, "median_factor": sc.median_factor,
                                "min_median": sc.min_median}, host_cpus=os.cpu_count() or 0)
    events = _Timeline(rec)
    kernel_info: dict[str, Any] = {"name": kernel_spec}
    events("start")
    try:
        kernel = kernelfetch.fetch(kerneldefs.get_definition(kernel_spec), settings)
        kernel_info = kernel.describe()
        image = images.build(recipes.load_recipe(recipes.DEFAULT_RECIPE), settings)
        events("build")
        patch, targets = _prepare_modules(sc, kernel, settings)
        rec.patch_name = patch.name
        events("built", patch=str(patch.path), targets=[str(t.path) for t in targets])
        _in_guest(sc, kernel, image, patch, targets, settings, out_dir, events, rec)
    except _Failed as exc:
        rec.early += exc.reasons
    except LivepatchError as exc:  # not a livepatch at all: the input is wrong
        rec.error = str(exc)
    except (ConfigError, InfraError, BootError) as exc:
        rec.error = f"{type(exc).__name__}: {exc}"
    except HarnessError as exc:
        rec.error = f"{type(exc).__name__}: {exc}"
    verdict = decide(rec)
    events("verdict", verdict=verdict.verdict)
    outcome = Outcome(sc.name, kernel_spec, verdict, kernel_info, events.events, str(out_dir),
                      time.monotonic() - started)
    _write(out_dir, outcome, rec)
    return outcome


def _in_guest(sc: Scenario, kernel, image, patch: modinfo.Module, targets: list, settings: Settings,
              out_dir: Path, events: _Timeline, rec: RunRecord) -> None:
    svc = workload.ServiceSpec(**sc.service)
    ports = (svc.port,) if sc.service_enabled else ()
    with session.boot(kernel, image, settings, forward_ports=ports, artifacts_dir=out_dir) as guest:
        where = guest.machine.describe()
        events("booted", accel=guest.accel, seconds=round(guest.timings.get("ssh_ready", 0), 2),
               backend=where.get("backend"), **({"uri": where["uri"]} if "uri" in where else {}))
        t = guest.timeouts
        evidence = forensics.HangEvidence(guest, settings, t.command)
        try:
            with heartbeat.Heartbeat(guest.channel, t.heartbeat):
                _timeline(sc, guest, patch, targets, svc, t, out_dir, events, rec, evidence)
        except (GuestConnectionError, DeadlineExceeded) as exc:
            _guest_lost(guest, exc, evidence, out_dir, events, rec)


def _guest_lost(guest, exc: HarnessError, evidence: forensics.HangEvidence, out_dir: Path,
                events: _Timeline, rec: RunRecord) -> None:
    """The guest stopped answering mid-run: say where it is stuck and what it last said."""
    time.sleep(1.0)   # a dying kernel's last lines reach the console just after the silence
    why = guest.channel.lost or f"{exc.__class__.__name__}: {str(exc).splitlines()[0]}"
    if not guest.machine.is_running():
        why = f"the machine ended: {guest.machine.exit_reason() or 'no reason given'}"
    where = evidence.collect(guest.machine, out_dir)
    findings = guest.machine.console.findings
    message = f"the guest stopped answering ({why})"
    if where:
        message += "; " + "; ".join(where)
    message += "\n--- console tail ---\n" + guest.machine.console.tail(12)
    rec.guest_lost = message
    rec.early.append(Reason("dmesg" if findings else "service", message))
    rec.console_findings = list(findings)
    events("guest-lost", error=why, vcpus=where)


def _timeline(sc: Scenario, guest, patch, targets, svc, t, out_dir: Path, events: _Timeline,
              rec: RunRecord, evidence: forensics.HangEvidence) -> None:
    run_id = uuid.uuid4().hex[:8]
    guest.run(f"mkdir -p {REMOTE_DIR}", t.command, check=True)
    for mod in [*targets, patch]:
        guest.upload(mod.path, f"{REMOTE_DIR}/{mod.path.name}")
    evidence.prepare()
    for mod in targets:
        res = guest.run(f"insmod {REMOTE_DIR}/{mod.path.name}", t.command)
        if not res.ok:
            raise _Failed(Reason("load", f"target module {mod.name} does not load: {res.stderr.strip()}"))
        evidence.add_module(mod.name, mod.path)
        events("target-loaded", module=mod.name)
    offset = workload.clock_offset(guest)
    rec.taint_before = livepatch.taint(guest, t.command)
    marker = f"livepatch-lab: run {run_id} start"
    console_from = len(guest.machine.console.lines)
    livepatch.mark_kmsg(guest, marker, t.command)

    if sc.probe_command:  # first, so its first (slow, under TCG) runs precede the baseline
        workload.start_probe(guest, workload.ProbeSpec(sc.probe_command, sc.probe_interval or 0.5))
    load = None
    if sc.service_enabled:
        workload.start_service(guest, svc, serve_file=sc.serve_file)
        load = workload.HttpLoad("127.0.0.1", guest.host_port(svc.port), svc, out_dir / "requests.jsonl")
    stress = workload.StressSpec(**sc.stress)
    if stress.enabled:
        workload.start_stress(guest, stress)
    try:
        if load:
            load.start()
        b0 = events("baseline")
        time.sleep(sc.baseline)
        a0 = events("load-patch", module=patch.name)
        rec.windows["baseline"] = Window("baseline", b0, a0)
        try:
            loaded = livepatch.load(guest, f"{REMOTE_DIR}/{patch.path.name}", t.command,
                                    report_text_of=patch.name)
        except LivepatchError as exc:
            raise _Failed(Reason("load", str(exc)))
        rec.loaded = True
        events("loaded", seconds=round(loaded.seconds, 3))
        evidence.add_module(patch.name, patch.path, loaded.stdout)
        _patch_transition(sc, guest, patch.name, t, events, rec)
        rec.transition["load_seconds"] = round(loaded.seconds, 3)
        a1 = events("patched")
        rec.windows["apply"] = Window("apply", a0, a1 + 1.0)
        time.sleep(sc.patched)
        rec.taint_patched = livepatch.taint(guest, t.command)
        d0 = events("disable")
        rec.windows["patched"] = Window("patched", a1 + 1.0, d0)
        _revert(guest, patch.name, t, events, rec)
        d1 = events("reverted")
        rec.windows["revert"] = Window("revert", d0, d1 + 1.0)
        time.sleep(sc.cooldown)
        c1 = events("cooldown-end")
        rec.windows["cooldown"] = Window("cooldown", d1 + 1.0, c1)
    except _Failed as exc:  # the run ends early, but the evidence is still collected
        rec.early += exc.reasons
    finally:
        if load:
            rec.requests = load.stop(timeout=svc.timeout + 2)
        if sc.probe_command:
            try:
                rec.probe = [workload.ProbeSample(s.t - offset, s.rc, s.output,
                                                  None if s.t_end is None else s.t_end - offset)
                             for s in workload.stop_probe(guest)]
            except HarnessError as exc:
                log.warning("probe log lost: %s", exc)
    if stress.enabled:
        workload.stop_stress(guest)
    if sc.service_enabled:
        workload.stop_service(guest)
    rec.dmesg = livepatch.dmesg_since(guest, marker, t.command)
    rec.taint_after = livepatch.taint(guest, t.command)
    rec.console_findings = [f for f in guest.machine.console.findings if f.lineno > console_from]
    for mod in reversed(targets):
        guest.run(f"rmmod {mod.name}", t.command)
    events("collected")


def _patch_transition(sc: Scenario, guest, name: str, t, events: _Timeline, rec: RunRecord) -> None:
    deadline = t.transition if sc.transition_timeout is None else sc.transition_timeout * (
        t.transition / 20.0)  # a scenario's seconds are at KVM speed, scaled like the rest
    done, secs = livepatch.wait_transition(guest, name, deadline)
    rec.transition = {"completed": done, "seconds": round(secs, 3), "deadline": deadline}
    if done:
        events("transition-complete", seconds=round(secs, 3))
        return
    stuck = [s.describe() for s in livepatch.stragglers(guest, True, t.command)]
    rec.transition["stragglers"] = stuck
    events("transition-stalled", seconds=round(secs, 3), stragglers=stuck)
    if sc.on_stall == "signal":
        extra = deadline
        if not livepatch.signal_stragglers(guest, name, t.command):
            # The kernel's retries run on the guest's clock, which keeps wall time even
            # under TCG: wait until its signal round plus a grace, not a scaled figure.
            extra = max(deadline, livepatch.KERNEL_SIGNALS_AFTER + 5.0 - secs)
            log.info("this kernel signals stragglers itself; waiting %.0f s more", extra)
        done, more = livepatch.wait_transition(guest, name, extra)
        rec.transition.update(completed=done, signaled=True, seconds=round(secs + more, 3))
        events("signaled", completed=done)
    elif sc.on_stall == "force":
        livepatch.force(guest, name, t.command)
        done, more = livepatch.wait_transition(guest, name, deadline)
        rec.transition.update(completed=done, forced=True, seconds=round(secs + more, 3))
        events("forced", completed=done)
    if not rec.transition["completed"]:
        # Reverse the stalled transition and still clean up.
        livepatch.disable(guest, name, t.command)
        rec.revert["disabled"] = True
        livepatch.wait_transition(guest, name, deadline)
        rmmod = livepatch.unload(guest, name, t.command)
        rec.revert.update(rmmod_rc=rmmod.rc, rmmod_err=rmmod.stderr)
        raise _Failed()


def _revert(guest, name: str, t, events: _Timeline, rec: RunRecord) -> None:
    res = livepatch.disable(guest, name, t.command)
    rec.revert = {"disabled": res.ok, "disable_err": res.stderr.strip(), "disable_seconds": round(res.seconds, 3)}
    if not res.ok:
        return
    done, secs = livepatch.wait_transition(guest, name, t.transition)
    rec.unpatch = {"completed": done, "seconds": round(secs, 3), "deadline": t.transition}
    if not done:
        rec.unpatch["stragglers"] = [s.describe() for s in livepatch.stragglers(guest, False, t.command)]
        events("unpatch-stalled", seconds=round(secs, 3))
        return
    events("unpatch-complete", seconds=round(secs, 3))
    rmmod = livepatch.unload(guest, name, t.command)
    rec.revert.update(rmmod_rc=rmmod.rc, rmmod_err=rmmod.stderr.strip())
    rec.revert["sysfs_gone"] = not guest.run(f"test -e {livepatch.SYSFS}/{name}", t.command).ok
    rec.revert["module_gone"] = not livepatch.module_loaded(guest, name, t.command)
    events("unloaded", rc=rmmod.rc)


def _write(out_dir: Path, outcome: Outcome, rec: RunRecord) -> None:
    (out_dir / "verdict.json").write_text(json.dumps(outcome.as_dict(), indent=2, default=str))
    (out_dir / "timeline.json").write_text(json.dumps(outcome.timeline, indent=2, default=str))
    (out_dir / "dmesg.txt").write_text("\n".join(rec.dmesg) + ("\n" if rec.dmesg else ""))
    with open(out_dir / "probe.jsonl", "w") as fh:
        for s in rec.probe:
            fh.write(json.dumps(asdict(s) if hasattr(s, "__dataclass_fields__") else s) + "\n")
