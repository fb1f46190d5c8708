"""The QEMU backend: the command line (a pure function) and the process lifecycle,
the latter against a fake ``qemu-system-x86_64`` (tests/unit/fakes/fake_qemu.py)."""
import os
import re
import shutil
import signal
import stat
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from livepatch_lab.core.errors import DeadlineExceeded, InfraError, PortInUse
from livepatch_lab.core.settings import Settings, Timeouts
from livepatch_lab.machine.backends.base import GUEST, HOST, Disk, Forward, MachineExit, MachineSpec, StillRunning
from livepatch_lab.machine.backends.qemu import QemuBackend, QemuConfig, QemuMachine, build_command, classify
from livepatch_lab.machine.backends.qemu.command import parse_version, tcg_thread

FAKE_QEMU = Path(__file__).parent / "fakes" / "fake_qemu.py"


def spec(**kw) -> MachineSpec:
    base = dict(name="lab-test", kernel=Path("/cache/kernels/6.1.0-18/vmlinux"),
                append="console=ttyS0,115200 panic=-1 lab.root=/dev/vda",
                console_log=Path("/cache/runs/r1/console.log"),
                initrd=Path("/cache/kernels/6.1.0-18/initramfs.cpio.gz"),
                disks=(Disk(Path("/cache/runs/r1/root.qcow2"), "qcow2"),
                       Disk(Path("/cache/kernels/6.1.0-18/modules.img"), "raw", readonly=True)),
                forwards=(Forward(40022, 22), Forward(40080, 8080)), cpus=2, memory_mib=1024)
    base.update(kw)
    return MachineSpec(**base)


def command(accel="tcg", **kw) -> list[str]:
    return build_command(QemuConfig(spec(**kw), accel, Path("/tmp/lab-x/qmp.sock")))


def values(cmd: list[str], flag: str) -> list[str]:
    """Every value given to ``flag`` on the command line."""
    return [cmd[i + 1] for i, arg in enumerate(cmd[:-1]) if arg == flag]


# -- the command line -----------------------------------------------------------------------

def test_kvm_uses_the_host_cpu():
    cmd = command("kvm")
    assert values(cmd, "-accel") == ["kvm"] and values(cmd, "-cpu") == ["host"]


def test_tcg_is_single_threaded_unless_the_config_says_multi_and_never_mentions_kvm():
    cmd = command("tcg")
    assert values(cmd, "-accel") == ["tcg,thread=single"] and values(cmd, "-cpu") == ["max"]
    assert not any("kvm" in arg for arg in cmd)
    multi = build_command(QemuConfig(spec(), "tcg", Path("/tmp/lab-x/qmp.sock"), tcg_thread="multi"))
    assert values(multi, "-accel") == ["tcg,thread=multi"]


@pytest.mark.parametrize("text, version", [
    ("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright (c) 2003-2022", (7, 2, 22)),
    ("QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)", (10, 0, 2)),
    ("QEMU emulator version 9.1.0", (9, 1, 0)),
    ("QEMU emulator version 8.2", (8, 2, 0)),
    ("qemu-system-x86_64: command not found", None), ("", None),
])
def test_the_version_is_read_from_qemus_own_words(text, version):
    assert parse_version(text) == version


@pytest.mark.parametrize("version, thread", [
    ((7, 2, 22), "single"),   # Debian 12's QEMU: the stale-int3 race
    ((8, 1, 0), "single"),    # the race fixed, not yet a block's second page
    ((9, 0, 1), "single"),
    ((9, 1, 0), "multi"), ((10, 0, 2), "multi"), ((11, 1, 3), "multi"),
    (None, "single"),         # a QEMU that does not say what it is counts as unsafe
])
def test_auto_threading_is_multi_only_on_a_qemu_safe_for_it(version, thread):
    assert tcg_thread("auto", version) == thread


@pytest.mark.parametrize("setting", ["single", "multi"])
def test_an_explicit_threading_setting_is_obeyed_whatever_the_version(setting):
    assert {tcg_thread(setting, v) for v in [(7, 2, 22), (10, 0, 2), None]} == {setting}


