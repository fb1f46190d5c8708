"""What every backend is given (a ``MachineSpec``) and what it offers (``Machine``)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Protocol

from ..console import ConsoleFollower


@dataclass(frozen=True)
class Disk:
    path: Path
    format: str            # "qcow2" | "raw"
    readonly: bool = False
    # The backend puts a throwaway qcow2 overlay on this file (which stays untouched) and
    # removes it at teardown (libvirt: a pool volume; the QEMU backend gets the overlay itself).
    overlay: bool = False


@dataclass(frozen=True)
class Forward:
    """A host TCP port on 127.0.0.1 forwarded to a guest port."""
    host_port: int
    guest_port: int


@dataclass(frozen=True)
class MachineSpec:
    """One guest, independent of the backend that runs it."""
    name: str
    kernel: Path
    append: str
    console_log: Path
    initrd: Optional[Path] = None
    disks: tuple[Disk, ...] = ()
    forwards: tuple[Forward, ...] = ()
    cpus: int = 2
    memory_mib: int = 1024
    rng: bool = True
    network: bool = True


class Machine(Protocol):
    spec: MachineSpec
    console: ConsoleFollower
    accel: str

    def start(self) -> None:
        """Launch the guest; return once the backend controls it (not once it booted)."""

    def is_running(self) -> bool: ...

    def wait_exit(self, timeout: float) -> bool:
        """True if the guest's machine ended within ``timeout``."""

    def exit_reason(self) -> str:
        """How the machine ended so far: '', 'poweroff', 'reset', 'exited N', …"""

    def destroy(self) -> None:
        """Hard stop; idempotent; never raises; leaves no process behind."""

    def describe(self) -> dict: ...

    def lab_ports(self) -> dict[int, int]:
        """Guest port -> the 127.0.0.1 port on the lab's side that reaches it (after start)."""

    def cpu_registers(self) -> str:
        """Every vCPU's registers (HMP ``info registers -a``), for hang forensics."""
