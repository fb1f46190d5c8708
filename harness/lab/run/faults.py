"""Whose fault: the rule that turns trouble into ``fail`` or ``error``.

``fail`` is the patch's fault, ``error`` the lab's, the host's or the user's.
Every error carries where it arose (``HarnessError.fault``, core/errors.py);
the rule adds when:

- ``patch``: a fail (the kernel refused the patch, its transition stalled, ...);
- ``guest``: the guest died, froze or stopped answering: a fail once the
  patch's module was sent to the kernel (``RunRecord.patch_issued``: the patch
  is what changed), an error before it (set-up, the service never answered,
  SSH lost while booting);
- the host's hand (QEMU killed by a signal or crashed, a libvirt domain
  destroyed from outside; or, the machine still running, its vCPUs paused on a
  host I/O error such as a full disk, its network cable pulled from the host):
  an error whatever the step. No guest can do these to itself. What the host
  cannot see (sshd killed inside the guest, the guest taking its own interface
  down) is the guest's, and the reason says the host did none of the above;
- ``lab``, ``input``, an interrupt (Ctrl-C, SIGTERM): always an error.
"""
from __future__ import annotations

from typing import Optional

from ...core.errors import GUEST, PATCH
from ...machine.backends.base import HOST
from .ports import Machine
from .record import Reason


class Failed(Exception):
    """A step found the patch at fault: the run ends early with these reasons (none when a
    check reads the cause from the record, e.g. a stalled transition)."""

    def __init__(self, *reasons: Reason):
        super().__init__("; ".join(r.message for r in reasons))
        self.reasons = list(reasons)


def patch_is_to_blame(fault: str, patch_issued: bool, by_host: Optional[str]) -> bool:
    """True when trouble of ``fault`` makes a ``fail``; ``by_host`` says what the host did to the
    machine (``host_cause``), if anything."""
    if by_host:
        return False
    return fault == PATCH or (fault == GUEST and patch_issued)


def host_cause(machine: Machine) -> Optional[str]:
    """What the host did to the guest's machine, in words for the reason: ended it (QEMU killed
    or crashed, the domain destroyed from outside), paused it on a host I/O error, or cut its
    network; None when it did none of these (the guest ended or went silent by itself)."""
    if machine.is_running():
        return machine.host_trouble() or None
    ended = machine.exit_info()
    return f"the host ended the guest's machine ({ended.detail})" if ended.kind == HOST else None
