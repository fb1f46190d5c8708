"""Inert until a session has lab items: the plugin installs no signal handler, changes no logging
and does nothing at the session's start or end in a session that has none (its options, ini
keys and markers are all there is of it). A process's session becomes a lab session when the
plugin collects a lab file there or one of its tests uses a lab fixture; under xdist the
controller, which collects nothing itself, when a worker collects a lab item or reports a test
that used a lab fixture. Then, in that process:

- SIGTERM raises ``KeyboardInterrupt`` (so a SIGTERM'd run still tears its guests down; the
  handler before it is put back when pytest ends);
- paramiko's log is kept out of the reports (SSH attempts to a booting guest fail by design);
- the kernel definitions of ``--lab-kernels-dir`` (ini ``lab_kernels_dir``) join the built-in
  ones: their directories are added to ``$LIVEPATCH_LAB_EXTRA_KERNELS`` (for the lab, and the
  CLI in a subprocess), which is put back at the end;
- but on an xdist worker: the summary, results document, report and durations at the end
  (plugin/summary.py), and the reaping of what killed workers left (plugin/__init__.py).
"""
from __future__ import annotations

import pytest

from .files import sniff
from .settings import kernel_dirs
from .summary import LabSummary

# on the items that use a lab fixture: their reports carry it to xdist's controller
FIXTURE_KEYWORD = "__livepatch_lab_fixtures__"
_SESSION = pytest.StashKey["LabSession"]()


class LabSession:
    def __init__(self, config: pytest.Config):
        self.config = config
        self.active = False

    def activate(self) -> None:
        if self.active:
            return
        self.active = True
        _quiet_paramiko(self.config)
        _sigterm_as_interrupt(self.config)
        _add_kernel_dirs(self.config)
        if not hasattr(self.config, "workerinput"):   # xdist workers report to the controller
            self.config.pluginmanager.register(LabSummary(self.config), "livepatch-lab-summary")

    @pytest.hookimpl(optionalhook=True)   # xdist's controller: a worker's collected items
    def pytest_xdist_node_collection_finished(self, node, ids: list[str]) -> None:
        if not self.active and _any_lab_file(self.config, ids):
            self.activate()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if not self.active and FIXTURE_KEYWORD in report.keywords:
            self.activate()


def register(config: pytest.Config) -> None:
    config.stash[_SESSION] = session = LabSession(config)
    config.pluginmanager.register(session, "livepatch-lab-session")


def activate(config: pytest.Config) -> None:
    config.stash[_SESSION].activate()


def is_active(config: pytest.Config) -> bool:
    session = config.stash.get(_SESSION, None)
    return session is not None and session.active


def _any_lab_file(config: pytest.Config, ids: list[str]) -> bool:
    """Whether one of the node ids is in a lab file (a node id's file is relative to the rootdir,
    ``../`` and all for one outside it)."""
    files = {nodeid.split("::")[0] for nodeid in ids}
    return any(sniff(config.rootpath / f) for f in files if f.endswith((".yaml", ".yml")))


def _quiet_paramiko(config: pytest.Config) -> None:
    import logging
    log = logging.getLogger("paramiko")
    level = log.level
    log.setLevel(logging.CRITICAL)
    config.add_cleanup(lambda: log.setLevel(level))


def _sigterm_as_interrupt(config: pytest.Config) -> None:
    import signal

    from ..machine.signals import raise_on_sigterm
    before = signal.getsignal(signal.SIGTERM)
    raise_on_sigterm()
    if signal.getsignal(signal.SIGTERM) is before:   # not installed: only the main thread can
        return

    def put_back() -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if before is None else before)
    config.add_cleanup(put_back)


def _add_kernel_dirs(config: pytest.Config) -> None:
    import os

    from ..supply.kernels.defs import ENV_EXTRA_KERNELS
    dirs, _ = kernel_dirs(config)
    if not dirs:
        return
    before = os.environ.get(ENV_EXTRA_KERNELS)
    os.environ[ENV_EXTRA_KERNELS] = os.pathsep.join([before, *map(str, dirs)] if before else map(str, dirs))

    def put_back() -> None:
        if before is None:
            os.environ.pop(ENV_EXTRA_KERNELS, None)
        else:
            os.environ[ENV_EXTRA_KERNELS] = before
    config.add_cleanup(put_back)
