"""The pytest plugin: options (with ini twins), the ``vm`` marker, lab fixtures.

Kept light: heavy modules (paramiko, kernels, images) are imported inside the
fixtures that need them, so merely having the plugin installed costs nothing.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager, Iterator, Optional

import pytest

from ..core.settings import ACCELS, BACKENDS
from .settings import chosen_kernels, load_or_collect_error, mark_for_kernel, register_marker, settings_for


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("livepatch-lab")
    group.addoption("--lab-cache-dir", help="cache for kernels, images and runs "
                    "(ini lab_cache_dir; env LIVEPATCH_LAB_CACHE)")
    group.addoption("--lab-accel", choices=ACCELS, help="auto (default), kvm or tcg (ini lab_accel)")
    group.addoption("--lab-kernel", action="append", default=[],
                    help="kernel(s) to run VM tests on, NAME or NAME@VERSION; repeatable "
                         "(ini lab_kernels; default: every defined kernel)")
    group.addoption("--lab-artifacts", help="artifact folder for scenario runs "
                    "(default <rootdir>/lab-artifacts)")
    group.addoption("--lab-json", metavar="FILE", help="write the kernel x scenario verdicts "
                    "(versions, reasons, artifact paths) as JSON at the end of the run")
    group.addoption("--lab-report", metavar="DIR", help="write a sign-off report of the scenario runs at "
                    "the end: DIR/index.html (one self-contained page), their artifacts, and "
                    "DIR/manifest.json (check it with `livepatch-lab verify DIR`)")
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
    parser.addini("lab_cache_dir", "cache for kernels, images and runs")
    parser.addini("lab_backend", "qemu or libvirt")
    parser.addini("lab_libvirt_uri", "libvirt URI(s), one per line", type="linelist")
    parser.addini("lab_accel", "auto, kvm or tcg")
    parser.addini("lab_kernels", "kernels to run VM tests on", type="args")


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
    import logging

    # SSH attempts to a booting guest fail by design; keep paramiko's tracebacks out of reports.
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)
    from ..machine.signals import raise_on_sigterm
    raise_on_sigterm()  # so a SIGTERM'd test run still tears its guests down
    if not hasattr(config, "workerinput"):   # xdist workers report to the controller
        if config.getoption("--lab-report"):
            from pathlib import Path

            from ..core.errors import ConfigError
            from ..lab.report.signoff import check_destination
            try:
                check_destination(Path(config.getoption("--lab-report")),
                                  Path(config.getoption("--lab-artifacts") or config.rootpath / "lab-artifacts"))
            except ConfigError as exc:
                raise pytest.UsageError(f"--lab-report: {exc}") from None
        config.pluginmanager.register(LabSummary(config), "livepatch-lab-summary")


def pytest_unconfigure(config: pytest.Config) -> None:
    """An interrupted xdist run: the controller gives its workers 10 s to end, then kills them,
    and a worker killed in its teardown leaves its run directory (its QEMU dies with it; a
    libvirt domain with its connection). The controller, last to go, reaps what they left."""
    if hasattr(config, "workerinput") or not config.pluginmanager.has_plugin("dsession"):
        return
    import logging

    from ..machine.runs import reap_stale
    try:
        reap_stale(settings_for(config).runs_dir)
    except Exception as exc:  # noqa: BLE001 - never fail a session's end; the next boot reaps too
        logging.getLogger(__name__).warning("could not reap the workers' run directories: %s", exc)


@pytest.fixture(scope="session")
def lab_settings(pytestconfig: pytest.Config):
    """The lab's ``Settings`` from options > ini > environment > defaults."""
    return settings_for(pytestconfig)


@pytest.fixture(scope="session")
def lab_kernel_names(pytestconfig: pytest.Config) -> list[str]:
    from ..supply.kernels import defs as kerneldefs
    names = pytestconfig.getoption("--lab-kernel") or pytestconfig.getini("lab_kernels")
    return list(names) or sorted(kerneldefs.load_definitions())


