"""libvirt's errors as the lab's own: the host's fault, naming the URI, with evidence.
Pure: libvirt's error codes (virErrorNumber) are spelled here, nothing imports libvirt."""
from __future__ import annotations

from typing import Optional

from ....core.errors import HarnessError, InfraError, PortInUse

ERR_NO_CONNECT, ERR_SYSTEM, ERR_RPC, ERR_AUTH_FAILED = 5, 38, 39, 45
ERR_AUTH_CANCELLED, ERR_ACCESS_DENIED, ERR_AUTH_UNAVAILABLE = 79, 88, 94
ERR_XML, ERR_XML_DETAIL, ERR_CONFIG_UNSUPPORTED, ERR_INVALID_ARG = 27, 35, 67, 8
ERR_NO_DOMAIN, ERR_OPERATION_INVALID, ERR_NO_STORAGE_POOL, ERR_NO_STORAGE_VOL = 42, 55, 49, 50
CONNECTION_CODES = {ERR_NO_CONNECT, ERR_SYSTEM, ERR_RPC, ERR_AUTH_FAILED, ERR_AUTH_CANCELLED,
                    ERR_ACCESS_DENIED, ERR_AUTH_UNAVAILABLE}
XML_CODES = {ERR_XML, ERR_XML_DETAIL, ERR_CONFIG_UNSUPPORTED, ERR_INVALID_ARG}
GONE_CODES = {ERR_NO_DOMAIN, ERR_OPERATION_INVALID}   # already destroyed / not running


def code(exc: BaseException) -> Optional[int]:
    get = getattr(exc, "get_error_code", None)
    return get() if get else None


def message(exc: BaseException) -> str:
    get = getattr(exc, "get_error_message", None)
    return (get() if get else None) or str(exc)


def connect_error(exc: BaseException, uri: str) -> InfraError:
    return InfraError(f"cannot connect to libvirt at {uri}: {message(exc)}\n"
                      f"Is libvirtd running there, and may this user use it? "
                      f"Try `virsh -c '{uri}' list`.")


def call_error(exc: BaseException, what: str, uri: str, evidence: str = "") -> HarnessError:
    """A failed libvirt call as the lab's error: the host's fault, with the evidence."""
    msg, number = message(exc), code(exc)
    if "Could not set up host forwarding rule" in msg:
        return PortInUse(f"{what} on {uri}: QEMU could not bind its loopback forwards: {msg}")
    if number in CONNECTION_CODES and "connection" in msg.lower():
        return connect_error(exc, uri)
    text = f"{what} on {uri}: {msg}"
    if number in XML_CODES:
        text = f"{what} on {uri}: libvirt refused the definition: {msg}"
    if evidence:
        text += "\n--- evidence ---\n" + evidence
    return InfraError(text)
