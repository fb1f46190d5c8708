"""The lab's few retry policies. Each names its stop and what it retries on.

Nothing else in the lab retries: code that needs a second try takes one of
these, so every retry in the lab can be read here.
"""
from __future__ import annotations

import logging

from tenacity import (Retrying, before_sleep_log, retry_if_exception_type, stop_after_attempt,
                      stop_after_delay, wait_exponential, wait_fixed)

from .errors import GuestConnectionError, HostCommandError

log = logging.getLogger(__name__)


def download_policy() -> Retrying:
    """Transient archive failures: three tries, backing off 2–10 s."""
    return Retrying(stop=stop_after_attempt(3), wait=wait_exponential(min=2, max=10),
                    retry=retry_if_exception_type(HostCommandError), reraise=True,
                    before_sleep=before_sleep_log(log, logging.WARNING))


def ssh_ready_policy(deadline_s: float) -> Retrying:
    """A booting guest refuses or drops SSH until sshd is up: retry until the boot deadline."""
    return Retrying(stop=stop_after_delay(deadline_s), wait=wait_fixed(0.25),
                    retry=retry_if_exception_type(GuestConnectionError), reraise=True)


def port_clash_policy() -> Retrying:
    """Free ports are picked before QEMU binds them; another process may win the race."""
    from .backends.qemu import PortInUse
    return Retrying(stop=stop_after_attempt(5), wait=wait_fixed(0.1),
                    retry=retry_if_exception_type(PortInUse), reraise=True,
                    before_sleep=before_sleep_log(log, logging.INFO))
