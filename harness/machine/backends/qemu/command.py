"""QEMU's command line for a ``MachineSpec``: a pure function, unit-tested."""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from ..base import MachineSpec


@dataclass(frozen=True)
class QemuConfig:
    spec: MachineSpec
    accel: str                  # "kvm" | "tcg"
    qmp_socket: Path
    binary: str = "qemu-system-x86_64"
    machine: str = "pc"
    # MTTCG ("multi") runs each vCPU on its own host thread, but its handling of
    # cross-modifying code races with the kernel's int3-based text patching
    # (text_poke_bp): a vCPU can execute a stale int3 -> "Oops: int3" (seen on 6.12
    # while a livepatch transition ran). "single" interleaves vCPUs on one thread.
    tcg_thread: str = "single"


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
        cmd += ["-accel", f"tcg,thread={cfg.tcg_thread}", "-cpu", "max"]
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
    if s.incoming is not None:   # QEMU 7.2 has no file: URI; it runs exec: through /bin/sh
        cmd += ["-incoming", f"exec:cat {shlex.quote(str(s.incoming))}"]
    return cmd
