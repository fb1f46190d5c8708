"""Guests share the host's cores: each holds a slot per host thread it runs on, for its life,
across processes; a guest that finds too few waits, and a deadline ends the wait."""
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from livepatch_lab.core.cpuslots import cpu_slots
from livepatch_lab.core.errors import DeadlineExceeded

HOLDER = """
import sys
from livepatch_lab.core.cpuslots import cpu_slots
with cpu_slots(__import__("pathlib").Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]),
               timeout=10, what="the other process's guest"):
    print("held", flush=True)
    sys.stdin.read()   # until the test closes it
"""


@pytest.fixture
def other_process(tmp_path):
    """Another process holds ``weight`` of ``capacity`` slots until the test releases it."""
    procs = []

    def start(capacity, weight):
        p = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path), str(capacity), str(weight)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             cwd=Path(__file__).resolve().parents[2])
        procs.append(p)
        assert p.stdout.readline() == "held\n"
        return p.stdin.close, p

    yield start
    for p in procs:
        if not p.stdin.closed:
            p.stdin.close()
        p.kill()
        p.wait(10)


def test_guests_that_fit_run_at_once(tmp_path, other_process):
    other_process(4, 2)
    with cpu_slots(tmp_path, 4, 2, timeout=0.5, what="guest") as waited:
        assert waited < 0.5


def test_a_guest_waits_while_another_holds_the_cores_it_needs_and_runs_once_they_are_free(tmp_path, other_process):
    release, p = other_process(2, 2)
    t0 = time.monotonic()
    threading.Timer(0.6, release).start()
    with cpu_slots(tmp_path, 2, 1, timeout=10, what="guest") as waited:
        assert waited >= 0.5 and time.monotonic() - t0 >= 0.5


def test_a_killed_holder_frees_its_slots(tmp_path, other_process):
    _release, p = other_process(2, 2)
    p.kill()
    p.wait(5)
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
