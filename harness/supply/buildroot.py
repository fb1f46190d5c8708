"""Build roots: a minimal Debian tree per (suite, compiler) to run kbuild in.

Made once with mmdebstrap under ``settings.toolchains_dir/<suite>-<compiler>/``
when the host cannot build for a kernel (see ``toolchains``). Its packages are
the compiler and the runtime dependencies of the kernel's headers and
``linux-kbuild`` packages as the archive states them (``Kernel.kbuild_depends``),
plus make and libc6-dev. A build runs ``make`` in it under ``unshare --mount``
+ ``chroot``, with the kernel's cache tree (read-only) and the modules cache
bound at their *same* absolute paths (the headers' Makefile includes an
absolute path). The mounts live in a private mount namespace and vanish with
the process.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shlex
import time
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional, Sequence

from ..core import cacheentry, hostcmd, progress
from ..core.errors import InfraError
from ..core.settings import Settings
from . import apt, mmdebstrap
from .kernels.kernel import Kernel
from .mirror import debian_mirrors
from .toolchains import Toolchain

log = logging.getLogger(__name__)

TOOLCHAIN_FORMAT = 1    # bump when a build root is made differently
MANIFEST = "manifest.json"
# always in a build root: kbuild's driver and the C library headers
BUILDROOT_BASE = ("make", "libc6-dev")
# host apt settings a build root's mmdebstrap follows (it does not read the host's apt.conf.d):
# the same archive, through the same proxy, with the same view of Release file dates
FORWARDED_APT_OPTIONS = ("Acquire::Check-Valid-Until", "Acquire::Check-Date",
                         "Acquire::http::Proxy", "Acquire::https::Proxy")
_APT_CONFIG_LINE = re.compile(r'^(?P<key>[A-Za-z0-9:_.-]+) "(?P<value>[^"]*)";$')
_UNSHARE = ("unshare", "--mount", "--propagation", "private", "--fork")


def depends_packages(depends_fields: Iterable[str]) -> list[str]:
    """Package names a build root needs from Depends fields (of the headers and kbuild
    packages): the first alternative of each entry, minus kernel packages and libc6."""
    names: list[str] = []
    for field_text in depends_fields:
        for group in apt.parse_depends(field_text):
            if not group:
                continue
            name = group[0].name
            if name.startswith("linux-") or name == "libc6" or name in names:
                continue
            names.append(name)
    return names


def buildroot_packages(kernel_compiler: str, depends: Sequence[str]) -> list[str]:
    """What mmdebstrap installs into a build root for ``kernel_compiler``:
    the plain ``gcc-N`` (its ``CC``), what the archive says kbuild depends on,
    make and libc6-dev."""
    out = [kernel_compiler]
    for name in [*depends, *BUILDROOT_BASE]:
        if name not in out:
            out.append(name)
    return out


def forwarded_apt_options(dump: str) -> list[str]:
    """``apt-config dump`` output -> mmdebstrap ``--aptopt`` arguments for the forwarded keys."""
    wanted = {k.lower(): k for k in FORWARDED_APT_OPTIONS}
    out = []
    for line in dump.splitlines():
        m = _APT_CONFIG_LINE.match(line.strip())
        if m and m.group("key").lower() in wanted and m.group("value"):
            out.append(f'--aptopt={m.group("key")} "{m.group("value")}"')
    return out


def _host_apt_options(settings: Settings) -> list[str]:
    try:
        dump = hostcmd.run(["apt-config", "dump"], what="read the host's apt configuration",
                           timeout=settings.timeouts.host_command)
    except InfraError as exc:   # not a Debian-like host: nothing to follow
        log.debug("%s", exc)
        return []
    return forwarded_apt_options(dump)


def _load_buildroot(directory: Path) -> Optional[dict]:
    try:
        man = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if man.get("format") != TOOLCHAIN_FORMAT or not (directory / "root" / "usr/bin").is_dir():
        return None
    return man


def packages_for(tc: Toolchain, kernel: Kernel) -> list[str]:
    depends = kernel.kbuild_depends
    if depends is None:
        raise InfraError(f"{kernel.name} {kernel.version}: its cache entry records no Depends of "
                         f"its headers and kbuild packages, so the {tc.id} build root cannot be "
                         f"made; remove {kernel.cache_entry} and fetch the kernel again")
    return buildroot_packages(tc.cc, depends_packages(depends))


@dataclass(frozen=True)
class AddOn:
    """More in a build root than kbuild for modules needs (a whole kernel build and a
    livepatch builder): its own entry ``<suite>-<cc>-<name>``, with ``packages`` installed too
    and ``finish(tree)`` run on the new tree before it is published (it returns what the
    manifest records of it)."""
    name: str
    packages: tuple[str, ...]
    finish: Callable[[Path], dict[str, Any]]


def root_id(tc: Toolchain, addon: Optional[AddOn] = None) -> str:
    return f"{tc.id}-{addon.name}" if addon else tc.id


def entry_dir(tc: Toolchain, settings: Settings, addon: Optional[AddOn] = None) -> Path:
    """The build root's cache entry (its manifest beside ``root/``, the tree)."""
    return settings.toolchains_dir / root_id(tc, addon)


