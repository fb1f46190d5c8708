"""The open-loop HTTP load driven from the host, one new connection per request (loopback only)."""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import socket
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, TextIO

from ....core import retry
from ....core.errors import ConfigError, ConnectStalled
from ....core.net import is_loopback
from ....core.settings import Timeouts
from ...scenario.specs import ServiceSpec

log = logging.getLogger(__name__)


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


def _check_loopback(host: str) -> None:
    if not is_loopback(host):
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
        self._log: Optional[TextIO] = None
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
                try:
                    self._log.write(json.dumps(asdict(req)) + "\n")
                except OSError as exc:   # e.g. a full disk: the load goes on, judged from memory
                    log.error("%s: %s; the requests are kept in memory and judged, the file stays "
                              "incomplete", self.log_path, exc)
                    with contextlib.suppress(OSError):
                        self._log.close()
                    self._log = None

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
