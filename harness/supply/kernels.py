"""Kernel definitions (``kernels/*.yaml``) -> fetched, verified, cached kernels.

A definition names a kernel *line*; ``resolve`` turns it into one exact Debian
package version, ``fetch`` downloads and unpacks it into the cache, and the
resulting ``Kernel`` carries everything a guest boot and a livepatch build
need: vmlinuz, a depmod'ed modules directory and a kbuild directory (KDIR).

Definition files. One file per kernel; ``name`` must equal the file's stem
(``debian-6.1.yaml`` defines ``debian-6.1``; ``name`` may be omitted) so that a
name always leads to exactly one file. Two kinds:

``kind: debian``
    ``suites`` (list, required), ``series`` (required; "6.1" matches package
    versions 6.1.*, "7" matches 7.*), ``flavour`` (default amd64), ``pin``
    (optional exact package version), ``description``.
``kind: local``
    ``vmlinuz``, ``modules`` (a ``lib/modules/<release>`` directory or a
    directory containing one), ``build`` (a kernel build directory), optional
    ``release``; relative paths resolve against the YAML file's directory.

Debian packaging, as found in the archive: up to 6.12 a kernel is
``linux-image-<abi>-<flavour>-unsigned`` (vmlinuz in /boot, modules in
/lib/modules/<release>); sid's 7.x splits it into
``linux-binary-unsigned-<abi>-<flavour>`` (vmlinuz.unsigned inside
/usr/lib/modules/<release>), ``linux-modules-<abi>-<flavour>`` and
``linux-base-<abi>-<flavour>`` (config, System.map). Both are handled. The
headers come from ``linux-headers-<release>`` plus whatever ``linux-headers-*``,
``linux-kbuild-*``, ``linux-base-*``, ``linux-modules-*`` it depends on.

Cache: ``settings.kernels_dir/<name>/<version>/{manifest.json, root/}``; the
.debs stay in ``settings.downloads_dir`` so a re-extract needs no download. A
version directory appears atomically (renamed into place with its manifest),
so a directory with a manifest is complete.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import struct
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

import yaml
from yaml.constructor import SafeConstructor

from ..core import hostcmd, paths, yamlconf
from ..core.errors import ConfigError, InfraError
from ..core.locks import file_lock
from ..core.settings import Settings
from . import apt, debversion

log = logging.getLogger(__name__)

DEFAULT_KERNELS_DIR = paths.KERNELS_DIR
ENV_KERNELS = "LIVEPATCH_LAB_KERNELS"
KINDS = ("debian", "local")
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
EXCLUDED_ABI_TOKENS = frozenset({"cloud", "rt"})   # other kernel variants, not the generic one
MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_SERIES = re.compile(r"^\d+(\.\d+)*$")
_FLAVOUR = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_SUITE = re.compile(r"^[a-z0-9][a-z0-9./-]*$")
_COMMON_KEYS = ("name", "kind", "description")
_KIND_KEYS = {"debian": ("suites", "series", "flavour", "pin"),
              "local": ("vmlinuz", "modules", "build", "release")}
_REQUIRED = {"debian": ("suites", "series"), "local": ("vmlinuz", "modules", "build")}
# Depends followed when collecting the headers' closure ("linux-base" alone is a tools package)
_FOLLOW = re.compile(r"^linux-(headers|kbuild|base|modules)-")
_COMPILER_DEP = (re.compile(r"^linux-compiler-(?P<cc>(gcc|clang)-\d+)-"),   # 5.10, 6.1
                 re.compile(r"^(?P<cc>(gcc|clang)-\d+)(-for-host)?$"))      # 6.12, 7.x


# --- definitions -------------------------------------------------------------
@dataclass(frozen=True)
class KernelDef:
    name: str
    kind: str                      # "debian" | "local"
    source: Path                   # the YAML file
    description: str = ""
    suites: tuple[str, ...] = ()
    series: Optional[str] = None
    flavour: str = "amd64"
    pin: Optional[str] = None
    vmlinuz: Optional[Path] = None
    modules: Optional[Path] = None
    build: Optional[Path] = None
    release: Optional[str] = None
    # where each key sits in the file, for errors found after loading
    lines: tuple[tuple[str, int], ...] = field(default=(), compare=False, repr=False)
    pin_origin: Optional[str] = field(default=None, compare=False, repr=False)  # "name@pin" spec

    def error(self, message: str, key: Optional[str] = None) -> ConfigError:
        """A ``ConfigError`` pointing at ``key`` in this definition (or at the spec it was pinned by)."""
        if key == "pin" and self.pin_origin:
            return ConfigError(message, source=self.pin_origin, field="pin")
        line = dict(self.lines).get(key) if key else None
        return ConfigError(message, source=str(self.source), field=key, line=line)


def kernels_directory(directory: Optional[Path] = None) -> Path:
    """``directory``, else ``$LIVEPATCH_LAB_KERNELS``, else the repository's ``kernels/``."""
    if directory is not None:
        return Path(directory)
    env = os.environ.get(ENV_KERNELS)
    return Path(env).expanduser() if env else DEFAULT_KERNELS_DIR


