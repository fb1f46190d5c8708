#!/usr/bin/env python3
"""Soak: many livepatch transitions in one guest under the scenario's load, watching for oopses.

    python bench/soak.py [--kernel debian-6.12] [--cycles 150] [--minutes 60]
                         [--scenario scenarios/good.yaml] [--artifacts DIR]

Boots KERNEL once, starts the scenario's probe, service (driven from the host) and stress, then
repeats: insmod the patch, wait for the transition, disable it, wait, rmmod; after each cycle
(two transitions) it reads the kernel log and the console for trouble (kmsg's rules: oops,
BUG, WARNING, panic, stalls...) and stops at the first. It prints one line per cycle (insmod
and disable seconds, function-call IPIs, host load) and a summary; exit 1 if trouble was seen.

What it is for: proving an emulator setting safe for the kernel's text patching. Under QEMU 7.2
multi-threaded TCG a debian-6.12 guest oopsed on a stale int3 within the first few cycles; a
setting is called safe only after hundreds of transitions without a finding. The TCG threading
comes from the environment (LIVEPATCH_LAB_TCG_THREAD, LIVEPATCH_LAB_QEMU).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from livepatch_lab.core.errors import HarnessError  # noqa: E402
from livepatch_lab.core.settings import Settings  # noqa: E402
from livepatch_lab.lab.run import livepatch, prepare
from livepatch_lab.lab.scenario import loader as scenario  # noqa: E402
from livepatch_lab.lab.run.workload import httpload, probe, service, stress  # noqa: E402
from livepatch_lab.machine import kmsg, session  # noqa: E402
from livepatch_lab.supply import images, recipes
from livepatch_lab.supply.kernels import defs as kerneldefs, fetch as kernelfetch  # noqa: E402

MARK = "livepatch-lab: soak start"


def ipis(guest) -> int:
    """Function-call IPIs received so far, all CPUs (/proc/interrupts' CAL row)."""
    row = guest.run("grep '^ *CAL:' /proc/interrupts", 60).stdout.split()
    return sum(int(v) for v in row[1:] if v.isdigit())


def cycle(guest, remote: str, name: str, deadline: float) -> tuple[float, float]:
    """One insmod / disable / rmmod; (insmod seconds, disable seconds)."""
    t0 = time.monotonic()
    livepatch.load(guest, remote, deadline)
    t1 = time.monotonic()
    if not livepatch.wait_transition(guest, name, deadline)[0]:
        raise SystemExit(f"patching transition of {name} stalled")
    t2 = time.monotonic()
    livepatch.disable(guest, name, deadline)
    t3 = time.monotonic()
    if not livepatch.wait_transition(guest, name, deadline)[0]:
        raise SystemExit(f"unpatching transition of {name} stalled")
    for _ in range(60):   # the module's refcount drops once the transition work has finished
        if livepatch.unload(guest, name, deadline).ok:
            break
        time.sleep(0.5)
    else:
        raise SystemExit(f"rmmod {name} kept failing")
    return t1 - t0, t3 - t2


def trouble(guest, since_line: int) -> list[str]:
    dmesg = livepatch.dmesg_since(guest, MARK, 120)
    found = [f"dmesg: {f.kind}: {f.line}" for f in kmsg.scan(dmesg)]
    found += [f"console: {f.kind}: {f.line}" for f in guest.machine.console.findings[since_line:]]
    return found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel", default="debian-6.12")
    ap.add_argument("--scenario", default=str(ROOT / "scenarios/good.yaml"))
    ap.add_argument("--cycles", type=int, default=150)
    ap.add_argument("--minutes", type=float, default=60.0, help="start no cycle after this")
    ap.add_argument("--artifacts", type=Path, help="keep the guest's console log here")
    args = ap.parse_args()
    settings = Settings.from_env()
    sc = scenario.load(Path(args.scenario))
    kernel = kernelfetch.fetch(kerneldefs.get_definition(args.kernel), settings)
    image = images.build(recipes.load_recipe(recipes.DEFAULT_RECIPE), settings)
    mods = prepare.prepare(sc, kernel, settings)
    name, ko = mods.patch, mods.by_name()[mods.patch].path
    started = time.monotonic()
    done, seen = 0, []
    with tempfile.TemporaryDirectory() as tmp, \
            session.boot(kernel, image, settings, forward_ports=(sc.service.port,),
                         artifacts_dir=args.artifacts) as guest:
        where = guest.machine.describe()
        print(f"{args.kernel} ({kernel.release}), accel {where.get('accel')}, "
              f"TCG threads {where.get('tcg_thread', '-')}, QEMU {settings.qemu_binary}", flush=True)
        deadline = guest.timeouts.transition * 30
        remote = f"/root/{name}.ko"
        guest.upload(ko, remote)
        findings_at = len(guest.machine.console.findings)
        livepatch.mark_kmsg(guest, MARK, 60)
        if sc.probe.command:
            probe.start(guest, sc.probe)
        service.start(guest, sc.service)
        load = httpload.HttpLoad("127.0.0.1", guest.host_port(sc.service.port), sc.service,
                                 Path(tmp) / "requests.jsonl", max_duration=args.minutes * 60 + 3600)
        stress.start(guest, sc.stress)
        load.start()
        try:
            while done < args.cycles and time.monotonic() - started < args.minutes * 60:
                before, load1 = ipis(guest), os.getloadavg()[0]
                ins, dis = cycle(guest, remote, name, deadline)
                done += 1
                print(f"cycle {done:4d}: insmod {ins:6.1f} s  disable {dis:6.1f} s  "
                      f"IPIs {ipis(guest) - before:6d}  host load {load1:4.1f}", flush=True)
                seen = trouble(guest, findings_at)
                if seen:
                    break
        except HarnessError as exc:   # a guest that died mid-cycle: its last words are on the console
            guest.machine.console.wait_for(lambda c: c.fatal() is not None, 3.0)
            seen = [f"lost the guest in cycle {done + 1}: {str(exc).splitlines()[0]}"]
            seen += [f"console: {f.kind}: {f.line}" for f in guest.machine.console.findings[findings_at:]]
        finally:
            load.stop(sc.service.timeout + 2)
    print(f"\n{done} cycles = {2 * done} transitions in {(time.monotonic() - started) / 60:.1f} min: "
          + ("no oops, BUG, WARNING or stall" if not seen else "TROUBLE"))
    for line in seen[:20]:
        print("  " + line)
    return 1 if seen else 0


if __name__ == "__main__":
    sys.exit(main())
