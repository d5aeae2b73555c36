"""``struct msghdr`` / ``struct mmsghdr`` of a target, per ABI, read the way the kernel copies them in.

The kernel's ``__copy_msghdr`` (and ``__get_compat_msghdr`` for i386) rules are kept exactly:
``msg_name`` NULL or ``msg_namelen`` 0 means *no address*; a negative ``msg_namelen`` is
``EINVAL``; one larger than ``sizeof(struct sockaddr_storage)`` (128) is cut to 128 (not an
error); more than ``UIO_MAXIOV`` iovecs is ``EMSGSIZE``. Each structure is read once; the
bytes returned are what the supervisor checks and sends.
"""
from __future__ import annotations

import errno
import struct
from dataclasses import dataclass

from ..arch import table
from .target import read_exact

SOCKADDR_STORAGE = 128
UIO_MAXIOV = 1024
MAX_DATA = 1 << 20          # bytes one emulated send may carry (larger: EMSGSIZE)


@dataclass(frozen=True)
class Layout:
    """One ABI's msghdr (name, namelen, iov, iovlen, control, controllen, flags), iovec, mmsghdr."""

    msghdr: struct.Struct
    iovec: struct.Struct
    mmsghdr_size: int

    @property
    def msg_len_offset(self) -> int:
        """Where ``mmsghdr.msg_len`` (the kernel's per-message result) sits."""
        return self.msghdr.size


NATIVE = Layout(struct.Struct("=Qi4xQQQQi4x"), struct.Struct("=QQ"), 64)
COMPAT = Layout(struct.Struct("=IiIIIIi"), struct.Struct("=II"), 32)


def layout(arch: str) -> Layout:
    """The layout for ``arch``: the 64-bit one, or the compat one of an ABI with a 32-bit long (i386)."""
    return NATIVE if table.get(arch).long_bits == 64 else COMPAT


@dataclass(frozen=True)
class Message:
    """One message as read from the target: its address bytes (None: no address), data, flags."""

    name: bytes | None
    data: bytes
    control: bool


def read_msghdr(n, address: int, lay: Layout, *, stream: bool = False) -> Message:
    """Read and decode the msghdr at ``address`` and everything it points to (once); ``stream``:
    see :func:`gather`."""
    raw = read_exact(n, address, lay.msghdr.size)
    name, namelen, iov, iovlen, control, controllen, _ = lay.msghdr.unpack(raw)
    if not name:
        namelen = 0
    if namelen < 0:
        raise OSError(errno.EINVAL, "negative msg_namelen")
    namelen = min(namelen, SOCKADDR_STORAGE)
    address = read_exact(n, name, namelen) if name and namelen else None
    if iovlen > UIO_MAXIOV:
        raise OSError(errno.EMSGSIZE, "more than UIO_MAXIOV iovecs")
    vecs = read_exact(n, iov, iovlen * lay.iovec.size)
    pieces = [lay.iovec.unpack_from(vecs, i * lay.iovec.size) for i in range(iovlen)]
    return Message(address, gather(n, pieces, stream=stream), bool(control and controllen))


def gather(n, pieces, *, stream: bool = False) -> bytes:
    """The bytes of (address, length) pieces, read once each. Past :data:`MAX_DATA` a ``stream``
    send is cut short (a short write, which stream sockets may do); a message is EMSGSIZE."""
    total = sum(length for _, length in pieces)
    if total > MAX_DATA and not stream:
        raise OSError(errno.EMSGSIZE, "message larger than the emulation limit")
    out, left = [], MAX_DATA
    for address, length in pieces:
        take = min(length, left)
        out.append(read_exact(n, address, take))
        left -= take
    return b"".join(out)
