"""Host checks for ``livepatch-lab doctor``: can this machine run the lab?"""
from __future__ import annotations

import importlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .core.errors import HarnessError
from .core.settings import Settings
from .machine import accel
from .machine.backends.qemu.backend import qemu_version
from .core.settings import MTTCG_SAFE_SINCE
from .machine.backends.qemu.command import tcg_thread
from .supply import mirror

MIN_FREE_GIB = 10


@dataclass(frozen=True)
class Check:
    name: str
    status: str   # OK | WARN | FAIL
    detail: str


def _version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"({exc})"
    return out.strip().splitlines()[0] if out.strip() else ""


def _tool(name: str, why: str, package: str, version_flag: str = "--version") -> Check:
    path = shutil.which(name)
    if not path:
        return Check(name, "FAIL", f"missing ({why}); install Debian package {package}")
    return Check(name, "OK", f"{path} {_version([path, version_flag]) if version_flag else ''}".strip())


def _static(path: str) -> bool:
    try:
        out = subprocess.run(["file", "-L", path], capture_output=True, text=True, timeout=10).stdout
        return "statically linked" in out or "static-pie" in out
    except (OSError, subprocess.TimeoutExpired):
        data = Path(path).read_bytes()[:4096]
        return b"/lib64/ld-linux" not in data and b"/lib/ld-linux" not in data


def _tcg_threads(settings: Settings) -> Check:
    """How a TCG guest's vCPUs will run: one host thread each where QEMU is safe for it."""
    version = qemu_version(settings.qemu_binary)
    thread = tcg_thread(settings.tcg_thread, version)
    said = "QEMU " + ".".join(map(str, version)) if version else "QEMU of unknown version"
    safe = ".".join(map(str, MTTCG_SAFE_SINCE))
    if thread == "multi":
        return Check("tcg-threads", "OK", f"{said}: multi-threaded TCG (a host thread per vCPU)")
    if settings.tcg_thread == "single":
        return Check("tcg-threads", "OK", f"{said}: single-threaded TCG, as LIVEPATCH_LAB_TCG_THREAD says")
    return Check("tcg-threads", "WARN", f"{said} is older than {safe}: single-threaded TCG, so livepatch "
                 "transitions on PREEMPT_DYNAMIC kernels (debian-6.12) take minutes under load; "
                 "lab.sh installs a newer QEMU (Debian 12: from bookworm-backports)")


def _lab_data() -> Check:
    """The kernel definitions, image recipes and guest scripts: the checkout's top level, or an
    installed wheel's package data. Without them no run can start, so it is a FAIL here, not later."""
    from .core import paths
    kernels = sorted(paths.KERNELS_DIR.glob("*.yaml"))
    recipes = sorted(paths.IMAGES_DIR.glob("*.yaml"))
    guest = paths.GUEST_DIR / "lab-init"
    if not kernels or not recipes or not guest.is_file():
        return Check("lab-data", "FAIL", f"{paths.DATA}: kernel definitions ({len(kernels)}), image recipes "
                     f"({len(recipes)}) or guest scripts missing; reinstall livepatch-lab")
    return Check("lab-data", "OK", f"{paths.DATA}: {len(kernels)} kernel definitions, {len(recipes)} image recipes")


def run_checks(settings: Settings) -> Iterator[Check]:
    yield _lab_data()
    for mod in ("paramiko", "yaml", "tenacity", "xdist"):
        try:
            importlib.import_module(mod)
            yield Check(f"python:{mod}", "OK", "importable")
        except ImportError:
            yield Check(f"python:{mod}", "FAIL", "missing; pip install livepatch-lab's dependencies")
    yield _tool(settings.qemu_binary, "runs the guests", "qemu-system-x86")
    yield _tcg_threads(settings)
    yield _tool("qemu-img", "makes overlays", "qemu-utils")
    ok, why = accel.kvm_device_usable()
    if not ok:
        yield Check("kvm", "WARN", f"{why}: guests will run under TCG (slower)")
    else:
        store = settings.cache_dir / "kvm-probe.json"
        detail = why + "; whether guests really run is probed on the first boot"
        if store.exists():
            try:
                import json
                saved = json.loads(store.read_text())
                state = "usable" if saved["usable"] else "UNUSABLE, TCG will be used"
                detail = f"{why}; last probe: {state}: {saved['why']}"
                if not saved["usable"]:
                    yield Check("kvm", "WARN", detail)
                    detail = ""
            except (ValueError, KeyError, OSError):
                pass
        if detail:
            yield Check("kvm", "OK", detail)
    yield _tool("mmdebstrap", "builds the guest image", "mmdebstrap")
    yield _tool("mke2fs", "writes image filesystems", "e2fsprogs", "-V")
    yield _tool("dpkg-deb", "unpacks kernel packages", "dpkg")
    yield _tool("apt-get", "fetches verified kernel packages", "apt")
    yield _tool("depmod", "indexes kernel modules", "kmod")
    yield _tool("cpio", "packs the initramfs", "cpio")
    busybox = shutil.which("busybox")
    if not busybox:
        yield Check("busybox", "FAIL", "missing (initramfs); install busybox-static")
    elif not _static(busybox):
        yield Check("busybox", "FAIL", f"{busybox} is dynamically linked; install busybox-static")
    else:
        yield Check("busybox", "OK", f"{busybox} (static)")
    yield _tool("gcc", "builds livepatch modules", "gcc")
    yield _tool("make", "drives kbuild", "make")
    if mirror.KEYRING.exists():
        yield Check("keyring", "OK", str(mirror.KEYRING))
    else:
        yield Check("keyring", "FAIL", f"{mirror.KEYRING} missing; install debian-archive-keyring")
    try:
        m = mirror.debian_mirrors(settings.debian_mirror)
        yield Check("mirror", "OK", f"{m.archive} (+ {m.security})")
    except HarnessError as exc:
        yield Check("mirror", "FAIL", str(exc))
    cache = settings.cache_dir
    try:
        cache.mkdir(parents=True, exist_ok=True)
        probe = cache / ".doctor-write-test"
        probe.write_text("ok")
        probe.unlink()
        st = os.statvfs(cache)
        free = st.f_bavail * st.f_frsize / 2**30
        status = "OK" if free >= MIN_FREE_GIB else "WARN"
        yield Check("cache", status, f"{cache}: writable, {free:.0f} GiB free"
                    + ("" if status == "OK" else f" (want >= {MIN_FREE_GIB} GiB)"))
    except OSError as exc:
        yield Check("cache", "FAIL", f"{cache}: {exc}")
