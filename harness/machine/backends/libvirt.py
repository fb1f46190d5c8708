"""A libvirt domain as the lab's machine, on this host or a remote one.

One code path serves ``qemu:///system`` and ``qemu+ssh://user@host/system``:

- kernel, initrd and disks go into a lab-owned ``dir`` storage pool through
  libvirt's volume API, named by content hash (a second run uploads nothing);
  the per-run overlay is a qcow2 volume backed by the base image's volume;
- the domain is transient and auto-destroyed with our connection, so a lab
  process killed outright leaves no guest running (its overlay volume is
  reaped by the next run, see ``reap``);
- the serial console is a libvirt stream pumped into the local console file
  (the domain starts paused and resumes once the stream is attached: no
  byte is lost); the lab's ``ConsoleFollower`` tails that file as usual;
- networking is QEMU user-mode with ``restrict=on`` and host forwards on the
  libvirt host's 127.0.0.1; for a remote host an ``ssh -N -L`` child brings
  each forward to the lab's own 127.0.0.1.

The pure parts (URI parsing, domain and volume XML, error mapping, the tunnel
command line) import nothing from libvirt and are unit-tested without it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence
from urllib.parse import parse_qsl, urlsplit

from ...core import atomic
from ...core.errors import DeadlineExceeded, HarnessError, InfraError, PortInUse
from ...core.locks import file_lock
from ...core.net import free_port
from ...core.settings import Settings, Timeouts
from ...supply.apt import sha256_file
from ..console import ConsoleFollower
from .base import MachineSpec
from .qemu import _child_setup

log = logging.getLogger(__name__)

POOL_NAME = "livepatch-lab"
POOL_PATH = "/var/lib/libvirt/images/livepatch-lab"
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
_LOOPBACK = ("localhost", "::1", "[::1]")

# libvirt's error codes (virErrorNumber), spelled here so this module's pure
# parts need no libvirt import.
ERR_NO_CONNECT, ERR_SYSTEM, ERR_RPC, ERR_AUTH_FAILED = 5, 38, 39, 45
ERR_AUTH_CANCELLED, ERR_ACCESS_DENIED, ERR_AUTH_UNAVAILABLE = 79, 88, 94
ERR_XML, ERR_XML_DETAIL, ERR_CONFIG_UNSUPPORTED, ERR_INVALID_ARG = 27, 35, 67, 8
ERR_NO_DOMAIN, ERR_OPERATION_INVALID, ERR_NO_STORAGE_POOL, ERR_NO_STORAGE_VOL = 42, 55, 49, 50
_CONNECTION_CODES = {ERR_NO_CONNECT, ERR_SYSTEM, ERR_RPC, ERR_AUTH_FAILED, ERR_AUTH_CANCELLED,
                     ERR_ACCESS_DENIED, ERR_AUTH_UNAVAILABLE}
_XML_CODES = {ERR_XML, ERR_XML_DETAIL, ERR_CONFIG_UNSUPPORTED, ERR_INVALID_ARG}
_GONE_CODES = {ERR_NO_DOMAIN, ERR_OPERATION_INVALID}   # already destroyed / not running


# URIs ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """Where the domains run, parsed from a libvirt URI."""
    uri: str
    transport: str = ""          # "" (unix socket) | "ssh" | "tcp" | "tls" | "libssh2" | ...
    host: str = ""               # "" for this host
    user: str = ""
    port: Optional[int] = None   # the transport's port (SSH's, for qemu+ssh)
    params: dict = field(default_factory=dict)

    @property
    def needs_tunnel(self) -> bool:
        """Forwards bind on the libvirt host's loopback: reach them through SSH unless
        that host is this one (no host, or a loopback host over a non-SSH transport)."""
        if not self.host:
            return False
        if "ssh" in self.transport:
            return True
        return not (self.host in _LOOPBACK or self.host.startswith("127."))


def parse_uri(uri: str) -> Target:
    parts = urlsplit(uri)
    scheme = parts.scheme
    transport = scheme.split("+", 1)[1] if "+" in scheme else ""
    try:
        port = parts.port
    except ValueError:
        from ...core.errors import ConfigError
        raise ConfigError(f"bad port in libvirt URI {uri!r}", field="libvirt_uri") from None
    return Target(uri, transport, parts.hostname or "", parts.username or "", port,
                  dict(parse_qsl(parts.query)))


def tunnel_command(target: Target, pairs: Sequence[tuple[int, int]]) -> list[str]:
    """``ssh -N`` forwarding each (lab port, remote port) pair, loopback to loopback,
    with the URI's own SSH settings (command, port, user, keyfile, no_verify)."""
    ssh = target.params.get("command", "ssh") if "ssh" in target.transport else "ssh"
    cmd = [ssh, "-N", "-T", "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes",
           "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"]
    if target.port and "ssh" in target.transport:
        cmd += ["-p", str(target.port)]
    if target.user:
        cmd += ["-l", target.user]
    if target.params.get("keyfile"):
        cmd += ["-i", target.params["keyfile"]]
    if target.params.get("no_verify") == "1":
        cmd += ["-o", "StrictHostKeyChecking=no"]
    for local, remote in pairs:
        cmd += ["-L", f"127.0.0.1:{local}:127.0.0.1:{remote}"]
    return cmd + ["--", target.host]


