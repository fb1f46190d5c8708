"""The run's modules, ready for one kernel: built against its headers, or prebuilt and
checked. A patch that does not build, or was built for another kernel, fails here, before
anything boots; a module that is not a livepatch at all is the user's input error."""
from __future__ import annotations

from dataclasses import dataclass

from ..core.settings import Settings
from ..supply import kbuild, kerneldefs, kernelfetch, modinfo
from ..supply.kernel import Kernel
from .faults import Failed
from .record import Reason
from .specs import ModuleSpec, Scenario


@dataclass(frozen=True)
class Modules:
    patch: modinfo.Module
    targets: tuple[modinfo.Module, ...]

    def by_name(self) -> dict[str, modinfo.Module]:
        return {m.name: m for m in (self.patch, *self.targets)}


def _module(spec: ModuleSpec, kernel: Kernel, settings: Settings) -> modinfo.Module:
    if spec.ko is not None:
        return modinfo.inspect(spec.ko, settings)
    target = kernel
    if spec.build_for:
        target = kernelfetch.fetch(kerneldefs.get_definition(spec.build_for), settings)
    try:
        return kbuild.build(spec.source, target, settings)
    except kbuild.BuildError as exc:
        raise Failed(Reason("build", f"{spec.label} does not build for {target.name} "
                                     f"({target.release}):\n{exc.output[-3000:]}")) from None


def _compatible(module: modinfo.Module, kernel: Kernel, what: str = "") -> None:
    try:
        modinfo.check_compatible(module, kernel)
    except modinfo.CompatError as exc:
        raise Failed(Reason("compat", f"{what}{exc}")) from None


def prepare(sc: Scenario, kernel: Kernel, settings: Settings) -> Modules:
    patch = _module(sc.patch, kernel, settings)
    modinfo.require_livepatch(patch, str(sc.path) if sc.path else None)
    _compatible(patch, kernel)
    targets = []
    for spec in sc.targets:
        mod = _module(spec, kernel, settings)
        _compatible(mod, kernel, "target module: ")
        targets.append(mod)
    return Modules(patch, tuple(targets))
