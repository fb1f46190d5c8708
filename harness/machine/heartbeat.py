"""Notice a guest that stopped answering, whatever the runner is waiting for.

A frozen guest says nothing: no console line, no SSH error, just silence, and
each command would wait out its own (long, TCG-scaled) deadline. The heartbeat
keeps one shell in the guest echoing what it is sent (shell builtins only, so
a beat costs no fork) and sends a beat every ``INTERVAL`` seconds. A beat not
echoed within ``timeout`` gives the guest up: ``GuestChannel.mark_lost`` closes
the connection, so the command in flight fails at once with the reason.
"""
from __future__ import annotations

import logging
import select
import threading
import time
from typing import Any, Callable, Optional

from ..core.errors import HarnessError

log = logging.getLogger(__name__)

INTERVAL = 1.0   # seconds between beats; not a deadline (that is Timeouts.heartbeat)
_ECHO = 'while read -r beat; do echo "$beat"; done'


class Heartbeat:
    def __init__(self, channel, timeout: float, *, interval: float = INTERVAL,
                 on_lost: Optional[Callable[[str], None]] = None):
        self.channel, self.timeout, self.interval = channel, timeout, interval
        self.on_lost = on_lost
        self.lost: Optional[str] = None
        self.beats = 0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._chan: Any = None   # the echo shell's channel once entered (paramiko's, or a test's stand-in)

    def __enter__(self) -> "Heartbeat":
        self._chan = self.channel.open_stream(_ECHO, self.timeout)
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.interval + 1.0)
        try:
            self._chan.close()
        except Exception:  # the transport may be gone already
            pass

    def _run(self) -> None:
        buf = b""
        while not self._stop.wait(self.interval):
            self.beats += 1
            token = f"{self.beats}\n".encode()
            sent = time.monotonic()
            try:
                self._chan.sendall(token)
            except Exception as exc:  # noqa: BLE001 - any failure to send is a lost guest
                return self._give_up(f"heartbeat could not be sent ({exc or type(exc).__name__})")
            while token not in buf:
                left = sent + self.timeout - time.monotonic()
                if self._stop.is_set():
                    return
                if left <= 0:
                    return self._give_up(f"the guest did not answer a heartbeat for {self.timeout:.0f} s")
                select.select([self._chan], [], [], min(left, 0.5))
                if self._chan.recv_ready():
                    buf = (buf + self._chan.recv(4096))[-4096:]
                elif self._chan.closed or self._chan.eof_received:
                    if not self._stop.is_set():
                        return self._give_up("the heartbeat shell in the guest ended")
                    return
            buf = b""

    def _give_up(self, reason: str) -> None:
        self.lost = reason
        log.warning("guest lost: %s", reason)
        try:
            if self.on_lost is not None:
                self.on_lost(reason)
        except HarnessError as exc:
            log.debug("on_lost: %s", exc)
        self.channel.mark_lost(reason)
