"""Faults injected into a real guest while the patch holds, each classed by faults.py's rule and
torn down without a trace (issue 13; the rule is the verdict table in docs/checks.md).

- QEMU killed (SIGKILL) under ``livepatch-lab check``: ``error``, exit 2, evidence kept.
- the guest's sshd killed: the host did none of it, the guest lost its own SSH after the patch
  went in: ``fail``, and the reason says the machine ran and the host did not cut or pause it.
- the guest's network cut from the host (QMP ``set_link off``): ``error``, within the heartbeat.
- the disk under the guest's overlay full: QEMU pauses the guest; ``error`` naming the overlay.
- the artifact folder full: ``error`` naming it, exit 2.

One debian-6.1 guest each (TCG here: ~50-100 s apiece on a busy host; the two that only ask
the machine what the host did to it, ~10 s). Those that wait out a heartbeat or repeat what a
unit test already pins down are marked ``long`` (not in .ci/run).
"""
import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from livepatch_lab.lab import runner
from livepatch_lab.lab.scenario import loader as scenario
from livepatch_lab.lab.run import steps

from tests.waiting import wait_until

from .conftest import Output, qemu_pids_under, qemu_processes_under

pytestmark = [pytest.mark.vm, pytest.mark.network]
REPO = Path(__file__).resolve().parents[2]
PATCHED = "livepatch: 'lab_good': patching complete"


class Inject(steps.Step):
    """The fault, once the patch holds: a step of its own between the transition and the hold."""

    def __init__(self, fault):
        self.fault = fault

    def run(self, ctx) -> bool:
        ctx.events("fault-injected")
        self.fault(ctx)
        return False     # not a judged window


@pytest.fixture
def run_with_fault(monkeypatch, lab_settings, tmp_path):
    """``run_with_fault(fault, settings=None)`` -> the Outcome of scenarios/good.yaml on
    debian-6.1 with ``fault(ctx)`` injected as the patch starts its hold."""
    def run(fault, settings=None):
        real = runner.plan

        def plan(*args, **kwargs):
            out = real(*args, **kwargs)
            at = next(i for i, s in enumerate(out.steps) if isinstance(s, steps.Hold))
            return dataclasses.replace(out, steps=(*out.steps[:at], Inject(fault), *out.steps[at:]))
        monkeypatch.setattr(runner, "plan", plan)
        sc = scenario.load(REPO / "scenarios/good.yaml")
        return runner.run(sc, "debian-6.1", settings or lab_settings, tmp_path / "art")
    return run


def at(outcome, event: str) -> float:
    return next(e["t"] for e in outcome.timeline if e["event"] == event)


def heartbeat_deadline(outcome, settings) -> float:
    accel = next(e["accel"] for e in outcome.timeline if e["event"] == "booted")
    return settings.timeouts_for(accel).heartbeat


def test_the_guests_sshd_killed_while_patched_is_a_fail_that_says_the_host_did_not_do_it(
        run_with_fault, lab_settings, no_leftovers):
    """Nothing the host can see did it: QEMU runs, no I/O error paused it, the lab never pulled
    its cable. The patch is what changed (a patch that kills processes looks exactly like this),
    so it is the patch's fail, and the reason says what the lab could and could not tell."""
    outcome = run_with_fault(lambda ctx: ctx.guest.run(
        "nohup sh -c 'sleep 1; pkill -KILL -x sshd' >/dev/null 2>&1 &", check=True))
    v = outcome.verdict
    assert v.verdict == "fail", v.reasons
    message = v.reasons[0].message
    # the heartbeat's shell ended, or its next beat found the connection closed
    assert v.reasons[0].check == "service" and message.startswith("the guest stopped answering (")
    assert "); its machine runs, and the host did not pause it or cut its network" in message
    # a closed connection is noticed at once, not after the heartbeat's deadline
    assert at(outcome, "guest-lost") - at(outcome, "fault-injected") < heartbeat_deadline(outcome, lab_settings)


@pytest.mark.long   # waits out the heartbeat; the quick test below checks what the machine says
def test_the_guests_network_cut_from_the_host_while_patched_is_an_error_within_the_heartbeat(
        run_with_fault, lab_settings, no_leftovers):
    outcome = run_with_fault(lambda ctx: ctx.guest.machine.set_link(False))
    v = outcome.verdict
    assert v.verdict == "error", v.reasons
    assert "(the host cut the guest's network link (" in v.reasons[0].message
    assert "), not the patch)" in v.reasons[0].message
    took = at(outcome, "lab-error") - at(outcome, "fault-injected")
    assert took < heartbeat_deadline(outcome, lab_settings) + 15, f"noticed after {took:.0f}s"


