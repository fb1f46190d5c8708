"""Booting every kernel line for real, and failing to boot the right way."""
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from livepatch_lab.core.errors import BootError
from livepatch_lab.machine import session
from livepatch_lab.machine.backends.base import GUEST, HOST, MachineExit
from livepatch_lab.supply.kernels.defs import load_definitions

from tests.waiting import wait_until

from .conftest import interruptible, kernel_params, qemu_processes_under, wait_for_console

pytestmark = [pytest.mark.vm, pytest.mark.network]

KERNELS = sorted(n for n, d in load_definitions().items() if d.kind == "debian")


@pytest.mark.parametrize("kernel_name", kernel_params(KERNELS))
def test_guest_runs_exactly_the_requested_kernel_and_its_modules_load(
        kernel_name, lab_boot, lab_kernel, lab_image, no_leftovers):
    kernel = lab_kernel(kernel_name)
    base = lab_image.path.stat()
    with lab_boot(kernel_name) as guest:
        assert guest.run("uname -r", check=True).stdout.strip() == kernel.release
        loaded = guest.run("modprobe dummy && grep -c '^dummy ' /proc/modules", check=True)
        assert loaded.stdout.strip() == "1"
        assert guest.run("exit 7").rc == 7
    after = lab_image.path.stat()
    assert (after.st_mtime_ns, after.st_size) == (base.st_mtime_ns, base.st_size), "base image modified"


def test_the_guest_opens_no_connection_out_and_the_labs_forwards_reach_it(lab_boot, no_leftovers):
    # restrict=on: without it QEMU's user networking connects the guest's 10.0.2.2 to the
    # host's loopback. This test talks to the guest through a forward (its SSH).
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.setblocking(False)
        port = server.getsockname()[1]
        with lab_boot("debian-6.1") as guest:
            out = guest.run(f"timeout 3 bash -c 'exec 3<>/dev/tcp/10.0.2.2/{port}' && echo connected")
            assert out.rc != 0 and "connected" not in out.stdout
        with pytest.raises(BlockingIOError):
            server.accept()   # nothing ever arrived


def test_a_panicking_boot_is_a_boot_error_with_the_console_tail(lab_boot, lab_settings, no_leftovers):
    start = time.monotonic()
    with pytest.raises(BootError) as err:
        with lab_boot("debian-6.1", append="lab.root=/dev/vdz"):
            pytest.fail("booted without a root disk")
    assert "livepatch-lab: FATAL:" in err.value.console_tail
    assert "Kernel panic" in err.value.console_tail or "FATAL" in str(err.value)
    # found on the console at once, not by waiting out the SSH deadline
    assert time.monotonic() - start < lab_settings.timeouts_for("tcg").boot


def test_a_guest_that_never_answers_ssh_fails_within_the_boot_deadline(
        lab_settings, lab_kernel, lab_image, no_leftovers):
    # a boot, not a restored copy (that might well answer within 1.5 s); it takes no host CPU
    # slot, so no wait for another worker's guest counts against the deadline measured here
    tight = dataclasses.replace(lab_settings, tcg_factor=1.0, snapshots=False, host_cpus=0,
                                timeouts=dataclasses.replace(lab_settings.timeouts, boot=1.5))
    start = time.monotonic()
    with pytest.raises(BootError, match="SSH did not answer within") as err:
        with session.boot(lab_kernel("debian-6.1"), lab_image, tight):
            pytest.fail("answered impossibly fast")
    assert time.monotonic() - start < 1.5 + 15  # deadline + teardown
    assert err.value.console_log


def test_how_a_machine_ended_says_whether_the_guest_or_the_host_ended_it(lab_boot, no_leftovers):
    with lab_boot("debian-6.1") as guest:
        if guest.machine.describe()["backend"] != "qemu":
            pytest.skip("kills the QEMU process by its PID")
        os.kill(guest.machine.pid, signal.SIGKILL)   # as the OOM killer, or an admin, would
        assert guest.machine.wait_exit(guest.timeouts.kill)
        assert guest.machine.exit_info() == MachineExit(HOST, "QEMU killed by SIGKILL")
    with lab_boot("debian-6.1") as guest:
        # the command returns first; the panic follows (panic=-1 -no-reboot: QEMU exits 0)
        guest.run("nohup sh -c 'sleep 0.5; echo c > /proc/sysrq-trigger' >/dev/null 2>&1 &",
                  check=True)
        assert guest.machine.wait_exit(guest.timeouts.poweroff)
        assert guest.machine.proc.returncode == 0
        assert guest.machine.exit_info() == MachineExit(GUEST, "reset")
        assert guest.machine.console.wait_for(lambda c: c.contains("Kernel panic - not syncing"), 5)


