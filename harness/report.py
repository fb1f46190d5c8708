"""Results of many runs: the JSON document and the kernel × scenario table."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Sequence


def document(outcomes: Sequence[Any]) -> dict[str, Any]:
    return {"results": [o.as_dict() for o in outcomes],
            "summary": {v: sum(1 for o in outcomes if o.verdict.verdict == v)
                        for v in ("pass", "fail", "error")}}


def write_json(path: Path, outcomes: Sequence[Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document(outcomes), indent=2, default=str) + "\n")


def table(outcomes: Iterable[Any]) -> str:
    """Scenario rows × kernel columns of verdicts, with each kernel's exact version."""
    outcomes = list(outcomes)
    kernels = sorted({o.kernel for o in outcomes})
    versions = {o.kernel: o.kernel_info.get("version", "?") for o in outcomes}
    scenarios = list(dict.fromkeys(o.scenario for o in outcomes))
    cell = {(o.scenario, o.kernel): o.verdict.verdict.upper() for o in outcomes}
    head = ["scenario"] + [f"{k} ({versions[k]})" for k in kernels]
    rows = [[s] + [cell.get((s, k), "-") for k in kernels] for s in scenarios]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows])


def explain(outcome: Any) -> str:
    lines = [f"{outcome.scenario} on {outcome.kernel} "
             f"({outcome.kernel_info.get('version', '?')}): {outcome.verdict.verdict.upper()}"]
    lines += [f"  [{r.check}] {r.message}" for r in outcome.verdict.reasons]
    phases = outcome.as_dict().get("phases") or {}
    if phases:
        lines.append(f"  time: {outcome.seconds:.1f} s = " + ", ".join(f"{k} {v:.1f}" for k, v in phases.items()))
    if outcome.artifacts:
        lines.append(f"  artifacts: {outcome.artifacts}")
    return "\n".join(lines)
