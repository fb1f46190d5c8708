"""The run's modules, ready for one kernel: built against its headers, or prebuilt and
checked. A patch that does not build, or was built for another kernel, fails here, before
anything boots; a module that is not a livepatch at all is the user's input error."""
from __future__ import annotations

from dataclasses import dataclass

from ..core.errors import ConfigError
from ..core.settings import Settings
from ..supply import build, kernels
from .faults import Failed
from .record import Reason
from .specs import ModuleSpec, Scenario


@dataclass(frozen=True)
class Modules:
    patch: build.Module
    targets: tuple[build.Module, ...]

    def by_name(self) -> dict[str, build.Module]:
        return {m.name: m for m in (self.patch, *self.targets)}


def _module(spec: ModuleSpec, kernel: kernels.Kernel, settings: Settings) -> build.Module:
    if spec.ko is not None:
        return build.inspect(spec.ko, settings)
    target = kernel
    if spec.build_for:
        target = kernels.fetch(kernels.get_definition(spec.build_for), settings)
    try:
        return build.build(spec.source, target, settings)
    except build.BuildError as exc:
        raise Failed(Reason("build", f"{spec.label} does not build for {target.name} "
                                     f"({target.release}):\n{exc.output[-3000:]}")) from None


def _compatible(module: build.Module, kernel: kernels.Kernel, what: str = "") -> None:
    try:
        build.check_compatible(module, kernel)
    except build.CompatError as exc:
        raise Failed(Reason("compat", f"{what}{exc}")) from None


def prepare(sc: Scenario, kernel: kernels.Kernel, settings: Settings) -> Modules:
    patch = _module(sc.patch, kernel, settings)
    if not patch.livepatch:
        raise ConfigError(f"{patch.name} ({patch.path}) is not a livepatch module (modinfo livepatch != Y)",
                          source=str(sc.path) if sc.path else None, field="patch")
    _compatible(patch, kernel)
    targets = []
    for spec in sc.targets:
        mod = _module(spec, kernel, settings)
        _compatible(mod, kernel, "target module: ")
        targets.append(mod)
    return Modules(patch, tuple(targets))
