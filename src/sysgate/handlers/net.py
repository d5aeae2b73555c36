"""``net``: connect/bind/sendto/sendmsg allow-lists by family, CIDR, port and unix path.

The decision needs the socket address, which lives in target memory, so the calls are
**emulated**, never CONTINUEd: the supervisor reads the address once, checks it, takes
the target's socket with pidfd_getfd(2) (the same open socket, not a copy) and makes
the call itself with exactly the bytes it checked, then answers with the result:

* ``connect``: ``connect(dup, addr)``; a non-blocking socket gets ``EINPROGRESS`` like
  the kernel would give. ``AF_UNSPEC`` (dissolve a datagram association) is allowed.
* ``bind``: ``bind(dup, addr)``; ports below ``net.ipv4.ip_unprivileged_port_start``
  need ``CAP_NET_BIND_SERVICE`` in the target (the supervisor is root, the target may not be).
* ``sendto`` with an address: the data is read from the target and sent with
  ``sendto(dup, data, flags, addr)``. Without an address (a register, so it cannot
  change under us) the call is CONTINUEd: the kernel sends to the connected peer, which
  ``connect`` already checked.
* ``sendmsg``: emulated likewise (``msg_name`` checked, iovecs gathered); messages with
  control data (``SCM_RIGHTS``, credentials) fail with ``EPERM``. Only the native
  ``struct msghdr`` is decoded: compat (i386, x32) ``sendmsg`` fails with ``ENOSYS``.

Unix socket paths are resolved like :mod:`.fs` opens (in the target's root and cwd, no
magic links) and the *resolved* socket file is checked, then reached through our O_PATH
fd, so symlinks cannot redirect a connect. Abstract names (``@name``) are matched as is.
Limits: the kernel records the supervisor as the connecting/binding process, so
``SO_PEERCRED`` of an emulated unix ``connect`` names sysgate, not the target; a blocking
connect holds a worker thread until it completes (``deadline`` fails the call closed,
the connect itself may still complete). ``sendmmsg``, io_uring and the like are not
handled here: deny them in the policy.
"""
from __future__ import annotations

import ctypes
import errno
import ipaddress
import os
import socket
import stat as _stat
import struct
from dataclasses import dataclass

from ..errors import SysgateError
from ..kernel import abi
from ..supervisor import Reply
from . import sockaddr
from .base import ENOSYS, Handler, check_default
from .fs import Resolver, fd_path, glob_regex
from .target import AT_FDCWD, acting_as, credentials, fetch_fd, read_exact, signed32

_libc = ctypes.CDLL(None, use_errno=True)
_OPS = ("connect", "bind", "send")
_CAP_NET_BIND_SERVICE = 10
_MAX_DATA = 1 << 20
_MSGHDR = struct.Struct("=QI4xQQQQi4x")     # name, namelen, iov, iovlen, control, controllen, flags
_IOVEC = struct.Struct("=QQ")
_SUN_PATH = 108


@dataclass(frozen=True)
class NetRule:
    """``verdict`` for ``ops`` to addresses in ``network`` (any IP when None) and ``ports``,
    or (``unix`` set) to unix socket paths matching that glob."""

    verdict: str
    ops: frozenset
    network: object = None
    ports: tuple = ()
    unix: str | None = None
    any_family: bool = False

    def matches(self, op: str, addr: sockaddr.SockAddr) -> bool:
        if op not in self.ops:
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


