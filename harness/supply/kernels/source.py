"""A kernel's own livepatch selftests and samples, from its ``linux-source-<series>`` package.

The kernel ships tests of its livepatch machinery (``tools/testing/selftests/livepatch``,
with test modules in ``lib/livepatch`` up to 6.1 and in the selftests' ``test_modules/``
after) and the samples its documentation walks through (``samples/livepatch``). Debian
ships the whole tree as ``linux-source-<major.minor>``, built from the same source
package as the kernel: the one of the kernel's exact version is fetched through the
kernel's own private apt root (verified against the archive keyring like the kernel's
packages), only those three directories are unpacked from its tarball, and the .deb
(~140 MB) is dropped. When the archive has no linux-source of the kernel's version, the
closest one is used and ``KernelSource.note`` says so.

Layout: ``settings.kernel_sources_dir/<kernel line>/<kernel version>/`` with
``manifest.json`` (written last: its presence marks the entry complete), ``tree/`` (the
unpacked directories, paths as in the kernel tree) and ``kbuild/{tests,samples}/<module>/``:
one generated kbuild directory per module (its ``Kbuild`` names that one module; every
``.c`` of its directory is beside it, since ``test_klp_state3.c`` includes
``test_klp_state2.c``), ready for ``kbuild.build``. Nothing of it is ever committed to
the lab's repository.
"""
from __future__ import annotations

import json
import logging
import re
import shutil
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable, Optional, Sequence

from ...core import cacheentry, hostcmd
from ...core.errors import ConfigError, InfraError
from ...core.settings import Settings
from .. import apt, debversion
from .kernel import Kernel
from .cache import version_dir

log = logging.getLogger(__name__)

FORMAT = 1
MANIFEST = "manifest.json"
SELFTESTS = "tools/testing/selftests/livepatch"
OLD_TEST_MODULES = "lib/livepatch"                  # up to 6.1: built with the kernel, modprobe'd
NEW_TEST_MODULES = f"{SELFTESTS}/test_modules"      # after: built by the selftests, insmod'ed
SAMPLES = "samples/livepatch"
PARTS = (SELFTESTS, OLD_TEST_MODULES, SAMPLES)


@dataclass(frozen=True)
class KernelSource:
    """The unpacked parts of one kernel's source package."""
    kernel: str              # the kernel line it serves
    kernel_version: str
    package: str             # linux-source-6.1
    version: str             # the package's Debian version
    sha256: str
    path: Path               # the cache entry
    note: Optional[str] = None   # why another version than the kernel's was used

    @property
    def exact(self) -> bool:
        return self.version == self.kernel_version

    @property
    def tree(self) -> Path:
        return self.path / "tree"

    @property
    def selftests_dir(self) -> Path:
        return self.tree / SELFTESTS

    @property
    def modprobe_layout(self) -> bool:
        """True when the scripts modprobe the test modules (up to 6.1) rather than insmod
        them from ``test_modules/`` beside themselves."""
        return not (self.tree / NEW_TEST_MODULES).is_dir()

    def test_modules(self) -> dict[str, Path]:
        """Module name (``test_klp_livepatch``) -> its generated kbuild directory."""
        return _kbuild_dirs(self.path / "kbuild" / "tests")

    def samples(self) -> dict[str, Path]:
        """Sample file stem (``livepatch-sample``) -> its generated kbuild directory."""
        return _kbuild_dirs(self.path / "kbuild" / "samples")

    def sample(self, name: str) -> Path:
        found = self.samples()
        if name not in found:
            raise ConfigError(f"{self.package} {self.version} has no sample {name!r} in {SAMPLES} "
                              f"(it has: {', '.join(sorted(found)) or 'none'})", field="kernel-sample")
        return found[name]

    def describe(self) -> dict:
        return {"package": self.package, "version": self.version, "exact": self.exact,
                "note": self.note, "sha256": self.sha256, "path": str(self.path)}


def _kbuild_dirs(base: Path) -> dict[str, Path]:
    try:
        return {p.name: p for p in sorted(base.iterdir()) if (p / "Kbuild").is_file()}
    except OSError:
        return {}


def package_for(kernel_version: str) -> str:
    """``6.1.192-3`` -> ``linux-source-6.1``; ``7.2.13-1`` -> ``linux-source-7.2``."""
    upstream = debversion.parse(kernel_version)[1]
    m = re.match(r"^(\d+)\.(\d+)", upstream)
    if not m:
        raise ConfigError(f"cannot tell the kernel series of version {kernel_version!r}", field="version")
    return f"linux-source-{m.group(1)}.{m.group(2)}"


def choose(records: Iterable[apt.PackageRecord], package: str,
           kernel_version: str) -> tuple[apt.PackageRecord, Optional[str]]:
    """The record of ``package`` at the kernel's exact version; else the closest one (the
    newest older, else the oldest newer) with a note saying so. ``ConfigError`` if none."""
    mine = {r.version: r for r in records if r.package == package}
    if kernel_version in mine:
        return mine[kernel_version], None
    if not mine:
        raise ConfigError(f"the archive has no {package} at all (the kernel is {kernel_version})",
                          field=package)
    key = debversion.key(kernel_version)
    older = [v for v in mine if debversion.key(v) < key]
    pick = (max(older, key=debversion.key) if older else min(mine, key=debversion.key))
    note = (f"the archive has no {package} {kernel_version} (the kernel's version); using the "
            f"closest, {pick} (available: {', '.join(sorted(mine, key=debversion.key))})")
    return mine[pick], note


def entry_dir(kernel: Kernel, settings: Settings) -> Path:
    return settings.kernel_sources_dir / kernel.name / version_dir(kernel.version)


