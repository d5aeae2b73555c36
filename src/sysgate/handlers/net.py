"""``net``: connect/bind/listen/send allow-lists by socket type, family, CIDR, port and unix path.

The decision needs the socket address, which lives in target memory, so the calls are
**emulated**, never CONTINUEd after a memory read: the supervisor takes the target's socket
with pidfd_getfd(2) (the same open socket, not a copy), asks the kernel what it is
(``SO_DOMAIN``/``SO_TYPE``/``SO_PROTOCOL``), reads the address once, checks it, and makes
the call itself with exactly the bytes it checked, then answers with the kernel's result.
Rules are described in :mod:`.netrules`.

Calls (every one, on every architecture: :attr:`NetHandler.syscalls`):

* ``connect``: always a **connect** (on a datagram socket it sets the default peer, which
  later sends without an address reach unchecked: a connect rule lets a datagram socket
  send to that peer). ``AF_UNSPEC`` (dissolve an association) is allowed. A blocking
  stream connect is started non-blocking and finished by :mod:`.netwait`, so a slow peer
  never holds a worker; the target sees the kernel's answer (0, ``ECONNREFUSED``,
  ``ETIMEDOUT``; ``EINPROGRESS`` for non-blocking sockets or when its ``SO_SNDTIMEO``
  passes; ``EINTR`` when a signal interrupts it -- the kernel answers that one itself).
* ``bind``: a **bind**; ports below ``net.ipv4.ip_unprivileged_port_start`` also need
  ``CAP_NET_BIND_SERVICE`` in the target (the supervisor is root, the target may not be).
* ``listen``: on an unbound inet socket the kernel binds the wildcard address to an
  ephemeral port, so that is checked as a **bind** of ``0.0.0.0:0`` / ``[::]:0``.
* ``sendto``, ``sendmsg``, ``sendmmsg`` with an address: on a stream or seqpacket socket
  the address can only open a connection (``MSG_FASTOPEN``, ``TCP_FASTOPEN_CONNECT``, SCTP),
  so it is checked as a **connect** (on an already connected TCP socket the kernel would
  ignore it: a forbidden one is refused all the same); on datagram and raw sockets as a
  **send**. Without an address the message goes to the connected peer, checked at connect:
  ``sendto`` with a NULL address (registers only) is CONTINUEd, the others are emulated
  with the data read once. ``msg_name``/``msg_namelen`` follow the kernel exactly (see
  :mod:`.netmsg`). ``sendmmsg`` checks every message's address and, like the kernel,
  returns how many were sent when a later one fails (writing each ``msg_len``).
  Messages with control data (``SCM_RIGHTS``, credentials) fail with ``EPERM``.
* ``socketcall`` (i386 and other 32-bit ABIs): the sub-call number is a register, so a
  policy should notify only :data:`SOCKETCALL_NOTIFIED` (:func:`socketcall_condition`); the
  handler reads the argument array once and emulates those sub-calls like the direct
  calls. Other sub-calls that reach it name no address and are CONTINUEd (decided on the
  sub-call register alone).

Unix socket paths are resolved like :mod:`.fs` opens (in the target's root and cwd, no magic
links, with the target's fsuid/fsgid): the *resolved* socket file is checked, its inode is
compared with the sockets wildcard-free deny rules name, and it is reached through our O_PATH
fd, so symlinks and hard links cannot redirect a connect. Abstract names (``@name``) are
matched as is.

Not covered -- what the rules do *not* see:

* sockets the target did not connect through here: inherited from its parent or received
  over ``SCM_RIGHTS`` (already connected elsewhere: ``write``/``send`` reach that peer);
* ``write``/``send``/``sendfile``/``splice`` on a connected socket (the connect was checked);
* io_uring (``IORING_OP_CONNECT``/``SENDMSG`` run in kernel threads seccomp never sees:
  the sandbox refuses ``io_uring_setup``);
* raw sockets and ``AF_PACKET`` are refused unless a ``raw`` rule allows them; a raw rule
  allows any packet (``IP_HDRINCL`` writes its own destination);
* addresses given by ``setsockopt``: SCTP ``SCTP_SOCKOPT_CONNECTX``/``BINDX`` (SCTP is not
  built into this kernel), ``IP_OPTIONS`` source routes; subflows MPTCP opens to addresses
  the (allowed) peer announces; a netlink socket's ``write`` reaches the kernel without an
  address -- limit ``socket()`` families and protocols in the policy.

Limits: the kernel records the supervisor as the connecting/sending process, so
``SO_PEERCRED`` and ``SCM_CREDENTIALS`` of an emulated unix call name sysgate, and LSM
hooks (SELinux, AppArmor) judge the supervisor, not the target (cgroup BPF hooks see the
socket's cgroup, the target's). A blocking ``sendto``/``sendmsg`` that would wait (full send
buffer or peer queue) is tried with ``MSG_DONTWAIT`` and finished by the waiter like a
connect (``SO_SNDTIMEO`` gives ``EAGAIN``), so a stream send may return a short count where
the kernel would have waited for all of it; a ``sendmmsg`` batch continues in the waiter
from the message that would wait (read and checked again then). A connect is started
non-blocking by flipping ``O_NONBLOCK`` on the shared file for that one call (another
target thread could see it with ``F_GETFL``). SIGPIPE is raised for sends answered by a
worker, not for those the waiter finishes.
A stream send carries at most 1 MiB per call (a short write, as stream sockets may do).
vDSO time calls never reach seccomp (see :mod:`.identity`).
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import ipaddress
import os
import select
import signal
import socket
import stat as _stat
import struct
import threading
import time
from dataclasses import dataclass

from ..kernel import abi
from ..kernel import calls
from ..policy.model import Cmp, Or
from ..supervisor import Reply
from . import netmsg, sockaddr, unixbind
from .base import Handler, oserror_reply, same_flags_arches
from .fs import Resolver, fd_path
from .netrules import NetRule, NetRules, parse_rule
from .netwait import Wait, Waiter, wait_here
from .target import AT_FDCWD, Credentials, acting_as, credentials, fetch_fd, read_exact, signed32, write_memory

__all__ = ["NetHandler", "NetRule", "NetRules", "parse_rule", "SOCKETCALL", "SOCKETCALL_NOTIFIED",
           "socketcall_condition"]

_libc = ctypes.CDLL(None, use_errno=True)
_CAP_NET_BIND_SERVICE = 10
_SUN_PATH = 108
_SOCKADDR_MAX = 128
_MSG_NOSIGNAL, _MSG_DONTWAIT = 0x4000, 0x40
_QUICK_CONNECT = 0.02       # a worker waits this long for a connect before handing it to the waiter

_SOCKETCALL_WORDS = {1: 3, 2: 3, 3: 3, 4: 2, 5: 3, 6: 3, 7: 3, 8: 4, 9: 4, 10: 4, 11: 6, 12: 6, 13: 2, 14: 5,
                     15: 5, 16: 3, 17: 3, 18: 4, 19: 5, 20: 4}
SOCKETCALL = sockaddr.SOCKETCALL
_SOCKETCALL_NAMES = {v: k for k, v in SOCKETCALL.items()}
#: the socketcall sub-calls that name an address or bind one: the only ones a policy must notify
SOCKETCALL_NOTIFIED = frozenset(SOCKETCALL[c] for c in ("bind", "connect", "listen", "sendto", "sendmsg",
                                                         "sendmmsg"))


def socketcall_condition():
    """``socketcall: call in {BIND, CONNECT, LISTEN, SENDTO, SENDMSG, SENDMMSG}`` as a policy
    condition (the sub-call is argument 0, a register: the filter decides without memory)."""
    return Or(tuple(Cmp(0, "==", c, width=32) for c in sorted(SOCKETCALL_NOTIFIED)))


class _Denied(Exception):
    """The rules refuse the call (answered with the handler's ``errno_denied``)."""


@dataclass
class _Sock:
    """The target's socket as we hold it: our duplicate, what the kernel says it is, whose it is."""

    fd: int
    info: sockaddr.SocketInfo
    creds: Credentials


class NetHandler(Handler):
    """Emulate connect/bind/listen/sendto/sendmsg/sendmmsg/socketcall for what the rules allow;
    others fail with ``errno_denied``."""

    name = "net"
    syscalls = ("connect", "bind", "listen", "sendto", "sendmsg", "sendmmsg", "socketcall")
    blocking = True

    def __init__(self, rules=(), default: str = "deny", *, errno_denied: int = errno.EACCES,
                 deadline: float | None = 30.0, max_waits: int = 1024):
        self.rules = rules if isinstance(rules, NetRules) else NetRules(rules, default)
        self.denied = Reply.errno(errno_denied)
        self.deadline = deadline
        self.arches = same_flags_arches() - {"x32"}       # x32's compat structs are not decoded
        self.waiter = Waiter()
        self.max_waits = max_waits
        self._signalling: dict[int, threading.Event] = {}   # tid -> set once its SIGPIPE is pending

    def close(self) -> None:
        self.waiter.close()

    # --- dispatch -----------------------------------------------------------------------
    def handle(self, n):
        signalling = self._signalling.get(n.pid)
        if signalling is not None:
            signalling.wait(1.0)                # see _sigpipe: that thread's SIGPIPE comes first
        try:
            if n.syscall == "socketcall":
                return self._socketcall(n)
            return self._call(n, n.syscall, n.args, from_memory=False)
        except _Denied:
            return self.denied

    def _sigpipe(self, n, reply: Reply, flags: int) -> Reply | None:
        """A send that failed with EPIPE raises SIGPIPE in the sending thread unless MSG_NOSIGNAL;
        the kernel raised it in ours (ignored), so answer first, then signal the target's thread.

        Signalling first would interrupt the thread's wait for our answer: the kernel restarts the
        call and the data would be sent twice. So the signal can land a few instructions after the
        call returns; the thread's next net call waits in :meth:`handle` until it is pending, so no
        later send of that thread completes before its SIGPIPE, as with the kernel."""
        if reply is None or reply.error != errno.EPIPE or flags & _MSG_NOSIGNAL:
            return reply
        tgid = credentials(n).tgid
        signalled = self._signalling[n.pid] = threading.Event()
        try:
            n.answer_later()
            if n.send_later(reply):
                try:
                    calls.raw_syscall("tgkill", ctypes.c_int(tgid), ctypes.c_int(n.pid),
                                      ctypes.c_int(signal.SIGPIPE))
                except OSError:
                    pass                        # the thread is gone
        finally:
            del self._signalling[n.pid]
            signalled.set()
        return None

    def _socketcall(self, n):
        call = n.args[0] & 0xFFFFFFFF
        words = _SOCKETCALL_WORDS.get(call)
        if words is None:
            return Reply.errno(errno.EINVAL)
        if call not in SOCKETCALL_NOTIFIED:
            return Reply.continue_()       # decided on the sub-call register: it names no address
        size = 8 if n.arch == abi.native_arch() else 4
        raw = read_exact(n, n.args[1], words * size)
        args = struct.unpack(f"={words}{'Q' if size == 8 else 'I'}", raw) + (0,) * (6 - words)
        return self._call(n, _SOCKETCALL_NAMES[call], args, from_memory=True)

    def _call(self, n, call, a, *, from_memory: bool):
        fd = signed32(a[0])
        if call == "sendto" and not a[4] and not from_memory:
            return Reply.continue_()       # registers only: the connected peer was checked at connect
        if call == "connect":
            return self._on_socket(n, fd, lambda s: self._connect(n, s, a[1], a[2]))
        if call == "bind":
            return self._on_socket(n, fd, lambda s: self._bind(n, s, a[1], a[2]))
        if call == "listen":
            return self._on_socket(n, fd, lambda s: self._listen(s, signed32(a[1])))
        if call == "sendto":
            return self._sigpipe(n, self._on_socket(n, fd, lambda s: self._sendto(n, s, a)), a[3])
        if call == "sendmsg":
            lay = netmsg.layout(n.arch)
            return self._sigpipe(n, self._on_socket(n, fd, lambda s: self._sendmsg(n, s, a[1], lay, a[2])), a[2])
        if call == "sendmmsg":
            return self._sigpipe(n, self._on_socket(n, fd, lambda s: self._sendmmsg(n, s, a[1], a[2], a[3])), a[3])
        return Reply.errno(errno.ENOSYS)

    def _on_socket(self, n, fd: int, action):
        """``action(_Sock)`` on our duplicate of the target's ``fd`` (EBADF/ENOTSOCK like the kernel)."""
        creds = credentials(n)
        try:
            dup = fetch_fd(n, fd, creds)
        except OSError as exc:
            return Reply.errno(errno.EBADF if exc.errno in (errno.EBADF, errno.ENOENT) else exc.errno)
        try:
            if not _stat.S_ISSOCK(os.fstat(dup).st_mode):
                return Reply.errno(errno.ENOTSOCK)
            return action(_Sock(dup, sockaddr.SocketInfo.of(dup), creds))
        finally:
            os.close(dup)

    # --- addresses ------------------------------------------------------------------------
    def _read_address(self, n, address: int, length: int) -> bytes:
        """The sockaddr the target passed, read once (``move_addr_to_kernel``'s checks)."""
        length = signed32(length)
        if length < 0 or length > _SOCKADDR_MAX:
            raise OSError(errno.EINVAL, "bad address length")
        return read_exact(n, address, length)

    def _destination(self, n, sock: _Sock, op: str, raw: bytes, stack: contextlib.ExitStack) -> bytes:
        """The address bytes to hand the kernel for ``op`` on ``sock``; raises _Denied. Resources
        the result depends on (our O_PATH fd of a unix socket, the target's identity) live in ``stack``."""
        try:
            addr = sockaddr.parse(raw)
        except ValueError:
            raise OSError(errno.EINVAL, "address too short for its family") from None   # as the kernel
        path = _unix_path(raw)
        if path is not None:
            return self._unix_destination(n, sock, op, path, stack)
        if not self.rules.allows(op, addr, sock.info):
            raise _Denied()
        if op == "bind" and addr.port and addr.port < _unprivileged_port_start() \
                and not sock.creds.has_cap(_CAP_NET_BIND_SERVICE):
            raise OSError(errno.EACCES, "privileged port")
        return raw

    def _unix_destination(self, n, sock: _Sock, op: str, path: bytes, stack) -> bytes:
        """Resolve a unix socket path like an open (target root/cwd), check the socket file, reach
        it through our fd. The caller makes the call inside ``acting_as(sock.creds)`` (the kernel
        checks the socket file's permissions then). Binds go through :meth:`_bind_unix`."""
        with Resolver(n, sock.creds) as resolver, acting_as(sock.creds):
            pfd = resolver.open(AT_FDCWD, path, os.O_PATH | os.O_CLOEXEC)
            stack.callback(os.close, pfd)
            st = os.fstat(pfd)
            if not _stat.S_ISSOCK(st.st_mode):
                raise OSError(errno.ECONNREFUSED, "not a socket")
            view = resolver.view(fd_path(pfd))
            real = None if view is None else view.encode()
            if (st.st_dev, st.st_ino) in self.rules.denied_inodes(op, sock.info, _lookup_in(resolver)):
                raise _Denied()
            local = b"/proc/self/fd/%d" % pfd
        if real is None or not self.rules.allows(op, sockaddr.SockAddr(socket.AF_UNIX, real), sock.info):
            raise _Denied()
        if len(local) >= _SUN_PATH:
            raise OSError(errno.ENAMETOOLONG, "socket path too long")
        return struct.pack("=H", socket.AF_UNIX) + local + b"\0"

    # --- the calls ----------------------------------------------------------------------------
    def _bind(self, n, sock: _Sock, address: int, length: int):
        raw = self._read_address(n, address, length)
        path = _unix_path(raw)
        if path is not None:
            return self._bind_unix(n, sock, path)
        with contextlib.ExitStack() as stack:
            dest = self._destination(n, sock, "bind", raw, stack)
            return _result(_libc.bind(sock.fd, dest, len(dest)))

    def _bind_unix(self, n, sock: _Sock, path: bytes):
        """Check the new socket's place (its resolved parent + name) and bind it under the
        target's own path bytes there (:mod:`.unixbind`)."""
        with Resolver(n, sock.creds) as resolver, acting_as(sock.creds):
            dfd, name, view = resolver.parent(AT_FDCWD, path)
        try:
            if not name or name in (b".", b".."):
                return Reply.errno(errno.EINVAL if not name else errno.EADDRINUSE)
            if not self.rules.allows("bind", sockaddr.SockAddr(socket.AF_UNIX, view.encode()), sock.info):
                raise _Denied()
            err = unixbind.bind_named(sock.fd, dfd, path, name, sock.creds)
            return Reply.errno(err) if err else Reply.value(0)
        finally:
            os.close(dfd)

    def _listen(self, sock: _Sock, backlog: int):
        info = sock.info
        if info.inet and info.connection:
            with socket.socket(fileno=os.dup(sock.fd)) as s:
                port = s.getsockname()[1]
            if not port:                    # the kernel binds the wildcard address to an ephemeral port
                wildcard = ipaddress.ip_address("0.0.0.0" if info.domain == socket.AF_INET else "::")
                if not self.rules.allows("bind", sockaddr.SockAddr(info.domain, wildcard, 0), info):
                    raise _Denied()
        return _result(_libc.listen(sock.fd, backlog))

    def _connect(self, n, sock: _Sock, address: int, length: int):
        raw = self._read_address(n, address, length)
        with contextlib.ExitStack() as stack:
            dest = self._destination(n, sock, "connect", raw, stack)
            if fcntl.fcntl(sock.fd, fcntl.F_GETFL) & os.O_NONBLOCK or not sock.info.connection:
                with acting_as(sock.creds):
                    return _result(_libc.connect(sock.fd, dest, len(dest)))     # answers at once
            dup = os.dup(sock.fd)
            stack.callback(os.close, dup)
            attempt = _nonblocking_connect(dup, dest, sock.creds)
            inet = sock.info.inet
            try:
                return attempt()
            except BlockingIOError:
                pass
            if inet and _writable(dup, _QUICK_CONNECT):
                try:
                    return attempt()
                except BlockingIOError:
                    pass
            # The kernel would block: wait for the handshake without holding this worker.
            timeout = _sndtimeo(dup)
            held = stack.pop_all()
            wait = Wait(n, attempt, held.close, fd=dup if inet else None,
                        until=None if not timeout else time.monotonic() + timeout,
                        on_timeout=Reply.errno(errno.EINPROGRESS if inet else errno.EAGAIN))
            return self._later(n, wait, held)

    def _later(self, n, wait: Wait, held: contextlib.ExitStack) -> Reply | None:
        """Take ``n``'s reply over and let the waiter thread send it. Past ``max_waits`` waiting
        calls (each holds an fd) the worker waits itself, bounded by the pool's deadline."""
        if self.waiter.pending() >= self.max_waits:
            with held:
                return wait_here(wait)
        try:
            n.answer_later()
        except Exception:
            held.close()
            raise
        self.waiter.add(wait)
        return None

    def _sendto(self, n, sock: _Sock, a):
        _, buf, length, flags, address, addrlen = a
        flags &= 0xFFFFFFFF
        if address and signed32(addrlen) != 0:
            raw = self._read_address(n, address, addrlen)
        else:
            raw = b"" if address else None  # an address of length 0 is not read: the protocol decides
        data = netmsg.gather(n, [(buf, length)], stream=sock.info.connection)
        with contextlib.ExitStack() as stack:
            if not raw:
                dest = b"\0" if raw is not None else None     # non-NULL pointer with length 0, or NULL
                size = 0
            else:
                dest = self._destination(n, sock, _send_op(sock), raw, stack)
                size = len(dest)
            return self._send(n, sock, flags, stack,
                              lambda fd, extra: _check(_libc.sendto(fd, data, len(data), flags | extra, dest, size)))

    def _sendmsg(self, n, sock: _Sock, address: int, lay: netmsg.Layout, flags: int) -> Reply:
        msg = netmsg.read_msghdr(n, address, lay, stream=sock.info.connection)
        if msg.control:
            return Reply.errno(errno.EPERM)
        flags &= 0xFFFFFFFF
        with contextlib.ExitStack() as stack:
            name = None if msg.name is None else self._destination(n, sock, _send_op(sock), msg.name, stack)
            return self._send(n, sock, flags, stack,
                              lambda fd, extra: _check(_libc_sendmsg(fd, name, msg.data, flags | extra)))

    def _send(self, n, sock: _Sock, flags: int, stack: contextlib.ExitStack, send) -> Reply | None:
        """``send(fd, extra_flags) -> count`` as the target; a blocking send that would wait (full
        peer queue or send buffer) is finished by the waiter thread, so it holds no worker."""
        def attempt(fd: int, extra: int) -> Reply:
            with acting_as(sock.creds):
                try:
                    return Reply.value(send(fd, extra))
                except BlockingIOError:
                    raise
                except OSError as exc:
                    return oserror_reply(exc)
        if flags & _MSG_DONTWAIT or fcntl.fcntl(sock.fd, fcntl.F_GETFL) & os.O_NONBLOCK:
            try:
                return attempt(sock.fd, 0)
            except BlockingIOError as exc:
                return oserror_reply(exc)
        try:
            return attempt(sock.fd, _MSG_DONTWAIT)
        except BlockingIOError:
            pass
        dup = os.dup(sock.fd)
        stack.callback(os.close, dup)
        timeout = _sndtimeo(dup)
        held = stack.pop_all()
        # POLLOUT is exact for a stream's send buffer; a datagram peer's full queue is not
        # visible to poll, so those are retried every slice.
        wait = Wait(n, lambda: attempt(dup, _MSG_DONTWAIT), held.close,
                    fd=dup if sock.info.inet and sock.info.type == socket.SOCK_STREAM else None,
                    until=None if not timeout else time.monotonic() + timeout,
                    on_timeout=Reply.errno(errno.EAGAIN))
        return self._later(n, wait, held)

    def _send_message(self, n, sock: _Sock, fd: int, msg: netmsg.Message, flags: int) -> int:
        """Send one message of a ``sendmmsg`` batch on our ``fd`` of ``sock``; the byte count,
        or OSError / _Denied."""
        if msg.control:
            raise OSError(errno.EPERM, "control messages are not emulated")
        with contextlib.ExitStack() as stack:
            name = None if msg.name is None else self._destination(n, sock, _send_op(sock), msg.name, stack)
            with acting_as(sock.creds):
                return _check(_libc_sendmsg(fd, name, msg.data, flags))

    def _sendmmsg(self, n, sock: _Sock, vec: int, vlen: int, flags: int):
        """Like ``__sys_sendmmsg``: stop at the first failure; the count sent if any, else the
        error. A blocking socket that would wait hands the rest of the batch to the waiter."""
        flags &= 0xFFFFFFFF
        batch = _Batch(vec, min(vlen & 0xFFFFFFFF, netmsg.UIO_MAXIOV), netmsg.layout(n.arch))
        if flags & _MSG_DONTWAIT or fcntl.fcntl(sock.fd, fcntl.F_GETFL) & os.O_NONBLOCK:
            return self._batch_step(n, sock, sock.fd, batch, flags, wait=False)
        try:
            return self._batch_step(n, sock, sock.fd, batch, flags | _MSG_DONTWAIT, wait=True)
        except BlockingIOError:
            pass
        held = contextlib.ExitStack()
        dup = os.dup(sock.fd)
        held.callback(os.close, dup)
        timeout = _sndtimeo(dup)
        wait = Wait(n, lambda: self._batch_step(n, sock, dup, batch, flags | _MSG_DONTWAIT, wait=True), held.close,
                    fd=dup if sock.info.inet and sock.info.type == socket.SOCK_STREAM else None,
                    until=None if not timeout else time.monotonic() + timeout,
                    on_timeout=lambda: Reply.value(batch.sent) if batch.sent else Reply.errno(errno.EAGAIN))
        return self._later(n, wait, held)

    def _batch_step(self, n, sock: _Sock, fd: int, batch: "_Batch", flags: int, *, wait: bool) -> Reply:
        """Send the batch's next messages; BlockingIOError (only when ``wait``) when the next one
        must wait for room (it is read and checked again then, as the kernel would copy it again)."""
        lay = batch.layout
        while batch.index < batch.vlen:
            entry = batch.vec + batch.index * lay.mmsghdr_size
            try:
                msg = netmsg.read_msghdr(n, entry, lay, stream=sock.info.connection)
                count = self._send_message(n, sock, fd, msg, flags)
                write_memory(n, entry + lay.msg_len_offset, struct.pack("=I", count))
            except BlockingIOError:
                if wait:
                    raise
                return Reply.value(batch.sent) if batch.sent else Reply.errno(errno.EAGAIN)
            except (OSError, _Denied) as exc:
                if batch.sent:
                    break
                return oserror_reply(exc) if isinstance(exc, OSError) else self.denied
            batch.sent += 1
            batch.index += 1
            if count < len(msg.data):
                break                       # a short send ends the batch, as in the kernel
        return Reply.value(batch.sent)


@dataclass
class _Batch:
    """Where a ``sendmmsg`` batch stands (shared by the worker and the waiter)."""

    vec: int
    vlen: int
    layout: netmsg.Layout
    index: int = 0
    sent: int = 0


def _unix_path(raw: bytes) -> bytes | None:
    """The pathname of a unix sockaddr (None: another family, abstract or unnamed)."""
    try:
        addr = sockaddr.parse(raw)
    except ValueError:
        return None
    if addr.family == socket.AF_UNIX and addr.address and not addr.address.startswith(b"\0"):
        return addr.address
    return None


def _send_op(sock: _Sock) -> str:
    """What an address given to a send does on this socket (see the module docstring)."""
    return "connect" if sock.info.connection else "send"


def _lookup_in(resolver):
    """``path -> stat`` of a path as the target sees it (for the inodes deny rules name)."""
    def lookup(path: bytes):
        fd = resolver.open(AT_FDCWD, path, os.O_PATH | os.O_CLOEXEC)
        try:
            return os.fstat(fd)
        finally:
            os.close(fd)
    return lookup


def _nonblocking_connect(fd: int, dest: bytes, creds: Credentials):
    """A callable making one non-blocking connect attempt on ``fd`` as ``creds``: the Reply when
    the kernel answered, BlockingIOError while the connect is in progress (or the backlog full)."""
    def attempt() -> Reply:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)
        try:
            with acting_as(creds):
                result = _libc.connect(fd, dest, len(dest))
                err = ctypes.get_errno()
        finally:
            fcntl.fcntl(fd, fcntl.F_SETFL, flags)
        if result == 0:
            return Reply.value(0)
        if err in (errno.EINPROGRESS, errno.EALREADY, errno.EAGAIN):
            raise BlockingIOError(err, os.strerror(err))
        return Reply.errno(err)
    return attempt


