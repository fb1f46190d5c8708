"""A booted guest, from kernel and image to a command channel, always torn down.

``boot()`` is the one way into a guest: it reaps what dead runs left, prepares
the kernel's boot files, picks the accelerator, has the backend make a
throwaway overlay and the machine, starts it, and waits until a real SSH
command answers, watching the console for a panic all the while. Whatever
happens inside (an error, a timeout, Ctrl-C, SIGTERM), it powers the guest
off, makes sure the machine is gone and removes the overlay. After an
interrupt it skips the poweroff (the overlay is thrown away anyway: seconds
matter when a CI runner or pytest-xdist waits to kill us), and a second
interrupt during the teardown waits until the teardown, bounded by its own
deadlines, is done. It never asks which backend it holds.

Boot once, restore many (``snapshots``): where the backend can save a guest and
snapshots are on, the first boot for a kernel x image x machine saves the
guest as soon as it answers, and later runs resume their own copy of it (their
own overlay on its disk, their own ports) instead of booting, then step its
clock and reseed its randomness (``resync``). A copy that fails to resume is
discarded and the run boots; a run never fails for a snapshot.

What it yields, and how that waits for SSH and stops, is ``guest``; the signal
handling around the teardown is ``signals``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

from ..core import cpuslots, diskspace, retry
from ..core.errors import DiskFull, HarnessError
from ..core.net import free_port
from ..core.settings import Settings, Timeouts
from ..supply import bootfiles, images, vmlinux
from ..supply.kernels.kernel import Kernel
from . import accel as accel_mod
from . import backends, snapshots
from .backends.base import Backend, Disk, Forward, Machine, MachineSpec
from .channel import GuestChannel
from .guest import Guest, shutdown, wait_ready
from .resync import resync
from .runs import RunDir, reap_stale
from .signals import signals_held

log = logging.getLogger(__name__)

SSH_PORT = 22
RESTORED_MARKER = "livepatch-lab: restored from"   # the lab's line in a restored guest's console
# pci=noacpi: on -M pc each virtio device costs ~100 ms of ACPI IRQ-routing evaluation under TCG.
BASE_APPEND = ("console=ttyS0,115200 panic=-1 net.ifnames=0 random.trust_cpu=on pci=noacpi "
               "lab.root=/dev/vda lab.modules=/dev/vdb")


def _start_machine(backend: Backend, spec_for: Callable[[], MachineSpec], run: RunDir,
                   accel: str, timeouts: Timeouts) -> Machine:
    """A started machine; a loopback port taken meanwhile means new ports and a new try."""
    for attempt in retry.port_clash_policy():
        with attempt:
            machine = backend.machine(spec_for(), accel, timeouts, run)
            machine.start()
            return machine
    raise AssertionError("unreachable")


def _kernel_image(kernel: Kernel, settings: Settings) -> Path:
    if settings.boot_protocol == "pvh":
        try:
            return vmlinux.pvh_kernel(kernel.vmlinuz, settings.vmlinux_dir,
                                      settings.timeouts.lock) or kernel.vmlinuz
        except vmlinux.NotExtractable as exc:
            log.info("booting the bzImage: %s", exc)
    return kernel.vmlinuz


@dataclass(frozen=True)
class _Plan:
    """What every attempt at this guest shares. ``spec``: the machine but for what each run
    has of its own (name, console, root overlay, host ports): those are placeholders here."""
    kernel: Kernel
    image: images.Image
    settings: Settings
    backend: Backend
    accel: str
    timeouts: Timeouts
    spec: MachineSpec
    guest_ports: tuple[int, ...]

    def snapshot_inputs(self) -> Optional[dict]:
        """What this guest's snapshot is keyed on; None if snapshots are off or the backend
        has none."""
        if not self.settings.snapshots:
            return None
        identity = self.backend.snapshot_identity(self.spec, self.accel)
        if identity is None:
            return None
        s = self.spec
        files = {"kernel": s.kernel, **({"initrd": s.initrd} if s.initrd else {}),
                 **{f"disk{i}": d.path for i, d in enumerate(s.disks) if i}}
        machine = {"append": s.append, "cpus": s.cpus, "memory_mib": s.memory_mib, "rng": s.rng,
                   "network": s.network}
        return snapshots.key_parts(self.kernel, self.image, files, self.accel, machine, identity)


class _Attempt:
    """One machine for the guest, in its own run directory; ``teardown`` always follows."""

    def __init__(self, plan: _Plan):
        self.plan = plan
        with diskspace.guard(plan.settings.runs_dir, "creating the run's directory"):
            self.run = RunDir.create(plan.settings.runs_dir, plan.kernel.name)
        self.machine: Optional[Machine] = None
        self.guest: Optional[Guest] = None
        self.timings: dict[str, float] = {}
        self._done = False

    def launch(self, snapshot: Optional[snapshots.Snapshot] = None) -> Guest:
        """Boot the machine, or resume ``snapshot``'s guest; return once its SSH answers."""
        p, run, timings = self.plan, self.run, self.timings
        t0 = time.monotonic()
        with diskspace.guard(run.path, "creating the guest's overlay"):
            root = p.backend.root_disk(p.image, run, over=snapshot.disk if snapshot else None)
        timings["overlay"] = time.monotonic() - t0
        console = run.path / "console.log"
        if snapshot is not None:   # the restored guest's console continues its boot's
            shutil.copyfile(snapshot.console, console)
            with open(console, "a") as f:
                f.write(f"\n{RESTORED_MARKER} {snapshot.path.name} (the lines above are its boot)\n")
        ports: dict[int, int] = {}

        def spec_for() -> MachineSpec:
            ports.clear()
            ports.update({g: free_port() for g in p.guest_ports})
            return dataclasses.replace(p.spec, name=f"lab-{run.id}", console_log=console,
                                       disks=(root, *p.spec.disks[1:]),
                                       forwards=tuple(Forward(h, g) for g, h in ports.items()),
                                       incoming=snapshot.state if snapshot else None)

        log.info("%s %s (%s) under %s (%s backend)", "restoring" if snapshot else "booting",
                 p.kernel.name, p.kernel.release, p.accel.upper(), p.backend.name)
        t1 = time.monotonic()
        self.machine = machine = _start_machine(p.backend, spec_for, run, p.accel, p.timeouts)
        if snapshot is not None:
            timings["restore"] = time.monotonic() - t1
        ports = machine.lab_ports()   # a remote libvirt host's forwards arrive through a tunnel
        channel = GuestChannel("127.0.0.1", ports[SSH_PORT], user=p.image.user,
                               client_key=p.image.client_key, host_key=p.image.host_key,
                               command_timeout=p.timeouts.command)
        self.guest = guest = Guest(p.kernel, p.image, machine, channel, run, p.timeouts, dict(ports),
                                   timings, snapshot.path.name if snapshot else None)
        # From the machine's start: a libvirt start may include first-time uploads. A restored
        # guest's first command is the resync: a real one, so no `true` before it.
        wait_ready(guest, time.monotonic() + p.timeouts.boot, None if snapshot else "true")
        if snapshot is not None:
            self.resync()
        timings["ssh_ready"] = time.monotonic() - t1
        if snapshot is None and machine.console.first_output is not None:
            timings["first_console"] = machine.console.first_output - t1
        log.info("guest %s in %.1fs", "restored" if snapshot else "ready", timings["ssh_ready"])
        return guest

    def resync(self) -> None:
        assert self.guest is not None
        result = resync(self.guest.channel, self.plan.timeouts.resync)
        self.timings.update(resync=result.seconds, clock_step=-result.offset)

    def save(self, store: snapshots.Store, inputs: dict) -> None:
        """Save the booted guest for later runs, then let it go on. A failure only costs those
        runs their shortcut: it is logged."""
        guest, p = self.guest, self.plan
        assert guest is not None and self.machine is not None
        machine, paused = self.machine, []

        def write(into: Path) -> dict:
            # Once here too, so what a copy runs first (perl) is in the saved page cache: each
            # copy's resync is ~0.5-1 s shorter under TCG.
            self.resync()
            guest.channel.close()   # a restored guest would hold a dead TCP session
            paused.append(True)
            t0 = time.monotonic()
            machine.save(into / snapshots.STATE, into / snapshots.DISK)
            shutil.copyfile(self.run.path / "console.log", into / snapshots.CONSOLE)
            return {"save_seconds": round(time.monotonic() - t0, 2),
                    "boot_seconds": round(self.timings["ssh_ready"], 2),
                    "state_bytes": (into / snapshots.STATE).stat().st_size}

        meta = {"kernel": {"name": p.kernel.name, "release": p.kernel.release, "version": p.kernel.version},
                "image": {"name": p.image.name, "digest": p.image.digest}, "accel": p.accel,
                "backend": p.backend.name, "memory_mib": p.spec.memory_mib, "cpus": p.spec.cpus,
                "append": p.spec.append, "inputs": inputs}
        t0 = time.monotonic()
        try:
            made = store.create(snapshots.key_of(inputs), p.kernel.name, meta, write)
            if made is not None and paused:
                log.info("saved the guest as %s in %.1fs", made.path.name, time.monotonic() - t0)
        except (HarnessError, OSError) as exc:
            log.warning("could not save the guest for later runs (they boot): %s", exc)
        if paused:   # it stood still meanwhile, without its connection
            wait_ready(guest, time.monotonic() + p.timeouts.boot, None)
            self.resync()
            self.timings["snapshot"] = time.monotonic() - t0

    def teardown(self, artifacts_dir: Optional[Path] = None) -> None:
        """Power off, stop the machine, keep the console if asked, remove the run. Once."""
        if self._done:
            return
        self._done = True
        with signals_held():
            t0 = time.monotonic()
            shutdown(self.guest, self.machine, self.plan.timeouts,
                      graceful=not isinstance(sys.exc_info()[1], KeyboardInterrupt))
            self.timings["shutdown"] = time.monotonic() - t0
            try:
                _keep_console(self.run, artifacts_dir)
            finally:
                self.run.remove()


