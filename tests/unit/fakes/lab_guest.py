"""A pretend guest for the runner's unit tests: its livepatch kernel is a small model, its
workload the real guest-side scripts run on this host (``LocalGuest``), its console a real
``ConsoleFollower`` on a file, its machine one the test can kill or panic.

``FakeKernel`` implements ``ports.Kernel`` as ``livepatch_lab.lab.run.livepatch`` does (a run's
``Context(kernel=...)`` takes it; conformance.py has mypy check it): insmod, the transition,
disable, rmmod, taint and the
kernel log follow the kernel's rules as far as the runner needs them; a test scripts the
trouble (a refused load, a stalled transition, a module that will not unload).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from livepatch_lab.core.errors import GuestConnectionError, LivepatchError
from livepatch_lab.lab.run import livepatch
from livepatch_lab.machine.backends.base import MachineExit, StillRunning
from livepatch_lab.machine.channel import Result
from livepatch_lab.machine.console import ConsoleFollower

from .local_guest import LocalGuest

K = 1 << 15


@dataclass
class FakeKernel:
    refuse: dict[str, str] = field(default_factory=dict)     # module -> the kernel's complaint
    stall: set[str] = field(default_factory=set)             # transitions that never complete
    pinned: set[str] = field(default_factory=set)            # modules rmmod refuses
    replace: set[str] = field(default_factory=set)           # patches with .replace = true
    on_load: Optional[Callable[[str], None]] = None          # called as a patch is loaded
    modules: set[str] = field(default_factory=set)
    enabled: dict[str, bool] = field(default_factory=dict)   # /sys/kernel/livepatch/<name>/enabled
    log: list[str] = field(default_factory=list)
    taint_mask: int = 0
    calls: list[str] = field(default_factory=list)

    @staticmethod
    def _reach(guest) -> None:
        """A guest given up on answers nothing, to the kernel's functions as to any command (None:
        the guest's own doing, e.g. a tool at work in it)."""
        if guest is not None and guest.channel.lost:
            raise GuestConnectionError(f"ssh: connection lost: {guest.channel.lost}")

    def _print(self, line: str) -> None:
        self.log.append(f"[{len(self.log) + 1:6d}.000000] {line}")

    # livepatch_lab.lab.run.livepatch, faked
    def load(self, guest, remote_ko, timeout, report_text_of="", params=()):
        self._reach(guest)
        name = Path(remote_ko).stem
        self.calls.append(" ".join([f"insmod {name}", *(f"{k}={v}" for k, v in params)]))
        if report_text_of:
            self._print(livepatch.LOADING + report_text_of)
        if self.on_load:
            self.on_load(name)
        if name in self.refuse:
            raise LivepatchError(f"insmod {remote_ko} failed (rc 1): {self.refuse[name]}")
        self.modules.add(name)
        self.enabled[name] = True
        self.taint_mask |= K
        self._print(f"livepatch: enabling patch '{name}'")
        self._print(f"livepatch: '{name}': starting patching transition")
        if name not in self.stall:
            self._complete(name)
        return Result(f"insmod {remote_ko}", 0, "@@section .text 0xffffffffc0000000\n"
                      f"@@module {name} 16384 0 - Live 0xffffffffc0000000 (OEK)\n", "", 0.01)

    def module_sections(self, guest, module, timeout):
        self._reach(guest)
        return {".text": 0xffffffffc0000000}, (0xffffffffc0000000, 16384)

    def _complete(self, name):
        self._print(f"livepatch: '{name}': patching complete")
        if name in self.replace:   # the others are disabled and leave sysfs; their modules stay
            for other in [n for n in self.enabled if n != name]:
                del self.enabled[other]

    def patches(self, guest, timeout):
        self._reach(guest)
        return {n: {"enabled": int(on), "transition": 0, "replace": None} for n, on in self.enabled.items()}

    def state(self, guest, name, timeout):
        if name not in self.enabled:
            return {"enabled": None, "transition": None}
        return {"enabled": int(self.enabled[name]), "transition": int(name in self.stall)}

    def wait_transition(self, guest, name, deadline_s):
        self._reach(guest)
        self.calls.append(f"wait {name}")
        return name not in self.stall, 0.05

    def stragglers(self, guest, patching, timeout):
        self._reach(guest)
        return [livepatch.Straggler(77, 77, "lab_sleeper", ["lab_target_sleep+0x22/0x40"])]

    def signal_stragglers(self, guest, name, timeout):
        self._reach(guest)
        return False

    def force(self, guest, name, timeout):
        self._reach(guest)
        self.stall.discard(name)
        self._print("livepatch: forcing remaining tasks to the patched state")
        self._complete(name)
        return Result("force", 0, "", "", 0.0)

    def disable(self, guest, name, timeout):
        self._reach(guest)
        self.calls.append(f"disable {name}")
        if not self.enabled.get(name):
            return Result("disable", 1, "", "No such file or directory", 0.0)
        self.enabled[name] = False
        self.stall.discard(name)
        self._print(f"livepatch: '{name}': starting unpatching transition")
        self._print(f"livepatch: '{name}': unpatching complete")
        return Result("disable", 0, "", "", 0.01)

    def unload(self, guest, module, timeout):
        self._reach(guest)
        self.calls.append(f"rmmod {module}")
        if module in self.pinned:
            return Result("rmmod", 1, "", f"ERROR: Module {module} is in use", 0.0)
        self.modules.discard(module)
        self.enabled.pop(module, None)
        return Result("rmmod", 0, "", "", 0.0)

    def remove(self, guest, module, timeout, rmmod=True):
        self._reach(guest)
        if rmmod:
            self._print(livepatch.UNLOADING + module)
        res = self.unload(guest, module, timeout) if rmmod else Result("true", 0, "", "", 0.0)
        if module not in self.modules:
            self._print(livepatch.UNLOADED + module)
        return livepatch.Removal(res.rc, res.stderr, module not in self.enabled, module not in self.modules)

    def module_loaded(self, guest, module, timeout):
        self._reach(guest)
        return module in self.modules

    def taint(self, guest, timeout):
        self._reach(guest)
        return self.taint_mask

    def mark_kmsg(self, guest, text, timeout):
        self._reach(guest)
        self._print(text)

    def dmesg_since(self, guest, marker, timeout):
        self._reach(guest)
        at = next(i for i, line in enumerate(self.log) if marker in line)
        return self.log[at + 1:]

    def begin(self, guest, marker, timeout):
        self._reach(guest)
        self.mark_kmsg(guest, marker, timeout)
        return self.taint_mask, "console=ttyS0,115200 panic=-1"

    def finish(self, guest, marker, unload, timeout):
        self._reach(guest)
        for name in unload:
            self.modules.discard(name)
        return livepatch.EndState(self.dmesg_since(guest, marker, timeout), self.taint_mask, set(self.modules),
                                  sorted(self.enabled))

    def memory(self, guest, timeout):
        """The guest's memory, steady (the host's own /proc/meminfo moves with whatever else runs)."""
        return {"SUnreclaim": 9000, "Slab": 20000, "VmallocUsed": 7000, "MemAvailable": 800000, "Percpu": 1000,
                "modules": sorted(self.modules), "patches": sorted(self.enabled)}


