"""Evidence from a guest that froze: where each vCPU is, by function name.

Prepared while the guest still answers (kernel symbols, each loaded module's
``.text`` base), collected after it stopped (registers through QMP, which
QEMU answers even when every vCPU spins with interrupts off). Everything here
is best effort: missing evidence is logged, never a reason to fail a run.
"""
from __future__ import annotations

import gzip
import logging
import re
import shlex
from pathlib import Path
from typing import Optional

from ...core import atomic, hostcmd
from ...core.errors import HarnessError
from . import symbols

log = logging.getLogger(__name__)

# Text symbols of the kernel proper (lines without a [module] column).
_KALLSYMS = r"grep -E '^[0-9a-f]+ [TtWw] [^[:space:]]+$' /proc/kallsyms"
_TEXT_BASE = "grep -m1 ' _text$' /proc/kallsyms"


_OBJDUMP_FUNC = re.compile(r"^([0-9a-f]+) (.{7}) \.text\s+[0-9a-f]+\s+(\S+)$")


def text_functions(objdump_t: str) -> str:
    """``objdump -t`` → ``addr t name`` lines for functions in ``.text`` only: a .ko's
    addresses are section-relative, and sysfs gives the base of ``.text`` alone."""
    found = (_OBJDUMP_FUNC.match(line) for line in objdump_t.splitlines())
    return "\n".join(f"{m.group(1)} t {m.group(3)}" for m in found if m and "F" in m.group(2))


class HangEvidence:
    def __init__(self, guest, settings, timeout: float):
        self.guest, self.settings, self.timeout = guest, settings, timeout
        self.map: Optional[symbols.SymbolMap] = None

    def prepare(self) -> None:
        """Kernel symbols, slid to this boot's ``_text``; cached per kernel build."""
        try:
            kernel_map = self._kernel_map()
            out = self.guest.run(_TEXT_BASE, self.timeout).stdout.split()
            base = int(out[0], 16) if out else None
            self.map = symbols.slid(kernel_map, base)
        except (HarnessError, OSError, ValueError) as exc:
            log.info("no kernel symbols for hang evidence: %s", exc)

    def _kernel_map(self) -> symbols.SymbolMap:
        path = self.settings.symbols_file(self.guest.kernel)
        if not path.is_file():
            text = self.guest.run(_KALLSYMS, self.timeout, check=True).stdout
            atomic.write(path, gzip.compress(text.encode()))   # parallel runs of a kernel write the same
        with gzip.open(path, "rt") as fh:
            return symbols.SymbolMap.parse(fh.read())

    def add_module(self, name: str, ko: Path, text_base: str = "") -> list[tuple[int, str]]:
        """A loaded module's functions, from the host's .ko and its .text base in sysfs
        (``text_base`` if the caller read it already): added to the map, and returned as
        (address, name) pairs (empty when they cannot be known)."""
        try:
            out = (text_base or self.guest.run(f"cat {shlex.quote(f'/sys/module/{name}/sections/.text')}",
                                                self.timeout).stdout).split()
            if not out:
                return []
            table = hostcmd.run(["objdump", "-t", str(ko)], what=f"objdump -t {ko.name}",
                                timeout=self.settings.timeouts.host_command)
            found = symbols.SymbolMap.parse(text_functions(table), int(out[0], 16), f" [{name}]")
        except (HarnessError, OSError, ValueError) as exc:
            log.info("no symbols of module %s: %s", name, exc)
            return []
        if self.map is not None:
            self.map = self.map.merged(found)
        return found.entries()

    def collect(self, machine, out_dir: Path) -> list[str]:
        """Where each vCPU is; the raw registers go to ``cpus.txt``."""
        try:
            regs = machine.cpu_registers()
        except (HarnessError, OSError) as exc:
            log.info("no vCPU registers: %s", exc)
            return []
        lines = symbols.describe_vcpus(regs, self.map)
        (out_dir / "cpus.txt").write_text("\n".join(lines) + "\n\n" + regs)
        return lines