# XML ----------------------------------------------------------------------------------
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


def _network_args(spec: MachineSpec) -> list[str]:
    # Not <interface type='user'>: libvirt 9.0 forwards ports only with the passt
    # backend, and passt lets the guest reach the host's networks. QEMU's own
    # user networking with restrict=on reaches nothing but our loopback forwards.
    net = ["user", "id=labnet0", "restrict=on"]
    net += [f"hostfwd=tcp:127.0.0.1:{f.host_port}-:{f.guest_port}" for f in spec.forwards]
    # A fixed slot far above libvirt's own (it numbers its devices from slot 2 up);
    # left to QEMU, the NIC took slot 2 before libvirt's first disk claimed it.
    return ["-netdev", ",".join(net), "-device", "virtio-net-pci,netdev=labnet0,bus=pci.0,addr=0x1e"]


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


# errors -------------------------------------------------------------------------------
def _code(exc: BaseException) -> Optional[int]:
    get = getattr(exc, "get_error_code", None)
    return get() if get else None


def _message(exc: BaseException) -> str:
    get = getattr(exc, "get_error_message", None)
    return (get() if get else None) or str(exc)


def connect_error(exc: BaseException, uri: str) -> InfraError:
    return InfraError(f"cannot connect to libvirt at {uri}: {_message(exc)}\n"
                      f"Is libvirtd running there, and may this user use it? "
                      f"Try `virsh -c '{uri}' list`.")


def call_error(exc: BaseException, what: str, uri: str, evidence: str = "") -> HarnessError:
    """A failed libvirt call as the lab's error: the host's fault, with the evidence."""
    msg, code = _message(exc), _code(exc)
    if "Could not set up host forwarding rule" in msg:
        return PortInUse(f"{what} on {uri}: QEMU could not bind its loopback forwards: {msg}")
    if code in _CONNECTION_CODES and "connection" in msg.lower():
        return connect_error(exc, uri)
    text = f"{what} on {uri}: {msg}"
    if code in _XML_CODES:
        text = f"{what} on {uri}: libvirt refused the definition: {msg}"
    if evidence:
        text += "\n--- evidence ---\n" + evidence
    return InfraError(text)


# runtime helpers ----------------------------------------------------------------------
def _libvirt() -> Any:
    try:
        import libvirt
    except ImportError:
        raise InfraError("the libvirt backend needs the libvirt Python bindings: "
                         "pip install 'livepatch-lab[libvirt]' (or ./lab.sh install)") from None
    return libvirt


