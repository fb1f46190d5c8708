"""The lab's own log lines on stderr, ``[lab HH:MM:SS] message``, at the verbosity ``-v``/``-q``
chose; apart from ``main`` so the entry point reads as parse, log, run, exit status.
"""
from __future__ import annotations

import logging
import sys
import time


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        level = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        return f"[lab {time.strftime('%H:%M:%S')}] {level}{record.getMessage()}"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (pytest swaps it per test)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def setup_logging(verbosity: int) -> None:
    handler = _StderrHandler()
    handler.setFormatter(_Formatter())
    root = logging.getLogger("harness")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbosity > 1 else logging.INFO if verbosity >= 0 else logging.WARNING)
    # SSH attempts to a booting guest fail by design; the lab reports its own errors.
    logging.getLogger("paramiko").setLevel(logging.DEBUG if verbosity > 2 else logging.CRITICAL)
