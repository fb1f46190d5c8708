"""Which toolchain builds modules for a kernel: the host's compiler, or a build root.

kbuild's ``CC`` must be the kernel's compiler major: 6.12's flags
(``-fmin-function-alignment=16``) are unknown to gcc-12. And the kernel's
prebuilt kbuild binaries (fixdep, modpost, objtool) must run: a newer suite's
may need a newer glibc than the host's (checked by starting them). So:

- ``host``: the host's ``gcc-N`` when N is the kernel's compiler major (or a
  known-good substitute: Debian 5.10 is built with gcc-10, and gcc-12 builds
  modules for it that load and run), and the kernel's kbuild binaries run here;
- ``buildroot``: otherwise, a minimal Debian tree of the kernel's own suite
  (trixie for gcc-14, sid for gcc-16), see ``buildroot``.

Everything is decided from the ``Kernel`` (its compiler, suite, build
directory) and the host; nothing here reads the kernel cache.
"""
from __future__ import annotations

import functools
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional

from ..core import hostcmd
from ..core.errors import ConfigError, HostCommandError, InfraError
from .kernels.kernel import Kernel

log = logging.getLogger(__name__)

# kernel compiler -> host compilers known to build working modules for it
SUBSTITUTES: dict[str, tuple[str, ...]] = {"gcc-10": ("gcc-12",)}
# the Debian suite whose gcc-N is the default/available one (used when the kernel names none)
SUITE_FOR_COMPILER: dict[str, str] = {"gcc-10": "bullseye", "gcc-12": "bookworm",
                                      "gcc-14": "trixie", "gcc-16": "sid"}
KBUILD_BINARIES = ("scripts/basic/fixdep", "scripts/mod/modpost", "tools/objtool/objtool")
_LOADER_TROUBLE = ("GLIBC_", "error while loading shared libraries", "cannot execute")
_COMPILER = re.compile(r"^(?P<cc>gcc|clang)-(?P<major>\d+)$")


@dataclass(frozen=True)
class Toolchain:
    kind: str                # "host" | "buildroot"
    cc: str                  # kbuild's CC and HOSTCC, e.g. "gcc-14"
    suite: Optional[str] = None   # buildroot: the Debian suite it comes from

    @property
    def id(self) -> str:
        return f"host-{self.cc}" if self.kind == "host" else f"{self.suite}-{self.cc}"


def compiler_major(compiler: Optional[str]) -> Optional[int]:
    m = _COMPILER.match(compiler or "")
    return int(m.group("major")) if m else None


def choose_toolchain(kernel_compiler: Optional[str], host_compilers: Iterable[str], suite: str,
                     *, host_runs_kbuild: bool = True) -> Toolchain:
    """The toolchain for a kernel built with ``kernel_compiler`` (``"gcc-14"``).

    ``host_compilers``: the ``gcc-N`` names the host has. ``suite``: the kernel's
    own Debian suite (where a build root comes from). ``host_runs_kbuild``: the
    kernel's kbuild binaries run on this host (their glibc is not newer).
    """
    host = list(host_compilers)
    if kernel_compiler is None:
        if not host:
            raise ConfigError("the kernel names no compiler and the host has no gcc-N",
                              field="compiler")
        return Toolchain("host", sorted(host, key=lambda c: compiler_major(c) or 0)[-1])
    m = _COMPILER.match(kernel_compiler)
    if not m:
        raise ConfigError(f"unrecognised kernel compiler {kernel_compiler!r}", field="compiler")
    if m.group("cc") != "gcc":
        raise ConfigError(f"the kernel was built with {kernel_compiler}; only gcc-built kernels "
                          "are supported", field="compiler")
    if host_runs_kbuild:
        if kernel_compiler in host:
            return Toolchain("host", kernel_compiler)
        for sub in SUBSTITUTES.get(kernel_compiler, ()):
            if sub in host:
                return Toolchain("host", sub)
    return Toolchain("buildroot", kernel_compiler, suite)


def host_compilers(names: Iterable[str], which: Callable[[str], Optional[str]] = shutil.which
                   ) -> list[str]:
    return [n for n in names if which(n)]


@functools.lru_cache(maxsize=None)
def host_compiler_version(cc: str) -> str:
    out = hostcmd.run([cc, "--version"], what=f"{cc} --version", timeout=30)
    return out.splitlines()[0].strip() if out.strip() else cc


@functools.lru_cache(maxsize=None)
def host_runs_kbuild(build_dir: Path) -> bool:
    """Whether the kernel's prebuilt kbuild binaries run on this host: a newer suite's
    may need a newer glibc or libraries the host lacks. Each is started with no
    arguments (it complains about usage) and the dynamic loader's complaints are looked for."""
    for rel in KBUILD_BINARIES:
        binary = build_dir / rel
        if not binary.is_file():
            continue   # kbuild builds or does not need it
        try:
            hostcmd.run([str(binary)], what=f"run the kernel's {binary.name}", timeout=30)
        except HostCommandError as exc:
            if exc.rc is None or any(t in exc.output for t in _LOADER_TROUBLE):
                log.info("%s does not run on this host: %s", binary, exc.output.strip()[:200])
                return False
        except InfraError as exc:
            log.info("%s does not run on this host: %s", binary, exc)
            return False
    return True


def kernel_suite(kernel: Kernel) -> str:
    """The Debian suite a build root for ``kernel`` comes from: the kernel's own, else
    (a local kernel) the suite whose compiler it names."""
    if kernel.suite:
        return kernel.suite
    if kernel.compiler in SUITE_FOR_COMPILER:
        return SUITE_FOR_COMPILER[kernel.compiler]
    raise ConfigError(f"cannot tell which Debian suite has {kernel.compiler} for {kernel.name}",
                      field="compiler")


def toolchain_for(kernel: Kernel) -> Toolchain:
    wanted = [kernel.compiler] if kernel.compiler else []
    wanted += list(SUBSTITUTES.get(kernel.compiler or "", ()))
    if not wanted:
        wanted = [f"gcc-{n}" for n in range(20, 8, -1)]
    tc_suite = kernel_suite(kernel) if kernel.compiler else "bookworm"
    return choose_toolchain(kernel.compiler, host_compilers(wanted), tc_suite,
                            host_runs_kbuild=host_runs_kbuild(kernel.build_dir))
