"""The command channel into a guest: SSH with a pinned host key and hard deadlines.

paramiko's own timeouts cover channel set-up only, so ``run`` enforces its
deadline itself, and it drains stdout and stderr while the command runs (a
command that prints megabytes must not deadlock on a full window).
"""
from __future__ import annotations

import base64
import logging
import select
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Protocol, Union

import paramiko

from ..core.errors import GUEST, DeadlineExceeded, GuestCommandError, GuestConnectionError

log = logging.getLogger(__name__)

_KEY_TYPES = {"ecdsa-sha2-nistp256": paramiko.ECDSAKey, "ssh-ed25519": paramiko.Ed25519Key,
              "ssh-rsa": paramiko.RSAKey}


def parse_public_key(line: str) -> paramiko.PKey:
    """An OpenSSH public key line (``type base64 [comment]``) as a paramiko key."""
    parts = line.split()
    if len(parts) < 2 or parts[0] not in _KEY_TYPES:
        raise ValueError(f"not an OpenSSH public key line: {line[:60]!r}")
    return _KEY_TYPES[parts[0]](data=base64.b64decode(parts[1]))


def load_private_key(path: Path) -> paramiko.PKey:
    for kind in (paramiko.ECDSAKey, paramiko.Ed25519Key, paramiko.RSAKey):
        try:
            return kind.from_private_key_file(str(path))
        except paramiko.SSHException:
            continue
    raise GuestConnectionError(f"cannot read the lab's SSH key {path}")


@dataclass(frozen=True)
class Result:
    command: str
    rc: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.rc == 0


class Shell(Protocol):
    """Somewhere commands run: a guest's channel, the guest, or a test's stand-in."""
    def run(self, command: str, timeout: Optional[float] = None, *, check: bool = False,
            stdin: Optional[bytes] = None) -> Result: ...


