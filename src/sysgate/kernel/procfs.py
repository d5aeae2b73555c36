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


def credential_fields(data: bytes) -> tuple:
    """(Tgid, real uid, real gid, fsuid, fsgid, Groups, Umask, CapEff) of a status text, what a
    thread's credentials are made of (read per emulated call): each line found by its tag and
    parsed in place, which is :func:`parse_status` with these keys without its dict and copies.
    Umask, Groups and CapEff may be missing (older kernels): 022, none, 0."""
    find = data.find
    i = find(b"\nTgid:\t") + 7          # never the first line (Name is)
    tgid = int(data[i:find(b"\n", i)])
    i = find(b"\nUid:\t") + 6
    uid = data[i:find(b"\n", i)].split()
    i = find(b"\nGid:\t") + 6
    gid = data[i:find(b"\n", i)].split()
    i = find(b"\nGroups:\t")
    groups = ids(data[i + 9:find(b"\n", i + 9)]) if i >= 0 else ()
    i = find(b"\nUmask:\t")
    umask = int(data[i + 8:find(b"\n", i + 8)], 8) if i >= 0 else 0o022
    i = find(b"\nCapEff:\t")
    cap = int(data[i + 9:find(b"\n", i + 9)], 16) if i >= 0 else 0
    return tgid, int(uid[0]), int(gid[0]), int(uid[3]), int(gid[3]), groups, umask, cap


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


class ThreadFiles:
    """Per notifying thread, an ``O_PATH`` fd of its ``/proc/TID`` directory and its ``status``
    file (opened relative to it), kept open per TID: the per-call credential read is a pread(2)
    (no path walk, open or close: about 5 us of the ~11 a status read costs), and the handlers'
    other per-call looks at the thread (``ns/user``, ``root``, ``cwd``, ``fd/N``) are one-component
    lookups relative to the directory instead of walks from ``/proc``.

    Exact, not a cache of *contents*: every status read generates the text afresh (credentials
    change with setfsuid, setgroups, capset, a set-id exec), every lookup under the directory
    reads the thread's root, cwd, namespaces and fds as they are now (chroot, chdir, setns and
    unshare are seen by the next call). Both fds are bound to the kernel's ``struct pid`` they were
    opened for, not to the number: once that thread is gone the status read fails (ESRCH) and the
    lookups fail (ENOENT), even when the number now names another thread. :meth:`take` reads the
    status first and reopens both by path when it fails, so a pair that is handed out belongs to the
    thread the number names now (a number belongs to one struct pid while its thread lives), i.e.
    to the thread a path lookup would reach; the caller's ID_VALID afterwards covers the recycling
    race as for a path lookup.

    Thread-safe without a lock: a worker *takes* a pair out of the table (dict.pop is atomic) for
    its whole call and puts it back afterwards, so no fd is used by one thread while another closes
    it. At most ``limit`` pairs are kept (the oldest goes first: threads that exited are not told).
    """

    def __init__(self, limit: int = 64):
        self.limit = limit
        self._fds: dict[int, tuple[int, int]] = {}

    def take(self, tid: int) -> tuple[tuple[int, int], bytes]:
        """((directory fd, status fd) of thread ``tid``, its status text read now). Hand the pair back
        with :meth:`put`. OSError (ENOENT, ESRCH) when the thread is gone."""
        pair = self._fds.pop(tid, None)
        if pair is not None:
            try:
                return pair, _read_whole(pair[1])
            except OSError:                  # ESRCH: that thread is gone; the number may be another's
                _close(pair)
        directory = os.open(f"/proc/{tid}", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            status = os.open("status", os.O_RDONLY | os.O_CLOEXEC, dir_fd=directory)
        except BaseException:
            os.close(directory)
            raise
        pair = (directory, status)
        try:
            return pair, _read_whole(status)
        except BaseException:
            _close(pair)
            raise

    def put(self, tid: int, pair: tuple[int, int]) -> None:
        """Keep ``pair`` (from :meth:`take`) for ``tid``'s next call."""
        fds = self._fds
        if fds.setdefault(tid, pair) is not pair:    # another worker put one back first
            _close(pair)
            return
        if len(fds) > self.limit:
            try:
                oldest = next(iter(fds))
            except RuntimeError:             # changed meanwhile by another worker: next time
                return
            old = fds.pop(oldest, None)
            if old is not None:
                _close(old)


def _close(pair: tuple[int, int]) -> None:
    os.close(pair[1])
    os.close(pair[0])


def ids(value) -> tuple[int, ...]:
    """The numbers of a ``Uid``/``Gid`` (real, effective, saved, fs) or ``Groups`` value (str or bytes)."""
    return tuple(map(int, value.split()))
