"""The SSH command channel, against an in-process SSH server that runs commands on this host."""
import base64
import hashlib
import os
import time

import paramiko
import pytest

from livepatch_lab.core.errors import DeadlineExceeded, GuestCommandError, GuestConnectionError
from livepatch_lab.machine.channel import GuestChannel, Result, load_private_key, parse_public_key

from tests.waiting import wait_until

from .fakes.sshd import FakeSSHServer, closed_port, openssh_line, silent_listener


@pytest.fixture(scope="module")
def server():
    srv = FakeSSHServer().start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client_key(server, tmp_path_factory):
    return server.write_client_key(tmp_path_factory.mktemp("keys") / "id_ecdsa")


def make_channel(server, client_key, host_key=None, port=None, command_timeout=10.0):
    return GuestChannel("127.0.0.1", port or server.port, user="root", client_key=client_key,
                        host_key=host_key or server.host_key_line, command_timeout=command_timeout)


@pytest.fixture(scope="module")
def channel(server, client_key):
    ch = make_channel(server, client_key)
    ch.connect(timeout=5)
    yield ch
    ch.close()


def test_run_returns_exit_status_stdout_and_stderr_apart(channel):
    result = channel.run("echo out; echo err >&2; exit 3")
    assert isinstance(result, Result)
    assert (result.rc, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert result.ok is False
    assert result.command == "echo out; echo err >&2; exit 3"
    assert 0 <= result.seconds < 5
    assert channel.run("true").ok


def test_megabytes_on_both_streams_at_once_do_not_deadlock(channel):
    # Well past paramiko's 2 MiB window, both streams written concurrently by the command.
    cmd = ("(head -c 5242880 /dev/zero | tr '\\0' o) & (head -c 1048576 /dev/zero | tr '\\0' e >&2) & "
           "wait; echo done")
    result = channel.run(cmd, timeout=20)
    assert result.rc == 0
    assert result.stdout == "o" * 5 * 1024 * 1024 + "done\n"
    assert result.stderr == "e" * 1024 * 1024


def test_a_command_that_never_ends_raises_deadline_exceeded_in_time(server, channel):
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded) as err:
        channel.run("echo started; sleep 1000", timeout=0.3)
    assert time.monotonic() - start < 0.3 + 1.0
    assert err.value.seconds == 0.3
    assert "sleep 1000" in str(err.value) and "started" in err.value.evidence
    # the connection survives: the next command runs normally ...
    assert channel.run("echo still here", timeout=5).stdout == "still here\n"
    # ... and the abandoned command's channel was closed, so the server killed it
    wait_until(lambda: "echo started; sleep 1000" in server.killed, "the server to kill the abandoned command", 2)


def test_the_default_deadline_is_the_channels_command_timeout(server, client_key):
    ch = make_channel(server, client_key, command_timeout=0.2)
    ch.connect(timeout=5)
    try:
        start = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            ch.run("sleep 1000")
        assert time.monotonic() - start < 1.2
    finally:
        ch.close()


def test_check_raises_guest_command_error_with_rc_and_output(channel):
    with pytest.raises(GuestCommandError) as err:
        channel.run("echo partial; echo 'no such module' >&2; exit 17", check=True)
    assert (err.value.rc, err.value.stdout, err.value.stderr) == (17, "partial\n", "no such module\n")
    assert "exited 17" in str(err.value) and "no such module" in str(err.value)
    assert channel.run("exit 0", check=True).rc == 0


def test_stdin_is_delivered_as_bytes_or_text(channel):
    data = bytes(range(256)) * 4096   # 1 MiB, every byte value
    result = channel.run("sha256sum", stdin=data)
    assert result.stdout.split()[0] == hashlib.sha256(data).hexdigest()
    assert channel.run("cat", stdin="héllo\n").stdout == "héllo\n"


def test_a_command_that_answers_while_it_reads_a_large_stdin_does_not_deadlock(channel):
    data = base64.b64encode(os.urandom(6 << 20))   # 8 MiB in and 8 MiB back: far past both windows
    result = channel.run("cat", stdin=data, timeout=20)
    assert result.rc == 0 and result.stdout == data.decode()


def test_a_command_that_ignores_its_stdin_still_returns_promptly(channel):
    start = time.monotonic()
    result = channel.run("echo done", stdin=b"z" * (8 << 20), timeout=10)
    assert (result.rc, result.stdout) == (0, "done\n")
    assert time.monotonic() - start < 3


