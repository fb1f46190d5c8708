#!/usr/bin/env python3
"""Matrix benchmark: one scenario on every kernel line, serial vs parallel workers.

    python bench/matrix.py [--scenario scenarios/good.yaml] [--workers 1 2] [--kernel K ...]

Runs ``pytest SCENARIO -n W`` for each W (kernels, image and built modules come
from the warm cache: one untimed warm-up run first unless --no-warmup), and
prints the wall time of each, the per-run seconds the lab measured, and the
speedup over the first W. Nothing is asserted: these are numbers to read.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_once(scenario: str, workers: int, kernels: list[str], json_path: Path) -> tuple[float, int, dict]:
    cmd = [sys.executable, "-m", "pytest", scenario, "-q", "-p", "no:cacheprovider",
           "-n", str(workers), "--lab-json", str(json_path)]
    if workers > 1:   # an idle worker takes queued items from a busy one: the longest item
        cmd += ["--dist", "worksteal"]   # (the plugin orders it first) is not followed by others
    for k in kernels:
        cmd += ["--lab-kernel", k]
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall = time.monotonic() - start
    if proc.returncode not in (0, 1):
        sys.exit(f"pytest failed to run (exit {proc.returncode}):\n{proc.stdout[-3000:]}")
    return wall, proc.returncode, json.loads(json_path.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="scenarios/good.yaml")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--kernel", action="append", default=[], help="default: every defined kernel")
    ap.add_argument("--no-warmup", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_warmup:
            print("warm-up (untimed): fetching kernels, building the image and modules if needed",
                  flush=True)
            run_once(args.scenario, max(args.workers), args.kernel, Path(tmp) / "warm.json")
        results = []
        for w in args.workers:
            print(f"-n {w} ...", flush=True)
            wall, rc, doc = run_once(args.scenario, w, args.kernel, Path(tmp) / f"n{w}.json")
            secs = [r["seconds"] for r in doc["results"]]
            verdicts = " ".join(f"{r['lab_kernel']}={r['verdict']}" for r in
                                sorted(doc["results"], key=lambda r: r["lab_kernel"]))
            results.append((w, wall, secs, verdicts, rc))
    base = results[0][1]
    print(f"\n{args.scenario} on {len(results[0][2])} kernels, {os.cpu_count()} host cores")
    print(f"{'workers':>7}  {'wall s':>7}  {'per-run s (median, min-max)':>28}  {'speedup':>7}  verdicts")
    for w, wall, secs, verdicts, rc in results:
        spread = f"{statistics.median(secs):.1f} ({min(secs):.1f}-{max(secs):.1f})" if secs else "-"
        print(f"{w:>7}  {wall:>7.1f}  {spread:>28}  {base / wall:>6.2f}x  {verdicts}"
              + ("" if rc == 0 else "  (pytest exit 1)"))


if __name__ == "__main__":
    main()
