"""QEMU as a process: its lifecycle, and how it ended.

The lifecycle depends on the QMP client, never the other way round. Stopping is
QMP ``quit`` with a deadline, then SIGTERM, then SIGKILL; the child also gets
a parent-death signal so a host process killed outright cannot orphan it.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Optional

from ....core.errors import DeadlineExceeded, InfraError, PortInUse
from ....core.settings import Timeouts
from ...console import ConsoleFollower
from ...qmp import QMPClient
from ..base import MachineExit, Recorder
from ..child import die_with_parent
from .command import QemuConfig, build_command
from .exits import classify

log = logging.getLogger(__name__)


class QemuMachine:
    """One QEMU process. Not thread-safe; create and destroy it from one thread
    (the parent-death signal fires when the *thread* that forked it exits)."""

    def __init__(self, cfg: QemuConfig, timeouts: Timeouts, log_path: Path,
                 record: Recorder = lambda **_items: None):
        self.cfg, self.spec, self.accel = cfg, cfg.spec, cfg.accel
        self.timeouts = timeouts
        self.log_path = log_path
        self.record = record          # the reaper's note: which QEMU a dead run left
        self.stopped_by = ""          # how destroy() ended a running QEMU, if it did
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
                                             preexec_fn=die_with_parent)
            except FileNotFoundError:
                raise InfraError(f"{self.cfg.binary} not found: install qemu-system-x86 "
                                 "(see `livepatch-lab doctor`)") from None
        self.started_at = time.monotonic()
        self.console.start()
        try:
            self.record(qemu_pid=self.proc.pid)
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

    def exit_info(self) -> MachineExit:
        """Who ended QEMU: its SHUTDOWN event's cause, else its exit status."""
        if self.proc is None:
            return classify(None, ())
        return classify(self.proc.poll(), self.qmp.pending_events(), self.stopped_by)

    def exit_reason(self) -> str:
        return self.exit_info().detail

    def destroy(self) -> None:
        """QMP quit → SIGTERM → SIGKILL, each with a deadline; never raises."""
        try:
            if self.is_running():
                self.stopped_by = "QMP quit"
                try:
                    self.qmp.execute("quit", timeout=self.timeouts.qmp)
                except Exception as exc:  # QMP gone or wedged: fall through to signals
                    log.debug("QMP quit failed: %s", exc)
                if not self.wait_exit(self.timeouts.kill):
                    self._signal(signal.SIGTERM)
                    self.stopped_by = "SIGTERM"
                    if not self.wait_exit(self.timeouts.kill):
                        self._signal(signal.SIGKILL)
                        self.stopped_by = "SIGKILL"
                        self.wait_exit(self.timeouts.kill)
        finally:
            self.qmp.pending_events()  # keep the SHUTDOWN event for exit_info()
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
        out = {"backend": "qemu", "accel": self.accel, "command": self.command, "pid": self.pid}
        if self.accel == "tcg":
            out["tcg_thread"] = self.cfg.tcg_thread
        return out
