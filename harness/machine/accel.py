"""Choose the accelerator: KVM where it really runs guests, TCG otherwise.

``/dev/kvm`` opening is not enough: on a host without working nested
virtualization a KVM guest hangs at 100% CPU before printing anything. So the
probe boots the very kernel under test with KVM and early printk, and asks for
its first line within a short deadline. The answer is remembered per host boot
and QEMU binary, so the cost is paid once.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path

from ..core import atomic
from ..core.errors import InfraError
from ..core.settings import Settings
from .backends.base import MachineSpec
from .backends.qemu import QemuConfig, QemuMachine

log = logging.getLogger(__name__)

_memo: dict[str, tuple[bool, str]] = {}


def _host_key(settings: Settings) -> str:
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot_id = "unknown"
    return f"{boot_id}:{settings.qemu_binary}"


def kvm_device_usable() -> tuple[bool, str]:
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return False, f"/dev/kvm cannot be opened ({exc.strerror})"
    os.close(fd)
    return True, "/dev/kvm opens"


def probe_kvm(kernel: Path, settings: Settings) -> tuple[bool, str]:
    """Boot ``kernel`` under KVM; usable iff it prints ``Linux version`` in time."""
    ok, why = kvm_device_usable()
    if not ok:
        return ok, why
    deadline = settings.timeouts.kvm_probe
    with tempfile.TemporaryDirectory(prefix="kvm-probe-", dir=_probe_dir(settings)) as tmp:
        spec = MachineSpec(name="lab-kvm-probe", kernel=kernel,
                           append="console=ttyS0 earlyprintk=serial,ttyS0,115200 panic=-1",
                           console_log=Path(tmp) / "console.log", cpus=1, memory_mib=256,
                           rng=False, network=False)
        machine = QemuMachine(QemuConfig(spec, "kvm", Path(tmp) / "qmp.sock",
                                         binary=settings.qemu_binary),
                              settings.timeouts, Path(tmp) / "qemu.log")
        start = time.monotonic()
        try:
            machine.start()
            seen = machine.console.wait_for(lambda c: c.contains("Linux version"), deadline)
        except InfraError as exc:
            return False, f"QEMU refused KVM: {str(exc).splitlines()[-1]}"
        finally:
            machine.destroy()
        if seen:
            return True, f"a KVM guest printed its first kernel line in {time.monotonic() - start:.1f}s"
        return False, (f"a KVM guest printed nothing in {deadline:.0f}s "
                       "(/dev/kvm opens, but guests hang: nested virtualization?)")


def _probe_dir(settings: Settings) -> Path:
    path = settings.runs_dir
    path.mkdir(parents=True, exist_ok=True)
    return path


def choose(requested: str, kernel: Path, settings: Settings) -> str:
    """Resolve ``auto|kvm|tcg`` to ``kvm`` or ``tcg``; explain a fallback."""
    if requested == "tcg":
        return "tcg"
    usable, why = cached_probe(kernel, settings)
    if usable:
        return "kvm"
    if requested == "kvm":
        raise InfraError(f"KVM was asked for but is unusable here: {why}. "
                         "Use --accel tcg (slower) or fix KVM access.")
    log.warning("KVM unusable (%s): using TCG software emulation, several times slower", why)
    return "tcg"


def cached_probe(kernel: Path, settings: Settings) -> tuple[bool, str]:
    key = _host_key(settings)
    if key in _memo:
        return _memo[key]
    store = settings.cache_dir / "kvm-probe.json"
    try:
        saved = json.loads(store.read_text())
        if saved.get("key") == key:
            _memo[key] = (bool(saved["usable"]), saved["why"] + " (remembered)")
            return _memo[key]
    except (OSError, ValueError, KeyError):
        pass
    log.info("probing KVM (up to %.0fs)", settings.timeouts.kvm_probe)
    result = probe_kvm(kernel, settings)
    _memo[key] = result
    atomic.write(store, json.dumps({"key": key, "usable": result[0], "why": result[1]}))
    return result
