"""One scenario × kernel, finished: the verdict and everything needed to act on it, and the
artifact folder it leaves."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .events import phase_seconds
from .record import RunRecord
from .verdict import Verdict

# What a run writes into its artifact folder; an earlier run's copies are removed first,
# so a folder never mixes two runs (a stale cpus.txt would accuse a patch that is fine).
ARTIFACTS = ("console.log", "dmesg.txt", "requests.jsonl", "probe.jsonl", "timeline.json",
             "verdict.json", "cpus.txt")


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

    @property
    def phases(self) -> dict[str, float]:
        return phase_seconds(self.timeline)

    def as_dict(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "kernel": self.kernel, **self.verdict.as_dict(),
                "kernel_info": self.kernel_info, "timeline": self.timeline,
                "phases": self.phases,
                "modules": self.modules, "artifacts": self.artifacts, "seconds": round(self.seconds, 2)}


def clear(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ARTIFACTS:
        (out_dir / name).unlink(missing_ok=True)


def write(out_dir: Path, outcome: Outcome, rec: RunRecord) -> None:
    (out_dir / "verdict.json").write_text(json.dumps(outcome.as_dict(), indent=2, default=str))
    (out_dir / "timeline.json").write_text(json.dumps(outcome.timeline, indent=2, default=str))
    (out_dir / "dmesg.txt").write_text("\n".join(rec.dmesg) + ("\n" if rec.dmesg else ""))
    with open(out_dir / "probe.jsonl", "w") as fh:
        for s in rec.probe:
            fh.write(json.dumps(asdict(s) if hasattr(s, "__dataclass_fields__") else s) + "\n")
