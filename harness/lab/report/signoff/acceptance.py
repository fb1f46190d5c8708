"""What a run's verdict was measured against, in the page's words: its saved criteria
(``verdict.json``'s ``criteria``, report/criteria.py) with the service's limits worked out
against the run's own baseline, and the windows the verdict judged with what each must show.

A run saved before the criteria were kept shows its judged windows only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from ....core.settings import Timeouts
from ....machine import kmsg
from ...run.livepatch import ALLOWED_TAINT, LIVEPATCH_TAINT, taint_letters
from .collect import Run

# What each kind of window is judged for (judge/verdict.check_service, judge/probecheck).
JUDGED_FOR = {"baseline": "the reference: the service's limits scale with it",
              "transition": "service: max latency, longest gap",
              "hold": "service: max latency, longest gap, median",
              "cooldown": "the revert: the unpatched output back, nothing left behind"}


@dataclass
class Limit:
    what: str
    rule: str
    value: str = ""    # the limit this run came to, with the baseline's figure it scales


@dataclass
class Window:
    name: str
    kind: str
    seconds: float
    probe: str         # what the probe must show in it, or ""
    judged_for: str


def _ms(seconds: Optional[float]) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def _baseline(run: Run) -> dict[str, Any]:
    """The service's figures in the run's baseline window, as the verdict measured them."""
    name = next((w[0] for w in run.windows() if w[1] == "baseline"), "baseline")
    return ((run.verdict.get("measurements") or {}).get("service") or {}).get(name) or {}


def service_limits(run: Run, t: dict[str, Any]) -> list[Limit]:
    """The service's limits in the transition and hold windows: each the larger of a floor and a
    factor of the baseline's own figure (judge/verdict.check_service), worked out for this run."""
    base = _baseline(run)
    def scaled(floor: float, factor: float, figure: Optional[float], unit: str) -> str:
        if figure is None:
            return "not worked out: the baseline has no figure"
        limit = max(floor, factor * figure)
        return (f"{_ms(limit)} (baseline {_ms(figure)})" if unit == "ms" else
                f"{limit:.2f} s (baseline {figure:.2f} s)")
    return [
        Limit("no failed request", "every request answered 200-399 within its timeout"),
        Limit("max latency, transition and hold windows",
              f"the larger of {_ms(t['max_latency'])} and {t['latency_factor']:g} x the baseline's max",
              scaled(t["max_latency"], t["latency_factor"], base.get("max_latency"), "ms")),
        Limit("longest gap without a response, transition and hold windows",
              f"the larger of {t['max_gap']:g} s and {t['latency_factor']:g} x the baseline's longest gap",
              scaled(t["max_gap"], t["latency_factor"], base.get("longest_gap") or 0.0, "s")),
        Limit("median latency, hold windows",
              f"the larger of {_ms(t['min_median'])} and {t['median_factor']:g} x the baseline's median",
              scaled(t["min_median"], t["median_factor"], base.get("p50"), "ms")),
    ]


def other_limits(c: dict[str, Any]) -> list[Limit]:
    """Memory kept after the revert, the transition's deadline, a soak's and the cost's limits."""
    t, tr = c["thresholds"], c["transition"]
    deadline = (f"{tr['timeout']:g} s" if tr.get("timeout") is not None else
                f"{Timeouts.transition:g} s (the lab's default)")
    out = [Limit("unreclaimable slab kept after the revert",
                 f"at most {t['slab_growth_kib']:g} KiB of SUnreclaim growth from before the load to the "
                 "cool-down's end"),
           Limit("vmalloc'ed memory kept after the revert",
                 f"at most {t['vmalloc_growth_kib']:g} KiB of VmallocUsed growth, the same span"),
           Limit("transition deadline", f"each (un)patching transition completes within {deadline} "
                                        f"(KVM seconds, scaled under TCG); on a stall: {tr.get('on_stall', 'fail')}")]
    soak = c.get("soak")
    if soak:
        out += [Limit("soak: leak a cycle", f"unreclaimable slab or vmalloc'ed memory rising more than "
                                            f"{soak['leak_kib']:g} KiB a cycle over {soak['cycles']} cycles "
                                            f"({soak['hold']:g} s patched each) fails"),
                Limit("soak: MemAvailable a cycle", f"falling more than {soak['mem_kib']:g} KiB a cycle fails"),
                Limit("soak: transitions", f"the last third's more than {soak['slowdown']:g} x the first's fails")]
    cost, limit = c.get("overhead"), t.get("overhead_max_percent")
    if cost or limit is not None:
        workload = (f"blocks of {cost['repeat']} calls of {repr(cost['command']) if cost['command'] else 'the probe'}, "
                    f"{cost['blocks']} blocks an arm over {cost['cycles']} load/revert cycles; " if cost else "")
        out.append(Limit("cost of a call while patched", workload + (
            f"fails when the whole 95 % interval of the patched/unpatched ratio is above +{limit:g} %"
            if limit is not None else "reported, not judged (no thresholds.overhead.max_percent)")))
    return out


