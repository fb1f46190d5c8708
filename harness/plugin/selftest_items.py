"""pytest items for the kernel's selftests: one per case per kernel line.

A YAML file with a top-level ``selftests:`` key (``lab/selftests/spec.py``) collects
``<name>[<kernel>-<case>]`` items, e.g. ``selftests[debian-6.1-test-callbacks-module_coming_notifier]``.
Knowing a line's cases needs its source package, so collection fetches the kernel and
its linux-source parts (cached after the first time; a line that cannot be fetched
becomes one item reporting why).

A line's items share one guest run: the first item of a line to run runs the whole
line, the others read its result. Under pytest-xdist the items carry
``xdist_group("selftests-<kernel>")`` so that ``--dist loadgroup`` sends a line to one
worker; with any other distribution a lock in the line's artifact folder and the run's
``results.json`` there make a worker that gets a case of a line another worker is
running wait for that run instead of booting its own.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Union

import pytest

from .settings import (chosen_kernels, defined_kernels, kernel_marker, load_or_collect_error, mark_for_kernel,
                       settings_for)

_LINES = pytest.StashKey[dict]()


class SelftestsFile(pytest.File):
    def collect(self):
        from ..core.errors import HarnessError
        from ..lab.selftests import spec as specs
        from ..lab.selftests import stage
        from ..supply.kernels import defs as kerneldefs, fetch as kernelfetch, source as kernelsource
        sp = load_or_collect_error(self, specs.load)
        chosen = chosen_kernels(self.config)
        # the file's kernels are a default (a CI cost choice): a line named on the command line wins
        names = list(chosen or sp.kernels or defined_kernels(self))
        settings = settings_for(self.config)
        for kernel in names:
            try:
                k = kernelfetch.fetch(kerneldefs.get_definition(kernel), settings)
                cases = stage.plan(kernelsource.fetch(k, settings), sp.scripts, sp.extra_scripts).cases
            except HarnessError as exc:
                yield _mark(LineErrorItem.from_parent(self, name=f"{sp.name}[{kernel}]", kernel=kernel,
                                                    error=exc))
                continue
            for case in cases:
                yield _mark(SelftestItem.from_parent(self, name=f"{sp.name}[{kernel}-{case.name}]", spec=sp,
                                                     kernel=kernel, case=case.name, planned=len(cases)))


def _mark(item: Union[LineErrorItem, SelftestItem]) -> pytest.Item:
    mark_for_kernel(item, item.kernel)
    item.add_marker(pytest.mark.xdist_group(f"selftests-{kernel_marker(item.kernel)}"))
    return item


class LineErrorItem(pytest.Item):
    def __init__(self, *, kernel: str, error, **kwargs):
        super().__init__(**kwargs)
        self.kernel, self.error = kernel, error

    def runtest(self) -> None:
        raise self.error

    def repr_failure(self, excinfo):
        return f"the line's selftests could not be listed: {excinfo.value}"


class SelftestCaseFailed(Exception):
    pass


class SelftestItem(pytest.Item):
    def __init__(self, *, spec, kernel: str, case: str, planned: int, **kwargs):
        super().__init__(**kwargs)
        self.spec, self.kernel, self.case, self.planned = spec, kernel, case, planned
        self.result = None

    def runtest(self) -> None:
        from ..lab.selftests import results
        line = line_result(self.config, self.spec, self.kernel, self.planned)
        res = line.case(self.case)
        self.user_properties.append(("lab_selftests", results.entry(self.spec.name, line, self.case)))
        if res is None:
            raise SelftestCaseFailed(f"the run reported no case {self.case}"
                                     + (f": {line.error}" if line.error else ""))
        self.result = res
        if res.outcome == results.SKIP:
            pytest.skip(res.reason)
        if res.outcome != results.PASS:
            raise SelftestCaseFailed(results.explain_case(res))

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, SelftestCaseFailed):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, 0, f"selftest {self.case} on {self.kernel}"


def line_result(config: pytest.Config, sp, kernel: str, planned: int):
    """The line's result: run once per test session, whichever item (or worker) asks first."""
    from ..core.locks import file_lock
    from ..lab.selftests import suite
    memo = config.stash.setdefault(_LINES, {})
    key = (str(sp.path), kernel)
    if key in memo:
        return memo[key]
    settings = settings_for(config)
    root = Path(config.getoption("--lab-artifacts") or config.rootpath / "lab-artifacts")
    out = root / sp.name / kernel.replace("@", "_")
    worker = getattr(config, "workerinput", None)
    if worker is None:      # one process: the memo is all the sharing there is
        line = suite.run_line(kernel, settings, out, scripts=sp.scripts, extra_scripts=sp.extra_scripts)
    else:
        # xdist workers share the line's artifact folder: there, under a lock, whoever comes
        # first runs the line and the others read its result (marked with the session's id)
        session = str(worker.get("testrunuid", ""))
        wait = settings.timeouts.lock + planned * settings.timeouts.selftest_case * settings.tcg_factor
        out.mkdir(parents=True, exist_ok=True)
        with file_lock(out / ".run.lock", timeout=wait,
                       what=f"the selftests of {kernel} (another worker runs them)"):
            line = _shared(out, session)
            if line is None:
                line = suite.run_line(kernel, settings, out, scripts=sp.scripts,
                                      extra_scripts=sp.extra_scripts)
                (out / "session").write_text(session)
    memo[key] = line
    return line


def _shared(out: Path, session: str):
    """This session's result of the line, if another worker already ran it."""
    from ..lab.selftests import results
    try:
        if (out / "session").read_text() != session:
            return None
        return results.from_dict(json.loads((out / "results.json").read_text()))
    except (OSError, ValueError, KeyError):
        return None


def is_selftests_file(text: str) -> bool:
    from ..lab.selftests.spec import KEY
    return any(line.startswith(f"{KEY}:") for line in text.splitlines())

