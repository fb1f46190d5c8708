"""The lab installed as a vendor installs it: the wheel built from this checkout in a fresh venv,
run from a directory outside the checkout. It finds its kernel definitions, image recipes and
guest scripts in its own package data, its doctor says so, and a real check passes a good patch."""
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests import wheel as whl

pytestmark = [pytest.mark.vm, pytest.mark.network]
REPO = whl.ROOT


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """bin/ of a fresh venv holding the wheel, and a working directory outside the checkout."""
    base = tmp_path_factory.mktemp("vendor")
    bindir = whl.install(whl.build(base / "dist"), base / "venv")
    work = base / "work"
    work.mkdir()
    return bindir, work


def lab(installed, settings, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    bindir, work = installed
    env = dict(os.environ, LIVEPATCH_LAB_CACHE=str(settings.cache_dir), LIVEPATCH_LAB_RUNS=str(settings.runs_dir),
               PATH=f"{bindir}:{os.environ['PATH']}")
    env.pop("PYTHONPATH", None)
    return subprocess.run([str(bindir / "livepatch-lab"), *args], capture_output=True, text=True, cwd=work,
                          timeout=timeout, env=env)


def test_the_installed_lab_runs_from_its_own_package_and_data(installed, lab_settings):
    version = lab(installed, lab_settings, "--version")
    site = str(installed[0].parent / "lib")
    assert version.returncode == 0 and re.match(r"livepatch-lab \d+\.\d+", version.stdout), version
    assert site in version.stdout and str(REPO) not in version.stdout, version.stdout
    doctor = lab(installed, lab_settings, "doctor")
    data = next(line for line in doctor.stdout.splitlines() if " lab-data " in line)
    assert data.startswith("OK") and site in data and "4 kernel definitions" in data, doctor.stdout
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    kernels = lab(installed, lab_settings, "kernels", "--offline", "--json", "-")
    assert kernels.returncode == 0, kernels.stderr
    names = {k["name"] for k in json.loads(kernels.stdout)}
    assert {"debian-5.10", "debian-6.1", "debian-6.12", "debian-7"} <= names


def test_a_good_patch_passes_with_exit_0_and_a_complete_json(installed, tmp_path, lab_settings, no_leftovers):
    out = tmp_path / "verdict.json"
    proc = lab(installed, lab_settings, "check", str(REPO / "scenarios/patches/good"), "--kernel", "debian-6.1",
               "--duration", "2", "--json", str(out), "--artifacts", str(tmp_path / "art"), "--probe",
               "cat /proc/cmdline", "--expect-patched", "^livepatch-lab: patched$", timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(out.read_text())
    from tests.results_schema import errors
    assert errors(doc) == [] and doc["schema"] == 1
    (result,) = doc["results"]
    assert result["verdict"] == "pass" and result["reasons"] == []
    assert [w["name"] for w in result["windows"]] == ["baseline", "apply", "patched", "revert", "cooldown"]
    assert re.fullmatch(r"6\.1\.0-\d+-amd64", result["kernel_info"]["release"]), result["kernel_info"]
    events = [e["event"] for e in result["timeline"]]
    for step in ("booted", "baseline", "load-patch", "transition-complete", "disable",
                 "unpatch-complete", "unloaded", "verdict"):
        assert step in events
    assert result["measurements"]["requests"] > 0 and result["measurements"]["probe_samples"] > 0
    art = Path(result["artifacts"])
    for name in ("console.log", "dmesg.txt", "requests.jsonl", "probe.jsonl", "timeline.json",
                 "verdict.json"):
        assert (art / name).is_file(), name
