"""The lab's error types.

The split matters for verdicts: an ``InfraError`` is the host's fault (a tool is
missing, a download failed), a ``BootError`` is the guest kernel's, a
``ConfigError`` is the user's input. Each carries the evidence needed to act
on it without re-running: the command, its output, the console tail.
"""
from __future__ import annotations

from typing import Optional, Sequence


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


class HarnessError(Exception):
    """Base of every error the lab raises on purpose."""


class ConfigError(HarnessError):
    """Bad input: names the file, field and value where known."""

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


class BootError(HarnessError):
    """The guest did not come up: panic, no root, init died, SSH never answered."""

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

    def __init__(self, cmd: str, rc: int, stdout: str, stderr: str):
        self.cmd, self.rc, self.stdout, self.stderr = cmd, rc, stdout, stderr
        super().__init__(f"guest command exited {rc}: {cmd}\n{_tail(stderr or stdout, 20)}".rstrip())


class GuestConnectionError(HarnessError):
    """The SSH channel to the guest broke or could not be set up."""


class LivepatchError(HarnessError):
    """A livepatch operation failed (load, transition, disable, unload)."""


class DeadlineExceeded(HarnessError):
    """A wait ran out of time. ``what`` names the wait, ``seconds`` its deadline."""

    def __init__(self, what: str, seconds: float, evidence: str = ""):
        self.what, self.seconds, self.evidence = what, seconds, evidence
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
