"""Machine backends behind one small interface, picked by name.

Each backend module is imported only when asked for: the libvirt one needs
libvirt-python, an optional dependency.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, cast

from ...core.errors import ConfigError
from ...core.settings import BACKENDS, Settings
from .base import Backend, Disk, Forward, Machine, MachineExit, MachineSpec


def _qemu() -> type:
    from .qemu import QemuBackend
    return QemuBackend


def _libvirt() -> type:
    from .libvirt import LibvirtBackend
    return LibvirtBackend


# name -> the Backend class (a loader, so a backend's module loads only when used)
REGISTRY: dict[str, Callable[[], type]] = {"qemu": _qemu, "libvirt": _libvirt}


def check_backend(name: str) -> str:
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; known: {', '.join(BACKENDS)}", field="backend")
    return name


def get(settings: Settings) -> Backend:
    """The backend ``settings.backend`` names, bound to ``settings``."""
    return REGISTRY[check_backend(settings.backend)]()(settings)


def reap(record: dict, run_path: Path, same_boot: bool) -> bool:
    """Hand a dead run's owner record to the reaper of the backend that wrote it.
    False if the record names no backend this lab knows (nothing was started)."""
    name = record.get("backend")
    if name is None:   # written before records named their backend
        name = "libvirt" if "libvirt" in record else "qemu" if record.get("qemu_pid") else ""
    loader = REGISTRY.get(name)
    if loader is None:
        return False
    cast("type[Backend]", loader()).reap(record, run_path, same_boot)   # a Backend class: reap is static
    return True


__all__ = ["BACKENDS", "REGISTRY", "Backend", "Disk", "Forward", "Machine", "MachineExit",
           "MachineSpec", "check_backend", "get", "reap"]
