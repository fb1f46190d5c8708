#!/usr/bin/env python3
"""What the lab can tell of a patch's cost: the per-call difference's interval, run after run.

    python bench/overhead.py [--kernel debian-6.1 ...] [--repeat 3]
                             [--scenario scenarios/overhead-none.yaml ...] [--command CMD]
                             [--markdown docs/checks.md]

Runs each SCENARIO (default: the no-cost patch, then the 1 ms and 3 ms ones) REPEAT times on each
kernel line and prints each run's per-call difference with its 95 % interval, the ratio, and
the Mann-Whitney p. For the no-cost patch the interval's width is the noise floor: the smallest
cost the lab can tell from zero on this host (a cost whose interval clears 0 must be about half
the width or more). ``--command`` replaces the scenarios' cost workload (e.g. `cat /proc/cmdline`,
whose fork and exec are much noisier than the builtin read). Numbers, not a pass/fail.

The ground truth: the busy patch times itself (written to the kernel log at unload: "N calls,
T ns in the patched function, B ns of it busy-waiting"). ``added`` is B/N, the work a call adds
beyond what the old function did (the cost scenarios replay the old function's output, so the
rest of the new function is the same work); ``fn`` is T/N, the whole new function; ``in`` says
whether the lab's interval holds ``added``. What the patch cannot time is the redirection
(ftrace, then the klp handler): the no-cost patch's figure is that part alone.

``--markdown FILE`` also writes the table between FILE's ``<!-- bench:overhead begin/end -->`` lines.
"""
from __future__ import annotations

import argparse
import logging
import dataclasses
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import mdtable  # noqa: E402
from livepatch_lab.core.settings import Settings  # noqa: E402
from livepatch_lab.lab import runner
from livepatch_lab.lab.scenario import loader as scenario  # noqa: E402

DEFAULT = [ROOT / "scenarios" / f"overhead-{n}.yaml" for n in ("none", "1ms", "3ms")]
OWN = re.compile(r"(\d+) calls, (\d+) ns in the patched function, (\d+) ns of it busy-waiting")


def own_ms(run_dir: Path) -> tuple[float, float, int] | None:
    """The patch's own per-call times (ms): busy-waiting (the added work) and the whole new
    function, and its calls, summed over every unload in the run's kernel log; None for a patch
    that does not time itself."""
    path = run_dir / "dmesg.txt"
    hits = OWN.findall(path.read_text()) if path.exists() else []
    calls = sum(int(h[0]) for h in hits)
    if not calls:
        return None
    return sum(int(h[2]) for h in hits) / calls / 1e6, sum(int(h[1]) for h in hits) / calls / 1e6, calls


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel", action="append", default=[])
    ap.add_argument("--scenario", action="append", default=[])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--command", help="the cost workload for every scenario")
    ap.add_argument("--artifacts", type=Path)
    ap.add_argument("--markdown", metavar="FILE", help="also write the table between FILE's "
                    "<!-- bench:overhead begin/end --> lines (docs/checks.md; - for stdout)")
    args = ap.parse_args()
    cells = []
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)   # SSH attempts to a booting guest fail by design
    settings = Settings.from_env()
    out = args.artifacts or Path(tempfile.mkdtemp(prefix="overhead-"))
    print(f"{'kernel':<12} {'scenario':<15} {'run':>3} {'difference ms/call [95% CI]':>34} {'ratio [95% CI]':>26} "
          f"{'p':>8} {'added':>7} {'fn':>7} {'in':>3} {'calls/op':>8}  verdict")
    for kernel in args.kernel or ["debian-6.1"]:
        for path in [Path(p) for p in args.scenario] or DEFAULT:
            sc = scenario.load(path)
            if args.command:
                sc = dataclasses.replace(sc, overhead=dataclasses.replace(sc.overhead, command=args.command))
            widths, figures, owns, verdicts = [], [], [], []
            for i in range(args.repeat):
                run_dir = out / kernel / sc.name / str(i)
                o = runner.run(sc, kernel, settings, run_dir)
                m = o.verdict.measurements.get("overhead")
                verdicts.append(o.verdict.verdict + "".join(f" `{r.check}`" for r in o.verdict.reasons))
                if not m:
                    print(f"{kernel:<12} {sc.name:<15} {i:>3} {'no figure: ' + o.verdict.verdict:>34}")
                    figures.append("no figure")
                    continue
                d, r = m["difference_ms"], m["ratio"]
                widths.append(d["ci95"][1] - d["ci95"][0])
                figures.append(f"{d['estimate']:+.3f} [{d['ci95'][0]:+.3f} .. {d['ci95'][1]:+.3f}]")
                own = own_ms(run_dir)
                owns.append(f"{own[0]:.3f}" if own else "-")
                if own:
                    # show() calls a timed call made: the patched blocks' calls against the
                    # patch's own count (the probe's reads while patched add a few)
                    held = "yes" if d["ci95"][0] <= own[0] <= d["ci95"][1] else "no"
                    per_op = own[2] / (m["blocks"]["patched"] * m["repeat"])
                    mine = f"{own[0]:>7.3f} {own[1]:>7.3f} {held:>3} {per_op:>8.2f}"
                else:
                    mine = f"{'-':>7} {'-':>7} {'-':>3} {'-':>8}"
                print(f"{kernel:<12} {sc.name:<15} {i:>3} {d['estimate']:>+9.3f} [{d['ci95'][0]:+.3f} .. "
                      f"{d['ci95'][1]:+.3f}] {r['estimate']:>8.3f} [{r['ci95'][0]:.3f} .. {r['ci95'][1]:.3f}] "
                      f"{m['p_value']:>8.2g} {mine}  {o.verdict.verdict}", flush=True)
            if widths:
                print(f"{kernel:<12} {sc.name:<15} interval width: median {sorted(widths)[len(widths) // 2]:.3f} ms, "
                      f"widest {max(widths):.3f} ms")
            limit = sc.thresholds.overhead_max_percent
            cells.append((sc.name + (f" (+{limit:g} %)" if limit is not None else ""), kernel, " / ".join(figures),
                          " / ".join(owns), "; ".join(verdicts)))
    print(f"artifacts: {out}")
    if args.markdown:
        mdtable.write(args.markdown, "overhead", mdtable.table(
            ("scenario (limit)", "line", f"per-call difference, ms [95% CI], runs 1-{args.repeat}",
             "the patch's own added time, ms", "verdicts"), cells) + "\n\n"
            + mdtable.written_by())
    return 0


if __name__ == "__main__":
    sys.exit(main())