@pytest.fixture(scope="session")
def lab_image(lab_settings):
    """The default guest image, built once (file-locked across xdist workers)."""
    from ..supply import images, recipes
    return images.build(recipes.load_recipe(recipes.DEFAULT_RECIPE), lab_settings)


@pytest.fixture(scope="session")
def lab_kernel(lab_settings) -> Callable:
    """``lab_kernel("debian-6.1")`` -> a fetched ``Kernel`` (cached, file-locked)."""
    from ..supply.kernels import defs as kerneldefs, fetch as kernelfetch
    seen: dict = {}

    def get(spec: str):
        if spec not in seen:
            seen[spec] = kernelfetch.fetch(kerneldefs.get_definition(spec), lab_settings)
        return seen[spec]
    return get


@pytest.fixture
def lab_boot(lab_settings, lab_image, lab_kernel) -> Callable[..., ContextManager]:
    """``with lab_boot("debian-6.1") as guest:`` — a booted guest, always torn down."""
    from ..machine import session

    @contextlib.contextmanager
    def boot(spec: str, **kwargs) -> Iterator:
        with session.boot(lab_kernel(spec), lab_image, lab_settings, **kwargs) as guest:
            yield guest
    return boot


# scenario files as test items ------------------------------------------------
_SCENARIO_HINTS = ("patch:", "patches:")


def pytest_collect_file(file_path, parent):
    """Collect YAML files that are scenarios (a top-level ``patch:``, or ``patches:`` for a
    lifecycle) or selftests files (a top-level ``selftests:``, see plugin/selftest_items.py)."""
    if file_path.suffix not in (".yaml", ".yml"):
        return None
    try:
        head = file_path.read_text(errors="replace")
    except OSError:
        return None
    from .selftest_items import SelftestsFile, is_selftests_file
    if is_selftests_file(head):
        return SelftestsFile.from_parent(parent, path=file_path)
    if not any(line.startswith(_SCENARIO_HINTS) for line in head.splitlines()):
        return None
    return ScenarioFile.from_parent(parent, path=file_path)


class ScenarioFile(pytest.File):
    def collect(self):
        from ..lab.scenario import loader as scenario
        from ..supply.kernels import defs as kerneldefs
        sc = load_or_collect_error(self, scenario.load)
        debug = self.config.getoption("--lab-debug")
        if debug is not None:
            import dataclasses

            from ..lab.scenario.schema import debug_facilities
            from ..lab.scenario.specs import DebugSpec
            sc = dataclasses.replace(sc, debug=DebugSpec(debug_facilities(debug)))
        from ..lab import matrix
        for name in matrix.kernels_for(sc, chosen_kernels(self.config), sorted(kerneldefs.load_definitions())):
            item = mark_for_kernel(ScenarioItem.from_parent(self, name=item_name(sc.name, name), scenario=sc,
                                                            kernel=name), name)
            for tag in sc.tags:   # `-m lifecycle` picks scenarios by what they exercise
                register_marker(self.config, tag, f"{tag}: scenarios tagged {tag}")
                item.add_marker(getattr(pytest.mark, tag))
            yield item


class ScenarioFailure(Exception):
    pass


class ScenarioItem(pytest.Item):
    def __init__(self, *, scenario, kernel, **kwargs):
        super().__init__(**kwargs)
        self.scenario, self.kernel = scenario, kernel
        self.outcome = None
        self.duration_key = item_name(scenario.name, kernel)

    def runtest(self) -> None:
        from pathlib import Path

        from ..lab import matrix
        root = Path(self.config.getoption("--lab-artifacts") or
                    self.config.rootpath / "lab-artifacts")
        result = matrix.run_cell(matrix.Cell(self.scenario, self.kernel), settings_for(self.config), root)
        self.outcome = result.outcome
        v = self.outcome.verdict
        # JUnit <properties>, and what the controller's summary is built from (xdist ships them;
        # the document itself is read from the run's verdict.json on the controller)
        self.user_properties += [
            ("lab_scenario", self.scenario.name), ("lab_kernel", self.kernel),
            ("kernel_version", self.outcome.kernel_info.get("version", "?")),
            ("kernel_release", self.outcome.kernel_info.get("release", "?")),
            ("verdict", v.verdict), ("expected", result.expected),
            ("expected_checks", ",".join(result.expected_checks)), ("as_expected", result.as_expected),
            ("checks", ",".join(sorted({r.check for r in v.reasons}))), ("artifacts", self.outcome.artifacts),
            ("seconds", round(self.outcome.seconds, 1))]
        if not result.as_expected:
            raise ScenarioFailure(result)

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, ScenarioFailure) and self.outcome is not None:
            from ..lab.report.summary import explain
            want = excinfo.value.args[0]   # the matrix's Result
            expected = want.expected + (f" with failing checks {', '.join(want.expected_checks)}"
                                        if want.expected_checks else "")
            return f"expected {expected}, got:\n{explain(self.outcome)}"
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, 0, f"scenario {self.scenario.name} on {self.kernel}"


