"""Facts about the host the lab runs on: which boot this is, whether /dev/kvm opens."""
from __future__ import annotations

import os
from pathlib import Path


def boot_id() -> str:
    """This boot's id ('' if unknown): PIDs recorded under another boot mean nothing."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def kvm_device_usable() -> tuple[bool, str]:
    """Whether /dev/kvm opens (necessary, not sufficient: see accel.py)."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return False, f"/dev/kvm cannot be opened ({exc.strerror})"
    os.close(fd)
    return True, "/dev/kvm opens"
