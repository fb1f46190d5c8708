"""A kernel's exact source, prepared as Debian built it, and its original build, kept.

One entry per kernel version under ``settings.source_builds_dir/<line>/<version>/``:

- ``linux/``: the tree of ``linux-source-<series>`` at the kernel's exact version (Debian's
  patches applied), with the kernel's own config as ``.config``, the kernel's release pinned
  in the top Makefile (Debian builds with ``KERNELRELEASE=<abi>-<flavour>`` on make's command
  line, so ``include/config/kernel.release`` says 6.1.192 while the kernel says
  6.1.0-57-amd64), and BTF generation off in the vmlinux and module link scripts, as
  kpatch-build sets them (it never needs BTF; pahole is slow).
- ``vmlinux``: the kernel's own vmlinux with symbols, from its ``-dbg`` package (the .deb,
  ~860 MB, is dropped once the one file is out). kpatch-build reads its symbol table.
- ``prepared.json``: written last when the above is complete (the entry is published then).
- ``built.json``: the original build, ``make vmlinux`` with kpatch-build's own flags, made
  in place once (~25 min on 2 cores) and checked against the kernel before it is trusted:
  its release string and every vmlinux symbol's CRC (``vmlinux.symvers``) must equal the
  kernel's headers' ``Module.symvers``, which then becomes the tree's (kpatch-build reads
  it; a vmlinux-only build makes none). A killed build leaves no ``built.json``; the next
  one carries on where make stopped.

Inside a build root the tree is always mounted at ``/build/linux``: kbuild records absolute
paths (objtool's among them), and a tree seen at another path would be rebuilt from scratch.
"""
from __future__ import annotations

import json
import logging
import re
import shlex
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ...core import cacheentry, diskspace, hostcmd, progress
from ...core.errors import ConfigError, InfraError
from ...core.locks import file_lock
from ...core.settings import Settings
from .. import apt, buildroot, toolchains
from ..kernels import source as kernelsource
from ..kernels.cache import version_dir
from ..kernels.kernel import Kernel
from . import kpatchtool

log = logging.getLogger(__name__)

FORMAT = 1
PREPARED, BUILT = "prepared.json", "built.json"
INSIDE = "/build/linux"         # where a build root sees the tree
VMLINUX_INSIDE = "/build/vmlinux"
BUILD_LOG = "original-build.log"
# the Debian 6.1 vmlinux build compiles ~2,500 objects: the progress line's denominator
OBJECTS_ESTIMATE = 2500


@dataclass(frozen=True)
class Tree:
    kernel: str
    kernel_version: str
    release: str
    path: Path                  # the entry
    source_package: str
    source_sha256: str
    built: Optional[dict[str, Any]] = None

    @property
    def linux(self) -> Path:
        return self.path / "linux"

    @property
    def vmlinux(self) -> Path:
        return self.path / "vmlinux"


def refusal(kernel: Kernel) -> Optional[str]:
    """Why the lab cannot build a livepatch from source for ``kernel``, or None."""
    if not kernel.suites:
        return (f"{kernel.name} is a local build: a source diff is built from the kernel's Debian source "
                "package, and a local kernel has none; build the module yourself and give it as ko")
    config = _config(kernel)
    if config.get("CONFIG_LIVEPATCH") != "y":
        return f"{kernel.name} ({kernel.release}) is built without CONFIG_LIVEPATCH"
    if config.get("CONFIG_X86_KERNEL_IBT") == "y":
        return (f"{kernel.name} ({kernel.release}) is built with CONFIG_X86_KERNEL_IBT=y: kpatch-build refuses "
                "IBT kernels, and klp-build, which handles IBT, is the kernel's own from Linux 6.19 (CONFIG_KLP_"
                "BUILD); this lab does not drive klp-build yet. Build the module another way and give it as ko")
    if config.get("CONFIG_DEBUG_INFO") != "y":
        return f"{kernel.name} ({kernel.release}) is built without CONFIG_DEBUG_INFO, which kpatch-build needs"
    return None


