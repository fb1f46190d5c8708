"""What a run saw, and only that.

The runner's steps fill a ``RunRecord``; ``verdict.decide`` reads it beside the plan's
``Expect`` (expect.py: what the scenario asks) and nothing else, so every check is
unit-tested on synthetic records. Times are host epoch seconds (guest times already
converted).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from ...machine.kmsg import Finding
from .workload.httpload import Request
from .workload.probe import ProbeSample

# Window kinds: how the service is judged in them (verdict.check_service).
BASELINE, TRANSITION, HOLD, COOLDOWN = "baseline", "transition", "hold", "cooldown"


@dataclass
class Reason:
    check: str
    message: str


@dataclass
class Window:
    """A stretch of the run the service and the probe are judged on."""
    name: str
    start: float
    end: float
    kind: str = HOLD
    probe_phase: Optional[str] = None    # before / patched / after: the probe pattern judged here


@dataclass
class ToolRun:
    """One call of a vendor's tool or a hook (apply.py), and what the kernel showed after it."""
    tool: str
    op: str                              # load / revert
    patch: str
    command: str
    rc: Optional[int]                    # None: it did not end by its deadline and was killed
    seconds: Optional[float]
    deadline: float
    output: str = ""                     # its last words, up to apply.OUTPUT_LIMIT (apply.log)
    said: str = ""                       # its last non-empty line
    kernel: Optional[str] = None         # after a load: gone / in transition / patched / disabled

    def as_dict(self) -> dict[str, Any]:
        """For the results document: everything but what it printed (apply.log keeps that)."""
        return {k: v for k, v in asdict(self).items() if k != "output"}


@dataclass
class Transition:
    """A patching or unpatching transition as the lab waited for it."""
    completed: Optional[bool] = None     # None: never waited for
    seconds: Optional[float] = None
    deadline: Optional[float] = None
    stragglers: list[str] = field(default_factory=list)   # tasks still in the old state, described
    signaled: bool = False               # the stragglers were signalled (on_stall: signal)
    forced: bool = False                 # the transition was forced (on_stall: force)
    load_seconds: Optional[float] = None  # patching: how long the load took to return
    tool: Optional[ToolRun] = None       # patching by a tool: its load call, heard out


@dataclass
class Revert:
    """How a patch went away: disabled, unpatched, unloaded, by whom."""
    disabled: Optional[bool] = None      # None: nobody tried
    disable_err: str = ""
    disable_seconds: Optional[float] = None
    by: Optional[str] = None             # a tool removed it itself (e.g. "kpatch load" on a stall)
    rmmod_rc: Optional[int] = None
    rmmod_err: str = ""
    sysfs_gone: Optional[bool] = None    # None: not looked at
    module_gone: Optional[bool] = None
    tool: Optional[ToolRun] = None       # the revert tool's call, heard out

    @property
    def attempted(self) -> bool:
        return self != Revert()


@dataclass
class SoakSample:
    """After a soak cycle (0: before the first): memory, timings, what stayed behind."""
    cycle: int
    load_s: Optional[float]
    transition_s: Optional[float]
    unpatch_s: Optional[float]
    mem_available_kib: int
    slab_kib: int
    sunreclaim_kib: int
    vmalloc_kib: int
    modules: int
    left: list[str]


@dataclass
class PatchRecord:
    """One livepatch's life in the run."""
    name: str
    loaded: bool = False                 # insmod succeeded
    transition: Transition = field(default_factory=Transition)
    unpatch: Optional[Transition] = None  # None: never waited for
    revert: Revert = field(default_factory=Revert)
    refused: Optional[str] = None        # the kernel refused it, as the scenario expected: its message
    # where its module lay while loaded (/sys/module/NAME/sections, /proc/modules' base and size)
    # and its functions' addresses (the host's .ko + .text): a fault there after the unload (the lab
    # marks it in the kernel log) is a use after unload, named by function
    sections: dict[str, int] = field(default_factory=dict)
    core: Optional[tuple[int, int]] = None
    functions: list[tuple[int, str]] = field(default_factory=list)


@dataclass
class RunRecord:
    patch_name: str = ""                                  # the patch under test
    early: list[Reason] = field(default_factory=list)     # the patch's fault, found by a step: build, load, ...
    error: Optional[str] = None                           # the lab, the host or the guest before the patch broke
    guest_lost: Optional[str] = None                      # the guest froze or died after the patch: why
    patch_issued: bool = False    # the patch's insmod was sent: from here a dying guest is the patch's doing
    patches: dict[str, PatchRecord] = field(default_factory=dict)
    # livepatch operations as they happened, in order: (op, patch) with op in
    # enabled / patched / disabled / unpatched; the kernel's log must show each
    ops: list[tuple[str, str]] = field(default_factory=list)
    replaced: dict[str, str] = field(default_factory=dict)      # a patch -> the one that atomically replaced it
    lifecycle: list[Reason] = field(default_factory=list)      # /sys/kernel/livepatch not as the steps imply
    windows: dict[str, Window] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    probe: list[ProbeSample] = field(default_factory=list)   # t on the host clock
    probe_unpatched: Optional[str] = None   # one run of the probe before any patch: what a revert returns to
    dmesg: list[str] = field(default_factory=list)
    console_findings: list[Finding] = field(default_factory=list)  # after the run's start
    # the serial console from the run's start: ``console_from`` lines of boot came before it
    # (kmsg.Finding.lineno counts from the boot's first line)
    console: list[str] = field(default_factory=list)
    console_from: int = 0
    console_at_load: Optional[int] = None   # index into ``console`` when the patch's load was sent
    # the memory debugging the guest booted with (memdebug.DebugPlan.describe) and its command line
    debug: dict[str, Any] = field(default_factory=dict)
    cmdline: str = ""
    # /proc/meminfo fields (KiB) and the modules, just before the patch's load ("before") and at
    # the cool-down's end ("after"): what the patch kept once it was gone
    memory: dict[str, dict[str, Any]] = field(default_factory=dict)
    # the cost workload's block times in seconds, per arm (before / patched / after), and what it was
    cost: dict[str, list[float]] = field(default_factory=dict)
    cost_workload: str = ""
    cost_repeat: int = 0
    taint_before: Optional[int] = None
    taint_patched: Optional[int] = None                   # at the end of the first hold with a patch
    taint_held: list[tuple[str, int]] = field(default_factory=list)   # (hold, taint) for every hold with a patch
    taint_after: Optional[int] = None
    soak: list[SoakSample] = field(default_factory=list)   # one sample a cycle (0: before the first)
    # a vendor's tool or a hook at work (apply.py): one entry a call, with what it printed
    tool_runs: list[ToolRun] = field(default_factory=list)
    host_load: list[float] = field(default_factory=list)  # host 1-min load average, sampled per event
    host_cpus: int = 0
    # (t, host busy CPU-s, the guest's QEMU threads' run s, their run-queue wait s) every
    # hostcpu.PERIOD while the steps run (machine/hostcpu.py): was a slow service the host's doing?
    host_cpu: list[tuple[float, float, float, float]] = field(default_factory=list)

    def patch(self, name: str) -> PatchRecord:
        return self.patches.setdefault(name, PatchRecord(name))

    @property
    def main(self) -> PatchRecord:
        """The patch under test's record (empty if it never got that far)."""
        return self.patches.get(self.patch_name) or PatchRecord(self.patch_name)