def load_definitions(directory: Optional[Path] = None) -> dict[str, KernelDef]:
    where = kernels_directory(directory)
    if not where.is_dir():
        raise ConfigError("kernel definitions directory does not exist", source=str(where),
                          field=ENV_KERNELS if directory is None and os.environ.get(ENV_KERNELS)
                          else None)
    defs: dict[str, KernelDef] = {}
    for path in sorted([*where.glob("*.yaml"), *where.glob("*.yml")]):
        defn = load_definition(path)
        if defn.name in defs:
            raise ConfigError(f"kernel {defn.name!r} is also defined in {defs[defn.name].source}",
                              source=str(path), field="name")
        defs[defn.name] = defn
    return defs


def get_definition(spec: str, directory: Optional[Path] = None) -> KernelDef:
    """``"debian-6.1"`` or ``"debian-6.1@6.1.192-2"`` (a pin overriding the file's)."""
    name, at, pin = spec.strip().partition("@")
    defs = load_definitions(directory)
    if name not in defs:
        known = ", ".join(sorted(defs)) or "none"
        raise ConfigError(f"unknown kernel {name!r} (known: {known})", source=spec, field="kernel")
    defn = defs[name]
    if not at:
        return defn
    if defn.kind != "debian":
        raise ConfigError(f"only debian kernels take a version pin; {name} is {defn.kind}",
                          source=spec, field="pin")
    try:
        debversion.parse(pin)
    except ValueError:
        raise ConfigError(f"pin {pin!r} is not a Debian version", source=spec, field="pin") from None
    return dataclasses.replace(defn, pin=pin, pin_origin=spec)


def _key_lines(node: yaml.Node, path: Path) -> dict[str, int]:
    if not isinstance(node, yaml.MappingNode):
        raise ConfigError("a kernel definition must be a mapping of keys to values",
                          source=str(path), line=node.start_mark.line + 1)
    lines: dict[str, int] = {}
    for key, _ in node.value:
        line = key.start_mark.line + 1
        if not isinstance(key, yaml.ScalarNode):
            raise ConfigError("keys must be plain names", source=str(path), line=line)
        if key.value in lines:
            raise ConfigError(f"key {key.value!r} appears twice (first on line {lines[key.value]})",
                              source=str(path), field=key.value, line=line)
        lines[key.value] = line
    return lines


def load_definition(path: Path) -> KernelDef:
    """Parse and validate one definition file; every mistake is a ``ConfigError`` with its line."""
    node = yamlconf.compose(path, empty="empty kernel definition")
    lines = _key_lines(node, path)
    return _validate(path, SafeConstructor().construct_document(node), lines)


