"""The frozen specs a scenario is made of.

Built once, by ``scenario.load`` (a YAML file) or ``scenario.from_options`` (the
``check`` command's flags), both through one validator: by the time a spec
exists its values are known good, before anything is fetched or booted. The
defaults here are the scenario format's defaults (docs/scenarios.md: "Scenario format").
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Optional

CHECKS = ("build", "compat", "load", "signature", "transition", "probe", "service", "dmesg", "taint",
          "revert", "lifecycle", "soak", "overhead")
# The kernel's own memory debugging a validation guest boots with (lab/run/memdebug.py): SLUB red
# zones, poisoning and sanity checks; KFENCE sampling; page poisoning. All by default; `none` for
# a performance-faithful run.
DEBUG_FACILITIES = ("slub", "kfence", "poison")
VERDICTS = ("pass", "fail", "error")
ON_STALL = ("fail", "signal", "force")
PROBE_PHASES = ("before", "patched", "after")
# What a lifecycle step does (docs/lifecycles.md); load / disable wait for their transition.
ACTIONS = ("load", "disable", "unload", "hold", "load_target", "unload_target")
OUTCOMES = ("ok", "refused")
# a module `source` naming one of the kernel's own samples, taken from its linux-source package
SAMPLE_PREFIX = "kernel-sample:"
# How a patch gets in and out (docs/vendor-tools.md): the lab's own insmod +
# sysfs, or a vendor's tool, which needs its own image recipe (images/<recipe>.yaml).
APPLY_TOOLS = ("insmod", "kpatch")
TOOL_IMAGES = {"kpatch": "kpatch"}
# What a scenario's `release:` block names: the patch the runs sign off (docs/signoff.md).
RELEASE_FIELDS = ("name", "version", "ticket", "approver")


@dataclass(frozen=True)
class ModuleSpec:
    """A livepatch or a target module: a kbuild directory built against each kernel's headers,
    or a prebuilt ``.ko`` checked against the kernel before it is loaded."""
    source: Optional[Path] = None
    ko: Optional[Path] = None
    build_for: Optional[str] = None    # build against this kernel instead (compat testing)
    params: tuple[tuple[str, str], ...] = ()   # module parameters for insmod, in order
    key: Optional[str] = None          # the name a scenario's steps call it by
    late: bool = False                 # a target loaded by a step, not before the run
    sample: Optional[str] = None       # `kernel-sample:NAME`: the kernel's samples/livepatch/NAME.c
    diff: Optional[Path] = None        # a source diff, built into a module by kpatch-build per kernel
    build_targets: tuple[str, ...] = ()   # modules the diff changes, built too (kpatch-build -t)

    @property
    def label(self) -> str:
        return f"{SAMPLE_PREFIX}{self.sample}" if self.sample else str(self.source or self.ko or self.diff)


@dataclass(frozen=True)
class StepSpec:
    """One step of a lifecycle: ``action`` on the patch or target called ``subject`` (or
    ``hold`` for ``seconds``). ``probe``: what the probe must show in the hold after it;
    ``expect``: ``refused`` when the kernel must refuse this load."""
    action: str
    subject: Optional[str] = None
    seconds: float = 0.0
    probe: Optional[str] = None
    expect: str = "ok"


@dataclass(frozen=True)
class ServiceSpec:
    """The service in the guest and the load on it.

    ``command`` is a guest shell command that serves HTTP on ``port`` *in the
    foreground* (a daemonizing server leaves its session and cannot be stopped);
    ``None`` runs the default server (``workload.service.DEFAULT_SERVER``): GET
    answers 200 with a short body, or, with ``serve_file``, with that file's
    contents read afresh for every request (passed as ``LAB_SERVE_FILE``).
    """
    enabled: bool = True
    port: int = 8080
    path: str = "/"
    rate: float = 20.0        # requests per second, open loop
    timeout: float = 2.0      # per request, from the moment it is sent
    command: Optional[str] = None
    serve_file: Optional[str] = None


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
    expect: tuple[tuple[str, str], ...] = ()   # (phase, regex): before / patched / after

    @property
    def patterns(self) -> dict[str, str]:
        return dict(self.expect)


@dataclass(frozen=True)
class TimelineSpec:
    """Seconds of each judged window: before the patch, while patched, after the revert."""
    baseline: float = 5.0
    patched: float = 5.0
    cooldown: float = 3.0


@dataclass(frozen=True)
class TransitionSpec:
    timeout: Optional[float] = None   # KVM seconds (scaled for TCG); None: Timeouts.transition
    on_stall: str = "fail"            # fail | signal | force


@dataclass(frozen=True)
class Thresholds:
    """What the service may do in the judged windows, relative to the baseline."""
    max_latency: float = 1.0      # seconds, or latency_factor x the baseline's max: the larger
    latency_factor: float = 5.0
    max_gap: float = 1.0          # seconds without a response, or latency_factor x the baseline's
    median_factor: float = 3.0    # the patched median: median_factor x the baseline's,
    min_median: float = 0.05      # at least min_median
    # what the kernel may keep after the patch's module is gone (docs/checks.md: "Leaks in one
    # run"): growth of unreclaimable slab and of vmalloc'ed memory from just before the load to
    # the cool-down's end
    slab_growth_kib: float = 1024.0
    vmalloc_growth_kib: float = 1024.0
    # what a call of the cost workload may cost more while patched, in percent: `overhead` fails
    # only when the 95 % interval's low end is above it; None: the cost is reported, never judged
    overhead_max_percent: Optional[float] = None


@dataclass(frozen=True)
class SoakSpec:
    """Apply / revert the patch ``cycles`` times in one guest, under load, sampling memory,
    slab and modules after every cycle. 0 cycles: not a soak."""
    cycles: int = 0
    hold: float = 2.0             # seconds patched in each cycle
    leak_kib: float = 256.0       # unreclaimable slab or vmalloc growth a cycle that counts as a leak
    slowdown: float = 2.0         # transitions this many times slower at the end than at the start
    mem_kib: float = 4096.0       # MemAvailable falling this much a cycle counts as a leak (the
                                  # workload's own allocations make it noisy)


@dataclass(frozen=True)
class SecuritySpec:
    """How the guest treats module signatures, and how the run's modules are signed."""
    sig_enforce: bool = False          # boot with module.sig_enforce=1 (what Secure Boot/lockdown imposes)
    sign_key: Optional[Path] = None    # sign the run's modules with the kernel's sign-file
    sign_cert: Optional[Path] = None


