"""What a run needs from the guest and from its kernel's livepatch interface, as protocols.

The steps reach the guest only through ``Guest`` (``machine.guest.Guest`` is the real
one) and the kernel's livepatch operations only
through ``Kernel`` (the ``livepatch`` module is the real one; the unit tests'
``FakeKernel`` a model). How patches get in and out is ``context.Applier``. mypy checks
each implementation against these, so a fake cannot drift from the real thing unnoticed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Protocol, Sequence

from ...core.settings import Timeouts
from ...machine.backends.base import MachineExit
from ...machine.channel import Result, Shell
from ...machine.console import ConsoleFollower
from .livepatch import EndState, Removal, Straggler


class Channel(Protocol):
    @property
    def lost(self) -> Optional[str]: ...     # why the lab gave up on the guest; None while it answers


class Machine(Protocol):
    """The guest's machine as a run watches it (a part of ``backends.base.Machine``)."""
    accel: str

    @property
    def console(self) -> ConsoleFollower: ...

    def is_running(self) -> bool: ...

    def wait_exit(self, timeout: float) -> bool: ...

    def exit_info(self) -> MachineExit: ...

    def exit_reason(self) -> str: ...

    def describe(self) -> dict[str, Any]: ...

    def host_pid(self) -> Optional[int]: ...

    def cpu_registers(self) -> str: ...

    def host_trouble(self) -> str: ...


class Guest(Shell, Protocol):
    """A running guest as a run uses it."""
    timeouts: Timeouts

    @property
    def machine(self) -> Machine: ...

    @property
    def channel(self) -> Channel: ...

    def upload(self, local: Path, remote: str, mode: int = 0o644) -> None: ...

    def host_port(self, guest_port: int) -> int: ...


class Kernel(Protocol):
    """The kernel's livepatch interface and the module list, as the steps drive them."""
    def load(self, guest: Shell, remote_ko: str, timeout: float, report_text_of: str = "",
             params: Sequence[tuple[str, str]] = ()) -> Result: ...

    def module_sections(self, guest: Shell, module: str,
                        timeout: float) -> tuple[dict[str, int], Optional[tuple[int, int]]]: ...

    def state(self, guest: Shell, name: str, timeout: float) -> dict[str, Optional[int]]: ...

    def patches(self, guest: Shell, timeout: float) -> dict[str, dict[str, Optional[int]]]: ...

    def wait_transition(self, guest: Shell, name: str, deadline_s: float) -> tuple[bool, float]: ...

    def stragglers(self, guest: Shell, patching: bool, timeout: float) -> list[Straggler]: ...

    def signal_stragglers(self, guest: Shell, name: str, timeout: float) -> bool: ...

    def force(self, guest: Shell, name: str, timeout: float) -> Result: ...

    def disable(self, guest: Shell, name: str, timeout: float) -> Result: ...

    def remove(self, guest: Shell, module: str, timeout: float, rmmod: bool = True) -> Removal: ...

    def module_loaded(self, guest: Shell, module: str, timeout: float) -> bool: ...

    def taint(self, guest: Shell, timeout: float) -> int: ...

    def begin(self, guest: Shell, marker: str, timeout: float) -> tuple[int, str]: ...

    def finish(self, guest: Shell, marker: str, unload: Sequence[str], timeout: float) -> EndState: ...

    def mark_kmsg(self, guest: Shell, text: str, timeout: float) -> None: ...

    def dmesg_since(self, guest: Shell, marker: str, timeout: float) -> list[str]: ...

    def memory(self, guest: Shell, timeout: float) -> dict[str, Any]: ...