class _Fields:
    """Typed access to one definition's mapping, raising errors that point at the key."""

    def __init__(self, path: Path, data: Mapping[Any, Any], lines: Mapping[str, int]):
        self.path, self.data, self.lines = path, data, lines

    def error(self, message: str, key: Optional[str] = None) -> ConfigError:
        return ConfigError(message, source=str(self.path), field=key,
                           line=self.lines.get(key) if key else None)

    def string(self, key: str, pattern: Optional[re.Pattern] = None, *, numbers: bool = False,
               default: Optional[str] = None) -> Optional[str]:
        if key not in self.data or self.data[key] is None:
            return default
        value = self.data[key]
        if isinstance(value, float):
            # 6.10 would silently become "6.1": only a quoted string says what was meant
            raise self.error(f"must be a string; quote it: {key}: \"{value}\"", key)
        if numbers and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise self.error(f"must be a string, not {type(value).__name__}", key)
        value = value.strip()
        if not value:
            raise self.error("must not be empty", key)
        if pattern is not None and not pattern.match(value):
            raise self.error(f"{value!r} is not valid here", key)
        return value

    def string_list(self, key: str, pattern: re.Pattern) -> tuple[str, ...]:
        value = self.data.get(key)
        if not isinstance(value, list) or not value:
            raise self.error("must be a non-empty list, e.g. [bookworm, bookworm-security]", key)
        items = []
        for item in value:
            if not isinstance(item, str) or not pattern.match(item.strip()):
                raise self.error(f"{item!r} is not a valid entry", key)
            if item.strip() in items:
                raise self.error(f"{item!r} is listed twice", key)
            items.append(item.strip())
        return tuple(items)

    def path_value(self, key: str) -> Optional[Path]:
        raw = self.string(key)
        if raw is None:
            return None
        p = Path(raw).expanduser()
        return p if p.is_absolute() else (self.path.parent / p).absolute()


def _validate(path: Path, data: Mapping[Any, Any], lines: Mapping[str, int]) -> KernelDef:
    f = _Fields(path, data, lines)
    kind = f.string("kind")
    if kind is None:
        raise f.error(f"missing required key 'kind' ({' or '.join(KINDS)})", "kind")
    if kind not in KINDS:
        raise f.error(f"kind must be {' or '.join(KINDS)}, not {kind!r}", "kind")
    allowed = (*_COMMON_KEYS, *_KIND_KEYS[kind])
    for key in data:
        if key not in allowed:
            raise f.error(f"unknown key {key!r} for kind {kind} (allowed: {', '.join(allowed)})",
                          str(key))
    for key in _REQUIRED[kind]:
        if data.get(key) is None:
            raise f.error(f"missing required key {key!r} for kind {kind}", key)
    name = f.string("name", _NAME, default=path.stem)
    assert name is not None
    if name != path.stem:
        raise f.error(f"name {name!r} must match the file name ({path.stem!r})", "name")
    common = dict(name=name, kind=kind, source=path, description=f.string("description") or "",
                  lines=tuple(sorted(lines.items())))
    if kind == "local":
        return KernelDef(**common, flavour="", vmlinuz=f.path_value("vmlinuz"),
                         modules=f.path_value("modules"), build=f.path_value("build"),
                         release=f.string("release", _NAME))
    pin = f.string("pin")
    if pin is not None:
        try:
            debversion.parse(pin)
        except ValueError:
            raise f.error(f"{pin!r} is not a Debian version", "pin") from None
    return KernelDef(**common, suites=f.string_list("suites", _SUITE),
                     series=f.string("series", _SERIES, numbers=True),
                     flavour=f.string("flavour", _FLAVOUR, default="amd64") or "amd64", pin=pin)


# --- kernels -----------------------------------------------------------------
@dataclass(frozen=True)
class PackageRef:
    name: str
    version: str
    sha256: str


