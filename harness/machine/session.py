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
"""
from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

from ..core import diskspace, retry
from ..core.errors import BootError, DeadlineExceeded, DiskFull, GuestConnectionError, HarnessError
from ..core.net import free_port
from ..core.settings import Settings, Timeouts
from ..supply import bootfiles, images, vmlinux
from ..supply.kernel import Kernel
from . import accel as accel_mod
from . import backends
from .backends.base import Backend, Disk, Forward, Machine, MachineSpec
from .channel import GuestChannel, Result
from .runs import RunDir, reap_stale

log = logging.getLogger(__name__)

SSH_PORT = 22
READY_MARKER = "livepatch-lab: ready"   # printed by images/guest/ready once sshd listens
# pci=noacpi: on -M pc each virtio device costs ~100 ms of ACPI IRQ-routing evaluation under TCG.
BASE_APPEND = ("console=ttyS0,115200 panic=-1 net.ifnames=0 random.trust_cpu=on pci=noacpi "
               "lab.root=/dev/vda lab.modules=/dev/vdb")


@dataclass
class Guest:
    """A running guest. Use it inside ``boot()``; it is dead after."""
    kernel: Kernel
    image: images.Image
    machine: Machine
    channel: GuestChannel
    run_dir: RunDir
    timeouts: Timeouts
    forwards: dict[int, int]              # guest port -> host port (127.0.0.1)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def accel(self) -> str:
        return self.machine.accel

    def run(self, command: str, timeout: Optional[float] = None, *, check: bool = False,
            stdin: Optional[bytes] = None) -> Result:
        return self.channel.run(command, timeout, check=check, stdin=stdin)

    def upload(self, local: Path, remote: str, mode: int = 0o644) -> None:
        self.channel.upload(local, remote, mode)

    def host_port(self, guest_port: int) -> int:
        return self.forwards[guest_port]

    def describe(self) -> dict:
        return {"kernel": self.kernel.describe(), "image": self.image.digest,
                "accel": self.accel, "timings": dict(self.timings),
                "machine": self.machine.describe()}


def _start_machine(backend: Backend, spec_for: Callable[[], MachineSpec], run: RunDir,
                   accel: str, timeouts: Timeouts) -> Machine:
    """A started machine; a loopback port taken meanwhile means new ports and a new try."""
    for attempt in retry.port_clash_policy():
        with attempt:
            machine = backend.machine(spec_for(), accel, timeouts, run)
            machine.start()
            return machine
    raise AssertionError("unreachable")


def _wait_ready(guest: Guest, deadline: float) -> None:
    """Until a real command answers over SSH; a dead or panicked guest ends the wait at once.

    The guest announces on the console when sshd listens. Until then an SSH
    attempt would sit in QEMU's user networking until its own timeout, so
    attempts before the announcement are short, and the wait is for the console.
    """
    machine, t = guest.machine, guest.timeouts

    def attempt_once() -> None:
        finding = machine.console.fatal()
        if finding:
            raise BootError(f"guest {finding.kind} during boot: {finding.line}",
                            machine.console.tail(), str(machine.spec.console_log))
        if not machine.is_running():
            machine.console.stop()   # drains what the machine printed last, for the tail
            raise BootError(f"QEMU ended during boot ({machine.exit_reason()})",
                            machine.console.tail(), str(machine.spec.console_log))
        left = deadline - time.monotonic()
        announced = machine.console.wait_for(
            lambda c: c.contains(READY_MARKER) or c.fatal() is not None, min(1.0, max(0.0, left)))
        if machine.console.fatal():
            return attempt_once()  # report the finding
        per_try = max(0.5, min(t.ssh_connect if announced else 1.0, left))
        guest.channel.connect(timeout=per_try)
        guest.channel.run("true", timeout=per_try, check=True)

    try:
        for attempt in retry.ssh_ready_policy(max(0.0, deadline - time.monotonic())):
            with attempt:
                attempt_once()
    except (GuestConnectionError, DeadlineExceeded) as exc:
        raise BootError(f"SSH did not answer within {t.boot:.0f}s (last: {exc})",
                        machine.console.tail(), str(machine.spec.console_log)) from None


def _shutdown(guest: Optional[Guest], machine: Optional[Machine], timeouts: Timeouts, *,
              graceful: bool = True) -> None:
    """poweroff (if ``graceful``) → QMP quit → kill. Never raises."""
    if (graceful and guest is not None and guest.channel.connected and machine is not None
            and machine.is_running()):
        try:
            guest.channel.run("poweroff", timeout=min(5.0, timeouts.poweroff))
        except HarnessError as exc:
            log.debug("poweroff: %s", exc)
        guest.channel.close()
        if not machine.wait_exit(timeouts.poweroff):
            log.info("guest did not power off within %.0fs; stopping QEMU", timeouts.poweroff)
    if guest is not None:
        guest.channel.close()
    if machine is not None:
        machine.destroy()


def _kernel_image(kernel: Kernel, settings: Settings) -> Path:
    if settings.boot_protocol == "pvh":
        try:
            return vmlinux.pvh_kernel(kernel.vmlinuz, settings.vmlinux_dir,
                                      settings.timeouts.lock) or kernel.vmlinuz
        except vmlinux.NotExtractable as exc:
            log.info("booting the bzImage: %s", exc)
    return kernel.vmlinuz


@contextlib.contextmanager
def boot(kernel: Kernel, image: images.Image, settings: Settings, *,
         forward_ports: Sequence[int] = (), append: str = "",
         artifacts_dir: Optional[Path] = None, backend: Optional[Backend] = None) -> Iterator[Guest]:
    """Boot ``kernel`` with ``image``; yield a ``Guest`` whose SSH answers.
    ``backend``: the one ``settings.backend`` names unless given."""
    reap_stale(settings.runs_dir)
    backend = backend or backends.get(settings)
    files = bootfiles.prepare(kernel, settings)
    kernel_image = _kernel_image(kernel, settings)
    accel = accel_mod.choose(settings.accel, kernel.vmlinuz, settings, backend)
    timeouts = settings.timeouts_for(accel)
    with diskspace.guard(settings.runs_dir, "creating the run's directory"):
        run = RunDir.create(settings.runs_dir, kernel.name)
    machine: Optional[Machine] = None
    guest: Optional[Guest] = None
    timings: dict[str, float] = {}
    try:
        t0 = time.monotonic()
        with diskspace.guard(run.path, "creating the guest's overlay"):
            root = backend.root_disk(image, run)
        timings["overlay"] = time.monotonic() - t0
        guest_ports = (SSH_PORT, *forward_ports)
        ports: dict[int, int] = {}

        def spec_for() -> MachineSpec:
            ports.clear()
            ports.update({g: free_port() for g in guest_ports})
            return MachineSpec(
                name=f"lab-{run.id}", kernel=kernel_image, initrd=files.initramfs,
                append=f"{BASE_APPEND} {append}".strip(), console_log=run.path / "console.log",
                disks=(root, Disk(files.modules_disk, "raw", readonly=True)),
                forwards=tuple(Forward(h, g) for g, h in ports.items()),
                cpus=settings.cpus, memory_mib=settings.memory_mib)

        log.info("booting %s (%s) under %s (%s backend)", kernel.name, kernel.release,
                 accel.upper(), backend.name)
        t1 = time.monotonic()
        machine = _start_machine(backend, spec_for, run, accel, timeouts)
        ports = machine.lab_ports()   # a remote libvirt host's forwards arrive through a tunnel
        channel = GuestChannel("127.0.0.1", ports[SSH_PORT], user=image.user,
                               client_key=image.client_key, host_key=image.host_key,
                               command_timeout=timeouts.command)
        guest = Guest(kernel, image, machine, channel, run, timeouts, dict(ports), timings)
        # From the machine's start: a libvirt start may include first-time uploads.
        _wait_ready(guest, time.monotonic() + timeouts.boot)
        timings["ssh_ready"] = time.monotonic() - t1
        if machine.console.first_output is not None:
            timings["first_console"] = machine.console.first_output - t1
        log.info("guest ready in %.1fs", timings["ssh_ready"])
        yield guest
    finally:
        with signals_held():
            t2 = time.monotonic()
            _shutdown(guest, machine, timeouts, graceful=not isinstance(sys.exc_info()[1], KeyboardInterrupt))
            timings["shutdown"] = time.monotonic() - t2
            try:
                _keep_console(run, artifacts_dir)
            finally:
                run.remove()


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


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Inside: SIGINT and SIGTERM wait. A teardown cut short by a second Ctrl-C leaves what it
    had not yet removed; the teardown is bounded by its own deadlines, so the signal waits
    until it is done and is raised then, unless an interrupt is already on its way."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    old = {s: signal.signal(s, lambda signum, _frame: got.append(signum)) for s in held}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    if got and not isinstance(sys.exc_info()[1], KeyboardInterrupt):
        raise KeyboardInterrupt(f"signal {got[0]}")


def raise_on_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt so ``finally`` blocks (teardown) run."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)
