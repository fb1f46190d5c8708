"""What the cache holds, and what a prune may remove.

The cache only grows: ``fetch --refresh`` adds a kernel version beside the old
one, an edited guest file or recipe adds an image, each kernel release its boot
files and built modules, each kernel x image x machine a saved guest. A prune
keeps, per kernel line, the version the lab would use now (the pinned one, else
the newest cached), and everything derived from it; for the image recipes it
knows, the current build; saved guests of those, used in the last
``SNAPSHOT_IDLE_DAYS`` (a snapshot's key also covers the QEMU and the lab's
command line, which a survey cannot recompute: one they made obsolete is
simply never used again). Whatever it cannot
attribute (toolchains, apt lists, locks, images of recipes it was not shown) is
kept. Kernel lines with no definition here keep their newest version too: a
cache may be shared by several checkouts with their own ``kernels/``.

Entries are renamed out of sight before they are deleted, so a reader never
sees half a kernel or image; run a prune when no run is in progress on an older
kernel version.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence

from ..core import cacheentry, diskspace
from ..core.locks import file_lock
from ..core.settings import Settings
from . import apt, vmlinux
from .kernels import cache as kernelcache
from .images import image_dir
from .kernels.kernel import Kernel
from .kernels.cache import MANIFEST
from .kernels.defs import KernelDef
from .recipes import Recipe

log = logging.getLogger(__name__)

# Every store the lab writes under the cache directory, in the order shown.
STORES = ("kernels", "downloads", "bootfiles", "vmlinux", "modules", "symbols", "sources", "source-builds", "images",
          "snapshots", "toolchains", "apt", "runs", "libvirt", "locks")
SNAPSHOT_IDLE_DAYS = 14


@dataclass(frozen=True)
class Entry:
    store: str
    path: Path
    size: int
    keep: bool
    why: str


def size_of(path: Path) -> int:
    """Bytes on disk: sparse files count what they use, hard links count once."""
    seen: set[tuple[int, int]] = set()
    total = _blocks(path, seen)
    if path.is_dir() and not path.is_symlink():
        for top, dirs, files in os.walk(path):
            total += sum(_blocks(Path(top) / n, seen) for n in dirs + files)
    return total


def _blocks(p: Path, seen: set[tuple[int, int]]) -> int:
    try:
        st = p.lstat()
    except OSError:
        return 0
    if (st.st_dev, st.st_ino) in seen:
        return 0
    seen.add((st.st_dev, st.st_ino))
    return st.st_blocks * 512


def kept_kernels(settings: Settings, defs: Mapping[str, KernelDef]) -> list[Kernel]:
    """Per kernel line in the cache or in ``defs``, the kernel the lab would use now."""
    kdir = settings.kernels_dir
    names = sorted({*defs, *(p.name for p in _children(kdir) if p.is_dir())})
    found = []
    for name in names:
        defn = defs.get(name) or _definition_from_cache(kdir / name)
        k = kernelcache.cached(defn, settings) if defn else None
        if k is not None:
            found.append(k)
    return found


def _definition_from_cache(line_dir: Path) -> Optional[KernelDef]:
    """What a cached line's manifests say of its definition, for lines not defined here
    (``kernelcache.cached`` then picks its newest complete version)."""
    for vdir in _children(line_dir):
        try:
            m = json.loads((vdir / MANIFEST).read_text())
            return KernelDef(name=m["name"], kind="debian", source=vdir / MANIFEST,
                             series=m["series"], flavour=m["flavour"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


def _children(d: Path) -> list[Path]:
    """Entries of ``d`` except in-progress work (dot names: extracts, temporaries)."""
    try:
        return sorted(p for p in d.iterdir() if not p.name.startswith("."))
    except OSError:
        return []


def survey(settings: Settings, defs: Mapping[str, KernelDef],
           recipes: Sequence[Recipe] = ()) -> list[Entry]:
    """Every top-level entry of every store, with whether a prune keeps it and why."""
    kept = kept_kernels(settings, defs)
    by_line = {k.name: k for k in kept}
    releases = {k.release for k in kept}
    debs = {apt.deb_name(p.name, p.version) for k in kept for p in k.packages}
    out: list[Entry] = []

    def add(store: str, path: Path, keep: bool, why: str) -> None:
        out.append(Entry(store, path, size_of(path), keep, why))

    for line in _children(settings.kernels_dir):
        k = by_line.get(line.name)
        for vdir in _children(line):
            current = k is not None and vdir.name == kernelcache.version_dir(k.version)
            add("kernels", vdir, current,
                f"{line.name} {vdir.name}: " + ("in use" if current else
                                               f"not in use ({k.version} is)" if k else
                                               "no usable kernel of this line (incomplete, moved, "
                                               "or not its pin)"))

    for deb in _children(settings.downloads_dir):
        if not deb.name.endswith(".deb"):
            add("downloads", deb, True, "not a package")
        else:
            add("downloads", deb, deb.name in debs, "a package of a kernel in use"
                if deb.name in debs else "a package of no kernel in use")

    boot_keys = _boot_keys(kept)
    for d in _children(settings.bootfiles_dir):
        add("bootfiles", d, d.name in boot_keys,
            "boot files of a kernel in use" if d.name in boot_keys else
            "built for another kernel or an older initramfs")

    digests = {vmlinux.cache_key(Path(k.vmlinuz).read_bytes()) for k in kept}
    for f in _children(settings.vmlinux_dir):
        stem = f.name.split(".", 1)[0]
        add("vmlinux", f, stem in digests,
            "of a kernel in use" if stem in digests else "of no kernel in use")

    for d in _children(settings.built_modules_dir):
        add("modules", d, d.name in releases,
            f"built for {d.name}" + ("" if d.name in releases else ", no kernel in use"))

    symbol_files = {settings.symbols_file(k).name for k in kept}
    for f in _children(settings.symbols_dir):
        add("symbols", f, f.name in symbol_files,
            "of a kernel in use" if f.name in symbol_files else "of no kernel in use")

    for line in _children(settings.kernel_sources_dir):    # selftests and samples, per kernel version
        k = by_line.get(line.name)
        for vdir in _children(line):
            current = k is not None and vdir.name == kernelcache.version_dir(k.version)
            add("sources", vdir, current, f"{line.name} {vdir.name}: the kernel's selftests and samples"
                + ("" if current else ", of no kernel in use"))

    for line in _children(settings.source_builds_dir):     # source trees built once for source diffs
        k = by_line.get(line.name)
        for vdir in _children(line):
            current = k is not None and vdir.name == kernelcache.version_dir(k.version)
            add("source-builds", vdir, current, f"{line.name} {vdir.name}: the kernel's source and original "
                "build, for source diffs" + ("" if current else ", of no kernel in use"))

    current_images = {image_dir(r, settings).name for r in recipes}
    known = {r.name for r in recipes}
    for d in _children(settings.images_dir):
        recipe = d.name.rsplit("-", 1)[0]
        keep = d.name in current_images or recipe not in known
        add("images", d, keep, "the current build of its recipe" if d.name in current_images else
            "an older build of its recipe" if not keep else "a recipe not shown here")

    builds = {r.name: image_dir(r, settings).name for r in recipes}
    for d in _children(settings.snapshots_dir):
        add("snapshots", d, *_snapshot_verdict(d, by_line, builds))
    for d in _stale_work(settings.snapshots_dir):
        add("snapshots", d, False, "left by a save or a removal that died")

    for store, where in (("toolchains", settings.toolchains_dir), ("apt", settings.apt_dir),
                         ("runs", settings.runs_dir), ("libvirt", settings.libvirt_dir),
                         ("locks", settings.locks_dir)):
        for p in _children(where):
            add(store, p, True, "kept" if store != "runs" else "a run's directory (reaped "
                "by the next run when its owner is gone)")
    return out


def _stale_work(d: Path, age: float = 3600) -> list[Path]:
    """Hidden work directories (``.new-*``, ``.trash-*``) untouched for ``age`` seconds: a save
    takes seconds, so these were left by a process that died."""
    try:
        return sorted(p for p in d.iterdir() if p.name.startswith((".new-", ".trash-"))
                      and time.time() - p.stat().st_mtime > age)
    except OSError:
        return []


def _snapshot_verdict(d: Path, by_line: Mapping[str, Kernel], builds: Mapping[str, str]) -> tuple[bool, str]:
    """Whether a saved guest is of a kernel and an image in use, and used lately."""
    try:
        meta = json.loads((d / "meta.json").read_text())
        used = (d / "meta.json").stat().st_mtime
        k, img = meta["kernel"], meta["image"]
        label = f"{k['name']} {k['version']}, image {img['name']} {img['digest'][:12]}"
    except (OSError, ValueError, KeyError, TypeError):
        return False, "incomplete (no usable meta.json): never restored"
    kernel = by_line.get(k["name"])
    if kernel is None or kernel.version != k["version"]:
        return False, f"{label}: not of the kernel in use" + (f" ({kernel.version} is)" if kernel else "")
    if img["name"] in builds and builds[img["name"]] != f"{img['name']}-{img['digest'][:12]}":
        return False, f"{label}: of an older build of its image"
    idle = (time.time() - used) / 86400
    if idle > SNAPSHOT_IDLE_DAYS:
        return False, f"{label}: not restored for {idle:.0f} days (another QEMU or lab made it obsolete?)"
    return True, f"{label}: restored or made {idle:.1f} days ago"


def _boot_keys(ks: Iterable[Kernel]) -> set[str]:
    from .bootfiles import INITRAMFS_INIT, cache_key
    init = INITRAMFS_INIT.read_bytes()
    return {cache_key(k.release, Path(k.modules_dir), init) for k in ks}


def prune(entries: Sequence[Entry], settings: Settings) -> tuple[int, int]:
    """Remove the entries a prune does not keep; returns (count, bytes).

    Each goes under its store's lock where it has one (a kernel line's fetch
    lock), renamed to a hidden name first so nothing ever reads half of it.
    """
    count = size = 0
    for e in entries:
        if e.keep:
            continue
        if e.store == "kernels":
            with file_lock(kernelcache.fetch_lock(settings, e.path.parent.name), timeout=settings.timeouts.lock,
                           what=f"kernel {e.path.parent.name} (pruning)"):
                cacheentry.discard(e.path)
        else:
            cacheentry.discard(e.path)
        log.info("removed %s (%s)", e.path, e.why)
        count += 1
        size += e.size
    return count, size


def totals(entries: Sequence[Entry]) -> list[tuple[str, int, int, int]]:
    """Per store: (store, entries, bytes, bytes a prune would free), in STORES order."""
    rows = []
    for store in STORES:
        mine = [e for e in entries if e.store == store]
        if mine:
            rows.append((store, len(mine), sum(e.size for e in mine),
                         sum(e.size for e in mine if not e.keep)))
    return rows


human = diskspace.human   # sizes as the CLI prints them
