import os
import subprocess
import threading
from pathlib import Path
from typing import Optional

import pytest

from tests.waiting import wait_until


def kernel_params(names) -> list:
    """``names`` as pytest params, each marked with its kernel line's marker (``debian_6_12``),
    as the lab's own items are: ``-m "not debian_5_10"`` then leaves a line out everywhere
    (.ci/run keeps 6.1 and 7; the matrix workflow runs every line)."""
    from livepatch_lab.plugin.settings import kernel_marker
    return [pytest.param(n, marks=getattr(pytest.mark, kernel_marker(n))) for n in names]


def pytest_configure(config):
    from livepatch_lab.plugin.settings import kernel_marker, register_marker
    from livepatch_lab.supply.kernels.defs import load_definitions
    for name in load_definitions():
        register_marker(config, kernel_marker(name), f"{kernel_marker(name)}: lab items on kernel {name}")


def qemu_processes_under(path: Path) -> list[str]:
    """Command lines of running QEMU processes that mention ``path``."""
    out = subprocess.run(["pgrep", "-af", "qemu-system"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if str(path) in line]


@pytest.fixture(scope="session")
def lab_settings(lab_settings, tmp_path_factory):
    """This session's own run directories, so other users of the cache (another pytest,
    an xdist worker, a CLI run) never look like our leftovers, nor ours like theirs.
    One vCPU: these tests prove the lab's machinery (boot, teardown, faults, snapshots,
    reports), not a patch, and a guest holds a host core per vCPU thread (cpuslots.py), so on
    CI's two cores two of them run at once; the scenario items judge patches on two vCPUs."""
    import dataclasses
    return dataclasses.replace(lab_settings, runs_root=tmp_path_factory.mktemp("runs"), cpus=1)


@pytest.fixture
def no_leftovers(lab_settings):
    """After the test: no QEMU of ours running, no run directory, no socket dir left."""
    before = set(os.listdir(lab_settings.runs_dir)) if lab_settings.runs_dir.exists() else set()
    yield
    assert qemu_processes_under(lab_settings.runs_dir) == []
    after = set(os.listdir(lab_settings.runs_dir)) if lab_settings.runs_dir.exists() else set()
    assert after - before == set(), f"run directories left behind: {after - before}"


class SmallDisk:
    """tmpfs mounts of a given size, for running a directory out of space; unmounted after the
    test. ``grow`` gives a mounted one more room (the next run "with space")."""

    def __init__(self, base: Path):
        self.base, self.mounted = base, []

    def __call__(self, size: str, name: str = "disk") -> Path:
        path = self.base / name
        path.mkdir(parents=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                       check=True)
        self.mounted.append(path)
        return path

    @staticmethod
    def grow(path: Path, size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)

    def unmount_all(self) -> None:
        for path in reversed(self.mounted):
            subprocess.run(["umount", str(path)], check=False)


@pytest.fixture
def small_disk(tmp_path):
    """``small_disk("64m", "cache")`` -> a directory on a fresh 64 MiB tmpfs (needs root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    disks = SmallDisk(tmp_path / "mounts")
    yield disks
    disks.unmount_all()


def qemu_pids_under(path: Path) -> list[int]:
    """PIDs of running QEMU processes that mention ``path``."""
    out = subprocess.run(["pgrep", "-af", "qemu-system"], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in out.splitlines() if str(path) in line]


def interruptible() -> None:
    """``preexec_fn`` of a child a test interrupts as a user's Ctrl-C would: SIGINT at its default
    disposition. A suite started in the background (``cmd &`` in a script) inherits SIGINT
    ignored, and a Python child keeps an ignored SIGINT ignored: the test would prove nothing."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for_console(runs_dir: Path, text: str, deadline: float, proc=None, output="") -> Path:
    """Until a run's console log under ``runs_dir`` shows ``text`` (the guest reached that
    point); the console log's path. A ``proc`` that ends first ends the wait (with ``output``)."""
    def shown() -> Optional[Path]:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"it ended (exit {proc.returncode}) before {text!r}:\n{output}")
        for log in runs_dir.glob("*/console.log"):
            try:
                if text in log.read_text(errors="replace"):
                    return log
            except OSError:   # the run ended meanwhile
                continue
        return None
    return wait_until(shown, f"a console under {runs_dir} to show {text!r}", deadline, interval=0.2)


class Output:
    """A child's output, read as it comes; ``wait_for`` a line (an event, not a sleep)."""

    def __init__(self, proc: subprocess.Popen):
        self.lines: list[str] = []
        self._new = threading.Condition()
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc) -> None:
        for line in proc.stdout:
            with self._new:
                self.lines.append(line)
                self._new.notify_all()

    def wait_for(self, text: str, deadline: float) -> None:
        with self._new:
            if not self._new.wait_for(lambda: any(text in line for line in self.lines), deadline):
                raise AssertionError(f"no {text!r} within {deadline:.0f}s:\n{self}")

    def __str__(self) -> str:
        return "".join(self.lines)
