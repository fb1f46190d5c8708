"""A running guest as ``session.boot`` hands it out: its machine and SSH channel, the wait
until a real command answers, and the stop. Apart from the boot so that what a guest *is*
reads without the plan, the attempts and the snapshots that make one.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..core import retry
from ..core.errors import BootError, DeadlineExceeded, GuestConnectionError, HarnessError
from ..core.settings import Timeouts
from ..supply import images
from ..supply.kernels.kernel import Kernel
from .backends.base import Machine
from .channel import GuestChannel, Result
from .runs import RunDir

log = logging.getLogger(__name__)

READY_MARKER = "livepatch-lab: ready"   # printed by images/guest/ready once sshd listens


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
    restored_from: Optional[str] = None   # the snapshot it is a copy of; None: it booted

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
                "restored_from": self.restored_from, "machine": self.machine.describe()}


def wait_ready(guest: Guest, deadline: float, command: Optional[str] = "true") -> None:
    """Until a real command answers over SSH; a dead or panicked guest ends the wait at once.
    ``command`` None: until SSH logs in (the caller's next command is the real one).

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
        if command is not None:
            guest.channel.run(command, timeout=per_try, check=True)

    try:
        for attempt in retry.ssh_ready_policy(max(0.0, deadline - time.monotonic())):
            with attempt:
                attempt_once()
    except (GuestConnectionError, DeadlineExceeded) as exc:
        raise BootError(f"SSH did not answer within {t.boot:.0f}s (last: {exc})",
                        machine.console.tail(), str(machine.spec.console_log)) from None


def shutdown(guest: Optional[Guest], machine: Optional[Machine], timeouts: Timeouts, *,
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
