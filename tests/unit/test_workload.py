"""The workload: statistics, the probe log, the open-loop HTTP load, and the guest-side scripts.

HttpLoad runs against in-process HTTP servers on 127.0.0.1:0; the guest-side
functions run their real shell scripts on this host through ``LocalGuest``
(``bash -c``, as the guest's sshd runs root's commands), with ``GUEST_DIR`` in
a temporary directory.
"""
from __future__ import annotations

import base64
import dataclasses
import json
import os
import shutil
import socket
import socketserver
import statistics
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Callable, Optional

import pytest

from livepatch_lab.core.errors import ConfigError, DeadlineExceeded, GuestCommandError
from livepatch_lab.core.settings import Timeouts
from livepatch_lab.lab.scenario import specs
from livepatch_lab.lab.run.workload import clock, detached, httpload, probe, service, stats, stress
from livepatch_lab.machine.channel import Result
from livepatch_lab.supply import guestfs

from tests.waiting import wait_until

from .fakes.local_guest import LocalGuest

T0 = 1_800_000_000.0


def approx(x, abs=1e-6):
    """Epoch-sized floats carry ~1e-7 s of rounding."""
    return pytest.approx(x, abs=abs)


def req(seq: int, intended: float, latency: Optional[float] = 0.01, status: Optional[int] = 200,
        error: Optional[str] = None) -> httpload.Request:
    done = None if latency is None else intended + latency
    return httpload.Request(seq, intended, intended, done, status, error)


# Request ------------------------------------------------------------------------
def test_latency_counts_from_the_intended_time_not_the_sent_time():
    r = httpload.Request(0, T0, T0 + 0.5, T0 + 0.6, 200, None)
    assert r.latency == approx(0.6)
    assert r.ok


def test_what_counts_as_ok():
    assert not httpload.Request(0, T0, T0, None, None, "overload").ok
    assert httpload.Request(0, T0, T0, None, None, "overload").latency is None
    assert not req(0, T0, status=500).ok
    assert req(0, T0, status=302).ok
    assert not req(0, T0, status=None, error="timeout").ok


# window_stats -------------------------------------------------------------------
def test_an_empty_window_has_no_statistics():
    empty = stats.WindowStats(0, 0, None, None, None, None)
    assert stats.window_stats([], T0, T0 + 10) == empty
    outside = [req(0, T0 - 1), req(1, T0 + 10)]   # before, and exactly at the (open) end
    assert stats.window_stats(outside, T0, T0 + 10) == empty


def test_steady_responses():
    rs = [req(i, T0 + i * 0.1, latency=0.02) for i in range(100)]
    st = stats.window_stats(rs, T0, T0 + 10)
    assert (st.count, st.failed) == (100, 0)
    assert st.max_latency == st.p50 == st.p99 == approx(0.02)
    assert st.longest_gap == approx(0.1)


def test_window_is_half_open_on_intended_time():
    rs = [req(0, T0), req(1, T0 + 1), req(2, T0 + 2)]
    assert stats.window_stats(rs, T0, T0 + 2).count == 2
    assert stats.window_stats(rs, T0 + 1, T0 + 3).count == 2


def test_percentiles_are_nearest_rank():
    rs = [req(i, T0 + i * 0.01, latency=(i + 1) / 1000) for i in range(100)]   # 1..100 ms
    st = stats.window_stats(reversed(rs), T0, T0 + 1)
    assert st.p50 == approx(0.050)
    assert st.p99 == approx(0.099)
    assert st.max_latency == approx(0.100)
    one = stats.window_stats([req(0, T0, latency=0.3)], T0, T0 + 1)
    assert one.p50 == one.p99 == one.max_latency == approx(0.3)


def test_gap_at_the_window_start():
    # the first success completes 2 s into the window: 2 s without a response
    rs = [req(0, T0 + 0.1, latency=1.9)] + [req(i, T0 + 2 + i * 0.1) for i in range(1, 20)]
    assert stats.window_stats(rs, T0, T0 + 4).longest_gap == approx(2.0)


def test_gap_at_the_window_end():
    rs = [req(i, T0 + i * 0.1) for i in range(10)]           # last done at T0 + 0.91
    st = stats.window_stats(rs, T0, T0 + 5)
    assert st.longest_gap == approx(5 - 0.91)


