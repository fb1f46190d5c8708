"""The frozen, validated specs a scenario is made of."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from ..core.errors import ConfigError


@dataclass(frozen=True)
class ServiceSpec:
    """The service in the guest and the load on it.

    ``command`` is a guest shell command that serves HTTP on ``port`` *in the
    foreground* (a daemonizing server leaves its session and cannot be stopped);
    ``None`` runs the default server (``DEFAULT_SERVER``): GET answers 200 with a
    short body, or, with ``LAB_SERVE_FILE=<path>`` in its environment
    (``start_service(..., serve_file=path)``), with that file's contents read
    afresh for every request.
    """
    port: int = 8080
    path: str = "/"
    rate: float = 20.0        # requests per second, open loop
    timeout: float = 2.0      # per request, from the moment it is sent
    command: Optional[str] = None

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ConfigError(f"must be a TCP port, not {self.port!r}", field="service.port")
        if not self.path.startswith("/") or any(c in self.path for c in " \r\n"):
            raise ConfigError(f"must be an absolute URL path without spaces, not {self.path!r}",
                              field="service.path")
        for name in ("rate", "timeout"):
            value = getattr(self, name)
            if not 0 < value < math.inf:
                raise ConfigError(f"must be positive and finite, not {value!r}", field=f"service.{name}")


@dataclass(frozen=True)
class StressSpec:
    enabled: bool = True
    # modest: the guest may be a 2-vCPU TCG machine on one host thread, and the service and
    # the probe must stay measurable. No --io: its sync() storms stall a TCG guest for seconds.
    args: str = "--cpu 1 --cpu-load 40 --vm 1 --vm-bytes 32M"


@dataclass(frozen=True)
class ProbeSpec:
    command: Optional[str] = None
    interval: float = 0.5     # seconds from one run's start to the next (or more, if a run is slower)

    def __post_init__(self) -> None:
        if not 0 < self.interval < math.inf:
            raise ConfigError(f"must be positive and finite, not {self.interval!r}",
                              field="probe.interval")
