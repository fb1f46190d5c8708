"""atomic.write: a shared file is replaced whole, never seen torn, never left half-written."""
import os
import stat
import threading

import pytest

from livepatch_lab.core import atomic


def test_text_and_bytes_replace_the_file_and_leave_no_temporary(tmp_path):
    path = tmp_path / "new" / "dir" / "memo.json"
    atomic.write(path, "first")
    atomic.write(path, b"second")
    assert path.read_bytes() == b"second"
    assert [p.name for p in path.parent.iterdir()] == ["memo.json"]


def test_a_failed_write_keeps_the_old_content_and_removes_its_temporary(tmp_path):
    path = tmp_path / "memo.json"
    atomic.write(path, "old")
    with pytest.raises(TypeError):
        atomic.write(path, 42)   # neither str nor bytes: fails mid-write
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["memo.json"]


def test_a_symlink_planted_at_the_temporary_name_is_replaced_not_written_through(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    path = tmp_path / "memo.json"
    (tmp_path / f".memo.json.{os.getpid()}.{threading.get_ident()}.tmp").symlink_to(victim)
    atomic.write(path, "new")
    assert victim.read_text() == "untouched"
    assert not path.is_symlink() and path.read_text() == "new"


def test_the_file_gets_the_mode_the_umask_gives(tmp_path):
    old = os.umask(0o027)
    try:
        atomic.write(tmp_path / "memo.json", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "memo.json").stat().st_mode) == 0o640
