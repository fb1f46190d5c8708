import os
import subprocess
from pathlib import Path

import pytest


def qemu_processes_under(path: Path) -> list[str]:
    """Command lines of running QEMU processes that mention ``path``."""
    out = subprocess.run(["pgrep", "-af", "qemu-system"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if str(path) in line]


@pytest.fixture(scope="session")
def lab_settings(lab_settings, tmp_path_factory):
    """This session's own run directories, so other users of the cache (another pytest,
    an xdist worker, a CLI run) never look like our leftovers, nor ours like theirs."""
    import dataclasses
    return dataclasses.replace(lab_settings, runs_root=tmp_path_factory.mktemp("runs"))


@pytest.fixture
def no_leftovers(lab_settings):
    """After the test: no QEMU of ours running, no run directory, no socket dir left."""
    before = set(os.listdir(lab_settings.runs_dir)) if lab_settings.runs_dir.exists() else set()
    yield
    assert qemu_processes_under(lab_settings.runs_dir) == []
    after = set(os.listdir(lab_settings.runs_dir)) if lab_settings.runs_dir.exists() else set()
    assert after - before == set(), f"run directories left behind: {after - before}"
