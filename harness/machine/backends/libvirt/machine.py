"""One transient libvirt domain as the lab's machine, on this host or a remote one."""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

from ....core.errors import HarnessError
from ....core.settings import Settings, Timeouts
from ...console import ConsoleFollower
from .. import hosttrouble
from ..base import Disk, MachineExit, MachineSpec, Recorder, StillRunning
from . import lifecycle, storage, xmldefs
from .connection import bindings, ignore_codes, open_connection, within
from .errors import ERR_INVALID_ARG, GONE_CODES, call_error, code, message
from .tunnel import Tunnel
from .uri import parse_uri
from .xmldefs import POOL_NAME, DomainConfig, DomainDisk, domain_xml

log = logging.getLogger(__name__)


class LibvirtMachine:
    """One transient libvirt domain; create and destroy it from one thread."""

    def __init__(self, spec: MachineSpec, accel: str, settings: Settings, timeouts: Timeouts,
                 run_path: Path, uri: str, record: Recorder = lambda **_items: None):
        self.spec, self.accel, self.settings, self.timeouts = spec, accel, settings, timeouts
        self.uri, self.target = uri, parse_uri(uri)
        self.run_path, self.record = run_path, record
        self.console = ConsoleFollower(spec.console_log)
        self.xml = ""
        self.conn: Any = None
        self.dom: Any = None
        self.overlays: list[str] = []
        self.tunnel: Optional[Tunnel] = None
        self.ports = {f.guest_port: f.host_port for f in spec.forwards}
        self._stream: Any = None
        self._pump: Optional[threading.Thread] = None
        self._callback: Optional[int] = None
        self._events: list[tuple[int, int]] = []   # this domain's lifecycle (event, detail)
        self._state_exit: Optional[MachineExit] = None
        self._stopped = threading.Event()
        self._destroyed_by_lab = False
        self.link_up = True   # the guest's network cable, as the lab last set it

    # start -------------------------------------------------------------------------------
    def start(self) -> None:
        try:
            self.conn = open_connection(self.uri, self.timeouts)
            self.xml = domain_xml(self._prepare())
            self._create()
            self._attach_console()
            self._call("resume the domain", self.dom.resume)
            if self.target.needs_tunnel:
                self._open_tunnel()
        except BaseException:
            self.destroy()
            raise

    def _note(self) -> None:
        """What a killed lab would leave on the libvirt host, for the next run's reaper."""
        tunnel = self.tunnel.proc.pid if self.tunnel and self.tunnel.proc else None
        self.record(libvirt={"uri": self.uri, "domain": self.spec.name,
                             "volumes": list(self.overlays), "tunnel_pid": tunnel})

    def _call(self, what: str, fn: Callable, *args: Any, evidence: str = "") -> Any:
        lv = bindings()
        try:
            return within(self.timeouts.libvirt_call, f"libvirt: {what}", fn, *args)
        except lv.libvirtError as exc:
            raise call_error(exc, what, self.uri, evidence) from None

    def _prepare(self) -> DomainConfig:
        """Upload what is missing, then make the run's overlays."""
        lv = bindings()
        s = self.spec
        files = [(s.kernel, "kernel")] + ([(s.initrd, "initrd")] if s.initrd else [])
        files += [(d.path, f"disk-{d.path.stem}") for d in s.disks]
        try:
            pool, vols = storage.stage(self.conn, self.uri, files, self.settings)
            kernel = vols[0].path()
            initrd = vols[1].path() if s.initrd else None
            bases = vols[len(vols) - len(s.disks):]
            disks = tuple(self._disk(pool, i, d, vol) for i, (d, vol) in enumerate(zip(s.disks, bases)))
        except lv.libvirtError as exc:
            raise call_error(exc, "prepare the storage pool " + POOL_NAME, self.uri) from None
        return DomainConfig(s, self.accel, kernel, initrd, disks, self._emulator())

    def _disk(self, pool: Any, i: int, disk: Disk, vol: Any) -> DomainDisk:
        if not disk.overlay:
            return DomainDisk(vol.path(), "raw", disk.readonly)
        name = f"{self.spec.name}-disk{i}.qcow2"
        self.overlays.append(name)
        self._note()
        overlay = storage.create_overlay(pool, name, disk.path.stat().st_size, vol)
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
        lv = bindings()
        try:
            within(self.timeouts.libvirt_call, f"libvirt: probe emulator {path}",
                   self.conn.getDomainCapabilities, path, "x86_64", "pc", "qemu", 0)
            return path
        except lv.libvirtError as exc:
            log.warning("libvirt at %s cannot use %s (%s): guests run multi-threaded TCG",
                        self.uri, path, message(exc).splitlines()[0])
            return ""

    def _create(self) -> None:
        lv = bindings()
        self._callback = self.conn.domainEventRegisterAny(
            None, lv.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, None)
        flags = lv.VIR_DOMAIN_START_PAUSED | lv.VIR_DOMAIN_START_AUTODESTROY
        log.debug("libvirt domain XML:\n%s", self.xml)
        self.dom = self._call("start the domain", self.conn.createXML, self.xml, flags,
                              evidence=self.xml)

    def _on_lifecycle(self, _conn: Any, dom: Any, event: int, detail: int, _opaque: Any) -> None:
        if dom.name() != self.spec.name:
            return
        self._events.append((event, detail))
        if event == lifecycle.EVENT_STOPPED:
            self._stopped.set()

    def _attach_console(self) -> None:
        lv = bindings()
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
        lv = bindings()
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
        self.tunnel = Tunnel(self.target, self.ports, self.run_path / "tunnel.log",
                             self.timeouts.tunnel, self.timeouts.kill)
        self.tunnel.open()
        self._note()
        self.tunnel.wait_listening()
        self.ports = dict(self.tunnel.ports)

    # state -------------------------------------------------------------------------------
    def lab_ports(self) -> dict[int, int]:
        return dict(self.ports)

    def is_running(self) -> bool:
        if self.dom is None or self._stopped.is_set() or self._state_exit is not None:
            return False
        lv = bindings()
        try:
            state, reason = within(self.timeouts.libvirt_call, "libvirt: the domain's state",
                                   self.dom.state)
        except HarnessError:
            return True   # the daemon is slow, not the guest gone
        except lv.libvirtError as exc:   # no such domain: a transient domain that ended
            log.debug("domain state: %s", exc)
            return False
        self._state_exit = lifecycle.from_state(state, reason)
        return self._state_exit is None

    def wait_exit(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.is_running():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._stopped.wait(min(0.2, left))   # the lifecycle event, or poll again
        return True

    def exit_info(self) -> MachineExit:
        """From the domain's state if it was seen ended, else its lifecycle events."""
        if self.dom is None or self.is_running():
            return StillRunning
        if self._state_exit is not None:
            return self._state_exit
        if self.conn is not None:   # a transient domain is gone a moment before its event
            self._stopped.wait(self.timeouts.libvirt_event)
        ended = lifecycle.from_events(self._events, self._destroyed_by_lab)
        if ended is not None:
            return ended
        if self._destroyed_by_lab:
            return MachineExit(lifecycle.HOST, "stopped by the lab")
        return MachineExit(lifecycle.HOST, "the domain vanished without a stop event")

    def exit_reason(self) -> str:
        return self.exit_info().detail

    def cpu_registers(self) -> str:
        """Every vCPU's registers, via libvirt's monitor passthrough (HMP)."""
        import libvirt_qemu
        return self._call("info registers -a", libvirt_qemu.qemuMonitorCommand, self.dom,
                          "info registers -a", libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP)

    def host_trouble(self) -> str:
        """A pause on a host I/O error (the domain's state and ``virDomainGetDiskErrors``), or
        the network cable pulled. The guest's network is QEMU's own (not a libvirt interface,
        see xmldefs), so libvirt knows no link state: the lab's record of ``set_link`` is it."""
        if not self.is_running():
            return ""
        lv = bindings()
        try:
            state, reason = within(self.timeouts.libvirt_call, "libvirt: the domain's state", self.dom.state)
            errors = (within(self.timeouts.libvirt_call, "libvirt: disk errors", self.dom.diskErrors)
                      if (state, reason) == (lifecycle.STATE_PAUSED, lifecycle.PAUSED_IOERROR) else None)
        except (HarnessError, lv.libvirtError) as exc:
            log.debug("domain state: %s", exc)
            return ""
        if errors is not None:
            device, err = next(iter(errors.items()), ("?", 0))
            return hosttrouble.io_paused(device, None, "", err == lifecycle.DISK_ERROR_NO_SPACE,
                                         "" if err else "libvirt reports an I/O error")
        if not self.link_up:
            return hosttrouble.link_cut("set_link off through libvirt's monitor")
        return ""

    def set_link(self, up: bool) -> None:
        import libvirt_qemu
        self._call("set_link", libvirt_qemu.qemuMonitorCommand, self.dom,
                   f"set_link {xmldefs.NETDEV_ID} {'on' if up else 'off'}",
                   libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP)
        self.link_up = up

    def host_pid(self) -> Optional[int]:
        """The domain's QEMU where it runs on this host (libvirtd's pidfile), else None."""
        if self.target.needs_tunnel:
            return None
        try:
            return int(Path(f"/run/libvirt/qemu/{self.spec.name}.pid").read_text().strip())
        except (OSError, ValueError):
            return None

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
        running = self.is_running()
        if running or self._state_exit is not None:   # the latter: ended, but still there
            lv = bindings()
            self._destroyed_by_lab = running
            try:
                within(self.timeouts.libvirt_call, "libvirt: destroy the domain", self.dom.destroy)
            except lv.libvirtError as exc:
                if code(exc) not in GONE_CODES:
                    raise
        self._stopped.wait(self.timeouts.libvirt_event)   # for exit_info(), after we disconnect

    def _stop_pump(self) -> None:
        if self._pump is not None:
            self._pump.join(timeout=self.timeouts.kill)  # EOF follows the domain's end
            if self._pump.is_alive() and self._stream is not None:
                self._stream.abort()

    def _stop_tunnel(self) -> None:
        if self.tunnel is not None:
            self.tunnel.stop()

    def _delete_overlays(self) -> None:
        if not self.overlays or self.conn is None:
            return
        storage.delete_volumes(self.conn.storagePoolLookupByName(POOL_NAME), self.overlays,
                               self.timeouts)
        self.overlays.clear()

    def _close(self) -> None:
        if self.conn is None:
            return
        if self._callback is not None:
            ignore_codes(self.conn.domainEventDeregisterAny, {ERR_INVALID_ARG}, self._callback)
            self._callback = None
        self.conn.close()
        self.conn = None
