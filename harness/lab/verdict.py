"""Measurements of one run → ``pass`` / ``fail`` / ``error`` with reasons.

Pure: everything here reads a ``RunRecord`` and nothing else, so each check is
unit-tested on synthetic records and shown failing on the patch that deserves
it. ``error`` means the lab or the host broke, never the patch.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from ..machine import kmsg
from .livepatch import ALLOWED_TAINT, LIVEPATCH_TAINT, taint_letters
from .workload.stats import window_stats

# Kernel lines that are trouble beyond the generic classifier.
_LIVEPATCH_TROUBLE = re.compile(r"failed to enable patch|forcing remaining tasks to the (?:un)?patched state")
_CALL_TRACE = re.compile(r"^Call Trace:")


@dataclass
class Reason:
    check: str
    message: str


@dataclass
class Window:
    name: str
    start: float
    end: float


@dataclass
class RunRecord:
    """What the runner saw. Times are host epoch seconds (guest times already converted)."""
    patch_name: str = ""
    early: list[Reason] = field(default_factory=list)     # build / compat / load refusals, guest death
    error: Optional[str] = None                           # the lab broke
    guest_lost: Optional[str] = None                      # the guest froze or died mid-run: why
    loaded: bool = False
    windows: dict[str, Window] = field(default_factory=dict)
    requests: list[Any] = field(default_factory=list)     # httpload.Request
    service_enabled: bool = True
    probe: list[Any] = field(default_factory=list)        # probe.ProbeSample, t on the host clock
    probe_expect: dict[str, str] = field(default_factory=dict)
    transition: dict[str, Any] = field(default_factory=dict)   # completed, seconds, stragglers, forced, signaled
    unpatch: dict[str, Any] = field(default_factory=dict)      # completed, seconds, stragglers
    revert: dict[str, Any] = field(default_factory=dict)       # disabled, rmmod_rc, rmmod_err, sysfs_gone, module_gone
    dmesg: list[str] = field(default_factory=list)
    console_findings: list[Any] = field(default_factory=list)  # kmsg.Finding after the run's start
    taint_before: Optional[int] = None
    taint_patched: Optional[int] = None
    taint_after: Optional[int] = None
    thresholds: dict[str, float] = field(default_factory=dict)
    host_load: list[float] = field(default_factory=list)  # host 1-min load average, sampled per phase
    host_cpus: int = 0


@dataclass
class Verdict:
    verdict: str
    reasons: list[Reason]
    measurements: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "reasons": [asdict(r) for r in self.reasons],
                "measurements": self.measurements}


# service ----------------------------------------------------------------------
def host_overloaded(rec: RunRecord) -> str:
    """A note when the host ran more than one runnable task per core during the run: under
    TCG an overloaded host slows the guest's service exactly like a slow patch does."""
    if rec.host_cpus and rec.host_load and max(rec.host_load) > rec.host_cpus:
        return (f" (note: host load average reached {max(rec.host_load):.1f} on {rec.host_cpus} cores; "
                "an overloaded host also looks like this: re-run with fewer guests at once)")
    return ""


def check_service(rec: RunRecord) -> tuple[list[Reason], dict]:
    if not rec.service_enabled or "baseline" not in rec.windows:
        return [], {}
    t = rec.thresholds
    stats = {name: asdict(window_stats(rec.requests, w.start, w.end)) for name, w in rec.windows.items()}
    reasons: list[Reason] = []
    failed = [r for r in rec.requests if not (r.status is not None and 200 <= r.status < 400)]
    if failed:
        first = failed[0]
        reasons.append(Reason("service", f"{len(failed)} of {len(rec.requests)} requests failed "
                                         f"(first: {first.error or first.status})"))
    base = stats["baseline"]
    if not base["count"] or base["max_latency"] is None:
        reasons.append(Reason("service", "no successful request in the baseline window: "
                                         "nothing to compare with"))
        return reasons, stats
    lat_limit = max(t["max_latency"], t["latency_factor"] * base["max_latency"])
    gap_limit = max(t["max_gap"], t["latency_factor"] * (base["longest_gap"] or 0))
    p50_limit = max(t["min_median"], t["median_factor"] * base["p50"])
    for name in ("apply", "patched", "revert"):
        s = stats.get(name)
        if not s or not s["count"]:
            continue
        if s["max_latency"] is not None and s["max_latency"] > lat_limit:
            reasons.append(Reason("service", f"{name} window: max latency {s['max_latency']*1000:.0f} ms "
                                             f"> {lat_limit*1000:.0f} ms allowed (baseline max "
                                             f"{base['max_latency']*1000:.0f} ms)"))
        if s["longest_gap"] is not None and s["longest_gap"] > gap_limit:
            reasons.append(Reason("service", f"{name} window: {s['longest_gap']:.2f} s without a response "
                                             f"> {gap_limit:.2f} s allowed (baseline "
                                             f"{base['longest_gap']:.2f} s)"))
        # A sustained slow-down shows in the patched window; apply/revert include the
        # module load and the transition itself, judged by their worst case above.
        if name == "patched" and s["p50"] is not None and s["p50"] > p50_limit:
            reasons.append(Reason("service", f"{name} window: median latency {s['p50']*1000:.0f} ms "
                                             f"> {p50_limit*1000:.0f} ms allowed (baseline median "
                                             f"{base['p50']*1000:.0f} ms)"))
    note = host_overloaded(rec)
    if note and reasons:
        reasons = [Reason(r.check, r.message + note) for r in reasons]
    return reasons, stats


