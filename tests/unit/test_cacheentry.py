"""A cache entry is made once, under its lock, in a staging directory next to it, and put in
place by one rename: a reader sees all of an entry or none of it, and what a killed maker
left is cleared by the next one."""
import errno
import threading

import pytest

from livepatch_lab.core import cacheentry
from livepatch_lab.core.errors import DiskFull, InfraError


def entry(final):
    """A loader: the entry is complete when its manifest is there."""
    return lambda: (final / "manifest").read_text() if (final / "manifest").is_file() else None


def maker(final, calls, *, content="made", gate=None):
    def make():
        calls.append(threading.current_thread().name)
        if gate is not None:
            gate.wait(5)
        with cacheentry.staging(final.parent, ".work-", "making a test entry") as work:
            (work / "out").mkdir()
            (work / "out" / "manifest").write_text(content)
            cacheentry.publish(work / "out", final)
    return make


def test_a_complete_entry_is_returned_without_making_anything(tmp_path):
    final = tmp_path / "e"
    final.mkdir()
    (final / "manifest").write_text("cached")
    calls = []
    got = cacheentry.obtain(entry(final), maker(final, calls), lock=tmp_path / "e.lock", timeout=5, what="e")
    assert (got, calls) == ("cached", [])


def test_a_missing_entry_is_made_and_loaded_from_disk(tmp_path):
    final, calls = tmp_path / "e", []
    assert cacheentry.obtain(entry(final), maker(final, calls), lock=tmp_path / "e.lock",
                             timeout=5, what="e") == "made"
    assert len(calls) == 1 and not list(tmp_path.glob(".work-*"))


def test_two_makers_at_once_make_it_once_and_both_get_it(tmp_path):
    final, calls, results = tmp_path / "e", [], []
    gate = threading.Event()
    make = maker(final, calls, gate=gate)

    def one():
        results.append(cacheentry.obtain(entry(final), make, lock=tmp_path / "e.lock", timeout=10, what="e"))

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join(10)
    assert results == ["made", "made"] and len(calls) == 1


def test_what_make_returns_is_the_entry(tmp_path):
    final = tmp_path / "e"
    assert cacheentry.obtain(entry(final), lambda: "returned", lock=tmp_path / "l", timeout=5, what="e") == "returned"


def test_a_make_that_leaves_nothing_complete_is_the_labs_error(tmp_path):
    final = tmp_path / "e"
    with pytest.raises(InfraError, match="the widget: the cache entry is incomplete right after it was made"):
        cacheentry.obtain(entry(final), lambda: None, lock=tmp_path / "l", timeout=5, what="the widget")


def test_force_makes_it_again_even_when_cached(tmp_path):
    final, calls = tmp_path / "e", []
    final.mkdir()
    (final / "manifest").write_text("old")
    got = cacheentry.obtain(entry(final), maker(final, calls, content="new"), lock=tmp_path / "l",
                            timeout=5, what="e", force=True)
    assert (got, len(calls)) == ("new", 1)


def test_staging_clears_what_killed_makers_left_and_goes_away_even_on_error(tmp_path):
    dead = tmp_path / ".work-1234"
    (dead / "half").mkdir(parents=True)
    other = tmp_path / ".other-1"
    other.mkdir()
    with pytest.raises(RuntimeError):
        with cacheentry.staging(tmp_path, ".work-", "making it") as work:
            assert work.is_dir() and work.parent == tmp_path and not dead.exists()
            raise RuntimeError("the build broke")
    assert not work.exists() and other.is_dir()


def test_running_out_of_space_while_staging_names_the_place_and_the_work(tmp_path):
    with pytest.raises(DiskFull, match=r"no space left on device in .* while making the boot files"):
        with cacheentry.staging(tmp_path, ".work-", "making the boot files"):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert not list(tmp_path.glob(".work-*"))


def test_publish_replaces_an_outdated_entry_moving_it_to_the_trash_when_given(tmp_path):
    final = tmp_path / "e"
    final.mkdir()
    (final / "manifest").write_text("old")
    with cacheentry.staging(tmp_path, ".work-", "x") as work:
        (work / "out").mkdir()
        (work / "out" / "manifest").write_text("new")
        cacheentry.publish(work / "out", final, trash=work / "previous")
        assert (work / "previous" / "manifest").read_text() == "old"
    assert (final / "manifest").read_text() == "new" and not list(tmp_path.glob(".work-*"))


def test_discard_takes_a_directory_out_of_sight_before_deleting_it_and_unlinks_a_file(tmp_path):
    d = tmp_path / "entry"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "f").write_text("x")
    f = tmp_path / "file"
    f.write_text("y")
    for p in (d, f, tmp_path / "gone"):
        cacheentry.discard(p)
    assert sorted(p.name for p in tmp_path.iterdir()) == []   # no .trash- left either
