"""Machine backends behind one small interface; pick one by name."""
from __future__ import annotations

from ...core.settings import BACKENDS
from .base import Disk, Forward, Machine, MachineSpec


def check_backend(name: str) -> str:
    from ...core.errors import ConfigError
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; known: {', '.join(BACKENDS)}", field="backend")
    return name


__all__ = ["BACKENDS", "Disk", "Forward", "Machine", "MachineSpec", "check_backend"]
