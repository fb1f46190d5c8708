"""Livepatch operations in a guest: load, watch the transition, diagnose, revert.

All state is read from the kernel's own interfaces: ``/sys/kernel/livepatch``
and ``/proc/<pid>/task/<tid>/patch_state`` (-1 no transition, 0 unpatched,
1 patched). Loops run inside the guest with shell builtins: under TCG every
fork costs tens of milliseconds, and one SSH round trip per poll would too.
"""
from __future__ import annotations

import re
import shlex
import time
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from ...core.errors import LivepatchError
from ...machine.channel import Result, Shell

SYSFS = "/sys/kernel/livepatch"
PROC_MODULES = "/proc/modules"
# The lab's lines in the kernel log around a patch's module: what the kernel reports before the
# first is not the patch's doing; a fault after the second in the module's old addresses is a
# use after unload.
LOADING = "livepatch-lab: loading "
UNLOADED = "livepatch-lab: unloaded "
# written just before the lab's rmmod: a timer the patch left armed can fire as rmmod frees the
# module and before the "unloaded" mark, and take the guest down with it (seen on debian-6.12)
UNLOADING = "livepatch-lab: unloading "

# Kernel taint bits (Documentation/admin-guide/tainted-kernels.rst): bit -> (letter, meaning)
TAINT_FLAGS = {
    0: ("P", "proprietary module loaded"), 1: ("F", "module force loaded"),
    2: ("S", "kernel running on an out of specification system"), 3: ("R", "module force unloaded"),
    4: ("M", "processor reported a Machine Check Exception"), 5: ("B", "bad page referenced"),
    6: ("U", "taint requested by userspace"), 7: ("D", "kernel died recently (OOPS or BUG)"),
    8: ("A", "ACPI table overridden by user"), 9: ("W", "kernel issued a warning"),
    10: ("C", "staging driver loaded"), 11: ("I", "workaround for platform firmware bug"),
    12: ("O", "externally-built (out-of-tree) module loaded"),
    13: ("E", "unsigned module loaded"), 14: ("L", "soft lockup occurred"),
    15: ("K", "kernel has been live patched"), 16: ("X", "auxiliary taint"),
    17: ("T", "kernel built with the struct randomization plugin"),
    18: ("N", "an in-kernel test has been run"),
}
LIVEPATCH_TAINT = 1 << 15
# A livepatch module implies K, and O/E for an out-of-tree, unsigned module.
ALLOWED_TAINT = LIVEPATCH_TAINT | (1 << 12) | (1 << 13)


def taint_letters(mask: int) -> list[tuple[str, str]]:
    return [TAINT_FLAGS.get(b, (f"bit{b}", "unknown taint bit")) for b in range(32) if mask >> b & 1]


@dataclass
class Straggler:
    pid: int
    tid: int
    comm: str
    stack: list[str] = field(default_factory=list)

    def describe(self) -> str:
        top = "; ".join(self.stack[:6]) or "(no stack)"
        return f"{self.comm} (pid {self.pid}, tid {self.tid}) at {top}"


def _q(s: str) -> str:
    return shlex.quote(s)


def insmod(remote_ko: str, params: Sequence[tuple[str, str]] = ()) -> str:
    """The insmod command line, each ``name=value`` parameter quoted for the shell."""
    return " ".join(["insmod", _q(remote_ko), *(_q(f"{k}={v}") for k, v in params)])


