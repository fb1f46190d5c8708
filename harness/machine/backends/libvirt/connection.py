"""Talking to libvirtd: the bindings (imported only here, and lazily), its event loop,
a deadline around every call, and connections that notice a dead host."""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from ....core.errors import DeadlineExceeded, InfraError
from ....core.settings import Timeouts
from .errors import code, connect_error

log = logging.getLogger(__name__)


def bindings() -> Any:
    """The ``libvirt`` module: libvirt-python is an optional dependency."""
    try:
        import libvirt
    except ImportError:
        raise InfraError("the libvirt backend needs the libvirt Python bindings: "
                         "pip install 'livepatch-lab[libvirt]' (or ./lab.sh install)") from None
    return libvirt


_events_lock = threading.Lock()
_events_started = False


def _event_loop(lv: Any) -> None:
    """libvirt's default event loop in a daemon thread: lifecycle events and keepalive.
    Registered once per process, before any connection is opened."""
    global _events_started
    with _events_lock:
        if _events_started:
            return
        lv.virEventRegisterDefaultImpl()
        # libvirt prints every error to stderr by default, even those the lab expects
        # (a volume not uploaded yet); the lab reports the ones that matter itself.
        lv.registerErrorHandler(lambda _ctx, _err: None, None)

        def run() -> None:
            while True:
                lv.virEventRunDefaultImpl()
        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _events_started = True


def within(seconds: float, what: str, fn: Callable, *args: Any) -> Any:
    """``fn(*args)`` under a deadline: libvirt calls have none of their own (an SSH
    login or a wedged daemon can block forever). A call that overruns is left to
    finish in its daemon thread."""
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["value"] = fn(*args)
        except BaseException as exc:  # handed to the caller below
            box["error"] = exc
    thread = threading.Thread(target=work, name=f"libvirt: {what}", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise DeadlineExceeded(what, seconds)
    if "error" in box:
        raise box["error"]
    return box.get("value")


def open_connection(uri: str, timeouts: Timeouts) -> Any:
    lv = bindings()
    _event_loop(lv)
    try:
        conn = within(timeouts.libvirt_connect, f"connect to libvirt at {uri}", lv.open, uri)
    except lv.libvirtError as exc:
        raise connect_error(exc, uri) from None
    try:
        conn.setKeepAlive(5, 3)   # a dead remote host ends our calls instead of hanging them
    except lv.libvirtError as exc:
        log.debug("libvirt keepalive: %s", exc)
    return conn


def ignore_codes(fn: Callable, codes: set, *args: Any) -> Any:
    """``fn(*args)``, or None if it fails with one of libvirt's error ``codes``."""
    lv = bindings()
    try:
        return fn(*args)
    except lv.libvirtError as exc:
        if code(exc) in codes:
            return None
        raise
