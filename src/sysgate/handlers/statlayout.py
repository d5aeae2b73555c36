"""The ``struct stat`` layouts the fs handler fills in, keyed by (arch, syscall): one table.

Native calls (``stat``, ``lstat``, ``newfstatat`` of the supervisor's own arch) get the
kernel's own bytes: the supervisor makes the same call on its checked fd, so only the size
is needed. Compat calls get a struct built from a native ``os.stat_result`` the way the
kernel's compat code builds it (``arch/x86/include/uapi/asm/stat.h``, ``fs/stat.c``
``cp_compat_stat``, ``arch/x86/kernel/sys_ia32.c`` ``cp_stat64``):

* i386 ``stat``/``lstat`` (106/107): ``struct compat_stat``, 64 bytes, zero-filled, 16-bit
  uid/gid (ids above 65535 become the overflow id), ``EOVERFLOW`` when the size exceeds
  2^31-1, the inode or link count do not fit;
* i386 ``oldstat``/``oldlstat`` (18/84): ``struct __old_kernel_stat``, 32 bytes, 16-bit
  fields (``EOVERFLOW`` for an inode or link count above 65535), 32-bit size and seconds;
* i386 ``stat64``/``lstat64``/``fstatat64``: the packed 96-byte ``struct stat64``; the kernel
  stores field by field and leaves the two 4-byte pads (offsets 8 and 40) untouched, so
  they are written around, never over.

``statx`` has one layout for every ABI (fixed-width fields): no entry is needed.
"""
from __future__ import annotations

import functools
import errno
import os
import struct

from ..arch import table

#: native struct stat sizes (the architecture table's): the kernel fills them (newfstatat on our fd)
NATIVE_STAT_SIZE = {a.name: a.stat_size for a in table.ARCHES if a.stat_size}

_COMPAT_STAT = struct.Struct("<IIHHHHIIIIIIIIIIII")            # i386 struct compat_stat, 64 bytes
_STAT64_HEAD = struct.Struct("<Q")                            # st_dev; pad [8:12]
_STAT64_MID = struct.Struct("<IIIIIQ")                        # __st_ino, mode, nlink, uid, gid, rdev; pad [40:44]
_STAT64_TAIL = struct.Struct("<qIQIIIIIIQ")                   # size, blksize, blocks, a/m/c times, st_ino
_OLD_STAT = struct.Struct("<HHHHHHHHIIII")                    # __old_kernel_stat, 32 bytes
_MAX_NON_LFS = 0x7FFFFFFF


def _times(st: os.stat_result) -> list[int]:
    out = []
    for ns in (st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns):
        sec, nsec = divmod(ns, 1_000_000_000)
        out += [sec & 0xFFFFFFFF, nsec]
    return out


@functools.cache
def _overflow_id(kind: str) -> int:
    try:
        with open(f"/proc/sys/kernel/overflow{kind}") as fh:
            return int(fh.read())
    except (OSError, ValueError):
        return 65534


def _low16(value: int, kind: str) -> int:
    return value if value < 0x10000 else _overflow_id(kind)


def i386_stat(st: os.stat_result) -> list[tuple[int, bytes]]:
    if st.st_size > _MAX_NON_LFS or st.st_ino > 0xFFFFFFFF or st.st_nlink > 0xFFFF:
        raise OSError(errno.EOVERFLOW, os.strerror(errno.EOVERFLOW))
    data = _COMPAT_STAT.pack(st.st_dev & 0xFFFFFFFF, st.st_ino, st.st_mode & 0xFFFF, st.st_nlink,
                             _low16(st.st_uid, "uid"), _low16(st.st_gid, "gid"), st.st_rdev & 0xFFFFFFFF,
                             st.st_size, st.st_blksize, st.st_blocks & 0xFFFFFFFF, *_times(st), 0, 0)
    return [(0, data)]


def i386_oldstat(st: os.stat_result) -> list[tuple[int, bytes]]:
    """``struct __old_kernel_stat`` (x86_64's ``sys_stat`` for i386 ``oldstat``/``oldlstat``):
    16-bit dev (old encoding), ino, mode, nlink, uid, gid, rdev, then 32-bit size and times."""
    if st.st_ino > 0xFFFF or st.st_nlink > 0xFFFF:
        raise OSError(errno.EOVERFLOW, os.strerror(errno.EOVERFLOW))
    t = _times(st)
    return [(0, _OLD_STAT.pack(_old_dev(st.st_dev), st.st_ino, st.st_mode & 0xFFFF, st.st_nlink,
                               _low16(st.st_uid, "uid"), _low16(st.st_gid, "gid"), _old_dev(st.st_rdev), 0,
                               st.st_size & 0xFFFFFFFF, t[0], t[2], t[4]))]


def _old_dev(dev: int) -> int:
    return (os.major(dev) << 8 | os.minor(dev)) & 0xFFFF


def i386_stat64(st: os.stat_result) -> list[tuple[int, bytes]]:
    t = _times(st)
    return [(0, _STAT64_HEAD.pack(st.st_dev)),
            (12, _STAT64_MID.pack(st.st_ino & 0xFFFFFFFF, st.st_mode, st.st_nlink & 0xFFFFFFFF,
                                  st.st_uid, st.st_gid, st.st_rdev)),
            (44, _STAT64_TAIL.pack(st.st_size, st.st_blksize & 0xFFFFFFFF, st.st_blocks, *t, st.st_ino))]


#: ABIs whose statx is answered (one struct statx for all; x32 stays refused, as everywhere)
STATX_ARCHES = frozenset({*NATIVE_STAT_SIZE, "i386"})

#: (arch, syscall) -> builder of [(offset, bytes)] chunks from a native stat result
COMPAT = {
    ("i386", "oldstat"): i386_oldstat,
    ("i386", "oldlstat"): i386_oldstat,
    ("i386", "stat"): i386_stat,
    ("i386", "lstat"): i386_stat,
    ("i386", "stat64"): i386_stat64,
    ("i386", "lstat64"): i386_stat64,
    ("i386", "fstatat64"): i386_stat64,
}
