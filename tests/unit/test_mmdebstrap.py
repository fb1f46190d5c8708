"""mmdebstrap trees: the mounts below a path; removal unmounts what a killed mmdebstrap left, never crosses one."""
import textwrap
from pathlib import Path

import pytest

from livepatch_lab.core.errors import InfraError
from livepatch_lab.core.settings import Settings
from livepatch_lab.supply import mmdebstrap


def test_remove_tree_removes_plain_trees(tmp_path):
    d = tmp_path / "build"
    (d / "a/b").mkdir(parents=True)
    (d / "a/b/f").write_text("x")
    mmdebstrap.remove_tree(d, Settings(cache_dir=tmp_path))
    assert not d.exists()
    mmdebstrap.remove_tree(d, Settings(cache_dir=tmp_path))  # gone already: fine


def test_remove_tree_refuses_to_cross_a_mount_it_cannot_unmount(tmp_path, monkeypatch):
    d = tmp_path / "build"
    (d / "proc").mkdir(parents=True)
    proc = str((d / "proc").resolve())
    monkeypatch.setattr(mmdebstrap, "read_mountinfo", lambda: f"90 22 0:50 / {proc} rw - proc proc rw\n")
    monkeypatch.setattr(mmdebstrap.hostcmd, "run", lambda *a, **k: "")
    with pytest.raises(InfraError, match="still mounted"):
        mmdebstrap.remove_tree(d, Settings(cache_dir=tmp_path))
    assert d.exists()


def test_mounts_under():
    info = textwrap.dedent("""\
        22 1 0:21 / / rw - ext4 /dev/vda rw
        90 22 0:50 / /cache/toolchains/sid-gcc-16/root/tmp rw - tmpfs lab-tmp rw
        91 22 0:51 / /cache/toolchains/sid-gcc-16/root/with\\040space rw - tmpfs x rw
        92 22 0:52 / /cache/toolchains/sid-gcc-16-other rw - tmpfs y rw
        """)
    assert mmdebstrap.mounts_under(Path("/cache/toolchains/sid-gcc-16/root"), info) == [
        "/cache/toolchains/sid-gcc-16/root/tmp", "/cache/toolchains/sid-gcc-16/root/with space"]


def test_the_command_names_suite_tree_and_mirror_last_with_docs_left_out():
    cmd = mmdebstrap.command("trixie", Path("/t/root"), "http://m/debian", packages=["gcc-14", "make"],
                             aptopts=['--aptopt=Acquire::http::Proxy "http://p:3128"'])
    assert cmd[:2] == ["mmdebstrap", "--mode=root"] and "--variant=minbase" in cmd
    assert "--include=gcc-14,make" in cmd
    assert '--aptopt=Acquire::http::Proxy "http://p:3128"' in cmd
    assert "--dpkgopt=path-exclude=/usr/share/doc/*" in cmd
    assert cmd[-3:] == ["trixie", "/t/root", "http://m/debian"]
    assert not any(a.startswith("--include") for a in mmdebstrap.command("sid", Path("/t"), "m"))


def test_deb_files_are_each_their_own_include_and_need_the_hook_that_shows_them_in_the_tree():
    cmd = mmdebstrap.command("bookworm", Path("/t"), "m", packages=["kmod"], debs=[Path("/c/a_1_amd64.deb")],
                             hook_dirs=["/usr/share/mmdebstrap/hooks/file-mirror-automount"])
    assert "--include=kmod" in cmd and "--include=/c/a_1_amd64.deb" in cmd
    assert "--hook-dir=/usr/share/mmdebstrap/hooks/file-mirror-automount" in cmd
