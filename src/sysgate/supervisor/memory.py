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


def read_cstring(pid: int, address: int, limit: int = PATH_MAX) -> bytes | None:
    """The NUL-terminated string at ``address`` (without the NUL), or None when no NUL occurs
    within ``limit`` bytes (``limit`` counts the NUL, like PATH_MAX).

    Reads page by page, so a string ending just before an unmapped page is still found.
    """
    out = bytearray()
    while len(out) < limit:
        chunk = min(PAGE_SIZE - (address % PAGE_SIZE), limit - len(out))
        data = read(pid, address, chunk)
        if not data:
            raise OSError(errno.EFAULT, os.strerror(errno.EFAULT))
        end = data.find(b"\0")
        if end >= 0:
            out += data[:end]
            return bytes(out)
        out += data
        address += len(data)
    return None
