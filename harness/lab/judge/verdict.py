"""Measurements of one run → ``pass`` / ``fail`` / ``error`` with reasons.

Pure: everything here reads what the run was to show (``Expect``, expect.py)
and what it saw (``RunRecord``, record.py) and nothing else, so each check is
unit-tested on synthetic records and shown failing on the patch that deserves
it. ``error`` means the lab, the host or the guest before the
patch broke, never the patch (see faults.py).
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from ...machine import kmsg
from . import contention, toolcheck
from .costcheck import check_overhead, cost_measurement, service_difference
from .probecheck import check_probe
from .soakcheck import check_soak
from .memcheck import check_leaks, check_unload
from ..scenario.expect import Expect
from ..run.livepatch import ALLOWED_TAINT, LIVEPATCH_TAINT, LOADING, taint_letters
from ..run.record import BASELINE, HOLD, TRANSITION, PatchRecord, Reason, RunRecord, Window
from ..run.workload.stats import window_stats

# Kernel lines that are trouble beyond the generic classifier.
_LIVEPATCH_TROUBLE = re.compile(r"failed to enable patch|forcing remaining tasks to the (?:un)?patched state")
_CALL_TRACE = re.compile(r"^Call Trace:")


@dataclass
class Verdict:
    verdict: str
    reasons: list[Reason]
    measurements: dict[str, Any]
    # the windows the service and the probe were judged in, as judged (the report draws these)
    windows: list[Window] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "reasons": [asdict(r) for r in self.reasons],
                "measurements": self.measurements,
                "windows": [{**asdict(w), "start": round(w.start, 3), "end": round(w.end, 3)} for w in self.windows]}


# service ----------------------------------------------------------------------
def host_overloaded(rec: RunRecord) -> str:
    """A note when the host ran more than one runnable task per core during the run: under
    TCG an overloaded host slows the guest's service exactly like a slow patch does."""
    if rec.host_cpus and rec.host_load and max(rec.host_load) > rec.host_cpus:
        return (f" (note: host load average reached {max(rec.host_load):.1f} on {rec.host_cpus} cores; "
                "an overloaded host also looks like this: re-run with fewer guests at once)")
    return ""


def check_service(expect: Expect, rec: RunRecord) -> tuple[list[Reason], dict[str, Any], list[str]]:
    """Reasons, the windows' statistics, and, when the service failed, where the rest of the
    host took the guest's CPU in a judged window (contention.py: then the service could not be
    judged)."""
    base_w = next((w for w in rec.windows.values() if w.kind == BASELINE), None)
    if not expect.service or base_w is None:
        return [], {}, []
    t = expect.thresholds
    stats = {name: asdict(window_stats(rec.requests, w.start, w.end)) for name, w in rec.windows.items()}
    reasons: list[Reason] = []
    failed = [r for r in rec.requests if not (r.status is not None and 200 <= r.status < 400)]
    if failed:
        first = failed[0]
        reasons.append(Reason("service", f"{len(failed)} of {len(rec.requests)} requests failed "
                                         f"(first: {first.error or first.status})"))
    base = stats[base_w.name]
    if not base["count"] or base["max_latency"] is None:
        reasons.append(Reason("service", f"no successful request in the {base_w.name} window: "
                                         "nothing to compare with"))
        return reasons, stats, []
    lat_limit = max(t.max_latency, t.latency_factor * base["max_latency"])
    gap_limit = max(t.max_gap, t.latency_factor * (base["longest_gap"] or 0))
    p50_limit = max(t.min_median, t.median_factor * base["p50"])
    for name, w in rec.windows.items():
        s = stats[name]
        if w.kind not in (TRANSITION, HOLD) or not s["count"]:
            continue
        if s["max_latency"] is not None and s["max_latency"] > lat_limit:
            reasons.append(Reason("service", f"{name} window: max latency {s['max_latency']*1000:.0f} ms "
                                             f"> {lat_limit*1000:.0f} ms allowed (baseline max "
                                             f"{base['max_latency']*1000:.0f} ms)"))
        if s["longest_gap"] is not None and s["longest_gap"] > gap_limit:
            reasons.append(Reason("service", f"{name} window: {s['longest_gap']:.2f} s without a response "
                                             f"> {gap_limit:.2f} s allowed (baseline "
                                             f"{base['longest_gap']:.2f} s)"))
        # A sustained slow-down shows while patched; transition windows include the
        # module load and the transition itself, judged by their worst case above.
        if w.kind == HOLD and s["p50"] is not None and s["p50"] > p50_limit:
            reasons.append(Reason("service", f"{name} window: median latency {s['p50']*1000:.0f} ms "
                                             f"> {p50_limit*1000:.0f} ms allowed (baseline median "
                                             f"{base['p50']*1000:.0f} ms)"))
    note = host_overloaded(rec)
    if note and reasons:
        reasons = [Reason(r.check, r.message + note) for r in reasons]
    by_host = [why for w in rec.windows.values() if w.kind in (TRANSITION, HOLD)
               for why in [contention.host_took(rec, base_w, w)] if why] if reasons else []
    return reasons, stats, by_host


