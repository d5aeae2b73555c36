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
        data = os.read(fd, _CHUNK)
        if len(data) == _CHUNK:         # seq_file: a short read is the end
            chunks = [data]
            while len(chunks[-1]) == _CHUNK:
                chunks.append(os.read(fd, _CHUNK))
            data = b"".join(chunks)
    finally:
        os.close(fd)
    return parse_status(data, keys, raw)


def ids(value) -> tuple[int, ...]:
    """The numbers of a ``Uid``/``Gid`` (real, effective, saved, fs) or ``Groups`` value (str or bytes)."""
    return tuple(map(int, value.split()))
