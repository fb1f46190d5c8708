"""What the host does to a running machine, in words the verdict can quote. Pure.

A guest that stops answering is the guest's doing (after the patch: the
patch's) unless the host stands in its way, and two ways of the host's leave
the machine running: its vCPUs paused on a host I/O error (QEMU's default
``werror=enospc``: a full disk under the overlay stops the guest, which then
looks frozen), or its network cable pulled (QMP ``set_link``). Neither is
anything a guest can do to itself, so either makes the trouble the host's.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional, Sequence

from ...core.diskspace import human, room


def link_cut(how: str) -> str:
    return f"the host cut the guest's network link ({how})"


def io_paused(device: str, path: Optional[Path], operation: str, nospace: bool, reason: str) -> str:
    """The guest paused because the host failed its disk ``device`` (file ``path``)."""
    where = f"its disk {device}" + (f" ({path})" if path else "")
    text = f"the host paused the guest: {operation or 'an access'} of {where} failed on the host"
    if nospace:
        space = room(path.parent) if path else None
        text += ": no space left on device" + (
            f" ({human(space[0])} free of {human(space[1])} there)" if space else "")
    elif reason:
        text += f": {reason}"
    return text


def from_block_events(events: Sequence[dict], disks: Mapping[str, Path]) -> str:
    """QEMU's last ``BLOCK_IO_ERROR`` event as ``io_paused`` words; ``disks``: drive id -> file."""
    for event in reversed(events):
        if event.get("event") == "BLOCK_IO_ERROR":
            d = event.get("data") or {}
            device = str(d.get("device") or d.get("node-name") or "?")
            return io_paused(device, disks.get(device), str(d.get("operation", "")),
                             bool(d.get("nospace")), str(d.get("reason", "")))
    return io_paused("?", None, "", False, "QEMU reports an I/O error (no event says which disk)")
