#!/usr/bin/env python3
"""Matrix scaling: does a second xdist worker pay off where the host's cores allow it?

    python bench/scaling.py [--scenario scenarios/good.yaml ...] [--kernel debian-6.1 ...]
                            [--configs 1:1 1:2 2:1 2:2] [--repeat 1] [--no-warmup] [--dry-run]

Runs the same small matrix (SCENARIOs x KERNELs through ``pytest`` and the lab plugin) once per
configuration VCPUS:WORKERS: guests of VCPUS vCPUs (``LIVEPATCH_LAB_CPUS``, set in the child's
environment only) at ``-n WORKERS`` (``--dist worksteal`` above one). A 1-vCPU guest holds one
host CPU slot (core/cpuslots.py), so on two cores two of them run at once; a 2-vCPU guest under
multi-threaded TCG holds two, so its workers take turns. Before the timed runs, one untimed
warm-up run per vCPU count (kernels, image, modules and that count's snapshots exist after it:
the vCPU count is part of a snapshot's key). With --repeat R the configurations run R times in
alternating order and the median wall time counts.

Prints per configuration: wall seconds; when the first item started (pytest, xdist and the
plugin's session set-up before it do not scale); the lab's per-item seconds; "work", an item less
the scenario's fixed windows (baseline, patched, cool-down: as long on any host) and its wait for
CPU slots, i.e. the part a busy host stretches; the CPU-slot waits; how many items were restored
from a snapshot; the host's busy cores over the run (/proc/stat, every process); the verdicts.
Then the speed-up of -n 2 over -n 1 for 1-vCPU guests against the target (1.7x), and the 2-vCPU
figure beside it. Numbers to read: nothing is asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import mdtable  # noqa: E402
from livepatch_lab.core.settings import Settings  # noqa: E402
from livepatch_lab.machine.backends.qemu.backend import qemu_version  # noqa: E402
from livepatch_lab.machine.backends.qemu.command import tcg_thread  # noqa: E402

TARGET = 1.7
DEFAULT_SCENARIOS = ["scenarios/good.yaml", "scenarios/callbacks.yaml"]   # quick, passing, mostly guest time
DEFAULT_KERNELS = ["debian-6.1", "debian-7"]


def config(text: str) -> tuple[int, int]:
    """``VCPUS:WORKERS`` -> (vcpus, workers)."""
    try:
        vcpus, workers = (int(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not VCPUS:WORKERS: {text!r}") from None
    if vcpus < 1 or workers < 1:
        raise argparse.ArgumentTypeError(f"vCPUs and workers must be at least 1: {text!r}")
    return vcpus, workers


def command(scenarios: list[str], kernels: list[str], workers: int, tmp: Path, tag: str) -> list[str]:
    cmd = [sys.executable, "-m", "pytest", *scenarios, "-q", "-p", "no:cacheprovider",
           "-n", str(workers), "--lab-json", str(tmp / f"{tag}.json"),
           "--lab-artifacts", str(tmp / f"art-{tag}")]
    if workers > 1:   # an idle worker takes what waits behind a busy one
        cmd += ["--dist", "worksteal"]
    for k in kernels:
        cmd += ["--lab-kernel", k]
    return cmd


def environment(vcpus: int) -> dict[str, str]:
    return {**os.environ, "LIVEPATCH_LAB_CPUS": str(vcpus)}


def busy_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of every host CPU, from /proc/stat's first line."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]   # idle + iowait
    return sum(fields) - idle, sum(fields)


def stop(proc: subprocess.Popen) -> str:
    """End pytest's process group: SIGTERM (the plugin tears its guests down), SIGKILL after 30 s."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
    except ProcessLookupError:
        out, _ = proc.communicate()
    return out or ""


def run_pytest(cmd: list[str], env: dict[str, str], timeout: float) -> dict:
    """wall seconds, host busy cores on average, exit status, output and the epoch it started at.
    On timeout the whole process group (controller, workers; QEMU dies with its worker) is ended."""
    b0, t0j = busy_jiffies()
    epoch = time.time()
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        out = stop(proc)
        sys.exit(f"pytest did not finish within {timeout:.0f} s:\n{out[-3000:]}")
    except BaseException:   # Ctrl-C, SIGTERM (see main): no pytest, worker or guest outlives the bench
        stop(proc)
        raise
    wall = time.monotonic() - start
    b1, t1j = busy_jiffies()
    cores = (b1 - b0) / max(1, t1j - t0j) * (os.cpu_count() or 1)
    return {"wall": wall, "cores": cores, "rc": proc.returncode, "out": out, "epoch": epoch}


def booted(result: dict) -> dict:
    return next((e for e in result.get("timeline") or [] if e.get("event") == "booted"), {})


WINDOWS = ("baseline", "patched", "cooldown")   # the scenario's own clock: as long on any host


