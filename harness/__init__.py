"""livepatch-lab: prove a kernel livepatch in real QEMU guests before production.

Public API (heavy modules are imported lazily by their users):
``Settings``, ``Timeouts`` and the error types; ``livepatch_lab.kernels``,
``livepatch_lab.images`` and ``livepatch_lab.session.boot`` for guests.
"""
from .core.errors import (BootError, ConfigError, DeadlineExceeded, GuestCommandError, GuestConnectionError,
                          HarnessError, HostCommandError, InfraError, LivepatchError)
from .core.settings import Settings, Timeouts
from .core.version import __version__

__all__ = ["BootError", "ConfigError", "DeadlineExceeded", "GuestCommandError",
           "GuestConnectionError", "HarnessError", "HostCommandError", "InfraError",
           "LivepatchError", "Settings", "Timeouts", "__version__"]
