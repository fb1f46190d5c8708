"""A 'guest' that is this host: commands run through ``bash -c`` (as the guest's sshd runs
root's commands), guest ports are host ports. The workload's real guest-side scripts run on it."""
from __future__ import annotations

import subprocess
import time

from livepatch_lab.core.errors import GuestCommandError
from livepatch_lab.core.settings import Timeouts
from livepatch_lab.machine.channel import Result


class LocalGuest:
    def __init__(self, timeouts: Timeouts):
        self.timeouts = timeouts

    def run(self, command, timeout=None, *, check=False, stdin=None):
        timeout = self.timeouts.command if timeout is None else timeout
        data = stdin.encode() if isinstance(stdin, str) else stdin
        t = time.monotonic()
        p = subprocess.run(["bash", "-c", command], input=data, capture_output=True, timeout=timeout)
        res = Result(command, p.returncode, p.stdout.decode(errors="replace"),
                     p.stderr.decode(errors="replace"), time.monotonic() - t)
        if check and res.rc:
            raise GuestCommandError(command, res.rc, res.stdout, res.stderr)
        return res

    def host_port(self, port):
        return port
