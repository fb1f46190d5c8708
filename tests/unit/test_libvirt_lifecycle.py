"""How a libvirt domain ended, from synthetic lifecycle events and states (as libvirtd
9.0 sends them for each way a domain ends); no libvirtd, no libvirt module needed."""
import threading
import types
from pathlib import Path

import pytest

from livepatch_lab.core.settings import Settings, Timeouts
from livepatch_lab.machine.backends.base import GUEST, HOST, MachineExit, MachineSpec, StillRunning
from livepatch_lab.machine.backends.libvirt import machine as machine_mod
from livepatch_lab.machine.backends.libvirt.errors import ERR_NO_DOMAIN
from livepatch_lab.machine.backends.libvirt.lifecycle import (EVENT_CRASHED, EVENT_SHUTDOWN, EVENT_STOPPED,
                                                        SHUTDOWN_GUEST, SHUTDOWN_HOST, STOPPED_CRASHED,
                                                        STOPPED_DESTROYED, STOPPED_FAILED, STOPPED_SHUTDOWN,
                                                        from_events, from_state)

STARTED, RESUMED = (2, 0), (4, 0)
GUEST_SHUTDOWN = [STARTED, RESUMED, (EVENT_SHUTDOWN, SHUTDOWN_GUEST), (EVENT_STOPPED, STOPPED_SHUTDOWN)]


@pytest.mark.parametrize("events, ended", [
    # poweroff, reboot (on_reboot=destroy) or a panic with panic=-1: QEMU's SHUTDOWN says guest
    (GUEST_SHUTDOWN, MachineExit(GUEST, "the guest shut down (poweroff, reset or panic)")),
    # a panic reported through pvpanic, on_crash=destroy
    ([STARTED, (EVENT_CRASHED, 0), (EVENT_STOPPED, STOPPED_CRASHED)], MachineExit(GUEST, "panic")),
    # QEMU SIGKILLed or crashed: libvirt saw the monitor close without a SHUTDOWN
    ([STARTED, (EVENT_STOPPED, STOPPED_FAILED)],
     MachineExit(HOST, "QEMU crashed or was killed (it ended without a shutdown)")),
    # QEMU SIGTERMed from outside libvirt: it shut down, at the host's request
    ([STARTED, (EVENT_SHUTDOWN, SHUTDOWN_HOST), (EVENT_STOPPED, STOPPED_SHUTDOWN)],
     MachineExit(HOST, "QEMU shut down from the host side (a signal or a QMP quit)")),
    # `virsh destroy` by someone else
    ([STARTED, (EVENT_STOPPED, STOPPED_DESTROYED)],
     MachineExit(HOST, "the domain was destroyed from outside the lab")),
])
def test_each_way_a_domain_ends_is_the_guests_or_the_hosts_doing(events, ended):
    assert from_events(events, destroyed_by_lab=False) == ended


def test_a_domain_still_running_has_not_ended():
    assert from_events([STARTED, RESUMED, (EVENT_SHUTDOWN, SHUTDOWN_GUEST)], False) is None
    assert from_events([], False) is None


def test_the_labs_own_destroy_is_named_and_a_crash_before_it_still_counts():
    assert from_events([STARTED, (EVENT_STOPPED, STOPPED_DESTROYED)], True) == MachineExit(
        HOST, "stopped by the lab")
    # a guest that panicked (domain kept) and was then destroyed by the lab: the guest's doing
    crashed = [STARTED, (EVENT_CRASHED, 0), (EVENT_STOPPED, STOPPED_DESTROYED)]
    assert from_events(crashed, True) == MachineExit(GUEST, "panic")
    # a guest that shut down while the lab was stopping it: still the guest's doing
    assert from_events(GUEST_SHUTDOWN, True).kind == GUEST


@pytest.mark.parametrize("state, reason, ended", [
    (1, 1, None),                                                     # running, booted
    (3, 1, None),                                                     # paused by a user
    (3, 10, MachineExit(GUEST, "panic")),                             # paused, guest crashed
    (6, 1, MachineExit(GUEST, "panic")),                              # crashed, panicked
    (5, 1, MachineExit(GUEST, "the guest shut down")),                # shutoff, shutdown
    (5, 3, MachineExit(HOST, "QEMU crashed or was killed (it ended without a shutdown)")),
    (5, 2, MachineExit(HOST, "the domain was destroyed")),
])
def test_a_domains_state_shows_whether_and_how_it_ended(state, reason, ended):
    assert from_state(state, reason) == ended


# -- the machine, fed events as libvirt's event loop thread would --------------------------------

class FakeLibvirtError(Exception):
    def __init__(self, code):
        super().__init__(f"error {code}")
        self.code = code

    def get_error_code(self):
        return self.code


class FakeDomain:
    """A transient domain: once it ended, libvirt no longer knows it."""

    def __init__(self, name):
        self._name, self.gone, self.destroyed = name, False, 0

    def name(self):
        return self._name

    def state(self):
        if self.gone:
            raise FakeLibvirtError(ERR_NO_DOMAIN)
        return [1, 1]

    def destroy(self):
        self.destroyed += 1
        self.gone = True


@pytest.fixture
def machine(monkeypatch, tmp_path):
    monkeypatch.setattr(machine_mod, "bindings",
                        lambda: types.SimpleNamespace(libvirtError=FakeLibvirtError))
    spec = MachineSpec(name="lab-x", kernel=Path("/k"), append="", console_log=tmp_path / "c.log")
    m = machine_mod.LibvirtMachine(spec, "tcg", Settings(cache_dir=tmp_path),
                                   Timeouts(libvirt_event=5.0), tmp_path, "qemu:///system")
    m.dom = FakeDomain("lab-x")
    return m


def deliver(m, events, other=None):
    """Lifecycle callbacks from another thread, as libvirt's event loop makes them."""
    def run():
        for event, detail in events:
            m._on_lifecycle(None, other or m.dom, event, detail, None)
    t = threading.Thread(target=run)
    t.start()
    return t


def test_a_running_domain_reports_no_end(machine):
    assert machine.is_running() and machine.exit_info() == StillRunning
    assert machine.exit_reason() == ""


def test_the_end_is_read_from_the_stopped_event_even_if_it_arrives_after_the_domain_vanished(machine):
    machine.dom.gone = True            # libvirt dropped the transient domain ...
    assert not machine.is_running()
    deliver(machine, GUEST_SHUTDOWN)   # ... and its events are still on their way
    assert machine.exit_info() == MachineExit(GUEST, "the guest shut down (poweroff, reset or panic)")


def test_other_domains_events_are_ignored(machine):
    other = FakeDomain("lab-y")
    deliver(machine, [(EVENT_STOPPED, STOPPED_FAILED)], other).join()
    assert machine.is_running() and machine.exit_info() == StillRunning


def test_qemu_dying_under_a_running_guest_is_the_hosts_doing(machine):
    machine.dom.gone = True
    deliver(machine, [(EVENT_STOPPED, STOPPED_FAILED)]).join()
    assert machine.wait_exit(1)
    assert machine.exit_info().kind == HOST


def test_the_labs_destroy_is_recorded_as_the_labs(machine):
    deliver_on_destroy = machine.dom.destroy

    def destroy():
        deliver_on_destroy()
        deliver(machine, [(EVENT_STOPPED, STOPPED_DESTROYED)])
    machine.dom.destroy = destroy
    machine._destroy_domain()
    assert machine.dom.destroyed == 1
    assert machine.exit_info() == MachineExit(HOST, "stopped by the lab")