@dataclass(frozen=True)
class Kernel:
    """A kernel ready to boot and to build modules against."""
    name: str
    release: str              # uname -r
    version: str              # Debian package version; "local" for local kernels
    vmlinuz: Path
    modules_dir: Path         # .../modules/<release>, with modules.dep
    build_dir: Path           # KDIR for out-of-tree builds
    config: Optional[Path]
    compiler: Optional[str]   # e.g. "gcc-12": what the kernel was built with
    packages: tuple[PackageRef, ...]
    module_compression: str = "none"   # none | xz | zst | gz | mixed

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "release": self.release, "version": self.version,
                "compiler": self.compiler, "module_compression": self.module_compression,
                "vmlinuz": str(self.vmlinuz), "modules_dir": str(self.modules_dir),
                "build_dir": str(self.build_dir),
                "config": str(self.config) if self.config else None,
                "packages": [dataclasses.asdict(p) for p in self.packages]}


# --- selecting from the archive (pure) ---------------------------------------
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


# --- the apt side ------------------------------------------------------------
def _apt_root(defn: KernelDef, settings: Settings) -> apt.AptRoot:
    return apt.root_for(settings, defn.suites)


def _select_from_archive(defn: KernelDef, settings: Settings, refresh: bool) -> Selection:
    root = _apt_root(defn, settings)
    apt.update(root, force=refresh)
    return select(defn, apt.packages(root, lambda n: n.startswith("linux-")))


def resolve(defn: KernelDef, settings: Settings, *, refresh: bool = False) -> tuple[str, str]:
    """(release, version) the definition means now, from the apt lists (updated if stale)."""
    if defn.kind == "local":
        return local_kernel(defn).release, "local"
    sel = _select_from_archive(defn, settings, refresh)
    return sel.release, sel.version


# --- unpacking and fixing up -------------------------------------------------
def _version_dir(version: str) -> str:
    return version.replace(":", "%3a").replace("/", "_")


def relink_absolute(root: Path) -> int:
    """Make every absolute symlink under ``root`` whose target exists inside ``root``
    relative, so that ``/usr/src/...`` links resolve in the extracted tree. Returns
    how many were changed."""
    changed = 0
    for top, dirs, files in os.walk(root):
        for entry in (*dirs, *files):
            p = Path(top) / entry
            if not p.is_symlink():
                continue
            target = os.readlink(p)
            if not target.startswith("/"):
                continue
            inside = root / target.lstrip("/")
            if not os.path.lexists(inside):
                log.debug("leaving %s -> %s: target not in the extracted tree", p, target)
                continue
            p.unlink()
            p.symlink_to(os.path.relpath(inside, p.parent))
            changed += 1
    return changed


_ABS_HEADER_PATH = re.compile(r"(?<![\w./-])(/usr/src/|/usr/lib/linux-kbuild-)")


def rewrite_makefiles(headers_dirs: Iterable[Path], final_tree: Path) -> list[Path]:
    """Point absolute ``/usr/src`` / ``/usr/lib/linux-kbuild-*`` paths in the headers'
    top-level Makefiles at ``final_tree`` (where the extracted tree will end up).

    Debian's ``linux-headers-<release>/Makefile`` is one line,
    ``include /usr/src/linux-headers-<abi>-common/Makefile``; make needs a real path.
    """
    changed = []
    for d in headers_dirs:
        mk = d / "Makefile"
        if not mk.is_file() or mk.is_symlink():
            continue
        text = mk.read_text(errors="surrogateescape")

        def repl(m: re.Match) -> str:
            return str(final_tree) + m.group(1)
        new = _ABS_HEADER_PATH.sub(repl, text)
        if new != text:
            mk.write_text(new, errors="surrogateescape")
            changed.append(mk)
    return changed


def _modules_dirs(root: Path, release: str) -> list[Path]:
    return [d for d in (root / "lib/modules" / release, root / "usr/lib/modules" / release)
            if d.is_dir() and not d.is_symlink()]


