"""Load around a livepatch: a service driven from the host, stress in the guest, a probe loop.

Three things keep a guest honest while a patch goes in and out:

* **the service**: an HTTP server in the guest (``start_service``), driven from
  the host through a forwarded 127.0.0.1 port by ``HttpLoad``, an *open-loop*
  constant-rate load: request *n* is due at ``start + n / rate`` whatever
  happened to the requests before it, and its latency counts from that intended
  time (wrk2's lesson on coordinated omission). A server that stalls for a
  second therefore shows a second of latency and a second without responses,
  instead of one slow request hiding the stall.
* **stress** (``start_stress``): stress-ng in the guest, so the transition has
  busy tasks to catch.
* **the probe** (``start_probe``): a detached shell loop in the guest that runs
  a command every ``interval`` and logs guest time, exit status and output.

Everything started in the guest runs detached, in a session of its own (stopped
by signalling every process of that session), with its pid and log under ``/run/lab``.

Every request gets its own TCP connection (``Connection: close``); see
``HttpLoad`` for why. Measured on the lab's 2-vCPU guest (single-threaded TCG)
under the default stress, interleaved 10 s runs at 20 requests/s, p50 / p99:
the default server (python3 http.server, one thread) 20 / 40 ms; busybox httpd
with a static file 21 / 42 ms (but it serves /proc files empty: their size is
0); http.server with a thread per connection 27 / 65 ms; a busybox CGI script
(fork + exec per request) 63 ms p50 on an idle guest, and half its requests
timed out under stress. Keep-alive (pooled connections, threaded server):
12 / 40 ms, so a new connection costs ~8 ms of the median, not the tail.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import json
import logging
import math
import shlex
import socket
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

from ..core import retry
from ..core.errors import (ConfigError, ConnectStalled, DeadlineExceeded, GuestCommandError, HarnessError,
                           ServiceNotReady)
from ..core.settings import Timeouts

log = logging.getLogger(__name__)

GUEST_DIR = "/run/lab"          # pids, logs and scripts of everything started here
SERVE_FILE_ENV = "LAB_SERVE_FILE"


# specs ------------------------------------------------------------------------
@dataclass(frozen=True)
class ServiceSpec:
    """The service in the guest and the load on it.

    ``command`` is a guest shell command that serves HTTP on ``port`` *in the
    foreground* (a daemonizing server leaves its session and cannot be stopped);
    ``None`` runs the default server (``DEFAULT_SERVER``): GET answers 200 with a
    short body, or, with ``LAB_SERVE_FILE=<path>`` in its environment
    (``start_service(..., serve_file=path)``), with that file's contents read
    afresh for every request.
    """
    port: int = 8080
    path: str = "/"
    rate: float = 20.0        # requests per second, open loop
    timeout: float = 2.0      # per request, from the moment it is sent
    command: Optional[str] = None

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ConfigError(f"must be a TCP port, not {self.port!r}", field="service.port")
        if not self.path.startswith("/") or any(c in self.path for c in " \r\n"):
            raise ConfigError(f"must be an absolute URL path without spaces, not {self.path!r}",
                              field="service.path")
        for name in ("rate", "timeout"):
            value = getattr(self, name)
            if not 0 < value < math.inf:
                raise ConfigError(f"must be positive and finite, not {value!r}", field=f"service.{name}")


@dataclass(frozen=True)
class StressSpec:
    enabled: bool = True
    # modest: the guest may be a 2-vCPU TCG machine on one host thread, and the service and
    # the probe must stay measurable. No --io: its sync() storms stall a TCG guest for seconds.
    args: str = "--cpu 1 --cpu-load 40 --vm 1 --vm-bytes 32M"


@dataclass(frozen=True)
class ProbeSpec:
    command: Optional[str] = None
    interval: float = 0.5     # seconds from one run's start to the next (or more, if a run is slower)

    def __post_init__(self) -> None:
        if not 0 < self.interval < math.inf:
            raise ConfigError(f"must be positive and finite, not {self.interval!r}",
                              field="probe.interval")


# records ----------------------------------------------------------------------
@dataclass(frozen=True)
class Request:
    """One request of an ``HttpLoad``. Times are host epoch seconds (``time.time()`` scale).

    ``done`` is when it ended, with a response or an error; None only for a
    request never sent (``error == "overload"``). ``status`` is the HTTP status,
    None when no response arrived; ``error`` says what went wrong, None for a
    response (whatever its status).
    """
    seq: int
    intended: float
    sent: float
    done: Optional[float]
    status: Optional[int]
    error: Optional[str]

    @property
    def latency(self) -> Optional[float]:
        """Seconds from the *intended* send time to the end (open loop: includes any queueing)."""
        return None if self.done is None else self.done - self.intended

    @property
    def ok(self) -> bool:
        return self.error is None and self.status is not None and 200 <= self.status < 400


@dataclass(frozen=True)
class ProbeSample:
    t: float       # guest epoch seconds when the run started (microseconds)
    rc: int        # the command's exit status; 124 when it overran Timeouts.probe_command
    output: str    # stdout and stderr together, decoded as UTF-8 (undecodable bytes replaced)
    # When the run ended: under TCG one run can take a second, and its output may show
    # the state at any moment in [t, t_end], so a phase owns only runs wholly inside it.
    t_end: Optional[float] = None


# guest-side helpers -----------------------------------------------------------
def _q(s: str) -> str:
    return shlex.quote(s)


def _path(name: str) -> str:
    return f"{GUEST_DIR}/{name}"


def _start_detached(guest, name: str, command: str, env: Optional[dict[str, str]] = None,
                    stop_first: bool = True) -> None:
    """Run ``command`` (a shell command line) detached, in a session of its own.

    ``<name>.pid`` holds the session leader's pid (= its session and process
    group), ``<name>.log`` the output; ``<name>.rc`` appears with the command's
    exit status when it ends by itself. A leftover of the same name is stopped first.
    """
    if stop_first:
        _stop_detached(guest, name, guest.timeouts.service_stop)
    assignments = " ".join(f"{k}={_q(v)}" for k, v in (env or {}).items())
    # The command runs in a subshell so that even `exit` or a failed `exec` leaves
    # the leader to record the status (newlines: the command may end in a comment).
    # The status file appears whole (rename), never empty to a reader that races it.
    rc = _q(_path(name + '.rc'))
    wrapped = f"(\n{command}\n)\necho $? >{rc}.tmp && mv {rc}.tmp {rc}"
    # Not a process group leader (no job control in a non-interactive shell), so
    # setsid(1) does not fork: $! is the new session's leader.
    script = (f"mkdir -p {_q(GUEST_DIR)} && cd / && rm -f {_q(_path(name + '.rc'))} || exit 1\n"
              f"{assignments} setsid sh -c {_q(wrapped)} </dev/null >{_q(_path(name + '.log'))} 2>&1 &\n"
              f"echo $! >{_q(_path(name + '.pid'))}")
    guest.run(script, check=True)


def _session_sh(name: str) -> str:
    """Shell: ``p`` = the session of ``name``; ``alive`` while a process of it lives (a zombie,
    waiting for its reaper, does not count)."""
    return f"""
        p=; read -r p <{_q(_path(name + '.pid'))} 2>/dev/null
        alive() {{ [ -n "$p" ] && ps -o stat= --sid "$p" 2>/dev/null | grep -qv '^Z'; }}"""


def _stop_detached(guest, name: str, grace: float, before: str = "") -> bool:
    """TERM every process of the session of ``name``, KILL them after ``grace`` s. True if
    it was running.

    ``before`` (shell) runs first in the same round trip, once the session is
    known to be alive; ``gone`` there waits up to ``grace`` for it to end.
    """
    ticks = max(1, int(grace * 10))
    script = f"""{_session_sh(name)}
        gone() {{ i=0; while alive && [ $i -lt {ticks} ]; do sleep 0.1; i=$((i+1)); done; ! alive; }}
        [ -n "$p" ] || exit 3
        rm -f {_q(_path(name + '.pid'))}
        alive || exit 4
        {before}
        pkill -TERM -s "$p"
        gone && exit 0
        pkill -KILL -s "$p"
        exit 5"""
    res = guest.run(script, 2 * grace + guest.timeouts.command)
    if res.rc == 5:
        log.warning("%s did not end within %.1fs of SIGTERM: killed", name, grace)
    return res.rc in (0, 5)


def _ended(guest, name: str, after: float = 0.0) -> Optional[str]:
    """None while ``name`` runs (``after`` s from now); else its exit status as text ("?" if
    it was killed)."""
    res = guest.run(f"""{f"sleep {after:g}" if after else ""}{_session_sh(name)}
        rc={_q(_path(name + '.rc'))}
        if [ -e "$rc" ]; then cat "$rc"
        elif alive; then echo running
        elif [ -e "$rc" ]; then cat "$rc"   # it ended between the two looks
        else echo '?'; fi""", check=False)
    out = res.stdout.strip()
    return None if out == "running" else out or "?"


def _tail(guest, name: str, lines: int = 30) -> str:
    return guest.run(f"tail -n {lines} {_q(_path(name + '.log'))}", check=False).stdout


# the service ------------------------------------------------------------------
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


def start_service(guest, spec: ServiceSpec, *, serve_file: Optional[str] = None) -> None:
    """Start the service detached in the guest; return once it answers GET ``spec.path`` from the host.

    ``serve_file`` is passed to the command as ``LAB_SERVE_FILE`` (the default
    server answers with that file's fresh contents; a custom command may use it).
    Raises ``GuestCommandError`` (with the service's log) if the command ends,
    ``DeadlineExceeded`` if it does not answer within ``Timeouts.service_start``.
    """
    if spec.command is None:
        guest.run(f"mkdir -p {_q(GUEST_DIR)} && cat >{_q(_path('httpd.py'))}", check=True,
                  stdin=DEFAULT_SERVER.encode())
        command = f"exec python3 {_q(_path('httpd.py'))} {spec.port}"
    else:
        command = spec.command
    env = {SERVE_FILE_ENV: serve_file} if serve_file else {}
    _start_detached(guest, "service", command, env)
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
        ended = _ended(guest, "service")
        if ended is not None:
            raise ServiceDied(ended)
        raise ServiceNotReady(last[0])

    try:
        for tried in retry.service_ready_policy(deadline):
            with tried:
                attempt()
    except ServiceDied as exc:
        rc = int(str(exc)) if str(exc).lstrip("-").isdigit() else -1
        tail = _tail(guest, "service")
        stop_service(guest)   # whatever the command left behind in its session
        raise GuestCommandError(command, rc, tail, "service ended before answering "
                                f"GET {spec.path} on guest port {spec.port}") from None
    except ServiceNotReady:
        tail = _tail(guest, "service")
        stop_service(guest)
        raise DeadlineExceeded(f"service on guest port {spec.port} answering GET {spec.path} "
                               f"(last: {last[0]})", deadline, tail) from None
    log.info("service answers on guest port %d (host 127.0.0.1:%d) after %.1fs",
             spec.port, port, time.monotonic() - started)


def stop_service(guest) -> None:
    _stop_detached(guest, "service", guest.timeouts.service_stop)


# stress -----------------------------------------------------------------------
def start_stress(guest, spec: StressSpec) -> None:
    """stress-ng with ``spec.args``, detached. Raises ``GuestCommandError`` if it ends at once
    (bad arguments, say)."""
    if not spec.enabled:
        return
    command = f"exec stress-ng {spec.args}"
    _start_detached(guest, "stress", command)
    # stress-ng checks its arguments before it forks a stressor: if it is still
    # there after a moment, it runs.
    ended = _ended(guest, "stress", after=1.0)
    if ended is not None:
        raise GuestCommandError(command, int(ended) if ended.isdigit() else -1, _tail(guest, "stress"),
                                "stress-ng ended at once")


def stop_stress(guest) -> None:
    _stop_detached(guest, "stress", guest.timeouts.service_stop)


# the probe --------------------------------------------------------------------
# Under TCG, with the default stress, every exec costs ~100 ms, and
# `timeout sh -c CMD` + `base64` made a run of `cat /proc/cmdline` take 0.5 s
# (measured): too slow for a 0.5 s rhythm, and load of its own. So the loop is
# bash, and a run costs one fork, the command's own execs and one base64:
# * the command is sourced in a subshell, in a process group of its own (set -m),
#   killed whole if it runs past ``limit`` (then rc 124, like timeout(1));
# * the clock is $EPOCHREALTIME (the clock `date +%s.%N` reads, in µs), and the
#   waits are `read -t` on a FIFO: a run's end arrives there as "rc N STATUS",
#   and stop_probe writes "wake" to end the wait for the next run early.
# Run n starts at start + n * interval; after a run that overruns the interval
# the next starts at once, and the rhythm restarts from there.
# One record per run: "<start> <rc> <base64 of stdout+stderr, one line> <end>" (epoch s).
PROBE_LOOP = r'''
export LC_ALL=C
d=$1 step=$2 limit=$3           # step and limit in microseconds
cd / || exit 1
set -m
rm -f "$d/probe.tick" && mkfifo "$d/probe.tick" && exec 3<>"$d/probe.tick" || exit 1
# wait_msg END: the next message on the FIFO into $msg; false once END (µs) has passed
wait_msg() {
    local now=${EPOCHREALTIME/./} w
    ((now < $1)) || return 1
    printf -v w '%d.%06d' $((($1 - now) / 1000000)) $((($1 - now) % 1000000))
    read -r -t "$w" -u 3 msg
}
n=0 woken=0 next=${EPOCHREALTIME/./}
while [[ -e $d/probe.run ]] && ((!woken)); do
    n=$((n + 1)) t=$EPOCHREALTIME rc=124
    ( (. "$d/probe.cmd"); echo "rc $n $?" >&3 ) </dev/null >"$d/probe.out" 2>&1 &
    c=$!
    while wait_msg $((${t/./} + limit)) || { kill -KILL -- "-$c" 2>/dev/null; false; }; do
        case $msg in
            "rc $n "*) rc=${msg##* }; break ;;
            wake) woken=1 ;;
        esac
    done
    te=$EPOCHREALTIME
    wait "$c" 2>/dev/null
    printf '%s %s %s %s\n' "$t" "$rc" "$(base64 -w0 <"$d/probe.out")" "$te" >>"$d/probe.log"
    next=$((next + step)) now=${EPOCHREALTIME/./}
    ((next > now)) || next=$now
    while ((!woken)) && wait_msg "$next"; do
        [[ $msg == wake ]] && woken=1
    done
done
'''


def start_probe(guest, spec: ProbeSpec) -> None:
    """Run ``spec.command`` every ``spec.interval`` s in a detached loop (bash sources it in a
    subshell); one record per run goes to probe.log. A run longer than
    ``Timeouts.probe_command`` is killed, with all it started, and recorded with rc 124."""
    if not spec.command:
        raise ConfigError("a probe needs a command", field="probe.command")
    _stop_detached(guest, "probe", guest.timeouts.service_stop)   # a leftover loop
    encoded = base64.b64encode(spec.command.encode() + b"\n").decode()
    guest.run(f"mkdir -p {_q(GUEST_DIR)} && cat >{_q(_path('probe.sh'))} && "
              f"echo {encoded} | base64 -d >{_q(_path('probe.cmd'))} && "
              f"rm -f {_q(_path('probe.log'))} && : >{_q(_path('probe.run'))}",
              check=True, stdin=PROBE_LOOP.encode())
    step_us = max(1, round(spec.interval * 1e6))
    limit_us = max(1, round(guest.timeouts.probe_command * 1e6))
    _start_detached(guest, "probe", f"exec bash {_q(_path('probe.sh'))} {_q(GUEST_DIR)} {step_us} {limit_us}",
                    stop_first=False)


def stop_probe(guest) -> list[ProbeSample]:
    """End the loop (after its current run, within ``Timeouts.service_stop``) and parse its log."""
    grace = guest.timeouts.service_stop
    # Let the loop end by itself after its current run (the write wakes its sleep);
    # only a run that hangs past the grace time is killed.
    _stop_detached(guest, "probe", grace, before=f"""
        rm -f {_q(_path('probe.run'))}
        echo wake 1<>{_q(_path('probe.tick'))}
        gone && exit 0""")
    res = guest.run(f"cat {_q(_path('probe.log'))}", check=False)
    if not res.ok:
        raise GuestCommandError(f"cat {_path('probe.log')}", res.rc, res.stdout, res.stderr)
    return parse_probe_log(res.stdout)


def parse_probe_log(text: str) -> list[ProbeSample]:
    """Records of probe.log. A last line without its newline (the loop was killed while
    writing it) and malformed lines are skipped, the latter with a warning."""
    lines = text.split("\n")
    lines.pop()   # "" after a final newline, else an unfinished record
    samples, bad = [], 0
    for line in lines:
        parts = line.split(" ")
        try:
            t, rc = float(parts[0]), int(parts[1])
            raw = base64.b64decode(parts[2] if len(parts) > 2 else "", validate=True)
            t_end = float(parts[3]) if len(parts) > 3 else None
        except (IndexError, ValueError, binascii.Error):
            bad += 1
            continue
        if not math.isfinite(t):
            bad += 1
            continue
        samples.append(ProbeSample(t, rc, raw.decode("utf-8", errors="replace"), t_end))
    if bad:
        log.warning("probe log: %d malformed line(s) skipped", bad)
    return samples


# clock ------------------------------------------------------------------------
def measure_clock(guest, samples: int = 5) -> tuple[float, float]:
    """(guest_epoch - host_epoch, its uncertainty): the SSH round trip with the smallest
    RTT, the guest time taken as the midpoint; the uncertainty is half that RTT."""
    best: Optional[tuple[float, float]] = None
    for _ in range(max(1, samples)):
        before = time.time()
        # the shell's own clock if it has one: no fork, so a shorter, steadier round trip
        res = guest.run("echo ${EPOCHREALTIME:-$(date +%s.%N)}", check=True)
        after = time.time()
        rtt = after - before
        offset = float(res.stdout.strip()) - (before + after) / 2
        if best is None or rtt < best[1]:
            best = (offset, rtt)
    assert best is not None
    return best[0], best[1] / 2


def clock_offset(guest, samples: int = 5) -> float:
    """guest_epoch - host_epoch (subtract it from a guest time to get host time)."""
    offset, uncertainty = measure_clock(guest, samples)
    log.debug("guest clock offset %+.3fs (±%.3fs)", offset, uncertainty)
    return offset


# the load ---------------------------------------------------------------------
def _check_loopback(host: str) -> None:
    try:
        ok = ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = False
    if not ok:
        raise ConfigError(f"the lab sends load only to a loopback address, not {host!r}",
                          field="host")


def _request_bytes(host: str, port: int, path: str) -> bytes:
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return (f"GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: livepatch-lab\r\n"
            f"Connection: close\r\n\r\n").encode()


def _status_of(head: bytes) -> int:
    parts = head.split(b"\r\n", 1)[0].split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        raise ValueError(f"not an HTTP response: {head[:40]!r}")
    return int(parts[1])


MAX_BODY = 1 << 20


async def _connect(host: str, port: int, attempt_s: float) -> socket.socket:
    """A connected non-blocking socket to a loopback listener.

    QEMU's host forwards listen with a backlog of 1: when its main loop is slow
    to accept, the host kernel drops the next SYN, and would resend it only
    after its 1 s initial RTO, a second of latency that is the emulator's, not
    the guest's. On loopback a connect completes at once or never, so one that
    takes longer than ``attempt_s`` is abandoned and a new SYN sent at once
    (``retry.loopback_connect_policy``), until the caller's deadline cancels it.
    """
    loop = asyncio.get_running_loop()
    async for attempt in retry.loopback_connect_policy():
        with attempt:
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                await asyncio.wait_for(loop.sock_connect(sock, (host, port)), attempt_s)
            except asyncio.TimeoutError:
                sock.close()
                raise ConnectStalled(f"connect to {host}:{port} not done in {attempt_s * 1000:.0f} ms")
            except BaseException:
                sock.close()
                raise
            return sock
    raise AssertionError("unreachable")


async def _fetch(host: str, port: int, request: bytes, attempt_s: float) -> int:
    """One GET on a new connection; the status once the whole response is read."""
    sock = await _connect(host, port, attempt_s)
    try:
        reader, writer = await asyncio.open_connection(sock=sock)
    except BaseException:
        sock.close()
        raise
    try:
        writer.write(request)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status = _status_of(head)
        length = None
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        if length is not None:
            await reader.readexactly(min(length, MAX_BODY))
        else:   # to the end (Connection: close)
            while await reader.read(65536):
                pass
        return status
    finally:
        writer.transport.abort()   # no lingering close handshake to wait for


def http_get(host: str, port: int, path: str, timeout: float) -> int:
    """One blocking GET (a new connection); the HTTP status. OSError (TimeoutError included)
    on failure."""
    _check_loopback(host)

    async def once() -> int:
        return await asyncio.wait_for(_fetch(host, port, _request_bytes(host, port, path),
                                             Timeouts().loopback_connect), timeout)

    try:
        return asyncio.run(once())
    except asyncio.TimeoutError:
        raise TimeoutError(f"no response within {timeout:.1f}s") from None
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
        raise ConnectionError(_error_text(exc)) from None


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timeout"
    if isinstance(exc, asyncio.IncompleteReadError):
        return "closed before a full response" if exc.partial or exc.expected else "closed"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError):
        return "reset"
    if isinstance(exc, (ValueError, asyncio.LimitOverrunError)):
        return f"bad response: {exc}"
    return f"{type(exc).__name__}: {exc}"


class HttpLoad:
    """Open-loop, constant-rate GETs to ``host:port`` (loopback only), in a thread of its own.

    Request *n* is due at ``t0 + n / spec.rate``; it is sent then even if every
    earlier request is still waiting (up to ``max_inflight`` at once: past that,
    it is recorded as failed with ``error="overload"``, never skipped). If the
    host itself falls behind, the due requests go out at once, each keeping its
    intended time. A request is abandoned ``spec.timeout`` s after it was sent
    (``error="timeout"``).

    One new TCP connection per request: each request stands alone, so a stall
    shows in exactly the requests it delays, every request exercises the
    guest's accept path as well as the server, and no connection state (a
    dead keep-alive connection, a retry) can hide or smear an interruption.

    ``log_path`` is started afresh at ``start()``; each request is appended to
    it as one JSON line (``Request``'s fields) when it ends. The load ends at
    ``stop()``, or by itself after ``max_duration`` s (``Timeouts.http_load_cap``).
    """

    def __init__(self, host: str, port: int, spec: ServiceSpec, log_path: Path, *,
                 max_inflight: Optional[int] = None, max_duration: Optional[float] = None):
        _check_loopback(host)
        self.host, self.port, self.spec = host, port, spec
        self.log_path = Path(log_path)
        # rate * timeout requests can be open at once if every one runs to its timeout
        self.max_inflight = max_inflight or min(1024, math.ceil(spec.rate * spec.timeout) + 2)
        self.max_duration = Timeouts().http_load_cap if max_duration is None else max_duration
        self.connect_attempt = Timeouts().loopback_connect
        self._lock = threading.Lock()
        self._done: list[Request] = []
        self._thread: Optional[threading.Thread] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._stop: Optional[asyncio.Event] = None
        self._stopping = False
        self._inflight: set[asyncio.Task] = set()   # requests under way (the loop's thread only)
        self._ready = threading.Event()
        self._epoch0 = self._mono0 = 0.0
        self._log = None
        self.cpu_seconds: Optional[float] = None   # CPU time the load's thread used, once it ended

    # clocks: host epoch seconds, derived from the monotonic clock (no jumps mid-run)
    def _epoch(self, mono: float) -> float:
        return self._epoch0 + (mono - self._mono0)

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("HttpLoad.start() called twice")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "w", buffering=1)
        self._thread = threading.Thread(target=self._run, name=f"http-load-{self.port}", daemon=True)
        self._thread.start()
        self._ready.wait(5.0)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._main())
        except Exception:  # noqa: BLE001 - a broken load must still end stop() cleanly
            log.exception("HTTP load ended by an error")
        finally:
            loop.close()
            self.cpu_seconds = time.thread_time()
            self._ready.set()

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop, self._stop = loop, asyncio.Event()
        self._mono0, self._epoch0 = loop.time(), time.time()   # loop.time() is time.monotonic()
        self._ready.set()
        if self._stopping:
            return
        period = 1.0 / self.spec.rate
        request = _request_bytes(self.host, self.port, self.spec.path)
        inflight = self._inflight
        seq = 0
        while not self._stop.is_set():
            due = self._mono0 + seq * period
            if due - self._mono0 >= self.max_duration:
                log.warning("HTTP load reached its cap of %.0fs: no more requests", self.max_duration)
                break
            wait = due - loop.time()
            if wait > 0:
                try:
                    await asyncio.wait_for(self._stop.wait(), wait)
                    break
                except asyncio.TimeoutError:
                    pass
            intended = self._epoch(due)
            if len(inflight) >= self.max_inflight:
                self._record(Request(seq, intended, self._epoch(loop.time()), None, None, "overload"))
            else:
                task = loop.create_task(self._one(seq, intended, request))
                inflight.add(task)
                task.add_done_callback(inflight.discard)
            seq += 1
        if inflight:
            # each ends by its own timeout; stop() cancels them sooner if it must
            await asyncio.gather(*inflight, return_exceptions=True)

    async def _one(self, seq: int, intended: float, request: bytes) -> None:
        loop = asyncio.get_running_loop()
        sent = self._epoch(loop.time())
        status, error = None, None
        try:
            status = await asyncio.wait_for(_fetch(self.host, self.port, request, self.connect_attempt),
                                            self.spec.timeout)
        except asyncio.CancelledError:
            error = "stopped"
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ValueError) as exc:
            error = _error_text(exc)
        self._record(Request(seq, intended, sent, self._epoch(loop.time()), status, error))

    def _record(self, req: Request) -> None:
        with self._lock:
            self._done.append(req)
            if self._log is not None:
                self._log.write(json.dumps(asdict(req)) + "\n")

    @property
    def requests(self) -> list[Request]:
        """The requests ended so far, by sequence number."""
        with self._lock:
            return sorted(self._done, key=lambda r: r.seq)

    def stop(self, timeout: float) -> list[Request]:
        """Issue no more requests; wait up to ``timeout`` s for those in flight (each ends
        by its own ``spec.timeout`` anyway), cancel the rest (``error="stopped"``). Bounded."""
        self._stopping = True
        deadline = time.monotonic() + max(0.0, timeout)
        thread, loop = self._thread, self._loop
        if thread is not None and loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._stop.set)   # type: ignore[union-attr]
            except RuntimeError:   # the loop closed meanwhile
                pass
        if thread is not None:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive() and loop is not None:
                try:
                    loop.call_soon_threadsafe(_cancel_all, self._inflight)
                except RuntimeError:
                    pass
                thread.join(2.0)
                if thread.is_alive():
                    log.warning("HTTP load thread did not end; returning what it recorded")
        with self._lock:
            if self._log is not None and (thread is None or not thread.is_alive()):
                self._log.close()
                self._log = None
        return self.requests


def _cancel_all(tasks: "set[asyncio.Task]") -> None:
    for task in list(tasks):
        task.cancel()


def load_requests(path: Path) -> list[Request]:
    """The requests an ``HttpLoad`` logged to ``path`` (a last, unfinished line is skipped)."""
    out = []
    for line in Path(path).read_text().splitlines():
        try:
            out.append(Request(**json.loads(line)))
        except (ValueError, TypeError):
            continue
    return sorted(out, key=lambda r: r.seq)


# statistics -------------------------------------------------------------------
@dataclass(frozen=True)
class WindowStats:
    count: int                      # requests intended in the window
    failed: int                     # of those, no 2xx/3xx response (errors, overload, other statuses)
    max_latency: Optional[float]    # over successful requests, from the intended send time
    p50: Optional[float]
    p99: Optional[float]
    longest_gap: Optional[float]    # longest time without a successful response (edges included)


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest rank: the smallest value with at least ``q`` of the values at or below it."""
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


def window_stats(requests: Iterable[Request], start: float, end: float) -> WindowStats:
    """Statistics of the requests whose intended send time is in ``[start, end)``.

    Latencies are those of successful requests. ``longest_gap`` is the longest
    of: window start → first success's completion, between consecutive
    successes' completions, last success's completion → window end (0 if it
    completed after the end); the whole window if nothing succeeded. An empty
    window has only zeros and Nones.
    """
    inside = [r for r in requests if start <= r.intended < end]
    if not inside:
        return WindowStats(0, 0, None, None, None, None)
    ok = sorted((r for r in inside if r.ok), key=lambda r: r.done)  # type: ignore[arg-type,return-value]
    lat = sorted(r.latency for r in ok)  # type: ignore[misc]
    prev, gap = start, 0.0
    for r in ok:
        gap = max(gap, r.done - prev)  # type: ignore[operator]
        prev = max(prev, r.done)       # type: ignore[type-var]
    gap = max(gap, end - prev)
    return WindowStats(count=len(inside), failed=len(inside) - len(ok),
                       max_latency=lat[-1] if lat else None,
                       p50=_percentile(lat, 0.5) if lat else None,
                       p99=_percentile(lat, 0.99) if lat else None,
                       longest_gap=gap)
