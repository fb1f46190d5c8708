"""One frozen settings object, and every deadline of the lab in one place.

Values come from keyword overrides (CLI, pytest options) over environment
variables over defaults. A bad environment value is a ``ConfigError`` naming
the variable.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from .errors import ConfigError

ACCELS = ("auto", "kvm", "tcg")
BACKENDS = ("qemu", "libvirt")
# The libvirt backend's single-threaded TCG (see backends/libvirt/machine.py); lab.sh installs it.
DEFAULT_TCG_EMULATOR = "/usr/local/libexec/livepatch-lab/qemu-tcg-single"
# Where lab.sh unpacks a QEMU safe for multi-threaded TCG when the system's is older (Debian 12)
LAB_QEMU = "/usr/local/libexec/livepatch-lab/qemu-system-x86_64"
# The first QEMU safe for multi-threaded TCG (machine/backends/qemu/command.py says why)
MTTCG_SAFE_SINCE = (9, 1)
BOOT_PROTOCOLS = ("pvh", "bzimage")
# TCG's vCPU threading: auto = multi-threaded where QEMU is safe for it (see backends/qemu/command.py)
TCG_THREADS = ("auto", "single", "multi")
ENV_PREFIX = "LIVEPATCH_LAB_"


@dataclass(frozen=True)
class Timeouts:
    """Every deadline, in seconds.

    Guest-side deadlines are written for KVM; ``scaled(factor)`` stretches them
    for TCG, where the same guest work runs several times slower. Host-side
    deadlines (downloads, image builds, QEMU's own reaction to QMP) do not
    depend on the accelerator and are never scaled.
    """

    # guest side: scaled for TCG
    first_console: float = 10.0   # QEMU start -> first console byte
    boot: float = 20.0            # QEMU start -> an SSH command answered
    ssh_connect: float = 5.0      # one SSH connection attempt
    command: float = 60.0         # a guest command, unless the caller says otherwise
    poweroff: float = 8.0         # guest poweroff -> QEMU exits
    transition: float = 20.0      # a livepatch (un)patching transition completes
    service_start: float = 10.0   # workload: a started service answers its first request from the host
    service_stop: float = 5.0     # workload: service/stress/probe ends after SIGTERM (then SIGKILL)
    probe_command: float = 10.0   # workload: one run of the probe command (then killed, rc 124)
    cost_call: float = 0.5        # workload: one call of the cost workload, on average (an arm's blocks x repeat)
    heartbeat: float = 10.0       # a guest that echoes no heartbeat for this long is frozen: given up
    selftest_case: float = 120.0  # one case of the kernel's livepatch selftests (a script gets this per case)
    resync: float = 5.0           # a resumed guest's clock stepped and randomness reseeded (resync.py)
    # a vendor's tool loads or reverts a patch: kpatch waits up to 75 s for a transition, then lists
    # the stragglers (forks per task) and, giving up, reverts the patch (up to 75 s more)
    apply_tool: float = 300.0
    # host side: never scaled
    kvm_probe: float = 8.0        # a KVM guest must print its first kernel line by then
    qmp: float = 5.0              # QMP socket up / one QMP command answered
    kill: float = 5.0             # SIGTERM -> exit, then SIGKILL -> exit
    host_command: float = 120.0   # small host tools (qemu-img, mke2fs, depmod)
    apt_update: float = 300.0
    download: float = 900.0
    image_build: float = 1200.0
    kernel_build: float = 7200.0  # a kernel's original build for source diffs (~25 min on 2 cores)
    livepatch_build: float = 1800.0  # kpatch-build of one diff over a kept original build
    lock: float = 1800.0          # waiting for another process's fetch or build
    http_load_cap: float = 3600.0  # workload: an HttpLoad never stopped ends by itself after this
    loopback_connect: float = 0.05  # workload: one connect to a host forward; slower = SYN dropped: anew
    libvirt_connect: float = 30.0  # libvirt backend: open a connection (qemu+ssh includes the SSH login)
    libvirt_call: float = 60.0     # libvirt backend: one API call (start, destroy, monitor command)
    libvirt_event: float = 2.0     # libvirt backend: a domain's stopped event follows its end
    libvirt_upload: float = 900.0  # libvirt backend: upload a kernel, initrd or disk into the pool
    tunnel: float = 15.0           # libvirt backend: an SSH port forward to a remote host listens
    snapshot: float = 30.0         # a running guest's saved state written, or read back into a new machine
    cpu_slots: float = 3600.0      # a guest waiting for host CPUs other guests hold (cpuslots.py)

    SCALED = ("first_console", "boot", "ssh_connect", "command", "poweroff", "transition",
              "service_start", "service_stop", "probe_command", "heartbeat", "selftest_case", "resync",
              "apply_tool")

    def scaled(self, factor: float) -> "Timeouts":
        return dataclasses.replace(self, **{n: getattr(self, n) * factor for n in self.SCALED})


_LIBVIRT_URI = re.compile(r"^qemu(\+[a-z0-9]+)?://[^/?#]*/(system|session)(\?[^#]*)?$")


def _uri_list(raw: str) -> tuple[str, ...]:
    return tuple(u.strip() for u in raw.split(",") if u.strip())


def _flag(raw: str) -> bool:
    """An environment switch: 1/yes/true/on or 0/no/false/off."""
    value = raw.strip().lower()
    if value in ("1", "yes", "true", "on"):
        return True
    if value in ("0", "no", "false", "off"):
        return False
    raise ValueError(raw)


def default_qemu() -> str:
    """lab.sh's own QEMU where it installed one, else the system's."""
    return LAB_QEMU if os.access(LAB_QEMU, os.X_OK) else "qemu-system-x86_64"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "livepatch-lab"


@dataclass(frozen=True)
class Settings:
    cache_dir: Path = field(default_factory=default_cache_dir)
    accel: str = "auto"                 # auto | kvm | tcg
    memory_mib: int = 1024
    cpus: int = 2
    qemu_binary: str = field(default_factory=default_qemu)
    debian_mirror: Optional[str] = None  # None: the host's own apt configuration
    tcg_factor: float = 3.0
    tcg_thread: str = "auto"            # auto | single | multi: TCG's vCPU threads (QEMU backend)
    # QEMU's -icount shift=N,sleep=off under TCG (single-threaded only): the guest's clock counts
    # executed instructions, for deterministic timing (bench/overhead.py); None: the host's clock
    tcg_icount: Optional[int] = None
    runs_root: Optional[Path] = None    # None: <cache>/runs; tests give each session its own
    boot_protocol: str = "pvh"          # pvh: enter the unpacked kernel directly (see vmlinux.py)
    backend: str = "qemu"               # qemu: a child process here | libvirt: a libvirt domain
    libvirt_uri: str = "qemu:///system"
    libvirt_uris: tuple[str, ...] = ()  # a pool: xdist worker gwN takes uris[N % len]
    libvirt_tcg_emulator: str = DEFAULT_TCG_EMULATOR  # "": libvirt's own (multi-threaded TCG)
    snapshots: bool = True              # boot once per kernel x image x settings, restore copies after
    # host cores the lab's guests share (core/cpuslots.py); None: this host's; 0: no limit
    host_cpus: Optional[int] = None
    timeouts: Timeouts = field(default_factory=Timeouts)

    def __post_init__(self) -> None:
        if self.accel not in ACCELS:
            raise ConfigError(f"accel must be one of {', '.join(ACCELS)}, not {self.accel!r}",
                              field="accel")
        if self.boot_protocol not in BOOT_PROTOCOLS:
            raise ConfigError(f"boot_protocol must be one of {', '.join(BOOT_PROTOCOLS)}, "
                              f"not {self.boot_protocol!r}", field="boot_protocol")
        if self.tcg_thread not in TCG_THREADS:
            raise ConfigError(f"tcg_thread must be one of {', '.join(TCG_THREADS)}, "
                              f"not {self.tcg_thread!r}", field="tcg_thread")
        if self.tcg_icount is not None and not 0 <= self.tcg_icount <= 10:
            raise ConfigError(f"tcg_icount must be a shift from 0 to 10 (2^N ns an instruction), not "
                              f"{self.tcg_icount!r}", field="tcg_icount")
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, not {self.backend!r}",
                              field="backend")
        object.__setattr__(self, "libvirt_uris", tuple(self.libvirt_uris))  # a list from a caller
        uris = [("libvirt_uri", self.libvirt_uri)] + [("libvirt_uris", u) for u in self.libvirt_uris]
        for name, uri in uris:
            if not _LIBVIRT_URI.match(uri):
                raise ConfigError(f"not a libvirt QEMU URI (qemu[+transport]://[user@host[:port]]"
                                  f"/system or /session): {uri!r}", field=name)
        if self.host_cpus is not None and not (isinstance(self.host_cpus, int) and self.host_cpus >= 0):
            raise ConfigError(f"must be a whole number of cores, 0 for no limit, not {self.host_cpus!r}",
                              field="host_cpus")
        for name in ("memory_mib", "cpus", "tcg_factor"):
            if not 0 < getattr(self, name) < math.inf:  # also refuses nan
                raise ConfigError(f"must be positive and finite, not {getattr(self, name)!r}",
                                  field=name)

    def usable_cache(self, option: str = "cache_dir") -> "Settings":
        """Make the cache directory, or refuse it with a ``ConfigError`` naming ``option``: a
        cache the lab cannot write fails here, not as a traceback deep inside a download."""
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            probe = self.cache_dir / f".write-test-{os.getpid()}"
            probe.touch()
            probe.unlink()
        except OSError as exc:
            raise ConfigError(f"cannot use {self.cache_dir} as the cache: {exc.strerror or exc}",
                              field=option) from None
        return self

    def timeouts_for(self, accel: str) -> Timeouts:
        """Deadlines for a guest running under ``accel`` (``kvm`` or ``tcg``)."""
        return self.timeouts.scaled(self.tcg_factor) if accel == "tcg" else self.timeouts

    def libvirt_uri_for(self, worker: Optional[str] = None) -> str:
        """The libvirt URI this process uses: with a pool, pytest-xdist worker ``gwN``
        (``PYTEST_XDIST_WORKER``) takes ``libvirt_uris[N % len]``, others the first."""
        if not self.libvirt_uris:
            return self.libvirt_uri
        if worker is None:
            worker = os.environ.get("PYTEST_XDIST_WORKER", "")
        digits = worker[2:] if worker.startswith("gw") else ""
        n = int(digits) if digits.isdigit() else 0
        return self.libvirt_uris[n % len(self.libvirt_uris)]

    # cache layout: one directory, every part below it
    @property
    def kernels_dir(self) -> Path:
        return self.cache_dir / "kernels"

    @property
    def images_dir(self) -> Path:
        return self.cache_dir / "images"

    @property
    def downloads_dir(self) -> Path:
        return self.cache_dir / "downloads"

    @property
    def apt_dir(self) -> Path:
        return self.cache_dir / "apt"

    @property
    def runs_dir(self) -> Path:
        return self.runs_root or self.cache_dir / "runs"

    @property
    def locks_dir(self) -> Path:
        return self.cache_dir / "locks"

    @property
    def bootfiles_dir(self) -> Path:       # initramfs + modules disk per kernel build
        return self.cache_dir / "bootfiles"

    @property
    def vmlinux_dir(self) -> Path:         # PVH-bootable ELFs unpacked from bzImages
        return self.cache_dir / "vmlinux"

    @property
    def built_modules_dir(self) -> Path:   # livepatch and target modules built per release
        return self.cache_dir / "modules"

    @property
    def symbols_dir(self) -> Path:         # guest kallsyms per kernel, for hang evidence
        return self.cache_dir / "symbols"

    def symbols_file(self, kernel: Any) -> Path:
        """Where one kernel build's text symbols are cached (``kernel``: name, release, version)."""
        return self.symbols_dir / f"{kernel.name}-{kernel.release}-{kernel.version}.txt.gz"

    @property
    def kernel_sources_dir(self) -> Path:  # parts of a kernel's linux-source package (selftests, samples)
        return self.cache_dir / "sources"

    @property
    def source_builds_dir(self) -> Path:   # kernel trees built once per version, for source diffs
        return self.cache_dir / "source-builds"

    @property
    def toolchains_dir(self) -> Path:      # build roots with a kernel's own compiler
        return self.cache_dir / "toolchains"

    @property
    def libvirt_dir(self) -> Path:         # the libvirt backend's digest memo
        return self.cache_dir / "libvirt"

    @property
    def snapshots_dir(self) -> Path:       # saved guests, ready for the workload, per boot inputs
        return self.cache_dir / "snapshots"

    @property
    def cpu_slots_dir(self) -> Path:       # one flock'd file per host core (cpuslots.py)
        return self.cache_dir / "cpu-slots"

    @property
    def cpu_capacity(self) -> int:
        return (os.cpu_count() or 1) if self.host_cpus is None else self.host_cpus

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None, **overrides: Any) -> "Settings":
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        from_env: dict[str, str] = {}   # setting name -> the variable it came from
        conv: dict[str, tuple[str, Callable[[str], Any]]]   # suffix -> (setting, its conversion)
        conv = {"CACHE": ("cache_dir", Path), "ACCEL": ("accel", str),
                "MEMORY_MIB": ("memory_mib", int), "CPUS": ("cpus", int),
                "QEMU": ("qemu_binary", str), "MIRROR": ("debian_mirror", str),
                "TCG_FACTOR": ("tcg_factor", float), "TCG_THREAD": ("tcg_thread", str),
                "TCG_ICOUNT": ("tcg_icount", int),
                "BOOT_PROTOCOL": ("boot_protocol", str),
                "RUNS": ("runs_root", Path), "BACKEND": ("backend", str),
                "LIBVIRT_URI": ("libvirt_uri", str), "LIBVIRT_URIS": ("libvirt_uris", _uri_list),
                "LIBVIRT_TCG_EMULATOR": ("libvirt_tcg_emulator", str),
                "SNAPSHOTS": ("snapshots", _flag), "HOST_CPUS": ("host_cpus", int)}
        for suffix, (name, kind) in conv.items():
            raw = env.get(ENV_PREFIX + suffix)
            if raw is None or raw == "":
                continue
            try:
                values[name] = kind(raw)
            except ValueError:
                what = "switch (1 or 0)" if kind is _flag else kind.__name__
                raise ConfigError(f"not a valid {what}: {raw!r}",
                                  source="environment", field=ENV_PREFIX + suffix) from None
            from_env[name] = ENV_PREFIX + suffix
        given = {k: v for k, v in overrides.items() if v is not None}
        values.update(given)
        if "cache_dir" in values:
            values["cache_dir"] = Path(values["cache_dir"]).expanduser().absolute()
        try:
            return cls(**values)
        except ConfigError as exc:
            # a value that parsed but is invalid: say which variable it came from
            if exc.field in from_env and exc.field not in given:
                raise ConfigError(exc.message, source="environment",
                                  field=from_env[exc.field]) from None
            raise
