"""``/proc/<pid>/status``: the one parser of its ``Key:<TAB>value`` lines.

Handlers read a notifying thread's credentials from it on every emulated call, the
installers read ``Seccomp``/``Seccomp_filters``/``TracerPid`` from it. The kernel escapes
newlines in the one free-text field (``Name``), so every line is one field.
"""
from __future__ import annotations

import os

_CHUNK = 16384


def parse_status(data: bytes, keys=None) -> dict[str, str]:
    """The fields of a status text: name -> value (without the tab after the colon; the first
    line of a name wins). With ``keys`` (names), only those present are looked up, which is
    several times faster than splitting every line (credentials are read per syscall)."""
    if keys is None:
        text = data.decode("utf-8", "surrogateescape")
        pairs = [line.split(":\t", 1) for line in text.split("\n") if ":\t" in line]
        return dict(reversed(pairs))
    data = b"\n" + data
    fields = {}
    for key in keys:
        tag = b"\n" + key.encode() + b":\t"
        start = data.find(tag)
        if start < 0:
            continue
        start += len(tag)
        end = data.find(b"\n", start)
        fields[key] = data[start:end if end >= 0 else len(data)].decode("utf-8", "surrogateescape")
    return fields


def read_status(path: str, keys=None) -> dict[str, str]:
    """:func:`parse_status` of the status file ``path`` (``/proc/PID/status``,
    ``/proc/PID/task/TID/status``), read whole: a thread with thousands of supplementary
    groups has a status larger than one read. OSError (ENOENT, ESRCH) when it is gone."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while True:
            chunk = os.read(fd, _CHUNK)
            chunks.append(chunk)
            if len(chunk) < _CHUNK:     # seq_file: a short read is the end
                break
    finally:
        os.close(fd)
    return parse_status(b"".join(chunks), keys)


def ids(value: str) -> tuple[int, ...]:
    """The numbers of a ``Uid``/``Gid`` (real, effective, saved, fs) or ``Groups`` value."""
    return tuple(map(int, value.split()))
