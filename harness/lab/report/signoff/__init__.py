"""The sign-off report: one self-contained page per set of runs, and evidence that can be checked.

``write(DIR, folders, settings)`` reads each run's artifact folder, copies its
artifacts and the modules it loaded into ``DIR/runs/<scenario>/<kernel>/``,
renders ``DIR/index.html`` (styles and plots inline, no script, nothing loaded
from anywhere) and lists every file with its sha256 in ``DIR/manifest.json``,
with the runs' inputs. ``write_saved(DIR, paths, settings)`` does the same for
the runs found under saved paths (``livepatch-lab report``). ``verify(DIR)``
recomputes it.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

from ....core.errors import ConfigError
from ....core.settings import Settings
from . import collect, inputs, manifest, page, plot
from .collect import Run
from .manifest import Check, verify

RUNS = "runs"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _slugs(runs: Sequence[Run]) -> None:
    seen: set[str] = set()
    for r in runs:
        base = f"{_UNSAFE.sub('_', r.scenario)}/{_UNSAFE.sub('_', r.kernel)}"
        slug, n = base, 1
        while slug in seen:
            n += 1
            slug = f"{base}-{n}"
        seen.add(slug)
        r.slug = slug


def _copy_run(run: Run, stage: Path, settings: Settings) -> list[dict[str, Any]]:
    """The run's artifacts and modules into the report; the modules' facts."""
    dest = stage / RUNS / run.slug
    dest.mkdir(parents=True)
    for f in sorted(run.folder.iterdir()):
        if f.is_file() and not f.name.startswith("."):
            shutil.copyfile(f, dest / f.name)
    modules = []
    for role, path, given in run.modules():
        facts = inputs.module_facts(path, role, settings, given)
        if "sha256" in facts:
            (dest / "modules").mkdir(exist_ok=True)
            shutil.copyfile(path, dest / "modules" / facts["file"])
            facts["copy"] = f"{RUNS}/{run.slug}/modules/{facts['file']}"
            if facts.get("builder_log") and Path(facts["builder_log"]).is_file():
                log_name = facts["file"] + ".build.log"
                shutil.copyfile(facts["builder_log"], dest / "modules" / log_name)
                facts["builder_log_copy"] = f"{RUNS}/{run.slug}/modules/{log_name}"
        modules.append(facts)
    return modules


def _inputs(runs: Sequence[Run], modules: Mapping[str, list], env: dict[str, Any],
            page: Mapping[str, Optional[str]]) -> dict[str, Any]:
    def run_inputs(r: Run) -> dict[str, Any]:
        k = r.kernel_info
        booted = r.event("booted") or {}
        return {"run": r.slug, "scenario": r.scenario, "verdict": r.verdict.get("verdict"),
                "kernel": {"name": r.kernel, "version": k.get("version"), "release": k.get("release"),
                           "packages": k.get("packages") or []},
                "modules": [{key: m.get(key) for key in ("role", "name", "sha256", "vermagic", "signature",
                                                          "source", "source_files", "copy", "diff_sha256",
                                                          "kernel_source", "builder_log_copy")}
                            for m in modules[r.slug]],
                "accel": booted.get("accel"), "backend": booted.get("backend"), "uri": booted.get("uri"),
                "release": r.release}
    return {"runs": [run_inputs(r) for r in runs], "image": env["image"], "page": dict(page),
            "lab": {k: env[k] for k in ("lab_version", "git_commit", "host", "qemu", "generated")}}


def check_destination(report_dir: Path, artifacts: Optional[Path] = None) -> None:
    """Refuse a report directory that holds anything but an earlier report (which a new
    report replaces): a typo must not cost someone's files. Nor may it hold the runs'
    ``artifacts``: a report replaces itself whole."""
    if artifacts is not None:
        mine, theirs = report_dir.absolute(), Path(artifacts).absolute()
        if mine == theirs or mine in theirs.parents:
            raise ConfigError(f"the report directory {report_dir} would hold the artifact folder {artifacts}; "
                              "give the report its own directory")
    if not report_dir.exists():
        return
    if not report_dir.is_dir():
        raise ConfigError(f"report directory {report_dir} is a file")
    if any(report_dir.iterdir()) and not (report_dir / manifest.NAME).is_file():
        raise ConfigError(f"report directory {report_dir} is not empty and holds no earlier report; "
                          "give an empty or new directory")


def _replace(report_dir: Path, stage: Path) -> None:
    check_destination(report_dir)
    if report_dir.exists():
        shutil.rmtree(report_dir)
    os.rename(stage, report_dir)


def load_runs(folders: Iterable[Path], expected: Optional[Mapping[Path, tuple[str, bool]]] = None) -> list[Run]:
    """The runs in ``folders``; ``expected`` gives a folder its scenario's expected verdict and
    whether the run met it (the pytest plugin knows them)."""
    runs = []
    for folder in folders:
        run = collect.load(Path(folder))
        if expected and Path(folder) in expected:
            run.expected, run.as_expected = expected[Path(folder)]
        runs.append(run)
    if not runs:
        raise ConfigError("no run to report on")
    _slugs(runs)
    return runs


def write(report_dir: Path, folders: Iterable[Path], settings: Settings,
          expected: Optional[Mapping[Path, tuple[str, bool]]] = None, *, title: Optional[str] = None,
          note: Optional[str] = None) -> str:
    """Make the report of the runs in ``folders``; return the manifest's sha256. ``title`` heads
    the page (what is signed off), ``note`` is a word to its reader; both also in the manifest."""
    report_dir = Path(report_dir).absolute()
    runs = load_runs(folders, expected)
    report_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = report_dir.parent / f".{report_dir.name}.{os.getpid()}.part"
    shutil.rmtree(stage, ignore_errors=True)
    try:
        modules = {r.slug: _copy_run(r, stage, settings) for r in runs}
        env = inputs.environment(settings)
        svgs = {r.slug: plot.timeline_svg(r, salt=r.slug) for r in runs}
        cost_svgs = {r.slug: plot.overhead_svg(r, salt=r.slug) for r in runs}
        (stage / "index.html").write_text(page.render(runs, svgs, modules, env, cost_svgs, title=title, note=note))
        digest = manifest.write(stage, _inputs(runs, modules, env, {"title": title, "note": note}))
        _replace(report_dir, stage)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return digest


def find_runs(paths: Iterable[Path], report_dir: Optional[Path] = None) -> list[Path]:
    """The run artifact folders at or under ``paths`` (a folder holding ``verdict.json``), each
    once, in order; an earlier report's copies in ``report_dir`` are not runs to report on."""
    found: list[Path] = []
    skip = Path(report_dir).absolute() if report_dir is not None else None
    for given in map(Path, paths):
        if not given.is_dir():
            raise ConfigError(f"{given} is not a directory: give run artifact folders or directories "
                              "holding them")
        hits = [given] if (given / "verdict.json").is_file() else sorted(
            p.parent for p in given.rglob("verdict.json") if p.is_file())
        for folder in hits:
            here = folder.absolute()
            if here not in found and not (skip is not None and (here == skip or skip in here.parents)):
                found.append(here)
    if not found:
        raise ConfigError("no run's artifact folder (one holding a verdict.json) under "
                          + ", ".join(map(str, paths)) + (f" outside the report directory {report_dir}"
                                                           if report_dir is not None else ""))
    return found


def write_saved(report_dir: Path, paths: Iterable[Path], settings: Settings, *, title: Optional[str] = None,
                note: Optional[str] = None) -> str:
    """``livepatch-lab report ARTIFACTS... --out DIR``: the report of every run saved at or under
    ``paths`` (each run's expected verdict is the one its folder kept); return the manifest's sha256."""
    paths = list(paths)
    folders = find_runs(paths, report_dir)
    check_destination(Path(report_dir))
    return write(report_dir, folders, settings, title=title, note=note)


__all__ = ["Check", "Run", "check_destination", "find_runs", "load_runs", "verify", "write", "write_saved"]
