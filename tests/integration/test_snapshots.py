"""Boot once, restore many, on real guests: a restored copy answers with the host's time, draws
its own random numbers, leaves nothing behind, and is judged as a booted guest is."""
import dataclasses
import os
from pathlib import Path

import pytest

from livepatch_lab.lab import runner
from livepatch_lab.lab.scenario import loader as scenario
from livepatch_lab.lab.run.workload.clock import measure_clock
from livepatch_lab.machine import session

pytestmark = [pytest.mark.vm, pytest.mark.network]
REPO = Path(__file__).resolve().parents[2]
KERNEL = "debian-6.1"
# what a copy reads right after it is handed out: the same in every copy, were it not reseeded
PEEK = "cat /proc/sys/kernel/random/boot_id; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'"


@pytest.fixture
def on(lab_settings):
    """The session's settings with snapshots on (whatever the environment says)."""
    return dataclasses.replace(lab_settings, snapshots=True)


def store_listing(settings, key: str = "") -> list[str]:
    """The store's entries, or only those of one saved guest (its work and trash directories carry
    its name): other workers save other guests meanwhile."""
    root = settings.snapshots_dir
    return sorted(p.name for p in root.iterdir() if key in p.name) if root.exists() else []


def test_a_restored_copy_has_the_hosts_time_its_own_randomness_and_leaves_nothing_behind(
        on, lab_kernel, lab_image, no_leftovers):
    kernel = lab_kernel(KERNEL)
    with session.boot(kernel, lab_image, on):   # saves the guest, unless it is saved already
        pass
    before = store_listing(on)
    seen = []
    for _ in range(2):
        with session.boot(kernel, lab_image, on) as guest:
            assert guest.restored_from in before
            offset, uncertainty = measure_clock(guest)
            assert abs(offset) < 1.0, f"guest clock {offset:+.3f}s (±{uncertainty:.3f}s) off the host's"
            boot_id, random_bytes = guest.run(PEEK, check=True).stdout.split()
            seen.append((boot_id, random_bytes))
            assert guest.run("uname -r", check=True).stdout.strip() == kernel.release
            # its own disk: what it writes no other copy sees
            assert guest.run("test ! -e /root/copy && touch /root/copy").ok
            print(f"restored in {guest.timings['ssh_ready']:.2f}s (QEMU {guest.timings['restore']:.2f}s, "
                  f"resync {guest.timings['resync']:.2f}s, clock stepped {guest.timings['clock_step']:+.1f}s);"
                  f" clock offset after {offset * 1000:+.1f} ms; load {os.getloadavg()}")
    (boot_a, bytes_a), (boot_b, bytes_b) = seen
    assert bytes_a != bytes_b
    assert boot_a != boot_b   # made on its first read, after the reseed: nothing read it before saving
    # one snapshot of this guest, no work or trash directory of it left
    assert store_listing(on, guest.restored_from) == [guest.restored_from]


# two runs each, booted and restored: in the matrix workflow (`long`), not in .ci/run's 15 minutes,
# whose scenario items are restored guests judged against their expectations
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.long) for n in ("good", "hang", "panic")])
def test_a_scenario_judges_a_restored_guest_as_it_judges_a_booted_one(
        name, on, lab_kernel, lab_image, tmp_path, no_leftovers):
    sc = scenario.load(REPO / "scenarios" / f"{name}.yaml")
    booted = runner.run(sc, KERNEL, dataclasses.replace(on, snapshots=False), tmp_path / "booted")
    with session.boot(lab_kernel(KERNEL), lab_image, on):   # a saved guest from here on
        pass
    restored = runner.run(sc, KERNEL, on, tmp_path / "restored")

    def summary(outcome):
        ev = next(e for e in outcome.timeline if e["event"] == "booted")
        checks = sorted({r.check for r in outcome.verdict.reasons})
        return outcome.verdict.verdict, checks, ev.get("restored_from"), ev["seconds"]

    (v1, checks1, from1, s1), (v2, checks2, from2, s2) = summary(booted), summary(restored)
    print(f"{name}: booted {v1} {checks1} (guest in {s1:.1f}s, run {booted.seconds:.0f}s); restored "
          f"{v2} {checks2} (guest in {s2:.1f}s, run {restored.seconds:.0f}s); load {os.getloadavg()}")
    assert from1 is None and from2
    # The same verdict for the same cause. Consequences may differ with timing: whether the
    # service window saw a panicking guest's last requests fail is a matter of milliseconds.
    expected = sc.expectation(KERNEL)
    assert v1 == expected.verdict and set(expected.checks) <= set(checks1), booted.verdict.as_dict()
    assert v2 == v1 and set(expected.checks) <= set(checks2), restored.verdict.as_dict()