def test_a_completion_after_the_window_end_leaves_no_negative_gap():
    rs = [req(0, T0, latency=0.1), req(1, T0 + 0.5, latency=0.9)]   # done at T0 + 1.4
    assert stats.window_stats(rs, T0, T0 + 1).longest_gap == approx(1.3)   # 0.1 -> 1.4
    rs = [req(i, T0 + i * 0.1, latency=0.05) for i in range(10)]
    assert stats.window_stats(rs, T0, T0 + 0.95).longest_gap == approx(0.1)


def test_gap_in_the_middle_and_out_of_order_completions():
    rs = [req(0, T0, 0.01), req(1, T0 + 0.1, 0.01),
          req(2, T0 + 0.2, 1.5),     # completes at 1.7, after the later ones
          req(3, T0 + 0.3, 0.01), req(4, T0 + 1.5, 0.4)]   # 0.31 -> 1.7 is the gap
    st = stats.window_stats(rs, T0, T0 + 1.9)
    assert st.longest_gap == approx(1.7 - 0.31)
    assert st.max_latency == approx(1.5)


def test_failures_count_but_have_no_latency():
    rs = [req(0, T0, 0.01), req(1, T0 + 0.1, latency=2.0, status=None, error="timeout"),
          httpload.Request(2, T0 + 0.2, T0 + 0.2, None, None, "overload"),
          req(3, T0 + 0.3, latency=0.05, status=503), req(4, T0 + 0.4, 0.02)]
    st = stats.window_stats(rs, T0, T0 + 1)
    assert (st.count, st.failed) == (5, 3)
    assert st.max_latency == approx(0.02)     # not the timeout's 2 s
    assert st.longest_gap == approx(0.58)     # 0.42 -> window end at 1.0


def test_a_window_of_only_failures_is_one_gap():
    rs = [req(i, T0 + i * 0.1, latency=2.0, status=None, error="timeout") for i in range(10)]
    st = stats.window_stats(rs, T0, T0 + 1)
    assert (st.count, st.failed) == (10, 10)
    assert st.max_latency is st.p50 is st.p99 is None
    assert st.longest_gap == approx(1.0)


# parse_probe_log ------------------------------------------------------------------
def record(t: float, rc: int, output: bytes, t_end: Optional[float] = None) -> str:
    end = "" if t_end is None else f" {t_end:.6f}"
    return f"{t:.6f} {rc} {base64.b64encode(output).decode()}{end}\n"


def test_probe_records_are_parsed():
    text = (record(T0, 0, b"hello\n", T0 + 0.1)
            + record(T0 + 0.5, 3, b"line 1\nline 2\n\nlast", T0 + 0.75)
            + record(T0 + 1, 0, b"", T0 + 1.25)
            + record(T0 + 2, 0, b"no end time"))          # the older format
    samples = probe.parse_log(text)
    assert samples == [probe.ProbeSample(approx(T0), 0, "hello\n", approx(T0 + 0.1)),
                       probe.ProbeSample(approx(T0 + 0.5), 3, "line 1\nline 2\n\nlast", approx(T0 + 0.75)),
                       probe.ProbeSample(approx(T0 + 1), 0, "", approx(T0 + 1.25)),
                       probe.ProbeSample(approx(T0 + 2), 0, "no end time", None)]


def test_binary_and_empty_output():
    text = (record(T0, 0, b"\x00\xff\xfe binary \x80\n") + record(T0 + 1, 1, b"")
            + f"{T0 + 2:.6f} 2\n")   # an empty output written without its separator
    samples = probe.parse_log(text)
    assert [s.rc for s in samples] == [0, 1, 2]
    assert samples[0].output == "\x00\ufffd\ufffd binary \ufffd\n"
    assert samples[1].output == samples[2].output == ""


def test_an_unfinished_last_line_is_dropped_even_when_it_decodes():
    whole = record(T0, 0, b"abcdef")
    cut = record(T0 + 1, 0, b"abcdefgh")[:-5]   # still valid base64, of a truncated output
    assert base64.b64decode(cut.split()[2], validate=True)
    assert probe.parse_log(whole + cut) == probe.parse_log(whole)
    assert probe.parse_log(whole + "1800000001.0") == probe.parse_log(whole)
    assert probe.parse_log("") == []


