"""QEMU as a process: a pure command-line builder and a process lifecycle.

The lifecycle depends on the QMP client, never the other way round. Stopping is
QMP ``quit`` with a deadline, then SIGTERM, then SIGKILL; the child also gets
a parent-death signal so a host process killed outright cannot orphan it.
"""
from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ...core.errors import DeadlineExceeded, InfraError, PortInUse
from ...core.settings import Timeouts
from ..console import ConsoleFollower
from ..qmp import QMPClient
from .base import MachineSpec

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class QemuConfig:
    spec: MachineSpec
    accel: str                  # "kvm" | "tcg"
    qmp_socket: Path
    binary: str = "qemu-system-x86_64"
    machine: str = "pc"
    # MTTCG ("multi") runs each vCPU on its own host thread, but its handling of
    # cross-modifying code races with the kernel's int3-based text patching
    # (text_poke_bp): a vCPU can execute a stale int3 -> "Oops: int3" (seen on 6.12
    # while a livepatch transition ran). "single" interleaves vCPUs on one thread.
    tcg_thread: str = "single"


def _opt(value: object) -> str:
    """A value inside a QEMU ``key=value,...`` option: commas are doubled."""
    return str(value).replace(",", ",,")


def build_command(cfg: QemuConfig) -> list[str]:
    """The full QEMU command line for ``cfg``. Pure: no I/O, unit-tested."""
    s = cfg.spec
    cmd = [cfg.binary, "-name", s.name, "-nodefaults", "-no-user-config",
           "-display", "none", "-no-reboot", "-M", cfg.machine]
    if cfg.accel == "kvm":
        cmd += ["-accel", "kvm", "-cpu", "host"]
    else:
        cmd += ["-accel", f"tcg,thread={cfg.tcg_thread}", "-cpu", "max"]
    cmd += ["-smp", str(s.cpus), "-m", str(s.memory_mib)]
    cmd += ["-kernel", str(s.kernel), "-append", s.append]
    if s.initrd is not None:
        cmd += ["-initrd", str(s.initrd)]
    cmd += ["-chardev", f"file,id=con0,path={_opt(s.console_log)}", "-serial", "chardev:con0",
            "-qmp", f"unix:{_opt(cfg.qmp_socket)},server=on,wait=off"]
    for i, disk in enumerate(s.disks):
        # The overlay is thrown away after the run: no host flushes needed.
        opts = [f"file={_opt(disk.path)}", "if=none", f"id=disk{i}", f"format={disk.format}",
                "cache=unsafe"]
        if disk.readonly:
            opts.append("readonly=on")
        cmd += ["-drive", ",".join(opts), "-device", f"virtio-blk-pci,drive=disk{i}"]
    if s.network:
        # restrict=on: the guest reaches nothing; only our loopback forwards reach it.
        net = ["user", "id=net0", "restrict=on"]
        net += [f"hostfwd=tcp:127.0.0.1:{f.host_port}-:{f.guest_port}" for f in s.forwards]
        cmd += ["-netdev", ",".join(net), "-device", "virtio-net-pci,netdev=net0"]
    if s.rng:
        cmd += ["-object", "rng-random,id=rng0,filename=/dev/urandom",
                "-device", "virtio-rng-pci,rng=rng0"]
    return cmd


_prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here, not in the forked child


def _child_setup() -> None:  # runs in the forked child, before exec
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class QemuMachine:
    """One QEMU process. Not thread-safe; create and destroy it from one thread
    (the parent-death signal fires when the *thread* that forked it exits)."""

    def __init__(self, cfg: QemuConfig, timeouts: Timeouts, log_path: Path):
        self.cfg, self.spec, self.accel = cfg, cfg.spec, cfg.accel
        self.timeouts = timeouts
        self.log_path = log_path
        self.console = ConsoleFollower(cfg.spec.console_log)
        self.qmp = QMPClient(cfg.qmp_socket)
        self.proc: Optional[subprocess.Popen] = None
        self.started_at: Optional[float] = None
        self.command = build_command(cfg)

    # lifecycle ------------------------------------------------------------
    def start(self) -> None:
        log.debug("qemu: %s", " ".join(self.command))
        with open(self.log_path, "wb") as out:
            try:
                self.proc = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=out,
                                             stderr=subprocess.STDOUT, start_new_session=True,
                                             preexec_fn=_child_setup)
            except FileNotFoundError:
                raise InfraError(f"{self.cfg.binary} not found: install qemu-system-x86 "
                                 "(see `livepatch-lab doctor`)") from None
        self.started_at = time.monotonic()
        self.console.start()
        try:
            self._connect_qmp()
        except BaseException:
            self.destroy()
            raise

    def _connect_qmp(self) -> None:
        deadline = time.monotonic() + self.timeouts.qmp
        while not self.cfg.qmp_socket.exists():
            if self.proc.poll() is not None:
                self._raise_early_exit()
            if time.monotonic() >= deadline:
                raise DeadlineExceeded("QEMU to open its QMP socket", self.timeouts.qmp,
                                       self.qemu_output())
            time.sleep(0.02)
        self.qmp.connect(timeout=max(0.5, deadline - time.monotonic()))

    def _raise_early_exit(self) -> None:
        out = self.qemu_output()
        if "Could not set up host forwarding rule" in out:
            raise PortInUse(f"QEMU could not bind its loopback forwards:\n{out}")
        raise InfraError(f"QEMU exited at start with status {self.proc.returncode}: "
                         f"{' '.join(self.command)}\n{out}")

    def qemu_output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace").strip()
        except OSError:
            return ""

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc else None

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_exit(self, timeout: float) -> bool:
        if self.proc is None:
            return True
        try:
            self.proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def exit_reason(self) -> str:
        for event in reversed(self.qmp.pending_events()):
            if event.get("event") == "SHUTDOWN":
                reason = event.get("data", {}).get("reason", "")
                return {"guest-shutdown": "poweroff", "guest-reset": "reset",
                        "guest-panic": "panic"}.get(reason, reason)
        if self.proc is not None and self.proc.poll() is not None:
            return f"exited {self.proc.returncode}"
        return ""

    def destroy(self) -> None:
        """QMP quit → SIGTERM → SIGKILL, each with a deadline; never raises."""
        try:
            if self.is_running():
                try:
                    self.qmp.execute("quit", timeout=self.timeouts.qmp)
                except Exception as exc:  # QMP gone or wedged: fall through to signals
                    log.debug("QMP quit failed: %s", exc)
                if not self.wait_exit(self.timeouts.kill):
                    self._signal(signal.SIGTERM)
                    if not self.wait_exit(self.timeouts.kill):
                        self._signal(signal.SIGKILL)
                        self.wait_exit(self.timeouts.kill)
        finally:
            self.qmp.pending_events()  # keep the SHUTDOWN reason for exit_reason()
            self.qmp.close()
            self.console.stop()

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def cpu_registers(self) -> str:
        """Every vCPU's registers (HMP ``info registers -a``): where a frozen guest is stuck."""
        return self.qmp.execute("human-monitor-command", {"command-line": "info registers -a"},
                                timeout=self.timeouts.qmp)

    def lab_ports(self) -> dict[int, int]:
        return {f.guest_port: f.host_port for f in self.spec.forwards}

    def describe(self) -> dict:
        return {"backend": "qemu", "accel": self.accel, "command": self.command,
                "pid": self.pid}
