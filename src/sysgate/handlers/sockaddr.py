"""Parse ``struct sockaddr`` bytes read from a target (AF_INET, AF_INET6, AF_UNIX)."""
from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass

_FAMILY = struct.Struct("=H")
_IN = struct.Struct("!H4s")        # after the family: port, address
_IN6 = struct.Struct("!HI16s")     # port, flowinfo, address (the scope id follows)


@dataclass(frozen=True)
class SockAddr:
    """A decoded socket address. ``address`` is an ip_address, a unix path (bytes; a leading
    NUL for the abstract namespace) or None (unnamed / unknown family)."""

    family: int
    address: object = None
    port: int | None = None

    @property
    def family_name(self) -> str:
        try:
            return socket.AddressFamily(self.family).name
        except ValueError:
            return str(self.family)

    @property
    def ip(self):
        """The IP address, with IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) as IPv4."""
        addr = self.address
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            return addr.ipv4_mapped
        return addr

    def __str__(self) -> str:
        if self.family == socket.AF_UNIX:
            if not self.address:
                return "{AF_UNIX}"
            text = self.address.decode("utf-8", "backslashreplace")
            return "{AF_UNIX, @%s}" % text[1:] if text.startswith("\0") else "{AF_UNIX, %s}" % text
        if self.family == socket.AF_INET:
            return f"{{AF_INET, {self.address}:{self.port}}}"
        if self.family == socket.AF_INET6:
            return f"{{AF_INET6, [{self.address}]:{self.port}}}"
        return f"{{{self.family_name}}}"


def parse(raw: bytes) -> SockAddr:
    """Decode ``raw`` (the bytes the target passed with its length). ValueError when too short."""
    if len(raw) < 2:
        raise ValueError("sockaddr shorter than its family field")
    family = _FAMILY.unpack_from(raw)[0]
    if family == socket.AF_INET:
        if len(raw) < 2 + _IN.size:
            raise ValueError("AF_INET sockaddr too short")
        port, addr = _IN.unpack_from(raw, 2)
        return SockAddr(family, ipaddress.IPv4Address(addr), port)
    if family == socket.AF_INET6:
        if len(raw) < 2 + _IN6.size:
            raise ValueError("AF_INET6 sockaddr too short")
        port, _, addr = _IN6.unpack_from(raw, 2)
        return SockAddr(family, ipaddress.IPv6Address(addr), port)
    if family == socket.AF_UNIX:
        path = raw[2:]
        if path[:1] != b"\0":
            path = path.split(b"\0", 1)[0]
        return SockAddr(family, path or None)
    return SockAddr(family)