def unify_modules_dir(root: Path, release: str) -> Path:
    """One real ``modules/<release>`` directory, reachable as ``root/lib/modules/<release>``.

    Newer packages ship /usr/lib/modules, older ones /lib/modules, and headers may
    put their ``build`` link in the other one; the host's depmod (kmod 30) only
    looks under ``<base>/lib/modules``. Entries of a second directory are moved
    into the one holding ``kernel/`` and a link replaces it.
    """
    dirs = _modules_dirs(root, release)
    if not dirs:
        raise InfraError(f"no lib/modules/{release} or usr/lib/modules/{release} in {root}")
    dirs.sort(key=lambda d: not (d / "kernel").is_dir())
    main = dirs[0]
    for other in dirs[1:]:
        for entry in other.iterdir():
            if not os.path.lexists(main / entry.name):
                os.rename(entry, main / entry.name)
        shutil.rmtree(other)
        other.symlink_to(os.path.relpath(main, other.parent))
    legacy = root / "lib/modules" / release
    if not os.path.lexists(legacy):
        legacy.parent.mkdir(parents=True, exist_ok=True)
        legacy.symlink_to(os.path.relpath(main, legacy.parent))
    return main


def module_compression(modules_dir: Path) -> str:
    """none | xz | zst | gz, or mixed(...) when a tree uses several."""
    seen: Counter[str] = Counter()
    for _top, _dirs, files in os.walk(modules_dir / "kernel" if (modules_dir / "kernel").is_dir()
                                      else modules_dir):
        for f in files:
            for suffix, kind in ((".ko.xz", "xz"), (".ko.zst", "zst"), (".ko.gz", "gz"),
                                 (".ko", "none")):
                if f.endswith(suffix):
                    seen[kind] += 1
                    break
    if not seen:
        return "none"
    if len(seen) == 1:
        return next(iter(seen))
    return "mixed(" + ",".join(sorted(seen)) + ")"


def _first(paths: Iterable[Path]) -> Optional[Path]:
    return next((p for p in paths if p.is_file()), None)


def _find_vmlinuz(root: Path, modules_dir: Path, release: str) -> Optional[Path]:
    return _first([root / "boot" / f"vmlinuz-{release}", modules_dir / "vmlinuz",
                   modules_dir / "vmlinuz.unsigned"])


def _find_config(root: Path, modules_dir: Path, release: str) -> Optional[Path]:
    return _first([root / "boot" / f"config-{release}", modules_dir / "config"])


_CC_TEXT = re.compile(r'^CONFIG_CC_VERSION_TEXT="(?P<text>[^"]*)"', re.M)


def compiler_from_config(config: Optional[Path]) -> Optional[str]:
    """``CONFIG_CC_VERSION_TEXT="gcc-12 (Debian 12.2.0-14) 12.2.0"`` -> ``gcc-12``."""
    if config is None or not config.is_file():
        return None
    m = _CC_TEXT.search(config.read_text(errors="replace"))
    if not m:
        return None
    text = m.group("text")
    cc = "clang" if "clang" in text else "gcc"
    versions = re.findall(r"\b(\d+)\.\d+(?:\.\d+)?\b", text)
    return f"{cc}-{versions[-1]}" if versions else cc


# --- the cache ---------------------------------------------------------------
def _kernel_from_manifest(defn: KernelDef, vdir: Path) -> Optional[Kernel]:
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
    if not all(paths.get(k) and paths[k].exists() for k in ("vmlinuz", "modules_dir", "build_dir")):
        return None
    if not (paths["modules_dir"] / "modules.dep").is_file():
        return None
    return Kernel(name=defn.name, release=m["release"], version=m["version"],
                  vmlinuz=paths["vmlinuz"], modules_dir=paths["modules_dir"],
                  build_dir=paths["build_dir"], config=paths.get("config"),
                  compiler=m.get("compiler"),
                  packages=tuple(PackageRef(p["name"], p["version"], p["sha256"])
                                 for p in m.get("packages", [])),
                  module_compression=m.get("module_compression", "none"))


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
        k = _kernel_from_manifest(defn, vdir)
        if k is not None and (defn.pin is None or k.version == defn.pin):
            found.append(k)
    return max(found, key=lambda k: debversion.key(k.version)) if found else None


