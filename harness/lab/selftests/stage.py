"""What goes into the guest for a kernel's selftests, built on the host.

The test modules are built against the kernel's own headers with its own compiler
(``kbuild``: one generated kbuild directory per module, cached like any patch). Where
they go depends on the line's scripts:

- up to 6.1 the scripts ``modprobe test_klp_*``: the modules go to
  ``/lib/modules/<release>/extra/`` with the kernel's module indexes regenerated on the
  host (``depmod -b`` over a tree linking the cached kernel's modules; ~1-3 s here, ~33 s
  in a TCG guest). The guest's ``/lib/modules`` is a read-only disk, so the guest lays a
  tmpfs overlay over it first (``suite``);
- later lines ``insmod test_modules/<name>.ko`` from their own directory: the modules go
  there, and ``test_klp-call_getpid`` (test-syscall.sh's load, a user program) is built
  with the host's compiler, static, beside the scripts.

The kernel's files are copied as they are; nothing is edited.
"""
from __future__ import annotations

import logging
import os
import shutil
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from ...core import hostcmd
from ...core.errors import ConfigError
from ...core.settings import Settings
from ...supply import kbuild
from ...supply.kernels.kernel import Kernel
from ...supply.kernels.source import KernelSource
from .cases import Case, cases_of, script_order

log = logging.getLogger(__name__)

MODULES_SUBDIR = "extra"                       # under /lib/modules/<release>, as for out-of-tree modules
GETPID_HELPER = "test_klp-call_getpid"         # test-syscall.sh's hammering user program
_INDEX_INPUTS = ("modules.order", "modules.builtin", "modules.builtin.modinfo")


@dataclass
class Plan:
    """The scripts a run will run (by name, in order) and their cases."""
    scripts: list[Path]
    cases: list[Case]


@dataclass
class Staged:
    tree: Path                          # becomes the guest's selftests directory
    modules_tar: Optional[Path]         # modprobe layout: unpacked into /lib/modules/<release>
    plan: Plan
    modules: dict[str, Path] = field(default_factory=dict)   # module name -> built .ko
    notes: list[str] = field(default_factory=list)


def plan(source: KernelSource, scripts: Optional[Sequence[str]] = None,
         extra_scripts: Sequence[Path] = ()) -> Plan:
    """The kernel's scripts (all, or those named in ``scripts``) then ``extra_scripts``
    (scripts of your own in the same style, run with the kernel's ``functions.sh``)."""
    order = script_order(source.selftests_dir)
    if scripts is not None:
        unknown = [s for s in scripts if s not in order]
        if unknown:
            raise ConfigError(f"{source.package} {source.version} has no selftest script "
                              f"{', '.join(unknown)} (it has: {', '.join(order)})", field="scripts")
        order = [s for s in order if s in scripts]
    paths = [source.selftests_dir / s for s in order]
    for extra in extra_scripts:
        extra = Path(extra)
        if not extra.is_file():
            raise ConfigError(f"extra selftest script {extra} does not exist", field="extra_scripts")
        if extra.name in order or extra.name == "functions.sh":
            raise ConfigError(f"extra selftest script {extra.name} would replace the kernel's own",
                              field="extra_scripts")
        paths.append(extra)
    cases = [c for p in paths for c in cases_of(p.name, p.read_text(errors="replace"))]
    return Plan(paths, cases)


def build_modules(source: KernelSource, kernel: Kernel, settings: Settings) -> dict[str, Path]:
    """Every test module, built against ``kernel`` (cached); name -> .ko."""
    out = {}
    for name, directory in source.test_modules().items():
        out[name] = kbuild.build(directory, kernel, settings).path
    return out


def stage(source: KernelSource, kernel: Kernel, settings: Settings, the_plan: Plan, work: Path) -> Staged:
    """Build and lay out in ``work`` everything the guest needs."""
    modules = build_modules(source, kernel, settings)
    tree = work / "livepatch"
    shutil.copytree(source.selftests_dir, tree, ignore=shutil.ignore_patterns("test_modules", "*.c"))
    for script in the_plan.scripts:
        if script.parent != source.selftests_dir:
            shutil.copyfile(script, tree / script.name)
            (tree / script.name).chmod(0o755)
    staged = Staged(tree, None, the_plan, modules)
    if source.modprobe_layout:
        staged.modules_tar = _modules_tarball(kernel, modules, work, settings)
        staged.notes.append(f"test modules built against {kernel.release}'s headers, installed under "
                            f"/lib/modules/{kernel.release}/{MODULES_SUBDIR} (a tmpfs overlay) with "
                            f"indexes from the host's depmod, for the scripts' modprobe")
    else:
        (tree / "test_modules").mkdir()
        for name, ko in modules.items():
            shutil.copyfile(ko, tree / "test_modules" / f"{name}.ko")
        helper = source.selftests_dir / f"{GETPID_HELPER}.c"
        if helper.is_file():
            _build_helper(helper, tree / GETPID_HELPER, settings)
        staged.notes.append(f"test modules built against {kernel.release}'s headers into test_modules/; "
                            "KDIR names that directory for the scripts' has_kdir check")
    return staged


def _build_helper(src: Path, out: Path, settings: Settings) -> None:
    # static: the guest's userland need not match the host's C library
    hostcmd.run(["cc", "-static", "-O2", "-o", out, src], what=f"build {src.name}",
                timeout=settings.timeouts.host_command)


def _modules_tarball(kernel: Kernel, modules: dict[str, Path], work: Path, settings: Settings) -> Path:
    """``extra/<name>.ko`` and the module indexes regenerated with them, as a tarball."""
    base = work / "depmod"
    top = base / "lib/modules" / kernel.release
    (top / MODULES_SUBDIR).mkdir(parents=True)
    for entry in sorted(Path(kernel.modules_dir).iterdir()):
        if entry.name in _INDEX_INPUTS:
            shutil.copyfile(entry, top / entry.name)
        elif entry.is_dir() and entry.name not in ("build", "source"):
            os.symlink(entry.resolve(), top / entry.name)    # depmod follows it: nothing copied
    for name, ko in modules.items():
        shutil.copyfile(ko, top / MODULES_SUBDIR / f"{name}.ko")
    hostcmd.run(["depmod", "-b", base, kernel.release], what=f"depmod {kernel.release} with the test modules",
                timeout=settings.timeouts.host_command)
    tar_path = work / "modules.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tar:
        tar.add(top / MODULES_SUBDIR, arcname=MODULES_SUBDIR)
        for f in sorted(top.glob("modules.*")):
            tar.add(f, arcname=f.name)
    return tar_path


def tarball(tree: Path, out: Path) -> Path:
    """``tree`` as a gzip'ed tarball whose top entry is the tree's own name."""
    with tarfile.open(out, "w:gz") as tar:
        tar.add(tree, arcname=tree.name)
    return out