def _config(kernel: Kernel) -> dict[str, str]:
    if kernel.config is None or not kernel.config.is_file():
        raise InfraError(f"{kernel.name}: its config is missing from the cache ({kernel.config})")
    out = {}
    for line in kernel.config.read_text(errors="replace").splitlines():
        key, eq, value = line.partition("=")
        if eq and key.startswith("CONFIG_"):
            out[key] = value.strip('"')
    return out


def toolchain(kernel: Kernel) -> toolchains.Toolchain:
    """A build root of the kernel's suite with the kernel's own compiler, always: a kernel
    build needs more than the host has, and kpatch-build wants the very compiler."""
    if not kernel.compiler:
        raise InfraError(f"{kernel.name}: its config names no compiler")
    return toolchains.Toolchain("buildroot", kernel.compiler, toolchains.kernel_suite(kernel))


def entry_dir(kernel: Kernel, settings: Settings) -> Path:
    return settings.source_builds_dir / kernel.name / version_dir(kernel.version)


def _load(kernel: Kernel, path: Path) -> Optional[Tree]:
    try:
        m = json.loads((path / PREPARED).read_text())
    except (OSError, ValueError):
        return None
    if m.get("format") != FORMAT or m.get("kernel_version") != kernel.version:
        return None
    built = None
    try:
        built = json.loads((path / BUILT).read_text())
    except (OSError, ValueError):
        pass
    return Tree(kernel.name, kernel.version, m["release"], path, m["source_package"], m["source_sha256"], built)


def prepared(kernel: Kernel, settings: Settings) -> Tree:
    """The kernel's source tree and debug vmlinux: from the cache, else fetched (verified
    against the archive like the kernel), unpacked and prepared."""
    final = entry_dir(kernel, settings)
    return cacheentry.obtain(lambda: _load(kernel, final), lambda: _prepare(kernel, settings, final),
                             lock=_lock(kernel, settings), timeout=settings.timeouts.lock,
                             what=f"the source tree of {kernel.name} {kernel.version}")


def _lock(kernel: Kernel, settings: Settings) -> Path:
    return settings.locks_dir / f"source-build-{kernel.name}-{version_dir(kernel.version)}.lock"


def _exact(root: apt.AptRoot, package: str, version: str) -> apt.PackageRecord:
    recs = [r for r in apt.packages(root, lambda n: n == package) if r.version == version]
    if not recs:
        raise InfraError(f"the archive has no {package} {version}: a livepatch is built from the kernel's "
                         f"exact source and symbols (available: "
                         f"{', '.join(apt.available_versions(root, package)) or 'none'})")
    return recs[0]


