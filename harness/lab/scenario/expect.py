"""What a run is judged against, apart from what it saw.

``plans.plan`` makes one ``Expect`` from the scenario; the steps fill a ``RunRecord`` (record.py)
with observations only; ``verdict.decide(expect, record)`` reads both and nothing else. Frozen:
nothing a run does can move the bar it is judged by.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping, Optional

from .specs import SoakSpec, Thresholds


def _frozen(m: Optional[Mapping[str, str]]) -> Mapping[str, str]:
    return MappingProxyType(dict(m or {}))


@dataclass(frozen=True)
class Expect:
    thresholds: Thresholds = field(default_factory=Thresholds)
    service: bool = True                 # the service runs and is judged in every window
    # phase (a judged window's probe_phase) -> the regex the probe's output must match there
    probe: Mapping[str, str] = field(default_factory=dict)
    # phase -> the phase whose output it must show again (a stacked patch's old one, alone again)
    probe_same: Mapping[str, str] = field(default_factory=dict)
    dmesg: tuple[str, ...] = ()          # the scenario's own kernel-log lines, in this order
    soak: Optional[SoakSpec] = None      # a soak's limits; None: not a soak

    def __post_init__(self) -> None:
        object.__setattr__(self, "probe", _frozen(self.probe))
        object.__setattr__(self, "probe_same", _frozen(self.probe_same))
        object.__setattr__(self, "dmesg", tuple(self.dmesg))
