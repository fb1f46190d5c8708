"""What every backend is given (a ``MachineSpec``), what it makes (a ``Machine``), and
the ``Backend`` that owns its own root disk, KVM probe place, reaper and machines."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Protocol

from ...core.settings import Timeouts
from ...supply.images import Image
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
    # A guest's saved state (``Machine.save``) to resume instead of booting; the rest of the
    # spec must match the saved machine's but for its paths and host ports.
    incoming: Optional[Path] = None


RUNNING, GUEST, HOST = "running", "guest", "host"


@dataclass(frozen=True)
class MachineExit:
    """How a machine ended, and so whose fault it is.

    ``guest``: the guest ended itself (poweroff, reset, a panic, a triple fault): after a
    patch was loaded, the patch's doing. ``host``: the emulator was killed, crashed or
    exited on an error, or the domain was destroyed from outside (or by the lab):
    never the patch's fault, whatever the step."""
    kind: str           # RUNNING | GUEST | HOST
    detail: str = ""    # "poweroff", "reset", "QEMU killed by SIGKILL", ...


StillRunning = MachineExit(RUNNING)

# What a backend writes into its run's owner file so a later run can reap what a dead one
# left: ``record(**items)`` (``RunDir.record`` with the backend's name bound).
Recorder = Callable[..., None]


class RunSpace(Protocol):
    """A run's scratch space (``runs.RunDir``), as a backend sees it."""
    id: str
    path: Path        # files of the run (console, logs, a local overlay); removed after it
    sock_dir: Path    # short directory for AF_UNIX sockets

    def record(self, backend: str, **items: object) -> None: ...


class Machine(Protocol):
    spec: MachineSpec
    console: ConsoleFollower
    accel: str

    def start(self) -> None:
        """Launch the guest; return once the backend controls it (not once it booted); with
        ``spec.incoming``, once the saved guest runs again."""

    def is_running(self) -> bool: ...

    def wait_exit(self, timeout: float) -> bool:
        """True if the guest's machine ended within ``timeout``."""

    def exit_info(self) -> MachineExit:
        """How the machine ended (``StillRunning`` while it runs)."""

    def exit_reason(self) -> str:
        """``exit_info().detail`` as text: '' while running, 'poweroff', 'reset', …"""

    def destroy(self) -> None:
        """Hard stop; idempotent; never raises; leaves no process behind."""

    def describe(self) -> dict: ...

    def host_pid(self) -> Optional[int]:
        """The QEMU process on this host, None where it runs elsewhere (remote libvirt)."""

    def lab_ports(self) -> dict[int, int]:
        """Guest port -> the 127.0.0.1 port on the lab's side that reaches it (after start)."""

    def cpu_registers(self) -> str:
        """Every vCPU's registers (HMP ``info registers -a``), for hang forensics."""

    def host_trouble(self) -> str:
        """What the host is doing to the running machine that no guest can do: its vCPUs
        paused on a host I/O error (a full disk under its overlay), its network cable pulled
        from the host. '' when none is seen (or the backend cannot ask)."""

    def set_link(self, up: bool) -> None:
        """Plug or pull the guest's network cable, from the host (a fault the tests inject).
        Only the lab can: QEMU serves one QMP client, and that is the lab."""

    def save(self, state: Path, root_disk: Path) -> None:
        """Pause the guest, write its state to ``state`` and its root disk (the spec's first,
        a qcow2 overlay) as it is to ``root_disk``, and let it run on. Only on a backend
        whose ``snapshot_identity`` is not None."""


class Backend(Protocol):
    """One way of running machines, bound to the lab's settings. The session and the
    reaper use only this; neither asks which backend it holds."""
    name: str

    def root_disk(self, image: Image, run: RunSpace, over: Optional[Path] = None) -> Disk:
        """``image`` under a throwaway copy-on-write overlay for one run; ``over``: a saved
        guest's root disk (``Machine.save``) to put that overlay on instead."""

    def snapshot_identity(self, spec: MachineSpec, accel: str) -> Optional[dict]:
        """What, beyond ``spec``'s files, a saved guest's state depends on here (the emulator,
        its version, the machine it makes of ``spec``, whose per-run paths and ports the
        caller has already replaced by fixed ones). None: this backend cannot save guests."""

    def host_threads(self, spec: MachineSpec, accel: str) -> int:
        """The host CPU slots a guest holds (core/cpuslots.py); 0 where it runs elsewhere."""

    def kvm_verdict(self) -> tuple[str, Path]:
        """What a remembered KVM probe verdict is keyed on, and the file that keeps it."""

    def kvm_precheck(self) -> tuple[bool, str]:
        """Cheap reasons KVM cannot work where this backend's machines run (before a probe
        machine is booted there); raises ``InfraError`` when it cannot even ask."""

    def machine(self, spec: MachineSpec, accel: str, timeouts: Timeouts, run: RunSpace) -> Machine:
        """A machine for ``spec`` (not started), recording its leftovers in ``run``."""

    @staticmethod
    def reap(record: dict, run_path: Path, same_boot: bool) -> None:
        """What a dead run left (its owner file: ``record``); ``same_boot``: whether its
        PIDs still mean anything. May raise; the caller logs and goes on."""