def load(guest: Shell, remote_ko: str, timeout: float, report_text_of: str = "",
         params: Sequence[tuple[str, str]] = ()) -> Result:
    """insmod; raise ``LivepatchError`` with the kernel's complaint if it refuses.

    With ``report_text_of`` (the module's name) the kernel log is marked first
    (``LOADING``), and stdout holds the module's sections and core (``parse_sections``;
    ``.text`` among them), read in the same breath as the load: a patch that freezes
    the guest leaves no time for a second command.
    """
    mark = f"echo {_q(LOADING + report_text_of)} > /dev/kmsg; " if report_text_of else ""
    report = f" && {{ {_sections(report_text_of)}; true; }}" if report_text_of else ""
    result = guest.run(mark + insmod(remote_ko, params) + report, timeout)
    if not result.ok:
        tail = guest.run("dmesg | tail -n 6", timeout).stdout   # the kernel's own words on the refusal
        raise LivepatchError(f"insmod {remote_ko} failed (rc {result.rc}): "
                             f"{(result.stderr or result.stdout).strip()}\n{tail}")
    return result


def _sections(module: str) -> str:
    """Shell: ``@@section NAME ADDRESS`` for every section of a loaded module (root reads real
    addresses), then its /proc/modules line (``@@module name size refs deps state base``)."""
    d = _q(f"/sys/module/{module}/sections")
    return (f"for f in {d}/.* {d}/*; do [ -f \"$f\" ] && read -r a < \"$f\" && echo \"@@section ${{f##*/}} $a\"; "
            f"done 2>/dev/null; while read -r n rest; do [ \"$n\" = {_q(module)} ] && echo \"@@module $n $rest\"; "
            f"done <{PROC_MODULES}")


def parse_sections(text: str) -> tuple[dict[str, int], Optional[tuple[int, int]]]:
    """``_sections`` output -> ({section: address}, (base, size) from /proc/modules or None)."""
    sections: dict[str, int] = {}
    core = None
    for line in text.splitlines():
        parts = line.split()
        try:
            if len(parts) == 3 and parts[0] == "@@section":
                sections[parts[1]] = int(parts[2], 16)
            elif len(parts) >= 7 and parts[0] == "@@module":
                core = (int(parts[6], 16), int(parts[2]))
        except ValueError:
            continue
    return sections, core


def module_sections(guest: Shell, module: str, timeout: float) -> tuple[dict[str, int], Optional[tuple[int, int]]]:
    """A loaded module's sections and core (for a patch a tool loaded: insmod reads them itself)."""
    return parse_sections(guest.run(_sections(module), timeout).stdout)


def state(guest: Shell, name: str, timeout: float) -> dict[str, Optional[int]]:
    """``enabled`` / ``transition`` / ``force`` of a patch; all None if it is gone."""
    out = guest.run(f"cd {SYSFS}/{_q(name)} 2>/dev/null && for f in enabled transition; do "
                    f"read -r v < $f; echo $f=$v; done", timeout).stdout
    values = dict(line.split("=", 1) for line in out.split() if "=" in line)
    return {k: int(values[k]) if values.get(k, "").lstrip("-").isdigit() else None
            for k in ("enabled", "transition")}


_PATCHES = (f"for d in {SYSFS}/*/; do [ -d \"$d\" ] || continue; n=${{d%/}}; n=${{n##*/}}; e=-; t=-; r=-; "
            "read -r e < \"$d/enabled\"; read -r t < \"$d/transition\"; "
            "[ -e \"$d/replace\" ] && read -r r < \"$d/replace\"; echo \"$n $e $t $r\"; done")


def patches(guest: Shell, timeout: float) -> dict[str, dict[str, Optional[int]]]:
    """Every patch in /sys/kernel/livepatch: name -> enabled, transition, replace (None where the
    kernel has no such attribute: ``replace`` appeared in 6.11)."""
    out = {}
    for line in guest.run(_PATCHES, timeout).stdout.splitlines():
        parts = line.split()
        if len(parts) == 4:
            out[parts[0]] = {k: int(v) if v.lstrip("-").isdigit() else None
                             for k, v in zip(("enabled", "transition", "replace"), parts[1:])}
    return out