# dmesg ------------------------------------------------------------------------
# What the kernel logs for each livepatch operation (kernel/livepatch/{core,transition}.c).
_KMSG = {"enabled": ["livepatch: enabling patch '{}'", "livepatch: '{}': starting patching transition"],
         "patched": ["livepatch: '{}': patching complete"],
         "disabled": ["livepatch: '{}': starting unpatching transition"],
         "unpatched": ["livepatch: '{}': unpatching complete"]}


def expected_lines(rec: RunRecord) -> list[str]:
    """The livepatch lines the run's operations imply, in the order they happened."""
    return [line.format(name) for op, name in rec.ops for line in _KMSG[op]]


def _load_line(text: list[str]) -> Optional[int]:
    """Index of the lab's mark before the first patch load in the run's log (livepatch.LOADING); None
    when it is not there (no load, or a report storm overran the log: then ``patch_issued`` says)."""
    return next((i for i, line in enumerate(text) if line.startswith(LOADING)), None)


def check_dmesg(expect: Expect, rec: RunRecord) -> tuple[list[Reason], list[Reason]]:
    """The patch's reasons, and trouble the kernel reported before the patch's module was loaded
    (that cannot be the patch's doing: the run is an ``error``)."""
    reasons: list[Reason] = []
    before: list[Reason] = []
    text = [kmsg.strip_prefix(line) for line in rec.dmesg]
    # A guest lost mid-run has no readable dmesg: its console findings speak for it.
    lost = rec.guest_lost and not rec.dmesg
    # the kernel's livepatch lines for what the run did, and the scenario's own: each in order
    for wanted in ([] if lost else expected_lines(rec), [] if lost else expect.dmesg):
        pos = 0
        for want in wanted:
            found = next((i for i in range(pos, len(text)) if want in text[i]), None)
            if found is None:
                reasons.append(Reason("dmesg", f"expected, in order, but missing: {want!r}"))
                break
            pos = found + 1
    seen = set()
    # a load the scenario expects the kernel to refuse makes the kernel say so: not trouble
    excused = [f"'{p.name}'" for p in rec.patches.values() if p.refused]
    loaded_at = _load_line(text)
    modules = list(rec.patches)
    for i, line in enumerate(text):
        if any(name in line for name in excused):
            continue
        hit = kmsg.classify(line)
        kind = hit[0] if hit else ("livepatch-trouble" if _LIVEPATCH_TROUBLE.search(line) else
                                   "call-trace" if _CALL_TRACE.search(line) else None)
        if kind and kind not in seen:
            seen.add(kind)
            where = kmsg.report_function(text, i, modules) if hit else None
            message = f"{kind}: {line.strip()[:200]}" + (f" (in {where})" if where else "")
            pre = i < loaded_at if loaded_at is not None else not rec.patch_issued
            (before if pre else reasons).append(Reason("dmesg", message))
    for f in rec.console_findings:
        if f.kind not in seen:
            seen.add(f.kind)
            at = f.lineno - rec.console_from - 1    # its index in rec.console
            where = kmsg.report_function(rec.console, at, modules) if 0 <= at < len(rec.console) else None
            message = f"{f.kind} (console): {f.line.strip()[:200]}" + (f" (in {where})" if where else "")
            pre = at < rec.console_at_load if rec.console_at_load is not None else not rec.patch_issued
            (before if pre else reasons).append(Reason("dmesg", message))
    return reasons, before