class ClosesWhileFed:
    """A channel whose command exits, unread stdin and all, just as the next chunk is sent:
    paramiko closes it from its own thread between ``send_ready()`` and ``send()``."""
    closed = eof_received = False
    exit_status = 0

    def __init__(self):
        self.out = [b"done\n"]

    def send_ready(self):
        return True

    def send(self, data):
        self.closed = self.eof_received = True
        raise OSError("Socket is closed")

    def shutdown_write(self):
        pass

    def recv_ready(self):
        return bool(self.out)

    def recv(self, n):
        return self.out.pop()

    def recv_stderr_ready(self):
        return False

    def exit_status_ready(self):
        return self.closed


class Active:
    def is_active(self):
        return True


def test_a_command_that_exits_while_its_stdin_is_fed_keeps_its_output(channel):
    out, err = channel._drain(ClosesWhileFed(), Active(), time.monotonic() + 5, "echo done", 5, b"z" * 100)
    assert (out, err) == (b"done\n", b"")


def test_upload_writes_the_exact_bytes_with_the_mode(channel, tmp_path):
    local = tmp_path / "patch.ko"
    local.write_bytes(os.urandom(300_000) + b"\0\n\r\xff")
    remote = tmp_path / "it's a dir" / "livepatch_x.ko"   # a quote in the path survives quoting
    remote.parent.mkdir()
    channel.upload(local, str(remote), mode=0o600)
    assert remote.read_bytes() == local.read_bytes()
    assert remote.stat().st_mode & 0o777 == 0o600


def test_upload_to_an_impossible_path_raises(channel, tmp_path):
    local = tmp_path / "f"
    local.write_bytes(b"x")
    with pytest.raises(GuestCommandError):
        channel.upload(local, str(tmp_path / "missing-dir" / "f"))


def test_a_host_key_mismatch_refuses_the_guest_before_authenticating(server, client_key):
    impostor = openssh_line(paramiko.ECDSAKey.generate())
    before, conns = len(server.auth_attempts), len(server._transports)
    ch = make_channel(server, client_key, host_key=impostor)
    with pytest.raises(GuestConnectionError, match="host key mismatch"):
        ch.connect(timeout=5)
    assert not ch.connected
    # the server's side of that connection has ended: nothing more can arrive on it
    (refused,) = server._transports[conns:]
    wait_until(lambda: not refused.is_active(), "the server to see the refused connection end", 5)
    assert server.auth_attempts[before:] == []   # our key was never offered to the impostor


def test_a_client_key_the_guest_does_not_accept_is_a_connection_error(server, tmp_path):
    other = tmp_path / "other_key"
    paramiko.ECDSAKey.generate().write_private_key_file(str(other))
    ch = make_channel(server, other)
    with pytest.raises(GuestConnectionError):
        ch.connect(timeout=5)
    assert not ch.connected


def test_nothing_listening_is_a_quick_connection_error(server, client_key):
    holder, port = closed_port()
    try:
        ch = make_channel(server, client_key, port=port)
        start = time.monotonic()
        with pytest.raises(GuestConnectionError, match=f"127.0.0.1:{port}"):
            ch.connect(timeout=5)
        assert time.monotonic() - start < 1.0
    finally:
        holder.close()


def test_a_port_that_never_speaks_ssh_fails_within_the_connect_timeout(server, client_key):
    listener, port = silent_listener()
    try:
        ch = make_channel(server, client_key, port=port)
        start = time.monotonic()
        with pytest.raises(GuestConnectionError):
            ch.connect(timeout=0.3)
        assert time.monotonic() - start < 0.3 + 1.0
    finally:
        listener.close()


def test_run_without_a_connection_is_a_connection_error(server, client_key):
    ch = make_channel(server, client_key)
    with pytest.raises(GuestConnectionError, match="not connected"):
        ch.run("true")


def test_a_closed_channel_reports_not_connected_and_reconnects(server, client_key):
    ch = make_channel(server, client_key)
    ch.connect(timeout=5)
    assert ch.connected
    ch.close()
    assert not ch.connected
    ch.connect(timeout=5)
    assert ch.run("echo again").stdout == "again\n"
    ch.close()


def test_public_key_lines_are_parsed_and_bad_ones_refused(server):
    assert parse_public_key(server.host_key_line) == server.host_key
    with pytest.raises(ValueError):
        parse_public_key("ssh-dss AAAA")
    with pytest.raises(ValueError):
        parse_public_key("")


def test_an_unreadable_client_key_is_a_connection_error(tmp_path):
    bad = tmp_path / "id"
    bad.write_text("not a key\n")
    with pytest.raises(GuestConnectionError, match=str(bad)):
        load_private_key(bad)
