"""Per-run scratch directories, and reaping what dead runs left behind.

Every guest gets a run directory under the cache (overlay, console, QEMU log)
and a short socket directory under /tmp (AF_UNIX paths are limited to 107
bytes, cache paths can be longer). Both go away when the run ends. A run
killed outright cannot clean up after itself; the next run reaps it: its
owner file names the PID that made it and the QEMU it started.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..core import atomic

log = logging.getLogger(__name__)

OWNER = "owner.json"


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A killed owner stays a zombie until its parent (in a container, often a lax init)
    # reaps it; it holds nothing, so its run is stale.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2:][:1] != "Z"


@dataclass
class RunDir:
    id: str
    path: Path
    sock_dir: Path
    extra: dict = field(default_factory=dict)   # what the backend started, for the reaper

    @classmethod
    def create(cls, runs_dir: Path, label: str) -> "RunDir":
        runs_dir.mkdir(parents=True, exist_ok=True)
        run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{label}-{uuid.uuid4().hex[:6]}"
        path = runs_dir / run_id
        path.mkdir()
        sock_dir = Path(tempfile.mkdtemp(prefix="lab-"))
        run = cls(run_id, path, sock_dir)
        run._write_owner()
        return run

    def _write_owner(self) -> None:
        data = {"pid": os.getpid(), "boot_id": _boot_id(), "sock_dir": str(self.sock_dir),
                "qemu_pid": None, **self.extra}
        atomic.write(self.path / OWNER, json.dumps(data))

    def record_qemu(self, pid: Optional[int]) -> None:
        self.record(qemu_pid=pid)

    def record(self, **items: object) -> None:
        """Note in the owner file what a dead run would leave (e.g. ``libvirt={...}``)."""
        self.extra.update(items)
        self._write_owner()

    def remove(self) -> None:
        shutil.rmtree(self.sock_dir, ignore_errors=True)
        shutil.rmtree(self.path, ignore_errors=True)


def _is_our_qemu(pid: int, run_path: Path) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return str(run_path).encode() in cmdline


def _is_our_sock_dir(sock_dir: object) -> bool:
    """Only a directory ``RunDir.create`` could have made: ``<tempdir>/lab-*``."""
    if not isinstance(sock_dir, str) or not sock_dir:
        return False
    path = Path(sock_dir)
    return path.parent == Path(tempfile.gettempdir()) and path.name.startswith("lab-")


def _reap_libvirt(record: dict, path: Path) -> None:
    """A dead run's libvirt domain and overlay volumes (see backends/libvirt.py)."""
    try:
        from ..core.settings import Timeouts
        from .backends.libvirt import reap
        reap(record, Timeouts())
    except Exception as exc:  # the reaper never stops a new run
        log.warning("could not clean libvirt leftovers of %s (%s): %s", path.name,
                    record.get("uri"), exc)


def reap_stale(runs_dir: Path) -> int:
    """Remove run directories whose owner process is gone; kill their QEMU if still up."""
    if not runs_dir.is_dir():
        return 0
    reaped = 0
    boot = _boot_id()
    for path in runs_dir.iterdir():
        owner = path / OWNER
        try:
            data = json.loads(owner.read_text())
        except FileNotFoundError:
            # no owner file: a half-created dir; only reap it once it is clearly old
            if path.is_dir() and time.time() - path.stat().st_mtime > 3600:
                shutil.rmtree(path, ignore_errors=True)
                reaped += 1
            continue
        except (OSError, ValueError):
            continue
        same_boot = data.get("boot_id") == boot
        if same_boot and _alive(int(data.get("pid", 0))):
            continue
        qemu = data.get("qemu_pid")
        if same_boot and qemu and _is_our_qemu(int(qemu), path):
            log.warning("killing QEMU %s left behind by a dead run (%s)", qemu, path.name)
            try:
                os.kill(int(qemu), signal.SIGKILL)
            except ProcessLookupError:
                pass
        if isinstance(data.get("libvirt"), dict):
            _reap_libvirt(data["libvirt"], path)
        if _is_our_sock_dir(data.get("sock_dir")):
            shutil.rmtree(data["sock_dir"], ignore_errors=True)
        shutil.rmtree(path, ignore_errors=True)
        reaped += 1
    if reaped:
        log.info("removed %d run director%s left by dead runs", reaped, "y" if reaped == 1 else "ies")
    return reaped
