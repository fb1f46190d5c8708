"""The lab's storage pool on the libvirt host: content-addressed uploads (a second run
uploads nothing), and the per-run overlay volumes."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from ....core import atomic
from ....core.errors import DeadlineExceeded
from ....core.locks import file_lock
from ....core.settings import Settings, Timeouts
from ....supply.apt import sha256_file
from .connection import bindings, ignore_codes, within
from .errors import ERR_NO_STORAGE_POOL, ERR_NO_STORAGE_VOL
from .xmldefs import POOL_NAME, POOL_PATH, pool_xml, volume_xml

log = logging.getLogger(__name__)


def _digest(path: Path, settings: Settings) -> str:
    """sha256 of ``path``, remembered by (path, size, mtime, inode) under the cache."""
    st = path.stat()
    key = f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"
    memo_path = settings.libvirt_dir / "digests.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    if key in memo:
        return memo[key]
    memo[key] = sha256_file(path)
    atomic.write(memo_path, json.dumps(memo))   # a lost race only loses a memo entry
    return memo[key]


def ensure_pool(conn: Any) -> Any:
    """The lab's pool, defined, built and started if missing (same path on every host)."""
    lv = bindings()
    pool = find_pool(conn)
    if pool is None:
        log.info("libvirt: creating storage pool %s at %s", POOL_NAME, POOL_PATH)
        pool = conn.storagePoolDefineXML(pool_xml(), 0)
        pool.build(0)
        pool.setAutostart(1)
    _start(pool)
    try:
        pool.refresh(0)
    except lv.libvirtError as exc:
        if pool.isActive():   # another process's upload in flight; harmless
            log.debug("pool refresh: %s", exc)
        else:                 # its directory vanished under it, so libvirt stopped it
            _start(pool)
            pool.refresh(0)
    return pool


def _start(pool: Any) -> None:
    if not pool.isActive():
        pool.build(0)   # the directory may be gone (a cleaned host, a restored snapshot)
        pool.create(0)


def _section(fd: int, size: int) -> tuple[bool, int]:
    """(in data?, length) of the section at ``fd``'s offset: sparse upload's hole finder."""
    cur = os.lseek(fd, 0, os.SEEK_CUR)
    if cur >= size:
        return True, 0
    try:
        data = os.lseek(fd, cur, os.SEEK_DATA)
    except OSError:          # ENXIO: a hole up to the end
        data = size
    if data > cur:
        result = (False, data - cur)
    else:
        result = (True, os.lseek(fd, cur, os.SEEK_HOLE) - cur)
    os.lseek(fd, cur, os.SEEK_SET)
    return result


def _upload(conn: Any, vol: Any, path: Path, deadline: float, seconds: float) -> None:
    lv = bindings()
    size = path.stat().st_size
    stream = conn.newStream(0)
    vol.upload(stream, 0, size, lv.VIR_STORAGE_VOL_UPLOAD_SPARSE_STREAM)
    fd = os.open(path, os.O_RDONLY)
    try:
        def data(_stream: Any, nbytes: int, _opaque: Any) -> Any:
            if time.monotonic() > deadline:
                return -1     # sparseSendAll aborts the stream
            return os.read(fd, nbytes)

        def hole(_stream: Any, _opaque: Any) -> list:
            return list(_section(fd, size))

        def skip(_stream: Any, length: int, _opaque: Any) -> int:
            return os.lseek(fd, length, os.SEEK_CUR)
        try:
            stream.sparseSendAll(data, hole, skip, None)
        except RuntimeError:
            raise DeadlineExceeded(f"upload {path} into libvirt volume {vol.name()}", seconds) from None
        stream.finish()
    finally:
        os.close(fd)


def ensure_volume(conn: Any, pool: Any, path: Path, label: str, settings: Settings) -> Any:
    """``path``'s content as a pool volume named by its hash; uploaded only if missing.
    A ``.ok`` marker volume is made after the upload, so a half upload is never used."""
    name = f"{label}-{_digest(path, settings)[:20]}"
    missing = {ERR_NO_STORAGE_VOL}
    if ignore_codes(pool.storageVolLookupByName, missing, name + ".ok") is not None:
        return pool.storageVolLookupByName(name)
    stale = ignore_codes(pool.storageVolLookupByName, missing, name)
    if stale is not None:
        stale.delete(0)   # a dead process's half upload
    t = settings.timeouts.libvirt_upload
    log.info("libvirt: uploading %s (%d MiB) as volume %s", path.name, path.stat().st_size >> 20, name)
    vol = pool.createXML(volume_xml(name, path.stat().st_size, "raw"), 0)
    _upload(conn, vol, path, time.monotonic() + t, t)
    pool.createXML(volume_xml(name + ".ok", 0, "raw"), 0)
    return vol


def stage(conn: Any, uri: str, files: Sequence[tuple[Path, str]], settings: Settings) -> tuple[Any, list]:
    """The pool, and a volume for each (path, label) of ``files``: uploaded if missing,
    under a host-wide lock (xdist workers share the pool)."""
    lock = settings.locks_dir / f"libvirt-{hashlib.sha256(uri.encode()).hexdigest()[:12]}"
    with file_lock(lock, timeout=settings.timeouts.lock, what=f"libvirt pool on {uri}"):
        pool = ensure_pool(conn)
        return pool, [ensure_volume(conn, pool, path, label, settings) for path, label in files]


def create_overlay(pool: Any, name: str, capacity: int, backing: Any) -> Any:
    """A qcow2 volume on top of the ``backing`` volume (raw), which stays untouched."""
    return pool.createXML(volume_xml(name, capacity, "qcow2", backing=backing.path()), 0)


def delete_volumes(pool: Any, names: Sequence[str], timeouts: Timeouts) -> None:
    """Delete the named volumes that exist, each under a deadline."""
    for name in names:
        vol = ignore_codes(pool.storageVolLookupByName, {ERR_NO_STORAGE_VOL}, name)
        if vol is not None:
            within(timeouts.libvirt_call, f"libvirt: delete volume {name}", vol.delete, 0)


def find_pool(conn: Any) -> Optional[Any]:
    """The lab's pool if it exists on that host."""
    return ignore_codes(conn.storagePoolLookupByName, {ERR_NO_STORAGE_POOL}, POOL_NAME)
