"""stress-ng in the guest, detached: busy tasks for the transition to catch."""
from __future__ import annotations

from ....core.errors import GuestCommandError
from ...scenario.specs import StressSpec
from . import detached


def command(spec: StressSpec) -> str:
    return f"exec stress-ng {spec.args}"


def start_script(spec: StressSpec) -> str:
    return detached.start_script("stress", command(spec))


def check_running(guest, spec: StressSpec, after: float = 0.0) -> None:
    """Raise ``GuestCommandError`` if stress-ng ended (bad arguments, say): it checks its
    arguments before it forks a stressor, so one still there a moment after its start runs."""
    ended = detached.ended(guest, "stress", after=after)
    if ended is not None:
        raise GuestCommandError(command(spec), int(ended) if ended.isdigit() else -1,
                                detached.tail(guest, "stress"), "stress-ng ended at once")


def start(guest, spec: StressSpec) -> None:
    """stress-ng with ``spec.args``, detached, checked a second later."""
    if not spec.enabled:
        return
    detached.start(guest, "stress", command(spec))
    check_running(guest, spec, after=1.0)


def stop(guest) -> None:
    detached.stop(guest, "stress", guest.timeouts.service_stop)
