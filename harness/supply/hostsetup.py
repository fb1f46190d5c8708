"""What ``livepatch-lab setup`` installs on a Debian or Ubuntu host, and how.

Three sets of packages: what a run needs (always), what the libvirt backend needs (``--libvirt``),
and what only the lab's own test suite needs (``--test``). Each names its package on Debian and on
Ubuntu where the two differ, so one list serves both; ``doctor`` then says whether the host can
run the lab. Installing is idempotent: only missing packages go to apt, and the extras below are
skipped when already in place.

Extras beside the packages: on Debian 12, whose QEMU (7.2) runs TCG guests single-threaded, a QEMU
from bookworm-backports unpacked beside the system's (``settings.LAB_QEMU``); for libvirt, the
single-threaded TCG wrapper (``settings.DEFAULT_TCG_EMULATOR``) and /dev/kvm's group as udev sets it.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from ..core import hostcmd, paths
from ..core.errors import HostCommandError, InfraError
from ..core.settings import DEFAULT_TCG_EMULATOR, LAB_QEMU, MTTCG_SAFE_SINCE
from . import debversion, mirror

Say = Callable[[str], None]


@dataclass(frozen=True)
class Need:
    package: str                    # Debian's name
    why: str
    ubuntu: Optional[str] = ""      # Ubuntu's name: "" the same, None none to install (see why)


RUNTIME = (
    Need("qemu-system-x86", "runs the guests"),
    Need("qemu-utils", "qemu-img: the guests' overlays"),
    Need("mmdebstrap", "builds the guest image"),
    Need("debian-archive-keyring", "verifies Debian's kernel packages and the image's"),
    Need("e2fsprogs", "the image's filesystems"),
    Need("cpio", "packs the initramfs"),
    Need("busybox-static", "the initramfs' shell"),
    Need("kmod", "depmod: indexes a kernel's modules"),
    Need("dpkg", "unpacks kernel packages"),
    Need("file", "tells static binaries"),
    Need("gcc", "builds livepatch modules"),
    Need("make", "drives kbuild"),
    Need("libelf-dev", "kbuild's objtool and modpost"),
    Need("libc6-dev", "static libc: the guest's httpd, the selftests' helper"),
    Need("openssh-client", "ssh-keygen: the guests' keys"),
    Need("zstd", "unpacks zstd-compressed kernel packages"),
)
LIBVIRT = (
    Need("libvirt-daemon-system", "libvirtd (LIVEPATCH_LAB_BACKEND=libvirt)"),
    Need("libvirt-clients", "virsh"),
    Need("libvirt-dev", "pip builds libvirt-python against it"),
    Need("pkg-config", "pip finds libvirt with it"),
    Need("python3-dev", "Python.h: pip builds libvirt-python"),
)
TEST = (
    Need("stress-ng", "the unit tests run the guest-side stress script on the host"),
    Need("openssh-server", "the libvirt tests' remote-style host: an sshd on 127.0.0.1"),
    Need("shellcheck", "actionlint checks the workflows' shell with it"),
    # Ubuntu's chromium is a snap (no browser in a container); its runners carry google-chrome
    Need("chromium", "the suite opens the sign-off report in a headless browser",
         ubuntu=None),
    Need("fonts-dejavu-core", "the report's text in that browser"),
)


def distro(os_release: Path = Path("/etc/os-release")) -> tuple[str, str]:
    """(``debian`` or ``ubuntu``, codename) from os-release; derivatives by their ID_LIKE."""
    fields: dict[str, str] = {}
    try:
        for line in os_release.read_text().splitlines():
            key, _, value = line.partition("=")
            fields[key.strip()] = value.strip().strip('"')
    except OSError:
        pass
    ids = [fields.get("ID", ""), *fields.get("ID_LIKE", "").split()]
    family = next((i for i in ids if i in ("ubuntu", "debian")), "")
    return family, fields.get("VERSION_CODENAME", "")


def plan(family: str, *, libvirt: bool = False, test: bool = False) -> list[str]:
    """The packages to have on a host of ``family``, in the order above."""
    needs = [*RUNTIME, *(LIBVIRT if libvirt or test else ()), *(TEST if test else ())]
    names = [n.package if family != "ubuntu" or n.ubuntu == "" else n.ubuntu for n in needs]
    return [n for n in names if n]


def skipped(family: str, *, test: bool = False) -> list[Need]:
    """The needs with no package on ``family`` (said, not silently dropped)."""
    return [n for n in (TEST if test else ()) if family == "ubuntu" and n.ubuntu is None]


def missing(packages: list[str]) -> list[str]:
    out = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${Status}\n", *packages], capture_output=True,
                         text=True, timeout=60).stdout
    installed = {line.split()[0] for line in out.splitlines() if line.endswith(" install ok installed")}
    return [p for p in packages if p not in installed]


def _root() -> list[str]:
    """The prefix that runs a command as root: nothing when root already, else sudo."""
    if os.geteuid() == 0:
        return []
    if not shutil.which("sudo"):
        raise InfraError("setup installs packages as root: run it as root, or install sudo")
    return ["sudo"]


def _run(cmd: list[str], timeout: float) -> str:
    return hostcmd.run(cmd, what="setup", timeout=timeout)


def apt_install(packages: list[str], say: Say, timeout: float = 1800) -> None:
    """Install ``packages`` with apt (after one ``apt-get update``)."""
    say(f"installing {' '.join(packages)}")
    sudo = _root()
    _run([*sudo, "apt-get", "update", "-qq"], timeout)
    _run([*sudo, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-qq",
          "--no-install-recommends", *packages], timeout)


def install_tcg_wrapper(say: Say) -> None:
    """The libvirt backend's single-threaded TCG emulator, copied from the package."""
    src = paths.PACKAGE / "machine" / "backends" / "qemu-tcg-single"
    dest = Path(DEFAULT_TCG_EMULATOR)
    if dest.is_file() and dest.read_bytes() == src.read_bytes():
        return
    say(f"installing {dest}")
    _run([*_root(), "install", "-D", "-m", "755", str(src), str(dest)], 60)


