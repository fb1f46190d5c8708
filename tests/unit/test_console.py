"""The console follower: tails a file QEMU appends to, line by line, as it grows."""
import threading
import time

import pytest

from livepatch_lab.machine.console import ConsoleFollower

WAIT = 2.0   # generous upper bound for the follower (polls every 50 ms) to catch up


@pytest.fixture
def console(tmp_path):
    followers = []

    def make(name="console.log", create=True):
        path = tmp_path / name
        if create:
            path.touch()
        follower = ConsoleFollower(path).start()
        followers.append(follower)
        return path, follower

    yield make
    for follower in followers:
        follower.stop()


def looks_signalled(monkeypatch, poll: float) -> threading.Event:
    """``ConsoleFollower.POLL`` as ``poll`` s, and an Event set each time a follower reads it:
    it has just looked at its file, found nothing new (or no file yet), and waits to look again."""
    looked = threading.Event()
    monkeypatch.setattr(ConsoleFollower, "POLL", property(lambda self: (looked.set(), poll)[1]))
    return looked


def append(path, data: bytes) -> None:
    with open(path, "ab") as fh:
        fh.write(data)


def texts(follower):
    return [line.text for line in follower.lines]


def test_lines_written_in_chunks_are_joined_at_newlines(console):
    path, follower = console()
    written = b""
    for chunk in (b"[    0.000000] Linux ver", b"sion 6.1.0-18-amd64 (debian", b"-kernel)\n[    0.1] sec",
                  b"ond\r\nthird\n"):
        append(path, chunk)
        written += chunk
        # the follower sees each piece on its own: the next is written once it has read this one
        so_far = written.decode().replace("\r\n", "\n").removesuffix("\n")
        assert follower.wait_for(lambda c, so_far=so_far: c.tail() == so_far, WAIT)
    assert follower.wait_for(lambda c: len(c.lines) == 3, WAIT)
    assert texts(follower) == ["[    0.000000] Linux version 6.1.0-18-amd64 (debian-kernel)",
                               "[    0.1] second", "third"]   # \r of a serial line ending dropped
    assert follower.first_output is not None
    assert all(line.t >= follower.first_output for line in follower.lines)


def test_a_console_file_that_appears_later_is_picked_up(console, monkeypatch):
    looked = looks_signalled(monkeypatch, 0.05)
    path, follower = console(create=False)
    assert looked.wait(WAIT)   # it looked, and there was no file yet
    append(path, b"SeaBIOS (version 1.16.2-debian-1.16.2-1)\n")
    assert follower.wait_for(lambda c: c.contains("SeaBIOS"), WAIT)


def test_bytes_that_are_not_utf8_do_not_stop_the_follower(console):
    path, follower = console()
    append(path, b"garbage \xff\xfe here\nafter\n")
    assert follower.wait_for(lambda c: c.contains("after"), WAIT)
    assert texts(follower)[0] == "garbage \ufffd\ufffd here"


def test_fatal_is_none_until_a_panic_line_is_printed(console):
    path, follower = console()
    append(path, b"[    1.0] Run /init as init process\n[    2.0] WARNING: CPU: 0 PID: 1 at x.c:1 f+0x0/0x1\n")
    assert follower.wait_for(lambda c: len(c.lines) == 2, WAIT)
    assert follower.fatal() is None
    assert [f.kind for f in follower.findings] == ["warning"]   # trouble, but not fatal

    append(path, b"[   12.3] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100\n")
    assert follower.wait_for(lambda c: c.fatal() is not None, WAIT)
    panic = follower.fatal()
    assert panic.kind == "panic" and panic.lineno == 3
    assert panic.line.startswith("Kernel panic - not syncing: Attempted to kill init!")


def test_wait_for_returns_true_as_soon_as_the_predicate_holds(console):
    path, follower = console()
    append(path, b"livepatch-lab: ready\n")
    start = time.monotonic()
    assert follower.wait_for(lambda c: c.contains("livepatch-lab: ready"), 5.0)
    assert time.monotonic() - start < 1.0


def test_wait_for_gives_up_after_its_timeout(console):
    path, follower = console()
    append(path, b"a line that is not the one we want\n")
    start = time.monotonic()
    assert follower.wait_for(lambda c: c.contains("never printed"), 0.3) is False
    assert 0.28 <= time.monotonic() - start < 1.0


def test_tail_shows_the_last_n_lines_and_the_line_still_being_printed(console):
    path, follower = console()
    append(path, b"".join(b"line %d\n" % i for i in range(100)) + b"half a li")
    assert follower.wait_for(lambda c: len(c.lines) == 100 and c.tail(3).endswith("\nhalf a li"), WAIT)
    assert follower.tail(3) == "line 97\nline 98\nline 99\nhalf a li"
    assert follower.tail().splitlines()[0] == "line 60"   # 40 lines by default, + the partial one


def test_stop_drains_what_was_written_just_before(tmp_path, monkeypatch):
    looked = looks_signalled(monkeypatch, 30.0)   # only stop() will read the file again
    path = tmp_path / "console.log"
    path.touch()
    follower = ConsoleFollower(path).start()
    assert looked.wait(WAIT)   # it read the empty file, and waits to look again
    data = b"".join(b"[    %d.0] line %d\n" % (i, i) for i in range(500))
    append(path, data + b"\n" + b"Kernel panic - not syncing: no newline yet")
    follower.stop()   # immediately: whatever the follower had not read yet is read now
    assert len(follower.lines) == 502
    assert follower.lines[500].text == ""          # a blank line is a line, also in the last read
    assert follower.lines[-1].text == "Kernel panic - not syncing: no newline yet"
    assert follower.fatal() is not None and follower.fatal().lineno == 502
    assert follower.tail(1) == "Kernel panic - not syncing: no newline yet"   # not twice


def test_stop_reads_a_console_file_that_appeared_after_the_last_poll(tmp_path, monkeypatch):
    looked = looks_signalled(monkeypatch, 30.0)   # the follower will not look again by itself
    path = tmp_path / "console.log"
    follower = ConsoleFollower(path).start()
    assert looked.wait(WAIT)   # it found no file, and waits to look again
    path.write_bytes(b"qemu-system-x86_64: terminating on signal 15\n")
    start = time.monotonic()
    follower.stop()
    assert time.monotonic() - start < 1.0
    assert texts(follower) == ["qemu-system-x86_64: terminating on signal 15"]


def test_stop_is_prompt_and_idempotent(console):
    path, follower = console()
    start = time.monotonic()
    follower.stop()
    follower.stop()
    assert time.monotonic() - start < 1.0
