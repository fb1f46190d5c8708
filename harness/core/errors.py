"""The lab's error types, each knowing whose fault it is.

``fault`` is where the trouble arose, and it decides the verdict (lab/run/faults.py):
``patch`` is the livepatch's (a ``fail``); ``guest`` is the guest's: a ``fail``
once the patch's module was loaded (the patch is then what changed), an
``error`` before; ``lab`` is the lab's or the host's (a tool missing, a download
failed, QEMU killed) and ``input`` the user's: always an ``error``. Each error
carries the evidence needed to act on it without re-running: the command, its
output, the console tail.
"""
from __future__ import annotations

from typing import Optional, Sequence


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


PATCH, GUEST, LAB, INPUT = "patch", "guest", "lab", "input"
FAULTS = (PATCH, GUEST, LAB, INPUT)


class HarnessError(Exception):
    """Base of every error the lab raises on purpose."""
    fault = LAB


class ConfigError(HarnessError):
    """Bad input: names the file, field and value where known."""
    fault = INPUT

    def __init__(self, message: str, *, source: Optional[str] = None,
                 field: Optional[str] = None, line: Optional[int] = None):
        self.message, self.source, self.field, self.line = message, source, field, line
        where = ""
        if source:
            where = source + (f":{line}" if line else "")
        if field:
            where = f"{where} [{field}]" if where else f"[{field}]"
        super().__init__(f"{where}: {message}" if where else message)


class InfraError(HarnessError):
    """The host or the lab broke (not the kernel under test, not the patch)."""


class HostCommandError(InfraError):
    """A host command failed or overran its deadline."""

    def __init__(self, what: str, cmd: Sequence[str], rc: Optional[int], output: str):
        self.what, self.cmd, self.rc, self.output = what, list(cmd), rc, output
        status = "timed out" if rc is None else f"exited {rc}"
        super().__init__(
            f"{what}: {status}: {' '.join(map(str, cmd))}\n{_tail(output)}".rstrip())


class DiskFull(InfraError):
    """The host ran out of disk space (or quota) where the lab writes; ``path`` is that place."""

    def __init__(self, path, message: str):
        self.path = path
        super().__init__(message)


class BootError(HarnessError):
    """The guest did not come up: panic, no root, init died, SSH never answered."""
    fault = GUEST

    def __init__(self, message: str, console_tail: str = "", console_log: Optional[str] = None):
        self.console_tail, self.console_log = console_tail, console_log
        text = message
        if console_log:
            text += f" (console log: {console_log})"
        if console_tail:
            text += "\n--- console tail ---\n" + _tail(console_tail)
        super().__init__(text)


class GuestCommandError(HarnessError):
    """A command in the guest exited non-zero (raised only when asked to check)."""
    fault = GUEST

    def __init__(self, cmd: str, rc: int, stdout: str, stderr: str):
        self.cmd, self.rc, self.stdout, self.stderr = cmd, rc, stdout, stderr
        super().__init__(f"guest command exited {rc}: {cmd}\n{_tail(stderr or stdout, 20)}".rstrip())


class GuestConnectionError(HarnessError):
    """The SSH channel to the guest broke or could not be set up."""
    fault = GUEST


class LivepatchError(HarnessError):
    """A livepatch operation failed (load, transition, disable, unload)."""
    fault = PATCH


class DeadlineExceeded(HarnessError):
    """A wait ran out of time. ``what`` names the wait, ``seconds`` its deadline; ``fault``
    is ``guest`` for waits on the guest, the lab's for the lab's own (locks, QMP, uploads)."""

    def __init__(self, what: str, seconds: float, evidence: str = "", *, fault: str = LAB):
        self.what, self.seconds, self.evidence, self.fault = what, seconds, evidence, fault
        text = f"{what}: no result within {seconds:.1f}s"
        if evidence:
            text += "\n" + _tail(evidence)
        super().__init__(text)


# Conditions the retry policies (``retry.py``) retry on: defined here so that the
# policies need nothing above this layer.
class PortInUse(InfraError):
    """QEMU could not bind a host forward: another process took the port first."""


class ServiceNotReady(HarnessError):
    """A guest service did not answer yet (retried by ``retry.service_ready_policy``)."""


class ConnectStalled(OSError):
    """A loopback connect did not complete at once: its SYN was dropped (full accept queue)."""
