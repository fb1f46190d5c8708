"""A stand-in for ``livepatch_lab.lab.runner.run`` in a pytester project: its conftest (which
xdist workers load too) defines ``fake_run(sc, kernel, settings, out_dir)``; this puts it
in the runner's place there, and puts the real one back whatever happens."""
from __future__ import annotations

import pytest

# Imported here, at collection, not first inside a test: a pytester run restores sys.modules
# when it ends, so a module first imported inside one is dropped, and numpy's C extension
# (livepatch_lab.lab.runner -> judge.overhead) refuses to load a second time in the process.
import livepatch_lab.lab.runner

SWAP = '''
_real_run = runner.run
runner.run = fake_run

def pytest_unconfigure(config):   # in-process runs share our livepatch_lab.lab.runner: give it back
    runner.run = _real_run
'''


def use_fake_runner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, fake_run_source: str) -> None:
    """``fake_run_source`` imports ``livepatch_lab.lab.runner as runner`` and defines ``fake_run``; a
    ``patch/`` directory is made for the scenarios' ``source: patch``, which the test writes at
    the project's top (the ini's ``lab_scenarios = *.yaml`` collects them there)."""
    monkeypatch.setattr(livepatch_lab.lab.runner, "run", livepatch_lab.lab.runner.run)   # restored whatever happens
    pytester.makeconftest(fake_run_source + SWAP)
    pytester.makeini("[pytest]\nlab_scenarios = *.yaml\n")
    pytester.mkdir("patch").joinpath("Makefile").write_text("obj-m += p.o\n")
