"""How a QEMU process ended, from its exit status and the QMP events it sent. Pure.

QEMU announces every orderly end with a ``SHUTDOWN`` event naming its cause
before it exits, and exits 0 even after a guest panic (``panic=-1
-no-reboot``: the panic reboots, the reboot ends QEMU), so the event, not the
status, says who ended the machine. No event and a signal status: QEMU was
killed or crashed.
"""
from __future__ import annotations

import signal
from typing import Optional, Sequence

from ..base import GUEST, HOST, MachineExit, StillRunning

# QEMU's ShutdownCause (qapi/run-state.json) -> what the guest did
GUEST_CAUSES = {
    "guest-shutdown": "poweroff",
    "guest-reset": "reset",            # a reboot, a panic with panic=-1, a triple fault
    "guest-panic": "panic",            # pvpanic with -action panic=shutdown|exit-failure
    "subsystem-reset": "reset by a device",
}
# ... and what the host did
HOST_CAUSES = {
    "host-qmp-quit": "QEMU quit through QMP",
    "host-qmp-system-reset": "reset through QMP",
    "host-signal": "QEMU stopped by a signal (SIGTERM, SIGINT or SIGHUP)",
    "host-ui": "QEMU's window closed",
    "host-error": "QEMU stopped on a host error",
    "snapshot-load": "a snapshot was loaded",
}
CRASH_SIGNALS = {signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGILL, signal.SIGFPE}


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _last_shutdown(events: Sequence[dict]) -> Optional[dict]:
    for event in reversed(events):
        if event.get("event") == "SHUTDOWN":
            return event.get("data") or {}
    return None


def classify(returncode: Optional[int], events: Sequence[dict], stopped_by: str = "") -> MachineExit:
    """``returncode``: None while QEMU runs, else Popen's (negative: killed by that signal).
    ``stopped_by``: how the lab itself stopped it ('' if it did not)."""
    if returncode is None:
        return StillRunning
    shutdown = _last_shutdown(events)
    if shutdown is not None:
        cause = str(shutdown.get("reason", ""))
        if cause in GUEST_CAUSES or (cause not in HOST_CAUSES and shutdown.get("guest")):
            return MachineExit(GUEST, GUEST_CAUSES.get(cause, cause))
        if stopped_by:
            return MachineExit(HOST, f"stopped by the lab ({stopped_by})")
        return MachineExit(HOST, HOST_CAUSES.get(cause, cause or "QEMU shut down"))
    if any(e.get("event") == "GUEST_PANICKED" for e in events):
        return MachineExit(GUEST, "panic")
    if stopped_by:
        return MachineExit(HOST, f"stopped by the lab ({stopped_by})")
    if returncode < 0:
        name = _signal_name(-returncode)
        if -returncode in CRASH_SIGNALS:
            return MachineExit(HOST, f"QEMU crashed ({name})")
        return MachineExit(HOST, f"QEMU killed by {name}")
    # QEMU exits on its own only after a SHUTDOWN event, or on an error (status 1).
    return MachineExit(HOST, f"QEMU exited with status {returncode} without a shutdown event")
