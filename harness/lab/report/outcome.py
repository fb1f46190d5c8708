"""One scenario × kernel, finished: the verdict and everything needed to act on it, and the
artifact folder it leaves."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..run.events import phase_seconds
from ..run.record import RunRecord, ToolRun
from ..judge.verdict import Verdict

# What a run writes into its artifact folder; an earlier run's copies are removed first,
# so a folder never mixes two runs (a stale cpus.txt would accuse a patch that is fine).
ARTIFACTS = ("console.log", "dmesg.txt", "requests.jsonl", "probe.jsonl", "timeline.json",
             "verdict.json", "cpus.txt", "apply.log")


@dataclass
class Outcome:
    scenario: str
    kernel: str
    verdict: Verdict
    kernel_info: dict[str, Any] = field(default_factory=dict)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    artifacts: str = ""
    seconds: float = 0.0
    modules: list[dict[str, str]] = field(default_factory=list)   # role, name, path, signature
    criteria: dict[str, Any] = field(default_factory=dict)        # what it was judged against (criteria.py)
    release: dict[str, str] = field(default_factory=dict)         # the scenario's `release:`, as given

    @property
    def phases(self) -> dict[str, float]:
        return phase_seconds(self.timeline)

    def as_dict(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "kernel": self.kernel, **self.verdict.as_dict(),
                "kernel_info": self.kernel_info, "timeline": self.timeline,
                "phases": self.phases,
                "modules": self.modules, "artifacts": self.artifacts, "seconds": round(self.seconds, 2),
                "criteria": self.criteria, "release": self.release}


def clear(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ARTIFACTS:
        (out_dir / name).unlink(missing_ok=True)


def write(out_dir: Path, outcome: Outcome, rec: RunRecord) -> None:
    (out_dir / "verdict.json").write_text(json.dumps(outcome.as_dict(), indent=2, default=str))
    (out_dir / "timeline.json").write_text(json.dumps(outcome.timeline, indent=2, default=str))
    (out_dir / "dmesg.txt").write_text("\n".join(rec.dmesg) + ("\n" if rec.dmesg else ""))
    if rec.tool_runs:   # what the vendor's tool or the hook printed, call by call
        (out_dir / "apply.log").write_text("".join(_tool_run(r) for r in rec.tool_runs))
    with open(out_dir / "probe.jsonl", "w") as fh:
        for s in rec.probe:
            fh.write(json.dumps(asdict(s) if hasattr(s, "__dataclass_fields__") else s) + "\n")


def _tool_run(r: ToolRun) -> str:
    ended = (f"rc {r.rc}" if r.rc is not None else "did not end in time: killed") + (
        f" after {r.seconds:.2f} s" if r.seconds is not None else "")
    out = r.output if not r.output or r.output.endswith("\n") else r.output + "\n"
    return f"== {r.tool} {r.op} {r.patch}: {r.command}\n== {ended}\n{out}\n"