# probe ------------------------------------------------------------------------
def _phase_samples(rec: RunRecord, phase: str) -> list:
    w = rec.windows
    bounds = {"before": ("baseline", "baseline"), "patched": ("patched", "patched"),
              "after": ("cooldown", "cooldown")}[phase]
    if bounds[0] not in w:
        return []
    start, end = w[bounds[0]].start, w[bounds[1]].end
    return [s for s in rec.probe
            if start <= s.t and (getattr(s, "t_end", None) or s.t) < end]


def check_probe(rec: RunRecord) -> list[Reason]:
    reasons = []
    for phase, rx in rec.probe_expect.items():
        samples = _phase_samples(rec, phase)
        if not samples:
            if phase == "before" or rec.windows.get({"patched": "patched", "after": "cooldown"}[phase]):
                reasons.append(Reason("probe", f"no probe sample in the {phase} phase"))
            continue
        bad = [s for s in samples if s.rc != 0 or not re.search(rx, s.output)]
        if bad:
            out = bad[0].output.strip().splitlines()[:2]
            reasons.append(Reason("probe", f"{phase}: {len(bad)} of {len(samples)} samples do not match "
                                           f"/{rx}/ (e.g. rc {bad[0].rc}: {' | '.join(out) or '(empty)'})"))
    # Reverted means the old behaviour is back, even when no 'after' pattern was given.
    if "after" not in rec.probe_expect and rec.revert.get("module_gone"):
        before, after = _phase_samples(rec, "before"), _phase_samples(rec, "after")
        if before and after:
            want = before[-1].output
            differ = [s for s in after if s.output != want or s.rc != before[-1].rc]
            if differ:
                reasons.append(Reason("revert", f"probe output after revert differs from before the "
                                                f"patch: {differ[0].output.strip()[:120]!r} vs "
                                                f"{want.strip()[:120]!r}"))
    return reasons


# dmesg ------------------------------------------------------------------------
def expected_lines(name: str, rec: RunRecord) -> list[str]:
    lines = []
    if rec.loaded:
        lines += [f"livepatch: enabling patch '{name}'", f"livepatch: '{name}': starting patching transition"]
        if rec.transition.get("completed"):
            lines.append(f"livepatch: '{name}': patching complete")
    if rec.revert.get("disabled") and rec.transition.get("completed"):
        lines.append(f"livepatch: '{name}': starting unpatching transition")
        if rec.unpatch.get("completed"):
            lines.append(f"livepatch: '{name}': unpatching complete")
    return lines


def check_dmesg(rec: RunRecord) -> list[Reason]:
    reasons = []
    text = [kmsg.strip_prefix(line) for line in rec.dmesg]
    pos = 0
    # A guest lost mid-run has no readable dmesg: its console findings speak for it.
    wanted = [] if rec.guest_lost and not rec.dmesg else expected_lines(rec.patch_name, rec)
    for want in wanted:
        found = next((i for i in range(pos, len(text)) if want in text[i]), None)
        if found is None:
            reasons.append(Reason("dmesg", f"expected, in order, but missing: {want!r}"))
            break
        pos = found + 1
    seen = set()
    for line in text:
        hit = kmsg.classify(line)
        kind = hit[0] if hit else ("livepatch-trouble" if _LIVEPATCH_TROUBLE.search(line) else
                                   "call-trace" if _CALL_TRACE.search(line) else None)
        if kind and kind not in seen:
            seen.add(kind)
            reasons.append(Reason("dmesg", f"{kind}: {line.strip()[:200]}"))
    for f in rec.console_findings:
        if f.kind not in seen:
            seen.add(f.kind)
            reasons.append(Reason("dmesg", f"{f.kind} (console): {f.line.strip()[:200]}"))
    return reasons


