"""The kernel cache: where fetched kernels live and the manifest that describes each.

Layout: ``settings.kernels_dir/<name>/<version>/{manifest.json, root/}``; the
.debs stay in ``settings.downloads_dir`` so a re-extract needs no download. A
version directory appears atomically (renamed into place with its manifest),
so a directory with a manifest is complete. The manifest is the only thing
read back: it becomes a ``Kernel`` carrying everything later steps need.

The manifest's format number stays 1 and new keys are only ever added: the
cache is shared with older checkouts, which ignore keys they do not know but
would re-fetch a kernel whose format they do not. An entry written before the
packages' Depends were recorded gets them from its own .debs the first time it
is read (logged once, written back).
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Optional, Sequence, cast

from ...core import atomic, hostcmd
from ...core.errors import ConfigError, InfraError
from ...core.settings import Settings
from .. import apt, debversion
from .kernel import Kernel, PackageRef
from .defs import KernelDef
from .select import Selection
from .local import local_kernel

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
PATH_KEYS = ("vmlinuz", "modules_dir", "build_dir", "config")


def version_dir(version: str) -> str:
    """A package version as a directory name (``1:6.1-1`` -> ``1%3a6.1-1``)."""
    return version.replace(":", "%3a").replace("/", "_")


def fetch_lock(settings: Settings, name: str) -> Path:
    """The lock a kernel line's fetches, unpacks and prunes take turns under."""
    return settings.locks_dir / f"kernel-{name}.lock"


def write_manifest(defn: KernelDef, sel: Selection, debs: Sequence[apt.Deb], tmp: Path, final: Path,
                   paths: dict[str, Optional[Path]], *, compiler: Optional[str],
                   module_compression: str) -> None:
    """Describe the kernel unpacked in ``tmp`` (to be renamed to ``final``); written last,
    its presence is what marks the directory complete. ``paths``: PATH_KEYS -> files in tmp."""
    depends = {r.package: r.depends for r in sel.packages}
    manifest = {
        "format": MANIFEST_FORMAT, "name": defn.name, "kind": "debian",
        "series": defn.series, "flavour": defn.flavour, "suites": list(defn.suites),
        "version": sel.version, "abi": sel.abi, "release": sel.release, "compiler": compiler,
        "module_compression": module_compression,
        "location": str(final.absolute()),
        "paths": {k: str(cast(Path, paths[k]).relative_to(tmp)) if paths.get(k) else None for k in PATH_KEYS},
        "packages": [{"name": d.package, "version": d.version, "sha256": d.sha256,
                      "size": d.size, "file": d.path.name, "depends": depends.get(d.package, "")}
                     for d in debs],
        "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    part = tmp / (MANIFEST + ".part")
    part.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(part, tmp / MANIFEST)


def _deb_depends(deb: Path, settings: Settings) -> str:
    if not deb.is_file():
        raise InfraError(f"{deb} is gone")
    return hostcmd.run(["dpkg-deb", "--field", deb, "Depends"], what=f"read {deb.name}'s Depends",
                       timeout=settings.timeouts.host_command).strip()


def _with_depends(m: dict[str, Any], vdir: Path, settings: Settings) -> dict[str, Any]:
    """``m`` with every package's Depends: read from the kept .debs for an entry from
    before they were recorded, and written back so that this happens once."""
    packages = m.get("packages", [])
    if all("depends" in p for p in packages):
        return m
    try:
        filled = [{**p, "depends": p["depends"] if "depends" in p
                   else _deb_depends(settings.downloads_dir / p["file"], settings)} for p in packages]
    except (KeyError, InfraError) as exc:
        log.warning("cached %s %s records no package Depends and its .debs cannot say (%s); "
                    "a build root for it cannot be made until it is fetched again (remove %s)",
                    m.get("name"), m.get("version"), str(exc).splitlines()[0], vdir)
        return m
    log.info("cached %s %s predates recorded package Depends: read them from its .debs and "
             "added them to %s", m.get("name"), m.get("version"), vdir / MANIFEST)
    m = {**m, "packages": filled}
    try:
        atomic.write(vdir / MANIFEST, json.dumps(m, indent=2) + "\n")
    except OSError as exc:    # e.g. a read-only cache: read them again next time
        log.warning("could not update %s: %s", vdir / MANIFEST, exc)
    return m


def kernel_from_manifest(defn: KernelDef, vdir: Path, settings: Settings) -> Optional[Kernel]:
    """The kernel in ``vdir`` if it is complete, belongs to ``defn`` and sits where it was built."""
    try:
        m = json.loads((vdir / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if (m.get("format") != MANIFEST_FORMAT or m.get("name") != defn.name or m.get("kind") != "debian"
            or m.get("series") != defn.series or m.get("flavour") != defn.flavour):
        return None
    if m.get("location") != str(vdir.absolute()):
        # the headers' Makefile holds an absolute path: a moved cache needs a re-extract
        log.info("cached %s %s was unpacked at %s; ignoring it", defn.name, m.get("version"),
                 m.get("location"))
        return None
    paths = {k: vdir / v if v else None for k, v in m.get("paths", {}).items()}
    if not all(paths.get(k) and cast(Path, paths[k]).exists() for k in ("vmlinuz", "modules_dir", "build_dir")):
        return None
    found = cast("dict[str, Path]", paths)   # the three read below are set: checked just above
    if not (found["modules_dir"] / "modules.dep").is_file():
        return None
    m = _with_depends(m, vdir, settings)
    return Kernel(name=defn.name, release=m["release"], version=m["version"],
                  vmlinuz=found["vmlinuz"], modules_dir=found["modules_dir"],
                  build_dir=found["build_dir"], config=paths.get("config"),
                  compiler=m.get("compiler"),
                  packages=tuple(PackageRef(p["name"], p["version"], p["sha256"], p.get("depends"))
                                 for p in m.get("packages", [])),
                  module_compression=m.get("module_compression", "none"),
                  suites=tuple(m.get("suites") or ()), cache_entry=vdir)


def cached(defn: KernelDef, settings: Settings) -> Optional[Kernel]:
    """The newest complete cached kernel for ``defn`` (and its pin). Never touches the network."""
    if defn.kind == "local":
        try:
            return local_kernel(defn)
        except ConfigError:
            return None
    kdir = settings.kernels_dir / defn.name
    if not kdir.is_dir():
        return None
    found = []
    for vdir in kdir.iterdir():
        if vdir.name.startswith(".") or not vdir.is_dir():
            continue
        k = kernel_from_manifest(defn, vdir, settings)
        if k is not None and (defn.pin is None or k.version == defn.pin):
            found.append(k)
    return max(found, key=lambda k: debversion.key(k.version)) if found else None
