"""Ctrl-C and SIGTERM while the patch holds (not only while booting), of ``livepatch-lab run``
and of ``pytest`` with and without xdist: no QEMU, no run directory (overlay) left, and the
verdicts of what finished are kept (the CLI's JSON and report; pytest's JUnit and --lab-json).
(The libvirt backend's: test_libvirt.py. Interrupts while booting: test_boot.py.)

One guest each (~70-85 s on a busy 2-core host); all but one of each kind are marked ``long``
(not in .ci/run).

Each run: a quick item that finishes first (the good patch built for debian-7, refused on
debian-6.1 without booting), then scenarios/good.yaml on debian-6.1, interrupted once patched.
"""
import json
import os
import signal
import subprocess
import sys
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from .conftest import Output, interruptible, qemu_processes_under, wait_for_console

pytestmark = [pytest.mark.vm, pytest.mark.network]
REPO = Path(__file__).resolve().parents[2]
PATCHED = "livepatch: 'lab_good': patching complete"
QUICK = f"""\
name: {{name}}
kernels: [debian-6.1]
patch: {{{{source: {REPO}/scenarios/patches/good, build_for: debian-7}}}}
expect: {{{{verdict: fail, checks: [compat]}}}}
"""


@pytest.fixture
def quick_scenario(tmp_path, lab_settings):
    """A scenario that finishes in seconds without booting, named anew each time: never run
    before, so the plugin (unknown items first, then the longest) runs it before the guest's.
    Its line in the cache's durations.json is taken out again afterwards."""
    from livepatch_lab.core import atomic
    from livepatch_lab.plugin.durations import DURATIONS_FILE, load_durations
    name = f"finishes-first-{uuid.uuid4().hex[:8]}"
    path = tmp_path / f"{name}.yaml"
    path.write_text(QUICK.format(name=name))
    yield path, name
    durations = lab_settings.cache_dir / DURATIONS_FILE
    kept = {k: v for k, v in load_durations(durations).items() if not k.startswith(name)}
    if durations.exists():
        atomic.write(durations, json.dumps(kept, indent=1, sort_keys=True) + "\n")


def _env(settings) -> dict:
    env = dict(os.environ, LIVEPATCH_LAB_CACHE=str(settings.cache_dir),
               LIVEPATCH_LAB_RUNS=str(settings.runs_dir))
    env.pop("PYTEST_XDIST_WORKER", None)
    return env


@pytest.mark.parametrize("sig", [signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.long)],
                         ids=["ctrl-c", "sigterm"])
def test_an_interrupted_run_keeps_the_finished_verdicts_leaves_nothing_and_exits_130(
        sig, tmp_path, lab_settings, lab_kernel, no_leftovers):
    lab_kernel("debian-7")    # fetched (cached) outside the timed part
    quick = tmp_path / "finishes-first.yaml"
    quick.write_text(QUICK.format(name="finishes-first"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "livepatch_lab.cli", "run", str(quick), str(REPO / "scenarios/good.yaml"),
         "--kernel", "debian-6.1", "--json", str(tmp_path / "v.json"), "--artifacts", str(tmp_path / "art"),
         "--report", str(tmp_path / "report")],
        cwd=REPO, env=_env(lab_settings), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=interruptible)
    output = Output(proc)
    try:
        output.wait_for("] patched", 600)
        proc.send_signal(sig)
        rc = proc.wait(timeout=120)
    finally:
        proc.kill()
    assert rc == 130, output
    results = json.loads((tmp_path / "v.json").read_text())["results"]
    assert [(r["scenario"], r["verdict"]) for r in results] == [("finishes-first", "fail"), ("good", "error")]
    how = "Ctrl-C" if sig == signal.SIGINT else f"signal {int(sig)}"
    assert results[1]["reasons"][0]["message"].startswith(f"interrupted ({how}): the run was stopped")
    assert "patched" in [e["event"] for e in results[1]["timeline"]]
    assert (tmp_path / "report" / "index.html").is_file() and (tmp_path / "report" / "manifest.json").is_file()
    assert "interrupted; the guest was shut down and its overlay removed" in str(output)


def _pytest(tmp_path: Path, settings, quick: Path, *args: str) -> tuple[subprocess.Popen, Output]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--rootdir", str(REPO), str(quick),
         str(REPO / "scenarios/good.yaml"), "--lab-kernel", "debian-6.1", "--lab-json",
         str(tmp_path / "lab.json"), "--junitxml", str(tmp_path / "junit.xml"),
         "--lab-artifacts", str(tmp_path / "art"), *args],
        cwd=REPO, env=_env(settings), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,    # a process group of its own, as a terminal's foreground job
        preexec_fn=interruptible)
    return proc, Output(proc)


@pytest.mark.parametrize("workers, how", [pytest.param("0", "ctrl-c", marks=pytest.mark.long), ("2", "ctrl-c"),
                                          pytest.param("2", "sigterm", marks=pytest.mark.long)],
                         ids=["pytest-ctrl-c", "xdist-ctrl-c", "xdist-sigterm-controller"])
def test_an_interrupted_pytest_keeps_the_finished_verdicts_and_leaves_nothing(
        workers, how, tmp_path, lab_settings, lab_kernel, quick_scenario, no_leftovers):
    """Ctrl-C reaches the whole process group (the controller and its workers); a CI runner's
    SIGTERM often only the controller, whose xdist then stops the workers itself."""
    lab_kernel("debian-7")
    quick, name = quick_scenario
    proc, output = _pytest(tmp_path, lab_settings, quick, "-n", workers)
    try:
        wait_for_console(lab_settings.runs_dir, PATCHED, 600, proc, output)
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert rc == pytest.ExitCode.INTERRUPTED, output
    lab = json.loads((tmp_path / "lab.json").read_text())
    assert [(r["scenario"], r["verdict"], r["as_expected"]) for r in lab["results"]] == [
        (name, "fail", True)]
    cases = ET.parse(tmp_path / "junit.xml").getroot().iter("testcase")
    assert f"{name}[debian-6.1]" in [c.get("name") for c in cases]
    # nothing left once pytest is gone: the controller reaped what a killed worker left
    assert qemu_processes_under(lab_settings.runs_dir) == []
