"""Run directories, and reaping what runs killed outright left behind."""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from livepatch_lab.machine import backends, runs
from livepatch_lab.machine.runs import OWNER, RunDir, reap_stale
from tests.waiting import wait_until

# A stand-in process: echoes its stdin line by line, ends at its end. One that answers after
# the reaper ran was not killed by it (a kill would have been delivered first).
ECHO = "import sys\nfor line in sys.stdin:\n    print(line, end='', flush=True)"


@pytest.fixture
def runs_dir(tmp_path):
    return tmp_path / "runs"


@pytest.fixture
def made(runs_dir):
    """RunDir.create, with every socket dir removed after the test whatever happens."""
    created = []

    def make(label="bookworm"):
        run = RunDir.create(runs_dir, label)
        created.append(run)
        return run

    yield make
    for run in created:
        run.remove()


def stand_in(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", ECHO, *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)


def still_alive(proc: subprocess.Popen) -> bool:
    """True if ``proc`` echoes a line, then ends normally at the end of its input."""
    out, _ = proc.communicate("ping\n", timeout=10)
    return (out, proc.returncode) == ("ping\n", 0)


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def set_owner(run: RunDir, **changes) -> None:
    path = run.path / OWNER
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_a_run_dir_records_its_owner_and_has_a_short_socket_dir(made, runs_dir):
    run = made("6.1.0-18-amd64")
    assert run.path.parent == runs_dir and run.path.is_dir()
    assert "6.1.0-18-amd64" in run.id
    owner = json.loads((run.path / OWNER).read_text())
    assert owner["pid"] == os.getpid()
    assert owner["sock_dir"] == str(run.sock_dir) and "backend" not in owner
    assert run.sock_dir.is_dir() and str(run.sock_dir).startswith(tempfile.gettempdir())
    assert len(str(run.sock_dir / "qmp.sock")) < 100   # AF_UNIX limit is 107 bytes
    # QMP commands QEMU (its migrate runs exec: commands): no one else may reach the socket
    assert run.sock_dir.stat().st_mode & 0o777 == 0o700

    run.record("qemu", qemu_pid=4242)
    owner = json.loads((run.path / OWNER).read_text())
    assert (owner["backend"], owner["qemu_pid"], owner["pid"]) == ("qemu", 4242, os.getpid())
    assert [p.name for p in run.path.iterdir()] == [OWNER]   # no temporary left


def test_two_runs_of_the_same_kernel_get_distinct_dirs(made):
    a, b = made("k"), made("k")
    assert a.path != b.path and a.sock_dir != b.sock_dir


def test_remove_deletes_the_run_and_socket_dirs(made):
    run = made()
    (run.path / "console.log").write_text("x")
    run.remove()
    assert not run.path.exists() and not run.sock_dir.exists()


def test_a_run_whose_owner_died_is_reaped_with_its_socket_dir(made, runs_dir):
    run = made()
    (run.sock_dir / "qmp.sock").write_text("")
    set_owner(run, pid=dead_pid())
    assert reap_stale(runs_dir) == 1
    assert not run.path.exists() and not run.sock_dir.exists()


def test_a_run_whose_owner_is_alive_is_kept(made, runs_dir):
    mine = made()   # owned by this very process
    assert reap_stale(runs_dir) == 0
    assert mine.path.is_dir() and mine.sock_dir.is_dir()


def test_only_the_dead_runs_go(made, runs_dir):
    alive, dead = made("alive"), made("dead")
    set_owner(dead, pid=dead_pid())
    assert reap_stale(runs_dir) == 1
    assert alive.path.is_dir() and not dead.path.exists()


def test_a_qemu_left_running_by_a_dead_run_is_killed(made, runs_dir):
    run = made()
    # stands in for QEMU: its command line names the run directory, as QEMU's does
    qemu = stand_in("-chardev", f"file,id=con0,path={run.path}/console.log")
    try:
        set_owner(run, pid=dead_pid(), backend="qemu", qemu_pid=qemu.pid)
        assert reap_stale(runs_dir) == 1
        assert qemu.wait(timeout=5) == -signal.SIGKILL
        assert not run.path.exists() and not run.sock_dir.exists()
    finally:
        if qemu.poll() is None:
            qemu.kill()
            qemu.wait()


def test_a_recorded_qemu_pid_now_used_by_another_program_is_left_alone(made, runs_dir):
    run = made()
    stranger = stand_in()
    try:
        set_owner(run, pid=dead_pid(), backend="qemu", qemu_pid=stranger.pid)
        assert reap_stale(runs_dir) == 1
        assert still_alive(stranger)   # not ours: its command line does not name the run
    finally:
        stranger.kill()
        stranger.wait()


def test_after_a_reboot_every_old_run_is_stale_and_no_pid_is_trusted(made, runs_dir):
    run = made()
    # a pid recorded before a reboot means nothing now: this one happens to be alive
    other = stand_in(str(run.path))
    try:
        set_owner(run, boot_id="an-earlier-boot", backend="qemu", qemu_pid=other.pid)
        assert reap_stale(runs_dir) == 1
        assert not run.path.exists()
        assert still_alive(other)        # pid from another boot: never killed
    finally:
        other.kill()
        other.wait()


def test_a_dir_without_owner_file_is_reaped_only_once_clearly_old(runs_dir):
    young, old = runs_dir / "half-created", runs_dir / "abandoned"
    young.mkdir(parents=True)
    old.mkdir()
    hour_ago = time.time() - 3700
    os.utime(old, (hour_ago, hour_ago))
    assert reap_stale(runs_dir) == 1
    assert young.is_dir() and not old.exists()


@pytest.fixture
def temp_root(tmp_path, monkeypatch):
    """A private stand-in for /tmp, so a reaper bug cannot touch the real one."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


@pytest.mark.parametrize("where", ["outside", "the temp dir itself", "a sibling with the same prefix",
                                   "not made by the lab"])
def test_only_a_socket_dir_the_lab_made_is_ever_deleted(made, runs_dir, temp_root, where):
    precious = {"outside": temp_root.parent / "precious",
                "the temp dir itself": temp_root,
                "a sibling with the same prefix": Path(str(temp_root) + "-other") / "lab-x",
                "not made by the lab": temp_root / "someone-elses"}[where]
    precious.mkdir(parents=True, exist_ok=True)
    (precious / "keep").write_text("")
    run = made()
    assert run.sock_dir.parent == temp_root
    set_owner(run, pid=dead_pid(), sock_dir=str(precious))
    assert reap_stale(runs_dir) == 1
    assert (precious / "keep").exists()


@pytest.mark.parametrize("owner", [{"sock_dir": None}, {"qemu_pid": None, "sock_dir": None},
                                   {"boot_id": None}, {"backend": "qemu", "qemu_pid": "x"},
                                   {"backend": "xen"}, {"backend": None}])
def test_odd_owner_values_do_not_stop_the_reaper(made, runs_dir, owner):
    run = made()
    set_owner(run, pid=dead_pid(), **owner)
    assert reap_stale(runs_dir) == 1
    assert not run.path.exists()


def test_unreadable_owner_files_and_stray_files_are_skipped(runs_dir):
    broken = runs_dir / "broken"
    broken.mkdir(parents=True)
    (broken / OWNER).write_text("{not json")
    (runs_dir / "stray-file").write_text("")
    assert reap_stale(runs_dir) == 0
    assert broken.is_dir()


def test_a_missing_runs_dir_is_nothing_to_reap(tmp_path):
    assert reap_stale(tmp_path / "nope") == 0


def test_liveness_check(monkeypatch):
    assert runs._alive(os.getpid())
    assert not runs._alive(dead_pid())


def test_a_zombie_owner_counts_as_dead():
    # A killed lab lingers as a zombie until reaped; it holds nothing, so its run is stale.
    child = subprocess.Popen(["true"])
    wait_until(lambda: Path(f"/proc/{child.pid}/stat").read_text().split(") ")[1][0] == "Z",
               "the child to be a zombie")
    try:
        assert not runs._alive(child.pid)
    finally:
        child.wait()


# -- each record goes to the reaper of the backend that wrote it ------------------------------

class Reaper:
    """A backend that only reaps: what the registry handed it."""
    calls: list = []
    fail = False

    @staticmethod
    def reap(record, run_path, same_boot):
        Reaper.calls.append((record["backend"], record.get("thing"), run_path.name, same_boot))
        if Reaper.fail:
            raise RuntimeError("the libvirt host is unreachable")


@pytest.fixture
def fake_backend(monkeypatch):
    Reaper.calls, Reaper.fail = [], False
    monkeypatch.setitem(backends.REGISTRY, "fake", lambda: Reaper)
    return Reaper


def test_a_dead_runs_record_goes_to_its_backends_reaper_through_the_registry(made, runs_dir,
                                                                            fake_backend):
    dead, alive, rebooted = made("dead"), made("alive"), made("rebooted")
    dead.record("fake", thing="domain-1")
    set_owner(dead, pid=dead_pid())
    alive.record("fake", thing="domain-2")
    rebooted.record("fake", thing="domain-3")
    set_owner(rebooted, boot_id="an-earlier-boot")
    assert reap_stale(runs_dir) == 2
    assert sorted(fake_backend.calls) == [("fake", "domain-1", dead.id, True),
                                          ("fake", "domain-3", rebooted.id, False)]
    assert alive.path.is_dir() and not dead.path.exists() and not rebooted.path.exists()


def test_a_reaper_that_fails_does_not_stop_the_others_nor_the_new_run(made, runs_dir, fake_backend):
    fake_backend.fail = True
    runs = [made("a"), made("b")]
    for run in runs:
        run.record("fake", thing=run.id)
        set_owner(run, pid=dead_pid())
    assert reap_stale(runs_dir) == 2
    assert len(fake_backend.calls) == 2 and not any(r.path.exists() for r in runs)


@pytest.mark.parametrize("record, backend", [
    ({"qemu_pid": 4242}, "qemu"), ({"libvirt": {"uri": "qemu:///system"}}, "libvirt"),
    ({"qemu_pid": None}, None), ({}, None)])
def test_records_from_before_backends_were_named_go_to_the_backend_they_came_from(
        monkeypatch, tmp_path, record, backend):
    seen = []

    class Named:
        def __init__(self, name):
            self.name = name

        def reap(self, record, run_path, same_boot):
            seen.append(self.name)
    for name in ("qemu", "libvirt"):
        monkeypatch.setitem(backends.REGISTRY, name, lambda name=name: Named(name))
    assert backends.reap(record, tmp_path, True) == (backend is not None)
    assert seen == ([backend] if backend else [])


def test_the_registry_knows_every_backend_the_settings_accept():
    assert set(backends.REGISTRY) == set(backends.BACKENDS)
