"""What the steps of a run share (``Context``), the step protocol, and the helpers every step uses."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Protocol

from ...core.errors import GuestCommandError, GuestConnectionError
from ...core.settings import Timeouts
from ...machine.channel import Result
from ...supply.modinfo import Module
from . import apply, lifecycle, livepatch
from .events import Timeline
from .forensics import HangEvidence
from .ports import Guest, Kernel
from .record import RunRecord, ToolRun
from ..scenario.specs import Scenario
from .workload import httpload

REMOTE_DIR = "/run/lab/modules"
Window = Optional[tuple[str, str, Optional[str]]]   # (name, kind, probe phase)


class Applier(Protocol):
    """How patches get in and out: the lab's insmod, or a vendor's tool (apply.py)."""
    name: str

    def load(self, ctx: Context, name: str) -> Result: ...

    def settle(self, ctx: Context, name: str) -> Optional[ToolRun]: ...

    def disable(self, ctx: Context, name: str) -> Result: ...

    def unload(self, ctx: Context, name: str) -> livepatch.Removal: ...

    def finish(self, ctx: Context) -> None: ...


@dataclass
class Context:
    """What the steps of one run share."""
    scenario: Scenario
    guest: Guest
    timeouts: Timeouts
    rec: RunRecord
    events: Timeline
    out_dir: Path
    evidence: HangEvidence
    modules: dict[str, Module]       # module name -> the module: every module of the run
    patch: str                       # the patch under test's module name
    targets: list[str] = field(default_factory=list)   # target modules loaded at set-up
    params: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)   # module -> insmod params
    lost: threading.Event = field(default_factory=threading.Event)   # set by the heartbeat
    load: Optional[httpload.HttpLoad] = None
    offset: float = 0.0              # guest clock - host clock
    marker: str = ""
    console_from: int = 0
    loaded: list[str] = field(default_factory=list)          # patches whose modules are loaded, oldest first
    late_loaded: list[str] = field(default_factory=list)     # target modules a step loaded
    state: lifecycle.State = field(default_factory=lifecycle.State)   # what /sys/kernel/livepatch must hold
    done: list[tuple["Step", float, float]] = field(default_factory=list)  # steps that ran: (step, start, end)
    applier: Applier = field(default_factory=apply.Insmod)   # how patches get in and out (apply.py)
    kernel: Kernel = livepatch   # the kernel's livepatch interface (a model in unit tests)

    def remote(self, name: str) -> str:
        return f"{REMOTE_DIR}/{self.modules[name].path.name}"


class Step:
    """One step: ``run`` does it; ``window`` is (name, kind, probe phase) of the stretch of the
    run its time belongs to, or None for time that is not judged."""
    window: Window = None

    def run(self, ctx: Context) -> Optional[bool]:
        raise NotImplementedError


def console_index(ctx: Context) -> int:
    """How many console lines the run has shown so far (an index into ``RunRecord.console``)."""
    return len(ctx.guest.machine.console.lines) - ctx.console_from


def hold(ctx: Context, seconds: float) -> None:
    """Let the workload run; a guest the heartbeat gave up on ends the wait at once."""
    if ctx.lost.wait(seconds):
        raise GuestConnectionError(f"guest lost while holding: {ctx.guest.channel.lost}")


def load_target(ctx: Context, name: str) -> None:
    command = livepatch.insmod(ctx.remote(name), ctx.params.get(name, ()))
    res = ctx.guest.run(command, ctx.timeouts.command)
    if not res.ok:
        raise GuestCommandError(command, res.rc, res.stdout, res.stderr or f"target module {name} does not load")
    ctx.evidence.add_module(name, ctx.modules[name].path)
    ctx.events("target-loaded", module=name)
