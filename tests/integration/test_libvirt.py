"""The libvirt backend against a real libvirtd: local, remote-style (qemu+ssh over a
throwaway sshd on 127.0.0.1, so the storage upload and the SSH tunnel paths run),
and one whole scenario. Nothing may be left behind: domain, overlay volume,
QEMU process or tunnel."""
import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.waiting import wait_until

from . import libvirt_host

pytestmark = [pytest.mark.vm, pytest.mark.network]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def libvirtd():
    if os.geteuid() != 0:
        pytest.skip("the libvirt tests start libvirtd on qemu:///system: run as root")
    libvirt_host.ensure_libvirtd()
    return libvirt_host.URI


@pytest.fixture(scope="module")
def ssh_uri(libvirtd, tmp_path_factory):
    proc, uri = libvirt_host.start_sshd(tmp_path_factory.mktemp("sshd"))
    yield uri
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def libvirt_clean(libvirtd, lab_settings):
    """Nothing of ours left in libvirt after the test. `leftovers()` sees the host's whole
    libvirt state, so libvirt tests on other xdist workers wait their turn (a file lock:
    xdist_group does not group under pytest 9, whose nodeids ignore xdist's suffix)."""
    from livepatch_lab.core.locks import file_lock
    with file_lock(lab_settings.cache_dir / "locks" / "libvirt-tests.lock", timeout=900,
                   what="another worker's libvirt test"):
        before = libvirt_host.leftovers()
        yield
        _wait_back_to(before)


def _wait_back_to(before) -> None:
    # a destroyed domain's QEMU may take a moment to be reaped
    wait_until(lambda: libvirt_host.leftovers() == before,
               lambda: f"libvirt back to {before} (now {libvirt_host.leftovers()})", 10, interval=0.2)


def _boot_cli(lab_settings, uri: str) -> tuple[subprocess.CompletedProcess, float]:
    env = dict(os.environ, LIVEPATCH_LAB_BACKEND="libvirt", LIVEPATCH_LAB_LIBVIRT_URI=uri,
               LIVEPATCH_LAB_CACHE=str(lab_settings.cache_dir),
               LIVEPATCH_LAB_RUNS=str(lab_settings.runs_dir))
    if lab_settings.accel != "auto":
        env["LIVEPATCH_LAB_ACCEL"] = lab_settings.accel
    start = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "livepatch_lab.cli", "-v", "boot", "debian-6.1", "--",
                          "uname", "-r"], env=env, capture_output=True, text=True, timeout=300,
                         cwd=REPO)
    return res, time.monotonic() - start


@pytest.mark.parametrize("where", ["local", "remote-style"])
def test_boot_through_libvirt_runs_the_kernel_and_leaves_nothing(
        where, request, lab_settings, lab_kernel, lab_image, libvirtd, libvirt_clean, no_leftovers):
    uri = libvirtd if where == "local" else request.getfixturevalue("ssh_uri")
    release = lab_kernel("debian-6.1").release
    res, seconds = _boot_cli(lab_settings, uri)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip() == release
    assert "(libvirt backend)" in res.stderr
    assert ("SSH tunnel" in res.stderr) == (where == "remote-style"), res.stderr[-3000:]
    print(f"libvirt {where} boot + uname -r + teardown: {seconds:.1f}s")


def test_a_scenario_passes_through_libvirt(lab_settings, lab_kernel, lab_image, libvirtd,
                                           libvirt_clean, no_leftovers, tmp_path):
    from livepatch_lab.lab import runner
    from livepatch_lab.lab.scenario import loader as scenario
    sc = scenario.load(REPO / "scenarios" / "good.yaml")
    settings = dataclasses.replace(lab_settings, backend="libvirt", libvirt_uri=libvirtd)
    outcome = runner.run(sc, "debian-6.1", settings, tmp_path / "out")
    assert outcome.verdict.verdict == "pass", outcome.as_dict()
    assert any(e["event"] == "booted" for e in outcome.timeline)
    print(f"good.yaml via libvirt: {outcome.verdict.verdict} in {outcome.seconds:.1f}s")


def test_how_a_domain_ended_says_whether_the_guest_or_the_host_ended_it(
        lab_settings, lab_kernel, lab_image, libvirtd, libvirt_clean, no_leftovers):
    from livepatch_lab.machine import session
    from livepatch_lab.machine.backends.base import GUEST, HOST, MachineExit
    settings = dataclasses.replace(lab_settings, backend="libvirt", libvirt_uri=libvirtd)
    kernel = lab_kernel("debian-6.1")
    with session.boot(kernel, lab_image, settings) as guest:
        name = guest.machine.describe()["domain"]
        pid = int(Path(f"/run/libvirt/qemu/{name}.pid").read_text())
        os.kill(pid, signal.SIGKILL)   # QEMU killed under libvirt's feet
        assert guest.machine.wait_exit(guest.timeouts.kill)
        assert guest.machine.exit_info() == MachineExit(
            HOST, "QEMU crashed or was killed (it ended without a shutdown)")
    with session.boot(kernel, lab_image, settings) as guest:
        guest.run("nohup sh -c 'sleep 0.5; echo c > /proc/sysrq-trigger' >/dev/null 2>&1 &",
                  check=True)
        assert guest.machine.wait_exit(guest.timeouts.poweroff)
        assert guest.machine.exit_info() == MachineExit(
            GUEST, "the guest shut down (poweroff, reset or panic)")


