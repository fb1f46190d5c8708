"""atomic.write: a shared file is replaced whole, never seen torn, never left half-written."""
import pytest

from harness.core import atomic


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