BOOT_SCRIPT = textwrap.dedent("""
    import sys
    from livepatch_lab.machine import session, signals
    from livepatch_lab.supply import images, recipes
    from livepatch_lab.supply.kernels import defs as kerneldefs, fetch as kernelfetch
    from livepatch_lab.core.settings import Settings
    s = Settings.from_env()
    signals.raise_on_sigterm()
    k = kernelfetch.fetch(kerneldefs.get_definition("debian-6.1"), s)
    img = images.build(recipes.load_recipe(recipes.DEFAULT_RECIPE), s)
    print("booting", flush=True)
    with session.boot(k, img, s) as g:
        print("ready", flush=True)
        sys.stdin.read()   # up until a signal, or the test closes this pipe (or dies)
""")


def _start_boot(tmp_path: Path, lab_settings, snapshots: bool = True) -> subprocess.Popen:
    env = dict(os.environ, LIVEPATCH_LAB_CACHE=str(lab_settings.cache_dir),
               LIVEPATCH_LAB_RUNS=str(lab_settings.runs_dir),
               LIVEPATCH_LAB_SNAPSHOTS="1" if snapshots else "0")
    if lab_settings.accel != "auto":
        env["LIVEPATCH_LAB_ACCEL"] = lab_settings.accel
    return subprocess.Popen([sys.executable, "-c", BOOT_SCRIPT], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=Path(__file__).resolve().parents[2], preexec_fn=interruptible)


def _wait_for_qemu(runs_dir: Path, deadline: float = 120) -> None:
    wait_until(lambda: qemu_processes_under(runs_dir), "QEMU to start", deadline, interval=0.1)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_boot_leaves_no_process_and_no_overlay(sig, tmp_path, lab_settings,
                                                              lab_kernel, lab_image, no_leftovers):
    lab_kernel("debian-6.1")  # fetched outside the timed part
    proc = _start_boot(tmp_path, lab_settings, snapshots=False)   # a restored copy is up in ~1 s
    try:
        _wait_for_qemu(lab_settings.runs_dir)
        wait_for_console(lab_settings.runs_dir, "Linux version", 120, proc)   # mid-boot: the kernel is starting
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode != 0, out
    assert "\nready\n" not in out, "the guest came up before the signal: the test proved nothing"


def test_a_killed_host_process_takes_its_qemu_along_and_the_next_run_reaps_its_dir(
        tmp_path, lab_settings, lab_kernel, lab_image, lab_boot, no_leftovers):
    proc = _start_boot(tmp_path, lab_settings)
    try:
        _wait_for_qemu(lab_settings.runs_dir)
        proc.kill()  # SIGKILL: no finally runs
        proc.wait(timeout=10)
    finally:
        proc.kill()
    wait_until(lambda: qemu_processes_under(lab_settings.runs_dir) == [],
               lambda: f"QEMU to end with its parent: {qemu_processes_under(lab_settings.runs_dir)}", 10,
               interval=0.1)
    with lab_boot("debian-6.1") as guest:  # the next run reaps the dead run's directory
        assert guest.run("true").ok


def test_a_local_kernel_boots_from_its_own_files(tmp_path, lab_settings, lab_kernel, lab_image,
                                                 no_leftovers):
    """A vendor's own build: vmlinuz + modules + build dir named in a kind: local file."""
    from livepatch_lab.supply.kernels import defs as kerneldefs, fetch as kernelfetch
    debian = lab_kernel("debian-6.1")
    (tmp_path / "my-6.1.yaml").write_text(
        f"name: my-6.1\nkind: local\ndescription: a vendor build\n"
        f"vmlinuz: {debian.vmlinuz}\nmodules: {debian.modules_dir}\nbuild: {debian.build_dir}\n")
    local = kernelfetch.fetch(kerneldefs.get_definition("my-6.1", tmp_path), lab_settings)
    assert (local.release, local.version) == (debian.release, "local")
    with session.boot(local, lab_image, lab_settings) as guest:
        assert guest.run("uname -r", check=True).stdout.strip() == debian.release
        assert guest.run("modprobe dummy", check=True).ok
