"""The one way a cache entry is filled: look, lock, look again, make, look once more.

Every store of the cache (kernels, boot files, images, build roots, modules, kernel
sources, PVH kernels) is shared by xdist workers and by separate lab processes. An
entry is complete only when its loader accepts it; it is made in a staging directory
next to it, on the same file system, and renamed into place, so a reader never sees
half of one and a build killed midway leaves only a staging directory that the next
maker removes.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Optional, TypeVar

from . import diskspace
from .errors import InfraError
from .locks import file_lock

T = TypeVar("T")


def remove_path(path: Path) -> None:
    """Remove a file or a directory tree, whichever ``path`` is; nothing if it is gone."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def discard(path: Path) -> None:
    """Remove a published entry where readers may look: a directory is first renamed out of
    sight (into a hidden ``.trash-`` directory beside it), then deleted, so nobody finds half
    of it; a file is unlinked (that is atomic already). Nothing if it is gone."""
    if not path.exists() and not path.is_symlink():
        return
    if path.is_dir() and not path.is_symlink():
        trash = Path(tempfile.mkdtemp(dir=path.parent, prefix=".trash-"))
        os.rename(path, trash / path.name)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        path.unlink()


def obtain(load: Callable[[], Optional[T]], make: Callable[[], Optional[T]], *, lock: Path,
           timeout: float, what: str, force: bool = False) -> T:
    """The entry ``load`` finds, else the one ``make`` puts in place under ``lock``.

    The first look takes no lock, so a warm cache costs one read. The second, under
    the lock, finds what another process made while this one waited. ``make`` may
    return the entry; if it returns None the entry is loaded from disk, and a make
    that left nothing complete is the lab's error. ``force`` skips both looks
    (a rebuild on request), never the last one.
    """
    if not force:
        found = load()
        if found is not None:
            return found
    with file_lock(lock, timeout=timeout, what=what):
        if not force:
            found = load()
            if found is not None:
                return found
        made = make()
    if made is not None:
        return made
    found = load()
    if found is None:
        raise InfraError(f"{what}: the cache entry is incomplete right after it was made")
    return found


@contextlib.contextmanager
def staging(parent: Path, prefix: str, what: str, *,
            remove: Callable[[Path], None] = remove_path) -> Iterator[Path]:
    """A fresh directory ``parent/<prefix><unique>`` to make an entry in, removed when
    the block ends however it ends. Left-overs of killed makers with the same prefix
    go first (call it under the entry's lock: nobody else is making it). Running out
    of space inside is one ``DiskFull`` naming ``parent`` and ``what``."""
    parent.mkdir(parents=True, exist_ok=True)
    for stale in parent.glob(f"{prefix}*"):
        remove(stale)
    work = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
    try:
        with diskspace.guard(parent, what):
            yield work
    finally:
        remove(work)


def publish(made: Path, final: Path, *, remove: Callable[[Path], None] = remove_path,
            trash: Optional[Path] = None) -> None:
    """Put ``made`` in place as ``final``, replacing an incomplete or outdated entry.
    The old entry is moved into ``trash`` (a path inside the staging directory, so it
    goes with it) when given, else removed before the rename."""
    if final.exists() or final.is_symlink():
        if trash is not None:
            os.rename(final, trash)
        else:
            remove(final)
    os.rename(made, final)