def wait_transition(guest: Shell, name: str, deadline_s: float) -> tuple[bool, float]:
    """Wait in the guest until the patch leaves transition; (completed, seconds waited)."""
    # bash's SECONDS, and a slow poll: under TCG each `sleep` is a fork+exec that loads the
    # very guest whose service is being measured
    script = (f"f={SYSFS}/{_q(name)}/transition; SECONDS=0; "
              f"while read -r t 2>/dev/null < $f && [ \"$t\" = 1 ]; do "
              f"[ $SECONDS -ge {int(deadline_s) + 1} ] && {{ echo stalled; exit 0; }}; sleep 0.2; done; echo done")
    start = time.monotonic()
    out = guest.run(script, deadline_s + 15).stdout.strip()
    return out.endswith("done"), time.monotonic() - start


_STRAGGLERS = r"""
want=%d
for d in /proc/[0-9]*/task/[0-9]*; do
  read -r s 2>/dev/null < $d/patch_state || continue
  [ "$s" = -1 ] && continue
  [ "$s" = "$want" ] && continue
  read -r comm 2>/dev/null < $d/comm
  tid=${d##*/}; pid=${d#/proc/}; pid=${pid%%%%/*}
  echo "@@task $pid $tid $comm"
  while read -r line; do echo "$line"; done 2>/dev/null < $d/stack
done
"""


def stragglers(guest: Shell, patching: bool, timeout: float) -> list[Straggler]:
    """Tasks not yet in the transition's target state, with their stacks."""
    out = guest.run(_STRAGGLERS % (1 if patching else 0), timeout).stdout
    tasks: list[Straggler] = []
    for line in out.splitlines():
        m = re.match(r"@@task (\d+) (\d+) (.*)", line)
        if m:
            tasks.append(Straggler(int(m.group(1)), int(m.group(2)), m.group(3)))
        elif tasks and line.strip():
            tasks[-1].stack.append(re.sub(r"^\[<[0-9a-f]+>\] ", "", line.strip()))
    return tasks


# The kernel signals stragglers by itself after about 15 retries (one a second) since 5.x,
# where the 'signal' attribute of 4.x is gone.
KERNEL_SIGNALS_AFTER = 17.0


def signal_stragglers(guest: Shell, name: str, timeout: float) -> bool:
    """Ask the kernel to signal/wake stragglers; False where it does that by itself."""
    return guest.run(f"test -e {SYSFS}/{_q(name)}/signal && echo 1 > {SYSFS}/{_q(name)}/signal",
                     timeout).ok


def force(guest: Shell, name: str, timeout: float) -> Result:
    return guest.run(f"echo 1 > {SYSFS}/{_q(name)}/force", timeout)


def disable(guest: Shell, name: str, timeout: float) -> Result:
    return guest.run(f"echo 0 > {SYSFS}/{_q(name)}/enabled", timeout)


def unload(guest: Shell, module: str, timeout: float) -> Result:
    return guest.run(f"rmmod {_q(module)}", timeout)


@dataclass
class Removal:
    rc: int                # rmmod's exit status
    err: str               # what it said
    sysfs_gone: bool       # /sys/kernel/livepatch/<module> is gone
    module_gone: bool      # the module is out of /proc/modules


def remove(guest: Shell, module: str, timeout: float, rmmod: bool = True) -> Removal:
    """rmmod (unless a tool already unloaded it), then whether its livepatch entry and the module
    are gone: one round trip."""
    m = _q(module)
    first = f"echo {_q(UNLOADING + module)} > /dev/kmsg; rmmod {m} 2>&1" if rmmod else "true"
    out = guest.run(f"{first}; echo \"@@rc=$?\"; test -e {SYSFS}/{m} && echo @@listed; "
                    f"if {_listed(module)}; then echo @@loaded; else echo {_q(UNLOADED + module)} > /dev/kmsg; fi; "
                    "true", timeout)
    said, _, rest = out.stdout.partition("@@rc=")
    rc = rest.split()[0] if rest.split() else "-1"
    return Removal(int(rc) if rc.lstrip("-").isdigit() else -1, said.strip(),
                   "@@listed" not in rest, "@@loaded" not in rest)