def item_name(scenario: str, kernel: str) -> str:
    """``good[debian-6.12]``: the item's name, its durations key and its summary label."""
    from ..lab.matrix import cell_name
    return cell_name(scenario, kernel)


# longest first -------------------------------------------------------------------
DURATIONS_FILE = "durations.json"   # in the cache dir: "scenario[kernel]" -> seconds, last run


def _durations_path(config: pytest.Config):
    try:
        return settings_for(config).cache_dir / DURATIONS_FILE
    except Exception:  # bad settings are reported where they are used, not here
        return None


def load_durations(path) -> dict[str, float]:
    import json
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, AttributeError):
        return {}
    return {k: float(v) for k, v in data.items() if isinstance(v, (int, float))} if isinstance(data, dict) else {}


def longest_first(items: list, durations: dict[str, float]) -> None:
    """Scenario items reordered in their own slots, longest last-known run first, unknown
    ones before all (LPT: a parallel run ends when its longest item does, so start it
    first; with xdist, --dist worksteal lets an idle worker take what waits behind it)."""
    slots = [i for i, it in enumerate(items) if isinstance(it, ScenarioItem)]
    ordered = sorted((items[i] for i in slots), key=lambda it: -durations.get(it.duration_key, float("inf")))
    for i, it in zip(slots, ordered):
        items[i] = it


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list) -> None:
    if any(isinstance(it, ScenarioItem) for it in items):
        longest_first(items, load_durations(_durations_path(config)))


def record_durations(path, rows: list[dict]) -> None:
    """Merge this run's scenario seconds into the durations file (atomically)."""
    import json

    from ..core import atomic
    if path is None or not rows:
        return
    data = load_durations(path)
    data.update({item_name(r["lab_scenario"], r["lab_kernel"]): r["seconds"] for r in rows})
    atomic.write(path, json.dumps(data, indent=1, sort_keys=True) + "\n")


# the kernel x scenario summary -------------------------------------------------
class LabSummary:
    """Collects scenario results from reports (under xdist, the controller gets every
    worker's reports with their user_properties) and prints/writes the matrix."""

    def __init__(self, config: pytest.Config):
        self.config = config
        self.rows: list[dict] = []
        self.report_line = ""
        self.selftests: list[dict] = []     # one per selftest case (plugin/selftest_items.py)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        props: dict[str, Any] = dict(report.user_properties)
        if report.when == "call" and "lab_scenario" in props:
            self.rows.append(props)
        if report.when == "call" and "lab_selftests" in props:
            self.selftests.append(props["lab_selftests"])   # selftests.results.entry

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if self.selftests:
            terminalreporter.write_sep("=", "livepatch-lab: the kernel's selftests (cases per outcome)")
            terminalreporter.write_line(selftests_table(self.selftests))
        if not self.rows:
            return
        terminalreporter.write_sep("=", "livepatch-lab: verdicts (kernel x scenario)")
        terminalreporter.write_line(summary_table(self.rows))
        odd = sum(1 for r in self.rows if not r["as_expected"])
        terminalreporter.write_line(f"{len(self.rows)} runs, {odd} not as expected"
                                    + (" (marked !)" if odd else ""))
        if self.report_line:   # written at session finish, which runs before this summary
            terminalreporter.write_line(self.report_line)

    def pytest_sessionfinish(self) -> None:
        try:
            record_durations(_durations_path(self.config), self.rows)
        except OSError as exc:  # a read-only cache costs the ordering, nothing else
            import logging
            logging.getLogger(__name__).warning("durations not recorded: %s", exc)
        path = self.config.getoption("--lab-json")
        if path:
            from pathlib import Path

            from ..lab import matrix
            matrix.write(Path(path), summary_document(self.rows, self.selftests))
        if self.config.getoption("--lab-report") and self.rows:
            self.report_line = write_report(self.config, self.rows)


