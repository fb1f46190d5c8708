"""The heartbeat gives up on a frozen guest at once, whatever command is in flight.

The in-process SSH server runs the heartbeat's echo shell on this host; freezing
that shell (SIGSTOP) is a guest that stopped answering.
"""
import os
import signal
import threading
import time

import pytest

from livepatch_lab.core.errors import GuestConnectionError
from livepatch_lab.machine.heartbeat import Heartbeat

from tests.waiting import wait_until

from .fakes.sshd import FakeSSHServer
from .test_guest import make_channel


@pytest.fixture
def server():
    srv = FakeSSHServer().start()
    yield srv
    for proc in srv._procs:   # never leave a stopped shell behind
        try:
            os.killpg(proc.pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
    srv.stop()


@pytest.fixture
def channel(server, tmp_path):
    ch = make_channel(server, server.write_client_key(tmp_path / "id"))
    ch.connect(timeout=5)
    yield ch
    ch.close()


def _freeze_echo_shell(server) -> None:
    # the server starts exec'd commands in a thread
    shells = wait_until(lambda: [p for p in server._procs if "read -r beat" in p.args[-1] and p.poll() is None],
                        "the heartbeat shell to start", 5)
    os.killpg(shells[0].pid, signal.SIGSTOP)


def test_a_guest_that_answers_is_never_given_up(channel):
    with Heartbeat(channel, timeout=2.0, interval=0.1) as hb:
        assert channel.run("sleep 1; echo still here", 5).stdout == "still here\n"
    assert hb.lost is None and hb.beats >= 5
    assert channel.lost is None and channel.connected


def test_silence_ends_the_command_in_flight_long_before_its_own_deadline(server, channel):
    with Heartbeat(channel, timeout=1.0, interval=0.1) as hb:
        wait_until(lambda: hb.beats >= 3, "two heartbeats answered")   # the third is sent after the second's echo
        _freeze_echo_shell(server)
        start = time.monotonic()
        with pytest.raises(GuestConnectionError, match="did not answer a heartbeat for 1 s"):
            channel.run("sleep 30", 60)
        assert time.monotonic() - start < 5
    assert hb.lost and channel.lost == hb.lost


def test_after_the_guest_is_lost_every_command_fails_at_once_saying_why(server, channel):
    lost = threading.Event()
    with Heartbeat(channel, timeout=0.5, interval=0.1, on_lost=lambda _why: lost.set()):
        _freeze_echo_shell(server)
        assert lost.wait(10)
    start = time.monotonic()
    with pytest.raises(GuestConnectionError, match="heartbeat"):
        channel.run("true", 30)
    assert time.monotonic() - start < 5   # at once, not after the command's 30 s


def test_the_loss_is_reported_to_the_caller_before_the_connection_closes(server, channel):
    seen, lost = [], threading.Event()
    with Heartbeat(channel, timeout=0.5, interval=0.1,
                   on_lost=lambda why: (seen.append((why, channel.connected)), lost.set())):
        _freeze_echo_shell(server)
        assert lost.wait(10)
    assert seen and seen[0][1] is True and "heartbeat" in seen[0][0]