def kvm_group(say: Say, dev: Path = Path("/dev/kvm")) -> None:
    """/dev/kvm as Debian's udev rule leaves it (root:kvm 0660): a root-only one makes libvirt
    re-probe QEMU on every call (its probe sees KVM, its QEMU user cannot), ~1 min per start."""
    import grp
    try:
        st, kvm = dev.stat(), grp.getgrnam("kvm")
    except (OSError, KeyError):
        return
    if st.st_gid == kvm.gr_gid and st.st_mode & 0o777 == 0o660:
        return
    say(f"{dev}: group kvm, mode 0660 (as udev sets it)")
    _run([*_root(), "chgrp", "kvm", str(dev)], 30)
    _run([*_root(), "chmod", "0660", str(dev)], 30)


MTTCG_ROOT = Path("/usr/local/lib/livepatch-lab/qemu")
MTTCG_SAFE = ".".join(map(str, MTTCG_SAFE_SINCE))
BACKPORT = ("qemu-system-x86", "qemu-system-common", "qemu-system-data", "seabios")


def _qemu_version() -> str:
    out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "qemu-system-x86"], capture_output=True,
                         text=True, timeout=60).stdout.strip()
    return out.split(":", 1)[-1]


def install_qemu_mttcg(family: str, codename: str, say: Say, debian_mirror: Optional[str]) -> list[str]:
    """QEMU from 9.1 runs TCG guests multi-threaded without the stale-code race of older ones; with
    a host thread per vCPU a debian-6.12 transition takes seconds, not minutes. Debian 12 ships 7.2,
    and bookworm's libvirt (9.0) fails to probe the backports' 10.x, so that is unpacked beside the
    system's QEMU for the lab's own backend (``LAB_QEMU``, the default qemu_binary where it exists).
    Returns a note when the host keeps single-threaded TCG."""
    have = _qemu_version()
    if have and debversion.compare(have, MTTCG_SAFE) >= 0:
        return []
    lab_qemu = Path(LAB_QEMU)
    if lab_qemu.is_file() and subprocess.run([str(lab_qemu), "--version"], capture_output=True,
                                             timeout=60).returncode == 0:
        return []
    slow = f"qemu-system-x86 {have or '?'} is older than {MTTCG_SAFE}: TCG guests run single-threaded " \
           "(slow livepatch transitions on PREEMPT_DYNAMIC kernels; KVM hosts are not affected)"
    if (family, codename) != ("debian", "bookworm"):
        return [slow]
    archive = mirror.debian_mirrors(debian_mirror).archive
    say(f"unpacking QEMU from bookworm-backports ({archive}) into {MTTCG_ROOT} (multi-threaded TCG)")
    sudo = _root()
    with tempfile.TemporaryDirectory(prefix="livepatch-lab-qemu-") as tmp:
        t = Path(tmp)
        for d in ("lists/partial", "cache/archives/partial", "debs"):
            (t / d).mkdir(parents=True)
        (t / "sources.list").write_text(f"deb [signed-by={mirror.KEYRING}] {archive} bookworm-backports main\n")
        apt = ["apt-get", "-qq", "-o", f"Dir::Etc::SourceList={t}/sources.list", "-o", "Dir::Etc::SourceParts=/dev/null",
               "-o", f"Dir::State::Lists={t}/lists", "-o", f"Dir::Cache={t}/cache", "-o", "Acquire::Languages=none",
               "-o", "APT::Sandbox::User=root"]
        _run([*apt, "update"], 600)
        try:
            hostcmd.run([*apt, "download", *BACKPORT], what="setup", cwd=t / "debs", timeout=1200)
        except HostCommandError:
            pass   # said below: a host without the backports keeps single-threaded TCG
        debs = sorted((t / "debs").glob("*.deb"))
        if len(debs) < len(BACKPORT):
            return [slow + f"; fetching QEMU from bookworm-backports at {archive} failed"]
        _run([*sudo, "rm", "-rf", str(MTTCG_ROOT)], 120)
        _run([*sudo, "mkdir", "-p", str(MTTCG_ROOT)], 60)
        for deb in debs:
            _run([*sudo, "dpkg", "-x", str(deb), str(MTTCG_ROOT)], 300)
        wrapper = t / "qemu-system-x86_64"
        r = MTTCG_ROOT / "usr"
        wrapper.write_text(f"#!/bin/sh\n# livepatch-lab: QEMU from bookworm-backports, unpacked in {MTTCG_ROOT} "
                           f"(livepatch-lab setup)\nexport QEMU_MODULE_DIR={r}/lib/x86_64-linux-gnu/qemu\n"
                           f'exec {r}/bin/qemu-system-x86_64 -L {r}/share/qemu -L {r}/share/seabios "$@"\n')
        _run([*sudo, "install", "-D", "-m", "755", str(wrapper), LAB_QEMU], 60)
    say(_run([LAB_QEMU, "--version"], 60).splitlines()[0])
    return []


def setup(*, libvirt: bool, test: bool, say: Say, debian_mirror: Optional[str] = None) -> list[str]:
    """Bring the host to what the lab needs; returns what could not be installed, said why."""
    family, codename = distro()
    if not family:
        raise InfraError("setup knows Debian and Ubuntu (and their derivatives); on this host "
                         "install the tools `livepatch-lab doctor` names by hand")
    need = missing(plan(family, libvirt=libvirt, test=test))
    if need:
        apt_install(need, say)
    else:
        say("every package is installed")
    notes = [f"{n.package}: not installed on Ubuntu ({n.why}; its snap does not run in containers): "
             "a Chrome or Chromium of your own is used when on PATH" for n in skipped(family, test=test)]
    notes += install_qemu_mttcg(family, codename, say, debian_mirror)
    if libvirt or test:
        install_tcg_wrapper(say)
        kvm_group(say)
    return notes
