"""Choosing the accelerator: the KVM probe runs where the backend runs its machines,
and its verdict is remembered under the backend's key. A fake backend stands in."""
import json
from pathlib import Path

import pytest

from livepatch_lab.core.errors import DeadlineExceeded, InfraError
from livepatch_lab.core.settings import Settings, Timeouts
from livepatch_lab.machine import accel
from livepatch_lab.machine.console import ConsoleFollower


class ProbeMachine:
    def __init__(self, spec, prints: str, refuse: str):
        self.spec, self.prints, self.refuse = spec, prints, refuse
        self.console = ConsoleFollower(spec.console_log)
        self.destroyed = False

    def start(self):
        if self.refuse == "no QMP":   # QEMU under KVM never made its monitor socket (seen in CI)
            raise DeadlineExceeded("QMP socket /tmp/lab-x/qmp.sock", 5.0)
        if self.refuse:
            raise InfraError(f"start the domain: {self.refuse}\n--- evidence ---\n<domain/>")
        self.spec.console_log.write_text(self.prints)
        self.console.start()

    def destroy(self):
        self.destroyed = True
        self.console.stop()


class ProbeBackend:
    name = "fake"

    def __init__(self, tmp: Path, precheck=(True, "fine"), prints="[ 0.0] Linux version 6.1\n",
                 refuse="", key="host-a"):
        self.tmp, self.precheck, self.prints, self.refuse, self.key = tmp, precheck, prints, refuse, key
        self.machines = []

    def kvm_verdict(self):
        return self.key, self.tmp / "verdicts" / f"{self.key}.json"

    def kvm_precheck(self):
        return self.precheck

    def machine(self, spec, accel_name, timeouts, run):
        assert accel_name == "kvm" and run.path.is_dir()
        self.machines.append(ProbeMachine(spec, self.prints, self.refuse))
        return self.machines[-1]


@pytest.fixture
def settings(tmp_path, monkeypatch):
    monkeypatch.setattr(accel, "_memo", {})
    return Settings(cache_dir=tmp_path / "cache", timeouts=Timeouts(kvm_probe=0.5))


KERNEL = Path("/k/vmlinuz")


def test_tcg_asked_for_is_tcg_without_any_probe(settings, tmp_path):
    backend = ProbeBackend(tmp_path)
    assert accel.choose("tcg", KERNEL, settings, backend) == "tcg"
    assert backend.machines == []


def test_a_kvm_guest_that_prints_its_first_line_means_kvm(settings, tmp_path):
    backend = ProbeBackend(tmp_path)
    assert accel.choose("auto", KERNEL, settings, backend) == "kvm"
    probe = backend.machines[0]
    assert probe.destroyed and probe.spec.kernel == KERNEL and not probe.spec.network
    assert list(settings.runs_dir.iterdir()) == []   # the probe's run directory is gone


@pytest.mark.parametrize("backend_kw, why", [
    ({"precheck": (False, "/dev/kvm cannot be opened (Permission denied)")},
     "/dev/kvm cannot be opened (Permission denied)"),
    ({"prints": "SeaBIOS\n"}, "a KVM guest printed nothing in 0s"),
    ({"refuse": "internal error: failed to set MSR 0x10a"},
     "fake refused KVM: start the domain: internal error: failed to set MSR 0x10a"),
    ({"refuse": "no QMP"}, "fake refused KVM: QMP socket /tmp/lab-x/qmp.sock: no result within 5.0s"),
])
def test_unusable_kvm_falls_back_to_tcg_and_the_verdict_is_remembered_under_the_backends_key(
        settings, tmp_path, backend_kw, why):
    backend = ProbeBackend(tmp_path, **backend_kw)
    assert accel.choose("auto", KERNEL, settings, backend) == "tcg"
    saved = json.loads((tmp_path / "verdicts" / "host-a.json").read_text())
    assert (saved["key"], saved["usable"]) == ("host-a", False) and saved["why"].startswith(why)
    assert all(m.destroyed for m in backend.machines)
    probes = len(backend.machines)
    accel._memo.clear()   # as a new process would: the file answers
    assert accel.cached_probe(KERNEL, settings, backend)[1].endswith("(remembered)")
    assert len(backend.machines) == probes


def test_another_key_probes_anew(settings, tmp_path):
    accel.choose("auto", KERNEL, settings, ProbeBackend(tmp_path, prints="nothing\n"))
    other = ProbeBackend(tmp_path, key="host-b")
    assert accel.choose("auto", KERNEL, settings, other) == "kvm" and len(other.machines) == 1


def test_kvm_asked_for_but_unusable_is_an_infra_error_saying_why(settings, tmp_path):
    backend = ProbeBackend(tmp_path, precheck=(False, "libvirt at qemu+ssh://h/system offers no KVM"))
    with pytest.raises(InfraError, match="KVM was asked for but is unusable here: libvirt at"):
        accel.choose("kvm", KERNEL, settings, backend)
