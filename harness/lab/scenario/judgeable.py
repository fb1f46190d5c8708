"""The windows a scenario asks for, checked long enough to judge when it loads. Apart from the
loader because the runner times its judged windows by the same ``TRANSITION_TAIL``.
"""
from __future__ import annotations

from ...core import yamlconf
from .specs import Scenario

# What the lab needs to judge a window: the service's baseline must hold this many requests
# (and last at least MIN_BASELINE s); a judged window starts 1 s after its transition
# (TRANSITION_TAIL), and a probe phase must fit two runs.
MIN_REQUESTS = 10
MIN_BASELINE = 1.0
TRANSITION_TAIL = 1.0


def judgeable(sc: Scenario, loaded: yamlconf.Loaded) -> None:
    """Refuse windows too short for the lab to judge: a verdict from them would be the lab's
    guess, not the patch's doing."""
    tl, svc, probe = sc.timeline, sc.service, sc.probe
    if svc.enabled:
        need = max(MIN_BASELINE, MIN_REQUESTS / svc.rate)
        if tl.baseline < need:
            raise loaded.error(f"{tl.baseline:g} s is too short to judge the service: the baseline needs at "
                               f"least {need:g} s ({MIN_REQUESTS} requests at {svc.rate:g}/s)",
                               "timeline.baseline")
        need = TRANSITION_TAIL + MIN_REQUESTS / svc.rate
        if tl.patched < need and not sc.steps:
            raise loaded.error(f"{tl.patched:g} s is too short to judge the service while patched: at least "
                               f"{need:g} s ({TRANSITION_TAIL:g} s after the transition, then {MIN_REQUESTS} "
                               f"requests at {svc.rate:g}/s)", "timeline.patched")
    runs = 2 * probe.interval   # two runs, so one lies wholly inside the window
    for i, step in enumerate(sc.steps):
        probed = step.probe or (i and sc.steps[i - 1].probe)
        if step.action == "hold" and probed and step.seconds < TRANSITION_TAIL + runs:
            raise loaded.error(f"{step.seconds:g} s is too short to check the probe: at least "
                               f"{TRANSITION_TAIL + runs:g} s (two probe runs every {probe.interval:g} s, after "
                               f"{TRANSITION_TAIL:g} s for the transition)", f"steps[{i}].hold")
    if sc.soak.cycles and "patched" in probe.patterns and sc.soak.hold < TRANSITION_TAIL + runs:
        raise loaded.error(f"{sc.soak.hold:g} s is too short to check the probe while patched: at least "
                           f"{TRANSITION_TAIL + runs:g} s", "soak.hold")
    for phase, window, lead in (("before", "baseline", 0.0), ("patched", "patched", TRANSITION_TAIL),
                                ("after", "cooldown", TRANSITION_TAIL)):
        have = getattr(tl, window)
        if phase in probe.patterns and have < lead + runs:
            raise loaded.error(f"{have:g} s is too short to check the probe's {phase!r} output: at least "
                               f"{lead + runs:g} s (two probe runs every {probe.interval:g} s"
                               f"{f', after {lead:g} s for the transition' if lead else ''})",
                               f"timeline.{window}")