# taint ------------------------------------------------------------------------
def check_taint(rec: RunRecord) -> list[Reason]:
    if rec.taint_patched is None or rec.taint_before is None:
        return []
    reasons = []
    unmarked = [hold for hold, value in rec.taint_held or [("patched", rec.taint_patched)]
                if not value & LIVEPATCH_TAINT]
    if unmarked:
        reasons.append(Reason("taint", "K (kernel has been live patched) is not set while patched"
                                       + (f" (in {', '.join(unmarked)})" if rec.taint_held else "")))
    seen = rec.taint_patched | (rec.taint_after or 0)
    for _hold, value in rec.taint_held:
        seen |= value
    extra = seen & ~rec.taint_before & ~ALLOWED_TAINT
    for letter, meaning in taint_letters(extra):
        reasons.append(Reason("taint", f"{letter}: {meaning}"))
    return reasons


# transition / revert ------------------------------------------------------------
def check_transition(rec: RunRecord) -> list[Reason]:
    return [r for p in rec.patches.values() for r in _transition(p)]


def _transition(p: PatchRecord) -> list[Reason]:
    tr = p.transition
    if not p.loaded or tr.completed is None:   # never waited for (e.g. an unexpected load)
        return []
    reasons = []
    who = "; ".join(tr.stragglers[:5])
    if tr.forced:
        # Since 5.1 a forced *patching* transition no longer pins the new patch's module
        # (only patches forced while unpatching, and older kernels, stay loaded for good);
        # the revert check reports what this kernel did.
        reasons.append(Reason("transition", "the transition was forced: tasks were switched without a "
                                            "safe point, so the patch's consistency is not guaranteed, and "
                                            "a forced module may never be unloadable (stragglers: "
                                            f"{who or 'none named'})"))
    elif not tr.completed:
        signaled = f", nor {tr.seconds or 0:.0f} s in after the stragglers were signalled" if tr.signaled else ""
        reasons.append(Reason("transition", f"patching did not complete within {tr.deadline or 0:.0f} s"
                                            f"{signaled}; still unpatched: {who or 'none named'}"
                                            + toolcheck.after_stall(tr.tool)))
    elif tr.tool:
        reasons += toolcheck.after_transition(tr.tool)
    return reasons


def check_revert(rec: RunRecord) -> list[Reason]:
    return [r for p in rec.patches.values() for r in _revert(p, p.name in rec.replaced)]


def _revert(p: PatchRecord, replaced: bool) -> list[Reason]:
    rv = p.revert
    if not p.loaded or not rv.attempted:
        return []
    reasons = []
    if not rv.disabled and not replaced:   # an atomic replace disabled it: nothing to disable
        reasons.append(Reason("revert", f"could not disable the patch: {rv.disable_err}"))
    if rv.disabled and p.unpatch and not p.unpatch.completed:
        who = "; ".join(p.unpatch.stragglers[:5])
        reasons.append(Reason("revert", f"unpatching did not complete within "
                                        f"{p.unpatch.deadline or 0:.0f} s; still patched: {who}"))
    if rv.rmmod_rc not in (0, None):
        reasons.append(Reason("revert", f"rmmod failed (rc {rv.rmmod_rc}): {rv.rmmod_err.strip()}"))
    but = toolcheck.but_it_said(rv.tool)   # a revert tool that claimed success
    if rv.sysfs_gone is False:
        reasons.append(Reason("revert", f"/sys/kernel/livepatch/{p.name} still exists{but}"))
    if rv.module_gone is False:
        reasons.append(Reason("revert", f"module {p.name} still in /proc/modules{but}"))
    return reasons + toolcheck.after_revert(rv)


_KTIME = re.compile(r"^\[\s*(\d+\.\d+)\]")


