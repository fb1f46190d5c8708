"""Per-run scratch directories, and reaping what dead runs left behind.

Every guest gets a run directory under the cache (overlay, console, QEMU log)
and a short socket directory under /tmp (AF_UNIX paths are limited to 107
bytes, cache paths can be longer). Both go away when the run ends. A run
killed outright cannot clean up after itself; the next run reaps it: its
owner file names the PID that made it, and its backend records there what
it started (a QEMU's PID, a libvirt domain and volumes), for that backend's
reaper.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ..core import atomic
from . import backends
from .host import boot_id

log = logging.getLogger(__name__)

OWNER = "owner.json"


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
        sock_dir = Path(tempfile.mkdtemp(prefix="lab-"))   # 0700: QMP commands QEMU
        run = cls(run_id, path, sock_dir)
        run._write_owner()
        return run

    def _write_owner(self) -> None:
        data = {"pid": os.getpid(), "boot_id": boot_id(), "sock_dir": str(self.sock_dir),
                **self.extra}
        atomic.write(self.path / OWNER, json.dumps(data))

    def record(self, backend: str, **items: object) -> None:
        """Note in the owner file what a dead run would leave, for ``backend``'s reaper
        (e.g. ``record("qemu", qemu_pid=1234)``)."""
        self.extra.update(items, backend=backend)
        self._write_owner()

    def remove(self) -> None:
        shutil.rmtree(self.sock_dir, ignore_errors=True)
        shutil.rmtree(self.path, ignore_errors=True)


def _is_our_sock_dir(sock_dir: object) -> bool:
    """Only a directory ``RunDir.create`` could have made: ``<tempdir>/lab-*``."""
    if not isinstance(sock_dir, str) or not sock_dir:
        return False
    path = Path(sock_dir)
    return path.parent == Path(tempfile.gettempdir()) and path.name.startswith("lab-")


def reap_stale(runs_dir: Path) -> int:
    """Remove run directories whose owner process is gone, after their backend's reaper
    cleaned what they started."""
    if not runs_dir.is_dir():
        return 0
    reaped = 0
    boot = boot_id()
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
        try:
            backends.reap(data, path, same_boot)
        except Exception as exc:  # the reaper never stops a new run
            log.warning("could not clean what the dead run %s left (%s backend): %s", path.name,
                        data.get("backend"), exc)
        if _is_our_sock_dir(data.get("sock_dir")):
            shutil.rmtree(data["sock_dir"], ignore_errors=True)
        shutil.rmtree(path, ignore_errors=True)
        reaped += 1
    if reaped:
        log.info("removed %d run director%s left by dead runs", reaped, "y" if reaped == 1 else "ies")
    return reaped