def _listed(module: str) -> str:
    """Shell: true if ``module`` is in /proc/modules. Compared as a string by builtins (no fork,
    and a name is data, never a pattern or shell code)."""
    return (f"{{ while read -r n _; do [ \"$n\" = {_q(module)} ] && break; done <{PROC_MODULES}; "
            f"[ \"$n\" = {_q(module)} ]; }}")


def module_loaded(guest: Shell, module: str, timeout: float) -> bool:
    return guest.run(_listed(module), timeout).ok


def taint(guest: Shell, timeout: float) -> int:
    return int(guest.run("cat /proc/sys/kernel/tainted", timeout, check=True).stdout.strip())


def begin(guest: Shell, marker: str, timeout: float) -> tuple[int, str]:
    """Mark the kernel log (the run's dmesg starts after the marker); read the taint and the kernel's
    command line: one round trip."""
    out = guest.run(f"echo {_q(marker)} > /dev/kmsg && cat /proc/sys/kernel/tainted /proc/cmdline", timeout,
                    check=True).stdout.splitlines()
    return int(out[0].strip()), (out[1].strip() if len(out) > 1 else "")


@dataclass
class EndState:
    """What the kernel shows at the end of a run."""
    dmesg: list[str]            # the log since the run's marker
    taint: int
    modules: set[str]           # /proc/modules
    listed: list[str]           # /sys/kernel/livepatch


def finish(guest: Shell, marker: str, unload: Sequence[str], timeout: float) -> EndState:
    """Unload ``unload`` (the run's target modules, newest first), then read taint, modules, the
    livepatch list and the log since ``marker``: one round trip."""
    script = "".join(f"rmmod {_q(n)} 2>/dev/null\n" for n in unload) + (
        f"echo @@taint; cat /proc/sys/kernel/tainted; echo @@modules; cut -d' ' -f1 /proc/modules; "
        f"echo @@listed; ls {SYSFS}; echo @@dmesg; dmesg")
    out = guest.run(script, timeout, check=True).stdout
    parts = dict(section.partition("\n")[::2] for section in out.split("@@")[1:])
    lines = parts.get("dmesg", "").splitlines()
    at = next((i for i in range(len(lines) - 1, -1, -1) if marker in lines[i]), -1)
    return EndState(lines[at + 1:], int(parts["taint"].split()[0]), set(parts.get("modules", "").split()),
                    sorted(parts.get("listed", "").split()))


def mark_kmsg(guest: Shell, text: str, timeout: float) -> None:
    """Write a marker into the kernel log, to scope dmesg checks to this run."""
    guest.run(f"echo {_q(text)} > /dev/kmsg", timeout, check=True)


def dmesg_since(guest: Shell, marker: str, timeout: float) -> list[str]:
    lines = guest.run("dmesg", timeout, check=True).stdout.splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if marker in lines[i]:
            return lines[i + 1:]
    return lines


_MEMINFO = ("SUnreclaim", "Slab", "VmallocUsed", "MemAvailable", "Percpu")
_MEMORY = f"cat /proc/meminfo; echo @@; cut -d' ' -f1 {PROC_MODULES}; echo @@; ls {SYSFS} 2>/dev/null; true"


def memory(guest: Shell, timeout: float) -> dict[str, Any]:
    """/proc/meminfo's fields of ``_MEMINFO`` (KiB), the modules and the livepatches: one round trip."""
    meminfo, modules, patches = (guest.run(_MEMORY, timeout, check=True).stdout.split("@@\n") + ["", ""])[:3]
    mem = {k.strip(): int(v.split()[0]) for k, v in (line.split(":", 1) for line in meminfo.splitlines()
                                                      if ":" in line) if v.split() and v.split()[0].isdigit()}
    return {**{k: mem.get(k) for k in _MEMINFO}, "modules": sorted(set(modules.split())),
            "patches": sorted(patches.split())}
