"""Synthetic artifact folders, as the runner leaves them, for the sign-off report's tests.

``make_module`` compiles a real (relocatable ELF) object whose ``.modinfo`` section
says what a livepatch module's does, so ``modinfo`` reads it as it reads a ``.ko``.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Optional

from livepatch_lab.lab.report import criteria as saved_criteria
from livepatch_lab.lab.scenario.expect import Expect
from livepatch_lab.lab.scenario.specs import Expectation, ModuleSpec, ProbeSpec, Scenario, Thresholds

T0 = 1_800_000_000.0
VERSION, RELEASE = "6.1.192-3", "6.1.0-57-amd64"
OOPS = "[   22.100000] BUG: kernel NULL pointer dereference, address: 0000000000000000"
PROBE, PATCHED = "cat /proc/cmdline", "^livepatch-lab: patched$"
LOGGED = "livepatch: 'lab_good': patching complete"
# the judged windows of a whole run: (name, kind, from, to (seconds after T0), probe phase)
WINDOWS = (("baseline", "baseline", 10.0, 13.0, "before"), ("apply", "transition", 13.0, 15.0, None),
           ("patched", "hold", 15.0, 18.0, "patched"), ("revert", "transition", 18.0, 19.5, None),
           ("cooldown", "cooldown", 19.5, 21.5, "after"))


def criteria(kernel: str = "debian-6.1", expected: tuple[str, tuple[str, ...]] = ("pass", ())) -> dict:
    """What the runner keeps of a scenario with a probe, an expected kernel-log line and a cost limit,
    which expects ``expected`` (a verdict and the checks that fail)."""
    sc = Scenario(name="good", patch=ModuleSpec(source=Path("/src/good")), probe=ProbeSpec(PROBE, 0.4),
                  expect=Expectation(*expected))
    expect = Expect(thresholds=Thresholds(overhead_max_percent=5.0), probe={"patched": PATCHED}, dmesg=(LOGGED,))
    return saved_criteria.record(sc, expect, kernel)


def make_module(directory: Path, name: str = "lab_good", release: str = RELEASE) -> Path:
    """A module file that ``modinfo`` reads like a built, unsigned livepatch."""
    directory.mkdir(parents=True, exist_ok=True)
    src = directory / f"{name}.c"
    fields = [f"name={name}", f"vermagic={release} SMP preempt mod_unload modversions ", "livepatch=Y",
              "license=GPL"]
    src.write_text("".join(f'static const char f{i}[] __attribute__((used, section(".modinfo"), aligned(1))) '
                           f'= "{f}";\n' for i, f in enumerate(fields)))
    ko = directory / f"{name}.ko"
    subprocess.run(["gcc", "-c", "-o", str(ko), str(src)], check=True, timeout=60)
    src.unlink()
    return ko


def _events(ko: Optional[Path], stop_after: Optional[str], accel: str = "tcg") -> list[dict]:
    steps = [("start", 0.0, {}), ("build", 0.1, {}),
             ("built", 1.0, {"patch": str(ko), "targets": []} if ko else {"targets": []}),
             ("booted", 6.0, {"accel": accel, "seconds": 5.0, "backend": "qemu"}),
             ("baseline", 10.0, {}), ("load-patch", 13.0, {"module": "lab_good"}),
             ("loaded", 14.0, {"seconds": 1.0}), ("transition-complete", 15.0, {"seconds": 1.0}),
             ("patched", 15.0, {}), ("disable", 18.0, {}), ("unpatch-complete", 19.0, {"seconds": 1.0}),
             ("unloaded", 19.5, {"rc": 0}), ("reverted", 19.5, {}), ("cooldown-end", 21.5, {}),
             ("collect", 22.9, {}), ("collected", 23.0, {})]
    out = []
    for name, dt, detail in steps:
        out.append({"t": T0 + dt, "event": name, **detail})
        if name == stop_after:
            break
    return out


def make_run(root: Path, scenario: str = "good", kernel: str = "debian-6.1", verdict: str = "pass",
             slow: float = 0.0, failed: int = 0, ko: Optional[Path] = None, oops: bool = False,
             stop_after: Optional[str] = None, accel: str = "tcg", release: Optional[dict] = None,
             judged: bool = True, expected: Optional[tuple[str, tuple[str, ...]]] = None) -> Path:
    """An artifact folder of one run: ``slow`` seconds added to the latency while patched,
    ``failed`` requests that timed out while patched, an Oops in dmesg; ``release``: its scenario's
    patch identity; ``judged``: saved with its criteria and judged windows (a whole run's), as
    today's runs are, else as runs saved before they were kept; ``expected``: what its scenario
    expects (default: the run's own verdict, with the checks that failed)."""
    folder = root / scenario / kernel
    folder.mkdir(parents=True)
    events = _events(ko, stop_after, accel)
    events.append({"t": events[-1]["t"] + 1, "event": "verdict", "verdict": verdict})
    reasons = []
    if slow:
        reasons.append({"check": "service", "message": f"patched window: median latency {slow * 1000:.0f} ms "
                                                       "> 50 ms allowed (baseline median 20 ms)"})
    if oops:
        reasons.append({"check": "dmesg", "message": "oops: BUG: kernel NULL pointer dereference, address: "
                                                     "0000000000000000"})
    in_guest = any(e["event"] == "baseline" for e in events)
    with open(folder / "requests.jsonl", "w") as fh:
        for seq in range(200 if in_guest else 0):
            due = T0 + 10.0 + seq * 0.05
            late = slow if T0 + 15.0 <= due < T0 + 18.0 else 0.0
            bad = failed and T0 + 16.0 <= due < T0 + 16.0 + failed * 0.05
            fh.write(json.dumps({"seq": seq, "intended": due, "sent": due, "done": due + (2.0 if bad else 0.02 + late),
                                 "status": None if bad else 200, "error": "timeout" if bad else None}) + "\n")
    with open(folder / "probe.jsonl", "w") as fh:
        for i in range(40 if in_guest else 0):
            t = T0 + 8.0 + i * 0.4
            out = "livepatch-lab: patched\n" if T0 + 15.0 <= t < T0 + 18.0 else "console=ttyS0\n"
            fh.write(json.dumps({"t": t, "rc": 0, "output": out, "t_end": t + 0.1}) + "\n")
    dmesg = ["[   20.974694] lab_good: tainting kernel with TAINT_LIVEPATCH",
             "[   21.275293] livepatch: enabling patch 'lab_good'",
             "[   23.064275] livepatch: 'lab_good': patching complete"]
    (folder / "dmesg.txt").write_text("\n".join(dmesg + ([OOPS] if oops else [])) + "\n")
    (folder / "console.log").write_text("Linux version 6.1.0-57-amd64\nlivepatch-lab: ready\n")
    (folder / "timeline.json").write_text(json.dumps(events, indent=2))
    service = {w: {"count": 40, "failed": 0, "max_latency": 0.03, "p50": 0.02, "p99": 0.03, "longest_gap": 0.06}
               for w in ("baseline", "apply", "patched", "revert", "cooldown")}
    doc = {"scenario": scenario, "kernel": kernel, "verdict": verdict, "reasons": reasons,
           "measurements": {"service": service, "load_s": 1.0, "transition_s": 1.0, "disable_s": 0.5,
                            "unpatch_s": 1.0, "kernel_clock": {"patching_s": 0.9, "unpatching_s": 0.8},
                            "taint": {"before": 0, "patched": 45056, "after": 45056 | (128 if oops else 0)},
                            "host_load": {"max": 1.2, "cpus": 2}},
           "kernel_info": {"name": kernel, "release": RELEASE, "version": VERSION,
                           "packages": [{"name": f"linux-image-{RELEASE}-unsigned", "version": VERSION,
                                         "sha256": "ab" * 32}]},
           "timeline": events, "phases": {"prepare": 1.0, "boot": 5.0, "baseline": 3.0},
           "artifacts": str(folder), "seconds": 24.0}
    if judged:
        want = expected or (verdict, tuple(sorted({r["check"] for r in reasons})))
        doc.update(criteria=criteria(kernel, want), release=release or {})
        if stop_after is None:
            doc["windows"] = [{"name": n, "kind": k, "start": T0 + a, "end": T0 + b, "probe_phase": p}
                              for n, k, a, b, p in WINDOWS]
    (folder / "verdict.json").write_text(json.dumps(doc, indent=2))
    return folder