def test_malformed_lines_are_skipped_with_a_warning(caplog):
    text = (record(T0, 0, b"a") + "garbage\n" + f"{T0} x Zm9v\n" + f"{T0} 0 !!notbase64\n"
            + "nan 0 \n" + record(T0 + 1, 0, b"b"))
    assert [s.output for s in probe.parse_log(text)] == ["a", "b"]
    assert "4 malformed" in caplog.text


# clock_offset -----------------------------------------------------------------------
class ClockGuest:
    """Answers the clock command with host time + offset, a given round trip per call.

    It keeps the host clock too (``time()``, which the test puts in place of measure_clock's
    time module): only the round trips move it, half before the guest reads its clock and
    half after, so no real time passes.
    """

    def __init__(self, offset: float, delays: list[float]):
        self.offset, self.delays, self.commands = offset, list(delays), []
        self.now = T0

    def time(self) -> float:
        return self.now

    def run(self, command, timeout=None, *, check=False, stdin=None):
        self.commands.append(command)
        delay = self.delays.pop(0)
        self.now += delay / 2
        guest_now = self.now + self.offset
        self.now += delay / 2
        return Result(command, 0, f"{guest_now:.6f}\n", "", delay)


def test_clock_offset_uses_the_fastest_round_trip(monkeypatch):
    g = ClockGuest(-0.97, [0.2, 0.05, 0.3, 0.002, 0.1])
    monkeypatch.setattr(clock, "time", g)
    offset, uncertainty = clock.measure_clock(g, 5)
    assert offset == approx(-0.97)
    assert uncertainty == approx(0.001)          # half the fastest round trip
    assert len(g.commands) == 5 and "date +%s.%N" in g.commands[0]
    g = ClockGuest(12.5, [0.01] * 3)
    monkeypatch.setattr(clock, "time", g)
    assert clock.clock_offset(g, samples=3) == approx(12.5)


