"""``session.boot`` as a specification, driven by a fake backend and machine (no QEMU)
and an in-process SSH server: it reaps first, waits for a real SSH answer, and
whatever happens (success, an error in the ``with``, a boot error, Ctrl-C) it
stops the machine and removes the run directory and the overlay. It uses only
the ``Backend`` it is given, never asking which one it holds."""
from __future__ import annotations

import ast
import inspect
import json
import os
import signal
import subprocess
import threading
import types
from pathlib import Path

import pytest

from harness.core.errors import BootError
from harness.core.settings import Settings
from harness.machine import accel, backends, runs, session
from harness.machine.backends.base import GUEST, HOST, Disk, MachineExit, StillRunning
from harness.machine.console import ConsoleFollower

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
        lines = {"ready": session.READY_MARKER.encode() + b"\r\n",
                 "panic": b"[    1.000000] Kernel panic - not syncing: VFS: Unable to mount root fs\r\n",
                 "dies": b""}[self.backend.behaviour]
        self.spec.console_log.write_bytes(LINUX + lines)
        self.console.start()
        if self.backend.behaviour == "dies":
            self._end(GUEST, "reset")
        self.backend.sshd.builtins["poweroff"] = self._poweroff

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


class FakeBackend:
    name = "fake"
    reaped: list = []   # class-wide: the registry hands records to the class

    def __init__(self, sshd: FakeSSHServer, behaviour: str = "ready"):
        self.sshd, self.behaviour = sshd, behaviour
        self.log: list[str] = []
        self.machines: list[FakeMachine] = []
        self.overlays: list[Path] = []

    def root_disk(self, image, run) -> Disk:
        self.log.append("root_disk")
        overlay = run.path / "root.qcow2"
        overlay.write_bytes(b"QFI\xfb")
        self.overlays.append(overlay)
        return Disk(overlay, "qcow2")

    def kvm_verdict(self):
        raise AssertionError("no KVM probe under accel=tcg")

    kvm_precheck = kvm_verdict

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
    monkeypatch.setattr(session.bootfiles, "prepare", lambda kernel, settings: types.SimpleNamespace(
        initramfs=tmp_path / "initramfs.cpio.gz", modules_disk=tmp_path / "modules.img"))
    monkeypatch.setitem(backends.REGISTRY, "fake", lambda: FakeBackend)
    FakeBackend.reaped = []

    def refuse(settings):
        raise AssertionError("boot() looked up a backend by name although it was given one")
    monkeypatch.setattr(backends, "get", refuse)
    settings = Settings(cache_dir=tmp_path / "cache", accel="tcg", boot_protocol="bzimage",
                        tcg_factor=1.0)
    kernel = types.SimpleNamespace(name="debian-6.1", release="6.1.0-18-amd64",
                                   vmlinuz=tmp_path / "vmlinuz", describe=lambda: {})
    image = types.SimpleNamespace(user="root", client_key=sshd.write_client_key(tmp_path / "id"),
                                  host_key=sshd.host_key_line, digest="d1", path=tmp_path / "base.img")
    return types.SimpleNamespace(settings=settings, kernel=kernel, image=image)


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