def summary(doc: dict, epoch: float) -> dict:
    """What one run's results document says: per item its seconds, the seconds its guest waited
    for CPU slots, and the rest of it that is not the scenario's fixed windows (boot, set-up,
    transitions, collection: the part a busy host stretches); when the first item started."""
    rows = doc.get("results") or []
    items = []
    for r in rows:
        wait = booted(r).get("cpu_wait", 0.0)
        windows = sum((r.get("phases") or {}).get(p, 0.0) for p in WINDOWS)
        secs = r.get("seconds", 0.0)
        start = r["timeline"][0]["t"] - epoch if r.get("timeline") else 0.0
        items.append({"seconds": secs, "wait": wait, "work": secs - windows - wait, "start": start})
    boots = [booted(r) for r in rows]
    return {"items": items, "restored": sum(1 for b in boots if b.get("restored_from")),
            "threads": {b["tcg_thread"] for b in boots if b.get("tcg_thread")},
            "verdicts": [f"{r['scenario']}[{r['kernel']}]={r['verdict']}" for r in rows]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", action="append", default=[],
                    help=f"repeatable; default {' '.join(DEFAULT_SCENARIOS)}")
    ap.add_argument("--kernel", action="append", default=[],
                    help=f"repeatable; default {' '.join(DEFAULT_KERNELS)}")
    ap.add_argument("--configs", type=config, nargs="+", default=[(1, 1), (1, 2), (2, 1), (2, 2)],
                    metavar="VCPUS:WORKERS", help="default 1:1 1:2 2:1 2:2")
    ap.add_argument("--repeat", type=int, default=1, help="timed runs per configuration (median counts)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds one pytest run may take")
    ap.add_argument("--no-warmup", action="store_true")
    ap.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    ap.add_argument("--markdown", metavar="FILE", help="also write the table between FILE's "
                    "<!-- bench:scaling begin/end --> lines (docs/benchmarks.md; - for stdout)")
    args = ap.parse_args()
    load0 = os.getloadavg()[0]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("bench/scaling.py: terminated (SIGTERM)"))
    scenarios = args.scenario or DEFAULT_SCENARIOS
    kernels = args.kernel or DEFAULT_KERNELS
    vcpu_counts = sorted({v for v, _ in args.configs})
    warmups = [] if args.no_warmup else \
        [(v, max(w for vv, w in args.configs if vv == v)) for v in vcpu_counts]
    order = [args.configs if r % 2 == 0 else args.configs[::-1] for r in range(args.repeat)]

    with tempfile.TemporaryDirectory(prefix="scaling-") as tmpdir:
        tmp = Path(tmpdir)
        if args.dry_run:
            for v, w in warmups:
                cmd = command(scenarios, kernels, w, tmp, f"warm-{v}")
                print(f"warm-up (untimed): LIVEPATCH_LAB_CPUS={v} {shlex.join(cmd)}")
            for r, configs in enumerate(order):
                for v, w in configs:
                    cmd = command(scenarios, kernels, w, tmp, f"v{v}n{w}r{r}")
                    print(f"timed: LIVEPATCH_LAB_CPUS={v} {shlex.join(cmd)}")
            return 0
        for v, w in warmups:
            print(f"warm-up (untimed), {v} vCPU, -n {w}: kernels, image, modules, {v}-vCPU snapshots",
                  flush=True)
            run = run_pytest(command(scenarios, kernels, w, tmp, f"warm-{v}"), environment(v), args.timeout)
            if run["rc"] not in (0, 1):
                sys.exit(f"warm-up failed (pytest exit {run['rc']}):\n{run['out'][-3000:]}")
        runs: dict[tuple[int, int], list[dict]] = {c: [] for c in args.configs}
        for r, configs in enumerate(order):
            for v, w in configs:
                tag = f"v{v}n{w}r{r}"
                print(f"{v} vCPU, -n {w} (run {r + 1}/{args.repeat}) ...", flush=True)
                run = run_pytest(command(scenarios, kernels, w, tmp, tag), environment(v), args.timeout)
                if run["rc"] not in (0, 1):
                    sys.exit(f"pytest failed to run (exit {run['rc']}):\n{run['out'][-3000:]}")
                run.update(summary(json.loads((tmp / f"{tag}.json").read_text()), run["epoch"]))
                runs[(v, w)].append(run)
                print(f"  {run['wall']:.1f} s, host busy {run['cores']:.2f} cores", flush=True)

    settings = Settings.from_env()
    version = qemu_version(settings.qemu_binary)
    threads = "/".join(sorted({t for rs in runs.values() for run in rs for t in run["threads"]}))
    print(f"\n{' '.join(Path(s).stem for s in scenarios)} x {' '.join(kernels)}; "
          f"{os.cpu_count()} host cores, CPU slots {settings.cpu_capacity}, "
          f"QEMU {'.'.join(map(str, version)) if version else '?'} "
          f"({threads or tcg_thread(settings.tcg_thread, version)}-threaded TCG), warm cache"
          + ("" if args.no_warmup else " (a warm-up run per vCPU count first)")
          + f", medians of {args.repeat} run(s)")
    print("\n".join(report(runs)))
    load = os.getloadavg()
    print(f"host load average (1, 5, 15 min) at the end: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    if args.markdown:
        mdtable.write(args.markdown, "scaling", markdown(runs, version, load0, load[0]))
    return 0


def figures(rs: list[dict]) -> Optional[dict]:
    """One configuration's figures over its runs (medians), None when no item ran."""
    med = statistics.median
    items = [i for run in rs for i in run["items"]]
    if not items:
        return None
    secs = [i["seconds"] for i in items]
    verdicts = [x for run in rs for x in run["verdicts"]]
    return {"wall": med(r["wall"] for r in rs), "walls": [r["wall"] for r in rs],
            "first": med(min(i["start"] for i in r["items"]) for r in rs if r["items"]),
            "spread": f"{med(secs):.1f} ({min(secs):.1f}-{max(secs):.1f})",
            "work": med(i["work"] for i in items), "wait": med(sum(i["wait"] for i in r["items"]) for r in rs),
            "restored": sum(r["restored"] for r in rs), "items": len(items), "cores": med(r["cores"] for r in rs),
            "passed": sum(x.endswith("=pass") for x in verdicts), "verdicts": len(verdicts),
            "bad": sorted({x for x in verdicts if not x.endswith("=pass")})}


def markdown(runs: dict[tuple[int, int], list[dict]], version: Optional[tuple[int, ...]],
             load0: float, load1: float) -> str:
    """The table as docs/benchmarks.md shows it, the speed-ups under it, and how it was made."""
    cells = [(v, w, f"{f['wall']:.1f} ({', '.join(f'{x:.1f}' for x in f['walls'])})", f["spread"], f"{f['work']:.1f}",
              f"{f['wait']:.1f}", f"{f['cores']:.2f}", f"{f['passed']}/{f['verdicts']}")
             for (v, w), rs in runs.items() if (f := figures(rs))]
    return (mdtable.table(("vCPUs", "-n", "wall s, median (runs)", "item s, median (min-max)", "work s",
                           "CPU-slot wait s", "busy cores", "items passed"), cells) + "\n\n"
            + "".join(f"{line}.\n\n" for line in speedups(runs))
            + mdtable.written_by(f"QEMU {'.'.join(map(str, version)) if version else '?'}, "
                                 f"load average {load0:.1f} -> {load1:.1f}"))


def report(runs: dict[tuple[int, int], list[dict]]) -> list[str]:
    """The table, a row per configuration, and the speed-ups against the target."""
    lines = ["item s: the lab's seconds per item; work s: an item less its fixed windows and its CPU-slot "
             "wait; 1st item s: from pytest's start",
             f"{'vCPUs':>5} {'-n':>3} {'wall s':>7} {'1st item s':>10} {'item s (min-max)':>18} "
             f"{'work s':>7} {'slot wait s':>11} {'restored':>8} {'busy cores':>10}  verdicts"]
    for (v, w), rs in runs.items():
        f = figures(rs)
        if f is None:
            lines.append(f"{v:>5} {w:>3} {statistics.median(r['wall'] for r in rs):>7.1f}  no items ran")
            continue
        lines.append(
            f"{v:>5} {w:>3} {f['wall']:>7.1f} {f['first']:>10.1f} {f['spread']:>18} {f['work']:>7.1f} "
            f"{f['wait']:>11.1f} {f['restored']:>4}/{f['items']:<3} {f['cores']:>10.2f}  "
            f"{f['passed']} of {f['verdicts']} pass" + (f" (not: {' '.join(f['bad'])})" if f["bad"] else ""))
    return lines + speedups(runs)


def speedups(runs: dict[tuple[int, int], list[dict]]) -> list[str]:
    """-n 2 over -n 1 per vCPU count, the 1-vCPU figure against the target."""
    med = statistics.median

    def speedup(v: int) -> Optional[float]:
        if not (runs.get((v, 1)) and runs.get((v, 2))):
            return None
        return med(r["wall"] for r in runs[(v, 1)]) / med(r["wall"] for r in runs[(v, 2)])

    one, two = speedup(1), speedup(2)
    if one is not None:
        return [f"-n 2 over -n 1, 1-vCPU guests: {one:.2f}x (target >= {TARGET}x: "
                f"{'met' if one >= TARGET else 'NOT met'})" + (f"; 2-vCPU guests: {two:.2f}x" if two is not None else "")]
    return [f"-n 2 over -n 1, 2-vCPU guests: {two:.2f}x"] if two is not None else []


if __name__ == "__main__":
    sys.exit(main())
