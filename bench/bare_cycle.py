#!/usr/bin/env python3
"""The bare scripted cycle: the least work that applies and reverts a livepatch in a guest.

    python bench/bare_cycle.py [--kernel debian-6.1] [--runs 3]

Boots the kernel (the lab's PVH kernel and QEMU command line, so the emulator's
cost is the same) with a busybox initramfs whose /init does only the cycle:
insmod the good patch, wait for its transition, read the probe (/proc/cmdline),
disable, wait for the unpatch transition, rmmod, power off. No SSH, no image,
no workload. Prints the seconds from QEMU's start to its exit (median of N),
which bench/speed.py sets against the lab's fixed cost for the same work.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from livepatch_lab.core.settings import Settings  # noqa: E402
from livepatch_lab.machine.backends.base import MachineSpec  # noqa: E402
from livepatch_lab.machine.backends.qemu.command import QemuConfig, build_command  # noqa: E402
from livepatch_lab.supply import bootfiles, kbuild, vmlinux
from livepatch_lab.supply.kernels import defs as kerneldefs, fetch as kernelfetch  # noqa: E402
from livepatch_lab.supply.cpio import Cpio  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
t() { read -r up _ < /proc/uptime; echo "@@$1 $up"; }
t start
insmod /lab_good.ko
f=/sys/kernel/livepatch/lab_good/transition
while [ "$(cat $f)" = 1 ]; do sleep 0.2; done
t patched
cat /proc/cmdline
echo 0 > /sys/kernel/livepatch/lab_good/enabled
while [ "$(cat $f 2>/dev/null)" = 1 ]; do sleep 0.2; done
rmmod lab_good
t done
poweroff -f
"""


def initramfs(ko: Path) -> bytes:
    c = Cpio()
    for d in ("bin", "dev", "proc", "sys"):
        c.dir(d)
    c.chardev("dev/console", 5, 1)
    c.file("bin/busybox", bootfiles.find_busybox().read_bytes(), 0o755)
    c.file("init", INIT.encode(), 0o755)
    c.file("lab_good.ko", ko.read_bytes())
    return c.finish()


def one_cycle(kernel_name: str, settings: Settings) -> dict[str, float]:
    kernel = kernelfetch.fetch(kerneldefs.get_definition(kernel_name), settings)
    image = vmlinux.pvh_kernel(kernel.vmlinuz, settings.vmlinux_dir, settings.timeouts.lock) or kernel.vmlinuz
    ko = kbuild.build(REPO / "scenarios" / "patches" / "good", kernel, settings).path
    with tempfile.TemporaryDirectory(prefix="bare-") as tmp:
        initrd = Path(tmp) / "initrd.cpio"
        initrd.write_bytes(initramfs(ko))
        console = Path(tmp) / "console.log"
        spec = MachineSpec(name="bare", kernel=image, initrd=initrd, console_log=console,
                           append="console=ttyS0,115200 panic=-1 pci=noacpi quiet", cpus=settings.cpus,
                           memory_mib=settings.memory_mib, rng=True, network=False)
        argv = build_command(QemuConfig(spec, "tcg", Path(tmp) / "qmp.sock", binary=settings.qemu_binary))
        t0 = time.monotonic()
        subprocess.run(argv, check=True, timeout=300, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.monotonic() - t0
        marks = {line.split()[0][2:]: float(line.split()[1])
                 for line in console.read_text(errors="replace").splitlines()
                 if line.startswith("@@") and len(line.split()) == 2}
    if "done" not in marks:
        raise RuntimeError(f"the bare cycle did not finish on {kernel_name}: {marks}")
    return {"wall": wall, "boot": marks["start"], "apply": marks["patched"] - marks["start"],
            "revert": marks["done"] - marks["patched"]}


def bare_cycle(kernel_name: str, settings: Settings, runs: int) -> dict[str, float]:
    """Median of each part over ``runs`` cycles."""
    rows = [one_cycle(kernel_name, settings) for _ in range(runs)]
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernel", default="debian-6.1")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    r = bare_cycle(args.kernel, Settings.from_env(), args.runs)
    print(f"bare cycle on {args.kernel} (TCG, median of {args.runs}): {r['wall']:.2f} s "
          f"(boot to /init {r['boot']:.2f} s, apply {r['apply']:.2f} s, revert {r['revert']:.2f} s, "
          "by the guest's clock)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
