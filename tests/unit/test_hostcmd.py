"""Host commands: output or a HostCommandError, within a deadline, and no stray children."""
import subprocess
import sys
import time
from pathlib import Path

import pytest

from livepatch_lab.core import hostcmd
from livepatch_lab.core.errors import HostCommandError, InfraError
from tests.waiting import wait_until


def dead(pid: int) -> bool:
    """Gone, or a zombie waiting for its (re)parent to reap it: either way, not running."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def wait_dead(pid: int, within: float = 2.0) -> bool:
    return wait_until(lambda: dead(pid), f"pid {pid} to end", within)


def test_returns_stdout_and_stderr_combined_in_order():
    out = hostcmd.run(["sh", "-c", "echo one; echo two >&2; echo three"], what="echo", timeout=5)
    assert out == "one\ntwo\nthree\n"


def test_a_failing_command_raises_with_what_command_rc_and_output():
    with pytest.raises(HostCommandError) as err:
        hostcmd.run(["sh", "-c", "echo 'E: Unable to locate package linux-image-9.9'; exit 100"],
                    what="apt-get download", timeout=5)
    e = err.value
    assert (e.what, e.rc) == ("apt-get download", 100)
    assert e.cmd[:2] == ["sh", "-c"] and "Unable to locate package" in e.output
    assert str(e).startswith("apt-get download: exited 100: sh -c")
    assert "Unable to locate package" in str(e)
    assert isinstance(e, InfraError)


def test_a_command_that_overruns_is_killed_with_its_children_by_the_deadline(tmp_path):
    pidfile = tmp_path / "child.pid"
    script = f"sleep 60 & echo $! > {pidfile}; wait"
    start = time.monotonic()
    with pytest.raises(HostCommandError) as err:
        hostcmd.run(["sh", "-c", script], what="mmdebstrap", timeout=0.5)
    assert time.monotonic() - start < 0.5 + 1.0
    assert err.value.rc is None and "timed out" in str(err.value)
    assert wait_dead(int(pidfile.read_text()))   # the grandchild went with the group


def test_an_interrupt_while_waiting_kills_the_command_and_its_children(tmp_path, monkeypatch):
    pidfile = tmp_path / "child.pid"
    real = subprocess.Popen.communicate

    def interrupted(self, *a, **kw):
        wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), "the command's child pid", 5)
        raise KeyboardInterrupt

    monkeypatch.setattr(subprocess.Popen, "communicate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        hostcmd.run(["sh", "-c", f"sleep 60 & echo $! > {pidfile}; wait"], what="x", timeout=30)
    monkeypatch.setattr(subprocess.Popen, "communicate", real)
    assert wait_dead(int(pidfile.read_text()))


def test_a_missing_program_is_an_infra_error_that_says_what_and_which():
    with pytest.raises(InfraError) as err:
        hostcmd.run(["no-such-tool-xyz", "--version"], what="build the image", timeout=5)
    assert not isinstance(err.value, HostCommandError)
    assert "build the image" in str(err.value) and "no-such-tool-xyz" in str(err.value)


def test_input_is_fed_to_stdin_and_without_input_stdin_is_empty_not_inherited():
    assert hostcmd.run(["cat"], what="cat", timeout=5, input=b"\x00bytes\n") == "\x00bytes\n"
    start = time.monotonic()
    assert hostcmd.run(["cat"], what="cat", timeout=5) == ""   # EOF at once, never waits on a tty
    assert time.monotonic() - start < 1


def test_cwd_env_and_path_arguments(tmp_path):
    (tmp_path / "f.txt").write_text("x")
    assert hostcmd.run(["ls"], what="ls", timeout=5, cwd=tmp_path) == "f.txt\n"
    assert hostcmd.run([sys.executable, "-c", "import os; print(os.environ.get('LAB_X'))"], what="env",
                       timeout=5, env={"LAB_X": "42"}) == "42\n"
    assert hostcmd.run(["cat", tmp_path / "f.txt"], what="cat", timeout=5) == "x"


def test_undecodable_output_is_replaced_not_raised():
    out = hostcmd.run(["printf", r"\377ok"], what="printf", timeout=5)
    assert out == "\ufffdok"
