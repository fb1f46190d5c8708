"""Saved guests, ready for the workload: boot once per set of boot inputs, restore copies after.

A snapshot is a directory ``<cache>/snapshots/<kernel>-<key[:16]>/``:

- ``state``: the machine's state (QEMU: a migration stream), taken once the guest
  answered SSH and the lab's connection was closed, before anything run-specific;
- ``disk.qcow2``: the guest's root disk as it was then (its overlay on the base image),
  read-only; each restored copy writes to its own overlay on it;
- ``console.log``: the boot's console, which a restored guest's console continues;
- ``meta.json``: what it was made of, for people and ``livepatch-lab cache``. Its mtime
  says when the snapshot was last used.

The key hashes everything the saved state depends on (``key_parts``): the kernel, the
initramfs, the modules disk, the image, the accelerator, the guest's size and command
line, and the backend's own part (QEMU: binary and version, the machine it makes). A
change to any of them makes a new key, so a stale snapshot is never restored.

A snapshot is written into a hidden directory and renamed into place whole, by the one
process that holds its lock; another process that finds the lock taken boots as usual
without waiting. A directory without ``meta.json`` is never used.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from ..core import atomic, cacheentry
from ..core.locks import file_lock, try_file_lock
from ..core.settings import Settings

log = logging.getLogger(__name__)

FORMAT = 1          # bump when what a snapshot holds, or when it is taken, changes
META, STATE, DISK, CONSOLE = "meta.json", "state", "disk.qcow2", "console.log"


@dataclass(frozen=True)
class Snapshot:
    key: str
    path: Path

    @property
    def state(self) -> Path:
        return self.path / STATE

    @property
    def disk(self) -> Path:
        return self.path / DISK

    @property
    def console(self) -> Path:
        return self.path / CONSOLE

    def meta(self) -> dict:
        return json.loads((self.path / META).read_text())


# the key ---------------------------------------------------------------------------------
def file_identity(path: Path) -> list:
    """Where a file is and which version of it: path, size, mtime. The lab's cache files are
    never rewritten in place (a new build is a new name), so this stands for their content."""
    st = Path(path).stat()
    return [str(Path(path).resolve()), st.st_size, st.st_mtime_ns]


@functools.lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_digest(path: Path) -> str:
    """sha256 of a file, remembered per (path, size, mtime) for this process."""
    ident = file_identity(path)
    return _sha256(*ident)


def key_parts(kernel: Any, image: Any, spec_files: dict[str, Path], accel: str,
              machine: dict, backend: dict) -> dict:
    """Everything a saved guest's state depends on. ``spec_files``: the files the machine
    is made of (kernel image, initramfs, modules disk); ``machine``: the guest's settings
    (memory, vCPUs, command line); ``backend``: ``Backend.snapshot_identity``."""
    return {"format": FORMAT,
            "kernel": {"name": kernel.name, "release": kernel.release, "version": kernel.version,
                       "vmlinuz": file_digest(kernel.vmlinuz)},
            "image": {"name": image.name, "digest": image.digest, "base": file_identity(image.path)},
            "files": {name: file_identity(p) for name, p in sorted(spec_files.items())},
            "accel": accel, "machine": machine, "backend": backend}


def key_of(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


# the store -------------------------------------------------------------------------------
class Store:
    def __init__(self, settings: Settings):
        self.root = settings.snapshots_dir
        self.locks = settings.locks_dir
        self.lock_timeout = settings.timeouts.lock

    def _dir(self, key: str, label: str) -> Path:
        return self.root / f"{label}-{key[:16]}"

    def _lock(self, key: str) -> Path:
        return self.locks / f"snapshot-{key[:16]}.lock"

    def find(self, key: str, label: str) -> Optional[Snapshot]:
        """The complete snapshot for ``key``, or None; marks it used."""
        path = self._dir(key, label)
        try:
            meta = json.loads((path / META).read_text())
        except (OSError, ValueError):
            return None
        if meta.get("key") != key or not all((path / n).is_file() for n in (STATE, DISK, CONSOLE)):
            return None
        try:
            os.utime(path / META)   # last used: what `livepatch-lab cache` ages snapshots by
        except OSError:
            pass
        return Snapshot(key, path)

    def create(self, key: str, label: str, meta: dict,
               write: Callable[[Path], dict]) -> Optional[Snapshot]:
        """Make the snapshot for ``key``: ``write(directory)`` fills a hidden directory with
        ``state``, ``disk.qcow2`` and ``console.log`` and returns more for ``meta.json``; the
        directory is then renamed into place. None, at once, if another process is making it;
        the existing one if it appeared meanwhile. What ``write`` raises propagates, and
        nothing of the attempt stays behind."""
        final = self._dir(key, label)
        with try_file_lock(self._lock(key)) as mine:
            if not mine:
                log.info("another process is saving this guest (%s); not saving it twice", final.name)
                return None
            found = self.find(key, label)
            if found is not None:
                return found
            self.root.mkdir(parents=True, exist_ok=True)
            for stale in self.root.glob(f".new-{final.name}-*"):   # a dead process's, under our lock
                shutil.rmtree(stale, ignore_errors=True)
            # mkdtemp's 0700 stays with the snapshot: its state is the guest's memory (with the
            # guest's SSH host key)
            work = Path(tempfile.mkdtemp(dir=self.root, prefix=f".new-{final.name}-"))
            try:
                extra = write(work)
                (work / DISK).chmod(0o444)   # restored copies only ever read it
                atomic.write(work / META, json.dumps({**meta, **extra, "key": key, "format": FORMAT,
                                                      "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
                                                     indent=2, default=str) + "\n")
                if final.exists():   # an incomplete leftover (no meta.json): never used
                    cacheentry.discard(final)
                os.rename(work, final)
            except BaseException:
                shutil.rmtree(work, ignore_errors=True)
                raise
        return Snapshot(key, final)

    def discard(self, snapshot: Snapshot, why: str) -> None:
        """Remove a snapshot that failed to restore, so the next boot takes a new one. Guests
        restored from it keep running: their QEMU holds its files open."""
        log.warning("discarding snapshot %s: %s", snapshot.path.name, why)
        with file_lock(self._lock(snapshot.key), timeout=self.lock_timeout,
                       what=f"snapshot {snapshot.path.name}"):
            cacheentry.discard(snapshot.path)
