"""The QEMU backend: the command line (pure), the process, how it ended, the backend."""
from __future__ import annotations

from .backend import QemuBackend
from .command import QemuConfig, build_command
from .exits import classify
from .machine import QemuMachine

__all__ = ["QemuBackend", "QemuConfig", "QemuMachine", "build_command", "classify"]
