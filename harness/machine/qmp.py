"""A small QMP client: one command at a time, every read under a deadline.

The process layer (backends/qemu/machine.py) uses this; this module knows nothing of
processes. Asynchronous events that arrive between replies are kept in
``events`` so a caller can tell a guest poweroff from a reset.
"""
from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any, Optional

from ..core.errors import DeadlineExceeded, InfraError


class QMPError(InfraError):
    """QEMU answered a QMP command with an error, or the socket broke."""


class QMPClient:
    def __init__(self, path: Path):
        self.path = path
        self.events: list[dict[str, Any]] = []
        self._sock: Optional[socket.socket] = None
        self._buf = b""
        self._id = 0

    def connect(self, timeout: float) -> None:
        """Connect (QEMU may still be creating the socket) and negotiate capabilities."""
        deadline = time.monotonic() + timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(max(0.05, deadline - time.monotonic()))
                sock.connect(str(self.path))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
                if time.monotonic() >= deadline:
                    raise DeadlineExceeded(f"QMP socket {self.path}", timeout) from None
                time.sleep(0.02)
        self._sock = sock
        self._read_message(deadline, timeout=timeout)  # greeting
        self.execute("qmp_capabilities", timeout=max(0.1, deadline - time.monotonic()))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def pending_events(self) -> list[dict[str, Any]]:
        """Collect, without waiting, the events QEMU already sent (e.g. SHUTDOWN just
        before it exited, when no command was running to read it); return ``events``."""
        if self._sock is not None:
            old = self._sock.gettimeout()
            try:
                self._sock.settimeout(0)
                while True:
                    chunk = self._sock.recv(65536)
                    if not chunk:
                        break
                    self._buf += chunk
            except OSError:  # nothing more to read now (BlockingIOError), or the socket broke
                pass
            finally:
                self._sock.settimeout(old)
            while b"\n" in self._buf:
                line, self._buf = self._buf.split(b"\n", 1)
                try:
                    msg = json.loads(line) if line.strip() else {}
                except ValueError:
                    continue
                if "event" in msg:
                    self.events.append(msg)
                # anything else is a late reply to a command that already gave up
        return self.events

    def execute(self, command: str, arguments: Optional[dict] = None, *, timeout: float) -> Any:
        if self._sock is None:
            raise QMPError(f"QMP {command}: not connected")
        self._id += 1
        msg = {"execute": command, "id": self._id}
        if arguments:
            msg["arguments"] = arguments
        deadline = time.monotonic() + timeout
        try:
            self._sock.sendall(json.dumps(msg).encode() + b"\n")
        except OSError as exc:
            raise QMPError(f"QMP {command}: {exc}") from exc
        while True:
            reply = self._read_message(deadline, what=f"QMP {command}", timeout=timeout)
            if reply.get("id") != self._id:
                continue
            if "error" in reply:
                err = reply["error"]
                raise QMPError(f"QMP {command}: {err.get('class')}: {err.get('desc')}")
            return reply.get("return")

    def _read_message(self, deadline: float, what: str = "QMP greeting", *, timeout: float) -> dict:
        """The next reply (events are kept aside); ``timeout`` is the whole wait, for the error."""
        assert self._sock is not None
        while True:
            if b"\n" in self._buf:
                line, self._buf = self._buf.split(b"\n", 1)
                if not line.strip():
                    continue
                msg = json.loads(line)
                if "event" in msg:
                    self.events.append(msg)
                    continue
                return msg
            left = deadline - time.monotonic()
            if left <= 0:
                raise DeadlineExceeded(what, timeout)
            self._sock.settimeout(left)
            try:
                chunk = self._sock.recv(65536)
            except socket.timeout:
                raise DeadlineExceeded(what, timeout) from None
            except OSError as exc:
                raise QMPError(f"{what}: {exc}") from exc
            if not chunk:
                raise QMPError(f"{what}: QEMU closed the QMP socket")
            self._buf += chunk
