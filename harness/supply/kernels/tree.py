"""An unpacked kernel tree: the fix-ups that make it work where it lies, and what it tells.

``dpkg -x`` leaves absolute symlinks and a headers Makefile that includes an
absolute ``/usr/src/...`` path; newer packages put the modules under
/usr/lib/modules. These functions make the tree self-contained and find its
vmlinuz, config, compiler, release and module compression. A local kernel's
tree (your own build) is read with the same functions.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import struct
from collections import Counter
from pathlib import Path
from typing import Iterable, Optional

from ...core.errors import InfraError

log = logging.getLogger(__name__)


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


def first_file(paths: Iterable[Path]) -> Optional[Path]:
    return next((p for p in paths if p.is_file()), None)


def find_vmlinuz(root: Path, modules_dir: Path, release: str) -> Optional[Path]:
    return first_file([root / "boot" / f"vmlinuz-{release}", modules_dir / "vmlinuz",
                   modules_dir / "vmlinuz.unsigned"])


def find_config(root: Path, modules_dir: Path, release: str) -> Optional[Path]:
    return first_file([root / "boot" / f"config-{release}", modules_dir / "config"])


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


_OPTION = re.compile(r"^(CONFIG_\w+)=(.*)$|^# (CONFIG_\w+) is not set$")


def config_options(config: Optional[Path]) -> Optional[dict[str, str]]:
    """The kernel's ``.config`` as ``{CONFIG_X: value}`` (``n`` for "is not set"); None without one."""
    if config is None or not config.is_file():
        return None
    out: dict[str, str] = {}
    for line in config.read_text(errors="replace").splitlines():
        m = _OPTION.match(line)
        if m:
            out[m.group(1) or m.group(3)] = m.group(2).strip('"') if m.group(1) else "n"
    return out
