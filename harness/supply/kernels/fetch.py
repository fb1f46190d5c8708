"""Fetching a kernel: resolve its definition against the archive, download, unpack, fix up.

``resolve`` turns a definition into one exact Debian package version,
``fetch`` downloads and unpacks it into the cache (``kernelcache``) and returns
the ``Kernel``: vmlinuz, a depmod'ed modules directory and a kbuild directory
(KDIR). Packages come through a private apt root (``apt``), verified against
the archive keyring; a cached kernel is returned with no network access at all.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Sequence

from ...core import cacheentry, hostcmd
from ...core.errors import ConfigError, HarnessError, InfraError
from ...core.settings import Settings
from .. import apt
from .kernel import Kernel
from .cache import cached, fetch_lock, kernel_from_manifest, version_dir, write_manifest
from .defs import KernelDef
from .select import Selection, select
from .tree import (bzimage_release, compiler_from_config, find_config, find_vmlinuz, module_compression,
                   relink_absolute, rewrite_makefiles, unify_modules_dir)
from .local import local_kernel

log = logging.getLogger(__name__)


def _select_from_archive(defn: KernelDef, settings: Settings, refresh: bool) -> Selection:
    root = apt.root_for(settings, defn.suites)
    apt.update(root, force=refresh)
    return select(defn, apt.packages(root, lambda n: n.startswith("linux-")))


def resolve(defn: KernelDef, settings: Settings, *, refresh: bool = False) -> tuple[str, str]:
    """(release, version) the definition means now, from the apt lists (updated if stale)."""
    if defn.kind == "local":
        return local_kernel(defn).release, "local"
    sel = _select_from_archive(defn, settings, refresh)
    return sel.release, sel.version


def check_pin(defn: KernelDef, settings: Settings) -> None:
    """Refuse a pinned version the archive does not list before anything runs: the
    ``ConfigError`` ``fetch`` would raise (naming the pin and the versions there are). A cached
    kernel of that version needs no look-up; else the one ``fetch`` makes (the kept apt lists,
    updated only when stale). A look-up that cannot answer is an ``InfraError`` saying so."""
    if defn.kind != "debian" or defn.pin is None or cached(defn, settings) is not None:
        return
    try:
        _select_from_archive(defn, settings, refresh=False)
    except ConfigError:
        raise
    except HarnessError as exc:
        raise InfraError(f"cannot check the pin {defn.pin_origin or defn.pin} against the archive: "
                         f"{exc}") from exc


def fetch(defn: KernelDef, settings: Settings, *, refresh: bool = False) -> Kernel:
    """A ready kernel for ``defn``: from the cache, else downloaded and unpacked.

    Without ``refresh`` a cached kernel is returned with no network access at all.
    With ``refresh`` the apt lists are updated and a newer version, if any, is
    fetched. One process per kernel name works at a time (file lock); the others
    wait and then find it cached.
    """
    if defn.kind == "local":
        return local_kernel(defn)

    def make() -> Kernel:
        sel = _select_from_archive(defn, settings, refresh)
        vdir = settings.kernels_dir / defn.name / version_dir(sel.version)
        return kernel_from_manifest(defn, vdir, settings) or _install(defn, settings, sel)

    return cacheentry.obtain(lambda: cached(defn, settings), make, lock=fetch_lock(settings, defn.name),
                             timeout=settings.timeouts.lock, what=f"fetching kernel {defn.name}",
                             force=refresh)


def _download_all(defn: KernelDef, settings: Settings, sel: Selection) -> list[apt.Deb]:
    root = apt.root_for(settings, defn.suites)
    debs = []
    for rec in sel.packages:
        target = settings.downloads_dir / apt.deb_name(rec.package, rec.version)
        if not target.exists():
            log.info("fetching %s %s (%.1f MB)", rec.package, rec.version, rec.size / 1e6)
        start = time.monotonic()
        deb = apt.download(root, rec.package, rec.version, settings.downloads_dir,
                           sha256=rec.sha256 or None, size=rec.size or None)
        log.debug("%s ready in %.1fs", deb.path.name, time.monotonic() - start)
        debs.append(deb)
    return debs


def _install(defn: KernelDef, settings: Settings, sel: Selection) -> Kernel:
    debs = _download_all(defn, settings, sel)
    kdir = settings.kernels_dir / defn.name
    final = kdir / version_dir(sel.version)
    # under the line's lock: every .extract-* here is a killed fetch's
    with cacheentry.staging(kdir, ".extract-", f"unpacking {defn.name} {sel.version}") as work:
        out = work / "out"
        out.mkdir()
        out.chmod(0o755)   # readable by an unprivileged QEMU, whatever the umask
        _unpack(defn, settings, sel, debs, out, final)
        cacheentry.publish(out, final, trash=work / "old")
    k = kernel_from_manifest(defn, final, settings)
    if k is None:
        raise InfraError(f"{final}: unpacked kernel failed its own completeness check")
    log.info("kernel %s %s (%s) ready in %s", defn.name, k.version, k.release, final)
    return k


def _unpack(defn: KernelDef, settings: Settings, sel: Selection, debs: Sequence[apt.Deb],
            tmp: Path, final: Path) -> None:
    release, t = sel.release, settings.timeouts
    root = tmp / "root"
    root.mkdir()
    start = time.monotonic()
    log.info("fetching %s: extracting %d packages", release, len(debs))
    for deb in debs:
        hostcmd.run(["dpkg", "-x", deb.path, root], what=f"extract {deb.path.name}",
                    timeout=t.host_command)
    log.info("extracted %s in %.1fs", release, time.monotonic() - start)

    modules_dir = unify_modules_dir(root, release)
    relinked = relink_absolute(root)
    headers_dirs = sorted((root / "usr/src").glob("linux-headers-*"))
    rewritten = rewrite_makefiles(headers_dirs, final / "root")
    build_dir = root / "usr/src" / f"linux-headers-{release}"
    if not (build_dir / "Makefile").is_file():
        raise InfraError(f"{build_dir}: no Makefile; the headers package layout is unexpected")
    log.debug("%s: %d links made relative, Makefiles rewritten: %s", release, relinked,
              [str(p.relative_to(root)) for p in rewritten])

    vmlinuz = find_vmlinuz(root, modules_dir, release)
    if vmlinuz is None:
        raise InfraError(f"no vmlinuz for {release} in {root} (looked in boot/ and {modules_dir})")
    if vmlinuz.parent == modules_dir:
        # 7.x ships it inside the modules dir; moved out, it stays off the guest's modules disk
        (root / "boot").mkdir(exist_ok=True)
        moved = root / "boot" / f"vmlinuz-{release}"
        os.rename(vmlinuz, moved)
        vmlinuz = moved
    announced = bzimage_release(vmlinuz)
    if announced is not None and announced != release:
        raise InfraError(f"{vmlinuz} announces release {announced}, expected {release}")
    config = find_config(root, modules_dir, release)

    log.info("fetching %s: depmod", release)
    start = time.monotonic()
    hostcmd.run(["depmod", "-b", root, release], what=f"depmod {release}", timeout=t.host_command)
    if not (modules_dir / "modules.dep").is_file():
        raise InfraError(f"depmod wrote no {modules_dir / 'modules.dep'}")
    log.info("depmod %s in %.1fs", release, time.monotonic() - start)

    compiler = sel.compiler or compiler_from_config(config)
    from_config = compiler_from_config(config)
    if sel.compiler and from_config and from_config != sel.compiler:
        log.warning("%s: headers depend on %s but the config says %s", release, sel.compiler,
                    from_config)

    write_manifest(defn, sel, debs, tmp, final,
                   {"vmlinuz": vmlinuz, "modules_dir": modules_dir, "build_dir": build_dir,
                    "config": config},
                   compiler=compiler, module_compression=module_compression(modules_dir))
