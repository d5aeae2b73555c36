"""The ``net`` handler's rule language: which operation, on which kind of socket, to which address.

A rule is ``allow|deny OPS [KINDS] ADDRESS``:

* OPS: ``connect``, ``bind``, ``send`` (comma-separated) or ``any``. What each covers is
  decided by what the call *does* (see :mod:`.net`): a ``sendto`` that opens a TCP
  connection is a ``connect``.
* KINDS (optional, comma-separated) -- the socket as ``getsockopt(SO_DOMAIN/SO_TYPE/SO_PROTOCOL)``
  reports it: ``tcp`` (inet stream, IPPROTO_TCP), ``udp`` (inet datagram, IPPROTO_UDP),
  ``icmp`` (ping sockets), ``stream``, ``dgram``, ``seqpacket`` (any protocol or family of that
  type) and ``raw``. **Without KINDS a rule covers every socket except raw ones.** ``raw``
  means ``SOCK_RAW`` inet sockets and every ``AF_PACKET`` socket: their payload carries its own
  headers (``IP_HDRINCL``, link-layer frames), so the address checked at connect/send does not
  bound where packets go. They are refused unless a rule naming ``raw`` allows them -- the
  ``default`` never does.
* ADDRESS: ``CIDR[:PORTS]``, ``[IPv6-CIDR]:PORTS``, ``*:PORTS``, ``unix:GLOB`` (``unix:@name*``
  for abstract names), or ``*`` (any address of any family, e.g. netlink).

Unix rules are path globs over the *resolved* socket file as the target sees it, and, like
:mod:`.fs` rules, wildcard-free ``deny`` rules also deny the socket's inode: a hard link
to a denied socket under an allowed name is still denied (:meth:`NetRules.denied_inodes`).
"""
from __future__ import annotations

import ipaddress
import os
import socket
import stat as _stat
from dataclasses import dataclass

from ..errors import SysgateError
from . import sockaddr
from .base import check_default
from .fs import glob_regex

OPS = ("connect", "bind", "send")
KINDS = ("tcp", "udp", "icmp", "stream", "dgram", "seqpacket", "raw")
_GLOB_CHARS = "*?["


@dataclass(frozen=True)
class NetRule:
    """``verdict`` for ``ops`` on sockets of ``kinds`` (every non-raw socket when empty) to
    addresses in ``network`` (any IP when None) and ``ports``, or (``unix`` set) to unix socket
    paths matching that glob, or (``any_family``) to any address."""

    verdict: str
    ops: frozenset
    network: object = None
    ports: tuple = ()
    unix: str | None = None
    any_family: bool = False
    kinds: frozenset = frozenset()

    def matches(self, op: str, addr: sockaddr.SockAddr, sock: sockaddr.SocketInfo | None = None) -> bool:
        if op not in self.ops or not self.covers(sock):
            return False
        if self.any_family:
            return True
        if addr.family == socket.AF_UNIX:
            return self.unix is not None and addr.address is not None and \
                glob_regex(self.unix).match(os.fsdecode(addr.address).replace("\0", "@", 1)) is not None
        if addr.family not in (socket.AF_INET, socket.AF_INET6) or self.unix is not None:
            return False
        ip = addr.ip
        if self.network is not None and (ip.version != self.network.version or ip not in self.network):
            return False
        return not self.ports or any(lo <= addr.port <= hi for lo, hi in self.ports)

    def covers(self, sock: sockaddr.SocketInfo | None) -> bool:
        """Does the rule apply to this socket (None: unknown, only rules without kinds)?"""
        if sock is None:
            return not self.kinds
        if not self.kinds:
            return not sock.raw
        return any(sock.is_kind(kind) for kind in self.kinds)

    @property
    def literal_unix_path(self) -> bytes | None:
        """The socket path of a wildcard-free pathname unix rule."""
        if self.unix is None or self.unix.startswith("@") or any(c in self.unix for c in _GLOB_CHARS):
            return None
        return os.fsencode(self.unix)