def test_the_backend_gives_a_tcg_machine_the_threading_its_qemu_binary_allows(tmp_path):
    def fake(name: str, says: str) -> str:
        path = tmp_path / name
        path.write_text(f"#!/bin/sh\necho '{says}'\n")
        path.chmod(0o755)
        return str(path)

    old = fake("qemu-old", "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)")
    new = fake("qemu-new", "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)")
    run = SimpleNamespace(path=tmp_path, sock_dir=tmp_path, record=lambda **_: None)

    def machine(binary: str, accel: str = "tcg", **kw) -> QemuMachine:
        settings = Settings(cache_dir=tmp_path, qemu_binary=binary, **kw)
        return QemuBackend(settings).machine(spec(), accel, TIMEOUTS, run)

    assert values(machine(old).command, "-accel") == ["tcg,thread=single"]
    assert values(machine(new).command, "-accel") == ["tcg,thread=multi"]
    assert machine(new).describe()["tcg_thread"] == "multi"
    assert values(machine(new, tcg_thread="single").command, "-accel") == ["tcg,thread=single"]
    assert values(machine(old, tcg_thread="multi").command, "-accel") == ["tcg,thread=multi"]
    assert "tcg_thread" not in machine(new, "kvm").describe()


def test_the_machine_is_bare_headless_and_does_not_reboot():
    cmd = command()
    assert cmd[0] == "qemu-system-x86_64"
    for flag in ("-nodefaults", "-no-user-config", "-no-reboot"):
        assert flag in cmd
    assert values(cmd, "-display") == ["none"] and values(cmd, "-M") == ["pc"]
    assert values(cmd, "-smp") == ["2"] and values(cmd, "-m") == ["1024"]
    assert values(cmd, "-name") == ["lab-test"]


def test_kernel_initrd_and_the_whole_append_line_are_single_arguments():
    cmd = command()
    assert values(cmd, "-kernel") == ["/cache/kernels/6.1.0-18/vmlinux"]
    assert values(cmd, "-initrd") == ["/cache/kernels/6.1.0-18/initramfs.cpio.gz"]
    assert values(cmd, "-append") == ["console=ttyS0,115200 panic=-1 lab.root=/dev/vda"]
    assert "-initrd" not in command(initrd=None)


def test_host_forwards_listen_on_loopback_only_and_the_guest_reaches_nothing():
    netdevs = values(command(), "-netdev")
    assert len(netdevs) == 1
    opts = netdevs[0].split(",")
    assert opts[:2] == ["user", "id=net0"] and "restrict=on" in opts
    fwds = [o for o in opts if o.startswith("hostfwd=")]
    assert fwds == ["hostfwd=tcp:127.0.0.1:40022-:22", "hostfwd=tcp:127.0.0.1:40080-:8080"]
    assert all(re.fullmatch(r"hostfwd=tcp:127\.0\.0\.1:\d+-:\d+", f) for f in fwds)
    assert values(command(), "-device").count("virtio-net-pci,netdev=net0") == 1


def test_no_network_at_all_when_the_spec_says_so():
    cmd = command(network=False)
    assert not {"-netdev", "-net", "-nic"} & set(cmd)
    assert not any("hostfwd" in a or "virtio-net" in a or "netdev" in a for a in cmd)
    assert "-nodefaults" in cmd   # so QEMU adds no default NIC either


def test_disks_are_virtio_with_the_readonly_one_marked_readonly():
    cmd = command()
    drives = values(cmd, "-drive")
    assert drives == [
        "file=/cache/runs/r1/root.qcow2,if=none,id=disk0,format=qcow2,cache=unsafe",
        "file=/cache/kernels/6.1.0-18/modules.img,if=none,id=disk1,format=raw,cache=unsafe,readonly=on",
    ]
    devices = values(cmd, "-device")
    assert "virtio-blk-pci,drive=disk0" in devices and "virtio-blk-pci,drive=disk1" in devices
    assert not any("-drive" == a for a in command(disks=()))


def test_the_console_goes_to_a_file_and_qmp_to_a_unix_socket_that_does_not_wait():
    cmd = command()
    # append: a restored guest's console log starts with its saved boot's, written by the lab
    assert values(cmd, "-chardev") == ["file,id=con0,path=/cache/runs/r1/console.log,append=on"]
    assert values(cmd, "-serial") == ["chardev:con0"]
    assert values(cmd, "-qmp") == ["unix:/tmp/lab-x/qmp.sock,server=on,wait=off"]


