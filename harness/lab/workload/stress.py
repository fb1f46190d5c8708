"""stress-ng in the guest, detached: busy tasks for the transition to catch."""
from __future__ import annotations

from ...core.errors import GuestCommandError
from ..specs import StressSpec
from . import detached


def start(guest, spec: StressSpec) -> None:
    """stress-ng with ``spec.args``, detached. Raises ``GuestCommandError`` if it ends at once
    (bad arguments, say)."""
    if not spec.enabled:
        return
    command = f"exec stress-ng {spec.args}"
    detached.start(guest, "stress", command)
    # stress-ng checks its arguments before it forks a stressor: if it is still
    # there after a moment, it runs.
    ended = detached.ended(guest, "stress", after=1.0)
    if ended is not None:
        raise GuestCommandError(command, int(ended) if ended.isdigit() else -1, detached.tail(guest, "stress"),
                                "stress-ng ended at once")


def stop(guest) -> None:
    detached.stop(guest, "stress", guest.timeouts.service_stop)