class FakeMachine:
    """The guest's machine: a console file the test can print to, an end the test can cause."""

    def __init__(self, directory: Path):
        self.console_log = directory / "console.log"
        self.console_log.write_text("")
        self.console = ConsoleFollower(self.console_log).start()
        self.ended: Optional[MachineExit] = None
        self.trouble = ""    # what the host does to it while it runs (host_trouble)
        self.accel = "tcg"

    def print(self, line: str) -> None:
        with open(self.console_log, "a") as fh:
            fh.write(line + "\n")
        self.console.wait_for(lambda c: c.contains(line), 5.0)

    def end(self, kind: str, detail: str) -> None:
        self.ended = MachineExit(kind, detail)

    def is_running(self) -> bool:
        return self.ended is None

    def wait_exit(self, timeout: float) -> bool:
        return self.ended is not None

    def exit_reason(self) -> str:
        return self.ended.detail if self.ended else ""

    def exit_info(self):
        return self.ended or StillRunning

    def cpu_registers(self) -> str:
        return "CPU#0\nRIP=ffffffff81000000 RFL=00000246\n"

    def host_pid(self) -> Optional[int]:
        return None     # no QEMU process: nothing for the host's CPU accounting to watch

    def host_trouble(self) -> str:
        return self.trouble if self.is_running() else ""

    def describe(self) -> dict:
        return {"backend": "fake"}

    def stop(self) -> None:
        self.console.stop()


class FakeChannel:
    def __init__(self):
        self.lost: Optional[str] = None

    def mark_lost(self, reason: str) -> None:
        self.lost = self.lost or reason


class LabGuest(LocalGuest):
    """What the runner's steps see as ``Guest``: module uploads and target insmod/rmmod go to
    the fake kernel, everything else runs on this host."""

    def __init__(self, timeouts, kernel: FakeKernel, directory: Path):
        super().__init__(timeouts)
        self.kernel, self.machine, self.channel = kernel, FakeMachine(directory), FakeChannel()
        self.uploads: list[str] = []
        self.lost = threading.Event()

    def upload(self, local, remote, mode=0o644):
        self.uploads.append(remote)

    def run(self, command, timeout=None, *, check=False, stdin=None):
        if self.channel.lost:
            raise GuestConnectionError(f"ssh: connection lost during {command!r}: {self.channel.lost}")
        head, _, arg = command.partition(" ")
        if head in ("insmod", "rmmod"):
            name = Path(arg.strip("'")).stem
            if head == "insmod" and name in self.kernel.refuse:
                return Result(command, 1, "", f"insmod: ERROR: {self.kernel.refuse[name]}", 0.0)
            if head == "insmod":
                self.kernel.modules.add(name)
            else:
                self.kernel.modules.discard(name)
            return Result(command, 0, "", "", 0.0)
        if command.startswith("mkdir -p /run/lab/modules"):
            return Result(command, 0, "", "", 0.0)
        if command.startswith(f"test -e {livepatch.SYSFS}/"):
            return Result(command, 0 if command.rsplit("/", 1)[1] in self.kernel.enabled else 1, "", "", 0.0)
        return super().run(command, timeout, check=check, stdin=stdin)
