"""The run's modules, ready for one kernel: built against its headers, or prebuilt and
checked. A patch that does not build, or was built for another kernel, fails here, before
anything boots; a module that is not a livepatch at all is the user's input error."""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, cast

from ...core.errors import ConfigError
from ...core.settings import Settings
from ...supply import kbuild, modinfo, signing
from ...supply.kernels import defs as kerneldefs, fetch as kernelfetch, source as kernelsource
from ...supply.kernels.kernel import Kernel
from ...supply.srcbuild import diff as srcdiff, kpatch as srckpatch, tree as srctree
from .faults import Failed
from .record import Reason
from ..scenario.specs import ModuleSpec, Scenario


@dataclass(frozen=True)
class Prepared:
    module: modinfo.Module
    spec: ModuleSpec
    livepatch: bool
    origin: dict = field(default_factory=dict)    # a module built from a diff: the diff's hash, the source


@dataclass(frozen=True)
class Modules:
    """Every module of a run by module name (the candidate first), and the names the scenario
    calls them by."""
    patch: str                                            # the patch under test
    all: dict[str, Prepared]
    keys: dict[str, str] = field(default_factory=dict)    # scenario key -> module name
    old: Optional[str] = None                             # the patch upgraded from

    @property
    def targets(self) -> list[str]:
        """Target modules loaded before the run (a late one is loaded by a step)."""
        return [n for n, p in self.all.items() if not p.livepatch and not p.spec.late]

    def by_name(self) -> dict[str, modinfo.Module]:
        return {n: p.module for n, p in self.all.items()}

    def params(self, name: str) -> tuple[tuple[str, str], ...]:
        return self.all[name].spec.params

    def describe(self) -> list[dict[str, str]]:
        """Each module of the run: its role, name, file and signature (for the JSON and the text)."""
        return [{"role": "patch" if n == self.patch else "upgraded from" if n == self.old else
                 "patch" if p.livepatch else "target", "name": n, "path": str(p.module.path),
                 "signature": p.module.describe_signature(), **p.origin} for n, p in self.all.items()]


def _module(spec: ModuleSpec, kernel: Kernel, settings: Settings) -> modinfo.Module:
    if spec.ko is not None:
        return modinfo.inspect(spec.ko, settings)
    target = kernel
    if spec.build_for:
        target = kernelfetch.fetch(kerneldefs.get_definition(spec.build_for), settings)
    # a kernel sample: the target kernel's own, from its linux-source package
    source = kernelsource.fetch(target, settings).sample(spec.sample) if spec.sample else spec.source
    try:
        # not None: a spec is a .ko, a kernel sample or a source directory (the loader's check)
        return kbuild.build(cast(Path, source), target, settings)
    except kbuild.BuildError as exc:
        raise Failed(Reason("build", f"{spec.label} does not build for {target.name} "
                                     f"({target.release}):\n{exc.output[-3000:]}")) from None


def _from_diff(spec: ModuleSpec, kernel: Kernel, settings: Settings,
               artifacts: Optional[Path]) -> tuple[modinfo.Module, dict]:
    """kpatch-build's module of a source diff for ``kernel``, and what the record keeps of how
    it was made; the builder's log goes into ``artifacts``. The diff not applying to the
    kernel's source is the patch's ``compat`` failure, the builder's refusal its ``build``."""
    path = cast(Path, spec.diff)
    log_name = f"kpatch-build-{path.stem}.log"
    try:
        built = srckpatch.build(srcdiff.load(path), kernel, settings, targets=spec.build_targets)
    except srckpatch.DiffDoesNotApply as exc:
        raise Failed(Reason("compat", str(exc))) from None
    except srckpatch.BuildRefused as exc:
        kept = _keep(exc.log_path, artifacts, log_name)
        raise Failed(Reason("build", f"{exc}\n(the builder's log: {kept or exc.log_path})")) from None
    kept = _keep(built.log, artifacts, log_name)
    return built.module, {"diff": str(path), "diff_sha256": built.diff_sha256, "kernel_source": built.source,
                          "builder_log": str(kept or built.log), "build_seconds": built.seconds,
                          "build_cached": built.cached}


def _keep(log: Optional[Path], artifacts: Optional[Path], name: str) -> Optional[Path]:
    if log is None or artifacts is None or not log.is_file():
        return None
    artifacts.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(log, artifacts / name)
    return artifacts / name


def _compatible(module: modinfo.Module, kernel: Kernel, what: str = "") -> None:
    try:
        modinfo.check_compatible(module, kernel)
    except modinfo.CompatError as exc:
        raise Failed(Reason("compat", f"{what}{exc}")) from None


def refuse_early(sc: Scenario, kernel: Kernel) -> None:
    """A kernel the scenario's source diffs cannot be built for (IBT, no debug info, a local
    build) is refused as soon as the kernel is known, before the image or any module is made."""
    specs = [sc.patch, *([sc.upgrade_from] if sc.upgrade_from else []), *sc.patches.values()]
    if any(s.diff is not None for s in specs):
        srctree.check_input(kernel)


def prepare(sc: Scenario, kernel: Kernel, settings: Settings, artifacts: Optional[Path] = None) -> Modules:
    source = str(sc.path) if sc.path else None
    done: dict[int, str] = {}      # id(spec) -> module name: a spec named twice is built once
    out: dict[str, Prepared] = {}
    keys: dict[str, str] = {}

    def add(spec: ModuleSpec, livepatch: bool, where: str) -> str:
        if id(spec) in done:
            return done[id(spec)]
        origin: dict = {}
        if spec.diff is not None:
            mod, origin = _from_diff(spec, kernel, settings, artifacts)
        else:
            mod = _module(spec, kernel, settings)
        if sc.security.sign_key:   # every module of the run, as the vendor's build would sign them
            # the loader takes sign_key only with sign_cert
            mod = signing.sign(mod, kernel, sc.security.sign_key, cast(Path, sc.security.sign_cert), settings)
        if livepatch:
            modinfo.require_livepatch(mod, source, where)
        _compatible(mod, kernel, "" if livepatch else "target module: ")
        if mod.name in out:
            raise ConfigError(f"{spec.label} is module {mod.name}, like {out[mod.name].spec.label}: "
                              "one run loads a module once", source=source, field=where)
        out[mod.name] = Prepared(mod, spec, livepatch, origin)
        done[id(spec)] = mod.name
        if spec.key:
            keys[spec.key] = mod.name
        return mod.name

    patch = add(sc.patch, True, "patch")
    old = add(sc.upgrade_from, True, "upgrade_from") if sc.upgrade_from else None
    for key, spec in sc.patches.items():
        add(spec, True, f"patches.{key}")
    for i, spec in enumerate(sc.targets):
        add(spec, False, f"target_modules[{i}]")
    return Modules(patch, out, keys, old)
