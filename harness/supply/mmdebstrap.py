"""Debian trees made with mmdebstrap (guest images, build roots), and their removal.

Both image builds and build roots run mmdebstrap the same way: as root, one
suite, Debian's main component, documentation left out. A killed mmdebstrap
can leave proc, dev and the like mounted in its tree; ``remove_tree`` unmounts
them first and never deletes across a mount point.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path
from typing import Optional, Sequence

from ..core import hostcmd
from ..core.errors import InfraError
from ..core.settings import Settings

log = logging.getLogger(__name__)

DPKG_EXCLUDES = ("/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*",
                 "/usr/share/doc/*", "/usr/share/lintian/*")
DPKG_INCLUDES = ("/usr/share/doc/*/copyright",)


def command(suite: str, tree: Path, mirror: str, *, variant: str = "minbase",
            packages: Sequence[str] = (), aptopts: Sequence[str] = (), debs: Sequence[Path] = (),
            hook_dirs: Sequence[str] = ()) -> list[str]:
    """The mmdebstrap command line making ``tree`` from ``suite`` at ``mirror``.
    ``aptopts``: extra ``--aptopt=...`` arguments; ``debs``: .deb files installed too (each
    its own --include: a path is never split; a hook dir must make them visible in the tree)."""
    cmd = ["mmdebstrap", "--mode=root", f"--variant={variant}", "--components=main",
           "--aptopt=Acquire::Languages \"none\""]
    if packages:
        cmd.append("--include=" + ",".join(packages))
    cmd += [f"--include={Path(d).absolute()}" for d in debs]
    cmd += [f"--hook-dir={h}" for h in hook_dirs]
    cmd += list(aptopts)
    cmd += [f"--dpkgopt=path-exclude={p}" for p in DPKG_EXCLUDES]
    cmd += [f"--dpkgopt=path-include={p}" for p in DPKG_INCLUDES]
    return cmd + [suite, str(tree), mirror]


def read_mountinfo() -> str:
    try:
        return Path("/proc/self/mountinfo").read_text()
    except OSError:
        return ""


def mounts_under(path: Path, mountinfo: Optional[str] = None) -> list[str]:
    """Mount points at or below ``path`` in this process's mount namespace."""
    if mountinfo is None:
        mountinfo = read_mountinfo()
    base = os.path.realpath(path)
    points = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4:
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
            if point == base or point.startswith(base + "/"):
                points.append(point)
    return points


def remove_tree(path: Path, settings: Settings) -> None:
    """Remove a build directory, first unmounting what a killed mmdebstrap left mounted in it.
    Never deletes across a mount point: if one stays, it raises instead."""
    if not (path.exists() or path.is_symlink()):
        return
    for point in sorted(mounts_under(path), key=len, reverse=True):
        try:
            hostcmd.run(["umount", "-l", point], what="unmount a dead build's mount",
                        timeout=settings.timeouts.host_command)
        except InfraError as exc:
            log.warning("%s", exc)
    left = mounts_under(path)
    if left:
        raise InfraError(f"cannot remove {path}: still mounted below it: {', '.join(left)}")
    shutil.rmtree(path)