POOL_PROBE = """
import json, os, pathlib

def _record(lab_boot, name):
    with lab_boot("debian-6.1") as guest:
        assert guest.run("uname -r").ok
        where = guest.machine.describe()
        out = pathlib.Path(os.environ["POOL_OUT"]) / name
        out.write_text(json.dumps({"uri": where["uri"], "worker": os.environ["PYTEST_XDIST_WORKER"]}))

def test_one(lab_boot):
    _record(lab_boot, "one")

def test_two(lab_boot):
    _record(lab_boot, "two")
"""


def test_a_pool_of_uris_spreads_xdist_workers_over_the_hosts(lab_settings, lab_kernel, lab_image,
                                                             libvirtd, ssh_uri, libvirt_clean, tmp_path):
    """Two workers, two libvirt 'hosts' (local, and qemu+ssh through loopback): worker gwN
    takes URI N mod 2, so each host boots one guest. (Boots, not scenarios: a nested -n 2
    inside an -n 2 suite would put three loaded guests on two cores.)"""
    import json
    (tmp_path / "test_pool_probe.py").write_text(POOL_PROBE)
    (tmp_path / "out").mkdir()
    env = dict(os.environ, LIVEPATCH_LAB_CACHE=str(lab_settings.cache_dir),
               LIVEPATCH_LAB_RUNS=str(lab_settings.runs_dir), POOL_OUT=str(tmp_path / "out"))
    env.pop("PYTEST_XDIST_WORKER", None)
    res = subprocess.run(
        [sys.executable, "-m", "pytest", str(tmp_path / "test_pool_probe.py"), "-n", "2",
         "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
         "--lab-backend", "libvirt", "--lab-libvirt-uri", libvirtd, "--lab-libvirt-uri", ssh_uri],
        env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-4000:]
    seen = [json.loads((tmp_path / "out" / n).read_text()) for n in ("one", "two")]
    assert {s["worker"] for s in seen} == {"gw0", "gw1"}
    assert {s["uri"] for s in seen} == {libvirtd, ssh_uri}


@pytest.mark.long   # a whole scenario; .ci/run interrupts one through QEMU (test_interrupts.py)
def test_sigterm_of_a_run_through_libvirt_while_patched_leaves_no_domain_and_no_overlay_volume(
        lab_settings, lab_kernel, lab_image, libvirtd, libvirt_clean, no_leftovers, tmp_path):
    """The domain is destroyed and its overlay volume deleted by the lab's own teardown, and the
    run's verdict (an error: interrupted) is written before it exits 130."""
    import json

    from .conftest import Output
    env = dict(os.environ, LIVEPATCH_LAB_BACKEND="libvirt", LIVEPATCH_LAB_LIBVIRT_URI=libvirtd,
               LIVEPATCH_LAB_CACHE=str(lab_settings.cache_dir), LIVEPATCH_LAB_RUNS=str(lab_settings.runs_dir))
    proc = subprocess.Popen([sys.executable, "-m", "livepatch_lab.cli", "run", str(REPO / "scenarios/good.yaml"),
                             "--kernel", "debian-6.1", "--json", str(tmp_path / "v.json"),
                             "--artifacts", str(tmp_path / "art")],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = Output(proc)
    try:
        output.wait_for("] patched", 600)
        assert libvirt_host.leftovers()["overlays"], "no overlay volume while the guest runs"
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=120)
    finally:
        proc.kill()
    assert rc == 130, output
    (result,) = json.loads((tmp_path / "v.json").read_text())["results"]
    assert result["verdict"] == "error"
    assert result["reasons"][0]["message"].startswith("interrupted (signal 15)")
    # libvirt_clean: no lab-* domain, no lab-* overlay volume, no QEMU or tunnel left


def test_a_network_cable_pulled_through_libvirt_is_the_hosts_doing_and_plugged_back_works(
        lab_settings, lab_kernel, lab_image, libvirtd, libvirt_clean, no_leftovers):
    from livepatch_lab.machine import session
    settings = dataclasses.replace(lab_settings, backend="libvirt", libvirt_uri=libvirtd)
    with session.boot(lab_kernel("debian-6.1"), lab_image, settings) as guest:
        assert guest.machine.host_trouble() == ""
        guest.machine.set_link(False)
        assert guest.machine.host_trouble() == \
            "the host cut the guest's network link (set_link off through libvirt's monitor)"
        guest.machine.set_link(True)
        assert guest.machine.host_trouble() == "" and guest.run("true", check=True).ok