_events_lock = threading.Lock()
_events_started = False


def _event_loop(lv: Any) -> None:
    """libvirt's default event loop in a daemon thread: lifecycle events and keepalive.
    Registered once per process, before any connection is opened."""
    global _events_started
    with _events_lock:
        if _events_started:
            return
        lv.virEventRegisterDefaultImpl()
        # libvirt prints every error to stderr by default, even those the lab expects
        # (a volume not uploaded yet); the lab reports the ones that matter itself.
        lv.registerErrorHandler(lambda _ctx, _err: None, None)

        def run() -> None:
            while True:
                lv.virEventRunDefaultImpl()
        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _events_started = True


def within(seconds: float, what: str, fn: Callable, *args: Any) -> Any:
    """``fn(*args)`` under a deadline: libvirt calls have none of their own (an SSH
    login or a wedged daemon can block forever). A call that overruns is left to
    finish in its daemon thread."""
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["value"] = fn(*args)
        except BaseException as exc:  # handed to the caller below
            box["error"] = exc
    thread = threading.Thread(target=work, name=f"libvirt: {what}", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise DeadlineExceeded(what, seconds)
    if "error" in box:
        raise box["error"]
    return box.get("value")


def open_connection(uri: str, timeouts: Timeouts) -> Any:
    lv = _libvirt()
    _event_loop(lv)
    try:
        conn = within(timeouts.libvirt_connect, f"connect to libvirt at {uri}", lv.open, uri)
    except lv.libvirtError as exc:
        raise connect_error(exc, uri) from None
    try:
        conn.setKeepAlive(5, 3)   # a dead remote host ends our calls instead of hanging them
    except lv.libvirtError as exc:
        log.debug("libvirt keepalive: %s", exc)
    return conn


def _ignore_codes(fn: Callable, codes: set, *args: Any) -> Any:
    lv = _libvirt()
    try:
        return fn(*args)
    except lv.libvirtError as exc:
        if _code(exc) in codes:
            return None
        raise


# the pool -------------------------------------------------------------------------------
def _digest(path: Path, settings: Settings) -> str:
    """sha256 of ``path``, remembered by (path, size, mtime, inode) under the cache."""
    st = path.stat()
    key = f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"
    memo_path = settings.libvirt_dir / "digests.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    if key in memo:
        return memo[key]
    memo[key] = sha256_file(path)
    atomic.write(memo_path, json.dumps(memo))   # a lost race only loses a memo entry
    return memo[key]


def ensure_pool(conn: Any) -> Any:
    """The lab's pool, defined, built and started if missing (same path on every host)."""
    lv = _libvirt()
    pool = _ignore_codes(conn.storagePoolLookupByName, {ERR_NO_STORAGE_POOL}, POOL_NAME)
    if pool is None:
        log.info("libvirt: creating storage pool %s at %s", POOL_NAME, POOL_PATH)
        pool = conn.storagePoolDefineXML(pool_xml(), 0)
        pool.build(0)
        pool.setAutostart(1)
    _start(pool)
    try:
        pool.refresh(0)
    except lv.libvirtError as exc:
        if pool.isActive():   # another process's upload in flight; harmless
            log.debug("pool refresh: %s", exc)
        else:                 # its directory vanished under it, so libvirt stopped it
            _start(pool)
            pool.refresh(0)
    return pool


def _start(pool: Any) -> None:
    if not pool.isActive():
        pool.build(0)   # the directory may be gone (a cleaned host, a restored snapshot)
        pool.create(0)


def _section(fd: int, size: int) -> tuple[bool, int]:
    """(in data?, length) of the section at ``fd``'s offset: sparse upload's hole finder."""
    cur = os.lseek(fd, 0, os.SEEK_CUR)
    if cur >= size:
        return True, 0
    try:
        data = os.lseek(fd, cur, os.SEEK_DATA)
    except OSError:          # ENXIO: a hole up to the end
        data = size
    if data > cur:
        result = (False, data - cur)
    else:
        result = (True, os.lseek(fd, cur, os.SEEK_HOLE) - cur)
    os.lseek(fd, cur, os.SEEK_SET)
    return result


def _upload(conn: Any, vol: Any, path: Path, deadline: float, seconds: float) -> None:
    lv = _libvirt()
    size = path.stat().st_size
    stream = conn.newStream(0)
    vol.upload(stream, 0, size, lv.VIR_STORAGE_VOL_UPLOAD_SPARSE_STREAM)
    fd = os.open(path, os.O_RDONLY)
    try:
        def data(_stream: Any, nbytes: int, _opaque: Any) -> Any:
            if time.monotonic() > deadline:
                return -1     # sparseSendAll aborts the stream
            return os.read(fd, nbytes)

        def hole(_stream: Any, _opaque: Any) -> list:
            return list(_section(fd, size))

        def skip(_stream: Any, length: int, _opaque: Any) -> int:
            return os.lseek(fd, length, os.SEEK_CUR)
        try:
            stream.sparseSendAll(data, hole, skip, None)
        except RuntimeError:
            raise DeadlineExceeded(f"upload {path} into libvirt volume {vol.name()}", seconds) from None
        stream.finish()
    finally:
        os.close(fd)


def ensure_volume(conn: Any, pool: Any, path: Path, label: str, settings: Settings) -> Any:
    """``path``'s content as a pool volume named by its hash; uploaded only if missing.
    A ``.ok`` marker volume is made after the upload, so a half upload is never used."""
    name = f"{label}-{_digest(path, settings)[:20]}"
    missing = {ERR_NO_STORAGE_VOL}
    if _ignore_codes(pool.storageVolLookupByName, missing, name + ".ok") is not None:
        return pool.storageVolLookupByName(name)
    stale = _ignore_codes(pool.storageVolLookupByName, missing, name)
    if stale is not None:
        stale.delete(0)   # a dead process's half upload
    t = settings.timeouts.libvirt_upload
    log.info("libvirt: uploading %s (%d MiB) as volume %s", path.name, path.stat().st_size >> 20, name)
    vol = pool.createXML(volume_xml(name, path.stat().st_size, "raw"), 0)
    _upload(conn, vol, path, time.monotonic() + t, t)
    pool.createXML(volume_xml(name + ".ok", 0, "raw"), 0)
    return vol


# the machine ------------------------------------------------------------------------------
_STOPPED_REASONS = {0: "poweroff", 1: "destroyed", 2: "crashed", 3: "migrated", 4: "saved",
                    5: "failed", 6: "snapshot"}
_EVENT_STOPPED, _EVENT_CRASHED = 5, 8


class LibvirtMachine:
    """One transient libvirt domain; create and destroy it from one thread."""

    def __init__(self, spec: MachineSpec, accel: str, settings: Settings, timeouts: Timeouts,
                 run_path: Path, record: Callable[[dict], None] = lambda _r: None,
                 uri: Optional[str] = None):
        self.spec, self.accel, self.settings, self.timeouts = spec, accel, settings, timeouts
        self.uri = uri or settings.libvirt_uri_for()
        self.target = parse_uri(self.uri)
        self.run_path, self.record = run_path, record
        self.console = ConsoleFollower(spec.console_log)
        self.xml = ""
        self.conn: Any = None
        self.dom: Any = None
        self.overlays: list[str] = []
        self.tunnel: Optional[subprocess.Popen] = None
        self.ports = {f.guest_port: f.host_port for f in spec.forwards}
        self._stream: Any = None
        self._pump: Optional[threading.Thread] = None
        self._callback: Optional[int] = None
        self._stopped = threading.Event()
        self._reason = ""

    # start -------------------------------------------------------------------------------
    def start(self) -> None:
        try:
            self.conn = open_connection(self.uri, self.timeouts)
            cfg = self._prepare()
            self.xml = domain_xml(cfg)
            self._create()
            self._attach_console()
            self._call("resume the domain", self.dom.resume)
            if self.target.needs_tunnel:
                self._open_tunnel()
        except BaseException:
            self.destroy()
            raise

    def _call(self, what: str, fn: Callable, *args: Any, evidence: str = "") -> Any:
        lv = _libvirt()
        try:
            return within(self.timeouts.libvirt_call, f"libvirt: {what}", fn, *args)
        except lv.libvirtError as exc:
            raise call_error(exc, what, self.uri, evidence) from None

    def _prepare(self) -> DomainConfig:
        """Upload what is missing (under a host-wide lock: xdist workers share the pool),
        then make the run's overlays."""
        lv = _libvirt()
        s = self.spec
        lock = self.settings.locks_dir / f"libvirt-{hashlib.sha256(self.uri.encode()).hexdigest()[:12]}"
        try:
            with file_lock(lock, timeout=self.settings.timeouts.lock, what=f"libvirt pool on {self.uri}"):
                pool = ensure_pool(self.conn)
                kernel = ensure_volume(self.conn, pool, s.kernel, "kernel", self.settings).path()
                initrd = (ensure_volume(self.conn, pool, s.initrd, "initrd", self.settings).path()
                          if s.initrd else None)
                bases = [ensure_volume(self.conn, pool, d.path, f"disk-{d.path.stem}", self.settings)
                         for d in s.disks]
            disks = tuple(self._disk(pool, i, d, vol) for i, (d, vol) in enumerate(zip(s.disks, bases)))
        except lv.libvirtError as exc:
            raise call_error(exc, "prepare the storage pool " + POOL_NAME, self.uri) from None
        return DomainConfig(s, self.accel, kernel, initrd, disks, self._emulator())

    def _disk(self, pool: Any, i: int, disk: Any, vol: Any) -> DomainDisk:
        if not disk.overlay:
            return DomainDisk(vol.path(), "raw", disk.readonly)
        name = f"{self.spec.name}-disk{i}.qcow2"
        self.overlays.append(name)
        self.record({"uri": self.uri, "domain": self.spec.name, "volumes": list(self.overlays)})
        capacity = disk.path.stat().st_size
        overlay = pool.createXML(volume_xml(name, capacity, "qcow2", backing=vol.path()), 0)
        return DomainDisk(overlay.path(), "qcow2")

    def _emulator(self) -> str:
        """Single-threaded TCG, as in the QEMU backend (MTTCG raced with the kernel's text
        patching: spurious int3 oopses during livepatch transitions). libvirt always
        passes ``-accel tcg`` first, and QEMU takes the first -accel that works, so a
        ``<qemu:commandline>`` -accel cannot override it; a wrapper emulator that adds
        ``thread=single`` can. Missing on the libvirt host: warn, run libvirt's own."""
        path = self.settings.libvirt_tcg_emulator
        if self.accel != "tcg" or not path:
            return ""
        lv = _libvirt()
        try:
            within(self.timeouts.libvirt_call, f"libvirt: probe emulator {path}",
                   self.conn.getDomainCapabilities, path, "x86_64", "pc", "qemu", 0)
            return path
        except lv.libvirtError as exc:
            log.warning("libvirt at %s cannot use %s (%s): guests run multi-threaded TCG",
                        self.uri, path, _message(exc).splitlines()[0])
            return ""

    def _create(self) -> None:
        lv = _libvirt()
        self._callback = self.conn.domainEventRegisterAny(
            None, lv.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, None)
        flags = lv.VIR_DOMAIN_START_PAUSED | lv.VIR_DOMAIN_START_AUTODESTROY
        log.debug("libvirt domain XML:\n%s", self.xml)
        self.dom = self._call("start the domain", self.conn.createXML, self.xml, flags,
                              evidence=self.xml)

    def _on_lifecycle(self, _conn: Any, dom: Any, event: int, detail: int, _opaque: Any) -> None:
        if dom.name() != self.spec.name:
            return
        if event == _EVENT_STOPPED:
            self._reason = self._reason or _STOPPED_REASONS.get(detail, f"stopped ({detail})")
            self._stopped.set()
        elif event == _EVENT_CRASHED:
            self._reason = "panic"

    def _attach_console(self) -> None:
        lv = _libvirt()
        self._stream = self.conn.newStream(0)
        self._call("open the console", self.dom.openConsole, None, self._stream,
                   lv.VIR_DOMAIN_CONSOLE_FORCE)
        self.spec.console_log.touch()
        self._pump = threading.Thread(target=self._pump_console, daemon=True,
                                      name=f"console-pump:{self.spec.name}")
        self._pump.start()
        self.console.start()

    def _pump_console(self) -> None:
        """Console stream → local file until the domain ends (EOF) or the stream breaks.
        The guest never blocks on us: libvirt buffers, and this thread only writes a file."""
        lv = _libvirt()
        with open(self.spec.console_log, "ab", buffering=0) as out:
            while True:
                try:
                    data = self._stream.recv(65536)
                except lv.libvirtError as exc:
                    log.debug("console stream ended: %s", exc)
                    return
                if not isinstance(data, bytes) or not data:
                    return
                out.write(data)

    def _open_tunnel(self) -> None:
        """Bring each forward from the libvirt host's loopback to ours (ssh -N -L)."""
        pairs = [(free_port(), remote) for remote in self.ports.values()]
        cmd = tunnel_command(self.target, pairs)
        log_path = self.run_path / "tunnel.log"
        with open(log_path, "wb") as out:
            self.tunnel = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                           stderr=subprocess.STDOUT, start_new_session=True,
                                           preexec_fn=_child_setup)
        self.record({"uri": self.uri, "domain": self.spec.name, "volumes": list(self.overlays),
                     "tunnel_pid": self.tunnel.pid})
        deadline = time.monotonic() + self.timeouts.tunnel
        for local, _ in pairs:
            self._wait_listening(local, deadline, cmd, log_path)
        self.ports = {g: local for g, (local, _) in zip(self.ports, pairs)}
        log.info("libvirt: guest ports %s reached through an SSH tunnel to %s",
                 ", ".join(map(str, self.ports)), self.target.host)

    def _wait_listening(self, port: int, deadline: float, cmd: list[str], log_path: Path) -> None:
        while True:
            if self.tunnel is not None and self.tunnel.poll() is not None:
                raise InfraError(f"the SSH tunnel to {self.target.host} exited with status "
                                 f"{self.tunnel.returncode}: {' '.join(cmd)}\n"
                                 f"{log_path.read_text(errors='replace').strip()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return
            except OSError:
                pass
            if time.monotonic() >= deadline:
                raise DeadlineExceeded(f"SSH tunnel to {self.target.host} listening on 127.0.0.1:{port}",
                                       self.timeouts.tunnel, log_path.read_text(errors="replace"))
            time.sleep(0.05)

    # state -------------------------------------------------------------------------------
    def lab_ports(self) -> dict[int, int]:
        return dict(self.ports)

    def is_running(self) -> bool:
        if self.dom is None or self._stopped.is_set():
            return False
        try:
            return bool(within(self.timeouts.libvirt_call, "libvirt: is the domain active",
                               self.dom.isActive))
        except HarnessError:
            return True   # the daemon is slow, not the guest gone
        except Exception as exc:  # libvirtError: no such domain (transient, ended)
            log.debug("isActive: %s", exc)
            return False

    def wait_exit(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.is_running():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._stopped.wait(min(0.2, left))   # the lifecycle event, or poll again
        return True

    def exit_reason(self) -> str:
        if self._reason:
            return self._reason
        return "" if self.is_running() or self.dom is None else "ended"

    def cpu_registers(self) -> str:
        """Every vCPU's registers, via libvirt's monitor passthrough (HMP)."""
        import libvirt_qemu
        return self._call("info registers -a", libvirt_qemu.qemuMonitorCommand, self.dom,
                          "info registers -a", libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP)

    def describe(self) -> dict:
        return {"backend": "libvirt", "uri": self.uri, "accel": self.accel,
                "domain": self.spec.name, "tunnel": self.target.needs_tunnel, "xml": self.xml}

    # teardown ----------------------------------------------------------------------------
    def destroy(self) -> None:
        """Destroy the domain, stop the console pump, the tunnel, delete the overlays; never raises."""
        for step in (self._destroy_domain, self._stop_pump, self._stop_tunnel,
                     self._delete_overlays, self._close):
            try:
                step()
            except Exception as exc:  # teardown goes on; the reaper is the backstop
                log.warning("libvirt teardown (%s): %s", step.__name__.strip("_"), exc)
        self.console.stop()

    def _destroy_domain(self) -> None:
        if self.dom is None:
            return
        lv = _libvirt()
        try:
            within(self.timeouts.libvirt_call, "libvirt: destroy the domain", self.dom.destroy)
            self._reason = self._reason or "destroyed"
        except lv.libvirtError as exc:
            if _code(exc) not in _GONE_CODES:
                raise
        self._stopped.set()

    def _stop_pump(self) -> None:
        if self._pump is not None:
            self._pump.join(timeout=self.timeouts.kill)  # EOF follows the domain's end
            if self._pump.is_alive() and self._stream is not None:
                self._stream.abort()

    def _stop_tunnel(self) -> None:
        if self.tunnel is None or self.tunnel.poll() is not None:
            return
        try:
            os.killpg(self.tunnel.pid, 15)
        except ProcessLookupError:
            return
        try:
            self.tunnel.wait(timeout=self.timeouts.kill)
        except subprocess.TimeoutExpired:
            os.killpg(self.tunnel.pid, 9)
            self.tunnel.wait(timeout=self.timeouts.kill)

    def _delete_overlays(self) -> None:
        if not self.overlays or self.conn is None:
            return
        _delete_volumes(self.conn.storagePoolLookupByName(POOL_NAME), self.overlays, self.timeouts)
        self.overlays.clear()

    def _close(self) -> None:
        if self.conn is None:
            return
        if self._callback is not None:
            _ignore_codes(self.conn.domainEventDeregisterAny, {ERR_INVALID_ARG}, self._callback)
            self._callback = None
        self.conn.close()
        self.conn = None


def reap(record: dict, timeouts: Timeouts) -> None:
    """What a killed run left on its libvirt host: its domain (if autodestroy missed it)
    and its overlay volumes. Best effort; raises nothing the caller must handle but
    ``HarnessError`` / libvirt's own error."""
    uri, name = record["uri"], record.get("domain", "")
    conn = open_connection(uri, timeouts)
    try:
        dom = _ignore_codes(conn.lookupByName, {ERR_NO_DOMAIN}, name) if name else None
        if dom is not None:
            log.warning("destroying libvirt domain %s left behind by a dead run", name)
            _ignore_codes(dom.destroy, _GONE_CODES)
            _ignore_codes(dom.undefine, _GONE_CODES)
        pool = _ignore_codes(conn.storagePoolLookupByName, {ERR_NO_STORAGE_POOL}, POOL_NAME)
        if pool is not None:
            _delete_volumes(pool, record.get("volumes", []), timeouts)
    finally:
        conn.close()


def _delete_volumes(pool: Any, names: Sequence[str], timeouts: Timeouts) -> None:
    """Delete the named volumes that exist, each under a deadline."""
    for name in names:
        vol = _ignore_codes(pool.storageVolLookupByName, {ERR_NO_STORAGE_VOL}, name)
        if vol is not None:
            within(timeouts.libvirt_call, f"libvirt: delete volume {name}", vol.delete, 0)
