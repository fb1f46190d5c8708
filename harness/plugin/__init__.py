"""The pytest plugin: options (with ini twins), the ``vm`` marker, lab files as items.

The parts by job: ``files`` (which files are lab files), ``fixtures`` (the lab's fixtures),
``scenario_items`` and ``selftest_items`` (lab files as items), ``durations`` (longest first),
``summary`` (the end of a session with lab items), ``settings`` (what they share). Kept light:
heavy modules (paramiko, kernels, images) are imported where they are needed, so merely having
the plugin installed costs nothing.
"""
from __future__ import annotations

import pytest

from ..core.settings import ACCELS, BACKENDS
from . import activation
from .durations import durations_path, load_durations, longest_first
from .files import DEFAULT_PATTERNS, PATTERNS_INI, SELFTESTS, lab_file
# pytest finds a plugin's fixtures among its module's names
from .fixtures import FIXTURES, lab_boot, lab_image, lab_kernel, lab_kernel_names, lab_settings  # noqa: F401
from .scenario_items import ScenarioFile, ScenarioItem
from .settings import kernel_dirs, settings_for


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("livepatch-lab")
    group.addoption("--lab-cache-dir", help="cache for kernels, images and runs "
                    "(ini lab_cache_dir; env LIVEPATCH_LAB_CACHE)")
    group.addoption("--lab-accel", choices=ACCELS, help="auto (default), kvm or tcg (ini lab_accel)")
    group.addoption("--lab-kernel", action="append", default=[],
                    help="kernel(s) to run VM tests on, NAME or NAME@VERSION; repeatable "
                         "(ini lab_kernels; default: every defined kernel)")
    group.addoption("--lab-kernels-dir", action="append", default=[], metavar="DIR",
                    help="a directory of kernel definitions to add to the built-in ones (kernels/); "
                         "repeatable; a name defined twice is an error (ini lab_kernels_dir; env "
                         "LIVEPATCH_LAB_EXTRA_KERNELS)")
    group.addoption("--lab-artifacts", help="artifact folder for scenario runs "
                    "(default <rootdir>/lab-artifacts)")
    group.addoption("--lab-json", metavar="FILE", help="write the kernel x scenario verdicts "
                    "(versions, reasons, artifact paths) as JSON at the end of the run")
    group.addoption("--lab-report", metavar="DIR", help="write a sign-off report of the scenario runs at "
                    "the end: DIR/index.html (one self-contained page), their artifacts, and "
                    "DIR/manifest.json (check it with `livepatch-lab verify DIR`)")
    group.addoption("--lab-report-title", metavar="TEXT", help="the sign-off page's title: what is signed "
                    "off (e.g. the patch, its version, the ticket), as the CLI's title option")
    group.addoption("--lab-report-note", metavar="TEXT", help="a word to the page's reader, shown under its "
                    "title (e.g. who approves), as the CLI's note option")
    group.addoption("--lab-backend", choices=BACKENDS,
                    help="qemu (default) or libvirt (ini lab_backend; env LIVEPATCH_LAB_BACKEND)")
    group.addoption("--lab-libvirt-uri", action="append", default=[], metavar="URI",
                    help="libvirt connection (default qemu:///system); repeat to spread xdist workers "
                         "over several hosts: worker gwN uses URI number N modulo their count "
                         "(ini lab_libvirt_uri)")
    group.addoption("--lab-debug", metavar="LIST|none",
                    help="the kernel's memory debugging for every scenario item: slub,kfence,poison (a "
                         "comma-separated list), all, or none (default: each scenario's `debug:`)")
    group.addoption("--lab-no-snapshots", action="store_true",
                    help="boot every guest instead of resuming a copy of one saved after its first "
                         "boot (env LIVEPATCH_LAB_SNAPSHOTS=0)")
    parser.addini(PATTERNS_INI, "glob patterns of the YAML files collected as lab files (scenarios, "
                  "selftests files): with a / against the path from the rootdir (* crosses directories), "
                  "else against the file's name", type="args", default=list(DEFAULT_PATTERNS))
    parser.addini("lab_cache_dir", "cache for kernels, images and runs")
    parser.addini("lab_backend", "qemu or libvirt")
    parser.addini("lab_libvirt_uri", "libvirt URI(s), one per line", type="linelist")
    parser.addini("lab_accel", "auto, kvm or tcg")
    parser.addini("lab_kernels", "kernels to run VM tests on", type="args")
    parser.addini("lab_kernels_dir", "directories of kernel definitions to add to the built-in ones",
                  type="paths")


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--lab-debug", default=None) is not None:   # refused before anything is collected
        from ..lab.scenario.schema import debug_facilities
        try:
            debug_facilities(config.getoption("--lab-debug"))
        except ValueError as exc:
            raise pytest.UsageError(f"--lab-debug: {exc}") from None
    config.addinivalue_line("markers", "vm: boots real QEMU guests (slow)")
    config.addinivalue_line("markers", "network: downloads from Debian's archive on first run")
    config.addinivalue_line("markers", "kernel(name): the kernel line a scenario item runs on")
    if config.getoption("--lab-report") and not hasattr(config, "workerinput"):   # refused before any run
        from pathlib import Path

        from ..core.errors import ConfigError
        from ..lab.report.signoff import check_destination
        try:
            check_destination(Path(config.getoption("--lab-report")),
                              Path(config.getoption("--lab-artifacts") or config.rootpath / "lab-artifacts"))
        except ConfigError as exc:
            raise pytest.UsageError(f"--lab-report: {exc}") from None
    dirs, named_by = kernel_dirs(config)
    missing = [str(d) for d in dirs if not d.is_dir()]
    if missing:
        raise pytest.UsageError(f"{named_by}: not a directory: {', '.join(missing)}")
    activation.register(config)   # inert until the session has lab items (plugin/activation.py)


def pytest_unconfigure(config: pytest.Config) -> None:
    """An interrupted xdist run: the controller gives its workers 10 s to end, then kills them,
    and a worker killed in its teardown leaves its run directory (its QEMU dies with it; a
    libvirt domain with its connection). The controller, last to go, reaps what they left."""
    if (hasattr(config, "workerinput") or not config.pluginmanager.has_plugin("dsession")
            or not activation.is_active(config)):
        return
    import logging

    from ..machine.runs import reap_stale
    try:
        reap_stale(settings_for(config).runs_dir)
    except Exception as exc:  # noqa: BLE001 - never fail a session's end; the next boot reaps too
        logging.getLogger(__name__).warning("could not reap the workers' run directories: %s", exc)


# lab files as test items ------------------------------------------------------
def pytest_collect_file(file_path, parent):
    """Lab files (plugin/files.py) as scenario or selftests files; nothing else."""
    kind = lab_file(file_path, parent.session)
    if kind is None:
        return None
    activation.activate(parent.config)
    if kind == SELFTESTS:
        from .selftest_items import SelftestsFile
        return SelftestsFile.from_parent(parent, path=file_path)
    return ScenarioFile.from_parent(parent, path=file_path)


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list) -> None:
    """A test that uses a lab fixture makes a lab session, here and (by its reports' keyword) on
    xdist's controller; scenario items run longest first."""
    with_fixtures = [it for it in items if FIXTURES.intersection(getattr(it, "fixturenames", ()))]
    for item in with_fixtures:
        item.keywords[activation.FIXTURE_KEYWORD] = True
    if with_fixtures:
        activation.activate(config)
    if any(isinstance(it, ScenarioItem) for it in items):
        longest_first(items, load_durations(durations_path(config)))