def parse_rule(spec) -> NetRule:
    """``"allow connect 10.0.0.0/8:443"``, ``"allow bind *:8000-8999"``, ``"allow connect [::1]:80"``,
    ``"allow connect unix:/run/dbus/**"``, ``"deny any *"``; or a dict
    ``{"allow": "connect", "cidr": "10.0.0.0/8", "ports": "80,443"}`` / ``{"allow": "connect", "unix": GLOB}``."""
    if isinstance(spec, dict):
        verdicts = [k for k in ("allow", "deny") if k in spec]
        if len(verdicts) != 1 or set(spec) - {"allow", "deny", "cidr", "ports", "unix"}:
            raise SysgateError(f"net rule {spec!r}: want {{\"allow\"|\"deny\": OPS, \"cidr\"|\"unix\": ..., \"ports\": ...}}")
        ops = _ops(str(spec[verdicts[0]]), spec)
        if "unix" in spec:
            return NetRule(verdicts[0], ops, unix=str(spec["unix"]))
        return NetRule(verdicts[0], ops, _network(spec.get("cidr"), spec), _ports(spec.get("ports"), spec))
    if not isinstance(spec, str) or len(spec.split()) != 3 or spec.split()[0] not in ("allow", "deny"):
        raise SysgateError(f"net rule {spec!r}: want 'allow|deny OPS ADDRESS' "
                           f"(OPS: connect,bind,send or any; ADDRESS: CIDR[:PORTS], [IPv6]:PORTS, unix:GLOB, *)")
    verdict, ops_text, where = spec.split()
    ops = _ops(ops_text, spec)
    if where == "*":
        return NetRule(verdict, ops, any_family=True)
    if where.startswith("unix:"):
        return NetRule(verdict, ops, unix=where[5:])
    if where.startswith("["):
        net, _, rest = where[1:].partition("]")
        ports = rest[1:] if rest.startswith(":") else None
        if rest and ports is None:
            raise SysgateError(f"net rule {spec!r}: write [IPv6-CIDR]:PORTS")
    else:
        net, _, ports = where.partition(":")
        ports = ports or None
    return NetRule(verdict, ops, None if net == "*" else _network(net, spec), _ports(ports, spec))


def _ops(text: str, source) -> frozenset:
    words = set(text.split(",")) if text != "any" else set(_OPS)
    if not words or words - set(_OPS):
        raise SysgateError(f"net rule {source!r}: operations are connect, bind, send or any")
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
    """First matching rule decides; else ``default``."""

    def __init__(self, rules=(), default: str = "deny"):
        check_default("net", default)
        self.rules = [r if isinstance(r, NetRule) else parse_rule(r) for r in rules]
        self.default = default

    def allows(self, op: str, addr: sockaddr.SockAddr) -> bool:
        if addr.family == socket.AF_UNSPEC and op == "connect":
            return True
        for rule in self.rules:
            if rule.matches(op, addr):
                return rule.verdict == "allow"
        return self.default == "allow"


