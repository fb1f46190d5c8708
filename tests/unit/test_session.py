"""``session.boot`` as a specification, driven by a fake backend and machine (no QEMU)
and an in-process SSH server: it reaps first, waits for a real SSH answer, and
whatever happens (success, an error in the ``with``, a boot error, Ctrl-C) it
stops the machine and removes the run directory and the overlay. It uses only
the ``Backend`` it is given, never asking which one it holds."""
from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import os
import signal
import subprocess
import threading
import types
from pathlib import Path

import pytest

from livepatch_lab.core.errors import BootError, InfraError
from livepatch_lab.core.settings import Settings
from livepatch_lab.machine import accel, backends, runs, session
from livepatch_lab.machine.backends.base import GUEST, HOST, Disk, MachineExit, StillRunning
from livepatch_lab.machine.console import ConsoleFollower
from livepatch_lab.machine.guest import READY_MARKER
from livepatch_lab.machine.resync import Resync

from .fakes.sshd import FakeSSHServer

LINUX = b"[    0.000000] Linux version 6.1.0-18-amd64 (debian-kernel@lists.debian.org)\r\n"


@pytest.fixture(scope="module")
def sshd():
    server = FakeSSHServer().start()
    yield server
    server.stop()


class FakeMachine:
    """Boots as ``behaviour`` says: ``ready`` (announces sshd), ``panic``, ``dies`` (ends
    by itself before it is ready). The guest's ``poweroff`` ends it as the guest's doing."""

    def __init__(self, backend: "FakeBackend", spec, accel_name, run):
        self.backend, self.spec, self.accel, self.run = backend, spec, accel_name, run
        self.console = ConsoleFollower(spec.console_log)
        self.ended = threading.Event()
        self._exit = StillRunning
        self.destroyed = 0

    def _end(self, kind: str, detail: str) -> None:
        if not self.ended.is_set():
            self._exit = MachineExit(kind, detail)
            self.ended.set()

    def start(self) -> None:
        self.backend.log.append("start")
        self.run.record(self.backend.name, domain=self.spec.name)
        self.backend.sshd.builtins["poweroff"] = self._poweroff
        if self.spec.incoming is not None:   # its console already says it is ready
            self.backend.log.append(f"resume {self.spec.incoming.parent.name}")
            if self.backend.refuse_state:
                self.destroy()   # as QemuMachine.start does when it fails
                raise InfraError("QEMU could not resume the saved guest: load of migration failed")
            self.console.start()
            return
        lines = {"ready": READY_MARKER.encode() + b"\r\n",
                 "panic": b"[    1.000000] Kernel panic - not syncing: VFS: Unable to mount root fs\r\n",
                 "dies": b""}[self.backend.behaviour]
        self.spec.console_log.write_bytes(LINUX + lines)
        self.console.start()
        if self.backend.behaviour == "dies":
            self._end(GUEST, "reset")

    def _poweroff(self) -> int:
        self.backend.log.append("poweroff")
        self._end(GUEST, "poweroff")
        return 0

    def is_running(self) -> bool:
        return not self.ended.is_set()

    def wait_exit(self, timeout: float) -> bool:
        return self.ended.wait(timeout)

    def exit_info(self) -> MachineExit:
        return self._exit

    def exit_reason(self) -> str:
        return self._exit.detail

    def destroy(self) -> None:
        self.backend.log.append("destroy")
        self.destroyed += 1
        self._end(HOST, "stopped by the lab")
        self.console.stop()

    def lab_ports(self) -> dict[int, int]:
        return {session.SSH_PORT: self.backend.sshd.port}

    def describe(self) -> dict:
        return {"backend": self.backend.name}

    def cpu_registers(self) -> str:
        return ""

    def save(self, state: Path, root_disk: Path) -> None:
        self.backend.log.append("save")
        if self.backend.fail_save:
            raise InfraError("QEMU could not save the guest: No space left on device")
        state.write_bytes(b"state of " + self.spec.name.encode())
        root_disk.write_bytes(self.spec.disks[0].path.read_bytes())


