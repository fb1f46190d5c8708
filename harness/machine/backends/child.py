"""Children that die with the lab: QEMU, and the libvirt backend's SSH tunnel.

QEMU 7.2 has no ``exit-with-parent``; a parent-death signal set in the child
before exec does the same, so a lab killed outright orphans nothing.
"""
from __future__ import annotations

import ctypes
import signal

_PR_SET_PDEATHSIG = 1
_prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here, not in the forked child


def die_with_parent() -> None:
    """``preexec_fn`` for ``subprocess.Popen``: SIGKILL when the forking thread exits."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
