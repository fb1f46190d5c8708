"""Name the kernel functions a frozen guest's vCPUs are executing.

A guest that hangs with interrupts off prints nothing; its registers, read
through QMP, still say where each vCPU is. Debian's ``System.map`` is a stub
(the real one is in the -dbg package), so the kernel's text symbols come from
the guest's own ``/proc/kallsyms``, read once per kernel and cached; ``_text``
read at each run gives the KASLR slide. Module functions come from the host's
copy of the ``.ko`` (``nm``) and the module's ``.text`` base in sysfs.
"""
from __future__ import annotations

import bisect
import re
from typing import Optional

_RIP = re.compile(r"\bRIP=([0-9a-fA-F]{16})")
_CPU = re.compile(r"^CPU#(\d+)", re.M)


class SymbolMap:
    def __init__(self, entries: list[tuple[int, str]]):
        entries.sort()
        self._addrs = [a for a, _ in entries]
        self._names = [n for _, n in entries]

    @classmethod
    def parse(cls, text: str, base: int = 0, suffix: str = "") -> "SymbolMap":
        """``nm``/kallsyms lines (``addr type name [module]``); text symbols only."""
        entries = []
        for line in text.splitlines():
            parts = line.split()
            if len(parts) >= 3 and len(parts[1]) == 1 and parts[1] in "TtWw":
                try:
                    entries.append((base + int(parts[0], 16), parts[2] + suffix))
                except ValueError:
                    continue
        return cls(entries)

    def merged(self, other: "SymbolMap") -> "SymbolMap":
        return SymbolMap(list(zip(self._addrs, self._names)) + list(zip(other._addrs, other._names)))

    def entries(self) -> list[tuple[int, str]]:
        return list(zip(self._addrs, self._names))

    def __len__(self) -> int:
        return len(self._addrs)

    def address(self, name: str) -> Optional[int]:
        try:
            return self._addrs[self._names.index(name)]
        except ValueError:
            return None

    def name(self, addr: int) -> Optional[str]:
        """``func+0xoff`` for an address (a kernel map is ``slid`` to this boot first)."""
        i = bisect.bisect_right(self._addrs, addr) - 1
        if i < 0 or addr - self._addrs[i] > 1 << 20:
            return None
        return f"{self._names[i]}+{addr - self._addrs[i]:#x}"


def vcpu_rips(registers: str) -> dict[int, int]:
    """{vCPU index: RIP} from HMP ``info registers -a`` output."""
    out: dict[int, int] = {}
    cpus = list(_CPU.finditer(registers))
    for i, m in enumerate(cpus):
        block = registers[m.end(): cpus[i + 1].start() if i + 1 < len(cpus) else len(registers)]
        rip = _RIP.search(block)
        if rip:
            out[int(m.group(1))] = int(rip.group(1), 16)
    if not cpus:  # a single-CPU dump has no CPU# headers
        rip = _RIP.search(registers)
        if rip:
            out[0] = int(rip.group(1), 16)
    return out


MODULES_START = 0xffffffffa0000000   # x86-64: module mapping space begins here (KASLR moves it up)


def describe_vcpus(registers: str, smap: Optional[SymbolMap]) -> list[str]:
    """One line per vCPU: ``vCPU 0 at multi_cpu_stop+0x9a (ffffffff81...)``."""
    lines = []
    for cpu, rip in sorted(vcpu_rips(registers).items()):
        name = smap.name(rip) if smap is not None else None
        if name is None:
            name = ("a module's code" if rip >= MODULES_START else
                    "user space" if rip < 1 << 47 else "an unknown kernel address")
        lines.append(f"vCPU {cpu} at {name} ({rip:016x})")
    return lines


def slid(kernel_map: SymbolMap, text_base: Optional[int]) -> SymbolMap:
    """The cached kernel map moved to this boot's ``_text`` (KASLR)."""
    linked = kernel_map.address("_text")
    if text_base is None or linked is None or text_base == linked:
        return kernel_map
    delta = text_base - linked
    return SymbolMap([(a + delta, n) for a, n in zip(kernel_map._addrs, kernel_map._names)])
