"""Follow the guest's serial console as QEMU writes it.

QEMU writes the console straight to a file (``-chardev file``), so the guest
can never block on an undrained console, even if this process stalls. A
thread tails that file, timestamps each line on the host clock and runs the
``kmsg`` scanner over it, so a panic is seen the moment it is printed.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from .kmsg import Finding, Scanner


@dataclass(frozen=True)
class Line:
    t: float      # host time.monotonic() when read
    text: str


class ConsoleFollower:
    POLL = 0.05

    def __init__(self, path: Path):
        self.path = path
        self.lines: list[Line] = []
        self.findings: list[Finding] = []
        self.first_output: Optional[float] = None
        self._scanner = Scanner()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"console:{path.name}", daemon=True)
        self._partial = b""

    def start(self) -> "ConsoleFollower":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)

    def _run(self) -> None:
        fh = None
        try:
            while not self._stop.is_set():
                if fh is None:
                    try:
                        fh = open(self.path, "rb")
                    except FileNotFoundError:
                        self._stop.wait(self.POLL)
                        continue
                chunk = fh.read(65536)
                if chunk:
                    self._consume(chunk)
                else:
                    self._stop.wait(self.POLL)
            if fh is None:  # the file may have appeared since the last poll
                try:
                    fh = open(self.path, "rb")
                except FileNotFoundError:
                    pass
            if fh is not None:  # final drain after stop
                self._consume(fh.read(), final=True)
        finally:
            if fh is not None:
                fh.close()

    def _consume(self, chunk: bytes, final: bool = False) -> None:
        now = time.monotonic()
        data = self._partial + chunk
        parts = data.split(b"\n")
        rest = parts.pop()  # after the last newline: a line still being printed
        if final and rest:
            parts.append(rest)
            rest = b""
        with self._cond:
            self._partial = rest
            if self.first_output is None and data:
                self.first_output = now
            for raw in parts:
                text = raw.decode(errors="replace").rstrip("\r")
                self.lines.append(Line(now, text))
                finding = self._scanner.feed(text)
                if finding:
                    self.findings.append(finding)
            self._cond.notify_all()

    # queries -------------------------------------------------------------
    def fatal(self) -> Optional[Finding]:
        with self._cond:
            return next((f for f in self.findings if f.fatal), None)

    def wait_for(self, predicate: Callable[["ConsoleFollower"], bool], timeout: float) -> bool:
        """Block until ``predicate(self)`` holds or ``timeout`` passes."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout=timeout)

    def contains(self, needle: str) -> bool:
        return any(needle in line.text for line in self.lines)

    def tail(self, n: int = 40) -> str:
        with self._cond:
            text = [line.text for line in self.lines[-n:]]
            if self._partial:
                text.append(self._partial.decode(errors="replace"))
        return "\n".join(text)
