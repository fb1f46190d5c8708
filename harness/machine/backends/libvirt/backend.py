"""The libvirt backend: domains on the libvirt host the settings name (this one or another).

The root disk's overlay is a pool volume made there by the machine; KVM is
probed there (libvirt's domain capabilities, then a probe domain) and the
verdict is remembered per URI; a dead run's domain and overlay volumes are
found by the names its run recorded.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Optional

from ....core.settings import Settings, Timeouts
from ....supply.images import Image
from ..base import Disk, MachineSpec, RunSpace
from .connection import bindings, ignore_codes, open_connection, within
from .errors import ERR_NO_DOMAIN, GONE_CODES, message
from .machine import LibvirtMachine
from .storage import delete_volumes, find_pool
from .uri import parse_uri

log = logging.getLogger(__name__)


class LibvirtBackend:
    name = "libvirt"

    def __init__(self, settings: Settings):
        self.settings = settings
        self.uri = settings.libvirt_uri_for()

    def root_disk(self, image: Image, run: RunSpace, over: Optional[Path] = None) -> Disk:
        # the overlay is a volume next to the base image's on the libvirt host
        if over is not None:
            raise ValueError("the libvirt backend restores no saved guests")
        return Disk(image.path.resolve(), "raw", overlay=True)

    def snapshot_identity(self, spec: MachineSpec, accel: str) -> Optional[dict]:
        """None: its guests boot every time. (virDomainSave/Restore would fit, but the state
        would live on the libvirt host, its overlays are pool volumes and its forwards a
        tunnel's; not done.)"""
        return None

    def host_threads(self, spec: MachineSpec, accel: str) -> int:
        """Host threads a guest runs on here: none for a remote libvirt host; under TCG one with
        the lab's single-threaded emulator, else a vCPU each."""
        if parse_uri(self.uri).needs_tunnel:
            return 0
        return 1 if accel == "tcg" and self.settings.libvirt_tcg_emulator else spec.cpus

    def kvm_verdict(self) -> tuple[str, Path]:
        digest = hashlib.sha256(self.uri.encode()).hexdigest()[:12]
        return self.uri, self.settings.libvirt_dir / f"kvm-probe-{digest}.json"

    def kvm_precheck(self) -> tuple[bool, str]:
        """Whether libvirt there offers KVM domains at all (it checks /dev/kvm for its QEMU)."""
        lv = bindings()
        timeouts = self.settings.timeouts
        conn = open_connection(self.uri, timeouts)
        try:
            within(timeouts.libvirt_call, "libvirt: KVM domain capabilities",
                   conn.getDomainCapabilities, None, "x86_64", "pc", "kvm", 0)
            return True, f"libvirt at {self.uri} offers KVM domains"
        except lv.libvirtError as exc:
            return False, f"libvirt at {self.uri} offers no KVM domains: {message(exc).splitlines()[0]}"
        finally:
            conn.close()

    def machine(self, spec: MachineSpec, accel: str, timeouts: Timeouts, run: RunSpace) -> LibvirtMachine:
        return LibvirtMachine(spec, accel, self.settings, timeouts, run.path, self.uri,
                              record=lambda **items: run.record(self.name, **items))

    @staticmethod
    def reap(record: dict, run_path: Path, same_boot: bool) -> None:
        """A dead run's domain (if autodestroy missed it) and its overlay volumes."""
        leftovers = record.get("libvirt")
        if not isinstance(leftovers, dict):
            return
        timeouts = Timeouts()
        uri, name = leftovers["uri"], leftovers.get("domain", "")
        conn = open_connection(uri, timeouts)
        try:
            dom = ignore_codes(conn.lookupByName, {ERR_NO_DOMAIN}, name) if name else None
            if dom is not None:
                log.warning("destroying libvirt domain %s left behind by a dead run (%s)", name,
                            run_path.name)
                ignore_codes(dom.destroy, GONE_CODES)
                ignore_codes(dom.undefine, GONE_CODES)
            pool = find_pool(conn)
            if pool is not None:
                delete_volumes(pool, leftovers.get("volumes", []), timeouts)
        finally:
            conn.close()