def _prepare(kernel: Kernel, settings: Settings, final: Path) -> None:
    root = apt.root_for(settings, kernel.suites)
    apt.update(root)
    src_pkg = kernelsource.package_for(kernel.version)
    dbg_pkg = f"linux-image-{kernel.release}-dbg"
    src, dbg = _exact(root, src_pkg, kernel.version), _exact(root, dbg_pkg, kernel.version)
    with cacheentry.staging(final.parent, f".{final.name}-", f"preparing the source tree of {kernel.name}") as work:
        out = work / "out"
        out.mkdir()
        start = time.monotonic()
        deb = apt.download(root, src_pkg, src.version, work / "deb", sha256=src.sha256 or None, size=src.size or None)
        _unpack_tree(deb.path, out / "linux", work, settings)
        deb.path.unlink()
        prepare_tree(out / "linux", kernel)
        ddeb = apt.download(root, dbg_pkg, dbg.version, work / "deb", sha256=dbg.sha256 or None,
                            size=dbg.size or None)
        _extract_vmlinux(ddeb.path, kernel.release, out / "vmlinux", work, settings)
        ddeb.path.unlink()
        man = {"format": FORMAT, "kernel": kernel.name, "kernel_version": kernel.version,
               "release": kernel.release, "source_package": f"{src_pkg} {src.version}",
               "source_sha256": deb.sha256, "dbg_package": f"{dbg_pkg} {dbg.version}", "dbg_sha256": ddeb.sha256,
               "seconds": round(time.monotonic() - start, 1),
               "prepared_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        (out / PREPARED).write_text(json.dumps(man, indent=2) + "\n")
        cacheentry.publish(out, final)
    log.info("source tree of %s %s ready in %.0fs", kernel.name, kernel.version, man["seconds"])


def _unpack_tree(deb: Path, dest: Path, work: Path, settings: Settings) -> None:
    """The whole kernel tarball of a linux-source .deb, as ``dest`` (its top directory)."""
    staging = work / "src"
    hostcmd.run(["dpkg-deb", "-x", deb, staging], what=f"unpack {deb.name}", timeout=settings.timeouts.host_command)
    tarballs = sorted((staging / "usr/src").glob("linux-source-*.tar.*"))
    if len(tarballs) != 1:
        raise InfraError(f"{deb.name}: expected one kernel tarball in /usr/src, found "
                         f"{[t.name for t in tarballs] or 'none'}")
    top = work / "top"
    top.mkdir()
    with progress.ticking(f"unpacking {tarballs[0].name}", usually="~90 s"):
        hostcmd.run(["tar", "-x", "--no-same-owner", "--no-same-permissions", "-f", tarballs[0], "-C", top],
                    what=f"unpack {tarballs[0].name}", timeout=settings.timeouts.image_build)
    shutil.rmtree(staging)
    dirs = [p for p in top.iterdir() if p.is_dir()]
    if len(dirs) != 1 or not (dirs[0] / "Makefile").is_file():
        raise InfraError(f"{tarballs[0].name}: expected one kernel tree, found {[p.name for p in dirs]}")
    dirs[0].rename(dest)


def prepare_tree(tree: Path, kernel: Kernel) -> None:
    """Make ``tree`` build what Debian built: its config, its release string, no BTF."""
    assert kernel.config is not None   # refusal() read it
    shutil.copyfile(kernel.config, tree / ".config")
    _edit(tree / "Makefile", r"^KERNELRELEASE = .*$", f"KERNELRELEASE = {kernel.release}")
    _edit(tree / "scripts/link-vmlinux.sh", r"CONFIG_DEBUG_INFO_BTF\b", "DISABLED_FOR_KPATCH_BUILD", count=0)
    modfinal = tree / "scripts/Makefile.modfinal"   # BTF for modules: Linux 5.11 on
    if modfinal.is_file() and "CONFIG_DEBUG_INFO_BTF_MODULES" in modfinal.read_text():
        _edit(modfinal, r"CONFIG_DEBUG_INFO_BTF_MODULES\b", "DISABLED_FOR_KPATCH_BUILD", count=0)


def _edit(path: Path, pattern: str, repl: str, count: int = 1) -> None:
    """Replace ``pattern`` in ``path``: exactly once (``count`` 1) or at least once (0)."""
    text = path.read_text()
    new, n = re.subn(pattern, repl, text, count=count, flags=re.M)
    if n == 0 or (count == 1 and n != 1):
        raise InfraError(f"{path}: expected {pattern!r} {'once' if count == 1 else ''} to prepare the tree, "
                         f"found it {n} times")
    path.write_text(new)


def _extract_vmlinux(deb: Path, release: str, dest: Path, work: Path, settings: Settings) -> None:
    member = f"./usr/lib/debug/boot/vmlinux-{release}"
    out = work / "dbg"
    out.mkdir()
    with progress.ticking(f"taking vmlinux-{release} out of {deb.name}", usually="~30 s"):
        hostcmd.run(["sh", "-c", f"dpkg-deb --fsys-tarfile {shlex.quote(str(deb))} | "
                                 f"tar -x -C {shlex.quote(str(out))} {shlex.quote(member)}"],
                    what=f"extract {member} from {deb.name}", timeout=settings.timeouts.image_build)
    got = out / member
    if not got.is_file():
        raise InfraError(f"{deb.name} has no {member}")
    got.rename(dest)


# --- the original build ----------------------------------------------------------
# modules_prepare: scripts/module.lds and the rest a module link needs, which `make vmlinux`
# alone does not make (kpatch-build links the livepatch module against this tree)
def make_argv(jobs: int, kcflags: str, targets: tuple[str, ...] = ("vmlinux", "modules_prepare")) -> list[str]:
    """The original build, as kpatch-build's own first pass makes it (same CC, LD, KCFLAGS)."""
    return ["env", f"KCFLAGS={kcflags}", "make", "-C", INSIDE, *kpatchtool.MAKE_VARS, f"-j{jobs}", *targets]


def mounts(tree: Tree, root: Path, *, upper: Optional[Path] = None, work: Optional[Path] = None,
           writable: bool = True) -> list[str]:
    """Shell lines mounting the tree at ``INSIDE`` and the vmlinux at ``VMLINUX_INSIDE`` in the
    build root ``root``: the tree itself, or (``upper``) an overlay whose changes land in
    ``upper`` and leave the kept tree as it was."""
    q = shlex.quote
    inside, vml = q(str(root) + INSIDE), q(str(root) + VMLINUX_INSIDE)
    lines = [f"mkdir -p {inside}", f"touch {vml}", f"mount --bind -o ro {q(str(tree.vmlinux))} {vml}"]
    if upper is not None:
        assert work is not None
        lines.append(f"mount -t overlay lab-tree -o lowerdir={q(str(tree.linux))},upperdir={q(str(upper))},"
                     f"workdir={q(str(work))} {inside}")
    else:
        lines.append(f"mount --bind {q(str(tree.linux))} {inside}")
        if not writable:
            lines.append(f"mount -o remount,bind,ro {inside}")
    return lines


def built(kernel: Kernel, settings: Settings, addon: buildroot.AddOn) -> Tree:
    """The prepared tree with its original build made (once per kernel version) and checked."""
    tree = prepared(kernel, settings)
    if tree.built is not None:
        return tree
    with file_lock(_lock(kernel, settings), timeout=settings.timeouts.lock,
                   what=f"the original build of {kernel.name} {kernel.version}"):
        tree = prepared(kernel, settings)
        if tree.built is not None:
            return tree
        return _build(kernel, tree, settings, addon)


def _build(kernel: Kernel, tree: Tree, settings: Settings, addon: buildroot.AddOn) -> Tree:
    tc = toolchain(kernel)
    made = buildroot.ensure_buildroot(tc, kernel, settings, addon)
    root = buildroot.entry_dir(tc, settings, addon) / "root"
    log_path = tree.path / BUILD_LOG
    jobs = max(1, settings.cpu_capacity)
    kcflags = made.get("kcflags")
    if not kcflags:
        raise InfraError(f"build root {buildroot.root_id(tc, addon)} records no kcflags: remove "
                         f"{buildroot.entry_dir(tc, settings, addon)} to make it again")
    argv = ["sh", "-c", shlex.join(make_argv(jobs, kcflags)) + f" >> /build/{BUILD_LOG} 2>&1"]
    log.info("building %s %s once for source diffs (vmlinux, %d jobs); later diffs reuse it; log: %s",
             kernel.name, kernel.version, jobs, log_path)
    start = time.monotonic()
    before = _compiled(log_path)    # the log is appended to: a carried-on build counts from here
    with diskspace.guard(tree.path, f"the original build of {kernel.name}"), \
            progress.ticking(f"original build of {kernel.name} {kernel.version}",
                             done=lambda: f"~{_compiled(log_path) - before}/{OBJECTS_ESTIMATE} objects",
                             usually="~25 min on 2 cores, once per kernel version", every=60):
        try:
            buildroot.run_in(tc, [], argv, what=f"the original build of {kernel.name}",
                             settings=settings, addon=addon, timeout=settings.timeouts.kernel_build,
                             setup=_log_mount(tree, root) + mounts(tree, root))
        except InfraError as exc:
            tail = _tail(log_path)
            raise InfraError(f"the original build of {kernel.name} {kernel.version} failed (the lab's or the "
                             f"host's fault: no diff is applied yet): {exc}\n{tail}") from None
    seconds = time.monotonic() - start
    check_build(tree, kernel)
    # kpatch-build reads the tree's Module.symvers (a vmlinux-only build has none): the
    # kernel's own, every export of vmlinux and of its modules with Debian's CRCs
    shutil.copyfile(kernel.build_dir / "Module.symvers", tree.linux / "Module.symvers")
    disk = progress.size_of(tree.linux)
    info: dict[str, Any] = {"seconds": round(seconds, 1), "objects": _compiled(log_path) - before, "jobs": jobs,
            "kcflags": kcflags,
            "disk_bytes": disk, "toolchain": buildroot.root_id(tc, addon),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (tree.path / BUILT).write_text(json.dumps(info, indent=2) + "\n")
    log.info("original build of %s %s: %.0f s, %.1f GB", kernel.name, kernel.version, seconds,
             disk / 1e9)
    return Tree(tree.kernel, tree.kernel_version, tree.release, tree.path, tree.source_package,
                tree.source_sha256, info)


def _log_mount(tree: Tree, root: Path) -> list[str]:
    """The entry's build log, writable beside the tree inside the root (``/build/``)."""
    q = shlex.quote
    inside = q(str(root) + f"/build/{BUILD_LOG}")
    return [f"mkdir -p {q(str(root) + '/build')}", f"touch {q(str(tree.path / BUILD_LOG))} {inside}",
            f"mount --bind {q(str(tree.path / BUILD_LOG))} {inside}"]


def _compiled(log_path: Path) -> int:
    try:
        with open(log_path, "rb") as fh:
            return sum(1 for line in fh if line.startswith(b"  CC "))
    except OSError:
        return 0


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def check_build(tree: Tree, kernel: Kernel) -> None:
    """The original build is the kernel's, or nothing built on it can be trusted: the same
    release string, and every symbol vmlinux exports with the CRC the kernel's headers list
    (a difference means another config, compiler or source than Debian's)."""
    uts = (tree.linux / "include/generated/utsrelease.h").read_text()
    if f'"{kernel.release}"' not in uts:
        raise InfraError(f"the original build of {kernel.name} says {uts.strip()!r}, not {kernel.release}")
    # `make vmlinux` writes vmlinux.symvers; Module.symvers comes with `make modules`
    ours = symvers(tree.linux / "vmlinux.symvers") or symvers(tree.linux / "Module.symvers")
    theirs = symvers(kernel.build_dir / "Module.symvers")
    if not theirs:
        raise InfraError(f"{kernel.name}: the headers have no Module.symvers to check the build against")
    differ = sorted(s for s, crc in theirs.items() if ours.get(s) != crc)
    if differ:
        raise InfraError(f"the original build of {kernel.name} does not reproduce the kernel: {len(differ)} of "
                         f"{len(theirs)} vmlinux symbols differ in CRC or are missing (e.g. "
                         f"{', '.join(differ[:5])})")


def symvers(path: Path) -> dict[str, str]:
    """vmlinux's exported symbols -> CRC, from a Module.symvers."""
    out = {}
    try:
        text = path.read_text()
    except OSError:
        return {}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and parts[2] == "vmlinux":
            out[parts[1]] = parts[0]
    return out


def check_input(kernel: Kernel) -> None:
    """Refuse, before anything is fetched, a kernel the lab cannot build source diffs for."""
    why = refusal(kernel)
    if why:
        raise ConfigError(why, field="kernel")
