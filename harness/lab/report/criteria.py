"""What a run was judged against, kept beside its verdict: ``verdict.json``'s ``criteria``.

The scenario's expectation on the run's kernel, the plan's ``Expect`` (thresholds, the probe's
pattern per phase, the kernel-log lines, a soak's limits) and what gives those their scale: the
probe's command, the service's load, the windows' planned lengths, the transition's deadline,
the cost workload. Written once the verdict is decided, from the very ``Expect`` it was decided
against, so a report made later from the folder alone (``signoff``) can say what a ``pass`` was
measured against. A run saved before they were kept has none.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Any

from ..scenario.expect import Expect
from ..scenario.specs import Scenario

FORMAT = 1


def record(sc: Scenario, expect: Expect, kernel: str) -> dict[str, Any]:
    """``sc``'s criteria for its run on ``kernel``, as judged by ``expect``."""
    want = sc.expectation(kernel)
    service = sc.service
    return {
        "format": FORMAT,
        "form": "soak" if sc.soak.cycles else "lifecycle" if sc.steps else "single",
        "expect": {"verdict": want.verdict, "checks": list(want.checks), "reason": want.reason},
        "probe": {"command": sc.probe.command, "interval": sc.probe.interval,
                  "patterns": dict(expect.probe), "same_as": dict(expect.probe_same)},
        "service": {"enabled": expect.service, "rate": service.rate, "timeout": service.timeout,
                    "port": service.port, "path": service.path, "command": service.command,
                    "serve_file": service.serve_file},
        "stress": {"enabled": sc.stress.enabled, "args": sc.stress.args},
        "timeline": asdict(sc.timeline),
        "transition": asdict(sc.transition),
        "thresholds": asdict(expect.thresholds),
        "dmesg": list(expect.dmesg),
        "soak": asdict(expect.soak) if expect.soak is not None else None,
        "overhead": ({k: v for k, v in asdict(sc.overhead).items() if k != "enabled"}
                     if sc.overhead.enabled else None),
    }
