"""QEMU as a process: its lifecycle, and how it ended.

The lifecycle depends on the QMP client, never the other way round. Stopping is
QMP ``quit`` with a deadline, then SIGTERM, then SIGKILL; the child also gets
a parent-death signal so a host process killed outright cannot orphan it.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Optional

from ....core.errors import DeadlineExceeded, HarnessError, InfraError, PortInUse
from ....core.settings import Timeouts
from ...console import ConsoleFollower
from ...qmp import QMPClient, QMPError
from .. import hosttrouble
from ..base import MachineExit, Recorder
from ..child import die_with_parent
from .command import NETDEV_ID, QemuConfig, build_command, migrate_uri
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
        self.link_up = True           # the guest's network cable, as the lab last set it
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
            if self.spec.incoming is not None:
                self._wait_incoming()
        except BaseException:
            self.destroy()
            raise

    def _connect_qmp(self) -> None:
        assert self.proc is not None   # start() made it before calling this
        deadline = time.monotonic() + self.timeouts.qmp
        while not self.cfg.qmp_socket.exists():
            if self.proc.poll() is not None:
                self._raise_early_exit()
            if time.monotonic() >= deadline:
                raise DeadlineExceeded("QEMU to open its QMP socket", self.timeouts.qmp,
                                       self.qemu_output())
            time.sleep(0.02)
        self.qmp.connect(timeout=max(0.5, deadline - time.monotonic()))

    def _wait_incoming(self) -> None:
        """Until QEMU has read the saved state and the guest runs again. A guest saved stopped
        (``save`` stops it first) is resumed "paused": then it is continued here."""
        assert self.proc is not None   # start() made it before calling this
        deadline = time.monotonic() + self.timeouts.snapshot
        while True:
            try:
                status = self.qmp.execute("query-status", timeout=self.timeouts.qmp)["status"]
                if status == "running":
                    return
                if status == "paused":
                    self.qmp.execute("cont", timeout=self.timeouts.qmp)
                    continue
            except QMPError:   # QEMU refused the state: it exits, closing QMP
                self.wait_exit(self.timeouts.kill)
            if self.proc.poll() is not None:
                raise InfraError(f"QEMU could not resume the saved guest {self.spec.incoming} "
                                 f"(exit status {self.proc.returncode}):\n{self.qemu_output()}")
            if time.monotonic() >= deadline:
                raise DeadlineExceeded(f"QEMU to resume the saved guest {self.spec.incoming}",
                                       self.timeouts.snapshot, self.qemu_output())
            time.sleep(0.02)

    def save(self, state: Path, root_disk: Path) -> None:
        """Stop the guest, migrate it into ``state``, copy its root overlay as the migration
        left it (flushed) to ``root_disk``, and continue it."""
        qmp, t = self.qmp, self.timeouts
        qmp.execute("stop", timeout=t.qmp)
        try:
            # the default cap is 32 MiB/s: a stopped guest's state may as well go at disk speed
            qmp.execute("migrate-set-parameters", {"max-bandwidth": 2**40}, timeout=t.qmp)
            qmp.execute("migrate", {"uri": migrate_uri(state)}, timeout=t.qmp)
            deadline = time.monotonic() + t.snapshot
            while (info := qmp.execute("query-migrate", timeout=t.qmp)).get("status") != "completed":
                if info.get("status") in ("failed", "cancelled"):
                    raise InfraError(f"QEMU could not save the guest: {info.get('error-desc', info)}")
                if time.monotonic() >= deadline:
                    qmp.execute("migrate_cancel", timeout=t.qmp)
                    raise DeadlineExceeded("QEMU to save the guest's state", t.snapshot, str(info))
                time.sleep(0.02)
            shutil.copyfile(self.spec.disks[0].path, root_disk)
        finally:
            qmp.execute("cont", timeout=t.qmp)   # after a migration, also takes the disks back

    def _raise_early_exit(self) -> None:
        assert self.proc is not None   # only _connect_qmp calls this, after start() made it
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

    def host_pid(self) -> Optional[int]:
        """This host's QEMU process (hostcpu.py reads what the host's CPUs did for it)."""
        return self.pid

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
        assert self.proc is not None   # only destroy() calls this, on a running QEMU
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def cpu_registers(self) -> str:
        """Every vCPU's registers (HMP ``info registers -a``): where a frozen guest is stuck."""
        return self.qmp.execute("human-monitor-command", {"command-line": "info registers -a"},
                                timeout=self.timeouts.qmp)

    def host_trouble(self) -> str:
        """A pause on a host I/O error (``query-status``: io-error, and the disk from QEMU's
        ``BLOCK_IO_ERROR`` event), or the network cable pulled. QEMU 7.2 reports no link state
        (not in ``info network``, ``query-rx-filter`` nor a QOM property), but it serves one
        QMP client, the lab, so the lab's own record of ``set_link`` is the link's state."""
        if not self.is_running():
            return ""
        try:
            status = self.qmp.execute("query-status", timeout=self.timeouts.qmp) or {}
        except HarnessError as exc:   # a wedged QEMU: nothing to say
            log.debug("query-status: %s", exc)
            status = {}
        if status.get("status") == "io-error":
            return hosttrouble.from_block_events(self.qmp.events, {
                f"disk{i}": d.path for i, d in enumerate(self.spec.disks)})
        if not self.link_up:
            return hosttrouble.link_cut("QMP set_link off")
        return ""

    def set_link(self, up: bool) -> None:
        self.qmp.execute("set_link", {"name": NETDEV_ID, "up": up}, timeout=self.timeouts.qmp)
        self.link_up = up

    def lab_ports(self) -> dict[int, int]:
        return {f.guest_port: f.host_port for f in self.spec.forwards}

    def describe(self) -> dict:
        out = {"backend": "qemu", "accel": self.accel, "command": self.command, "pid": self.pid}
        if self.accel == "tcg":
            out["tcg_thread"] = "single" if self.cfg.icount is not None else self.cfg.tcg_thread
            if self.cfg.icount is not None:
                out["icount"] = self.cfg.icount
        return out