# in-process HTTP servers ---------------------------------------------------------------
class Server:
    """A threaded HTTP/1.0 server on 127.0.0.1:0; ``behave(n)`` runs before answer n."""

    def __init__(self, behave: Optional[Callable[[int], Optional[bytes]]] = None, backlog: int = 128):
        owner = self
        self.count = 0
        self.lock = threading.Lock()
        self.release = threading.Event()   # set at teardown: handlers that hold, stop holding
        self.behave = behave or (lambda n: None)

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = self.request.recv(4096)
                    if not chunk:
                        return
                    data += chunk
                with owner.lock:
                    n, owner.count = owner.count, owner.count + 1
                answer = owner.behave(n)
                if answer is None:
                    answer = b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n"
                try:
                    self.request.sendall(answer)
                except OSError:
                    pass

        class TCPServer(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True
            request_queue_size = backlog

        self.server = TCPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def servers():
    made = []

    def make(*args, **kwargs) -> Server:
        made.append(Server(*args, **kwargs))
        return made[-1]
    yield make
    for s in made:
        s.close()


def run_load(port: int, count: int, tmp_path: Path, stop_timeout: float = 3.0, *,
             arrived_at: Optional[Server] = None, max_inflight: Optional[int] = None, **spec) -> tuple:
    """An HttpLoad on ``port``, stopped once ``count`` of its requests have ended, or with
    ``arrived_at``, have reached that server (which may hold them: they end at stop)."""
    load = httpload.HttpLoad("127.0.0.1", port, specs.ServiceSpec(**spec), tmp_path / "requests.jsonl",
                             max_inflight=max_inflight)
    load.start()
    within = count / load.spec.rate + 10
    try:   # looked at 20 times a second: often enough, and no rival for the load's own threads
        if arrived_at is None:
            wait_until(lambda: len(load.requests) >= count, f"{count} requests to end", within, interval=0.05)
        else:
            wait_until(lambda: arrived_at.count >= count, f"{count} requests to reach the server", within,
                       interval=0.05)
    finally:
        requests = load.stop(stop_timeout)
    return load, requests


def test_a_steady_rate_is_kept_and_every_request_logged(servers, tmp_path):
    srv = servers()
    load, rs = run_load(srv.port, 100, tmp_path, rate=50)
    assert len(rs) >= 100
    assert [r.seq for r in rs] == list(range(len(rs)))
    assert all(r.ok and r.status == 200 and r.error is None for r in rs)
    gaps = [b.intended - a.intended for a, b in zip(rs, rs[1:])]
    assert all(g == approx(0.02, abs=1e-6) for g in gaps)       # the schedule is exact
    lateness = sorted(r.sent - r.intended for r in rs)
    assert lateness[0] >= 0 and lateness[len(rs) // 2] < 0.02          # and is kept
    assert abs(rs[0].intended - time.time()) < 10                       # host epoch seconds
    logged = httpload.load_requests(tmp_path / "requests.jsonl")
    assert logged == rs
    lines = (tmp_path / "requests.jsonl").read_text().splitlines()
    assert set(json.loads(lines[0])) == {"seq", "intended", "sent", "done", "status", "error"}
    assert load.cpu_seconds is not None and load.cpu_seconds < 2.0


def test_a_stalled_server_shows_its_stall_in_latency_and_gap(servers, tmp_path):
    # The server answers nothing from 0.5 s to 1.5 s, then everything at once: requests keep
    # being sent on schedule, and those due during the stall wait for its end.
    stall = time.monotonic() + 0.5

    def behave(n):
        t = time.monotonic()
        if stall <= t < stall + 1.0:
            srv.release.wait(stall + 1.0 - t)
        return None

    srv = servers(behave)
    load, rs = run_load(srv.port, 50, tmp_path, rate=20)
    assert all(r.ok for r in rs)
    st = stats.window_stats(rs, rs[0].intended, rs[-1].intended + 0.05)
    assert st.max_latency >= 0.9
    assert st.longest_gap >= 0.9
    during = [r for r in rs if r.latency > 0.2]
    assert len(during) >= 15                                             # ~20 requests due in the stall
    # open loop: those went out when due and waited in the server for the stall's end (0.5 s on
    # average); a closed loop would have held their sends until it ended, to wait ~0 once sent.
    # (Not a bound on send lag: a busy host's scheduler was seen delaying a send by 0.57 s.)
    assert sum(r.done - r.sent for r in during) / len(during) > 0.3
    lat = [r.latency for r in sorted(during, key=lambda r: r.seq)]
    assert lat == sorted(lat, reverse=True)                              # the later due, the less waited


def test_a_slow_server_makes_latency_count_from_the_intended_time(servers, tmp_path):
    # One answer at a time, 0.15 s each, at 10 requests/s: a queue builds, and latency
    # (from the intended time) grows with it, while the sent times keep the schedule.
    gate = threading.Lock()

    def behave(n):
        with gate:
            srv.release.wait(0.15)
        return None

    srv = servers(behave)
    load, rs = run_load(srv.port, 15, tmp_path, arrived_at=srv, rate=10, timeout=5)
    ok = [r for r in rs if r.ok]
    assert len(ok) == len(rs) >= 14
    assert max(r.sent - r.intended for r in rs) < 0.4    # a closed loop: 0.05 s later per request, 0.7 s by the 14th
    assert ok[-1].latency > ok[0].latency + 0.5
    assert ok[-1].latency > 0.15 * len(ok) - 0.1 * (len(ok) - 1) - 0.05


def test_requests_past_the_concurrency_bound_are_failed_as_overload(servers, tmp_path):
    srv = servers(lambda n: (srv.release.wait(1.0), None)[1])
    load, rs = run_load(srv.port, 17, tmp_path, rate=20, timeout=3, max_inflight=3)   # 3 held, 14+ over
    assert [r.seq for r in rs] == list(range(len(rs)))                  # nothing skipped
    over = [r for r in rs if r.error == "overload"]
    assert len(over) >= len(rs) - 6 >= 10
    assert all(r.done is None and r.status is None and r.latency is None for r in over)
    assert all(r.sent - r.intended < 0.5 for r in over)                  # failed when due, not after a 1 s answer
    assert sum(r.ok for r in rs) >= 3
    st = stats.window_stats(rs, rs[0].intended, rs[-1].intended + 0.05)
    assert st.failed == len(over)
    logged = httpload.load_requests(tmp_path / "requests.jsonl")
    assert sum(r.error == "overload" for r in logged) == len(over)


def test_a_request_ends_at_its_timeout(servers, tmp_path):
    srv = servers(lambda n: (srv.release.wait(10), None)[1])
    load, rs = run_load(srv.port, 3, tmp_path, stop_timeout=3.0, arrived_at=srv, rate=10, timeout=0.5)
    assert rs and all(r.error == "timeout" and r.status is None for r in rs)
    assert all(0.45 < r.done - r.sent < 0.8 for r in rs)


def test_stop_is_bounded_and_cancels_what_is_still_in_flight(servers, tmp_path):
    srv = servers(lambda n: (srv.release.wait(30), None)[1])
    load = httpload.HttpLoad("127.0.0.1", srv.port, specs.ServiceSpec(rate=20, timeout=20), tmp_path / "r.jsonl")
    load.start()
    wait_until(lambda: srv.count >= 10, "10 requests to reach the server")
    t = time.monotonic()
    rs = load.stop(timeout=0.5)
    assert time.monotonic() - t < 2.0
    assert rs and all(r.error == "stopped" and r.done is not None for r in rs)
    assert load.stop(timeout=0.1) == rs                                   # a second stop is harmless


def test_stop_waits_for_requests_in_flight_within_their_timeout(servers, tmp_path):
    srv = servers(lambda n: (srv.release.wait(0.3), None)[1])
    load, rs = run_load(srv.port, 10, tmp_path, stop_timeout=3.0, arrived_at=srv, rate=20, timeout=2)
    assert rs and all(r.ok for r in rs)


def test_the_load_ends_by_itself_at_its_cap(servers, tmp_path):
    srv = servers()
    load = httpload.HttpLoad("127.0.0.1", srv.port, specs.ServiceSpec(rate=20), tmp_path / "r.jsonl",
                      max_duration=0.5)
    load.start()
    load._thread.join(5.0)
    assert not load._thread.is_alive()
    assert len(load.requests) == 10
    assert len(load.stop(1.0)) == 10


def test_stop_before_start_and_requests_while_running(servers, tmp_path):
    srv = servers()
    load = httpload.HttpLoad("127.0.0.1", srv.port, specs.ServiceSpec(rate=20), tmp_path / "r.jsonl")
    assert load.stop(0.1) == []
    load = httpload.HttpLoad("127.0.0.1", srv.port, specs.ServiceSpec(rate=20), tmp_path / "r.jsonl")
    load.start()
    wait_until(lambda: len(load.requests) >= 5, "5 requests to end")
    snapshot = load.requests
    assert len(snapshot) >= 5 and load._thread.is_alive()
    with pytest.raises(RuntimeError):
        load.start()
    assert len(load.stop(2.0)) >= len(snapshot)


def test_a_full_accept_queue_costs_the_accept_delay_not_a_syn_timeout(tmp_path):
    # Like QEMU's host forward: listen(backlog=1), and an acceptor that pauses 0.3 s
    # every 0.6 s. The kernel drops SYNs meanwhile and would resend them after 1 s.
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    ls.settimeout(0.05)
    done = threading.Event()

    def serve(c):
        with c:
            c.settimeout(2)
            try:
                c.recv(4096)
                c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
            except OSError:
                pass

    def acceptor():
        t0 = time.monotonic()
        while not done.is_set():
            if (time.monotonic() - t0) % 0.6 > 0.3:
                done.wait(0.3)
            try:
                c, _ = ls.accept()
            except OSError:
                continue
            threading.Thread(target=serve, args=(c,), daemon=True).start()

    th = threading.Thread(target=acceptor, daemon=True)
    th.start()
    try:
        load, rs = run_load(ls.getsockname()[1], 90, tmp_path, rate=30, timeout=3)
    finally:
        done.set()
        th.join(2)
        ls.close()
    assert all(r.ok for r in rs)
    assert max(r.latency for r in rs) < 0.8


def test_connection_errors_are_recorded(tmp_path, servers):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]          # nothing listens here once closed
    load, rs = run_load(port, 3, tmp_path, rate=10, timeout=1)
    assert rs and all(r.error == "refused" and r.done is not None for r in rs)
    srv = servers(lambda n: b"SSH-2.0-nope\r\n\r\n")
    load, rs = run_load(srv.port, 3, tmp_path, rate=10, timeout=1)
    assert rs and all(r.error.startswith("bad response") for r in rs)
    srv = servers(lambda n: b"HTTP/1.0 503 Busy\r\n\r\n")
    load, rs = run_load(srv.port, 3, tmp_path, rate=10, timeout=1)
    assert rs and all(r.status == 503 and r.error is None and not r.ok for r in rs)


@pytest.mark.parametrize("host", ["10.0.2.15", "192.168.1.1", "localhost", "example.com", "0.0.0.0"])
def test_load_goes_to_loopback_addresses_only(host, tmp_path):
    with pytest.raises(ConfigError, match="loopback"):
        httpload.HttpLoad(host, 80, specs.ServiceSpec(), tmp_path / "r.jsonl")
    with pytest.raises(ConfigError):
        httpload.http_get(host, 80, "/", 1.0)


# guest-side scripts, run on this host -------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def probe_records(d: Path) -> int:
    """Runs the probe loop has recorded in its log so far."""
    try:
        return (d / "probe.log").read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def group_alive(pidfile: Path) -> bool:
    try:
        os.killpg(int(pidfile.read_text()), 0)
    except (OSError, ValueError):
        return False
    return True


@pytest.fixture
def local(tmp_path, monkeypatch):
    if not all(shutil.which(t) for t in ("bash", "setsid", "timeout", "base64", "mkfifo", "cc")):
        pytest.skip("needs bash, setsid, timeout, base64, mkfifo, cc")
    d = tmp_path / "lab"
    monkeypatch.setattr(detached, "GUEST_DIR", str(d))
    # the guest's own server, built from its source as the image build does
    server = tmp_path / "lab-httpd"
    guestfs.compile_program(guestfs.GUEST_DIR / "lab-httpd.c", server, 60.0)
    monkeypatch.setattr(service, "DEFAULT_SERVER", str(server))
    guest = LocalGuest(dataclasses.replace(Timeouts(), service_start=5.0, service_stop=2.0,
                                           probe_command=1.0, command=20.0))
    yield guest, d
    for name in ("service", "stress", "probe"):   # never leave a process behind
        if (d / f"{name}.pid").exists():
            detached.stop(guest, name, 1.0)


def test_the_probe_loop_records_every_run_with_its_status_and_output(local):
    guest, d = local
    cmd = "printf 'one\\ntwo\\n'; printf '\\000\\377'; echo err >&2; exit $(( $$ % 2 ))"
    probe.start(guest, specs.ProbeSpec(cmd, interval=0.2))
    wait_until(lambda: probe_records(d) >= 7, "7 probe runs recorded")
    t = time.monotonic()
    samples = probe.stop(guest)
    assert time.monotonic() - t < 1.5
    assert not group_alive(d / "probe.pid") and not (d / "probe.pid").exists()
    assert 7 <= len(samples) <= 9
    assert {s.rc for s in samples} <= {0, 1}
    assert all(s.output == "one\ntwo\n\x00\ufffderr\n" for s in samples)
    spacing = [b.t - a.t for a, b in zip(samples, samples[1:])]
    assert statistics.median(spacing) == approx(0.2, abs=0.03)
    assert abs(samples[0].t - time.time()) < 5
    assert all(a.t < a.t_end <= b.t for a, b in zip(samples, samples[1:]))
    again = probe.stop(guest)        # stopped already: the log is still there
    assert again == samples


def test_a_hung_probe_run_is_killed_and_recorded(local):
    guest, d = local
    started = d.parent / "started"   # a line per run, outside its output
    probe.start(guest, specs.ProbeSpec(f"echo start; echo >>{started}; sleep 31.25", interval=0.2))
    wait_until(lambda: started.exists() and started.read_text().count("\n") >= 2, "a second probe run")
    samples = probe.stop(guest)
    assert samples and samples[0].rc == 124 and samples[0].output == "start\n"
    assert samples[0].t_end - samples[0].t == approx(1.0, abs=0.3)
    assert samples[1].t - samples[0].t == approx(1.0, abs=0.3)   # the next run at once
    wait_until(lambda: subprocess.run(["pgrep", "-f", "sleep 31.25"], capture_output=True, text=True).stdout == "",
               "the killed runs' sleep to end", 5)


def test_probe_exit_statuses_and_a_quick_stop_between_runs(local):
    guest, d = local
    probe.start(guest, specs.ProbeSpec("trap 'echo bye' EXIT; echo $((7 * 6)); exit 3", interval=30))
    wait_until(lambda: probe_records(d) >= 1, "the first probe run recorded")   # then 30 s until the next
    t = time.monotonic()
    samples = probe.stop(guest)
    assert time.monotonic() - t < 1.5     # the wait for the next run is woken, not waited out
    assert [(s.rc, s.output) for s in samples] == [(3, "42\nbye\n")]


def test_a_probe_needs_a_command(local):
    guest, _ = local
    with pytest.raises(ConfigError, match="command"):
        probe.start(guest, specs.ProbeSpec(None))


def fetch_body(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
        assert resp.status == 200
        return resp.read().decode()


def test_the_default_server_serves_a_file_fresh_per_request(local, tmp_path):
    guest, d = local
    served = tmp_path / "served"
    served.write_text("first\n")
    spec = specs.ServiceSpec(port=free_port(), serve_file=str(served))
    service.start(guest, spec)
    try:
        assert httpload.http_get("127.0.0.1", spec.port, "/", 2.0) == 200
        assert fetch_body(spec.port, "/x") == "first\n"
        served.write_text("second\n")
        assert fetch_body(spec.port, "/") == "second\n"
        load, rs = run_load(spec.port, 20, tmp_path, rate=20)
        assert len(rs) >= 20 and all(r.ok for r in rs)
    finally:
        service.stop(guest)
    assert not group_alive(d / "service.pid")
    with pytest.raises(OSError):
        httpload.http_get("127.0.0.1", spec.port, "/", 1.0)


def test_the_default_server_answers_plainly_without_a_file(local, tmp_path):
    guest, _ = local
    spec = specs.ServiceSpec(port=free_port(), path="/health")
    service.start(guest, spec)
    try:
        assert httpload.http_get("127.0.0.1", spec.port, "/anything", 2.0) == 200
    finally:
        service.stop(guest)


def test_a_service_that_exits_fails_at_once_with_its_log(local):
    guest, _ = local
    spec = specs.ServiceSpec(port=free_port(), command="echo cannot bind here >&2; exit 3")
    t = time.monotonic()
    with pytest.raises(GuestCommandError) as err:
        service.start(guest, spec)
    assert time.monotonic() - t < 3
    assert err.value.rc == 3 and "cannot bind here" in err.value.stdout


def test_a_service_that_never_answers_runs_out_its_deadline_and_is_stopped(local):
    guest, d = local
    spec = specs.ServiceSpec(port=free_port(), command="echo waiting; sleep 60")
    t = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="answering GET") as err:
        service.start(guest, spec)
    assert 4.5 < time.monotonic() - t < 10
    assert "waiting" in err.value.evidence
    assert not (d / "service.pid").exists()


def test_stress_that_ends_at_once_is_an_error(local):
    guest, _ = local
    with pytest.raises(GuestCommandError, match="stress-ng"):
        stress.start(guest, specs.StressSpec(args="--no-such-stressor 1"))
    stress.start(guest, specs.StressSpec(enabled=False))   # nothing to do
    stress.stop(guest)                                  # nothing running: harmless


def test_stress_runs_detached_until_stopped(local):
    guest, d = local
    if not shutil.which("stress-ng"):
        pytest.skip("stress-ng is not installed on this host")
    stress.start(guest, specs.StressSpec(args="--cpu 1 --cpu-load 10"))
    assert group_alive(d / "stress.pid")
    pid = (d / "stress.pid").read_text()
    stress.stop(guest)
    assert live_members(int(pid)) == []


def live_members(pgid: int) -> list[int]:
    """Processes of group ``pgid`` that still run (zombies awaiting a slow reaper do not)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def test_stop_all_ends_every_session_in_one_round_trip_and_kills_the_stubborn(local):
    guest, d = local
    guest.run(detached.start_script("calm", "exec sleep 60") + detached.start_script(
        "stubborn", "trap '' TERM; while :; do sleep 0.05; done"), check=True)
    pids = {n: int((d / f"{n}.pid").read_text()) for n in ("calm", "stubborn")}
    ran = []
    real_run = guest.run
    guest.run = lambda cmd, *a, **kw: ran.append(cmd) or real_run(cmd, *a, **kw)
    out = detached.stop_all(guest, ["calm", "stubborn", "never-started"], 0.5, then="echo after")
    assert out.strip() == "after" and len(ran) == 1
    # a SIGKILLed process dies when the host next schedules it: on a busy host, not at once
    wait_until(lambda: not any(live_members(p) for p in pids.values()), "the stopped sessions to end", 5)
    assert not (d / "calm.pid").exists() and not (d / "stubborn.pid").exists()
