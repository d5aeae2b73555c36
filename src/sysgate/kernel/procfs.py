"""``/proc/<pid>/status``: the one parser of its ``Key:<TAB>value`` lines.

Handlers read a notifying thread's credentials from it on every emulated call, the
installers read ``Seccomp``/``Seccomp_filters``/``TracerPid`` from it. The kernel escapes
newlines in the one free-text field (``Name``), so every line is one field.
"""
from __future__ import annotations

import functools
import os

_CHUNK = 16384


def parse_status(data: bytes, keys=None, raw: bool = False) -> dict:
    """The fields of a status text: name -> value (without the tab after the colon; the first
    line of a name wins). With ``keys`` (a tuple of names), only those present are looked up,
    which is several times faster than splitting every line (credentials are read per
    syscall); ``raw`` then keeps the values as bytes (what :func:`ids` and ``int`` take)."""
    if keys is None:
        text = data.decode("utf-8", "surrogateescape")
        pairs = [line.split(":\t", 1) for line in text.split("\n") if ":\t" in line]
        return dict(reversed(pairs))
    data = b"\n" + data
    find = data.find
    fields = {}
    for key, tag, skip in _tags(tuple(keys)):
        start = find(tag)
        if start < 0:
            continue
        start += skip
        end = find(b"\n", start)
        value = data[start:end] if end >= 0 else data[start:]
        fields[key] = value if raw else value.decode("utf-8", "surrogateescape")
    return fields


@functools.lru_cache(maxsize=64)
def _tags(keys: tuple) -> tuple:
    """(name, b"\\nName:\\t", its length) for each of ``keys``: encoded once per key set."""
    return tuple((key, tag, len(tag)) for key in keys for tag in [b"\n" + key.encode() + b":\t"])


def read_status(path: str, keys=None, raw: bool = False) -> dict:
    """:func:`parse_status` of the status file ``path`` (``/proc/PID/status``,
    ``/proc/PID/task/TID/status``), read whole: a thread with thousands of supplementary
    groups has a status larger than one read. OSError (ENOENT, ESRCH) when it is gone."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = _read_whole(fd)
    finally:
        os.close(fd)
    return parse_status(data, keys, raw)


def _read_whole(fd: int) -> bytes:
    """The whole text of an open status file, generated afresh: pread from offset 0 makes
    seq_file run the show function again (a short read is the end)."""
    data = os.pread(fd, _CHUNK, 0)
    if len(data) == _CHUNK:
        chunks = [data]
        while len(chunks[-1]) == _CHUNK:
            chunks.append(os.pread(fd, _CHUNK, _CHUNK * len(chunks)))
        data = b"".join(chunks)
    return data


class ThreadStatus:
    """``/proc/TID/status`` of notifying threads, kept open per TID and re-read with pread(2):
    the per-call credential read then costs no path walk, open or close (about 5 us of the ~11
    a status read costs).

    Exact, not a cache of the *contents*: every read generates the text afresh (credentials
    change with setfsuid, setgroups, capset, a set-id exec). An open proc file is bound to the
    kernel's ``struct pid`` it was opened for, not to the number: once that thread is gone its
    file fails (ESRCH) even when the number now names another thread, and is then reopened by
    path. So a read that succeeds is of the thread the number names now (a number belongs to
    one struct pid while its thread lives), i.e. of the same thread a path read would reach;
    the caller's ID_VALID afterwards covers the recycling race as for a path read.

    Thread-safe without a lock: a worker *takes* the fd out of the table (dict.pop is atomic)
    and puts it back afterwards, so no fd is read by one thread while another closes it. At
    most ``limit`` fds are kept (the oldest goes first: threads that exited are not told).
    """

    def __init__(self, limit: int = 64):
        self.limit = limit
        self._fds: dict[int, int] = {}

    def read(self, tid: int, keys=None, raw: bool = False) -> dict:
        """:func:`parse_status` of thread ``tid``'s status. OSError (ENOENT, ESRCH) when it is gone."""
        fd = self._fds.pop(tid, None)
        data = None
        if fd is not None:
            try:
                data = _read_whole(fd)
            except OSError:                  # ESRCH: that thread is gone; the number may be another's
                os.close(fd)
        if data is None:
            fd = os.open(f"/proc/{tid}/status", os.O_RDONLY | os.O_CLOEXEC)
            try:
                data = _read_whole(fd)
            except BaseException:
                os.close(fd)
                raise
        self._keep(tid, fd)
        return parse_status(data, keys, raw)

    def _keep(self, tid: int, fd: int) -> None:
        fds = self._fds
        if fds.setdefault(tid, fd) != fd:    # another worker put one back first
            os.close(fd)
            return
        if len(fds) > self.limit:
            try:
                oldest = next(iter(fds))
            except RuntimeError:             # changed meanwhile by another worker: next time
                return
            old = fds.pop(oldest, None)
            if old is not None:
                os.close(old)


def ids(value) -> tuple[int, ...]:
    """The numbers of a ``Uid``/``Gid`` (real, effective, saved, fs) or ``Groups`` value (str or bytes)."""
    return tuple(map(int, value.split()))