def test_a_saved_guest_is_read_from_its_file_instead_of_booting():
    assert "-incoming" not in command()
    cmd = command(incoming=Path("/cache/snapshots/debian-6.1-0123/it's state"))
    # QEMU 7.2 runs exec: through /bin/sh: the path is quoted for it
    assert values(cmd, "-incoming") == ["exec:cat '/cache/snapshots/debian-6.1-0123/it'\"'\"'s state'"]
    assert cmd[:cmd.index("-incoming")] == command()


def test_entropy_comes_from_the_host_unless_disabled():
    assert "virtio-rng-pci,rng=rng0" in values(command(), "-device")
    assert not any("rng" in a for a in command(rng=False))


def test_building_is_pure_and_uses_the_configured_binary_and_machine():
    cfg = QemuConfig(spec(), "tcg", Path("/tmp/lab-x/qmp.sock"), binary="/opt/q/qemu", machine="q35")
    first = build_command(cfg)
    assert first == build_command(cfg)
    assert first[0] == "/opt/q/qemu" and values(first, "-M") == ["q35"]


# -- the process lifecycle, against a fake QEMU ------------------------------------------------

KILL = 0.2
TIMEOUTS = Timeouts(qmp=2.0, kill=KILL)


@pytest.fixture
def sock_dir():
    d = Path(tempfile.mkdtemp(prefix="lab-q-"))   # AF_UNIX path limit: keep it short
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def machine(tmp_path, sock_dir):
    """machine(mode) -> a QemuMachine whose binary is the fake QEMU in that mode."""
    made = []

    def make(mode="normal", timeouts=TIMEOUTS, network=True, record=lambda **_items: None,
             incoming=None, root=b""):
        binary = tmp_path / f"qemu-{mode}"
        binary.write_text(f"#!/bin/sh\nFAKE_QEMU_MODE={mode} exec {sys.executable} {FAKE_QEMU} \"$@\"\n")
        binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
        (tmp_path / "root.qcow2").write_bytes(root)
        disks = (Disk(tmp_path / "root.qcow2", "qcow2"),)
        cfg = QemuConfig(spec(console_log=tmp_path / "console.log", network=network, disks=disks,
                              incoming=incoming), "tcg", sock_dir / "qmp.sock", binary=str(binary))
        m = QemuMachine(cfg, timeouts, tmp_path / "qemu.log", record=record)
        made.append(m)
        return m

    yield make
    for m in made:
        m.destroy()
        assert not m.is_running()


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_start_returns_with_qmp_up_and_the_console_being_followed(machine):
    m = machine()
    m.start()
    assert m.is_running() and m.pid
    assert m.qmp.execute("query-status", timeout=2) == {"status": "running", "running": True}
    assert m.console.wait_for(lambda c: c.contains("Linux version 6.1.0-18-amd64"), 2)
    assert m.exit_info() == StillRunning and m.exit_reason() == ""
    assert m.describe() == {"backend": "qemu", "accel": "tcg", "command": m.command, "pid": m.pid,
                            "tcg_thread": "single"}
    assert "fake QEMU up" in m.qemu_output()


def test_destroy_quits_through_qmp_promptly(machine):
    m = machine()
    m.start()
    pid = m.pid
    start = time.monotonic()
    m.destroy()
    assert time.monotonic() - start < KILL   # no signal needed
    assert m.proc.returncode == 0 and gone(pid)
    # QEMU's SHUTDOWN event (host-qmp-quit), sent after its reply to quit
    assert m.exit_info() == MachineExit(HOST, "stopped by the lab (QMP quit)")


def test_destroy_is_idempotent_and_never_raises(machine):
    m = machine()
    m.destroy()    # never started
    m.start()
    m.destroy()
    m.destroy()
    assert not m.is_running()


