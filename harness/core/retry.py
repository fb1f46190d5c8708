"""The lab's few retry policies. Each names its stop and what it retries on.

Nothing else in the lab retries: code that needs a second try takes one of
these, so every retry in the lab can be read here.
"""
from __future__ import annotations

import logging

from tenacity import (AsyncRetrying, Retrying, before_sleep_log, retry_if_exception, retry_if_exception_type,
                      stop_after_attempt, stop_after_delay, stop_never, wait_exponential, wait_fixed)

from .diskspace import is_no_space
from .errors import ConnectStalled, GuestConnectionError, HostCommandError, PortInUse, ServiceNotReady

log = logging.getLogger(__name__)


def _transient_download(exc: BaseException) -> bool:
    return isinstance(exc, HostCommandError) and not is_no_space(exc)   # a full disk stays full


def download_policy() -> Retrying:
    """Transient archive failures: three tries, backing off 2–10 s (not a full disk)."""
    return Retrying(stop=stop_after_attempt(3), wait=wait_exponential(min=2, max=10),
                    retry=retry_if_exception(_transient_download), reraise=True,
                    before_sleep=before_sleep_log(log, logging.WARNING))


def ssh_ready_policy(deadline_s: float) -> Retrying:
    """A booting guest refuses or drops SSH until sshd is up: retry until the boot deadline."""
    return Retrying(stop=stop_after_delay(deadline_s), wait=wait_fixed(0.25),
                    retry=retry_if_exception_type(GuestConnectionError), reraise=True)


def port_clash_policy() -> Retrying:
    """Free ports are picked before QEMU binds them; another process may win the race."""
    return Retrying(stop=stop_after_attempt(5), wait=wait_fixed(0.1),
                    retry=retry_if_exception_type(PortInUse), reraise=True,
                    before_sleep=before_sleep_log(log, logging.INFO))


def service_ready_policy(deadline_s: float) -> Retrying:
    """A just-started guest service refuses or drops requests until it listens: retry until
    its start deadline (a service that died ends the wait at once: not retried)."""
    return Retrying(stop=stop_after_delay(deadline_s), wait=wait_fixed(0.2),
                    retry=retry_if_exception_type(ServiceNotReady), reraise=True)


def loopback_connect_policy() -> AsyncRetrying:
    """A connect to a QEMU host forward whose accept queue is full (backlog 1) has its SYN
    dropped; the kernel would resend it only after 1 s. Send a new one after 5 ms, then
    10, 20, ... 100 ms, until the request's own deadline cancels the wait (the caller's
    ``asyncio.wait_for``: the only stop)."""
    return AsyncRetrying(stop=stop_never, wait=wait_exponential(multiplier=0.005, max=0.1),
                         retry=retry_if_exception_type(ConnectStalled), reraise=True)
