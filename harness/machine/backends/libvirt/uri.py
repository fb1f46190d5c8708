"""Where the domains run, parsed from a libvirt URI. Pure."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional
from urllib.parse import parse_qsl, urlsplit

from ....core.errors import ConfigError

_LOOPBACK = ("localhost", "::1", "[::1]")


@dataclass(frozen=True)
class Target:
    uri: str
    transport: str = ""          # "" (unix socket) | "ssh" | "tcp" | "tls" | "libssh2" | ...
    host: str = ""               # "" for this host
    user: str = ""
    port: Optional[int] = None   # the transport's port (SSH's, for qemu+ssh)
    params: dict = field(default_factory=dict)

    @property
    def needs_tunnel(self) -> bool:
        """Forwards bind on the libvirt host's loopback: reach them through SSH unless
        that host is this one (no host, or a loopback host over a non-SSH transport)."""
        if not self.host:
            return False
        if "ssh" in self.transport:
            return True
        return not (self.host in _LOOPBACK or self.host.startswith("127."))


def parse_uri(uri: str) -> Target:
    parts = urlsplit(uri)
    scheme = parts.scheme
    transport = scheme.split("+", 1)[1] if "+" in scheme else ""
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"bad port in libvirt URI {uri!r}", field="libvirt_uri") from None
    return Target(uri, transport, parts.hostname or "", parts.username or "", port,
                  dict(parse_qsl(parts.query)))