def fetch_lock(settings: Settings, name: str) -> Path:
    """The lock a kernel line's fetches, unpacks and prunes take turns under."""
    return settings.locks_dir / f"kernel-{name}.lock"


def fetch(defn: KernelDef, settings: Settings, *, refresh: bool = False) -> Kernel:
    """A ready kernel for ``defn``: from the cache, else downloaded and unpacked.

    Without ``refresh`` a cached kernel is returned with no network access at all.
    With ``refresh`` the apt lists are updated and a newer version, if any, is
    fetched. One process per kernel name works at a time (file lock); the others
    wait and then find it cached.
    """
    if defn.kind == "local":
        return local_kernel(defn)
    if not refresh:
        k = cached(defn, settings)
        if k is not None:
            return k
    lock = fetch_lock(settings, defn.name)
    with file_lock(lock, timeout=settings.timeouts.lock, what=f"fetching kernel {defn.name}"):
        if not refresh:
            k = cached(defn, settings)
            if k is not None:
                return k
        sel = _select_from_archive(defn, settings, refresh)
        vdir = settings.kernels_dir / defn.name / _version_dir(sel.version)
        k = _kernel_from_manifest(defn, vdir)
        if k is not None:
            return k
        return _install(defn, settings, sel)


def _download_all(defn: KernelDef, settings: Settings, sel: Selection) -> list[apt.Deb]:
    root = _apt_root(defn, settings)
    debs = []
    for rec in sel.packages:
        target = settings.downloads_dir / apt.deb_name(rec.package, rec.version)
        if not target.exists():
            log.info("fetching %s %s (%.1f MB)", rec.package, rec.version, rec.size / 1e6)
        start = time.monotonic()
        deb = apt.download(root, rec.package, rec.version, settings.downloads_dir,
                           sha256=rec.sha256 or None)
        log.debug("%s ready in %.1fs", deb.path.name, time.monotonic() - start)
        debs.append(deb)
    return debs


def _clean_leftovers(kdir: Path) -> None:
    # only called under the kernel's lock: no other process is extracting here
    for p in kdir.glob(".extract-*"):
        shutil.rmtree(p, ignore_errors=True)
    for p in kdir.glob(".trash-*"):
        shutil.rmtree(p, ignore_errors=True)


