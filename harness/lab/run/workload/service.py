"""The service in the guest: an HTTP server started detached, answering from the host."""
from __future__ import annotations

import logging
import time

from ....core import retry
from ....core.errors import GUEST, DeadlineExceeded, GuestCommandError, HarnessError, ServiceNotReady
from ...scenario.specs import ServiceSpec
from . import detached
from .detached import q
from .httpload import http_get

log = logging.getLogger(__name__)

SERVE_FILE_ENV = "LAB_SERVE_FILE"


# The default server: images/guest/lab-httpd.c, built into every image. One connection at a
# time, no fork or thread per request, ready milliseconds after exec (python's http.server,
# which it replaced, took ~3 s to start under TCG). LAB_SERVE_FILE: answer with that file's
# contents, read afresh for every request (so each request runs the kernel's read path for it,
# e.g. /proc/cmdline).
DEFAULT_SERVER = "/usr/lib/livepatch-lab/httpd"


class ServiceDied(HarnessError):
    """The service's command ended while the lab waited for it to answer."""


def start(guest, spec: ServiceSpec) -> None:
    """Start the service detached in the guest; return once it answers GET ``spec.path`` from the host.

    ``spec.serve_file`` is passed to the command as ``LAB_SERVE_FILE`` (the default
    server answers with that file's fresh contents; a custom command may use it).
    Raises ``GuestCommandError`` (with the service's log) if the command ends,
    ``DeadlineExceeded`` if it does not answer within ``Timeouts.service_start``.
    """
    detached.start(guest, "service", command(spec), environment(spec))
    wait_ready(guest, spec)


def command(spec: ServiceSpec) -> str:
    return f"exec {q(DEFAULT_SERVER)} {spec.port}" if spec.command is None else spec.command


def environment(spec: ServiceSpec) -> dict[str, str]:
    return {SERVE_FILE_ENV: spec.serve_file} if spec.serve_file else {}


def start_script(spec: ServiceSpec) -> str:
    return detached.start_script("service", command(spec), environment(spec))


def wait_ready(guest, spec: ServiceSpec) -> None:
    """Until the started service answers GET ``spec.path`` from the host (``start``'s second half)."""
    port = guest.host_port(spec.port)
    deadline = guest.timeouts.service_start
    started = time.monotonic()
    last: list[str] = [""]

    def attempt() -> None:
        try:
            status = http_get("127.0.0.1", port, spec.path, min(spec.timeout, deadline))
        except OSError as exc:
            status, last[0] = None, f"{type(exc).__name__}: {exc}"
        if status is not None and 200 <= status < 400:
            return
        if status is not None:
            last[0] = f"HTTP {status}"
        # Only now ask the guest (one SSH round trip): has it died?
        ended = detached.ended(guest, "service")
        if ended is not None:
            raise ServiceDied(ended)
        raise ServiceNotReady(last[0])

    try:
        for tried in retry.service_ready_policy(deadline):
            with tried:
                attempt()
    except ServiceDied as exc:
        rc = int(str(exc)) if str(exc).lstrip("-").isdigit() else -1
        tail = detached.tail(guest, "service")
        stop(guest)   # whatever the command left behind in its session
        raise GuestCommandError(command(spec), rc, tail, "service ended before answering "
                                f"GET {spec.path} on guest port {spec.port}") from None
    except ServiceNotReady:
        tail = detached.tail(guest, "service")
        stop(guest)
        raise DeadlineExceeded(f"service on guest port {spec.port} answering GET {spec.path} "
                               f"(last: {last[0]})", deadline, tail, fault=GUEST) from None
    log.info("service answers on guest port %d (host 127.0.0.1:%d) after %.1fs",
             spec.port, port, time.monotonic() - started)


def stop(guest) -> None:
    detached.stop(guest, "service", guest.timeouts.service_stop)
