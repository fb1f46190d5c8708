"""A QMP server on a unix socket, in a thread, scripted by the test.

``handler(command, arguments)`` returns the list of JSON messages to send for
one command (replies and events, in order; a number is a pause in seconds,
which stopping the server cuts short; ``"close"`` hangs up), or ``None`` to
stay silent. The default handler answers ``qmp_capabilities`` and echoes
``query-*`` commands. ``sent`` holds each message once it is on the socket.
"""
from __future__ import annotations

import json
import socket
import threading
from pathlib import Path
from typing import Any, Callable, Optional

GREETING = {"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""},
                    "capabilities": ["oob"]}}

Handler = Callable[[str, dict, Any], Optional[list]]


def ok(msg_id: Any, value: Any = None) -> dict:
    return {"return": {} if value is None else value, "id": msg_id}


def default_handler(command: str, arguments: dict, msg_id: Any) -> Optional[list]:
    if command == "qmp_capabilities":
        return [ok(msg_id)]
    if command == "query-status":
        return [ok(msg_id, {"status": "running", "running": True})]
    return [{"error": {"class": "CommandNotFound", "desc": f"The command {command} has not been found"},
             "id": msg_id}]


class FakeQMPServer:
    def __init__(self, path: Path, handler: Handler = default_handler, *, greeting: bool = True,
                 delay: float = 0.0, split_writes: bool = False):
        self.path, self.handler, self.greeting = path, handler, greeting
        self.delay, self.split_writes = delay, split_writes
        self.received: list[dict] = []
        self.sent: list[dict] = []
        self._listener: Optional[socket.socket] = None
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def start(self) -> "FakeQMPServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for conn in self._conns:
            _close(conn)
        if self._listener is not None:
            _close(self._listener)
        self._thread.join(timeout=2)

    def __enter__(self) -> "FakeQMPServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def send(self, conn: socket.socket, msg: dict) -> None:
        data = json.dumps(msg).encode() + b"\r\n"
        if self.split_writes:   # one byte at a time: the client must reassemble lines
            for i in range(len(data)):
                conn.sendall(data[i:i + 1])
                self._stop.wait(0.0005)
        else:
            conn.sendall(data)
        self.sent.append(msg)

    def _serve(self) -> None:
        if self.delay:
            self._stop.wait(self.delay)   # QEMU creates the socket a little after it starts
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.path))
        listener.listen(1)
        listener.settimeout(0.05)
        self._listener = listener
        while not self._stop.is_set():
            try:
                conn, _ = listener.accept()
            except (socket.timeout, OSError):
                continue
            self._conns.append(conn)
            try:
                self._talk(conn)
            except OSError:
                pass

    def _talk(self, conn: socket.socket) -> None:
        if self.greeting:
            self.send(conn, GREETING)
        buf = b""
        conn.settimeout(0.05)
        while not self._stop.is_set():
            try:
                chunk = conn.recv(4096)
            except socket.timeout:
                continue
            if not chunk:
                return
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                msg = json.loads(line)
                self.received.append(msg)
                for out in self.handler(msg["execute"], msg.get("arguments", {}), msg.get("id")) or ():
                    if out == "close":
                        conn.close()
                        return
                    if isinstance(out, (int, float)):   # a pause, in seconds
                        self._stop.wait(out)
                        continue
                    self.send(conn, out)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