def parse_rule(spec) -> NetRule:
    """``"allow connect 10.0.0.0/8:443"``, ``"allow connect tcp 127.0.0.1:8080"``, ``"allow send udp *:53"``,
    ``"allow bind *:8000-8999"``, ``"allow connect [::1]:80"``, ``"allow connect unix:/run/dbus/**"``,
    ``"allow send raw *"``, ``"deny any *"``; or a dict ``{"allow": "connect", "type": "tcp",
    "cidr": "10.0.0.0/8", "ports": "80,443"}`` / ``{"allow": "connect", "unix": GLOB}``."""
    if isinstance(spec, dict):
        verdicts = [k for k in ("allow", "deny") if k in spec]
        if len(verdicts) != 1 or set(spec) - {"allow", "deny", "cidr", "ports", "unix", "type"}:
            raise SysgateError(f"net rule {spec!r}: want {{\"allow\"|\"deny\": OPS, \"type\": KINDS, "
                               f"\"cidr\"|\"unix\": ..., \"ports\": ...}}")
        ops = _ops(str(spec[verdicts[0]]), spec)
        kinds = _kinds(str(spec["type"]), spec) if "type" in spec else frozenset()
        if "unix" in spec:
            return NetRule(verdicts[0], ops, unix=str(spec["unix"]), kinds=kinds)
        return NetRule(verdicts[0], ops, _network(spec.get("cidr"), spec), _ports(spec.get("ports"), spec),
                       kinds=kinds)
    words = spec.split() if isinstance(spec, str) else []
    if len(words) not in (3, 4) or words[0] not in ("allow", "deny"):
        raise SysgateError(f"net rule {spec!r}: want 'allow|deny OPS [TYPES] ADDRESS' "
                           f"(OPS: connect,bind,send or any; TYPES: {','.join(KINDS)}; "
                           f"ADDRESS: CIDR[:PORTS], [IPv6]:PORTS, unix:GLOB, *)")
    verdict, ops_text, where = words[0], words[1], words[-1]
    ops = _ops(ops_text, spec)
    kinds = _kinds(words[2], spec) if len(words) == 4 else frozenset()
    if where == "*":
        return NetRule(verdict, ops, any_family=True, kinds=kinds)
    if where.startswith("unix:"):
        return NetRule(verdict, ops, unix=where[5:], kinds=kinds)
    if where.startswith("["):
        net, _, rest = where[1:].partition("]")
        ports = rest[1:] if rest.startswith(":") else None
        if rest and ports is None:
            raise SysgateError(f"net rule {spec!r}: write [IPv6-CIDR]:PORTS")
    else:
        net, _, ports = where.partition(":")
        ports = ports or None
    return NetRule(verdict, ops, None if net == "*" else _network(net, spec), _ports(ports, spec), kinds=kinds)


def _ops(text: str, source) -> frozenset:
    words = set(text.split(",")) if text != "any" else set(OPS)
    if not words or words - set(OPS):
        raise SysgateError(f"net rule {source!r}: operations are connect, bind, send or any")
    return frozenset(words)


def _kinds(text: str, source) -> frozenset:
    words = set(text.split(","))
    if not words or words - set(KINDS):
        raise SysgateError(f"net rule {source!r}: socket types are {', '.join(KINDS)}")
    return frozenset(words)


def _network(text, source):
    if text is None or text == "*":
        return None
    try:
        return ipaddress.ip_network(str(text), strict=False)
    except ValueError as exc:
        raise SysgateError(f"net rule {source!r}: {exc}") from None


def _ports(text, source) -> tuple:
    if text is None or text == "" or text == "*":
        return ()
    out = []
    for part in str(text).split(","):
        lo, _, hi = part.partition("-")
        try:
            lo_n, hi_n = int(lo), int(hi or lo)
        except ValueError:
            raise SysgateError(f"net rule {source!r}: bad port {part!r}") from None
        if not 0 <= lo_n <= hi_n <= 65535:
            raise SysgateError(f"net rule {source!r}: port range {part!r} outside 0..65535")
        out.append((lo_n, hi_n))
    return tuple(out)


class NetRules:
    """First matching rule decides; else ``default`` (never for raw sockets: those need a ``raw`` rule)."""

    def __init__(self, rules=(), default: str = "deny"):
        check_default("net", default)
        self.rules = [r if isinstance(r, NetRule) else parse_rule(r) for r in rules]
        self.default = default
        #: (rule, (dev, ino)) of the sockets wildcard-free deny rules name, as found when loading the rules
        self.loaded_inodes = list(self._denied_sockets(os.stat))

    def allows(self, op: str, addr: sockaddr.SockAddr, sock: sockaddr.SocketInfo | None = None) -> bool:
        if addr.family == socket.AF_UNSPEC and op == "connect":
            return True                   # dissolves an association: names no peer
        for rule in self.rules:
            if rule.matches(op, addr, sock):
                return rule.verdict == "allow"
        return self.default == "allow" and not (sock is not None and sock.raw)

    def denied_inodes(self, op: str, sock: sockaddr.SocketInfo | None, lookup) -> set[tuple[int, int]]:
        """(dev, ino) of the unix sockets wildcard-free deny rules for ``op`` name: those found at
        load time, and those ``lookup(path) -> os.stat_result`` finds now (resolving the path as
        the target sees it: the socket may have been created since)."""
        applies = lambda rule: op in rule.ops and rule.covers(sock)     # noqa: E731
        found = {key for rule, key in self.loaded_inodes if applies(rule)}
        found.update(key for rule, key in self._denied_sockets(lookup) if applies(rule))
        return found

    def _denied_sockets(self, lookup):
        for rule in self.rules:
            path = rule.literal_unix_path
            if rule.verdict != "deny" or path is None:
                continue
            try:
                st = lookup(path)
            except OSError:
                continue
            if _stat.S_ISSOCK(st.st_mode):
                yield rule, (st.st_dev, st.st_ino)
