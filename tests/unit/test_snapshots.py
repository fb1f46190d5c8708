"""The snapshot store: what its key covers (a change to any input is a new key), whole-or-nothing
snapshots under a lock another process never waits on; and the resync's exchange with a guest
(here a stand-in speaking its protocol: the real one steps a clock)."""
from __future__ import annotations

import json
import os
import stat
import sys
import textwrap
import types
from pathlib import Path

import pytest

from livepatch_lab.core.errors import GuestCommandError
from livepatch_lab.core.locks import try_file_lock
from livepatch_lab.core.settings import Settings
from livepatch_lab.machine import resync as resync_mod
from livepatch_lab.machine import snapshots
from livepatch_lab.machine.backends.base import Disk, MachineSpec
from livepatch_lab.machine.backends.qemu import QemuBackend
from livepatch_lab.machine.channel import GuestChannel

from .fakes.sshd import FakeSSHServer


# -- the key ------------------------------------------------------------------------------
@pytest.fixture
def inputs(tmp_path):
    """Files and objects a key is made of, and ``key(**changes)`` of them."""
    for name in ("vmlinuz", "vmlinux.elf", "initramfs", "modules.img", "base.img"):
        (tmp_path / name).write_bytes(name.encode())
    kernel = types.SimpleNamespace(name="debian-6.1", release="6.1.0-18-amd64", version="6.1.76-1",
                                   vmlinuz=tmp_path / "vmlinuz")
    image = types.SimpleNamespace(name="default", digest="d1", path=tmp_path / "base.img")
    files = {"kernel": tmp_path / "vmlinux.elf", "initrd": tmp_path / "initramfs",
             "disk1": tmp_path / "modules.img"}
    machine = {"append": "console=ttyS0", "cpus": 2, "memory_mib": 1024}

    def key(kernel=kernel, image=image, files=files, accel="tcg", machine=machine, backend=None):
        return snapshots.key_of(snapshots.key_parts(kernel, image, files, accel, machine,
                                                    backend or {"qemu": "QEMU emulator version 7.2.22"}))
    return types.SimpleNamespace(key=key, kernel=kernel, image=image, files=files, machine=machine,
                                 dir=tmp_path)


def rewrite(path: Path, data: bytes) -> None:
    """A new version of a file (its mtime moves on, as any rewrite's does)."""
    old = path.stat().st_mtime_ns
    path.write_bytes(data)
    os.utime(path, ns=(old + 10**9, old + 10**9))


def test_the_same_inputs_make_the_same_key(inputs):
    first = inputs.key()
    assert len(first) > 0 and inputs.key() == first


@pytest.mark.parametrize("change", ["name", "release", "version"])
def test_another_kernel_build_is_another_key(inputs, change):
    other = types.SimpleNamespace(**{**vars(inputs.kernel), change: "other"})
    assert inputs.key(kernel=other) != inputs.key()


@pytest.mark.parametrize("name", ["vmlinuz", "vmlinux.elf", "initramfs", "modules.img", "base.img"])
def test_a_changed_boot_file_or_base_image_is_another_key(inputs, name):
    before = inputs.key()
    rewrite(inputs.dir / name, b"rebuilt")
    assert inputs.key() != before


def test_another_image_accelerator_machine_or_emulator_is_another_key(inputs):
    base = inputs.key()
    others = [inputs.key(image=types.SimpleNamespace(**{**vars(inputs.image), "digest": "d2"})),
              inputs.key(accel="kvm"),
              inputs.key(machine={**inputs.machine, "append": "console=ttyS0 module.sig_enforce=1"}),
              inputs.key(machine={**inputs.machine, "memory_mib": 2048}),
              inputs.key(machine={**inputs.machine, "cpus": 1}),
              inputs.key(backend={"qemu": "QEMU emulator version 8.2.0"})]
    assert len({base, *others}) == len(others) + 1


def test_the_qemu_backend_keys_its_binary_version_and_the_command_line_it_builds(tmp_path):
    qemu = tmp_path / "qemu-system-x86_64"
    qemu.write_text("#!/bin/sh\necho 'QEMU emulator version 7.2.22'\n")
    qemu.chmod(qemu.stat().st_mode | stat.S_IXUSR)
    backend = QemuBackend(Settings(cache_dir=tmp_path / "cache", qemu_binary=str(qemu)))
    spec = MachineSpec(name="lab", kernel=tmp_path / "vmlinux", append="console=ttyS0",
                       console_log=Path("console.log"), disks=(Disk(Path("root.qcow2"), "qcow2"),))
    ident = backend.snapshot_identity(spec, "tcg")
    assert ident["qemu"] == "QEMU emulator version 7.2.22"
    assert "tcg,thread=single" in ident["command"] and "-incoming" not in ident["command"]
    assert backend.snapshot_identity(spec, "kvm")["command"] != ident["command"]
    qemu.write_text("#!/bin/sh\necho 'QEMU emulator version 8.2.0'\n")
    os.utime(qemu, ns=(qemu.stat().st_mtime_ns + 10**9,) * 2)
    assert backend.snapshot_identity(spec, "tcg")["qemu"] == "QEMU emulator version 8.2.0"


# -- the store ----------------------------------------------------------------------------
KEY = "ab" * 32