def test_a_qemu_that_ignores_quit_gets_sigterm_after_the_kill_deadline(machine):
    m = machine("ignore-quit")
    m.start()
    start = time.monotonic()
    m.destroy()
    took = time.monotonic() - start
    assert m.proc.returncode == -signal.SIGTERM
    assert KILL <= took < 2 * KILL + 0.5
    assert m.exit_info() == MachineExit(HOST, "stopped by the lab (SIGTERM)")


def test_a_qemu_that_ignores_sigterm_too_gets_sigkill(machine):
    m = machine("ignore-term")
    m.start()
    start = time.monotonic()
    m.destroy()
    took = time.monotonic() - start
    assert m.proc.returncode == -signal.SIGKILL
    assert 2 * KILL <= took < 3 * KILL + 0.5
    assert gone(m.pid)
    assert m.exit_info() == MachineExit(HOST, "stopped by the lab (SIGKILL)")


def test_save_writes_the_state_and_a_copy_of_the_root_disk_and_the_guest_runs_on(machine, tmp_path):
    m = machine(root=b"the root overlay")
    m.start()
    m.save(tmp_path / "state", tmp_path / "disk.qcow2")
    assert (tmp_path / "state").read_bytes() == b"fake QEMU saved state\n"
    assert (tmp_path / "disk.qcow2").read_bytes() == b"the root overlay"
    assert m.qmp.execute("query-status", timeout=2)["status"] == "running"


def test_a_machine_resuming_a_saved_state_starts_once_the_guest_runs_again(machine, tmp_path):
    (tmp_path / "state").write_bytes(b"fake QEMU saved state\n")
    m = machine(incoming=tmp_path / "state")
    m.start()
    assert m.qmp.execute("query-status", timeout=2)["status"] == "running"
    assert values(m.command, "-incoming") == [f"exec:cat {tmp_path / 'state'}"]


def test_a_state_qemu_refuses_is_an_infra_error_with_its_words_and_leaves_nothing_running(machine, tmp_path):
    (tmp_path / "state").write_bytes(b"saved by another QEMU\n")
    m = machine(incoming=tmp_path / "state")
    with pytest.raises(InfraError, match="could not resume the saved guest") as err:
        m.start()
    assert "load of migration failed" in str(err.value)
    assert not m.is_running()


def test_a_taken_host_port_is_port_in_use_and_leaves_nothing_running(machine):
    m = machine("port-in-use")
    with pytest.raises(PortInUse) as err:
        m.start()
    assert "Could not set up host forwarding rule 'tcp:127.0.0.1:40022-:22'" in str(err.value)
    assert isinstance(err.value, InfraError)
    assert not m.is_running() and m.proc.returncode == 1


def test_another_early_exit_is_an_infra_error_with_the_command_and_output(machine):
    m = machine("exit-at-start")
    with pytest.raises(InfraError) as err:
        m.start()
    assert not isinstance(err.value, PortInUse)
    text = str(err.value)
    assert "status 1" in text and "Could not open '/nonexistent.qcow2'" in text
    assert " ".join(m.command) in text


def test_a_qemu_that_never_opens_qmp_is_stopped_after_the_qmp_deadline(machine):
    m = machine("no-qmp", timeouts=Timeouts(qmp=0.3, kill=KILL))
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="QMP socket"):
        m.start()
    assert 0.3 <= time.monotonic() - start < 0.3 + 3 * KILL + 0.5
    assert not m.is_running()   # start() cleaned up after itself
    assert m.console.contains("Linux version")   # and the console was drained on the way out


def test_a_missing_binary_is_an_infra_error_naming_it(tmp_path, sock_dir):
    cfg = QemuConfig(spec(console_log=tmp_path / "c.log"), "tcg", sock_dir / "qmp.sock",
                     binary=str(tmp_path / "no-such-qemu"))
    m = QemuMachine(cfg, TIMEOUTS, tmp_path / "qemu.log")
    with pytest.raises(InfraError, match="no-such-qemu not found"):
        m.start()
    m.destroy()


def test_a_guest_poweroff_ends_the_machine_with_reason_poweroff(machine):
    m = machine("poweroff")
    m.start()
    assert m.wait_exit(3)
    assert m.proc.returncode == 0   # the exit status cannot tell a poweroff from a reset ...
    assert m.exit_reason() == "poweroff"   # ... the SHUTDOWN event QEMU sent before exiting can
    m.destroy()
    assert m.exit_info() == MachineExit(GUEST, "poweroff")   # the lab's destroy came after
    assert m.console.contains("reboot: Power down")


