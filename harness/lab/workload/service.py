"""The service in the guest: an HTTP server started detached, answering from the host."""
from __future__ import annotations

import logging
import time

from ...core import retry
from ...core.errors import GUEST, DeadlineExceeded, GuestCommandError, HarnessError, ServiceNotReady
from ..specs import ServiceSpec
from . import detached
from .detached import q
from .httpload import http_get

log = logging.getLogger(__name__)

SERVE_FILE_ENV = "LAB_SERVE_FILE"


# The default server: python3's http.server, one connection per request (HTTP/1.0),
# served by the accepting thread (no thread or fork per request: under TCG
# those cost more than the request). LAB_SERVE_FILE: answer with that file's
# contents, read afresh for every request (so each request runs the kernel's
# read path for it, e.g. /proc/cmdline).
DEFAULT_SERVER = r'''
import os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

SERVE_FILE = os.environ.get("LAB_SERVE_FILE") or None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    server_version = "lab"
    sys_version = ""

    def do_GET(self):
        if SERVE_FILE:
            try:
                with open(SERVE_FILE, "rb") as fh:
                    body = fh.read()
                code = 200
            except OSError as exc:
                body, code = ("%s: %s\n" % (SERVE_FILE, exc)).encode(), 500
        else:
            body, code = b"ok\n", 200
        self.send_response_only(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(HTTPServer):
    request_queue_size = 1024     # a stalled server's backlog must hold every request of the stall
    allow_reuse_address = True


Server(("0.0.0.0", int(sys.argv[1])), Handler).serve_forever()
'''


class ServiceDied(HarnessError):
    """The service's command ended while the lab waited for it to answer."""


def start(guest, spec: ServiceSpec) -> None:
    """Start the service detached in the guest; return once it answers GET ``spec.path`` from the host.

    ``spec.serve_file`` is passed to the command as ``LAB_SERVE_FILE`` (the default
    server answers with that file's fresh contents; a custom command may use it).
    Raises ``GuestCommandError`` (with the service's log) if the command ends,
    ``DeadlineExceeded`` if it does not answer within ``Timeouts.service_start``.
    """
    if spec.command is None:
        guest.run(f"mkdir -p {q(detached.GUEST_DIR)} && cat >{q(detached.path('httpd.py'))}", check=True,
                  stdin=DEFAULT_SERVER.encode())
        command = f"exec python3 {q(detached.path('httpd.py'))} {spec.port}"
    else:
        command = spec.command
    env = {SERVE_FILE_ENV: spec.serve_file} if spec.serve_file else {}
    detached.start(guest, "service", command, env)
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
        raise GuestCommandError(command, rc, tail, "service ended before answering "
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
