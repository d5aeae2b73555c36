"""Low-level operations on a seccomp listener fd (the SECCOMP_IOCTL_NOTIF_* ioctls).

These are the only functions that talk to a listener; the launcher and the
supervisor both build on them. Errors surface as ``OSError`` with the
kernel's errno (ENOENT = the target is gone or its syscall was interrupted).
A value that cannot even be put into the kernel's field (wider than it) fails the
same way, with EINVAL, instead of an OverflowError or struct.error.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import struct
from dataclasses import dataclass

from . import abi


@dataclass(frozen=True, slots=True)
class RawNotification:
    """One decoded ``struct seccomp_notif``."""

    id: int
    pid: int
    flags: int
    data: abi.SeccompData


#: Sizes of the RECV and SEND buffers (``struct seccomp_notif`` and ``seccomp_notif_resp``).
NOTIF_SIZE = abi.SECCOMP_NOTIF.size
RESP_SIZE = abi.SECCOMP_NOTIF_RESP.size
_ZERO_NOTIF = bytes(NOTIF_SIZE)
_U64 = struct.Struct("=Q")
_RECV = abi.SECCOMP_IOCTL_NOTIF_RECV
_SEND = abi.SECCOMP_IOCTL_NOTIF_SEND
_ioctl = fcntl.ioctl
_libc = ctypes.CDLL(None, use_errno=True)
_libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong]


def _unsigned(value: int, bits: int, what: str) -> int:
    """``value`` as the kernel's ``bits``-wide field reads it: negative values in two's complement,
    values up to 2**bits - 1 as they are; anything wider is EINVAL (never silently truncated)."""
    if not -(1 << (bits - 1)) <= value < (1 << bits):
        raise OSError(errno.EINVAL, f"{what} {value} does not fit in {bits} bits")
    return value & ((1 << bits) - 1)


def _signed(value: int, bits: int, what: str) -> int:
    """The same bits as :func:`_unsigned`, for a field ``struct`` packs as signed."""
    value = _unsigned(value, bits, what)
    return value - (1 << bits) if value >> (bits - 1) else value


def _ioctl_value(fd: int, request: int, value: int) -> int:
    """An ioctl whose argument is a number passed by value (the kernel's ``unsigned long``):
    ``fcntl.ioctl`` takes only a C int, so 2**31 and above would not reach the kernel."""
    result = _libc.ioctl(fd, request, _unsigned(value, 64, "ioctl argument"))
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


def recv_into(listener: int, buf: bytearray) -> None:
    """SECCOMP_IOCTL_NOTIF_RECV into ``buf`` (:data:`NOTIF_SIZE` bytes, which must be zero: the
    kernel refuses a dirty buffer with EINVAL). Blocks unless a notification is pending."""
    _ioctl(listener, _RECV, buf, True)


def recv(listener: int) -> RawNotification:
    """SECCOMP_IOCTL_NOTIF_RECV with a freshly zeroed buffer. Blocks unless a notification is pending."""
    buf = bytearray(_ZERO_NOTIF)
    recv_into(listener, buf)
    nid, pid, flags, data = abi.SECCOMP_NOTIF.unpack(buf)
    return RawNotification(nid, pid, flags, abi.SeccompData.unpack(data))


def send_into(listener: int, buf: bytearray) -> None:
    """SECCOMP_IOCTL_NOTIF_SEND of a response already packed into ``buf`` (``abi.SECCOMP_NOTIF_RESP``,
    :data:`RESP_SIZE` bytes); the hot path, unchecked: :func:`send` checks every field."""
    _ioctl(listener, _SEND, buf, True)


def send(listener: int, notif_id: int, val: int = 0, error: int = 0, flags: int = 0) -> None:
    """SECCOMP_IOCTL_NOTIF_SEND. ``error`` is a positive errno (0 = success with ``val``)."""
    send_into(listener, bytearray(abi.SECCOMP_NOTIF_RESP.pack(
        _unsigned(notif_id, 64, "notification id"), _signed(val, 64, "return value"),
        _signed(-abs(error), 32, "errno"), _unsigned(flags, 32, "response flags"))))


def send_continue(listener: int, notif_id: int) -> None:
    """Let the kernel run the syscall (not a security decision: see seccomp_unotify(2))."""
    send(listener, notif_id, flags=abi.SECCOMP_USER_NOTIF_FLAG_CONTINUE)


def try_continue(listener: int, notif_id: int) -> bool:
    """:func:`send_continue`, False instead of an error when the caller is gone or was interrupted."""
    try:
        send_continue(listener, notif_id)
        return True
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return False
        raise


def id_valid(listener: int, notif_id: int) -> bool:
    """True while ``notif_id`` is still waiting for our reply."""
    try:       # per call (after every read of the target): struct checks the range, see addfd
        arg = _U64.pack(notif_id)
    except struct.error:
        arg = _U64.pack(_unsigned(notif_id, 64, "notification id"))
    try:
        _ioctl(listener, _ID_VALID, arg)       # the kernel only reads it: no mutable copy
        return True
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return False
        raise


def addfd(listener: int, notif_id: int, srcfd: int, newfd: int | None = None,
          cloexec: bool = False, send: bool = False) -> int:
    """SECCOMP_IOCTL_NOTIF_ADDFD: install ``srcfd`` in the target; returns the target's fd number.

    ``newfd`` selects the number (ADDFD_FLAG_SETFD); ``send`` also answers the
    notification with that number atomically (ADDFD_FLAG_SEND).
    """
    flags = _ADDFD_SEND if send else 0
    if newfd is not None:
        flags |= abi.SECCOMP_ADDFD_FLAG_SETFD
    try:       # the per-call path: struct checks the ranges, the error path says which field
        req = bytearray(_pack_addfd(notif_id, flags, srcfd, newfd or 0, _O_CLOEXEC if cloexec else 0))
    except struct.error:
        req = bytearray(_pack_addfd(
            _unsigned(notif_id, 64, "notification id"), flags, _unsigned(srcfd, 32, "source fd"),
            _unsigned(newfd or 0, 32, "target fd"), _O_CLOEXEC if cloexec else 0))
    return _ioctl(listener, _ADDFD, req, True)  # True: the ioctl's return value


_pack_addfd = abi.SECCOMP_NOTIF_ADDFD.pack
_ID_VALID = abi.SECCOMP_IOCTL_NOTIF_ID_VALID
_ADDFD_SEND, _ADDFD, _O_CLOEXEC = abi.SECCOMP_ADDFD_FLAG_SEND, abi.SECCOMP_IOCTL_NOTIF_ADDFD, os.O_CLOEXEC


def set_flags(listener: int, flags: int) -> None:
    """SECCOMP_IOCTL_NOTIF_SET_FLAGS; the flags go by value (6.6+), as an unsigned long."""
    _ioctl_value(listener, abi.SECCOMP_IOCTL_NOTIF_SET_FLAGS, flags)


def enable_sync_wakeup(listener: int) -> bool:
    """Ask for synchronous wake-ups (the target runs on the supervisor's CPU). False if unsupported."""
    try:
        set_flags(listener, abi.SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP)
        return True
    except OSError:
        return False


def probe_ioctls(listener: int) -> dict[str, bool]:
    """Which notify ioctls a real listener accepts (call with an idle listener fd): each is
    issued with notification id 0, which a known ioctl refuses with ENOENT."""
    result = {"NOTIF_RECV": True}   # implied by the listener's existence
    probes = {
        "NOTIF_ID_VALID": (abi.SECCOMP_IOCTL_NOTIF_ID_VALID, bytearray(_U64.size)),
        "NOTIF_ADDFD": (abi.SECCOMP_IOCTL_NOTIF_ADDFD, bytearray(abi.SECCOMP_NOTIF_ADDFD.size)),
        "NOTIF_SEND": (_SEND, bytearray(RESP_SIZE)),
    }
    for name, (number, arg) in probes.items():
        try:
            _ioctl(listener, number, arg, True)
            result[name] = True
        except OSError as exc:
            result[name] = exc.errno == errno.ENOENT
    try:
        set_flags(listener, 0)
        result["NOTIF_SET_FLAGS"] = True
    except OSError as exc:
        result["NOTIF_SET_FLAGS"] = exc.errno != errno.EINVAL
    return result


#: What /proc/self/fd/N reads for a seccomp listener.
LISTENER_LINK = "anon_inode:seccomp notify"


def is_listener(fd: int) -> bool:
    """True when ``fd`` (of this process) is a seccomp listener."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}") == LISTENER_LINK
    except OSError:
        return False
