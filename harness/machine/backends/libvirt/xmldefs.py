"""The libvirt definitions the lab hands over: domain, pool and volume XML. Pure."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Optional

from ..base import MachineSpec

POOL_NAME = "livepatch-lab"
POOL_PATH = "/var/lib/libvirt/images/livepatch-lab"
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"


@dataclass(frozen=True)
class DomainDisk:
    path: str           # on the libvirt host
    format: str
    readonly: bool = False


@dataclass(frozen=True)
class DomainConfig:
    """A ``MachineSpec`` with its files' paths on the libvirt host."""
    spec: MachineSpec
    accel: str                        # "kvm" | "tcg"
    kernel: str
    initrd: Optional[str]
    disks: tuple[DomainDisk, ...]
    emulator: str = ""                # "": libvirt's default QEMU


def _sub(parent: ET.Element, tag: str, text: Optional[str] = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


NETDEV_ID = "labnet0"


def _network_args(spec: MachineSpec) -> list[str]:
    # Not <interface type='user'>: libvirt 9.0 forwards ports only with the passt
    # backend, and passt lets the guest reach the host's networks. QEMU's own
    # user networking with restrict=on reaches nothing but our loopback forwards.
    net = ["user", f"id={NETDEV_ID}", "restrict=on"]
    net += [f"hostfwd=tcp:127.0.0.1:{f.host_port}-:{f.guest_port}" for f in spec.forwards]
    # A fixed slot far above libvirt's own (it numbers its devices from slot 2 up);
    # left to QEMU, the NIC took slot 2 before libvirt's first disk claimed it.
    return ["-netdev", ",".join(net), "-device", f"virtio-net-pci,netdev={NETDEV_ID},bus=pci.0,addr=0x1e"]


def domain_xml(cfg: DomainConfig) -> str:
    """The transient domain for ``cfg``. Pure: no I/O, unit-tested."""
    s = cfg.spec
    ET.register_namespace("qemu", QEMU_NS)
    dom = ET.Element("domain", type="kvm" if cfg.accel == "kvm" else "qemu")
    _sub(dom, "name", s.name)
    _sub(dom, "memory", str(s.memory_mib), unit="MiB")
    _sub(dom, "vcpu", str(s.cpus))
    os_el = _sub(dom, "os")
    _sub(os_el, "type", "hvm", arch="x86_64", machine="pc")
    _sub(os_el, "kernel", cfg.kernel)
    if cfg.initrd:
        _sub(os_el, "initrd", cfg.initrd)
    _sub(os_el, "cmdline", s.append)
    features = _sub(dom, "features")
    _sub(features, "acpi")   # the guest's poweroff needs ACPI
    _sub(features, "apic")
    # Same CPUs as the QEMU backend: -cpu host under KVM, -cpu max under TCG.
    _sub(dom, "cpu", mode="host-passthrough" if cfg.accel == "kvm" else "maximum", check="none")
    _sub(dom, "clock", offset="utc")
    for event in ("on_poweroff", "on_reboot", "on_crash"):  # on_reboot=destroy: -no-reboot
        _sub(dom, event, "destroy")
    devices = _sub(dom, "devices")
    if cfg.emulator:
        _sub(devices, "emulator", cfg.emulator)
    for i, disk in enumerate(cfg.disks):
        el = _sub(devices, "disk", type="file", device="disk")
        # The overlay is thrown away after the run: no host flushes needed.
        _sub(el, "driver", name="qemu", type=disk.format, cache="unsafe")
        _sub(el, "source", file=disk.path)
        _sub(el, "target", dev=f"vd{chr(ord('a') + i)}", bus="virtio")
        if disk.readonly:
            _sub(el, "readonly")
    _sub(devices, "controller", type="usb", model="none")
    serial = _sub(devices, "serial", type="pty")
    _sub(serial, "target", port="0")
    console = _sub(devices, "console", type="pty")
    _sub(console, "target", type="serial", port="0")
    if s.rng:
        rng = _sub(devices, "rng", model="virtio")
        _sub(rng, "backend", "/dev/urandom", model="random")
    _sub(devices, "memballoon", model="none")
    if s.network:
        cmdline = _sub(dom, f"{{{QEMU_NS}}}commandline")
        for arg in _network_args(s):
            _sub(cmdline, f"{{{QEMU_NS}}}arg", value=arg)
    return ET.tostring(dom, encoding="unicode")


def pool_xml(name: str = POOL_NAME, path: str = POOL_PATH) -> str:
    pool = ET.Element("pool", type="dir")
    _sub(pool, "name", name)
    _sub(_sub(pool, "target"), "path", path)
    return ET.tostring(pool, encoding="unicode")


def volume_xml(name: str, capacity: int, fmt: str, backing: Optional[str] = None,
               backing_format: str = "raw") -> str:
    vol = ET.Element("volume")
    _sub(vol, "name", name)
    _sub(vol, "capacity", str(capacity), unit="bytes")
    _sub(vol, "allocation", "0", unit="bytes")   # sparse
    target = _sub(vol, "target")
    _sub(target, "format", type=fmt)
    _sub(_sub(target, "permissions"), "mode", "0644")
    if backing:
        store = _sub(vol, "backingStore")
        _sub(store, "path", backing)
        _sub(store, "format", type=backing_format)
    return ET.tostring(vol, encoding="unicode")