def _install(defn: KernelDef, settings: Settings, sel: Selection) -> Kernel:
    debs = _download_all(defn, settings, sel)
    kdir = settings.kernels_dir / defn.name
    kdir.mkdir(parents=True, exist_ok=True)
    _clean_leftovers(kdir)
    final = kdir / _version_dir(sel.version)
    tmp = Path(tempfile.mkdtemp(dir=kdir, prefix=f".extract-{_version_dir(sel.version)}-"))
    tmp.chmod(0o755)  # mkdtemp's 0700 would hide the kernel from an unprivileged QEMU
    try:
        _unpack(defn, settings, sel, debs, tmp, final)
        if os.path.lexists(final):
            trash = Path(tempfile.mkdtemp(dir=kdir, prefix=".trash-"))
            os.rename(final, trash / "old")
            shutil.rmtree(trash, ignore_errors=True)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    k = _kernel_from_manifest(defn, final)
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

    vmlinuz = _find_vmlinuz(root, modules_dir, release)
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
    config = _find_config(root, modules_dir, release)

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

    def rel(p: Optional[Path]) -> Optional[str]:
        return str(p.relative_to(tmp)) if p else None

    manifest = {
        "format": MANIFEST_FORMAT, "name": defn.name, "kind": "debian",
        "series": defn.series, "flavour": defn.flavour, "suites": list(defn.suites),
        "version": sel.version, "abi": sel.abi, "release": release, "compiler": compiler,
        "module_compression": module_compression(modules_dir),
        "location": str(final.absolute()),
        "paths": {"vmlinuz": rel(vmlinuz), "modules_dir": rel(modules_dir),
                  "build_dir": rel(build_dir), "config": rel(config)},
        "packages": [{"name": d.package, "version": d.version, "sha256": d.sha256,
                      "size": d.size, "file": d.path.name} for d in debs],
        "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    # written last: its presence is what marks the directory complete
    part = tmp / (MANIFEST + ".part")
    part.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(part, tmp / MANIFEST)


# --- local kernels -----------------------------------------------------------
def bzimage_release(path: Path) -> Optional[str]:
    """The release a bzImage announces in its setup header (None if it is not a bzImage)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(0x8000)
    except OSError:
        return None
    if len(head) < 0x210 or head[0x202:0x206] != b"HdrS":
        return None
    (ptr,) = struct.unpack_from("<H", head, 0x20E)
    start = ptr + 0x200
    if not ptr or start >= len(head):
        return None
    text = head[start:head.find(b"\0", start)].decode(errors="replace")
    return text.split()[0] if text.split() else None


def _is_release_dir(p: Path) -> bool:
    return any((p / n).exists() for n in ("kernel", "modules.order", "modules.dep", "modules.builtin"))


def _local_modules_dir(defn: KernelDef) -> Path:
    assert defn.modules is not None
    base = defn.modules
    if _is_release_dir(base) and (defn.release is None or base.name == defn.release):
        return base
    cands: list[Path] = []
    for parent in (base, base / "modules", base / "lib/modules", base / "usr/lib/modules"):
        if parent.is_dir():
            cands += [d for d in sorted(parent.iterdir()) if d.is_dir() and _is_release_dir(d)]
    if defn.release:
        cands = [d for d in cands if d.name == defn.release]
    if len(cands) == 1:
        return cands[0]
    what = f"modules of release {defn.release}" if defn.release else "a modules/<release> directory"
    listed = ", ".join(str(c) for c in cands) or "none"
    raise defn.error(f"{base} holds {'no' if not cands else 'more than one'} {what} "
                     f"(found: {listed}); point modules at lib/modules/<release> or set release",
                     "modules")


def local_kernel(defn: KernelDef) -> Kernel:
    """Validate a ``kind: local`` definition's paths and derive its release."""
    for key in ("vmlinuz", "modules", "build"):
        p = getattr(defn, key)
        if p is None or not p.exists():
            raise defn.error(f"{p} does not exist", key)
    assert defn.vmlinuz and defn.build
    if not defn.vmlinuz.is_file():
        raise defn.error(f"{defn.vmlinuz} is not a file", "vmlinuz")
    if not (defn.build / "Makefile").is_file():
        raise defn.error(f"{defn.build} has no Makefile: not a kernel build directory", "build")
    modules_dir = _local_modules_dir(defn)
    release = modules_dir.name
    if defn.release and defn.release != release:
        raise defn.error(f"release {defn.release} but the modules directory is {modules_dir}",
                         "release")
    announced = bzimage_release(defn.vmlinuz)
    if announced and announced != release:
        raise defn.error(f"{defn.vmlinuz} is release {announced}, but the modules are for {release}",
                         "vmlinuz")
    built = defn.build / "include/config/kernel.release"
    if built.is_file() and built.read_text().strip() != release:
        # Only a hint: distribution header packages record the upstream version here
        # (Debian's 6.1.0-56-amd64 headers say "6.1.192"). Module vermagic is checked at load.
        log.warning("%s: %s records release %s, the modules are for %s", defn.source,
                    built, built.read_text().strip(), release)
    if not (modules_dir / "modules.dep").is_file():
        raise defn.error(f"{modules_dir} has no modules.dep; run depmod -b <root> {release}",
                         "modules")
    config = _first([defn.build / ".config", modules_dir / "config",
                     defn.vmlinuz.parent / f"config-{release}"])
    return Kernel(name=defn.name, release=release, version="local", vmlinuz=defn.vmlinuz,
                  modules_dir=modules_dir, build_dir=defn.build, config=config,
                  compiler=compiler_from_config(config), packages=(),
                  module_compression=module_compression(modules_dir))