@pytest.fixture
def store(tmp_path):
    return snapshots.Store(Settings(cache_dir=tmp_path / "cache"))


def fill(into: Path) -> dict:
    for name in (snapshots.STATE, snapshots.DISK, snapshots.CONSOLE):
        (into / name).write_bytes(name.encode())
    return {"state_bytes": 5}


def test_a_snapshot_appears_whole_with_its_meta_and_a_read_only_disk(store):
    assert store.find(KEY, "debian-6.1") is None
    made = store.create(KEY, "debian-6.1", {"kernel": {"name": "debian-6.1"}}, fill)
    assert made is not None and made.path.name == f"debian-6.1-{KEY[:16]}"
    assert store.find(KEY, "debian-6.1") == made
    meta = made.meta()
    assert (meta["key"], meta["kernel"], meta["state_bytes"]) == (KEY, {"name": "debian-6.1"}, 5)
    assert made.disk.stat().st_mode & 0o777 == 0o444
    assert made.path.stat().st_mode & 0o777 == 0o700   # the saved memory holds the guest's SSH host key
    assert [p.name for p in store.root.iterdir()] == [made.path.name]   # no work directory left


def test_a_write_that_fails_leaves_nothing_and_its_error_goes_to_the_caller(store):
    def broken(into: Path) -> dict:
        (into / snapshots.STATE).write_bytes(b"half a state")
        raise OSError(28, "No space left on device")
    with pytest.raises(OSError, match="No space"):
        store.create(KEY, "debian-6.1", {}, broken)
    assert store.find(KEY, "debian-6.1") is None and list(store.root.iterdir()) == []


def test_a_directory_without_its_meta_or_of_another_key_is_never_used_and_is_replaced(store):
    half = store.root / f"debian-6.1-{KEY[:16]}"
    half.mkdir(parents=True)
    fill(half)
    assert store.find(KEY, "debian-6.1") is None
    (half / snapshots.META).write_text(json.dumps({"key": "cd" * 32}))
    assert store.find(KEY, "debian-6.1") is None
    made = store.create(KEY, "debian-6.1", {}, fill)
    assert made.meta()["key"] == KEY


def test_while_another_process_makes_it_create_returns_at_once_without_writing(store, tmp_path):
    lock = tmp_path / "cache" / "locks" / f"snapshot-{KEY[:16]}.lock"
    with try_file_lock(lock) as held:   # another open file: flock conflicts as across processes
        assert held
        assert store.create(KEY, "debian-6.1", {}, lambda into: pytest.fail("wrote twice")) is None
    assert store.create(KEY, "debian-6.1", {}, fill) is not None


def test_finding_a_snapshot_marks_it_used_and_discarding_removes_it_whole(store):
    made = store.create(KEY, "debian-6.1", {}, fill)
    os.utime(made.path / snapshots.META, (1, 1))
    assert store.find(KEY, "debian-6.1") and (made.path / snapshots.META).stat().st_mtime > 1
    store.discard(made, "it failed to restore")
    assert store.find(KEY, "debian-6.1") is None and list(store.root.iterdir()) == []


# -- the resync's exchange ----------------------------------------------------------------
GUEST_SIDE = textwrap.dedent("""
    import sys, time
    seed = sys.stdin.readline().strip()
    open(sys.argv[1], "w").write(seed + "\\n")
    for line in sys.stdin:
        if line.startswith("step "):
            open(sys.argv[1], "a").write(line)
            print("%.6f" % time.time(), flush=True)
            break
        print("%.6f" % (time.time() + 100.0), flush=True)   # a guest 100 s ahead
""")


@pytest.fixture(scope="module")
def sshd():
    server = FakeSSHServer().start()
    yield server
    server.stop()


@pytest.fixture
def channel(sshd, tmp_path):
    ch = GuestChannel("127.0.0.1", sshd.port, user="root", client_key=sshd.write_client_key(tmp_path / "id"),
                      host_key=sshd.host_key_line, command_timeout=10)
    ch.connect(timeout=5)
    yield ch
    ch.close()


def test_resync_sends_fresh_random_bytes_then_steps_the_clock_by_the_measured_offset(
        channel, tmp_path, monkeypatch):
    script, seen = tmp_path / "guest.py", tmp_path / "seen"
    script.write_text(GUEST_SIDE)
    monkeypatch.setattr(resync_mod, "COMMAND", f"{sys.executable} {script} {seen}")
    result = resync_mod.resync(channel, timeout=10)
    seed, step = seen.read_text().splitlines()
    assert len(bytes.fromhex(seed)) == 32
    assert result.offset == pytest.approx(100.0, abs=result.uncertainty + 0.05)
    assert float(step.split()[1]) == pytest.approx(-result.offset, abs=1e-5)
    resync_mod.resync(channel, timeout=10)
    assert seen.read_text().splitlines()[0] != seed   # fresh bytes each time


def test_a_guest_that_refuses_says_why(channel, monkeypatch):
    monkeypatch.setattr(resync_mod, "COMMAND",
                        "read seed; echo 'RNDRESEEDCRNG: Operation not permitted' >&2; exit 1")
    with pytest.raises(GuestCommandError) as err:
        resync_mod.resync(channel, timeout=10)
    assert err.value.rc == 1 and "RNDRESEEDCRNG: Operation not permitted" in err.value.stderr

