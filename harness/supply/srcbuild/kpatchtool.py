"""kpatch-build, made from Debian's source package inside a build root of the kernel's suite.

Debian packages kpatch in trixie and sid only, built against their C library; a kernel from
an older suite needs kpatch-build in a tree of *its* suite and compiler (kpatch-build
refuses a compiler other than the kernel's). So the upstream tarball of Debian's kpatch
source package is fetched (the signed Sources index gives its sha256) and its builder
compiled in the build root, installed under ``/opt/kpatch``. Only kpatch-build is made: its
tools (create-diff-object and friends), the ``kpatch-cc`` wrapper and the patch module's
sources; the kpatch core module and CLI are not needed for livepatch modules.
"""
from __future__ import annotations

import logging
import re
import shlex
import tarfile
from pathlib import Path
from typing import Any

from ...core import hostcmd
from ...core.errors import HostCommandError, InfraError
from ...core.settings import Settings
from .. import apt, aptsources, debversion
from ..buildroot import AddOn

log = logging.getLogger(__name__)

SUITE = "trixie"            # the oldest suite that packages kpatch
PACKAGE = "kpatch"
PREFIX = "/opt/kpatch"      # inside the build root
KPATCH_BUILD = f"{PREFIX}/bin/kpatch-build"
TOOLS = f"{PREFIX}/libexec/kpatch"
DATA = f"{PREFIX}/share/kpatch"
# what a kernel build and kpatch-build need beyond kbuild for modules: the kernel's build
# dependencies (bison, flex, bc, openssl headers, pahole for BTF), and kpatch-build's own
# (gawk, patch and lsdiff, libelf to compile its tools)
PACKAGES = ("bc", "bison", "flex", "libelf-dev", "libssl-dev", "dwarves", "gawk", "patch", "patchutils",
            "binutils", "python3", "cpio", "kmod", "rsync", "openssl", "xz-utils")
# the make variables kpatch-build builds with (its "Building original source"); the kept
# original build is made with exactly these, so that kpatch-build's own pass over it finds
# nothing to do (a difference in one flag recompiles the whole kernel). kpatch-build adds
# -gz=none when the compiler takes it (its gcc_version_check): KCFLAGS_GZ, decided per
# build root when it is made and recorded in its manifest as "kcflags".
KCFLAGS = f"-I{DATA}/patch -ffunction-sections -fdata-sections"
KCFLAGS_GZ = "-gz=none"
MAKE_VARS = (f"CC={TOOLS}/kpatch-cc gcc", f"LD={TOOLS}/kpatch-cc ld")


def tarball(settings: Settings) -> tuple[Path, str]:
    """The newest upstream tarball of kpatch in ``SUITE``'s sources, verified: (path, version)."""
    root = apt.root_for(settings, [SUITE], sources=True)
    apt.update(root)
    recs = aptsources.sources(root, lambda n: n == PACKAGE)
    if not recs:
        raise InfraError(f"{SUITE}'s source lists have no {PACKAGE}; cannot make kpatch-build")
    rec = max(recs, key=lambda r: debversion.key(r.version))
    orig = [f for f in rec.files if re.search(r"\.orig\.tar\.(gz|xz|bz2)$", f.name)]
    if len(orig) != 1:
        raise InfraError(f"{PACKAGE} {rec.version}: expected one upstream tarball, the index lists "
                         f"{[f.name for f in rec.files]}")
    dest = settings.downloads_dir / PACKAGE / orig[0].name
    return aptsources.download_source_file(root, orig[0], dest), rec.version


def kcflags(tree: Path, settings: Settings) -> str:
    """KCFLAGS as kpatch-build will set them with this build root's compiler."""
    probe = "echo 'void f(void) {}' > /tmp/gz.c && gcc -c -gz=none -o /tmp/gz.o /tmp/gz.c; rc=$?; rm -f /tmp/gz.*; exit $rc"
    try:
        hostcmd.run(["chroot", str(tree), "env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin", "sh", "-c", probe],
                    what="does the compiler take -gz=none", timeout=settings.timeouts.host_command)
    except HostCommandError:
        return KCFLAGS
    return f"{KCFLAGS} {KCFLAGS_GZ}"


def addon(settings: Settings, compiler: str) -> AddOn:
    """The build root add-on holding kpatch-build for a kernel built with ``compiler``."""
    path, version = tarball(settings)
    upstream = debversion.parse(version)[1]

    def finish(tree: Path) -> dict[str, Any]:
        src = tree / "opt" / "kpatch-src"
        src.mkdir(parents=True)
        try:
            with tarfile.open(path) as tar:
                tar.extractall(src, filter="data")
        except (tarfile.TarError, OSError) as exc:
            raise InfraError(f"cannot unpack {path.name}: {exc}") from None
        top = [p for p in src.iterdir() if p.is_dir()]
        if len(top) != 1:
            raise InfraError(f"{path.name}: expected one top directory, found {[p.name for p in top]}")
        # kpatch-build calls `gcc`: make it the kernel's compiler, whatever the suite's default
        (tree / "usr/local/bin/gcc").unlink(missing_ok=True)
        (tree / "usr/local/bin/gcc").symlink_to(f"/usr/bin/{compiler}")
        inside = "/opt/kpatch-src/" + top[0].name
        script = (f"cd {shlex.quote(inside)} && make -C kpatch-build && "
                  f"make -C kpatch-build install PREFIX={PREFIX} && "
                  f"make -C kmod install PREFIX={PREFIX} BUILDMOD=no")
        hostcmd.run(["chroot", str(tree), "env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin", "LC_ALL=C.UTF-8",
                     "sh", "-c", script], what=f"build kpatch-build {upstream}",
                    timeout=settings.timeouts.image_build)
        if not (tree / KPATCH_BUILD.lstrip("/")).is_file():
            raise InfraError(f"building kpatch {upstream} installed no {KPATCH_BUILD}")
        return {"kpatch": upstream, "kpatch_tarball": path.name, "kcflags": kcflags(tree, settings)}

    return AddOn(f"kpatch-{upstream}", PACKAGES, finish)
