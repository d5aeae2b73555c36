"""Read a target's memory: process_vm_readv(2), falling back to /proc/<pid>/mem.

These functions only read; they know nothing about notifications. The caller
(:class:`sysgate.supervisor.Notification`) re-checks ``ID_VALID`` after every read,
because the target may have abandoned the syscall and reused the memory (or the
TID may have been recycled) while we were reading. Writing into a target is never
offered: it cannot be made safe.
"""
from __future__ import annotations

import errno
import os
import threading

from ..kernel import calls

PATH_MAX = 4096
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

#: errnos after which /proc/<pid>/mem may still work (blocked or missing syscall, other creds).
_FALLBACK_ERRNOS = (errno.ENOSYS, errno.EPERM, errno.EACCES)


def read(pid: int, address: int, length: int) -> bytes:
    """Up to ``length`` bytes at ``address`` in ``pid`` (fewer when the range ends in unmapped memory).

    Raises ``OSError``: ESRCH when the process is gone, EFAULT when ``address`` itself is unmapped.
    """
    if length <= 0:
        return b""
    if pid <= 0:
        raise OSError(errno.ESRCH, "the target is not visible in this pid namespace (pid 0)")
    try:
        return calls.process_vm_readv(pid, address, length)
    except OSError as exc:
        if exc.errno not in _FALLBACK_ERRNOS:
            raise
    return read_proc_mem(pid, address, length)


def read_proc_mem(pid: int, address: int, length: int) -> bytes:
    """The /proc/<pid>/mem path of :func:`read` (needs ptrace-read access to the target)."""
    try:
        fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise OSError(errno.ESRCH, os.strerror(errno.ESRCH)) from None
    try:
        try:
            data = os.pread(fd, length, address)
        except OSError as exc:
            if exc.errno != errno.EIO:
                raise
            raise OSError(errno.EFAULT, os.strerror(errno.EFAULT)) from None
        return data
    finally:
        os.close(fd)


_local = threading.local()


def _buffer() -> calls.ReadBuffer:
    """This thread's page-sized read buffer (string reads allocate nothing per call)."""
    try:
        return _local.buffer
    except AttributeError:
        buf = _local.buffer = calls.ReadBuffer(PAGE_SIZE)
        return buf


def read_cstring(pid: int, address: int, limit: int = PATH_MAX) -> bytes | None:
    """The NUL-terminated string at ``address`` (without the NUL), or None when no NUL occurs
    within ``limit`` bytes (``limit`` counts the NUL, like PATH_MAX).

    Reads page by page (to the end of the page ``address`` is in, then whole pages) into a
    per-thread buffer, so a string ending just before an unmapped page is still found.
    """
    if pid <= 0:
        raise OSError(errno.ESRCH, "the target is not visible in this pid namespace (pid 0)")
    buf = _buffer()
    data = buf.data
    out = b""
    while len(out) < limit:
        chunk = min(PAGE_SIZE - (address % PAGE_SIZE), limit - len(out))
        try:
            got = calls.process_vm_readv_into(pid, address, chunk, buf)
        except OSError as exc:
            if exc.errno not in _FALLBACK_ERRNOS:
                raise
            got = len(piece := read_proc_mem(pid, address, chunk))
            data[:got] = piece
        if not got:
            raise OSError(errno.EFAULT, os.strerror(errno.EFAULT))
        end = data.find(0, 0, got)
        if end >= 0:
            return out + data[:end] if out else bytes(data[:end])
        out += data[:got]
        address += got
    return None
