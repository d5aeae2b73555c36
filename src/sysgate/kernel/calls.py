"""Thin wrappers for the system calls sysgate makes directly.

Each wrapper raises ``OSError`` with the kernel's errno on failure. Only the
calls the Python standard library lacks are wrapped here (seccomp(2),
pidfd_getfd(2), process_vm_readv(2), gettid, prctl).
"""
from __future__ import annotations

import ctypes
import errno
import os
import struct
from functools import cache

from . import abi
from ..arch import numbers

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long

@cache
def _nr(name: str) -> int:
    """Number of syscall ``name`` on the running arch (from sysgate's tables, loaded once)."""
    nr = numbers.arch_tables(abi.native_arch())[1].get(name)
    if nr is None:
        raise OSError(errno.ENOSYS, f"sysgate does not know the {name} syscall number on {abi.native_arch()}")
    return nr


def _check(ret: int) -> int:
    if ret == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


#: syscall name -> its number as the ctypes argument, built once per name (raw_syscall is per call)
_NUMBERS: dict[str, ctypes.c_long] = {}


def _number(name: str) -> ctypes.c_long:
    number = _NUMBERS.get(name)
    if number is None:
        number = _NUMBERS[name] = ctypes.c_long(_nr(name))
    return number


def raw_syscall(name: str, *args) -> int:
    """Call syscall ``name`` by number; returns the result or raises OSError."""
    return _check(_syscall(_NUMBERS.get(name) or _number(name), *args))


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def seccomp(op: int, flags: int = 0, arg=None) -> int:
    """seccomp(2). ``arg`` is a ctypes object passed by reference, an int address, or None."""
    if arg is None:
        ptr = ctypes.c_void_p(0)
    elif isinstance(arg, int):
        ptr = ctypes.c_void_p(arg)
    else:
        ptr = ctypes.byref(arg)
    if op == abi.SECCOMP_SET_MODE_FILTER and not flags and arg is not None:
        # The same kernel operation (kernel/seccomp.c: prctl_set_seccomp is do_seccomp(SECCOMP_SET_MODE_FILTER,
        # 0, filter)) without a syscall number: a launch needs no syscall table (JSON) read for it.
        return _check(_libc.prctl(ctypes.c_int(abi.PR_SET_SECCOMP), ctypes.c_ulong(abi.SECCOMP_MODE_FILTER), ptr,
                                  ctypes.c_ulong(0), ctypes.c_ulong(0)))
    return _check(_syscall(ctypes.c_long(_nr("seccomp")), ctypes.c_uint(op), ctypes.c_uint(flags), ptr))


def seccomp_set_filter(program: bytes, flags: int = 0) -> int:
    """Install a packed classic-BPF ``program`` (8 bytes per instruction).

    Returns what the kernel returns: 0, a listener fd with NEW_LISTENER, or
    (with TSYNC and no TSYNC_ESRCH) the TID of a thread that could not sync.
    """
    if len(program) % 8:
        raise ValueError("BPF program length must be a multiple of 8 bytes")
    buf = ctypes.create_string_buffer(program, len(program))
    fprog = SockFprog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p))
    return seccomp(abi.SECCOMP_SET_MODE_FILTER, flags, fprog)


def seccomp_action_available(action: int) -> bool:
    """SECCOMP_GET_ACTION_AVAIL for one action value."""
    value = ctypes.c_uint32(action)
    try:
        seccomp(abi.SECCOMP_GET_ACTION_AVAIL, 0, value)
        return True
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):  # EINVAL: before 4.14
            return False
        raise


def seccomp_notif_sizes() -> tuple[int, int, int]:
    """(sizeof seccomp_notif, seccomp_notif_resp, seccomp_data) as the kernel sees them."""
    buf = ctypes.create_string_buffer(abi.SECCOMP_NOTIF_SIZES.size)
    seccomp(abi.SECCOMP_GET_NOTIF_SIZES, 0, buf)
    return abi.SECCOMP_NOTIF_SIZES.unpack(buf.raw)


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check(_libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(arg3),
                              ctypes.c_ulong(arg4), ctypes.c_ulong(arg5)))


def set_no_new_privs() -> None:
    prctl(abi.PR_SET_NO_NEW_PRIVS, 1)


def get_no_new_privs() -> bool:
    return bool(prctl(abi.PR_GET_NO_NEW_PRIVS))


def seccomp_mode() -> int:
    """Current seccomp mode of the calling thread (0 disabled, 1 strict, 2 filter)."""
    return prctl(abi.PR_GET_SECCOMP)


def gettid() -> int:
    return raw_syscall("gettid")


#: pidfd_open() flag (Linux 6.9+): a pidfd for one thread, whose fd table pidfd_getfd then reads
PIDFD_THREAD = os.O_EXCL


def pidfd_open(pid: int, flags: int = 0) -> int:
    return os.pidfd_open(pid, flags)


def pidfd_getfd(pidfd: int, targetfd: int, flags: int = 0) -> int:
    """Duplicate ``targetfd`` of the process behind ``pidfd`` into this process (O_CLOEXEC)."""
    return raw_syscall("pidfd_getfd", ctypes.c_int(pidfd), ctypes.c_int(targetfd), ctypes.c_uint(flags))


