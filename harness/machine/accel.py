"""Choose the accelerator: KVM where it really runs guests, TCG otherwise.

``/dev/kvm`` opening is not enough: on a host without working nested
virtualization a KVM guest hangs at 100% CPU before printing anything. So the
probe boots the very kernel under test with KVM and early printk, where the
backend runs its machines (QEMU: here; libvirt: on the URI's host), and asks
for its first line within a short deadline. The backend says what the verdict
is remembered by (QEMU: this host's boot and QEMU binary; libvirt: the URI),
so the cost is paid once.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Optional

from ..core import atomic
from ..core.errors import DeadlineExceeded, InfraError
from ..core.locks import file_lock
from ..core.settings import Settings
from .backends.base import Backend, MachineSpec
from .host import kvm_device_usable
from .runs import RunDir

log = logging.getLogger(__name__)

_memo: dict[str, tuple[bool, str]] = {}

__all__ = ["cached_probe", "choose", "kvm_device_usable", "probe_kvm"]


def probe_kvm(kernel: Path, settings: Settings, backend: Backend) -> tuple[bool, str]:
    """Boot ``kernel`` under KVM on ``backend``; usable iff it prints ``Linux version`` in time."""
    ok, why = backend.kvm_precheck()
    if not ok:
        return ok, why
    deadline = settings.timeouts.kvm_probe
    run = RunDir.create(settings.runs_dir, "kvm-probe")
    try:
        spec = MachineSpec(name=f"lab-{run.id}", kernel=kernel,
                           append="console=ttyS0 earlyprintk=serial,ttyS0,115200 panic=-1",
                           console_log=run.path / "console.log", cpus=1, memory_mib=256,
                           rng=False, network=False)
        machine = backend.machine(spec, "kvm", settings.timeouts, run)
        start = time.monotonic()
        try:
            machine.start()
            seen = machine.console.wait_for(lambda c: c.contains("Linux version"), deadline)
        except (InfraError, DeadlineExceeded) as exc:   # e.g. no QMP socket in time: KVM hangs
            return False, f"{backend.name} refused KVM: {_last_words(exc)}"
        finally:
            machine.destroy()
    finally:
        run.remove()
    if seen:
        return True, f"a KVM guest printed its first kernel line in {time.monotonic() - start:.1f}s"
    return False, (f"a KVM guest printed nothing in {deadline:.0f}s "
                   "(/dev/kvm opens, but guests hang: nested virtualization?)")


def _last_words(exc: Exception) -> str:
    """An error's last line before the evidence attached to it ("--- evidence ---" ...)."""
    return str(exc).split("\n--- ")[0].strip().splitlines()[-1]


def choose(requested: str, kernel: Path, settings: Settings, backend: Backend) -> str:
    """Resolve ``auto|kvm|tcg`` to ``kvm`` or ``tcg``; explain a fallback."""
    if requested == "tcg":
        return "tcg"
    usable, why = cached_probe(kernel, settings, backend)
    if usable:
        return "kvm"
    if requested == "kvm":
        raise InfraError(f"KVM was asked for but is unusable here: {why}. "
                         "Use --accel tcg (slower) or fix KVM access.")
    log.warning("KVM unusable (%s): using TCG software emulation, several times slower", why)
    return "tcg"


def _remembered(store: Path, key: str) -> Optional[tuple[bool, str]]:
    try:
        saved = json.loads(store.read_text())
        if saved.get("key") == key:
            return bool(saved["usable"]), saved["why"] + " (remembered)"
    except (OSError, ValueError, KeyError):
        pass
    return None


def cached_probe(kernel: Path, settings: Settings, backend: Backend) -> tuple[bool, str]:
    key, store = backend.kvm_verdict()
    if key in _memo:
        return _memo[key]
    found = _remembered(store, key)
    if found is None:   # labs started together on a new host probe once: the others wait for it
        with file_lock(settings.locks_dir / f"{store.stem}.lock", timeout=settings.timeouts.lock,
                       what="the KVM probe"):
            found = _remembered(store, key)
            if found is None:
                log.info("probing KVM (up to %.0fs)", settings.timeouts.kvm_probe)
                found = probe_kvm(kernel, settings, backend)
                atomic.write(store, json.dumps({"key": key, "usable": found[0], "why": found[1]}))
    _memo[key] = found
    return found