class GuestChannel:
    def __init__(self, host: str, port: int, *, user: str, client_key: Path, host_key: str,
                 command_timeout: float):
        self.host, self.port, self.user = host, port, user
        self._pkey = load_private_key(client_key)
        self._host_key = parse_public_key(host_key)
        self.command_timeout = command_timeout
        self._transport: Optional[paramiko.Transport] = None
        self.lost: Optional[str] = None   # why the guest was given up on (see mark_lost)

    # connection -----------------------------------------------------------
    def connect(self, timeout: float) -> None:
        """One connection attempt, all of it (TCP, banner, kex, auth) within ``timeout``."""
        self.close()
        deadline = time.monotonic() + timeout
        try:
            sock = socket.create_connection((self.host, self.port), timeout=timeout)
        except OSError as exc:
            raise GuestConnectionError(f"ssh {self.host}:{self.port}: {exc}") from exc
        # Small request/response exchanges: without NODELAY each command waits on delayed ACKs.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport = paramiko.Transport(sock)
        transport.banner_timeout = transport.handshake_timeout = timeout
        transport.auth_timeout = timeout
        try:
            transport.start_client(timeout=timeout)
            got = transport.get_remote_server_key()
            if got != self._host_key:
                raise GuestConnectionError(
                    f"ssh {self.host}:{self.port}: host key mismatch: guest offered "
                    f"{got.get_name()} {got.get_base64()[:24]}..., pinned "
                    f"{self._host_key.get_name()} {self._host_key.get_base64()[:24]}...")
            if time.monotonic() > deadline:
                raise GuestConnectionError(f"ssh {self.host}:{self.port}: handshake too slow")
            transport.auth_publickey(self.user, self._pkey)
        except GuestConnectionError:
            transport.close()
            raise
        except (paramiko.SSHException, EOFError, OSError) as exc:
            transport.close()
            raise GuestConnectionError(f"ssh {self.host}:{self.port}: {exc or type(exc).__name__}") from exc
        transport.set_keepalive(5)
        self._transport = transport

    @property
    def connected(self) -> bool:
        return self._transport is not None and self._transport.is_active()

    def close(self) -> None:
        transport, self._transport = self._transport, None   # once, whichever thread gets here
        if transport is not None:
            transport.close()

    def mark_lost(self, reason: str) -> None:
        """Give up on the guest: close the connection, so a command waiting on it
        (from any thread) fails now instead of at its own deadline."""
        self.lost = self.lost or reason
        self.close()

    def _gone(self, command: str) -> GuestConnectionError:
        why = f": {self.lost}" if self.lost else ""
        return GuestConnectionError(f"ssh: connection lost during {command!r}{why}")

    def open_stream(self, command: str, timeout: float) -> paramiko.Channel:
        """A long-lived command whose stdin/stdout the caller drives (the heartbeat)."""
        transport = self._transport
        if transport is None or not transport.is_active():
            raise self._gone(command)
        try:
            chan = transport.open_session(timeout=timeout)
            chan.exec_command(command)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise GuestConnectionError(f"ssh: {command!r}: {str(exc) or type(exc).__name__}") from exc
        return chan

    # commands --------------------------------------------------------------
    def run(self, command: str, timeout: Optional[float] = None, *, check: bool = False,
            stdin: Union[bytes, str, None] = None) -> Result:
        """Run ``command`` in the guest's shell; every byte of output, within ``timeout``."""
        timeout = self.command_timeout if timeout is None else timeout
        transport = self._transport   # mark_lost() may clear it from another thread
        if transport is None or not transport.is_active():
            if self.lost:
                raise self._gone(command)
            raise GuestConnectionError(f"not connected to the guest (running {command!r})")
        start = time.monotonic()
        deadline = start + timeout
        try:
            chan = transport.open_session(timeout=timeout)
            chan.settimeout(0.0)
            chan.exec_command(command)
            data = b"" if stdin is None else stdin.encode() if isinstance(stdin, str) else stdin
            # stdin is fed from the drain loop: a command that answers while it reads
            # (cat) would otherwise fill both windows and deadlock
            out, err = self._drain(chan, transport, deadline, command, timeout, data)
            rc = chan.recv_exit_status()  # output is fully read: cannot block
        except (paramiko.SSHException, EOFError, OSError) as exc:
            if self.lost:
                raise self._gone(command) from exc
            raise GuestConnectionError(f"ssh: {command!r}: {str(exc) or type(exc).__name__}") from exc
        result = Result(command, rc, out.decode(errors="replace"), err.decode(errors="replace"),
                        time.monotonic() - start)
        if check and rc != 0:
            raise GuestCommandError(command, rc, result.stdout, result.stderr)
        return result

    def _drain(self, chan: paramiko.Channel, transport: paramiko.Transport, deadline: float,
               command: str, timeout: float, stdin: bytes = b"") -> tuple[bytes, bytes]:
        out, err = bytearray(), bytearray()
        pending = memoryview(stdin)
        if not pending:
            chan.shutdown_write()
        try:
            while True:
                while pending and not chan.closed and chan.send_ready():
                    try:
                        pending = pending[chan.send(pending[:1 << 15]):]  # type: ignore[arg-type]  # paramiko's stub says bytes; send takes any bytes-like
                    except socket.timeout:  # the window closed again meanwhile
                        break
                    except OSError:
                        if not chan.closed:
                            raise
                        # the command ended without reading the rest (closed between the
                        # check above and the send): nothing more to feed, its output stands
                        pending = pending[:0]
                        break
                    if not pending:
                        chan.shutdown_write()
                while chan.recv_ready():
                    out += chan.recv(1 << 16)
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(1 << 16)
                if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                    if chan.exit_status == -1 and not transport.is_active():
                        raise self._gone(command)   # closed under us, no exit status: lost
                    if chan.eof_received or chan.closed:
                        return bytes(out), bytes(err)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DeadlineExceeded(f"guest command {command!r}", timeout,
                                           (bytes(out) + bytes(err)).decode(errors="replace"), fault=GUEST)
                if not transport.is_active():
                    raise self._gone(command)
                # select() sees incoming data only, not the send window opening
                select.select([chan], [], [], min(left, 0.01 if pending else 0.5))
        finally:
            if not chan.closed and chan.exit_status_ready() is False:
                chan.close()

    def upload(self, local: Path, remote: str, mode: int = 0o644,
               timeout: Optional[float] = None) -> None:
        """Copy a host file into the guest (through ``cat``, so no SFTP server is needed)."""
        data = Path(local).read_bytes()
        self.run(f"cat > {_quote(remote)} && chmod {mode:o} {_quote(remote)}", timeout,
                 check=True, stdin=data)


def _quote(path: str) -> str:
    return "'" + path.replace("'", "'\\''") + "'"
