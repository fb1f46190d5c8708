"""QEMU's command line for a ``MachineSpec``: a pure function, unit-tested."""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ....core.settings import MTTCG_SAFE_SINCE
from ..base import MachineSpec

# Multi-threaded TCG (MTTCG: one host thread per vCPU) before QEMU 8.1 could link a translation
# block made from guest code that another vCPU was rewriting at that moment, and run it after the
# rewrite: a debian-6.12 guest executed a stale int3 ("Oops: int3") while a livepatch transition
# rewrote its static-call sites (text_poke_bp). 8.1 serialised a page's translation with its
# invalidation ("accel/tcg: Always lock pages before translation"); 9.1 (and 8.2.6) fixed the same
# for a block's second page ("Fix typo causing tb->page_addr[1] to not be recorded"). Single-
# threaded TCG cannot race, but it switches vCPUs mostly at timer interrupts, and each of a 6.12
# transition's ~16,000 cross-CPU syncs waits for such a switch when the other vCPU is busy.
# MTTCG_SAFE_SINCE (core/settings, shared with `livepatch-lab setup`) is the first QEMU without both.
_VERSION = re.compile(r"QEMU emulator version (\d+)\.(\d+)(?:\.(\d+))?")


def parse_version(text: str) -> Optional[tuple[int, int, int]]:
    """``qemu-system-x86_64 --version``'s output -> (major, minor, micro); None if not QEMU's."""
    m = _VERSION.search(text)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)) if m else None


def tcg_thread(setting: str, version: Optional[tuple[int, int, int]]) -> str:
    """``single`` or ``multi`` for the ``tcg_thread`` setting: ``auto`` is multi-threaded only
    on a QEMU known to be safe for it (an unknown version counts as unsafe)."""
    if setting != "auto":
        return setting
    return "multi" if version is not None and version[:2] >= MTTCG_SAFE_SINCE else "single"


@dataclass(frozen=True)
class QemuConfig:
    spec: MachineSpec
    accel: str                  # "kvm" | "tcg"
    qmp_socket: Path
    binary: str = "qemu-system-x86_64"
    machine: str = "pc"
    # "multi": a host thread per vCPU (safe from QEMU 9.1, see MTTCG_SAFE_SINCE);
    # "single": all vCPUs interleaved on one thread
    tcg_thread: str = "single"
    icount: Optional[int] = None   # TCG's -icount shift (single-threaded TCG only); None: off


NETDEV_ID = "net0"   # QMP set_link names it


def _opt(value: object) -> str:
    """A value inside a QEMU ``key=value,...`` option: commas are doubled."""
    return str(value).replace(",", ",,")


def build_command(cfg: QemuConfig) -> list[str]:
    """The full QEMU command line for ``cfg``. Pure: no I/O, unit-tested."""
    s = cfg.spec
    cmd = [cfg.binary, "-name", s.name, "-nodefaults", "-no-user-config",
           "-display", "none", "-no-reboot", "-M", cfg.machine]
    if cfg.accel == "kvm":
        cmd += ["-accel", "kvm", "-cpu", "host"]
    else:
        cmd += ["-accel", f"tcg,thread={'single' if cfg.icount is not None else cfg.tcg_thread}", "-cpu", "max"]
        if cfg.icount is not None:
            cmd += ["-icount", f"shift={cfg.icount},sleep=off"]
    cmd += ["-smp", str(s.cpus), "-m", str(s.memory_mib)]
    cmd += ["-kernel", str(s.kernel), "-append", s.append]
    if s.initrd is not None:
        cmd += ["-initrd", str(s.initrd)]
    # append=on: a restored guest's console continues the saved boot's (the lab writes it first)
    cmd += ["-chardev", f"file,id=con0,path={_opt(s.console_log)},append=on", "-serial", "chardev:con0",
            "-qmp", f"unix:{_opt(cfg.qmp_socket)},server=on,wait=off"]
    for i, disk in enumerate(s.disks):
        # The overlay is thrown away after the run: no host flushes needed.
        opts = [f"file={_opt(disk.path)}", "if=none", f"id=disk{i}", f"format={disk.format}",
                "cache=unsafe"]
        if disk.readonly:
            opts.append("readonly=on")
        cmd += ["-drive", ",".join(opts), "-device", f"virtio-blk-pci,drive=disk{i}"]
    if s.network:
        # restrict=on: the guest reaches nothing; only our loopback forwards reach it.
        net = ["user", f"id={NETDEV_ID}", "restrict=on"]
        net += [f"hostfwd=tcp:127.0.0.1:{f.host_port}-:{f.guest_port}" for f in s.forwards]
        cmd += ["-netdev", ",".join(net), "-device", f"virtio-net-pci,netdev={NETDEV_ID}"]
    if s.rng:
        cmd += ["-object", "rng-random,id=rng0,filename=/dev/urandom",
                "-device", "virtio-rng-pci,rng=rng0"]
    if s.incoming is not None:
        cmd += ["-incoming", incoming_uri(s.incoming)]
    return cmd


# QEMU 7.2 has no file: migration URI; it runs an exec: URI's command through /bin/sh -c,
# so the state file's path is quoted for that shell.
def incoming_uri(state: Path) -> str:
    """``-incoming``: read a saved guest's state from ``state``."""
    return f"exec:cat {shlex.quote(str(state))}"


def migrate_uri(state: Path) -> str:
    """QMP ``migrate``: write the guest's state into ``state``."""
    return f"exec:cat > {shlex.quote(str(state))}"