def kernel_durations(name: str, dmesg: list[str]) -> dict[str, float]:
    """Transition durations by the kernel's own clock, from dmesg timestamps."""
    at: dict[str, float] = {}
    for line in dmesg:
        m = _KTIME.match(line)
        if not m:
            continue
        for key, needle in (("patch_start", "starting patching transition"),
                            ("patch_end", "patching complete"),
                            ("unpatch_start", "starting unpatching transition"),
                            ("unpatch_end", "unpatching complete")):
            if f"'{name}': {needle}" in line:
                at.setdefault(key, float(m.group(1)))
    out = {}
    if {"patch_start", "patch_end"} <= at.keys():
        out["patching_s"] = round(at["patch_end"] - at["patch_start"], 3)
    if {"unpatch_start", "unpatch_end"} <= at.keys():
        out["unpatching_s"] = round(at["unpatch_end"] - at["unpatch_start"], 3)
    return out


def decide(expect: Expect, rec: RunRecord) -> Verdict:
    windows = sorted(rec.windows.values(), key=lambda w: w.start)
    if rec.error:
        return Verdict("error", [Reason("lab", rec.error)], {}, windows)
    reasons = list(rec.early) + list(rec.lifecycle)
    service_reasons, service_stats, by_host = check_service(expect, rec)
    dmesg_reasons, before_load = check_dmesg(expect, rec)
    costs = cost_measurement(rec)
    # a use after unload first: it names what the guest's death that follows it is about
    reasons = check_unload(rec) + reasons
    for part in (check_transition(rec), check_probe(expect, rec), service_reasons, dmesg_reasons,
                 check_taint(rec), check_revert(rec), check_leaks(expect.thresholds, rec), check_soak(expect, rec),
                 check_overhead(expect, costs)):
        reasons += part
    main = rec.main
    measurements: dict[str, Any] = {
        "service": service_stats,
        # insmod / the disable write return only after the kernel's first transition attempt,
        # which on PREEMPT_DYNAMIC kernels rewrites static calls (slow under TCG)
        "load_s": main.transition.load_seconds, "disable_s": main.revert.disable_seconds,
        "transition_s": main.transition.seconds, "unpatch_s": main.unpatch.seconds if main.unpatch else None,
        "kernel_clock": kernel_durations(rec.patch_name, rec.dmesg),
        "taint": {"before": rec.taint_before, "patched": rec.taint_patched, "after": rec.taint_after},
        "requests": len(rec.requests), "probe_samples": len(rec.probe),
        "host_load": {"max": max(rec.host_load) if rec.host_load else None, "cpus": rec.host_cpus},
        "host_cpu": contention.describe(rec),
    }
    if rec.debug:
        measurements["debug"] = {**rec.debug, "cmdline": rec.cmdline}
    if costs:
        measurements["overhead"] = costs
    latency = service_difference(rec) if expect.service else None
    if latency:   # patched minus baseline, median ms, per held window
        measurements["service_difference_ms"] = latency
    if rec.memory:
        measurements["memory"] = rec.memory
    layout = {p.name: {"core": [f"{p.core[0]:#x}", p.core[1]] if p.core else None,
                       "sections": {k: f"{v:#x}" for k, v in sorted(p.sections.items())}}
              for p in rec.patches.values() if p.sections or p.core}
    if layout:   # where each patch's module lay: what a use after unload is judged by
        measurements["module_layout"] = layout
    if rec.soak:
        measurements["soak"] = [asdict(s) for s in rec.soak]
    if rec.tool_runs:   # each call of the tool or hook; what it printed is in apply.log
        measurements["tool_runs"] = [r.as_dict() for r in rec.tool_runs]
    if before_load:
        # the kernel was in trouble before the patch's module was loaded: the patch cannot be judged
        return Verdict("error", [Reason("guest", "the kernel reported trouble before the patch's module was "
                                                 f"loaded, so it is not the patch's doing: {r.message}")
                                 for r in before_load] + reasons, measurements, windows)
    if by_host and reasons == service_reasons:
        # the service alone failed, and only while the host took the guest's CPU: the lab
        # cannot judge the patch from these windows (faults.py: the host's fault is an error)
        why = "; ".join(by_host)
        return Verdict("error", [Reason("host", f"the host took the guest's CPU while the service failed: {why}; "
                                        "the service could not be judged: re-run with fewer guests at once")]
                       + reasons, measurements, windows)
    return Verdict("fail" if reasons else "pass", reasons, measurements, windows)