class FakeBackend:
    name = "fake"
    reaped: list = []   # class-wide: the registry hands records to the class

    def __init__(self, sshd: FakeSSHServer, behaviour: str = "ready", saves: bool = False):
        self.sshd, self.behaviour, self.saves = sshd, behaviour, saves
        self.identity = {"emulator": "fake 1.0"}
        self.refuse_state = self.fail_save = False
        self.log: list[str] = []
        self.machines: list[FakeMachine] = []
        self.overlays: list[Path] = []
        self.threads = 0   # host CPU slots its guests hold (cpuslots.py); 0: none

    def root_disk(self, image, run, over=None) -> Disk:
        self.log.append("root_disk" if over is None else f"root_disk over {over.parent.name}/{over.name}")
        overlay = run.path / "root.qcow2"
        overlay.write_bytes(b"QFI\xfb" + (b" on " + over.read_bytes() if over else b""))
        self.overlays.append(overlay)
        return Disk(overlay, "qcow2")

    def kvm_verdict(self):
        raise AssertionError("no KVM probe under accel=tcg")

    kvm_precheck = kvm_verdict

    def host_threads(self, spec, accel_name):
        return self.threads

    def snapshot_identity(self, spec, accel_name):
        return {**self.identity, "spec": repr(spec), "accel": accel_name} if self.saves else None

    def machine(self, spec, accel_name, timeouts, run) -> FakeMachine:
        self.log.append("machine")
        self.machines.append(FakeMachine(self, spec, accel_name, run))
        return self.machines[-1]

    @staticmethod
    def reap(record, run_path, same_boot) -> None:
        FakeBackend.reaped.append(record.get("domain"))


@pytest.fixture
def lab(tmp_path, sshd, monkeypatch):
    """Settings, a kernel and an image for the fake backend; boot files are not built."""
    for name in ("initramfs.cpio.gz", "modules.img", "vmlinuz", "base.img"):
        (tmp_path / name).write_bytes(name.encode())
    monkeypatch.setattr(session.bootfiles, "prepare", lambda kernel, settings: types.SimpleNamespace(
        initramfs=tmp_path / "initramfs.cpio.gz", modules_disk=tmp_path / "modules.img"))
    resyncs: list = []

    def fake_resync(channel, timeout):
        # never the real one: the fake sshd runs commands on this host (its clock, its RNG)
        resyncs.append(channel.port)
        return Resync(offset=-12.5, uncertainty=0.01, seconds=0.2)
    monkeypatch.setattr(session, "resync", fake_resync)
    monkeypatch.setitem(backends.REGISTRY, "fake", lambda: FakeBackend)
    FakeBackend.reaped = []

    def refuse(settings):
        raise AssertionError("boot() looked up a backend by name although it was given one")
    monkeypatch.setattr(backends, "get", refuse)
    settings = Settings(cache_dir=tmp_path / "cache", accel="tcg", boot_protocol="bzimage",
                        tcg_factor=1.0)
    kernel = types.SimpleNamespace(name="debian-6.1", release="6.1.0-18-amd64", version="6.1.76-1",
                                   vmlinuz=tmp_path / "vmlinuz", describe=lambda: {})
    image = types.SimpleNamespace(name="default", user="root", client_key=sshd.write_client_key(tmp_path / "id"),
                                  host_key=sshd.host_key_line, digest="d1", path=tmp_path / "base.img")
    return types.SimpleNamespace(settings=settings, kernel=kernel, image=image, resyncs=resyncs)


def boot(lab, backend, **kw):
    return session.boot(lab.kernel, lab.image, lab.settings, backend=backend, **kw)


def left_behind(lab, backend) -> list:
    """Run directories, socket directories and overlays still there."""
    runs_dir = lab.settings.runs_dir
    dirs = [p.name for p in runs_dir.iterdir()] if runs_dir.exists() else []
    socks = [str(m.run.sock_dir) for m in backend.machines if m.run.sock_dir.exists()]
    return dirs + socks + [str(p) for p in backend.overlays if p.exists()]


def dead_run(lab, label: str = "killed") -> Path:
    """A run directory whose owner was killed outright, with what its backend recorded."""
    run = runs.RunDir.create(lab.settings.runs_dir, label)
    run.record("fake", domain="lab-left-by-a-dead-run")
    proc = subprocess.Popen(["true"])
    proc.wait()
    owner = json.loads((run.path / runs.OWNER).read_text())
    (run.path / runs.OWNER).write_text(json.dumps({**owner, "pid": proc.pid}))
    return run.path


def test_boot_reaps_first_answers_over_ssh_and_powers_off_and_cleans_up_after(lab, sshd):
    stale = dead_run(lab)
    backend = FakeBackend(sshd)
    with boot(lab, backend, artifacts_dir=lab.settings.cache_dir / "artifacts") as guest:
        assert FakeBackend.reaped == ["lab-left-by-a-dead-run"] and not stale.exists()
        assert guest.run("echo hello", check=True).stdout == "hello\n"
        assert guest.accel == "tcg" and guest.host_port(session.SSH_PORT) == sshd.port
        machine = backend.machines[0]
        assert machine.run.path.is_dir() and backend.overlays[0].exists()
        assert "ssh_ready" in guest.timings
    assert backend.log == ["root_disk", "machine", "start", "poweroff", "destroy"]
    assert machine.exit_info() == MachineExit(GUEST, "poweroff")
    assert left_behind(lab, backend) == []
    assert (lab.settings.cache_dir / "artifacts" / "console.log").read_bytes().startswith(LINUX)


