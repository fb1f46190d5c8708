"""``Kernel``: a kernel ready to boot and to build modules against.

Made by ``kernelcache`` (a Debian kernel fetched into the cache, from its
manifest) or ``localkernel`` (your own build). It carries everything the
layers above need, so none of them reads the cache's files to learn about it:
the boot files, the kbuild directory, the compiler, the Debian suites it came
from and each package's Depends (what a build root must install for kbuild).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

# the packages whose Depends a module build needs (kbuild's compiler and libraries)
KBUILD_PACKAGES = ("linux-headers-", "linux-kbuild-")


@dataclass(frozen=True)
class PackageRef:
    name: str
    version: str
    sha256: str
    depends: Optional[str] = None   # the package's Depends field; None: not recorded


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
    suites: tuple[str, ...] = ()       # the Debian suites it was fetched from; () for local
    cache_entry: Optional[Path] = None  # its directory in the kernel cache; None for local

    @property
    def suite(self) -> Optional[str]:
        """The Debian suite it belongs to: the first suite without its pocket
        (``trixie-security`` -> ``trixie``); None for a local kernel."""
        return re.split(r"[-/]", self.suites[0])[0] if self.suites else None

    @property
    def kbuild_depends(self) -> Optional[tuple[str, ...]]:
        """The Depends fields of its headers and kbuild packages, as the archive states
        them; () for a local kernel, None when the cache did not record them."""
        fields = [p.depends for p in self.packages if p.name.startswith(KBUILD_PACKAGES)]
        if any(f is None for f in fields):
            return None
        return tuple(f for f in fields if f is not None)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "release": self.release, "version": self.version,
                "compiler": self.compiler, "module_compression": self.module_compression,
                "vmlinuz": str(self.vmlinuz), "modules_dir": str(self.modules_dir),
                "build_dir": str(self.build_dir),
                "config": str(self.config) if self.config else None,
                "packages": [{"name": p.name, "version": p.version, "sha256": p.sha256}
                             for p in self.packages]}
