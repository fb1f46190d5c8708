#!/usr/bin/env python3
"""Every speed target of the lab, measured in one run and printed as ratios.

    python bench/speed.py [--runs 3] [--matrix] [--kernel-a debian-6.1] [--kernel-b debian-6.12]
                          [--markdown docs/benchmarks.md]

1. fixed cost / bare cycle: an item's seconds minus the cache preparation and the
   scenario's own windows (baseline, patched, cool-down), against bench/bare_cycle.py's
   bare scripted cycle of the same work on the same kernel (target <= 1.5);
2. boot + set-up of a warm item (target <= 3 s);
3. a debian-6.12 item / a debian-6.1 item (target <= 1.5);
4. with --matrix: bench/matrix.py's -n 1 / -n 2 over good.yaml on every kernel line
   (target >= 1.7; slow: it runs the matrix twice).

Numbers to read, not assertions: the host's load average is printed beside them,
since a busy 2-core host slows a TCG guest as much as anything measured here.
``--markdown FILE`` also writes them as the table between FILE's ``<!-- bench:speed begin -->``
and ``<!-- bench:speed end -->`` lines (docs/benchmarks.md's speed targets; ``-``: stdout).
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bare_cycle import bare_cycle  # noqa: E402
import mdtable  # noqa: E402
from livepatch_lab.core.settings import Settings  # noqa: E402
from livepatch_lab.lab import runner
from livepatch_lab.lab.scenario import loader as scenario  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def item(kernel: str, settings: Settings, out: Path) -> dict[str, float]:
    sc = scenario.load(REPO / "scenarios" / "good.yaml")
    outcome = runner.run(sc, kernel, settings, out)
    if outcome.verdict.verdict != "pass":
        print(f"  note: good on {kernel} was {outcome.verdict.verdict}: "
              f"{'; '.join(r.message.splitlines()[0] for r in outcome.verdict.reasons)[:300]}")
    ph = outcome.phases
    windows = sc.timeline.baseline + sc.timeline.patched + sc.timeline.cooldown
    return {"seconds": outcome.seconds, "fixed": outcome.seconds - ph.get("prepare", 0.0) - windows,
            "boot_setup": ph.get("boot", 0.0) + ph.get("setup", 0.0), "boot": ph.get("boot", 0.0),
            "setup": ph.get("setup", 0.0), "collect": ph.get("collect", 0.0)}


def median_of(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


# name, the table's wording of it, value, goal (op, limit, unit), detail
Row = tuple[str, str, float, tuple[str, float, str], str]


def goal(g: tuple[str, float, str]) -> str:
    return f"{g[0]} {g[1]:g}{g[2]}"


def met(value: float, g: tuple[str, float, str]) -> bool:
    return value <= g[1] if g[0] == "<=" else value >= g[1]


def markdown(rows: list[Row], load0: float, load1: float) -> str:
    """The speed targets as docs/benchmarks.md shows them, with the command, date, cores and load."""
    cells = [(described, f"**{value:.2f}{g[2]}**" + (f" ({detail})" if detail else ""),
              goal(g) + ("" if met(value, g) else ": **not met here**"))
             for _name, described, value, g, detail in rows]
    return (mdtable.table(("target", "measured", "goal"), cells) + "\n\n"
            + mdtable.written_by(f"load average {load0:.1f} -> {load1:.1f}"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--kernel-a", default="debian-6.1")
    ap.add_argument("--kernel-b", default="debian-6.12")
    ap.add_argument("--matrix", action="store_true")
    ap.add_argument("--markdown", metavar="FILE", help="also write the table between FILE's "
                    "<!-- bench:speed begin/end --> lines (docs/benchmarks.md; - for stdout)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="[bench] %(message)s")
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)
    settings = Settings.from_env()
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="speed-") as tmp:
        # warm-up, untimed: each line's kernel, build root, module and snapshot, so no timed item or
        # matrix run pays a first fetch or build (a cold debian-6.12 item took 107 s, a warm one ~25)
        lines = [args.kernel_a, args.kernel_b]
        if args.matrix:
            from livepatch_lab.supply.kernels import defs
            lines += [name for name in defs.load_definitions() if name not in lines]
        for name in lines:
            item(name, settings, Path(tmp) / f"warm-{name}")
        a = median_of([item(args.kernel_a, settings, Path(tmp) / f"a{i}") for i in range(args.runs)])
        b = median_of([item(args.kernel_b, settings, Path(tmp) / f"b{i}") for i in range(max(1, args.runs // 2))])
        bare = bare_cycle(args.kernel_a, settings, args.runs)
    load1 = os.getloadavg()[0]
    rows: list[Row] = [
        ("fixed cost / bare cycle", "the lab's fixed cost (an item minus cache preparation and the scenario's "
         "own windows) / the bare cycle", a["fixed"] / bare["wall"], ("<=", 1.5, ""),
         f"{a['fixed']:.1f} s / {bare['wall']:.1f} s: boot {a['boot']:.1f}, set-up {a['setup']:.1f}, "
         f"collect {a['collect']:.1f}"),
        ("boot + set-up, warm item", "boot + set-up of a warm item (restored from its snapshot)",
         a["boot_setup"], ("<=", 3, " s"), ""),
        (f"{args.kernel_b} item / {args.kernel_a} item", f"a {args.kernel_b} good item / a {args.kernel_a} one",
         b["seconds"] / a["seconds"], ("<=", 1.5, ""), f"{b['seconds']:.1f} s / {a['seconds']:.1f} s"),
    ]
    if args.matrix:
        import matrix
        with tempfile.TemporaryDirectory(prefix="matrix-") as tmp:
            one, _, _ = matrix.run_once("scenarios/good.yaml", 1, [], Path(tmp) / "n1.json")
            two, _, _ = matrix.run_once("scenarios/good.yaml", 2, [], Path(tmp) / "n2.json")
        rows.append(("-n 1 / -n 2, good.yaml x every line", "`-n 1` / `-n 2` over good.yaml x every kernel line",
                     one / two, (">=", 1.7, ""), f"{one:.0f} s / {two:.0f} s"))
    print(f"\nlivepatch-lab speed ({os.cpu_count()} host cores; load average {load0:.1f} -> {load1:.1f})")
    width = max(len(r[0]) for r in rows)
    for name, _described, value, g, detail in rows:
        print(f"  {name:<{width}}  {value:6.2f}  (target {goal(g)})  {detail}")
    if args.markdown:
        mdtable.write(args.markdown, "speed", markdown(rows, load0, load1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