def test_the_machine_records_its_leftovers_in_the_run_for_its_backends_reaper(lab, sshd):
    backend = FakeBackend(sshd)
    with boot(lab, backend):
        owner = json.loads((backend.machines[0].run.path / runs.OWNER).read_text())
        assert (owner["backend"], owner["domain"]) == ("fake", backend.machines[0].spec.name)


@pytest.mark.parametrize("error, teardown", [(RuntimeError("the test failed"), ["poweroff", "destroy"]),
                                             (KeyboardInterrupt(), ["start", "destroy"])],
                         ids=["exception", "ctrl-c"])
def test_an_exception_inside_the_with_still_stops_the_machine_and_cleans_up(lab, sshd, error, teardown):
    """After an interrupt the machine is destroyed at once: no poweroff of a throwaway guest
    while a CI runner or xdist's controller waits to kill the process."""
    backend = FakeBackend(sshd)
    with pytest.raises(type(error)):
        with boot(lab, backend):
            raise error
    assert backend.log[-2:] == teardown
    assert not backend.machines[0].is_running() and left_behind(lab, backend) == []


def test_a_second_interrupt_during_the_teardown_waits_until_it_is_done(lab, sshd, monkeypatch):
    backend = FakeBackend(sshd)
    destroy = FakeMachine.destroy

    def interrupted_destroy(self):
        os.kill(os.getpid(), signal.SIGINT)   # xdist re-sends SIGINT to a worker still busy after 5 s
        destroy(self)
    monkeypatch.setattr(FakeMachine, "destroy", interrupted_destroy)
    with pytest.raises(KeyboardInterrupt):
        with boot(lab, backend):
            raise KeyboardInterrupt("signal 2")
    assert backend.log[-1] == "destroy" and left_behind(lab, backend) == []


def test_an_interrupt_that_arrives_during_a_normal_teardown_is_raised_after_it(lab, sshd, monkeypatch):
    backend = FakeBackend(sshd)
    destroy = FakeMachine.destroy

    def interrupted_destroy(self):
        os.kill(os.getpid(), signal.SIGINT)
        destroy(self)
    monkeypatch.setattr(FakeMachine, "destroy", interrupted_destroy)
    with pytest.raises(KeyboardInterrupt, match="signal 2"):
        with boot(lab, backend):
            pass
    assert backend.log[-2:] == ["poweroff", "destroy"] and left_behind(lab, backend) == []


@pytest.mark.parametrize("behaviour, message", [
    ("panic", "guest panic during boot: Kernel panic - not syncing: VFS: Unable to mount root fs"),
    ("dies", "QEMU ended during boot (reset)"),
])
def test_a_boot_error_stops_the_machine_and_cleans_up_without_yielding(lab, sshd, behaviour, message):
    backend = FakeBackend(sshd, behaviour)
    with pytest.raises(BootError) as err:
        with boot(lab, backend):
            pytest.fail("a guest that never got ready was yielded")
    assert message in str(err.value) and "Linux version" in err.value.console_tail
    assert backend.log == ["root_disk", "machine", "start", "destroy"]
    assert backend.machines[0].destroyed == 1 and left_behind(lab, backend) == []


def test_session_runs_and_accel_never_name_a_backend():
    """They hold a ``Backend``; which one is the registry's business."""
    for module in (session, runs, accel):
        tree = ast.parse(inspect.getsource(module))
        imported = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not {m for m in imported if "qemu" in m or "libvirt" in m}, module.__name__
        strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)}
        assert not strings & set(backends.BACKENDS), module.__name__
        names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        names |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        assert not {n for n in names if "qemu" in n.lower() or "libvirt" in n.lower()}, module.__name__


# -- boot once, restore many --------------------------------------------------------------

def saved(lab) -> list[Path]:
    """The snapshot directories in the store (hidden work directories included)."""
    root = lab.settings.snapshots_dir
    return sorted(root.iterdir()) if root.exists() else []


def test_the_first_boot_saves_the_guest_once_it_answers_and_it_runs_on_in_step(lab, sshd):
    backend = FakeBackend(sshd, saves=True)
    with boot(lab, backend) as guest:
        assert backend.log == ["root_disk", "machine", "start", "save"]
        assert guest.run("echo still here", check=True).stdout == "still here\n"
        # before it is saved (what a copy runs first is then in its page cache), and after: it stood still
        assert guest.restored_from is None and lab.resyncs == [sshd.port, sshd.port]
        assert guest.timings["clock_step"] == 12.5 and "snapshot" in guest.timings
    [snap] = saved(lab)
    assert snap.name.startswith("debian-6.1-")
    assert {p.name for p in snap.iterdir()} == {"state", "disk.qcow2", "console.log", "meta.json"}
    meta = json.loads((snap / "meta.json").read_text())
    assert meta["kernel"] == {"name": "debian-6.1", "release": "6.1.0-18-amd64", "version": "6.1.76-1"}
    assert (meta["image"], meta["accel"], meta["backend"]) == ({"name": "default", "digest": "d1"}, "tcg", "fake")
    assert (snap / "disk.qcow2").stat().st_mode & 0o777 == 0o444
    assert READY_MARKER in (snap / "console.log").read_text()
    assert left_behind(lab, backend) == []


