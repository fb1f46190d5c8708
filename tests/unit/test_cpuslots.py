"""Guests share the host's cores: each holds a slot per host thread it runs on, for its life,
across processes; a guest that finds too few waits, and a deadline ends the wait."""
import multiprocessing
import threading
import time

import pytest

from harness.core.cpuslots import cpu_slots
from harness.core.errors import DeadlineExceeded


def hold(root, capacity, weight, started, release):
    with cpu_slots(root, capacity, weight, timeout=10, what="the other process's guest"):
        started.set()
        release.wait(10)


@pytest.fixture
def other_process(tmp_path):
    """Run a guest's hold of ``weight`` slots in another process until the test releases it."""
    ctx = multiprocessing.get_context("fork")
    procs = []

    def start(capacity, weight):
        started, release = ctx.Event(), ctx.Event()
        p = ctx.Process(target=hold, args=(tmp_path, capacity, weight, started, release))
        p.start()
        assert started.wait(10)
        procs.append((p, release))
        return release, p

    yield start
    for p, release in procs:
        release.set()
        p.join(10)


def test_guests_that_fit_run_at_once(tmp_path, other_process):
    other_process(4, 2)
    with cpu_slots(tmp_path, 4, 2, timeout=0.5, what="guest") as waited:
        assert waited < 0.5


def test_a_guest_waits_while_another_holds_the_cores_it_needs_and_runs_once_they_are_free(tmp_path, other_process):
    release, p = other_process(2, 2)
    t0 = time.monotonic()
    threading.Timer(0.6, release.set).start()
    with cpu_slots(tmp_path, 2, 1, timeout=10, what="guest") as waited:
        assert waited >= 0.5 and time.monotonic() - t0 >= 0.5


def test_a_killed_holder_frees_its_slots(tmp_path, other_process):
    _release, p = other_process(2, 2)
    p.kill()
    p.join(5)
    with cpu_slots(tmp_path, 2, 2, timeout=2, what="guest") as waited:
        assert waited < 2


def test_the_wait_has_a_deadline_naming_what_waited(tmp_path, other_process):
    other_process(2, 2)
    with pytest.raises(DeadlineExceeded, match="2 host CPU slots for a debian-6.1 guest"):
        with cpu_slots(tmp_path, 2, 2, timeout=0.3, what="a debian-6.1 guest"):
            pass


def test_a_guest_wider_than_the_host_takes_every_slot_and_no_limit_means_none(tmp_path, other_process):
    with cpu_slots(tmp_path, 2, 4, timeout=0.3, what="wide"):
        with pytest.raises(DeadlineExceeded):
            with cpu_slots(tmp_path, 2, 1, timeout=0.3, what="narrow"):
                pass
    fresh = tmp_path / "fresh"
    with cpu_slots(fresh, 0, 4, timeout=0.1, what="unlimited"), cpu_slots(fresh, 2, 0, timeout=0.1, what="remote"):
        assert not fresh.exists()   # nothing taken, nothing made