def _writable(fd: int, timeout: float) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return bool(poller.poll(timeout * 1000))


def _sndtimeo(fd: int) -> float:
    """The socket's ``SO_SNDTIMEO`` in seconds (0: none): a blocking connect gives up after it."""
    with socket.socket(fileno=os.dup(fd)) as s:
        sec, usec = struct.unpack("=qq", s.getsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, 16))
    return sec + usec / 1e6


def _libc_sendmsg(fd: int, name: bytes | None, data: bytes, flags: int) -> int:
    iov = _Iovec(ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p), len(data))
    name_buf = ctypes.create_string_buffer(name, len(name)) if name else None
    msg = _Msghdr(ctypes.cast(name_buf, ctypes.c_void_p) if name_buf else None, len(name) if name else 0,
                  ctypes.pointer(iov), 1, None, 0, 0)
    return _libc.sendmsg(fd, ctypes.byref(msg), flags)


def _check(result: int) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


def _result(result: int) -> Reply:
    """The Reply for a libc call's return value (errno read right after it)."""
    return Reply.errno(ctypes.get_errno()) if result < 0 else Reply.value(result)


def _unprivileged_port_start() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as fh:
            return int(fh.read())
    except (OSError, ValueError):
        return 1024


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.POINTER(_Iovec)),
                ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]


for _fn in ("connect", "bind"):
    getattr(_libc, _fn).argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)
_libc.listen.argtypes = (ctypes.c_int, ctypes.c_int)
_libc.sendto.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)
_libc.sendto.restype = ctypes.c_ssize_t
_libc.sendmsg.argtypes = (ctypes.c_int, ctypes.POINTER(_Msghdr), ctypes.c_int)
_libc.sendmsg.restype = ctypes.c_ssize_t