def test_a_later_boot_resumes_its_own_copy_of_the_saved_guest_instead_of_booting(lab, sshd):
    with boot(lab, FakeBackend(sshd, saves=True)):
        pass
    [snap] = saved(lab)
    backend = FakeBackend(sshd, saves=True)
    with boot(lab, backend, forward_ports=(8080,), artifacts_dir=lab.settings.cache_dir / "art") as guest:
        assert backend.log == ["root_disk over " + snap.name + "/disk.qcow2", "machine", "start",
                               "resume " + snap.name]
        machine = backend.machines[0]
        assert machine.spec.incoming == snap / "state"
        assert machine.spec.disks[0].path.read_bytes().endswith(b" on QFI\xfb")   # its own overlay
        assert {f.guest_port for f in machine.spec.forwards} == {session.SSH_PORT, 8080}   # not the saved one's
        assert guest.restored_from == snap.name and lab.resyncs[-1] == sshd.port
        assert guest.run("echo hello", check=True).stdout == "hello\n"
        assert {"restore", "ssh_ready", "resync", "clock_step"} <= set(guest.timings)
    console = (lab.settings.cache_dir / "art" / "console.log").read_text()
    assert console.startswith(LINUX.decode().strip()) and READY_MARKER in console
    assert f"{session.RESTORED_MARKER} {snap.name}" in console.splitlines()[-1]
    assert backend.log[-2:] == ["poweroff", "destroy"] and left_behind(lab, backend) == []
    assert saved(lab) == [snap]


def test_a_copy_that_fails_to_resume_is_discarded_and_the_run_boots_and_saves_anew(lab, sshd):
    with boot(lab, FakeBackend(sshd, saves=True)):
        pass
    [old] = saved(lab)
    (old / "state").write_bytes(b"yesterday's state")
    backend = FakeBackend(sshd, saves=True)
    backend.refuse_state = True
    with boot(lab, backend) as guest:
        assert guest.restored_from is None
        assert guest.run("echo booted", check=True).stdout == "booted\n"
        assert backend.log == ["root_disk over " + old.name + "/disk.qcow2", "machine", "start",
                               "resume " + old.name, "destroy", "root_disk", "machine", "start", "save"]
        failed = backend.machines[0]
        assert not failed.is_running() and not failed.run.path.exists()
    [new] = saved(lab)
    assert new.name == old.name and (new / "state").read_bytes() == b"state of " + \
        backend.machines[1].spec.name.encode()
    assert left_behind(lab, backend) == []


def test_a_failed_save_costs_only_the_snapshot(lab, sshd):
    backend = FakeBackend(sshd, saves=True)
    backend.fail_save = True
    with boot(lab, backend) as guest:
        assert guest.run("echo fine", check=True).stdout == "fine\n"
    assert backend.log == ["root_disk", "machine", "start", "save", "poweroff", "destroy"]
    assert saved(lab) == [] and left_behind(lab, backend) == []


@pytest.mark.parametrize("saves, on", [(True, False), (False, True)], ids=["snapshots-off", "backend-without"])
def test_without_snapshots_or_a_backend_that_saves_none_guests_boot_as_before(lab, sshd, saves, on):
    settings = dataclasses.replace(lab.settings, snapshots=on)
    for _ in range(2):
        backend = FakeBackend(sshd, saves=saves)
        with session.boot(lab.kernel, lab.image, settings, backend=backend) as guest:
            assert guest.restored_from is None
        assert backend.log == ["root_disk", "machine", "start", "poweroff", "destroy"]
    assert saved(lab) == [] and lab.resyncs == []


def test_one_snapshot_serves_every_run_whatever_its_ports_but_not_another_machine(lab, sshd):
    with boot(lab, FakeBackend(sshd, saves=True), forward_ports=(8080,)):
        pass
    [snap] = saved(lab)
    backend = FakeBackend(sshd, saves=True)
    with boot(lab, backend, forward_ports=(9090, 7070)) as guest:
        assert guest.restored_from == snap.name
    backend = FakeBackend(sshd, saves=True)
    backend.identity = {"emulator": "fake 2.0"}   # e.g. another QEMU version
    with boot(lab, backend) as guest:
        assert guest.restored_from is None and "save" in backend.log
    with boot(lab, FakeBackend(sshd, saves=True), append="module.sig_enforce=1") as guest:
        assert guest.restored_from is None
    assert len(saved(lab)) == 3
