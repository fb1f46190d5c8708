"""Source packages from a ``deb-src`` apt root: the signed Sources index read, one file of a
source package fetched by apt's own downloader and checked against the index's sha256.

apt verifies the Release file against the archive keyring and the Sources index against
the Release file's hash when it updates the root; the hash of each file of a source package
comes from that index, so a file that matches it is as trusted as a .deb ``apt-get download``
fetched. (``apt-get source`` would fetch every file of the package, and fail on a mirror
that carries only some; the lab needs only the upstream tarball.)
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from ..core import diskspace, hostcmd, retry
from ..core.errors import InfraError
from . import apt, aptlists, mirror


@dataclass(frozen=True)
class SourceFile:
    """One file of a source package, as the signed Sources index lists it."""
    name: str
    sha256: str
    size: int
    url: str


@dataclass(frozen=True)
class SourceRecord:
    package: str
    version: str
    files: tuple[SourceFile, ...]


def parse_sources(text: str, base: str, want: Callable[[str], bool] = lambda _: True) -> Iterator[SourceRecord]:
    """Records of a Sources index whose package passes ``want``; file URLs under ``base``."""
    for stanza in re.split(r"\n\s*\n", text):
        f = aptlists.field_map(stanza.strip("\n"))
        if "Package" not in f or not want(f["Package"]) or "Version" not in f:
            continue
        files = []
        for line in f.get("Checksums-Sha256", "").splitlines():
            parts = line.split()
            if len(parts) == 3:
                files.append(SourceFile(parts[2], parts[0], int(parts[1]),
                                        f"{base.rstrip('/')}/{f.get('Directory', '')}/{parts[2]}"))
        yield SourceRecord(f["Package"], f["Version"], tuple(files))


def sources(root: apt.AptRoot, want: Callable[[str], bool] = lambda _: True) -> list[SourceRecord]:
    """Every source package version in a ``deb-src`` root's lists that passes ``want``."""
    base = mirror.debian_mirrors(root.settings.debian_mirror).archive
    return aptlists.read_lists(root.lists, root.lock, root.settings, "Sources",
                               lambda text: parse_sources(text, base, want))


def download_source_file(root: apt.AptRoot, f: SourceFile, dest: Path) -> Path:
    """``f`` at ``dest``, fetched by apt's own downloader (the host's proxies) and checked
    against the sha256 of the signed index; reused when already there and matching."""
    if dest.exists() and apt.sha256_file(dest) == f.sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part-{os.getpid()}")
    try:
        with diskspace.guard(dest.parent, f"downloading {f.name}"):
            for attempt in retry.download_policy():
                with attempt:
                    hostcmd.run(["/usr/lib/apt/apt-helper", *root.options(), "download-file", f.url, str(tmp),
                                 f"SHA256:{f.sha256}"], env=apt.env(), what=f"download {f.name}",
                                timeout=root.settings.timeouts.download)
        if apt.sha256_file(tmp) != f.sha256:    # apt-helper checked it; a second look costs little
            raise InfraError(f"{f.name}: sha256 does not match the archive's {f.sha256}")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest
