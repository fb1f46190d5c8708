"""Classify kernel and console lines: what is trouble, and what is livepatch news.

One ordered table of patterns (after syzkaller's report rules); the first
match names the line's kind. Timestamps and log-level prefixes are stripped
first, so the same rules serve the serial console and ``dmesg`` output.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Iterator, Optional

# "[    1.234567] " (console / dmesg) and "<4>" (raw kmsg level) prefixes
_PREFIX = re.compile(r"^(?:<\d+>)?(?:\[\s*\d+\.\d+\]\s?)?")

# (kind, fatal, pattern). fatal: the guest cannot be trusted to answer any more.
RULES: tuple[tuple[str, bool, re.Pattern[str]], ...] = tuple(
    (kind, fatal, re.compile(rx)) for kind, fatal, rx in (
        ("panic", True, r"Kernel panic - not syncing"),
        ("lab-fatal", True, r"^livepatch-lab: FATAL:"),
        ("oops", False, r"\bOops:|general protection fault|Unable to handle kernel|"
                        r"BUG: unable to handle|BUG: kernel NULL pointer dereference|invalid opcode:"),
        # The memory detectors a validation guest boots with (lab/run/memdebug.py), before "bug":
        # KFENCE's "BUG: KFENCE: use-after-free read in f+0x1/0x2"; SLUB's "BUG <cache> (Tainted:
        # ...): Right Redzone overwritten" (Poison overwritten, Object already free, Freepointer
        # corrupt, ...; its "INFO:" and "FIX <cache>:" lines follow); KASAN where a kernel has it;
        # page poisoning's "pagealloc: memory corruption".
        ("kfence", False, r"\bBUG: KFENCE: "),
        ("kasan", False, r"\bBUG: KASAN: "),
        ("slub", False, r"^BUG [\w.:-]+ \((?:Not tainted|Tainted: [^)]*)\): "),
        ("page-poison", False, r"pagealloc: (?:memory corruption|single bit error)"),
        # x86 control-flow checks: a return through an unpatched return thunk, an indirect
        # call to a function without ENDBR (IBT kernels: 6.12, 7)
        ("return-thunk", False, r"Unpatched return thunk in use"),
        ("endbr", False, r"Missing ENDBR: "),
        # before "bug": the kernel prints "watchdog: BUG: soft lockup - CPU#1 stuck for 26s!"
        ("soft-lockup", False, r"soft lockup - CPU#?\d+ stuck"),
        ("hard-lockup", False, r"[Hh]ard LOCKUP"),
        ("bug", False, r"kernel BUG at|^BUG:|\bBUG: "),
        ("warning", False, r"^WARNING:|\bWARNING: CPU: \d+ PID:"),
        ("hung-task", False, r"INFO: task .* blocked for more than"),
        ("rcu-stall", False, r"rcu_\w+ (?:self-)?detected.* stall|INFO: rcu_\w+ detected stalls"),
        ("ubsan", False, r"UBSAN:"),
        ("list-corruption", False, r"list_(?:add|del) corruption"),
        ("refcount", False, r"refcount_t: "),
        ("oom", False, r"Out of memory: Killed process"),
        # "Call Trace:" alone is no rule: a deliberate dump (sysrq, dump_stack) prints it too;
        # it only confirms one of the findings above.
    ))

_LINUX_VERSION = re.compile(r"^Linux version (\S+)")

# where a report names the code at fault: KFENCE's first line, SLUB's "Allocated in" (5.10:
# "INFO: Allocated in"), an oops's RIP, a stack frame of a module ("f+0x1/0x2 [mod]")
_IN = re.compile(r"\b(?:read|write|free|corruption) in (\S+\+0x[0-9a-f]+/0x[0-9a-f]+(?: \[\w+\])?)")
_RIP = re.compile(r"\bRIP: \d+:(\S+\+0x[0-9a-f]+/0x[0-9a-f]+(?: \[\w+\])?)")
_ALLOCATED = re.compile(r"\bAllocated in (\S+\+0x[0-9a-f]+/0x[0-9a-f]+(?: \[\w+\])?)")
_FRAME = re.compile(r"^\s*(?:\? )?([\w.]+\+0x[0-9a-f]+/0x[0-9a-f]+) \[(\w+)\]")
REPORT_LINES = 60    # how far a report's lines reach after its first line


@dataclass(frozen=True)
class Finding:
    kind: str
    fatal: bool
    line: str
    lineno: int


def strip_prefix(line: str) -> str:
    return _PREFIX.sub("", line.rstrip("\r\n"), count=1)


def report_function(lines: list[str], start: int, modules: Iterable[str] = ()) -> Optional[str]:
    """The function the report starting at ``lines[start]`` names: a frame of one of ``modules``
    (the run's own), else the one the report's own words give (KFENCE's ``in f``, the RIP,
    SLUB's ``Allocated in``); None if it names none."""
    window = [strip_prefix(line) for line in lines[start:start + REPORT_LINES]]
    mods = set(modules)
    for text in window:
        m = _FRAME.match(text)
        if m and m.group(2) in mods:
            return f"{m.group(1)} [{m.group(2)}]"
    for rx in (_IN, _RIP, _ALLOCATED):
        for text in window:
            m = rx.search(text)
            if m:
                return m.group(1)
    return None


def classify(line: str) -> Optional[tuple[str, bool]]:
    """(kind, fatal) for a line that means trouble, else None."""
    text = strip_prefix(line)
    for kind, fatal, rx in RULES:
        if rx.search(text):
            return kind, fatal
    return None


class Scanner:
    """Stateful line scanner: also catches a reboot (a second ``Linux version``)."""

    def __init__(self) -> None:
        self.boots = 0
        self.release: Optional[str] = None
        self.lineno = 0

    def feed(self, line: str) -> Optional[Finding]:
        self.lineno += 1
        text = strip_prefix(line)
        m = _LINUX_VERSION.match(text)
        if m:
            self.boots += 1
            self.release = self.release or m.group(1)
            if self.boots > 1:
                return Finding("reboot", True, text, self.lineno)
            return None
        hit = classify(text)
        return Finding(hit[0], hit[1], text, self.lineno) if hit else None


def scan(lines: Iterable[str]) -> Iterator[Finding]:
    scanner = Scanner()
    for line in lines:
        finding = scanner.feed(line)
        if finding:
            yield finding
