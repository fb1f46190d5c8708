#!/usr/bin/env python3
"""Boot benchmark: where the seconds go from nothing to a guest answering SSH.

    python bench/boot.py [--kernel debian-6.1] [--runs 5] [--accel auto] [--restore]
                         [--markdown docs/benchmarks.md]

Prints median/min/max over N boots of: overlay creation, QEMU start -> first
console byte, -> kernel "Linux version", -> guest init ready, -> SSH command
answered, command round-trip (`true`), shutdown; and peak memory (QEMU's
resident high-water mark, this process's). Kernel and image come from the
cache (fetched/built on first use, outside the timings). Boots never use
snapshots; ``--restore`` measures restored copies instead (the snapshot is
made first if missing, outside the timings): QEMU start -> saved guest running,
-> SSH answered with clock and randomness resynced, the resync alone.

``--markdown FILE`` also writes the table between FILE's ``<!-- bench:boot-KERNEL begin/end -->``
lines (``restore-KERNEL`` with ``--restore``), with the date, QEMU and the host's load.
"""
from __future__ import annotations

import argparse
import logging
import os
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import mdtable  # noqa: E402

from livepatch_lab.core.settings import Settings  # noqa: E402
from livepatch_lab.machine import session  # noqa: E402
from livepatch_lab.supply import cache, images, recipes
from livepatch_lab.supply.kernels import defs as kerneldefs, fetch as kernelfetch  # noqa: E402


def _line_time(guest, needle: str) -> float:
    for line in guest.machine.console.lines:
        if needle in line.text:
            return line.t - guest.machine.started_at
    return float("nan")


def _vm_hwm_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _boot_sample(guest) -> dict[str, float]:
    return {"overlay": guest.timings["overlay"],
            "first console byte": guest.timings.get("first_console", float("nan")),
            "kernel 'Linux version'": _line_time(guest, "Linux version"),
            "kernel runs /init (initramfs)": _line_time(guest, "Run /init as init process"),
            "root and modules disk mounted": _line_time(guest, "EXT4-fs (vdb)"),
            "guest init ready": _line_time(guest, "livepatch-lab: ready"),
            "SSH command answered": guest.timings["ssh_ready"]}


def _restore_sample(guest) -> dict[str, float]:
    return {"overlay": guest.timings["overlay"],
            "saved guest running again": guest.timings["restore"],
            "SSH answered, clock+random resynced": guest.timings["ssh_ready"],
            "  of which the resync": guest.timings["resync"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernel", default="debian-6.1")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--accel", default=None)
    ap.add_argument("--round-trips", type=int, default=20)
    ap.add_argument("--restore", action="store_true", help="time restored copies of a saved guest")
    ap.add_argument("--markdown", metavar="FILE", help="also write the table between FILE's "
                    "<!-- bench:boot-KERNEL (restore-KERNEL) begin/end --> lines; - for stdout")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="[bench] %(message)s")
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)  # early SSH attempts fail by design

    settings = Settings.from_env(accel=args.accel, snapshots=args.restore)
    kernel = kernelfetch.fetch(kerneldefs.get_definition(args.kernel), settings)
    image = images.build(recipes.load_recipe(recipes.DEFAULT_RECIPE), settings)
    snapshot = None
    if args.restore:
        with session.boot(kernel, image, settings) as guest:   # saves the guest if none is
            pass
    load = [os.getloadavg()]
    rows: dict[str, list[float]] = {}
    hwm: list[float] = []
    accel = "?"
    for i in range(args.runs):
        t0 = time.monotonic()
        with session.boot(kernel, image, settings) as guest:
            accel = guest.accel
            rtt = []
            for _ in range(args.round_trips):
                rtt.append(guest.run("true", check=True).seconds)
            if args.restore:
                snapshot = settings.snapshots_dir / guest.restored_from
            sample = (_restore_sample if args.restore else _boot_sample)(guest)
            sample["command round-trip"] = statistics.median(rtt)
            hwm.append(_vm_hwm_mib(guest.machine.pid))
            timings = guest.timings
        sample["shutdown"] = timings["shutdown"]
        sample["whole boot->shutdown"] = time.monotonic() - t0
        for k, v in sample.items():
            rows.setdefault(k, []).append(v)
        print(f"run {i + 1}/{args.runs}: ssh ready {timings['ssh_ready']:.2f}s", file=sys.stderr)
    load.append(os.getloadavg())

    print(f"\n{kernel.name} {kernel.version} ({kernel.release}), accel={accel}, "
          f"{settings.cpus} vCPU, {settings.memory_mib} MiB, {args.runs} runs")
    print(f"{'step (from QEMU start unless noted)':<38}{'median':>9}{'min':>9}{'max':>9}")
    for k, v in rows.items():
        print(f"{k:<38}{statistics.median(v):>8.3f}s{min(v):>8.3f}s{max(v):>8.3f}s")
    self_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{'peak memory: QEMU (VmHWM)':<38}{statistics.median(hwm):>7.0f}MiB{min(hwm):>6.0f}MiB{max(hwm):>6.0f}MiB")
    print(f"{'peak memory: this process':<38}{self_mib:>7.0f}MiB")
    if snapshot is not None:
        print(f"{'snapshot on disk':<38}{cache.size_of(snapshot) / 2**20:>7.0f}MiB  ({snapshot.name})")
    print(f"host load average (1, 5, 15 min) before: {load[0]}, after: {load[-1]}")
    if args.markdown:
        from livepatch_lab.machine.backends.qemu.backend import qemu_version
        version = qemu_version(settings.qemu_binary)
        cells = [(k.strip(), f"{statistics.median(v):.3f}", f"{min(v):.3f}", f"{max(v):.3f}") for k, v in rows.items()]
        cells.append(("peak memory: QEMU VmHWM / this process (MiB)", f"{statistics.median(hwm):.0f} / {self_mib:.0f}",
                      f"{min(hwm):.0f}", f"{max(hwm):.0f}"))
        if snapshot is not None:
            cells.append(("snapshot on disk (MiB)", f"{cache.size_of(snapshot) / 2**20:.0f}", "", ""))
        text = (mdtable.table(("step, seconds from QEMU start unless noted", "median", "min", "max"), cells) + "\n\n"
                + mdtable.written_by(f"{kernel.name} {kernel.version}, accel {accel}, QEMU "
                                     f"{'.'.join(map(str, version)) if version else '?'}, {settings.cpus} vCPU, "
                                     f"{settings.memory_mib} MiB, {args.runs} runs, load average "
                                     f"{load[0][0]:.1f} -> {load[-1][0]:.1f}"))
        mdtable.write(args.markdown, f"{'restore' if args.restore else 'boot'}-{args.kernel}", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
