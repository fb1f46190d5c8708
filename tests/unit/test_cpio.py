"""The newc cpio writer: modes, links, devices, duplicates; GNU cpio reads it."""
import shutil
import stat
import subprocess

import pytest

from livepatch_lab.supply.cpio import Cpio, read_cpio


def test_cpio_round_trip_keeps_modes_links_and_devices():
    a = Cpio()
    a.dir("bin")
    a.file("bin/busybox", b"\x7fELF...", 0o755)
    a.symlink("bin/sh", "busybox")
    a.chardev("dev/console", 5, 1)
    a.file("odd", b"x" * 5)  # data padding
    data = a.finish()
    assert len(data) % 512 == 0
    got = read_cpio(data)
    assert list(got) == ["bin", "bin/busybox", "bin/sh", "dev/console", "odd"]
    assert stat.S_ISDIR(got["bin"][0])
    assert got["bin/busybox"][0] == stat.S_IFREG | 0o755 and got["bin/busybox"][1] == b"\x7fELF..."
    assert stat.S_ISLNK(got["bin/sh"][0]) and got["bin/sh"][1] == b"busybox"
    assert stat.S_ISCHR(got["dev/console"][0]) and got["dev/console"][2] == (5, 1)
    assert got["odd"][1] == b"xxxxx"


def test_cpio_rejects_duplicates():
    a = Cpio()
    a.dir("bin")
    with pytest.raises(ValueError):
        a.dir("bin/")


@pytest.mark.skipif(not shutil.which("cpio"), reason="needs cpio")
def test_cpio_is_readable_by_gnu_cpio(tmp_path):
    a = Cpio()
    a.dir("d")
    a.file("d/f", b"hello\n")
    a.symlink("l", "d/f")
    out = subprocess.run(["cpio", "-it", "--quiet"], input=a.finish(), capture_output=True, check=True)
    assert out.stdout.decode().split() == ["d", "d/f", "l"]
