"""The lab installed as a vendor installs it: the wheel built from this checkout in a fresh venv,
run from a directory outside the checkout. It finds its kernel definitions, image recipes and
guest scripts in its own package data, its doctor says so, and a real check passes a good patch.
A copy of examples/vendor-repo, a patch repository as a vendor lays one out, collects its
scenarios with that venv's pytest and passes its patch built from source."""
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests import wheel as whl

# one wheel and one venv for the module: its tests stay on one xdist worker (--dist loadgroup)
pytestmark = [pytest.mark.vm, pytest.mark.network, pytest.mark.xdist_group("installed-wheel")]
REPO = whl.ROOT


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """bin/ of a fresh venv holding the wheel, and a working directory outside the checkout."""
    base = tmp_path_factory.mktemp("vendor")
    bindir = whl.install(whl.build(base / "dist"), base / "venv")
    work = base / "work"
    work.mkdir()
    return bindir, work


def vendor_env(installed, settings) -> dict:
    """The environment of a vendor's shell: the venv's bin/ first, this session's cache and run
    directories, nothing of this checkout's Python path nor of this pytest (an xdist worker's
    PYTEST_XDIST_WORKER would make the vendor's pytest think it is one)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_") and k != "PYTHONPATH"}
    return dict(env, LIVEPATCH_LAB_CACHE=str(settings.cache_dir), LIVEPATCH_LAB_RUNS=str(settings.runs_dir),
                PATH=f"{installed[0]}:{os.environ['PATH']}")


def lab(installed, settings, *args: str, timeout: float = 120, cwd=None) -> subprocess.CompletedProcess:
    """The installed ``livepatch-lab`` run as a vendor's shell runs it (in ``cwd``, default a
    directory outside the checkout)."""
    bindir, work = installed
    return subprocess.run([str(bindir / "livepatch-lab"), *args], capture_output=True, text=True, cwd=cwd or work,
                          timeout=timeout, env=vendor_env(installed, settings))


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


VENDOR_REPO = REPO / "examples" / "vendor-repo"
SOURCE_ITEM = "lab/cmdline-source.yaml::cmdline-source[debian-6.1]"
ITEMS = {SOURCE_ITEM, "lab/cmdline-source.yaml::cmdline-source[debian-6.12]",
         "lab/cmdline-ko.yaml::cmdline-ko[debian-6.1]"}


@pytest.mark.debian_6_1
def test_a_vendor_repository_collects_its_scenarios_and_passes_its_klp_source_patch(installed, tmp_path, lab_settings,
                                                                                   no_leftovers):
    repo = tmp_path / "vendor-repo"
    shutil.copytree(VENDOR_REPO, repo, ignore=shutil.ignore_patterns(
        "build", "lab-artifacts", ".pytest_cache", "__pycache__", "*.ko", "*.o", "*.mod*", ".*.cmd"))
    assert not (repo / "build").exists(), "the example's .ko is made by the vendor's build, never committed"
    python = str(installed[0] / "python")

    def in_repo(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([python, *args], cwd=repo, env=vendor_env(installed, lab_settings),
                              capture_output=True, text=True, timeout=timeout)

    def collected(proc: subprocess.CompletedProcess) -> set:
        return {line for line in proc.stdout.splitlines() if "::" in line and not line.startswith(" ")}

    # before the vendor's build: the .ko's scenario is a collection error naming the missing module
    before = in_repo("-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q")
    assert before.returncode == 2, before.stdout + before.stderr
    assert re.search(r"cmdline-ko\.yaml:\d+ \[patch\.ko\]: module \S+/build/vendor_cmdline\.ko does not exist",
                     before.stdout), before.stdout
    assert collected(before) == ITEMS - {"lab/cmdline-ko.yaml::cmdline-ko[debian-6.1]"}, before.stdout

    # the vendor's build (kpatch-build in a real repository): here `livepatch-lab build`, against
    # debian-6.1's own headers and compiler
    build = lab(installed, lab_settings, "build", "livepatch", "--kernel", "debian-6.1", "--out", "build", cwd=repo,
                timeout=900)
    assert build.returncode == 0, build.stdout + build.stderr
    assert (repo / "build" / "vendor_cmdline.ko").is_file() and "\tdebian-6.1\t" in build.stdout, build.stdout

    listing = in_repo("-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q")
    assert listing.returncode == 0, listing.stdout + listing.stderr
    assert collected(listing) == ITEMS, listing.stdout
    assert re.search(r"^3 tests collected", listing.stdout, re.M), listing.stdout
    assert "error" not in listing.stdout.lower() and "warning" not in listing.stdout.lower(), listing.stdout

    # one item for real: the patch from its source, on debian-6.1
    doc = tmp_path / "results.json"
    t0 = time.monotonic()
    run = in_repo("-m", "pytest", "-p", "no:cacheprovider", SOURCE_ITEM, "-v", "--lab-json", str(doc),
                  "--lab-artifacts", str(tmp_path / "art"), timeout=900)
    took = time.monotonic() - t0
    assert run.returncode == 0, run.stdout + run.stderr
    assert re.search(r"^=+ 1 passed", run.stdout, re.M), run.stdout
    (result,) = json.loads(doc.read_text())["results"]
    assert (result["scenario"], result["kernel"], result["verdict"]) == ("cmdline-source", "debian-6.1", "pass"), result
    assert result["reasons"] == [] and result["measurements"]["probe_samples"] > 0
    # the patch did what it says: the probe read its line while patched
    assert "vendor-fix: cmdline hidden" in (Path(result["artifacts"]) / "probe.jsonl").read_text()
    booted = next(e for e in result["timeline"] if e["event"] == "booted")
    print(f"vendor-repo item {SOURCE_ITEM}: passed in {took:.1f} s of pytest, the run {result['seconds']:.1f} s, "
          f"{booted.get('cpu_wait', 0):.1f} s of it waiting for host CPUs other guests held, "
          f"{'restored' if booted.get('restored_from') else 'booted'} in {booted['seconds']:.1f} s")
