"""``kind: local`` kernels: your own build, checked and turned into a ``Kernel``.

Nothing is copied or cached: the definition's ``vmlinuz``, ``modules`` and
``build`` paths are validated (each mistake points at its key in the YAML
file) and the release is derived from the modules directory.
"""
from __future__ import annotations

import logging
from pathlib import Path

from .kernel import Kernel
from .defs import KernelDef
from .tree import bzimage_release, compiler_from_config, first_file, module_compression

log = logging.getLogger(__name__)


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
    config = first_file([defn.build / ".config", modules_dir / "config",
                     defn.vmlinuz.parent / f"config-{release}"])
    return Kernel(name=defn.name, release=release, version="local", vmlinuz=defn.vmlinuz,
                  modules_dir=modules_dir, build_dir=defn.build, config=config,
                  compiler=compiler_from_config(config), packages=(),
                  module_compression=module_compression(modules_dir))
