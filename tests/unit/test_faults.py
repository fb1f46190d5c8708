"""The fault rule, directly: which trouble makes a ``fail`` (the patch's) and which an ``error``."""
import pytest

from livepatch_lab.core.errors import FAULTS, GUEST, INPUT, LAB, PATCH
from livepatch_lab.lab.run.faults import host_cause, patch_is_to_blame
from livepatch_lab.machine.backends import base


@pytest.mark.parametrize("fault, issued, blamed", [
    (PATCH, False, True),    # the kernel refused the patch's module: the patch, even before it is in
    (PATCH, True, True),
    (GUEST, False, False),   # the guest died during set-up: nothing of the patch had reached it
    (GUEST, True, True),     # ... once the patch's module was sent, the patch is what changed
    (LAB, False, False), (LAB, True, False),
    (INPUT, False, False), (INPUT, True, False),
])
def test_only_the_patch_or_a_guest_that_had_the_patch_is_the_patchs_fault(fault, issued, blamed):
    assert patch_is_to_blame(fault, issued, None) is blamed


@pytest.mark.parametrize("fault", FAULTS)
def test_whatever_the_host_did_to_the_machine_is_never_the_patchs_fault(fault):
    assert patch_is_to_blame(fault, True, "the host ended the guest's machine (QEMU killed by SIGKILL)") is False


class Machine:
    def __init__(self, running: bool, trouble: str = "", ended: base.MachineExit = base.StillRunning):
        self.running, self.trouble, self.ended = running, trouble, ended

    def is_running(self) -> bool:
        return self.running

    def host_trouble(self) -> str:
        return self.trouble

    def exit_info(self) -> base.MachineExit:
        return self.ended


def test_the_hosts_hand_is_named_and_the_guests_own_end_is_not():
    assert host_cause(Machine(True)) is None
    assert host_cause(Machine(True, "vCPUs paused on a host I/O error")) == "vCPUs paused on a host I/O error"
    assert host_cause(Machine(False, ended=base.MachineExit(base.GUEST, "poweroff"))) is None
    killed = host_cause(Machine(False, ended=base.MachineExit(base.HOST, "QEMU killed by SIGKILL")))
    assert killed == "the host ended the guest's machine (QEMU killed by SIGKILL)"
