"""The verdict's checks of the damage a distribution kernel keeps quiet about, once the patch's
module is gone: a use after unload (a fault where the module lay), memory kept after the revert.

Pure, like verdict.py, which calls them: each reads a ``RunRecord`` and nothing else.
"""
from __future__ import annotations

import re
from typing import Optional

from ...machine import kmsg
from ..run.livepatch import UNLOADED, UNLOADING
from ..run.record import PatchRecord, Reason, RunRecord
from ..scenario.specs import Thresholds

# use after unload ----------------------------------------------------------------------
_ADDRESS = re.compile(r"\b(?:0x)?(ffffffff[0-9a-f]{8})\b")
_PAGE = 4096
_NEAR = 64 << 10   # sections closer than this lie in one allocation


def module_ranges(p: PatchRecord) -> list[tuple[int, int]]:
    """Where a patch's module lay: from each section's start to the next one's (within one
    allocation), else to the end of its page, and the core from /proc/modules (before 6.4 one
    allocation holds text and data; from 6.4 it is the text's)."""
    starts = sorted(set(p.sections.values()))
    out = []
    for i, a in enumerate(starts):
        nxt = starts[i + 1] if i + 1 < len(starts) else None
        end = nxt if nxt is not None and nxt - a < _NEAR else (a // _PAGE + 1) * _PAGE
        out.append((a, max(end, a + 1)))
    if p.core and p.core[1] > 0:
        out.append((p.core[0], p.core[0] + p.core[1]))
    return out


def _where(p: PatchRecord, addr: int) -> Optional[str]:
    """``f+0x10`` for an address in the module's text (its functions, from the host's .ko), else
    ``.bss+0x28``: the section it lies in."""
    below = [(a, n) for n, a in p.sections.items() if a <= addr]
    section = max(below)[1] if below else None
    fns = [(a, n) for a, n in p.functions if a <= addr]
    if fns and (section is None or section == ".text" or section.startswith(".text.")):
        a, n = max(fns)
        if addr - a < _NEAR:
            name, _, module = n.partition(" ")
            return f"{name}+{addr - a:#x}{' ' + module if module else ''}"
    return f"{section}+{addr - p.sections[section]:#x}" if section else None


def _after_unload(rec: RunRecord, p: PatchRecord) -> list[tuple[str, int, list[str]]]:
    """(where, index, lines) of the kernel's words after the patch's module went (the lab's mark,
    written as rmmod returns, mostly well before a timer it left behind fires): in its log, and on
    the console (a guest that died has only that). When the guest died during the rmmod (the
    "unloading" mark, and no "unloaded" after it), from the "unloading" mark: the module's memory
    is freed within rmmod, and while it lives its addresses print by name, never raw."""
    out = []
    for where, raw in (("dmesg", rec.dmesg), ("console", rec.console)):
        lines = [kmsg.strip_prefix(line) for line in raw]
        marks: dict[str, int] = {}
        for i, line in enumerate(lines):   # the first of each (a soak unloads its patch every cycle)
            if line.strip() in (UNLOADED + p.name, UNLOADING + p.name):
                marks.setdefault(line.strip(), i)
        mark = marks.get(UNLOADED + p.name)
        if mark is None and rec.guest_lost:
            mark = marks.get(UNLOADING + p.name)
        if mark is not None:
            out += [(where, i, lines) for i in range(mark + 1, len(lines))]
    return out


def check_unload(rec: RunRecord) -> list[Reason]:
    """A fault after a patch's module was unloaded, at an address where the module lay: the patch
    left a timer, a work item or a callback pointing into itself."""
    reasons = []
    for p in rec.patches.values():
        if not (p.sections or p.core):
            continue
        ranges = module_ranges(p)
        for where, i, lines in _after_unload(rec, p):
            hit = kmsg.classify(lines[i])
            if not hit:
                continue
            inside = next((int(a, 16) for line in lines[i:i + kmsg.REPORT_LINES] for a in _ADDRESS.findall(line)
                           if any(lo <= int(a, 16) < hi for lo, hi in ranges)), None)
            if inside is None:
                continue
            fn = _where(p, inside)
            reasons.append(Reason("revert", f"use after unload: {p.name}'s module was unloaded, then the kernel "
                                            f"faulted at {inside:#x}, where the module lay"
                                            f"{f' ({fn})' if fn else ''}: the patch left a timer, a work item "
                                            f"or a callback armed after unload ({where}: {lines[i].strip()[:160]})"))
            break
    return reasons


# leaks -----------------------------------------------------------------------------
def check_leaks(limits: Thresholds, rec: RunRecord) -> list[Reason]:
    """What the kernel kept once every patch of the run was gone: unreclaimable slab and vmalloc'ed
    memory grown beyond the thresholds from just before the first load to the cool-down's end,
    and modules that came and stayed."""
    before, after = rec.memory.get("before"), rec.memory.get("after")
    loaded = [p for p in rec.patches.values() if p.loaded]
    if not before or not after or not loaded or not all(p.revert.module_gone for p in loaded):
        return []   # a patch still in (its revert says why), or no readings
    reasons = []
    for key, allowed, what in (("SUnreclaim", limits.slab_growth_kib, "unreclaimable slab"),
                               ("VmallocUsed", limits.vmalloc_growth_kib, "vmalloc'ed memory")):
        a, b = before.get(key), after.get(key)
        if a is not None and b is not None and b - a > allowed:
            reasons.append(Reason("revert", f"{what} ({key}) grew {b - a} KiB from before the patch's load to "
                                            f"after its unload ({a} -> {b} KiB; > {allowed:.0f} allowed): "
                                            "memory the patch took and never gave back"))
    own = set(rec.patches)
    new = sorted(set(after.get("modules", [])) - set(before.get("modules", [])) - own)
    if new:
        reasons.append(Reason("revert", f"module(s) {', '.join(new)} came during the run and stayed after the "
                                        "revert"))
    return reasons
