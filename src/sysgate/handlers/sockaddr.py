"""Parse ``struct sockaddr`` bytes read from a target (AF_INET, AF_INET6, AF_UNIX), and describe
a socket (domain, type, protocol) by asking the kernel about an fd we hold."""
from __future__ import annotations

import ipaddress
import os
import socket
import struct
from dataclasses import dataclass

_FAMILY = struct.Struct("=H")
_IN = struct.Struct("!H4s")        # after the family: port, address
_IN6 = struct.Struct("!HI16s")     # port, flowinfo, address (the scope id follows)
#: socketcall(2) sub-call numbers (linux/net.h)
SOCKETCALL = {"socket": 1, "bind": 2, "connect": 3, "listen": 4, "accept": 5, "getsockname": 6, "getpeername": 7,
              "socketpair": 8, "send": 9, "recv": 10, "sendto": 11, "recvfrom": 12, "shutdown": 13,
              "setsockopt": 14, "getsockopt": 15, "sendmsg": 16, "recvmsg": 17, "accept4": 18, "recvmmsg": 19,
              "sendmmsg": 20}
_AF_PACKET = 17
_SOCK_PACKET = 10
_ICMP = (socket.IPPROTO_ICMP, socket.IPPROTO_ICMPV6)


@dataclass(frozen=True)
class SocketInfo:
    """What the kernel says a socket is: ``SO_DOMAIN``, ``SO_TYPE``, ``SO_PROTOCOL``."""

    domain: int
    type: int
    protocol: int

    @classmethod
    def of(cls, fd: int) -> "SocketInfo":
        """Ask the kernel about our ``fd`` (OSError(ENOTSOCK) when it is not a socket)."""
        with socket.socket(fileno=os.dup(fd)) as sock:
            get = lambda opt: sock.getsockopt(socket.SOL_SOCKET, opt)    # noqa: E731
            return cls(get(socket.SO_DOMAIN), get(socket.SO_TYPE), get(socket.SO_PROTOCOL))

    @property
    def inet(self) -> bool:
        return self.domain in (socket.AF_INET, socket.AF_INET6)

    @property
    def raw(self) -> bool:
        """Packets carry their own headers: inet SOCK_RAW, any AF_PACKET socket, SOCK_PACKET."""
        return self.domain == _AF_PACKET or self.type == _SOCK_PACKET or (self.inet and self.type == socket.SOCK_RAW)

    @property
    def connection(self) -> bool:
        """Stream and seqpacket sockets: an address given to send opens a connection."""
        return self.type in (socket.SOCK_STREAM, socket.SOCK_SEQPACKET)

    def is_kind(self, kind: str) -> bool:
        """Is this socket of a rule's ``kind`` (see :mod:`.netrules`)?"""
        if kind == "raw":
            return self.raw
        if self.raw:
            return False
        if kind == "tcp":
            return self.inet and self.type == socket.SOCK_STREAM and self.protocol == socket.IPPROTO_TCP
        if kind == "udp":
            return self.inet and self.type == socket.SOCK_DGRAM and self.protocol == socket.IPPROTO_UDP
        if kind == "icmp":
            return self.inet and self.type == socket.SOCK_DGRAM and self.protocol in _ICMP
        return self.type == {"stream": socket.SOCK_STREAM, "dgram": socket.SOCK_DGRAM,
                             "seqpacket": socket.SOCK_SEQPACKET}.get(kind)


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
