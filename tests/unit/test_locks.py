"""File locks shared by xdist workers: exclusive, bounded waits, released even on a crash."""
import logging
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import livepatch_lab
from livepatch_lab.core.errors import DeadlineExceeded
from livepatch_lab.core.locks import file_lock
from tests.waiting import wait_until

ROOT = Path(livepatch_lab.__file__).resolve().parent.parent


def test_the_lock_file_and_its_directories_are_created(tmp_path):
    path = tmp_path / "locks" / "deep" / "kernel-6.1.lock"
    with file_lock(path, timeout=1, what="fetch 6.1"):
        assert path.exists()


@pytest.fixture
def lock_log():
    """Records of the livepatch_lab.core.locks logger, whatever other tests did to logging (the CLI
    sets propagate=False on "harness")."""
    records = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append
    logger = logging.getLogger("livepatch_lab.core.locks")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def test_a_held_lock_makes_the_next_taker_wait_and_then_give_up_by_its_deadline(tmp_path, lock_log):
    path = tmp_path / "k.lock"
    with file_lock(path, timeout=1, what="fetch 6.1"):
        start = time.monotonic()
        with pytest.raises(DeadlineExceeded) as err:
            with file_lock(path, timeout=0.3, what="fetch 6.1"):
                pytest.fail("took a lock that was held")
        assert 0.3 <= time.monotonic() - start < 0.3 + 0.5
    assert "fetch 6.1" in str(err.value) and str(path) in str(err.value)
    assert err.value.seconds == 0.3
    waits = [r for r in lock_log if "waiting for another process" in r.getMessage()]
    assert len(waits) == 1 and "fetch 6.1" in waits[0].getMessage()   # said once, not per poll


def test_the_lock_is_free_again_after_the_block_even_after_an_error(tmp_path):
    path = tmp_path / "k.lock"
    with pytest.raises(RuntimeError):
        with file_lock(path, timeout=1, what="build"):
            raise RuntimeError("build failed")
    with file_lock(path, timeout=0.1, what="build"):
        pass


def test_a_waiter_gets_the_lock_once_the_holder_releases_it(tmp_path, lock_log):
    path = tmp_path / "k.lock"
    order = []
    held, release = threading.Event(), threading.Event()

    def holder():
        with file_lock(path, timeout=1, what="holder"):
            order.append("holder in")
            held.set()
            release.wait(10)   # until the waiter is seen waiting
            order.append("holder out")

    def waiter():
        with file_lock(path, timeout=10, what="waiter"):
            order.append("waiter in")

    threads = [threading.Thread(target=holder), threading.Thread(target=waiter)]
    threads[0].start()
    try:
        assert held.wait(5)
        threads[1].start()
        wait_until(lambda: any("waiting for another process: waiter" in r.getMessage() for r in lock_log),
                   "the waiter to say it waits")
    finally:
        release.set()
        for t in threads:
            t.join(10)
    assert order == ["holder in", "holder out", "waiter in"]


def test_locks_on_different_files_do_not_block_each_other(tmp_path):
    with file_lock(tmp_path / "a.lock", timeout=0.1, what="a"):
        with file_lock(tmp_path / "b.lock", timeout=0.1, what="b"):
            pass


def test_a_process_killed_while_holding_the_lock_does_not_leave_it_stuck(tmp_path):
    path = tmp_path / "k.lock"
    code = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(ROOT)!r})
        from pathlib import Path
        from livepatch_lab.core.locks import file_lock
        with file_lock(Path({str(path)!r}), timeout=5, what="child"):
            print("locked", flush=True)
            sys.stdin.read()   # held until killed (or the test's end closes this pipe)
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout.readline() == "locked\n"
        with pytest.raises(DeadlineExceeded):
            with file_lock(path, timeout=0.2, what="parent"):
                pass
        child.kill()
        child.wait()
        with file_lock(path, timeout=1, what="parent"):
            pass
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
