"""Results presented: the kernel × scenario table and a run explained (the document they come
from is lab/matrix.py's)."""
from __future__ import annotations

from typing import Any, Sequence


def columns(rows: Sequence[Sequence[Any]]) -> str:
    """Rows as left-aligned columns, two spaces apart (the first row is the header)."""
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def matrix(scenarios: Sequence[str], versions: dict[str, str], cells: dict[tuple[str, str], str]) -> str:
    """Scenario rows x kernel columns (headed with each kernel's exact version); "-" where
    a scenario did not run on a kernel."""
    kernels = sorted(versions)
    head = ["scenario"] + [f"{k} ({versions[k]})" for k in kernels]
    return columns([head] + [[s] + [cells.get((s, k), "-") for k in kernels] for s in scenarios])


def table(results: Sequence[dict[str, Any]], marks: bool = True) -> str:
    """Scenario rows × kernel columns of verdicts (the matrix document's ``results``), with each
    kernel's exact version; with ``marks``, a verdict the scenario does not expect is marked ``!``."""
    def cell(r: dict[str, Any]) -> str:
        odd = marks and not r.get("as_expected", True)
        return r["verdict"].upper() + (f" ! (expected {r['expected']})" if odd else "")
    return matrix(list(dict.fromkeys(r["scenario"] for r in results)),
                  {r["kernel"]: (r.get("kernel_info") or {}).get("version", "?") for r in results},
                  {(r["scenario"], r["kernel"]): cell(r) for r in results})


def explain(outcome: Any) -> str:
    lines = [f"{outcome.scenario} on {outcome.kernel} "
             f"({outcome.kernel_info.get('version', '?')}): {outcome.verdict.verdict.upper()}"]
    lines += [f"  [{r.check}] {r.message}" for r in outcome.verdict.reasons]
    lines += [f"  {m['role']} {m['name']}: {m['signature']}" for m in getattr(outcome, "modules", [])]
    debug = outcome.verdict.measurements.get("debug")
    if debug:
        absent = "".join(f"; {f} absent: {why}" for f, why in debug.get("absent", {}).items())
        lines.append(f"  memory debugging: {', '.join(debug.get('active', [])) or 'none'}{absent}")
    costs = outcome.verdict.measurements.get("overhead")
    if costs:
        from ..judge.overhead import describe
        lines.append(f"  overhead: {describe(costs)}")
    soak = outcome.verdict.measurements.get("soak")
    if soak:
        lines.append("  soak: " + columns([("cycle", "load s", "transition s", "unpatch s", "MemAvailable KiB",
                                             "SUnreclaim KiB", "VmallocUsed KiB", "modules", "left")] + [
            (s["cycle"], s["load_s"] or "-", s["transition_s"] or "-", s["unpatch_s"] or "-",
             s["mem_available_kib"], s["sunreclaim_kib"], s.get("vmalloc_kib", "-"), s["modules"],
             ",".join(s["left"]) or "-")
            for s in soak]).replace("\n", "\n        "))
    phases = outcome.phases
    if phases:
        lines.append(f"  time: {outcome.seconds:.1f} s = " + ", ".join(f"{k} {v:.1f}" for k, v in phases.items()))
    if outcome.artifacts:
        lines.append(f"  artifacts: {outcome.artifacts}")
    return "\n".join(lines)