# taint ------------------------------------------------------------------------
def check_taint(rec: RunRecord) -> list[Reason]:
    if rec.taint_patched is None or rec.taint_before is None:
        return []
    reasons = []
    if not rec.taint_patched & LIVEPATCH_TAINT:
        reasons.append(Reason("taint", "K (kernel has been live patched) is not set while patched"))
    seen = rec.taint_patched | (rec.taint_after or 0)
    extra = seen & ~rec.taint_before & ~ALLOWED_TAINT
    for letter, meaning in taint_letters(extra):
        reasons.append(Reason("taint", f"{letter}: {meaning}"))
    return reasons


# transition / revert ------------------------------------------------------------
def check_transition(rec: RunRecord) -> list[Reason]:
    tr = rec.transition
    if not rec.loaded or not tr:
        return []
    reasons = []
    who = "; ".join(tr.get("stragglers", [])[:5])
    if tr.get("forced"):
        # Since 5.1 a forced *patching* transition no longer pins the new patch's module
        # (only patches forced while unpatching, and older kernels, stay loaded for good);
        # the revert check reports what this kernel did.
        reasons.append(Reason("transition", "the transition was forced: tasks were switched without a "
                                            "safe point, so the patch's consistency is not guaranteed, and "
                                            "a forced module may never be unloadable (stragglers: "
                                            f"{who or 'none named'})"))
    elif not tr.get("completed"):
        signaled = (f", nor {tr.get('seconds', 0):.0f} s in after the stragglers were signalled"
                    if tr.get("signaled") else "")
        reasons.append(Reason("transition", f"patching did not complete within {tr.get('deadline', 0):.0f} s"
                                            f"{signaled}; still unpatched: {who or 'none named'}"))
    return reasons


def check_revert(rec: RunRecord) -> list[Reason]:
    rv = rec.revert
    if not rec.loaded or not rv:
        return []
    reasons = []
    if not rv.get("disabled"):
        reasons.append(Reason("revert", f"could not disable the patch: {rv.get('disable_err', '')}"))
    if rv.get("disabled") and rec.unpatch and not rec.unpatch.get("completed"):
        who = "; ".join(rec.unpatch.get("stragglers", [])[:5])
        reasons.append(Reason("revert", f"unpatching did not complete within "
                                        f"{rec.unpatch.get('deadline', 0):.0f} s; still patched: {who}"))
    if rv.get("rmmod_rc") not in (0, None):
        reasons.append(Reason("revert", f"rmmod failed (rc {rv['rmmod_rc']}): {rv.get('rmmod_err', '').strip()}"))
    if rv.get("sysfs_gone") is False:
        reasons.append(Reason("revert", f"/sys/kernel/livepatch/{rec.patch_name} still exists"))
    if rv.get("module_gone") is False:
        reasons.append(Reason("revert", f"module {rec.patch_name} still in /proc/modules"))
    return reasons


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


def decide(rec: RunRecord) -> Verdict:
    if rec.error:
        return Verdict("error", [Reason("lab", rec.error)], {})
    reasons = list(rec.early)
    service_reasons, service_stats = check_service(rec)
    for part in (check_transition(rec), check_probe(rec), service_reasons, check_dmesg(rec),
                 check_taint(rec), check_revert(rec)):
        reasons += part
    measurements = {
        "service": service_stats,
        # insmod / the disable write return only after the kernel's first transition attempt,
        # which on PREEMPT_DYNAMIC kernels rewrites static calls (slow under TCG)
        "load_s": rec.transition.get("load_seconds"), "disable_s": rec.revert.get("disable_seconds"),
        "transition_s": rec.transition.get("seconds"), "unpatch_s": rec.unpatch.get("seconds"),
        "kernel_clock": kernel_durations(rec.patch_name, rec.dmesg),
        "taint": {"before": rec.taint_before, "patched": rec.taint_patched, "after": rec.taint_after},
        "requests": len(rec.requests), "probe_samples": len(rec.probe),
        "host_load": {"max": max(rec.host_load) if rec.host_load else None, "cpus": rec.host_cpus},
    }
    return Verdict("fail" if reasons else "pass", reasons, measurements)
