"""Host commands with a deadline, whose whole process group dies with them."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
from typing import Mapping, Optional, Sequence, Union

from .errors import HostCommandError, InfraError

log = logging.getLogger(__name__)
PathLike = Union[str, os.PathLike]


def _kill_group(proc: subprocess.Popen) -> str:
    """Kill the command's process group; return what it printed so far."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        out, _ = proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:  # a grandchild left the group and holds the pipe
        proc.kill()
        out = b""
    return (out or b"").decode(errors="replace")


def run(cmd: Sequence[PathLike], *, what: str, timeout: float,
        cwd: Optional[PathLike] = None, env: Optional[Mapping[str, str]] = None,
        input: Optional[bytes] = None) -> str:
    """Run ``cmd``; return its combined output, or raise ``HostCommandError``.

    The command runs in its own process group so that a timeout or Ctrl-C
    takes its children (apt's methods, mmdebstrap's helpers) down with it.
    """
    argv = [os.fspath(c) for c in cmd]
    log.debug("host: %s", " ".join(argv))
    try:
        proc = subprocess.Popen(argv, cwd=cwd, env=None if env is None else dict(env),
                                stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
    except FileNotFoundError:
        raise InfraError(f"{what}: {argv[0]} is not installed (run `livepatch-lab doctor`)") from None
    try:
        out, _ = proc.communicate(input=input, timeout=timeout)
    except subprocess.TimeoutExpired:
        partial = _kill_group(proc)
        raise HostCommandError(what, argv, None,
                               f"{partial}\n(killed after {timeout:g}s)".lstrip()) from None
    except BaseException:
        _kill_group(proc)
        raise
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        raise HostCommandError(what, argv, proc.returncode, text)
    return text