@pytest.mark.long   # waits out the heartbeat; the quick test below checks what the machine says
def test_a_full_disk_under_the_guests_overlay_is_an_error_naming_the_overlay(
        run_with_fault, lab_settings, small_disk):
    """QEMU stops a guest whose disk write found no room (werror=enospc): the guest looks frozen,
    but QEMU says why, and the verdict names the file and the filesystem's room."""
    runs = small_disk("64m", "runs")
    settings = dataclasses.replace(lab_settings, runs_root=runs)
    outcome = run_with_fault(lambda ctx: ctx.guest.run(
        "nohup dd if=/dev/zero of=/root/fill bs=1M count=512 oflag=direct >/dev/null 2>&1 &",
        check=True), settings)
    v = outcome.verdict
    assert v.verdict == "error", v.reasons
    message = v.reasons[0].message
    assert f"the host paused the guest: write of its disk disk0 ({runs}/" in message
    assert "/root.qcow2) failed on the host: no space left on device (" in message
    assert "free of 64.0 MiB there), not the patch" in message
    assert os.listdir(runs) == [] and qemu_processes_under(runs) == []


# what the host does to a running machine, seen by the machine (quick: one boot, no scenario) ----------
def test_a_network_cable_pulled_from_the_host_is_the_hosts_doing_and_plugged_back_works(lab_boot, no_leftovers):
    with lab_boot("debian-6.1") as guest:
        assert guest.machine.host_trouble() == ""
        guest.machine.set_link(False)
        assert guest.machine.host_trouble() == "the host cut the guest's network link (QMP set_link off)"
        guest.machine.set_link(True)
        assert guest.machine.host_trouble() == "" and guest.run("true", check=True).ok


def test_a_guest_whose_overlay_fills_its_disk_is_paused_by_the_host_which_says_so(
        lab_settings, lab_kernel, lab_image, small_disk):
    from livepatch_lab.machine import session
    runs = small_disk("64m", "runs")
    settings = dataclasses.replace(lab_settings, runs_root=runs)
    with session.boot(lab_kernel("debian-6.1"), lab_image, settings) as guest:
        guest.run("nohup dd if=/dev/zero of=/root/fill bs=1M count=512 oflag=direct >/dev/null 2>&1 &",
                  check=True)
        try:   # QEMU's status is the event: paused on the write it could not do
            trouble = wait_until(guest.machine.host_trouble, "the host to pause the guest on its full disk", 120,
                                 interval=0.5)
        finally:
            guest.channel.mark_lost("paused by the host")   # as the heartbeat would: no poweroff of a paused guest
        assert trouble.startswith(f"the host paused the guest: write of its disk disk0 ({runs}/"), trouble
        assert "no space left on device" in trouble
    assert os.listdir(runs) == [] and qemu_processes_under(runs) == []


def _check(tmp_path: Path, settings, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, LIVEPATCH_LAB_CACHE=str(settings.cache_dir),
               LIVEPATCH_LAB_RUNS=str(settings.runs_dir))
    return subprocess.Popen(
        [sys.executable, "-m", "livepatch_lab.cli", "check", str(REPO / "scenarios/patches/good"),
         "--kernel", "debian-6.1", "--json", str(tmp_path / "verdict.json"), *extra],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_qemu_killed_mid_run_is_an_error_with_its_evidence_and_exit_2(tmp_path, lab_settings, no_leftovers):
    proc = _check(tmp_path, lab_settings, "--duration", "30", "--artifacts", str(tmp_path / "art"))
    output = Output(proc)
    try:
        output.wait_for("] patched", 300)    # the lab's event: the transition is complete
        (pid,) = qemu_pids_under(lab_settings.runs_dir)
        os.kill(pid, signal.SIGKILL)     # as the OOM killer, or an admin, would
        rc = proc.wait(timeout=120)
    finally:
        proc.kill()
    assert rc == 2, output
    (result,) = json.loads((tmp_path / "verdict.json").read_text())["results"]
    assert result["verdict"] == "error"
    assert "(the host ended the guest's machine (QEMU killed by SIGKILL), not the patch)" \
        in result["reasons"][0]["message"]
    events = [e["event"] for e in result["timeline"]]
    assert events.index("patched") < events.index("lab-error")     # the evidence so far is kept
    art = Path(result["artifacts"])
    assert PATCHED in (art / "console.log").read_text()
    assert (art / "requests.jsonl").stat().st_size > 0


@pytest.mark.long   # the rule: tests/unit (test_runner, test_disk_full)
def test_a_full_artifact_folder_is_an_error_naming_it_and_exit_2(tmp_path, lab_settings, small_disk,
                                                                 no_leftovers):
    art = small_disk("16k", "art")
    proc = _check(tmp_path, lab_settings, "--duration", "2", "--artifacts", str(art))
    output = Output(proc)
    try:
        rc = proc.wait(timeout=600)
    finally:
        proc.kill()
    log = str(output)
    assert rc == 2, log
    (result,) = json.loads((tmp_path / "verdict.json").read_text())["results"]
    message = result["reasons"][0]["message"]
    assert result["verdict"] == "error" and message.startswith(f"DiskFull: no space left on device in {art}")
    assert "free of 16.0 KiB" in message and f"no space left on device in {art}" in log