def _restored(plan: _Plan, store: snapshots.Store, key: str, stack: contextlib.ExitStack,
              artifacts_dir: Optional[Path]) -> Optional[Guest]:
    """A copy of the saved guest, or None (none saved yet, or it failed: then it is discarded
    and the caller boots; a restore never fails a run)."""
    snapshot = store.find(key, plan.kernel.name)
    if snapshot is None:
        return None
    attempt = _Attempt(plan)
    stack.callback(attempt.teardown, artifacts_dir)
    try:
        return attempt.launch(snapshot)
    except (HarnessError, OSError) as exc:
        log.warning("could not restore the saved guest %s; booting instead: %s",
                    snapshot.path.name, str(exc).splitlines()[0])
        attempt.teardown()
        try:
            store.discard(snapshot, "it failed to restore")
        except (HarnessError, OSError) as gone:
            log.warning("could not discard %s: %s", snapshot.path.name, gone)
        return None


@contextlib.contextmanager
def boot(kernel: Kernel, image: images.Image, settings: Settings, *,
         forward_ports: Sequence[int] = (), append: str = "",
         artifacts_dir: Optional[Path] = None, backend: Optional[Backend] = None) -> Iterator[Guest]:
    """Boot ``kernel`` with ``image``, or restore a copy of that guest saved right after an
    earlier boot of it; yield a ``Guest`` whose SSH answers.
    ``backend``: the one ``settings.backend`` names unless given."""
    reap_stale(settings.runs_dir)
    backend = backend or backends.get(settings)
    files = bootfiles.prepare(kernel, settings)
    accel = accel_mod.choose(settings.accel, kernel.vmlinuz, settings, backend)
    spec = MachineSpec(name="lab", kernel=_kernel_image(kernel, settings), initrd=files.initramfs,
                       append=f"{BASE_APPEND} {append}".strip(), console_log=Path("console.log"),
                       disks=(Disk(Path("root.qcow2"), "qcow2"),
                              Disk(files.modules_disk, "raw", readonly=True)),
                       cpus=settings.cpus, memory_mib=settings.memory_mib)
    plan = _Plan(kernel, image, settings, backend, accel, settings.timeouts_for(accel), spec,
                 (SSH_PORT, *forward_ports))
    try:
        inputs = plan.snapshot_inputs()
    except (HarnessError, OSError) as exc:   # e.g. `qemu --version` failed: just boot
        log.warning("no snapshot for this guest (%s): it boots", exc)
        inputs = None
    key = snapshots.key_of(inputs) if inputs is not None else None
    store = snapshots.Store(settings)
    with contextlib.ExitStack() as stack:
        waited = stack.enter_context(cpuslots.cpu_slots(
            settings.cpu_slots_dir, settings.cpu_capacity, backend.host_threads(spec, accel),
            timeout=settings.timeouts.cpu_slots, what=f"a {kernel.name} guest"))
        guest = _restored(plan, store, key, stack, artifacts_dir) if key else None
        if guest is None:
            attempt = _Attempt(plan)
            stack.callback(attempt.teardown, artifacts_dir)
            guest = attempt.launch()
            if inputs is not None:
                attempt.save(store, inputs)
        guest.timings["cpu_wait"] = waited
        yield guest


def _keep_console(run: RunDir, artifacts_dir: Optional[Path]) -> None:
    """The console log into ``artifacts_dir``. No room there is a ``DiskFull``, unless the
    caller's ``finally`` runs for another exception: that one is the story, this is logged."""
    pending = sys.exc_info()[1]
    if artifacts_dir is None or not (run.path / "console.log").exists():
        return
    try:
        with diskspace.guard(artifacts_dir, "keeping the console log", hint=diskspace.ARTIFACTS_HINT):
            artifacts_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy2(run.path / "console.log", artifacts_dir / "console.log")
    except DiskFull as exc:
        if pending is None:
            raise
        log.error("%s", exc)
