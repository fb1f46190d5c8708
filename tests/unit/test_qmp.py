"""The QMP client against a scripted QMP server: every wait ends by its deadline."""
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from livepatch_lab.core.errors import DeadlineExceeded, InfraError
from livepatch_lab.machine.qmp import QMPClient, QMPError

from tests.waiting import wait_until

from .fakes.qmp_server import FakeQMPServer, default_handler, ok


@pytest.fixture
def sock():
    # AF_UNIX paths are limited to 107 bytes: pytest's tmp_path can be longer
    d = Path(tempfile.mkdtemp(prefix="lab-qmp-"))
    yield d / "qmp.sock"
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def client(sock):
    c = QMPClient(sock)
    yield c
    c.close()


def event(name, **data):
    return {"event": name, "data": data, "timestamp": {"seconds": 1732690000, "microseconds": 1}}


def test_connect_reads_the_greeting_and_negotiates_capabilities_first(sock, client):
    with FakeQMPServer(sock) as server:
        client.connect(timeout=2)
        assert client.execute("query-status", timeout=2) == {"status": "running", "running": True}
    assert [m["execute"] for m in server.received] == ["qmp_capabilities", "query-status"]


def test_connect_waits_for_a_socket_qemu_has_not_created_yet(sock, client):
    with FakeQMPServer(sock, delay=0.1):
        start = time.monotonic()
        client.connect(timeout=3)
        assert 0.08 <= time.monotonic() - start < 2


def test_connect_to_a_socket_that_never_appears_ends_by_its_deadline(sock, client):
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded) as err:
        client.connect(timeout=0.2)
    assert 0.18 <= time.monotonic() - start < 1.0
    assert str(sock) in str(err.value)


def test_a_server_that_never_greets_ends_connect_by_its_deadline(sock, client):
    with FakeQMPServer(sock, greeting=False):
        start = time.monotonic()
        with pytest.raises(DeadlineExceeded, match="greeting"):
            client.connect(timeout=0.2)
        assert time.monotonic() - start < 1.0


def test_events_that_arrive_between_replies_are_kept_in_order(sock, client):
    def handler(command, arguments, msg_id):
        if command == "system_powerdown":
            return [event("POWERDOWN"), ok(msg_id), event("SHUTDOWN", guest=True, reason="guest-shutdown")]
        if command == "query-status":
            return [event("STOP"), ok(msg_id, {"status": "shutdown", "running": False})]
        return default_handler(command, arguments, msg_id)

    with FakeQMPServer(sock, handler):
        client.connect(timeout=2)
        assert client.execute("system_powerdown", timeout=2) == {}
        assert client.execute("query-status", timeout=2)["status"] == "shutdown"
    assert [e["event"] for e in client.events] == ["POWERDOWN", "SHUTDOWN", "STOP"]
    assert client.events[1]["data"]["reason"] == "guest-shutdown"


def test_arguments_are_sent_and_a_reply_to_another_id_is_not_taken_for_ours(sock, client):
    def handler(command, arguments, msg_id):
        if command == "human-monitor-command":
            return [ok(9999, "stale"), ok(msg_id, arguments["command-line"].upper())]
        return default_handler(command, arguments, msg_id)

    with FakeQMPServer(sock, handler) as server:
        client.connect(timeout=2)
        assert client.execute("human-monitor-command", {"command-line": "info status"}, timeout=2) \
            == "INFO STATUS"
    assert server.received[-1]["arguments"] == {"command-line": "info status"}


def test_messages_split_across_reads_are_reassembled(sock, client):
    with FakeQMPServer(sock, split_writes=True):
        client.connect(timeout=3)
        assert client.execute("query-status", timeout=3)["running"] is True


def test_an_error_reply_raises_qmp_error_with_class_and_description(sock, client):
    with FakeQMPServer(sock):
        client.connect(timeout=2)
        with pytest.raises(QMPError, match="CommandNotFound: The command no-such-thing has not been found"):
            client.execute("no-such-thing", timeout=2)
        assert client.execute("query-status", timeout=2)["running"] is True   # still usable


