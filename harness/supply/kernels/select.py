"""Which packages make a kernel: a definition + the archive's records -> a ``Selection``.

Pure: the records come from ``apt.packages``. Debian packaging, as found in
the archive: up to 6.12 a kernel is ``linux-image-<abi>-<flavour>-unsigned``
(vmlinuz in /boot, modules in /lib/modules/<release>); sid's 7.x splits it into
``linux-binary-unsigned-<abi>-<flavour>`` (vmlinuz.unsigned inside
/usr/lib/modules/<release>), ``linux-modules-<abi>-<flavour>`` and
``linux-base-<abi>-<flavour>`` (config, System.map). Both are handled. The
headers come from ``linux-headers-<release>`` plus whatever ``linux-headers-*``,
``linux-kbuild-*``, ``linux-base-*``, ``linux-modules-*`` it depends on.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional, Sequence

from .. import apt, debversion
from .defs import KernelDef

EXCLUDED_ABI_TOKENS = frozenset({"cloud", "rt"})   # other kernel variants, not the generic one
# Depends followed when collecting the headers' closure ("linux-base" alone is a tools package)
_FOLLOW = re.compile(r"^linux-(headers|kbuild|base|modules)-")
_COMPILER_DEP = (re.compile(r"^linux-compiler-(?P<cc>(gcc|clang)-\d+)-"),   # 5.10, 6.1
                 re.compile(r"^(?P<cc>(gcc|clang)-\d+)(-for-host)?$"))      # 6.12, 7.x


@dataclass(frozen=True)
class Selection:
    abi: str
    flavour: str
    version: str
    packages: tuple[apt.PackageRecord, ...]   # kernel binary first, then modules, headers...
    compiler: Optional[str]

    @property
    def release(self) -> str:
        return f"{self.abi}-{self.flavour}"


def in_series(version: str, series: str) -> bool:
    """``6.1.192-2`` is in series ``6.1`` (not ``6.12``); ``7.2.13-1`` is in ``7``."""
    try:
        upstream = debversion.parse(version)[1]
    except ValueError:
        return False
    return upstream == series or (upstream.startswith(series) and upstream[len(series)] in ".~+-")


def _abi_key(abi: str) -> Any:
    try:
        return debversion.key(abi)
    except ValueError:
        return (0, (), ())


def image_candidates(defn: KernelDef, records: Iterable[apt.PackageRecord]
                     ) -> list[tuple[str, apt.PackageRecord]]:
    """(abi, record) of every generic unsigned kernel binary of the definition's series."""
    flav = re.escape(defn.flavour)
    patterns = (re.compile(rf"^linux-image-(?P<abi>.+)-{flav}-unsigned$"),
                re.compile(rf"^linux-binary-unsigned-(?P<abi>.+)-{flav}$"))
    found = []
    for rec in records:
        m = patterns[0].match(rec.package) or patterns[1].match(rec.package)
        if not m:
            continue
        abi = m.group("abi")
        if EXCLUDED_ABI_TOKENS & set(abi.split("-")):
            continue
        if defn.series and in_series(rec.version, defn.series):
            found.append((abi, rec))
    return found


def _versions_text(versions: Iterable[str]) -> str:
    ordered = sorted(set(versions), key=debversion.key, reverse=True)
    return ", ".join(ordered) if ordered else "none"


def _newest(by_name: Mapping[str, list[apt.PackageRecord]], rel: apt.Relation
            ) -> Optional[apt.PackageRecord]:
    ok = [r for r in by_name.get(rel.name, []) if rel.satisfied_by(r.version)]
    return max(ok, key=lambda r: debversion.key(r.version)) if ok else None


def compiler_from_depends(records: Iterable[apt.PackageRecord]) -> Optional[str]:
    """``linux-compiler-gcc-12-x86`` or ``gcc-14`` / ``gcc-16-for-host`` -> ``gcc-N``."""
    for rec in records:
        for group in apt.parse_depends(rec.depends):
            for rel in group:
                for pattern in _COMPILER_DEP:
                    m = pattern.match(rel.name)
                    if m:
                        return m.group("cc")
    return None


def select(defn: KernelDef, records: Sequence[apt.PackageRecord]) -> Selection:
    """The newest (or pinned) kernel of ``defn`` and every package it needs."""
    where = ", ".join(defn.suites) or "the archive"
    cands = image_candidates(defn, records)
    if defn.pin:
        pinned = [c for c in cands if c[1].version == defn.pin]
        if not pinned:
            raise defn.error(f"pin {defn.pin} is not in {where}; available {defn.series} versions "
                             f"({defn.flavour}): {_versions_text(r.version for _, r in cands)}",
                             "pin")
        cands = pinned
    if not cands:
        raise defn.error(f"no {defn.flavour} kernel of series {defn.series} in {where}", "series")
    abi, image = max(cands, key=lambda c: (debversion.key(c[1].version), _abi_key(c[0])))
    version, release = image.version, f"{abi}-{defn.flavour}"

    by_name: dict[str, list[apt.PackageRecord]] = {}
    for rec in records:
        by_name.setdefault(rec.package, []).append(rec)

    def exact(name: str) -> apt.PackageRecord:
        rec = _newest(by_name, apt.Relation(name, "=", version))
        if rec is None:
            have = _versions_text(r.version for r in by_name.get(name, []))
            raise defn.error(f"{name}={version} is not in {where} (available: {have})",
                             "pin" if defn.pin else "suites")
        return rec

    chosen: dict[str, apt.PackageRecord] = {image.package: image}
    if image.package.startswith("linux-binary-"):
        # split packaging: the modules are not a dependency of the binary
        chosen[f"linux-modules-{release}"] = exact(f"linux-modules-{release}")
    headers = exact(f"linux-headers-{release}")
    chosen[headers.package] = headers
    queue = list(chosen.values())
    while queue:
        rec = queue.pop(0)
        for group in apt.parse_depends(rec.depends):
            rel = next((r for r in group if _FOLLOW.match(r.name)), None)
            if rel is None:
                continue
            if rel.name in chosen:
                if not rel.satisfied_by(chosen[rel.name].version):
                    raise defn.error(f"{rec.package} needs {rel.name} ({rel.op} {rel.version}) but "
                                     f"{chosen[rel.name].version} was chosen", "suites")
                continue
            dep = _newest(by_name, rel)
            if dep is None:
                have = _versions_text(r.version for r in by_name.get(rel.name, []))
                raise defn.error(f"{rec.package} depends on {rel.name}"
                                 f"{f' ({rel.op} {rel.version})' if rel.op else ''}, which is not in "
                                 f"{where} (available: {have})", "suites")
            chosen[dep.package] = dep
            queue.append(dep)
    return Selection(abi, defn.flavour, version, tuple(chosen.values()),
                     compiler_from_depends([headers, *chosen.values()]))