def ensure_buildroot(tc: Toolchain, kernel: Kernel, settings: Settings, addon: Optional[AddOn] = None) -> dict:
    """The build root for ``tc`` (made once with mmdebstrap; file-locked, atomic), with
    ``addon`` if given. Returns its manifest (``root``, ``cc_version``, ``packages``, ``seconds``)."""
    assert tc.kind == "buildroot" and tc.suite
    rid = root_id(tc, addon)
    final = entry_dir(tc, settings, addon)

    def make() -> None:
        if os.geteuid() != 0:
            raise InfraError(f"making the {rid} build root needs root (mmdebstrap, chroot); "
                             "run the first build as root")
        packages = packages_for(tc, kernel)
        packages += [p for p in (addon.packages if addon else ()) if p not in packages]
        with cacheentry.staging(settings.toolchains_dir, f".build-{rid}-", f"making the {rid} build root",
                                remove=lambda p: mmdebstrap.remove_tree(p, settings)) as work:
            seconds, version = _make(tc, rid, packages, work, settings, addon)
            cacheentry.publish(work / "out", final, trash=work / "previous")
        log.info("build root %s ready in %.0fs (%s)", rid, seconds, version)

    return cacheentry.obtain(lambda: _load_buildroot(final), make,
                             lock=settings.locks_dir / f"toolchain-{rid}.lock",
                             timeout=settings.timeouts.lock, what=f"build root {rid}")


def _make(tc: Toolchain, rid: str, packages: list[str], work: Path, settings: Settings,
          addon: Optional[AddOn] = None) -> tuple[float, str]:
    """The build root in ``work/out`` (its manifest written last); (seconds, compiler version)."""
    out = work / "out"
    out.mkdir(parents=True)
    tree = out / "root"
    log.info("making build root %s (once): mmdebstrap %s minbase with %s", rid,
             tc.suite, ", ".join(packages))
    t0 = time.monotonic()
    assert tc.suite is not None   # ensure_buildroot, the only caller, checked it
    # in a private mount namespace: whatever mmdebstrap mounts in the tree (proc, dev...)
    # vanishes with it, even when it is killed half-way
    cmd = [*_UNSHARE, *mmdebstrap.command(tc.suite, tree,
                                          debian_mirrors(settings.debian_mirror).archive,
                                          packages=packages,
                                          aptopts=_host_apt_options(settings))]
    with progress.ticking(f"build root {rid}: mmdebstrap", usually="~100 s on 2 cores"):
        hostcmd.run(cmd, what=f"make the {rid} build root", timeout=settings.timeouts.image_build,
                    env={**os.environ, "LC_ALL": "C.UTF-8"})
    extra = addon.finish(tree) if addon else {}
    seconds = time.monotonic() - t0
    version = hostcmd.run(["chroot", str(tree), tc.cc, "--version"],
                          what=f"{tc.cc} --version in {rid}",
                          timeout=settings.timeouts.host_command).splitlines()[0].strip()
    man = {"format": TOOLCHAIN_FORMAT, "id": rid, "suite": tc.suite, "cc": tc.cc,
           "cc_version": version, "packages": packages, "seconds": round(seconds, 1),
           "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra}
    (out / (MANIFEST + ".part")).write_text(json.dumps(man, indent=2) + "\n")
    os.rename(out / (MANIFEST + ".part"), out / MANIFEST)
    return seconds, version


def kernel_trees(kernel: Kernel) -> list[Path]:
    """The directories to expose to a build root for ``kernel``: its whole cache entry
    (headers, kbuild, the links between them); for a kernel outside the cache, its build
    directory and the source tree its ``source`` link points at (an O= build)."""
    if kernel.cache_entry is not None:
        return [kernel.cache_entry]
    trees = [kernel.build_dir.absolute()]
    for extra in (kernel.build_dir.resolve(), (kernel.build_dir / "source").resolve()):
        if extra.is_dir() and not any(extra == t or t in extra.parents for t in trees):
            trees.append(extra)
    return trees


def chroot_script(root: Path, binds: Sequence[tuple[Path, bool]], argv: Sequence[str],
                  setup: Sequence[str] = ()) -> str:
    """Shell run by ``unshare --mount``: private tmp/proc, ``binds`` (path, writable) at
    their own absolute paths inside ``root``, then ``argv`` under chroot with a clean env."""
    q = shlex.quote
    lines = ["set -e",
             f"mount -t tmpfs -o mode=1777,size=512m lab-tmp {q(str(root / 'tmp'))}",
             f"mount -t proc lab-proc {q(str(root / 'proc'))}"]
    for path, writable in binds:
        inside = q(str(root) + str(path))
        lines.append(f"mkdir -p {inside}")
        lines.append(f"mount --bind {q(str(path))} {inside}")
        if not writable:
            lines.append(f"mount -o remount,bind,ro {inside}")
    lines += list(setup)
    env = ["env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LC_ALL=C.UTF-8",
           "HOME=/tmp", "TMPDIR=/tmp"]
    lines.append("exec chroot " + q(str(root)) + " " + " ".join(q(a) for a in [*env, *argv]))
    return "\n".join(lines)


def run_in(tc: Toolchain, binds: Sequence[tuple[Path, bool]], argv: Sequence[str], *, what: str,
           settings: Settings, addon: Optional[AddOn] = None, timeout: Optional[float] = None,
           setup: Sequence[str] = ()) -> str:
    """Run ``argv`` in ``tc``'s build root (with ``addon``) with ``binds`` mounted; its output.
    ``setup``: more shell lines run before the chroot, in its private mount namespace."""
    root = entry_dir(tc, settings, addon) / "root"
    script = chroot_script(root, binds, argv, setup)
    try:
        return hostcmd.run([*_UNSHARE, "sh", "-c", script], what=what,
                           timeout=timeout or settings.timeouts.host_command)
    finally:
        left = mmdebstrap.mounts_under(root)
        if left:   # cannot happen with a private namespace; say so loudly if it does
            raise InfraError(f"mounts left behind in {root}: {', '.join(left)}")
