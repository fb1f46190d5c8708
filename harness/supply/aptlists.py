"""Reading a private apt root's lists: its index files (any compression apt stores), their
stanzas, and the records a parser makes of them, once per (package, version).

``apt`` reads the ``Packages`` indexes, ``aptsources`` the ``Sources`` ones; both through
``read_lists``, under the root's lock.
"""
from __future__ import annotations

import bz2
import gzip
import lzma
import re
from pathlib import Path
from typing import Callable, Iterator, Protocol, TypeVar

from ..core import hostcmd
from ..core.errors import InfraError
from ..core.locks import file_lock
from ..core.settings import Settings


def read_index(path: Path, settings: Settings) -> str:
    name = path.name
    if name.endswith(".gz"):
        return gzip.decompress(path.read_bytes()).decode("utf-8", "replace")
    if name.endswith(".xz"):
        return lzma.decompress(path.read_bytes()).decode("utf-8", "replace")
    if name.endswith(".bz2"):
        return bz2.decompress(path.read_bytes()).decode("utf-8", "replace")
    if name.endswith((".lz4", ".zst")):
        # no stdlib decoder: apt's own helper knows every format apt stores
        return hostcmd.run(["/usr/lib/apt/apt-helper", "cat-file", path], what="apt-helper cat-file",
                           timeout=settings.timeouts.host_command)
    return path.read_text("utf-8", "replace")


def index_files(lists: Path, kind: str = "Packages") -> list[Path]:
    """The ``Packages`` (or ``Sources``) indexes in a root's ``lists`` directory (it holds
    nothing else of ours)."""
    if not lists.is_dir():
        return []
    return sorted(p for p in lists.iterdir()
                  if re.search(rf"_{kind}(\.(gz|xz|bz2|lz4|zst))?$", p.name))


def field_map(stanza: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    last = None
    for line in stanza.splitlines():
        if line[:1] in (" ", "\t"):
            if last:
                fields[last] += "\n" + line.strip()
            continue
        key, sep, value = line.partition(":")
        if sep:
            last = key.strip()
            fields[last] = value.strip()
    return fields


class _Record(Protocol):
    @property
    def package(self) -> str: ...
    @property
    def version(self) -> str: ...


R = TypeVar("R", bound=_Record)


def read_lists(lists: Path, lock: Path, settings: Settings, kind: str,
               parse: Callable[[str], Iterator[R]]) -> list[R]:
    """The records ``parse`` reads from each ``kind`` index (``Packages``, ``Sources``) in a
    root's ``lists`` directory, one per (package, version).

    Does not update: call ``apt.update`` first. Takes the root's ``lock`` so that it
    never reads lists half replaced by another process's update.
    """
    seen: dict[tuple[str, str], R] = {}
    with file_lock(lock, timeout=settings.timeouts.lock, what=f"apt lists {lists.parent.name}"):
        files = index_files(lists, kind)
        if not files:
            label = "package" if kind == "Packages" else kind.lower().rstrip("s")
            raise InfraError(f"apt root {lists.parent} has no {label} lists; run an update first")
        for path in files:
            for rec in parse(read_index(path, settings)):
                seen.setdefault((rec.package, rec.version), rec)
    return list(seen.values())
