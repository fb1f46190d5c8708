"""A remote libvirt host's guest forwards, brought to the lab's own loopback by an
``ssh -N -L`` child that dies with the lab."""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Optional, Sequence

from ....core.errors import DeadlineExceeded, InfraError
from ....core.net import free_port
from ..child import die_with_parent
from .uri import Target

log = logging.getLogger(__name__)


def tunnel_command(target: Target, pairs: Sequence[tuple[int, int]]) -> list[str]:
    """``ssh -N`` forwarding each (lab port, remote port) pair, loopback to loopback,
    with the URI's own SSH settings (command, port, user, keyfile, no_verify). The host key
    is checked against known_hosts as ssh's own configuration says (BatchMode: an unknown
    host fails instead of being asked about), unless the URI itself says ``no_verify=1``, as
    libvirt does. Pure."""
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


class Tunnel:
    """One ``ssh -N -L`` child for all of a guest's forwards."""

    def __init__(self, target: Target, remote_ports: dict[int, int], log_path: Path,
                 listen_timeout: float, kill_timeout: float):
        self.target, self.log_path = target, log_path
        self.listen_timeout, self.kill_timeout = listen_timeout, kill_timeout
        self.pairs = [(free_port(), remote) for remote in remote_ports.values()]
        self.ports = {g: local for g, (local, _) in zip(remote_ports, self.pairs)}  # guest -> lab
        self.command = tunnel_command(target, self.pairs)
        self.proc: Optional[subprocess.Popen] = None
        if target.params.get("no_verify") == "1":
            log.warning("libvirt URI %s has no_verify=1: the SSH host key of %s is not checked, by "
                        "libvirt nor by the lab's tunnel to it", target.uri, target.host)

    def open(self) -> None:
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         preexec_fn=die_with_parent)

    def wait_listening(self) -> None:
        deadline = time.monotonic() + self.listen_timeout
        for local, _ in self.pairs:
            self._wait_port(local, deadline)
        log.info("libvirt: guest ports %s reached through an SSH tunnel to %s",
                 ", ".join(map(str, self.ports)), self.target.host)

    def _output(self) -> str:
        return self.log_path.read_text(errors="replace").strip()

    def _wait_port(self, port: int, deadline: float) -> None:
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise InfraError(f"the SSH tunnel to {self.target.host} exited with status "
                                 f"{self.proc.returncode}: {' '.join(self.command)}\n{self._output()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return
            except OSError:
                pass
            if time.monotonic() >= deadline:
                raise DeadlineExceeded(f"SSH tunnel to {self.target.host} listening on 127.0.0.1:{port}",
                                       self.listen_timeout, self._output())
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM its process group, then SIGKILL, each with a deadline."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout=self.kill_timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=self.kill_timeout)