class NetHandler(Handler):
    """Emulate connect/bind/sendto/sendmsg for addresses the rules allow; others fail with ``errno``."""

    name = "net"
    syscalls = ("connect", "bind", "sendto", "sendmsg")
    blocking = True

    def __init__(self, rules=(), default: str = "deny", *, errno_denied: int = errno.EACCES,
                 deadline: float | None = 30.0):
        self.rules = rules if isinstance(rules, NetRules) else NetRules(rules, default)
        self.denied = Reply.errno(errno_denied)
        self.deadline = deadline

    def _address(self, n, address: int, length: int) -> tuple[bytes, sockaddr.SockAddr]:
        if not 0 < length <= 128:
            raise OSError(errno.EINVAL, "bad address length")
        raw = read_exact(n, address, length)
        try:
            return raw, sockaddr.parse(raw)
        except ValueError:
            raise OSError(errno.EINVAL, "malformed socket address") from None

    def _connect(self, n):
        a = n.args
        raw, addr = self._address(n, a[1], a[2] & 0xFFFFFFFF)
        return self._emulate(n, "connect", signed32(a[0]), raw, addr,
                             lambda fd, buf: _libc.connect(fd, buf, len(buf)))

    def _bind(self, n):
        a = n.args
        raw, addr = self._address(n, a[1], a[2] & 0xFFFFFFFF)
        return self._emulate(n, "bind", signed32(a[0]), raw, addr, lambda fd, buf: _libc.bind(fd, buf, len(buf)))

    def _sendto(self, n):
        fd, buf, length, flags, address, addrlen = n.args
        if not address:
            return Reply.continue_()       # registers only: the connected peer was checked at connect
        raw, addr = self._address(n, address, addrlen & 0xFFFFFFFF)
        data = self._data(n, [(buf, length)])
        return self._emulate(n, "send", signed32(fd), raw, addr,
                             lambda s, a: _libc.sendto(s, data, len(data), flags & 0xFFFFFFFF, a, len(a)))

    def _sendmsg(self, n):
        if n.arch != abi.native_arch():
            return ENOSYS    # i386/x32 use the 28-byte compat msghdr: not decoded
        fd, msg, flags = n.args[:3]
        name, namelen, iov, iovlen, control, controllen, _ = _MSGHDR.unpack(read_exact(n, msg, _MSGHDR.size))
        if control and controllen:
            return Reply.errno(errno.EPERM)
        if iovlen > 1024:
            return Reply.errno(errno.EMSGSIZE)
        vecs = read_exact(n, iov, iovlen * _IOVEC.size)
        data = self._data(n, [_IOVEC.unpack_from(vecs, i * _IOVEC.size) for i in range(iovlen)])
        send_flags = flags & 0xFFFFFFFF
        if not name:
            # Connected socket: the destination is the checked peer; the data is what we read.
            return self._with_socket(n, signed32(fd), lambda s: _libc.send(s, data, len(data), send_flags))
        raw, addr = self._address(n, name, namelen)
        return self._emulate(n, "send", signed32(fd), raw, addr,
                             lambda s, a: _libc.sendto(s, data, len(data), send_flags, a, len(a)))

    def _data(self, n, pieces) -> bytes:
        total = sum(length for _, length in pieces)
        if total > _MAX_DATA:
            raise OSError(errno.EMSGSIZE, "message larger than the emulation limit")
        out = bytearray()
        for address, length in pieces:
            out += read_exact(n, address, length)
        return bytes(out)

    def _emulate(self, n, op, fd, raw, addr, call):
        pathname = addr.family == socket.AF_UNIX and addr.address and not addr.address.startswith(b"\0")
        if not pathname and not self.rules.allows(op, addr):
            return self.denied
        creds = credentials(n)
        if op == "bind" and addr.port and addr.port < _unprivileged_port_start() \
                and not creds.has_cap(_CAP_NET_BIND_SERVICE):
            return Reply.errno(errno.EACCES)
        if pathname:
            return self._emulate_unix(n, op, fd, raw, addr, call, creds)
        return self._with_socket(n, fd, lambda s: call(s, raw), creds)

    def _emulate_unix(self, n, op, fd, raw, addr, call, creds):
        """Resolve the socket path like an open (target root/cwd), check the real path, use our fd."""
        with Resolver(n, creds) as resolver, acting_as(creds):
            path = addr.address
            if op == "bind":
                dfd, name, view = resolver.parent(AT_FDCWD, path)
                if not name or name in (b".", b".."):
                    os.close(dfd)
                    return Reply.errno(errno.EINVAL)
                real = view.encode()
                local = b"/proc/self/fd/%d/%s" % (dfd, name)
            else:
                dfd = resolver.open(AT_FDCWD, path, os.O_PATH | os.O_CLOEXEC)
                if not _stat.S_ISSOCK(os.fstat(dfd).st_mode):
                    os.close(dfd)
                    return Reply.errno(errno.ECONNREFUSED)
                view = resolver.view(fd_path(dfd))
                real = None if view is None else view.encode()
                local = b"/proc/self/fd/%d" % dfd
            try:
                if real is None or not self.rules.allows(op, sockaddr.SockAddr(socket.AF_UNIX, real)):
                    return self.denied
                if len(local) >= _SUN_PATH:
                    return Reply.errno(errno.ENAMETOOLONG)
                ours = struct.pack("=H", socket.AF_UNIX) + local + b"\0"
                return self._with_socket(n, fd, lambda s: call(s, ours), creds)
            finally:
                os.close(dfd)

    def _with_socket(self, n, fd, action, creds=None):
        try:
            sock = fetch_fd(n, fd, creds)
        except OSError as exc:
            return Reply.errno(errno.EBADF if exc.errno in (errno.EBADF, errno.ENOENT) else exc.errno)
        try:
            if not _stat.S_ISSOCK(os.fstat(sock).st_mode):
                return Reply.errno(errno.ENOTSOCK)
            result = action(sock)
            if result < 0:
                return Reply.errno(ctypes.get_errno())
            return Reply.value(result)
        finally:
            os.close(sock)


def _unprivileged_port_start() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as fh:
            return int(fh.read())
    except (OSError, ValueError):
        return 1024


for _fn in ("connect", "bind"):
    getattr(_libc, _fn).argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)
_libc.sendto.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)
_libc.sendto.restype = ctypes.c_ssize_t
_libc.send.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int)
_libc.send.restype = ctypes.c_ssize_t
