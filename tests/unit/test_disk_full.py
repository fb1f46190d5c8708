"""A full disk: one error naming the directory that ran out and its room, never retried, never
the patch's fault, and nothing half-written left where a later run would take it for whole.

(The same faults on real filesystems, small tmpfs mounts: tests/integration/test_faults_disk.py.)
"""
import errno
import hashlib
import os

import pytest

from livepatch_lab.core import diskspace, retry
from livepatch_lab.core.errors import DiskFull, HostCommandError, InfraError
from livepatch_lab.core.settings import Settings
from livepatch_lab.machine.backends import hosttrouble
from livepatch_lab.supply import apt

APT_FULL = "Get:1 http://deb.debian.org/debian bookworm/main amd64 linux-image ...\n" \
           "E: Write error - write (28: No space left on device)\n"


def no_space() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_running_out_of_space_is_one_error_naming_the_directory_and_its_room(tmp_path):
    with pytest.raises(DiskFull) as err:
        with diskspace.guard(tmp_path, "downloading linux-image 6.1.192-2"):
            raise no_space()     # a write() says no more than this: no file name
    message = str(err.value)
    assert message.startswith(f"no space left on device in {tmp_path} while downloading linux-image 6.1.192-2; ")
    assert " free of " in message and err.value.path == tmp_path
    assert isinstance(err.value, InfraError)   # the host's fault


def test_a_tool_that_says_the_disk_is_full_is_the_same_error_quoting_it(tmp_path):
    with pytest.raises(DiskFull, match="no space left on device in .* while updating") as err:
        with diskspace.guard(tmp_path, "updating the apt lists"):
            raise HostCommandError("apt-get update", ["apt-get", "update"], 100, APT_FULL)
    assert str(err.value).endswith("; the tool said: E: Write error - write (28: No space left on device)")


def test_a_tool_that_fails_silently_on_a_nearly_full_disk_ran_out_of_space_too(tmp_path, monkeypatch):
    """kbuild's fixdep does not say ENOSPC; the directory it writes into has no room left."""
    monkeypatch.setattr(diskspace, "room", lambda path: (100 << 10, 256 << 10))
    out = "  CC [M]  good.o\nfixdep: not all data was written to the output\nmake: *** Error 2\n"
    with pytest.raises(DiskFull) as err:
        with diskspace.guard(tmp_path, "building good"):
            raise HostCommandError("make", ["make"], 2, out)
    assert "100.0 KiB free of 256.0 KiB" in str(err.value)
    assert str(err.value).endswith("; the tool said: fixdep: not all data was written to the output")


@pytest.mark.parametrize("error", [OSError(errno.EACCES, "Permission denied"),
                                   HostCommandError("make", ["make"], 2, "x.c:1: error: nope\n")])
def test_other_troubles_pass_through_the_guard_unchanged(tmp_path, error):
    with pytest.raises(type(error)) as err:
        with diskspace.guard(tmp_path, "building"):
            raise error
    assert err.value is error


def test_a_full_disk_is_not_retried_like_a_flaky_download():
    calls = []
    with pytest.raises(HostCommandError):
        for attempt in retry.download_policy():
            with attempt:
                calls.append(1)
                raise HostCommandError("download", ["apt-get"], 100, APT_FULL)
    assert len(calls) == 1


def test_a_download_that_fills_the_disk_leaves_no_part_of_the_package(tmp_path, monkeypatch):
    dest = tmp_path / "downloads"

    def fill(argv, cwd, **kw):
        (cwd / "linux-image_6.1_amd64.deb").write_bytes(b"half a package")
        raise HostCommandError("download", argv, 100, APT_FULL)
    monkeypatch.setattr(apt.hostcmd, "run", fill)
    root = apt.root_for(Settings(cache_dir=tmp_path / "cache"), ["bookworm"])
    with pytest.raises(DiskFull, match=f"in {dest} while downloading linux-image 6.1"):
        apt.download(root, "linux-image", "6.1", dest, sha256=hashlib.sha256(b"whole").hexdigest())
    assert os.listdir(dest) == []


def test_a_guest_paused_on_a_full_disk_is_named_with_its_overlay(tmp_path):
    overlay = tmp_path / "run" / "root.qcow2"
    event = {"event": "BLOCK_IO_ERROR", "data": {"device": "disk0", "node-name": "#block123",
                                                 "operation": "write", "action": "stop",
                                                 "nospace": True, "reason": "No space left on device"}}
    words = hosttrouble.from_block_events([{"event": "RESUME"}, event], {"disk0": overlay})
    assert words.startswith(f"the host paused the guest: write of its disk disk0 ({overlay}) failed on the "
                            "host: no space left on device (")
    assert " free of " in words
