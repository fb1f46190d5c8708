"""How a libvirt domain ended, from its lifecycle events and its state. Pure: libvirt's
numbers (virDomainEventType and details, virDomainState and reasons) are spelled here.

libvirt's own wording is a trap: the *event* ``STOPPED_CRASHED`` is the guest's
crash (a panic reported through pvpanic), while the *state reason*
``SHUTOFF_CRASHED`` (with the event ``STOPPED_FAILED``) is QEMU dying without
having said why: killed, or crashed itself.
"""
from __future__ import annotations

from typing import Optional, Sequence

from ..base import GUEST, HOST, MachineExit

# virDomainEventType, and the details that matter here
EVENT_STOPPED, EVENT_SHUTDOWN, EVENT_CRASHED = 5, 6, 8
STOPPED_SHUTDOWN, STOPPED_DESTROYED, STOPPED_CRASHED, STOPPED_MIGRATED = 0, 1, 2, 3
STOPPED_SAVED, STOPPED_FAILED, STOPPED_FROM_SNAPSHOT = 4, 5, 6
SHUTDOWN_FINISHED, SHUTDOWN_GUEST, SHUTDOWN_HOST = 0, 1, 2

# virDomainState, and the reasons that matter here
STATE_PAUSED, STATE_SHUTOFF, STATE_CRASHED = 3, 5, 6
PAUSED_IOERROR, PAUSED_CRASHED = 5, 10
DISK_ERROR_NO_SPACE = 2   # virDomainDiskErrorCode
SHUTOFF_SHUTDOWN = 1

_STOPPED = {
    STOPPED_CRASHED: (GUEST, "panic"),
    STOPPED_FAILED: (HOST, "QEMU crashed or was killed (it ended without a shutdown)"),
    STOPPED_DESTROYED: (HOST, "the domain was destroyed from outside the lab"),
    STOPPED_MIGRATED: (HOST, "the domain was migrated away"),
    STOPPED_SAVED: (HOST, "the domain was saved"),
    STOPPED_FROM_SNAPSHOT: (HOST, "a snapshot was restored"),
}
_SHUTOFF = {   # SHUTOFF reasons, for a domain still there to be asked
    0: "the domain stopped for an unknown reason", 2: "the domain was destroyed",
    3: "QEMU crashed or was killed (it ended without a shutdown)", 4: "the domain was migrated away",
    5: "the domain was saved", 6: "the domain failed to start", 7: "a snapshot was restored",
    8: "libvirtd stopped the domain",
}


def from_events(events: Sequence[tuple[int, int]], destroyed_by_lab: bool) -> Optional[MachineExit]:
    """The end that lifecycle ``events`` (event, detail) report; None if they report none."""
    shutdown = stopped = None
    crashed = False
    for event, detail in events:
        if event == EVENT_SHUTDOWN:
            shutdown = detail
        elif event == EVENT_CRASHED:
            crashed = True
        elif event == EVENT_STOPPED:
            stopped = detail
    if crashed:   # whatever stopped the domain after (on_crash, or the lab's destroy)
        return MachineExit(GUEST, "panic")
    if stopped is None:
        return None
    if stopped == STOPPED_SHUTDOWN:
        if shutdown == SHUTDOWN_GUEST:
            return MachineExit(GUEST, "the guest shut down (poweroff, reset or panic)")
        if destroyed_by_lab:
            return MachineExit(HOST, "stopped by the lab")
        if shutdown == SHUTDOWN_HOST:
            return MachineExit(HOST, "QEMU shut down from the host side (a signal or a QMP quit)")
        return MachineExit(HOST, "the domain shut down without saying who asked")
    if stopped == STOPPED_DESTROYED and destroyed_by_lab:
        return MachineExit(HOST, "stopped by the lab")
    kind, what = _STOPPED.get(stopped, (HOST, f"the domain stopped (detail {stopped})"))
    return MachineExit(kind, what)


def from_state(state: int, reason: int) -> Optional[MachineExit]:
    """The end a domain's state (virDomainGetState) shows; None while it runs."""
    if state == STATE_CRASHED or (state == STATE_PAUSED and reason == PAUSED_CRASHED):
        return MachineExit(GUEST, "panic")
    if state != STATE_SHUTOFF:
        return None
    if reason == SHUTOFF_SHUTDOWN:
        return MachineExit(GUEST, "the guest shut down")
    return MachineExit(HOST, _SHUTOFF.get(reason, f"the domain stopped (reason {reason})"))