# -- how the machine ended: the guest's doing, or the host's ---------------------------------

@pytest.mark.parametrize("mode, returncode, ended", [
    ("reset", 0, MachineExit(GUEST, "reset")),     # panic=-1 -no-reboot: a panic ends QEMU, status 0
    ("pvpanic", 0, MachineExit(GUEST, "panic")),
    ("segfault", -signal.SIGSEGV, MachineExit(HOST, "QEMU crashed (SIGSEGV)")),
    ("abort", -signal.SIGABRT, MachineExit(HOST, "QEMU crashed (SIGABRT)")),
    ("error-exit", 1, MachineExit(HOST, "QEMU exited with status 1 without a shutdown event")),
])
def test_how_the_machine_ended_comes_from_qemus_event_else_its_exit_status(machine, mode, returncode,
                                                                          ended):
    m = machine(mode)
    m.start()
    assert m.wait_exit(3)
    assert m.proc.returncode == returncode
    assert m.exit_info() == ended and m.exit_reason() == ended.detail
    m.destroy()
    assert m.exit_info() == ended


@pytest.mark.parametrize("sig, ended", [
    (signal.SIGKILL, MachineExit(HOST, "QEMU killed by SIGKILL")),
    (signal.SIGTERM, MachineExit(HOST, "QEMU stopped by a signal (SIGTERM, SIGINT or SIGHUP)")),
])
def test_qemu_signalled_from_outside_the_lab_is_the_hosts_doing(machine, sig, ended):
    m = machine()
    m.start()
    os.kill(m.pid, sig)
    assert m.wait_exit(3)
    assert m.exit_info() == ended


def test_a_guest_event_outweighs_the_labs_stop_and_a_crash_outweighs_the_status():
    reset = {"event": "SHUTDOWN", "data": {"guest": True, "reason": "guest-reset"}}
    assert classify(0, [reset], stopped_by="QMP quit") == MachineExit(GUEST, "reset")
    assert classify(1, [{"event": "GUEST_PANICKED", "data": {}}]) == MachineExit(GUEST, "panic")
    assert classify(None, [reset]) == StillRunning
    unknown = {"event": "SHUTDOWN", "data": {"guest": True, "reason": "guest-something-new"}}
    assert classify(0, [unknown]).kind == GUEST


def test_qemu_runs_in_its_own_process_group(machine):
    m = machine()
    m.start()
    assert os.getpgid(m.pid) == m.pid != os.getpgid(0)


def test_the_qemu_pid_is_recorded_for_the_reaper_and_a_failing_record_leaves_no_qemu(machine):
    notes = []
    m = machine(record=lambda **items: notes.append(items))
    m.start()
    assert notes == [{"qemu_pid": m.pid}]

    def disk_full(**_items):
        raise OSError(28, "No space left on device")
    m = machine(record=disk_full)
    with pytest.raises(OSError):
        m.start()
    assert not m.is_running() and gone(m.pid)


def test_icount_gives_single_threaded_tcg_a_clock_of_executed_instructions(tmp_path):
    from livepatch_lab.machine.backends.qemu.command import QemuConfig, build_command
    from livepatch_lab.machine.backends.base import MachineSpec
    spec = MachineSpec(name="lab", kernel=tmp_path / "k", initrd=None, append="console=ttyS0",
                       console_log=tmp_path / "c.log", disks=(), cpus=2, memory_mib=512)
    cmd = build_command(QemuConfig(spec, "tcg", tmp_path / "q.sock", tcg_thread="multi", icount=3))
    assert cmd[cmd.index("-accel") + 1] == "tcg,thread=single"
    assert cmd[cmd.index("-icount") + 1] == "shift=3,sleep=off"
    assert "-icount" not in build_command(QemuConfig(spec, "tcg", tmp_path / "q.sock", tcg_thread="multi"))
    assert "-icount" not in build_command(QemuConfig(spec, "kvm", tmp_path / "q.sock", icount=3))