def pidfd_send_signal(pidfd: int, sig: int) -> None:
    import signal as _signal

    _signal.pidfd_send_signal(pidfd, sig)


class IoVec(ctypes.Structure):
    """struct iovec (process_vm_readv/writev here, PTRACE_GETREGSET in :mod:`sysgate.attach.ptrace`)."""

    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


def _process_vm(name: str, pid: int, address: int, buf) -> int:
    """process_vm_readv/writev of all of ``buf`` against ``address`` in ``pid`` (one iovec each side)."""
    size = ctypes.sizeof(buf)
    local = IoVec(ctypes.cast(buf, ctypes.c_void_p), size)
    remote = IoVec(ctypes.c_void_p(address), size)
    return raw_syscall(name, ctypes.c_int(pid), ctypes.byref(local), ctypes.c_ulong(1),
                       ctypes.byref(remote), ctypes.c_ulong(1), ctypes.c_ulong(0))


def process_vm_readv(pid: int, address: int, length: int) -> bytes:
    """Read up to ``length`` bytes at ``address`` in process ``pid`` (may return fewer)."""
    buf = ctypes.create_string_buffer(length)
    n = _process_vm("process_vm_readv", pid, address, buf)
    return buf.raw[:n]


class ReadBuffer:
    """A preallocated buffer for :func:`process_vm_readv_into`, with its two iovecs built once
    (one per thread: see ``supervisor.memory``). ``data`` is the bytearray read into."""

    __slots__ = ("data", "_keep", "local", "remote", "local_ref", "remote_ref")

    def __init__(self, size: int):
        self.data = bytearray(size)
        self._keep = ctypes.c_char.from_buffer(self.data)     # pins the bytearray's memory
        self.local = IoVec(ctypes.addressof(self._keep), size)
        self.remote = IoVec(0, 0)
        self.local_ref, self.remote_ref = ctypes.byref(self.local), ctypes.byref(self.remote)


_ONE, _NO_FLAGS = ctypes.c_ulong(1), ctypes.c_ulong(0)


def process_vm_readv_into(pid: int, address: int, length: int, buf: ReadBuffer) -> int:
    """Read up to ``length`` (at most the buffer's size) bytes at ``address`` in ``pid`` into
    ``buf.data``; returns how many (may be fewer). No allocation: the per-call string read."""
    buf.local.len = buf.remote.len = length
    buf.remote.base = address
    return _check(_syscall(_NUMBERS.get("process_vm_readv") or _number("process_vm_readv"), ctypes.c_int(pid),
                           buf.local_ref, _ONE, buf.remote_ref, _ONE, _NO_FLAGS))


#: ``struct open_how`` of openat2(2), packed into bytes (the kernel only reads it)
OPEN_HOW = struct.Struct("=QQQ")
#: syscall(2) with openat2's argument types declared, so ctypes converts them in C (per fs call);
#: a function object of its own (argtypes belong to the object, not to libc's symbol)
_openat2 = ctypes.CDLL(None, use_errno=True).syscall
_openat2.restype = ctypes.c_long
_openat2.argtypes = (ctypes.c_long, ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t)


def openat2(dirfd: int, path: bytes | str, flags: int, mode: int = 0, resolve: int = 0) -> int:
    """openat2(2): open ``path`` relative to ``dirfd`` with RESOLVE_* restrictions; returns the fd."""
    return _check(_openat2(_nr("openat2"), dirfd, os.fsencode(path), OPEN_HOW.pack(flags, mode, resolve),
                           OPEN_HOW.size))


STATX_MNT_ID, _AT_EMPTY_PATH = 0x1000, 0x1000
_STATX_MASK_INO_MNT = struct.Struct("=I28xQ104xQ")    # stx_mask, stx_ino (0x20), stx_mnt_id (0x90)
_statx = ctypes.CDLL(None, use_errno=True).syscall
_statx.restype = ctypes.c_long
_statx.argtypes = (ctypes.c_long, ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_char_p)


def mount_and_inode(dirfd: int, path: bytes) -> tuple[int, int] | None:
    """(mount id, inode number) of what ``path`` relative to ``dirfd`` names, symlinks followed
    (statx(2) with STATX_MNT_ID; an empty ``path``: ``dirfd`` itself); None when the kernel does
    not report the mount id (before 5.8). Together they name one directory: an inode in one mount
    (a mount id is not reused while the mount lives)."""
    out = ctypes.create_string_buffer(256)
    _check(_statx(_nr("statx"), dirfd, path, 0 if path else _AT_EMPTY_PATH, STATX_MNT_ID, out))
    mask, ino, mnt_id = _STATX_MASK_INO_MNT.unpack_from(out)
    return (mnt_id, ino) if mask & STATX_MNT_ID else None


def process_vm_writev(pid: int, address: int, data: bytes) -> int:
    """Write ``data`` at ``address`` in process ``pid``; returns the bytes written.

    Writing into another process is racy by nature (see seccomp_unotify(2)): callers
    must have a reason why the target cannot be harmed (e.g. its own output buffer).
    """
    data = bytes(data)
    local = IoVec(ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p), len(data))   # read only: no copy
    remote = IoVec(address, len(data))
    return raw_syscall("process_vm_writev", ctypes.c_int(pid), ctypes.byref(local), _ONE, ctypes.byref(remote),
                       _ONE, _NO_FLAGS)