def write_report(config: pytest.Config, rows: list[dict]) -> str:
    """The sign-off report of the runs in ``rows`` (built on the controller from the artifact
    folders the workers name); the line the summary prints about it."""
    from pathlib import Path

    from ..core.errors import HarnessError
    from ..lab.report import signoff
    dest = Path(config.getoption("--lab-report"))
    runs = {Path(r["artifacts"]): (r["expected"], bool(r["as_expected"])) for r in rows
            if r.get("artifacts") and (Path(r["artifacts"]) / "verdict.json").is_file()}
    try:
        digest = signoff.write(dest, list(runs), settings_for(config), expected=runs)
    except (HarnessError, OSError) as exc:
        return f"livepatch-lab: no sign-off report: {exc}"
    return f"sign-off report: {dest / 'index.html'} (manifest sha256 {digest})"


def selftests_table(rows: list[dict]) -> str:
    """Per selftests file and kernel line: its version and how many cases ended how."""
    from ..lab.report.summary import columns
    from ..lab.selftests.cases import OUTCOMES
    lines: dict[tuple[str, str], dict] = {}
    for r in rows:
        line = lines.setdefault((r["selftests"], r["kernel"]), {"version": r["kernel_version"]})
        line[r["outcome"]] = line.get(r["outcome"], 0) + 1
    return columns([("selftests", "kernel", *OUTCOMES)] + [
        (name, f"{kernel} ({c['version']})", *(str(c.get(o, 0)) for o in OUTCOMES))
        for (name, kernel), c in sorted(lines.items())])


def summary_table(rows: list[dict]) -> str:
    """Scenario rows x kernel columns; a cell not as the scenario expects is marked ``!``."""
    from ..lab.report.summary import table
    # what the table shows, the rows carry: no run's verdict.json need be read for it
    return table(sorted((_entry(r, read=False) for r in rows), key=lambda e: e["scenario"]))


def _entry(row: dict, read: bool = True) -> dict:
    """A row's result as the matrix document holds it: its run's verdict.json (on this host:
    xdist's workers are local) with the comparison; what the row itself says when not ``read``
    or when that file is gone (a full disk refuses to keep a verdict whose evidence is missing)."""
    import json
    from pathlib import Path

    from ..lab import matrix
    outcome = None
    if read and row.get("artifacts"):
        try:
            outcome = json.loads((Path(row["artifacts"]) / "verdict.json").read_text())
        except (OSError, ValueError):
            pass
    if outcome is None:
        outcome = {"scenario": row["lab_scenario"], "kernel": row["lab_kernel"], "verdict": row["verdict"],
                   "reasons": [{"check": c, "message": ""} for c in filter(None, row.get("checks", "").split(","))],
                   "measurements": {}, "windows": [],
                   "kernel_info": {"name": row["lab_kernel"], "version": row["kernel_version"],
                                   "release": row["kernel_release"]},
                   "artifacts": row.get("artifacts", "")}
    checks = tuple(filter(None, str(row.get("expected_checks", "")).split(",")))
    return matrix.entry(outcome, row["expected"], checks, bool(row["as_expected"]))


def summary_document(rows: list[dict], selftests: Optional[list[dict]] = None) -> dict:
    """The matrix document (lab/matrix.py, the one ``check`` and ``run`` write)."""
    from ..lab import matrix
    return matrix.document([_entry(r) for r in rows], selftests or None)