def _from_manifest(kernel: Kernel, path: Path) -> Optional[KernelSource]:
    try:
        m = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if m.get("format") != FORMAT or m.get("kernel_version") != kernel.version:
        return None
    return KernelSource(kernel.name, kernel.version, m["package"], m["version"], m["sha256"], path,
                        m.get("note"))


def cached(kernel: Kernel, settings: Settings) -> Optional[KernelSource]:
    return _from_manifest(kernel, entry_dir(kernel, settings))


def fetch(kernel: Kernel, settings: Settings) -> KernelSource:
    """The kernel's selftests and samples: from the cache (no network), else fetched,
    verified, unpacked and cached. One process per kernel line works at a time."""
    if not kernel.suites:
        raise ConfigError(f"{kernel.name} is a local build: its livepatch selftests and samples come "
                          "from a Debian linux-source package, and it has none", field="kernel")
    final = entry_dir(kernel, settings)
    return cacheentry.obtain(lambda: _from_manifest(kernel, final), lambda: _install(kernel, settings, final),
                             lock=settings.locks_dir / f"source-{kernel.name}.lock", timeout=settings.timeouts.lock,
                             what=f"fetching the kernel source of {kernel.name}")


def _install(kernel: Kernel, settings: Settings, final: Path) -> None:
    package = package_for(kernel.version)
    root = apt.root_for(settings, kernel.suites)
    apt.update(root)
    rec, note = choose(apt.packages(root, lambda n: n == package), package, kernel.version)
    if note:
        log.warning("%s: %s", kernel.name, note)
    with cacheentry.staging(final.parent, f".{final.name}-", f"fetching {package} for {kernel.name}") as work:
        log.info("fetching %s %s (%.0f MB) for %s's selftests and samples", package, rec.version,
                 rec.size / 1e6, kernel.name)
        deb = apt.download(root, package, rec.version, work / "deb", sha256=rec.sha256 or None,
                           size=rec.size or None)
        start = time.monotonic()
        out = work / "out"
        out.mkdir()
        found = unpack(deb.path, out / "tree", settings)
        generate_kbuild_dirs(out / "tree", out / "kbuild")
        log.info("unpacked %s from %s in %.1fs", ", ".join(found), package, time.monotonic() - start)
        manifest = {"format": FORMAT, "kernel": kernel.name, "kernel_version": kernel.version,
                    "package": package, "version": rec.version, "sha256": deb.sha256,
                    "size": deb.size, "note": note, "parts": found,
                    "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        cacheentry.publish(out, final)


def unpack(deb: Path, dest: Path, settings: Settings, parts: Sequence[str] = PARTS) -> list[str]:
    """Unpack ``parts`` of the kernel tarball inside the linux-source ``deb`` into ``dest``
    (paths as in the kernel tree); returns the parts found. Only regular files and
    directories are written, never outside ``dest``."""
    staging = dest.parent / ".deb-contents"
    hostcmd.run(["dpkg-deb", "-x", deb, staging], what=f"unpack {deb.name}",
                timeout=settings.timeouts.host_command)
    tarballs = sorted((staging / "usr/src").glob("linux-source-*.tar.*"))
    if len(tarballs) != 1:
        raise InfraError(f"{deb.name}: expected one kernel tarball in /usr/src, found "
                         f"{[t.name for t in tarballs] or 'none'}")
    deadline = time.monotonic() + settings.timeouts.host_command
    found: set[str] = set()
    try:
        with tarfile.open(tarballs[0]) as tar:
            for member in tar:
                if time.monotonic() > deadline:
                    raise InfraError(f"unpacking {tarballs[0].name} took over "
                                     f"{settings.timeouts.host_command:g}s")
                rel = _wanted(member.name, parts)
                if rel is None or not (member.isfile() or member.isdir()):
                    continue
                found.add(next(p for p in parts if rel == p or rel.startswith(p + "/")))
                target = dest / rel
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, open(target, "wb") as out:   # type: ignore[union-attr]
                    shutil.copyfileobj(src, out)
                target.chmod(0o755 if member.mode & 0o111 else 0o644)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise InfraError(f"cannot unpack {tarballs[0].name} from {deb.name}: {exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if SELFTESTS not in found:
        raise InfraError(f"{deb.name} has no {SELFTESTS}")
    return sorted(found)


def _wanted(name: str, parts: Sequence[str]) -> Optional[str]:
    """``linux-source-6.1/lib/livepatch/x.c`` -> ``lib/livepatch/x.c`` when under one of
    ``parts`` (and harmless: no ``..``, not absolute); else None."""
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or len(path.parts) < 2:
        return None
    rel = "/".join(path.parts[1:])
    return rel if any(rel == p or rel.startswith(p + "/") for p in parts) else None


def generate_kbuild_dirs(tree: Path, out: Path) -> None:
    """One kbuild directory per module of the test-module and sample directories."""
    tests = tree / NEW_TEST_MODULES if (tree / NEW_TEST_MODULES).is_dir() else tree / OLD_TEST_MODULES
    for kind, directory in (("tests", tests), ("samples", tree / SAMPLES)):
        sources = sorted(directory.glob("*.c")) if directory.is_dir() else []
        for c in sources:
            mod = out / kind / c.stem
            mod.mkdir(parents=True)
            for sibling in sources:
                shutil.copyfile(sibling, mod / sibling.name)
            (mod / "Kbuild").write_text(f"# generated by livepatch-lab from {directory.relative_to(tree)}\n"
                                        f"obj-m := {c.stem}.o\n")
