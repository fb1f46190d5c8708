#!/usr/bin/env python3
"""What the kernel's memory debugging costs: a scenario with the default debug set and with none.

    python bench/memdebug.py [--kernel debian-6.1 ...] [--scenario scenarios/good.yaml]
                             [--repeat 2] [--artifacts DIR] [--markdown docs/checks.md]

For each kernel line, runs SCENARIO (default the good patch) REPEAT times with `debug: all`
(what the line can do: lab/run/memdebug.py) and REPEAT times with `debug: none`, alternating so drift
hits both alike, each from a real boot (snapshots off: a restored guest would hide the boot's
cost). Prints per line and setting: the boot (to SSH), the whole item, and the service's
latency in the baseline and patched windows (median and 99th percentile, over the runs), then
the ratio on/off. What it is for: the figures in docs/checks.md "Quiet damage: the kernel's memory
debugging"; they are numbers from this machine, not a pass/fail. ``--markdown FILE`` also writes
the table between FILE's ``<!-- bench:memdebug begin/end -->`` lines.
"""
from __future__ import annotations

import argparse
import logging
import dataclasses
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import mdtable  # noqa: E402

from livepatch_lab.core.settings import Settings  # noqa: E402
from livepatch_lab.lab import runner
from livepatch_lab.lab.scenario import loader as scenario  # noqa: E402
from livepatch_lab.lab.scenario.specs import DEBUG_FACILITIES, DebugSpec  # noqa: E402

SETTINGS = {"debug": DebugSpec(DEBUG_FACILITIES), "none": DebugSpec(())}


def one(sc, kernel: str, settings: Settings, out: Path) -> dict:
    o = runner.run(sc, kernel, settings, out)
    m = o.verdict.measurements
    booted = next((e for e in o.timeline if e["event"] == "booted"), {})
    svc = m.get("service") or {}
    return {"verdict": o.verdict.verdict, "boot_s": booted.get("seconds"), "item_s": o.seconds,
            "active": (m.get("debug") or {}).get("active", []),
            "base_p50": (svc.get("baseline") or {}).get("p50"), "base_p99": (svc.get("baseline") or {}).get("p99"),
            "patched_p50": (svc.get("patched") or {}).get("p50"),
            "patched_p99": (svc.get("patched") or {}).get("p99")}


def med(rows: list[dict], key: str):
    xs = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(xs) if xs else None


def fmt(v, unit: str = "", scale: float = 1.0, digits: int = 1) -> str:
    return "-" if v is None else f"{v * scale:.{digits}f}{unit}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel", action="append", default=[], help="kernel line (repeatable; default debian-6.1)")
    ap.add_argument("--scenario", default=str(ROOT / "scenarios/good.yaml"))
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--artifacts", type=Path)
    ap.add_argument("--markdown", metavar="FILE", help="also write the table between FILE's "
                    "<!-- bench:memdebug begin/end --> lines (docs/checks.md; - for stdout)")
    args = ap.parse_args()
    cells = []
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)   # SSH attempts to a booting guest fail by design
    settings = dataclasses.replace(Settings.from_env(), snapshots=False)
    base = scenario.load(Path(args.scenario))
    out = args.artifacts or Path(tempfile.mkdtemp(prefix="memdebug-"))
    print(f"{'kernel':<12} {'debug':<6} {'facilities':<20} {'boot s':>7} {'item s':>7} "
          f"{'base p50/p99 ms':>16} {'patched p50/p99 ms':>19}  verdicts")
    for kernel in args.kernel or ["debian-6.1"]:
        rows: dict[str, list[dict]] = {k: [] for k in SETTINGS}
        for i in range(args.repeat):
            for name, spec in SETTINGS.items():
                sc = dataclasses.replace(base, debug=spec)
                rows[name].append(one(sc, kernel, settings, out / kernel / f"{name}-{i}"))
        for name, rs in rows.items():
            print(f"{kernel:<12} {name:<6} {','.join(rs[0]['active']) or 'none':<20} {fmt(med(rs, 'boot_s')):>7} "
                  f"{fmt(med(rs, 'item_s')):>7} "
                  f"{fmt(med(rs, 'base_p50'), '', 1000):>7}/{fmt(med(rs, 'base_p99'), '', 1000):<8} "
                  f"{fmt(med(rs, 'patched_p50'), '', 1000):>9}/{fmt(med(rs, 'patched_p99'), '', 1000):<9} "
                  f"{' '.join(r['verdict'] for r in rs)}")
        on, off = rows["debug"], rows["none"]
        ratio = {k: (med(on, k) / med(off, k)) if med(on, k) and med(off, k) else None
                 for k in ("boot_s", "item_s", "patched_p50")}
        print(f"{kernel:<12} on/off: boot x{fmt(ratio['boot_s'], digits=2)}, item x{fmt(ratio['item_s'], digits=2)}, "
              f"patched median latency x{fmt(ratio['patched_p50'], digits=2)}")

        def pair(key: str, scale: float = 1, digits: int = 1) -> str:
            return f"{fmt(med(on, key), '', scale, digits)} / {fmt(med(off, key), '', scale, digits)}"

        def latency(rs: list[dict]) -> str:
            return f"{fmt(med(rs, 'patched_p50'), '', 1000)} / {fmt(med(rs, 'patched_p99'), '', 1000)}"
        cells.append((kernel, ", ".join(on[0]["active"]) or "none", pair("boot_s"), pair("item_s"),
                      f"{latency(on)} vs {latency(off)}", " ".join(r["verdict"] for r in on + off)))
    print(f"artifacts: {out}")
    if args.markdown:
        mdtable.write(args.markdown, "memdebug", mdtable.table(
            ("line", "facilities on", "boot to SSH, s (on / off)", "item, s (on / off)",
             "service median / p99 while patched, ms (on vs off)", "verdicts"), cells) + "\n\n"
            + mdtable.written_by(f"medians of {args.repeat} run(s) per setting, each from a real boot (snapshots off)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