def _pattern(rx: str) -> str:
    """A regular expression on one line: its line breaks and tabs as ``\\n`` and ``\\t`` (which ``re``
    reads alike)."""
    return rx.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")


def probe_phases(c: dict[str, Any]) -> list[tuple[str, str]]:
    """(phase, what every probe run wholly inside it must show)."""
    p = c["probe"]
    rows = [(phase, f"exit 0 and output matching /{_pattern(rx)}/") for phase, rx in p["patterns"].items()]
    rows += [(phase, f"the same output as in the {ref} phase") for phase, ref in p["same_as"].items()]
    if p["command"] and "after" not in p["patterns"]:
        rows.append(("after", "the unpatched output again (the revert check)"))
    return rows


def grouped(rows: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Phases that must show the same, on one row (a soak's every cycle): "the patched, patched 2
    ... patched 20 phases (20)"."""
    alike: dict[str, list[str]] = {}
    for phase, want in rows:
        alike.setdefault(want, []).append(phase)
    def names(ps: list[str]) -> str:
        if len(ps) == 1:
            return f"the {ps[0]} phase"
        shown = ", ".join(ps) if len(ps) <= 3 else f"{ps[0]}, {ps[1]} ... {ps[-1]}"
        return f"the {shown} phases ({len(ps)})"
    return [(names(ps), want) for want, ps in alike.items()]


def planned(c: dict[str, Any]) -> str:
    """The windows' lengths the scenario asked for."""
    t = c["timeline"]
    held = {"single": f"patched {t['patched']:g} s",
            "lifecycle": "each hold as long as its step says",
            "soak": f"{c['soak']['cycles']} cycles patched {c['soak']['hold']:g} s each" if c.get("soak") else ""}
    return ", ".join(x for x in (f"baseline {t['baseline']:g} s", held.get(c.get("form", ""), ""),
                                 f"cool-down {t['cooldown']:g} s") if x)


def load(c: dict[str, Any]) -> str:
    """The service's load and the stress beside it, in words."""
    s, stress = c["service"], c["stress"]
    if not s["enabled"]:
        text = "no service (service.enabled: false): latency is not judged"
    else:
        server = (f"`{s['command']}`" if s.get("command") else
                  f"the lab's server returning {s['serve_file']}" if s.get("serve_file") else "the lab's server")
        text = (f"HTTP GET {s.get('path', '/')} on port {s.get('port')} ({server}) at {s['rate']:g} requests/s, "
                f"open loop, each failing after {s['timeout']:g} s")
    return text + (f"; stress-ng {stress['args']}" if stress.get("enabled") else "; no stress")


def windows(run: Run, c: dict[str, Any]) -> list[Window]:
    """The windows the verdict judged, their lengths, and what the probe must show in each."""
    phases = {w.get("name"): w.get("probe_phase") for w in run.verdict.get("windows") or []}
    wanted = dict(probe_phases(c)) if c else {}
    def probe(name: str) -> str:
        phase = phases.get(name)
        if not phase or c:
            return wanted.get(phase or "", "")
        return f"what its {phase} phase was to show (not kept with this run)"
    return [Window(name, kind, round(end - start, 2), probe(name), JUDGED_FOR.get(kind, ""))
            for name, kind, start, end, _ in run.windows()]


def view(run: Run) -> dict[str, Any]:
    """Everything the page shows beside the run's verdict about what it was measured against."""
    c = run.criteria
    if not c:
        return {"saved": False, "windows": windows(run, c)}
    return {"saved": True, "expect": c["expect"], "probe": c["probe"], "phases": grouped(probe_phases(c)),
            "load": load(c), "planned": planned(c),
            "service": service_limits(run, c["thresholds"]) if c["service"]["enabled"] else [],
            "limits": other_limits(c), "dmesg": c["dmesg"], "windows": windows(run, c),
            "findings": [kind for kind, _, _ in kmsg.RULES] + ["livepatch-trouble", "call-trace"],
            "taint_allowed": taint_letters(ALLOWED_TAINT & ~LIVEPATCH_TAINT)}
