"""The QEMU backend: QEMU as the lab's own child process, on this host.

The root disk's overlay is a local qcow2 file in the run directory; KVM is
probed here, and the verdict holds for this host's boot and this QEMU binary;
a dead run's QEMU is found by the PID its run recorded.
"""
from __future__ import annotations

import functools
import logging
import os
import shutil
import signal
from pathlib import Path
from typing import Optional

from ....core import hostcmd
from ....core.errors import HarnessError
from ....core.settings import Settings, Timeouts
from ....supply import images
from ...host import boot_id, kvm_device_usable
from ...snapshots import file_identity
from ..base import Disk, MachineSpec, RunSpace
from .command import QemuConfig, build_command, parse_version, tcg_thread
from .machine import QemuMachine

log = logging.getLogger(__name__)


def _is_our_qemu(pid: int, run_path: Path) -> bool:
    """``pid`` is still the QEMU of that run: its command line names the run directory."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return str(run_path).encode() in cmdline


@functools.lru_cache(maxsize=None)
def _qemu_version(binary: str, size: int, mtime_ns: int, timeout: float) -> str:
    """``binary --version``'s first line (memoised per binary file: an upgrade is a new key)."""
    out = hostcmd.run([binary, "--version"], what="ask QEMU its version", timeout=timeout)
    return out.strip().splitlines()[0] if out.strip() else ""


def binary_version(binary: str, timeout: float) -> tuple[list, str]:
    """The file ``binary`` runs (found on PATH) as [path, size, mtime], and the first line of
    its ``--version``, asked once per binary file: snapshot identities, TCG threading, doctor
    and the sign-off report all read this one answer."""
    path = shutil.which(binary) or binary
    ident = file_identity(Path(path))
    return ident, _qemu_version(path, ident[1], ident[2], timeout)


def qemu_version(binary: str) -> Optional[tuple[int, int, int]]:
    """What ``binary --version`` says; None if it says nothing usable or does not run
    (starting it will say why)."""
    try:
        return parse_version(binary_version(binary, Timeouts().host_command)[1])
    except (HarnessError, OSError) as exc:
        log.debug("no QEMU version from %s: %s", binary, exc)
        return None


class QemuBackend:
    name = "qemu"

    def __init__(self, settings: Settings):
        self.settings = settings

    def root_disk(self, image: images.Image, run: RunSpace, over: Optional[Path] = None) -> Disk:
        return Disk(images.create_overlay(image, run.path / "root.qcow2", self.settings, over=over),
                    "qcow2")

    def snapshot_identity(self, spec: MachineSpec, accel: str) -> Optional[dict]:
        """The QEMU binary (path, size, mtime), its version and the command line it gets.
        The saved state holds no disk, console or socket path, and the host forwards are
        configuration, not state: QEMU's user networking takes new ones after a restore."""
        ident, version = binary_version(self.settings.qemu_binary, self.settings.timeouts.host_command)
        command = build_command(QemuConfig(spec, accel, Path("qmp.sock"), binary=self.settings.qemu_binary,
                                           tcg_thread=self._thread(accel), icount=self._icount(accel)))
        return {"qemu": version, "binary": ident, "command": command[1:]}

    def host_threads(self, spec: MachineSpec, accel: str) -> int:
        """Host threads the guest's vCPUs run on: one under single-threaded TCG, else one each."""
        return 1 if accel == "tcg" and self._thread(accel) == "single" else spec.cpus

    def _thread(self, accel: str) -> str:
        if accel != "tcg" or self._icount(accel) is not None:   # icount needs single-threaded TCG
            return "single"
        return tcg_thread(self.settings.tcg_thread, qemu_version(self.settings.qemu_binary))

    def _icount(self, accel: str) -> Optional[int]:
        return self.settings.tcg_icount if accel == "tcg" else None

    def kvm_verdict(self) -> tuple[str, Path]:
        return f"{boot_id() or 'unknown'}:{self.settings.qemu_binary}", \
            self.settings.cache_dir / "kvm-probe.json"

    def kvm_precheck(self) -> tuple[bool, str]:
        return kvm_device_usable()

    def machine(self, spec: MachineSpec, accel: str, timeouts: Timeouts, run: RunSpace) -> QemuMachine:
        qmp_sock = run.sock_dir / "qmp.sock"
        qmp_sock.unlink(missing_ok=True)   # a port-clash retry's predecessor
        return QemuMachine(QemuConfig(spec, accel, qmp_sock, binary=self.settings.qemu_binary,
                                      tcg_thread=self._thread(accel), icount=self._icount(accel)),
                           timeouts, run.path / "qemu.log",
                           record=lambda **items: run.record(self.name, **items))

    @staticmethod
    def reap(record: dict, run_path: Path, same_boot: bool) -> None:
        """Kill the QEMU a dead run left running (its parent-death signal normally has)."""
        pid = record.get("qemu_pid")
        if not (same_boot and isinstance(pid, int) and _is_our_qemu(pid, run_path)):
            return
        log.warning("killing QEMU %s left behind by a dead run (%s)", pid, run_path.name)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