def test_qmp_error_is_an_infrastructure_error():
    assert issubclass(QMPError, InfraError)


def test_a_command_that_is_never_answered_ends_by_its_deadline(sock, client):
    def handler(command, arguments, msg_id):
        if command == "quit":
            return None   # a wedged QEMU
        return default_handler(command, arguments, msg_id)

    with FakeQMPServer(sock, handler):
        client.connect(timeout=2)
        start = time.monotonic()
        with pytest.raises(DeadlineExceeded, match="QMP quit") as err:
            client.execute("quit", timeout=0.2)
        assert 0.19 <= time.monotonic() - start < 1.0
    assert err.value.seconds == pytest.approx(0.2)


def test_the_deadline_reported_is_the_whole_wait_even_when_events_arrived_meanwhile(sock, client):
    def handler(command, arguments, msg_id):
        if command == "stop":
            return [0.1, event("STOP")]   # an event midway, then never the reply
        return default_handler(command, arguments, msg_id)

    with FakeQMPServer(sock, handler):
        client.connect(timeout=2)
        with pytest.raises(DeadlineExceeded) as err:
            client.execute("stop", timeout=0.3)
    assert [e["event"] for e in client.events] == ["STOP"]
    assert err.value.seconds == pytest.approx(0.3)
    assert "within 0.3s" in str(err.value)


def test_pending_events_collects_what_arrived_after_the_last_reply_without_waiting(sock, client):
    def handler(command, arguments, msg_id):
        if command == "cont":   # the guest resumes, then resets on its own a moment later
            return [ok(msg_id), 0.05, event("RESET", guest=True, reason="guest-reset"),
                    event("SHUTDOWN", guest=True, reason="guest-reset")]
        return default_handler(command, arguments, msg_id)

    with FakeQMPServer(sock, handler):
        client.connect(timeout=2)
        start = time.monotonic()
        assert client.pending_events() == []          # nothing yet, and no waiting for it
        assert time.monotonic() - start < 0.05
        client.execute("cont", timeout=2)
        assert client.events == []                    # they arrived after the reply
        wait_until(lambda: len(client.pending_events()) >= 2, "RESET and SHUTDOWN to arrive", 5)
        assert [e["event"] for e in client.events] == ["RESET", "SHUTDOWN"]
        assert client.execute("query-status", timeout=2)["running"] is True   # still in step


def test_a_late_reply_is_not_taken_for_an_event_or_for_the_next_reply(sock, client):
    def handler(command, arguments, msg_id):
        if command == "slow":
            return [0.15, ok(msg_id, "late")]
        return default_handler(command, arguments, msg_id)

    with FakeQMPServer(sock, handler) as server:
        client.connect(timeout=2)
        with pytest.raises(DeadlineExceeded):
            client.execute("slow", timeout=0.05)
        # on a unix socket, sent is already in the client's receive buffer
        wait_until(lambda: any(m.get("return") == "late" for m in server.sent),
                   "the server to send its late reply", 5)
        assert client.pending_events() == []
        assert client.execute("query-status", timeout=2)["status"] == "running"


def test_pending_events_after_close_keeps_what_was_collected(sock, client):
    client.close()
    assert client.pending_events() == []


def test_qemu_closing_the_socket_is_a_qmp_error_not_a_hang(sock, client):
    def handler(command, arguments, msg_id):
        if command == "quit":
            return ["close"]
        return default_handler(command, arguments, msg_id)

    with FakeQMPServer(sock, handler):
        client.connect(timeout=2)
        start = time.monotonic()
        with pytest.raises(QMPError, match="closed"):
            client.execute("quit", timeout=5)
        assert time.monotonic() - start < 1.0


def test_execute_before_connect_is_an_error(client):
    with pytest.raises(QMPError, match="not connected"):
        client.execute("query-status", timeout=1)