@dataclass(frozen=True)
class OverheadSpec:
    """The cost workload (lab/judge/overhead.py): ``blocks`` blocks of ``repeat`` calls of ``command`` (None:
    the probe's), timed in the guest before the patch, while patched and after the revert."""
    enabled: bool = False
    command: Optional[str] = None
    repeat: int = 20
    blocks: int = 20          # an arm's, over all cycles
    cycles: int = 4           # load/revert cycles the arms are interleaved over

    @property
    def per_cycle(self) -> int:
        return -(-self.blocks // self.cycles)


@dataclass(frozen=True)
class DebugSpec:
    """The kernel's memory debugging the guest boots with: a subset of ``DEBUG_FACILITIES`` (empty:
    ``none``, the kernel as it ships)."""
    facilities: tuple[str, ...] = DEBUG_FACILITIES


@dataclass(frozen=True)
class ApplySpec:
    """How the patch is applied and reverted: ``tool`` insmod (the lab's own: insmod, sysfs,
    rmmod), kpatch (``kpatch load`` / ``kpatch unload``), or ``command``: a scenario's own hook,
    ``command`` to load and ``revert`` to disable and unload (None: the lab's sysfs + rmmod),
    with ``{module}`` / ``{name}`` (hookcmd.py)."""
    tool: str = "insmod"
    command: Optional[str] = None
    revert: Optional[str] = None


@dataclass(frozen=True)
class Expectation:
    verdict: str = "pass"
    checks: tuple[str, ...] = ()
    reason: str = ""

    def met_by(self, verdict: str, failing: Iterable[str]) -> bool:
        """The expected verdict, and every check it expects among those that failed."""
        return verdict == self.verdict and set(self.checks) <= set(failing)


@dataclass(frozen=True)
class ReleaseSpec:
    """The patch the runs sign off, as the sign-off report names it: its name and version, the
    ticket it answers and who approves it. Each optional; the lab only shows them."""
    name: Optional[str] = None
    version: Optional[str] = None
    ticket: Optional[str] = None
    approver: Optional[str] = None

    def as_dict(self) -> dict[str, str]:
        """The fields given (verdict.json's ``release``)."""
        return {k: v for k, v in asdict(self).items() if v}


@dataclass(frozen=True)
class Scenario:
    name: str
    patch: ModuleSpec
    path: Optional[Path] = None                     # the YAML file; None for `check`'s flags
    description: str = ""
    kernels: Optional[tuple[str, ...]] = None       # None: every defined kernel
    targets: tuple[ModuleSpec, ...] = ()
    probe: ProbeSpec = ProbeSpec()
    service: ServiceSpec = ServiceSpec()
    stress: StressSpec = StressSpec()
    timeline: TimelineSpec = TimelineSpec()
    transition: TransitionSpec = TransitionSpec()
    thresholds: Thresholds = Thresholds()
    expect: Expectation = Expectation()
    per_kernel: dict[str, Expectation] = field(default_factory=dict)
    # lifecycles: a patch in the field to upgrade from, or named patches and the steps over them
    upgrade_from: Optional[ModuleSpec] = None
    patches: dict[str, ModuleSpec] = field(default_factory=dict)
    steps: tuple[StepSpec, ...] = ()
    dmesg_expect: tuple[str, ...] = ()   # lines the kernel must log during the run, in this order
    tags: tuple[str, ...] = ()           # pytest markers of its items (e.g. `lifecycle`)
    soak: SoakSpec = SoakSpec()
    security: SecuritySpec = SecuritySpec()
    apply: ApplySpec = ApplySpec()
    image: Optional[Path] = None         # the guest image's recipe; None: images/default.yaml
    debug: DebugSpec = DebugSpec()
    overhead: OverheadSpec = OverheadSpec()
    release: ReleaseSpec = ReleaseSpec()

    def expectation(self, kernel: str) -> Expectation:
        return self.per_kernel.get(kernel, self.per_kernel.get(kernel.split("@")[0], self.expect))
