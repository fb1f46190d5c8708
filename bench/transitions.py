#!/usr/bin/env python3
"""Transition cost: one scenario item on a PREEMPT_DYNAMIC kernel against a reference kernel.

    python bench/transitions.py [--runs 1] [--kernel debian-6.12] [--ref debian-6.1]
                                [--scenario scenarios/good.yaml] [--tcg-thread auto|single|multi]

Runs ``livepatch-lab run SCENARIO`` on the reference kernel, then on the other one, one guest
at a time, ``--runs`` times, and prints each run's wall seconds, insmod and disable seconds,
verdict, TCG threading and the host's load average, then the ratio of the medians
(kernel item / reference item). On debian-6.12 a transition rewrites every static-call site of
cond_resched and the preemption hooks (~16,000 cross-CPU syncs), which single-threaded TCG makes
slow; the ratio says what that costs. Nothing is asserted: these are numbers to read. The host
load distorts them: the load average is printed with each run.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_item(scenario: str, kernel: str, tmp: Path, env: dict[str, str]) -> dict:
    """One ``livepatch-lab run``; what its JSON says about the item."""
    out = tmp / f"{kernel}-{len(list(tmp.iterdir()))}"
    cmd = [sys.executable, "-m", "livepatch_lab.cli", "run", scenario, "--kernel", kernel,
           "--json", str(out) + ".json", "--artifacts", str(out)]
    load_before = os.getloadavg()[0]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
    try:
        doc = json.loads(Path(str(out) + ".json").read_text())
    except (OSError, ValueError):
        sys.exit(f"livepatch-lab run failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}")
    r = doc["results"][0]
    m = r.get("measurements", {})
    booted = next((e for e in r.get("timeline", []) if e.get("event") == "booted"), {})
    return {"kernel": kernel, "seconds": r["seconds"], "verdict": r["verdict"],
            "load_s": m.get("load_s"), "disable_s": m.get("disable_s"),
            "tcg_thread": booted.get("tcg_thread", booted.get("accel", "?")),
            "load_before": load_before, "load_max": (m.get("host_load") or {}).get("max")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="scenarios/good.yaml")
    ap.add_argument("--kernel", default="debian-6.12")
    ap.add_argument("--ref", default="debian-6.1")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--tcg-thread", choices=("auto", "single", "multi"),
                    help="LIVEPATCH_LAB_TCG_THREAD for the runs (default: the environment's)")
    args = ap.parse_args()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    if args.tcg_thread:
        env["LIVEPATCH_LAB_TCG_THREAD"] = args.tcg_thread
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            for kernel in (args.ref, args.kernel):
                print(f"run {i + 1}/{args.runs}: {args.scenario} on {kernel} ...", flush=True)
                rows.append(run_item(args.scenario, kernel, Path(tmp), env))

    def num(v) -> str:
        return "-" if v is None else f"{v:.1f}"

    print(f"\n{args.scenario}, {os.cpu_count()} host cores")
    print(f"{'kernel':<12} {'wall s':>7} {'insmod s':>8} {'disable s':>9} {'tcg':>6} "
          f"{'load before/max':>15}  verdict")
    for r in rows:
        print(f"{r['kernel']:<12} {r['seconds']:>7.1f} {num(r['load_s']):>8} {num(r['disable_s']):>9} "
              f"{r['tcg_thread']:>6} {num(r['load_before']):>7}/{num(r['load_max']):<7}  {r['verdict']}")
    ref = statistics.median(r["seconds"] for r in rows if r["kernel"] == args.ref)
    item = statistics.median(r["seconds"] for r in rows if r["kernel"] == args.kernel)
    print(f"\n{args.kernel} item / {args.ref} item: {item:.1f} s / {ref:.1f} s = {item / ref:.2f}x")


if __name__ == "__main__":
    main()
