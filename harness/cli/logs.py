"""The lab's own log lines on stderr, ``[lab HH:MM:SS] message``, at the verbosity ``-v``/``-q``
chose; apart from ``main`` so the entry point reads as parse, log, run, exit status.

Verbosity 0 (the default) shows progress (INFO: what is fetched, built, booted, run); each ``-v``
is one more, each ``-q`` one less: 1 and 2 add the debug lines, 3 and more also paramiko's
(SSH); -1 leaves warnings and errors, -2 and less errors only.
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
    root = logging.getLogger("livepatch_lab")
    root.handlers[:] = [handler]
    root.setLevel(level(verbosity))
    # SSH attempts to a booting guest fail by design; the lab reports its own errors.
    logging.getLogger("paramiko").setLevel(logging.DEBUG if verbosity > 2 else logging.CRITICAL)


def level(verbosity: int) -> int:
    """The lab's log level for a verbosity (0 the default, +1 per -v, -1 per -q)."""
    return (logging.DEBUG if verbosity > 0 else logging.INFO if verbosity == 0
            else logging.WARNING if verbosity == -1 else logging.ERROR)
