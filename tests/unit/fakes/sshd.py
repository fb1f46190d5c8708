"""An in-process SSH server (paramiko) that runs exec requests on this host.

Stands in for the guest's sshd: a generated ECDSA host key, public-key auth
with one generated client key, and ``exec`` requests run through the host's
shell in a thread, streaming stdout and stderr back while the command runs
and sending its exit status. A command whose channel the client closes is
killed (with its process group), as sshd does. Commands named in ``builtins``
are answered by their handler instead (a stand-in guest's ``poweroff`` must
never reach this host's shell).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
from pathlib import Path
from typing import Callable

import paramiko


def openssh_line(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.get_base64()} test"


class _Server(paramiko.ServerInterface):
    def __init__(self, owner: "FakeSSHServer"):
        self.owner = owner

    def get_allowed_auths(self, username: str) -> str:
        self.owner.auth_attempts.append(("query", username))
        return "publickey"

    def check_auth_none(self, username: str) -> int:
        self.owner.auth_attempts.append(("none", username))
        return paramiko.AUTH_FAILED

    def check_auth_password(self, username: str, password: str) -> int:
        self.owner.auth_attempts.append(("password", username))
        return paramiko.AUTH_FAILED

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        self.owner.auth_attempts.append(("publickey", username))
        if username == self.owner.user and key == self.owner.client_key:
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        cmd = command.decode()
        self.owner.commands.append(cmd)
        target = self.owner._builtin if cmd in self.owner.builtins else self.owner._exec
        threading.Thread(target=target, args=(channel, cmd), daemon=True).start()
        return True


class FakeSSHServer:
    def __init__(self, user: str = "root"):
        self.user = user
        self.host_key = paramiko.ECDSAKey.generate()
        self.client_key = paramiko.ECDSAKey.generate()
        self.auth_attempts: list[tuple[str, str]] = []
        self.commands: list[str] = []
        self.killed: list[str] = []          # commands killed because their channel closed
        self.builtins: dict[str, Callable[[], int]] = {}   # command -> handler returning its status
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(8)
        self.port = self._listener.getsockname()[1]
        self._transports: list[paramiko.Transport] = []
        self._procs: list[subprocess.Popen] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def host_key_line(self) -> str:
        return openssh_line(self.host_key)

    def write_client_key(self, path: Path) -> Path:
        self.client_key.write_private_key_file(str(path))
        return path

    def start(self) -> "FakeSSHServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)   # wakes the accept() below
        except OSError:
            pass
        self._listener.close()
        for t in self._transports:
            t.close()
        for proc in self._procs:
            if proc.poll() is None:
                _kill_group(proc)
        self._thread.join(timeout=2)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)   # no 40 ms Nagle stalls
            transport = paramiko.Transport(sock)
            transport.add_server_key(self.host_key)
            self._transports.append(transport)
            try:
                transport.start_server(server=_Server(self))
            except (paramiko.SSHException, EOFError, OSError):
                transport.close()

    def _builtin(self, chan: paramiko.Channel, cmd: str) -> None:
        rc = self.builtins[cmd]()
        try:
            chan.send_exit_status(rc)
            chan.shutdown_write()
            chan.close()
        except (OSError, EOFError, paramiko.SSHException):
            pass

    def _exec(self, chan: paramiko.Channel, cmd: str) -> None:
        proc = subprocess.Popen(["/bin/sh", "-c", cmd], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
        self._procs.append(proc)

        def pump_out(stream, send) -> None:
            try:
                while True:
                    data = os.read(stream.fileno(), 65536)
                    if not data:
                        return
                    send(data)
            except (OSError, EOFError, paramiko.SSHException):
                return

        def pump_in() -> None:
            try:
                while True:
                    data = chan.recv(65536)
                    if not data:
                        break
                    proc.stdin.write(data)
                    proc.stdin.flush()
            except (OSError, EOFError, ValueError, paramiko.SSHException):
                pass
            finally:
                try:
                    proc.stdin.close()
                except OSError:
                    pass

        threads = [threading.Thread(target=pump_out, args=(proc.stdout, chan.sendall), daemon=True),
                   threading.Thread(target=pump_out, args=(proc.stderr, chan.sendall_stderr), daemon=True),
                   threading.Thread(target=pump_in, daemon=True)]
        for t in threads:
            t.start()
        while proc.poll() is None:
            if chan.closed or self._stop.is_set():
                self.killed.append(cmd)
                _kill_group(proc)
                break
            try:
                proc.wait(timeout=0.01)
            except subprocess.TimeoutExpired:
                pass
        for t in threads[:2]:
            t.join(timeout=5)
        if not chan.closed:
            try:
                # killed by a signal: a shell's 128+N (the protocol's status is unsigned)
                rc = proc.returncode
                chan.send_exit_status(rc if rc >= 0 else 128 - rc)
                chan.shutdown_write()
                chan.close()
            except (OSError, EOFError, paramiko.SSHException):
                pass


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def closed_port() -> tuple[socket.socket, int]:
    """A port bound on 127.0.0.1 that nobody listens on (connections are refused).

    Keep the returned socket open while using the port, so no one else takes it.
    """
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    return s, s.getsockname()[1]


def silent_listener() -> tuple[socket.socket, int]:
    """A port that accepts TCP connections but never says a word (no SSH banner)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    return s, s.getsockname()[1]


__all__ = ["FakeSSHServer", "closed_port", "openssh_line", "silent_listener"]
