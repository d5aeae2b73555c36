"""Seccomp kernel ABI: constants, struct layouts, ioctl numbers and AUDIT_ARCH values (the
latter derived from :mod:`sysgate.arch.table`).

Everything here mirrors include/uapi/linux/seccomp.h, linux/filter.h and
linux/audit.h; nothing here performs a system call.
"""
from __future__ import annotations

import struct

from ..arch import table
from ..records import Record

# --- seccomp(2) operations -------------------------------------------------
SECCOMP_SET_MODE_STRICT = 0
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_GET_ACTION_AVAIL = 2
SECCOMP_GET_NOTIF_SIZES = 3

# prctl(2)
PR_SET_PDEATHSIG = 1
PR_GET_SECCOMP = 21
PR_SET_SECCOMP = 22
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
SECCOMP_MODE_DISABLED = 0
SECCOMP_MODE_STRICT = 1
SECCOMP_MODE_FILTER = 2

# --- filter flags -----------------------------------------------------------
SECCOMP_FILTER_FLAG_TSYNC = 1 << 0
SECCOMP_FILTER_FLAG_LOG = 1 << 1
SECCOMP_FILTER_FLAG_SPEC_ALLOW = 1 << 2
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
SECCOMP_FILTER_FLAG_TSYNC_ESRCH = 1 << 4
SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV = 1 << 5

FILTER_FLAGS = {
    "TSYNC": SECCOMP_FILTER_FLAG_TSYNC,
    "LOG": SECCOMP_FILTER_FLAG_LOG,
    "SPEC_ALLOW": SECCOMP_FILTER_FLAG_SPEC_ALLOW,
    "NEW_LISTENER": SECCOMP_FILTER_FLAG_NEW_LISTENER,
    "TSYNC_ESRCH": SECCOMP_FILTER_FLAG_TSYNC_ESRCH,
    "WAIT_KILLABLE_RECV": SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
}

# --- return actions ---------------------------------------------------------
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_KILL_THREAD = 0x00000000
SECCOMP_RET_KILL = SECCOMP_RET_KILL_THREAD
SECCOMP_RET_TRAP = 0x00030000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_USER_NOTIF = 0x7FC00000
SECCOMP_RET_TRACE = 0x7FF00000
SECCOMP_RET_LOG = 0x7FFC0000
SECCOMP_RET_ALLOW = 0x7FFF0000

SECCOMP_RET_ACTION_FULL = 0xFFFF0000
SECCOMP_RET_ACTION = 0x7FFF0000
SECCOMP_RET_DATA = 0x0000FFFF

#: Action name -> base value, highest precedence first (kernel order).
ACTIONS = {
    "KILL_PROCESS": SECCOMP_RET_KILL_PROCESS,
    "KILL_THREAD": SECCOMP_RET_KILL_THREAD,
    "TRAP": SECCOMP_RET_TRAP,
    "ERRNO": SECCOMP_RET_ERRNO,
    "USER_NOTIF": SECCOMP_RET_USER_NOTIF,
    "TRACE": SECCOMP_RET_TRACE,
    "LOG": SECCOMP_RET_LOG,
    "ALLOW": SECCOMP_RET_ALLOW,
}


def action_name(ret: int) -> str:
    """Name of the action in a filter return value, e.g. ``ERRNO(1)``."""
    base = ret & SECCOMP_RET_ACTION_FULL
    data = ret & SECCOMP_RET_DATA
    for name, value in ACTIONS.items():
        if value == base:
            if name in ("ERRNO", "TRACE", "TRAP") and data:
                return f"{name}({data})"
            return name
    return f"UNKNOWN(0x{ret:08x})"


def action_precedence(ret: int) -> int:
    """Sort key: lower means the kernel prefers this action across stacked filters."""
    value = ret & SECCOMP_RET_ACTION_FULL
    return value - (1 << 32) if value & 0x80000000 else value


# --- user-notification flags -----------------------------------------------
SECCOMP_USER_NOTIF_FLAG_CONTINUE = 1
SECCOMP_ADDFD_FLAG_SETFD = 1
SECCOMP_ADDFD_FLAG_SEND = 2
SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP = 1

# --- struct layouts (native byte order; all fields fixed width) -------------
SECCOMP_DATA = struct.Struct("=iIQ6Q")          # nr, arch, ip, args[6]
SECCOMP_NOTIF = struct.Struct("=QII64s")        # id, pid, flags, data
SECCOMP_NOTIF_RESP = struct.Struct("=QqiI")     # id, val, error, flags
SECCOMP_NOTIF_ADDFD = struct.Struct("=QIIII")   # id, flags, srcfd, newfd, newfd_flags
SECCOMP_NOTIF_SIZES = struct.Struct("=HHH")
SOCK_FILTER = struct.Struct("=HBBI")            # code, jt, jf, k
SECCOMP_DATA_SIZE = SECCOMP_DATA.size           # 64
assert SECCOMP_DATA_SIZE == 64 and SECCOMP_NOTIF.size == 80
assert SECCOMP_NOTIF_RESP.size == 24 and SECCOMP_NOTIF_ADDFD.size == 24

#: Offsets of struct seccomp_data fields.
OFFSET_NR = 0
OFFSET_ARCH = 4
OFFSET_IP = 8


def offset_arg(index: int) -> int:
    """Byte offset of ``args[index]`` inside struct seccomp_data."""
    if not 0 <= index < 6:
        raise ValueError(f"syscall argument index must be 0..5, not {index}")
    return 16 + 8 * index


class SeccompData(Record):
    """Decoded ``struct seccomp_data``."""

    nr: int
    arch: int
    instruction_pointer: int = 0
    args: tuple[int, ...] = (0, 0, 0, 0, 0, 0)

    def pack(self) -> bytes:
        args = tuple(a & 0xFFFFFFFFFFFFFFFF for a in self.args) + (0,) * (6 - len(self.args))
        return SECCOMP_DATA.pack(self.nr, self.arch, self.instruction_pointer, *args)

    @classmethod
    def unpack(cls, raw: bytes) -> "SeccompData":
        nr, arch, ip, *args = SECCOMP_DATA.unpack(raw[:64])
        return cls(nr, arch, ip, tuple(args))


# --- ioctl numbers ----------------------------------------------------------
_IOC_WRITE = 1
_IOC_READ = 2
SECCOMP_IOC_MAGIC = ord("!")


def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (SECCOMP_IOC_MAGIC << 8) | nr


SECCOMP_IOCTL_NOTIF_RECV = _ioc(_IOC_READ | _IOC_WRITE, 0, SECCOMP_NOTIF.size)
SECCOMP_IOCTL_NOTIF_SEND = _ioc(_IOC_READ | _IOC_WRITE, 1, SECCOMP_NOTIF_RESP.size)
SECCOMP_IOCTL_NOTIF_ID_VALID = _ioc(_IOC_WRITE, 2, 8)
SECCOMP_IOCTL_NOTIF_ID_VALID_WRONG_DIR = _ioc(_IOC_READ, 2, 8)
SECCOMP_IOCTL_NOTIF_ADDFD = _ioc(_IOC_WRITE, 3, SECCOMP_NOTIF_ADDFD.size)
SECCOMP_IOCTL_NOTIF_SET_FLAGS = _ioc(_IOC_WRITE, 4, 8)
assert SECCOMP_IOCTL_NOTIF_RECV == 0xC0502100
assert SECCOMP_IOCTL_NOTIF_SEND == 0xC0182101
assert SECCOMP_IOCTL_NOTIF_ID_VALID == 0x40082102
assert SECCOMP_IOCTL_NOTIF_ADDFD == 0x40182103
assert SECCOMP_IOCTL_NOTIF_SET_FLAGS == 0x40082104

# --- AUDIT_ARCH values (derived from the architecture table) ----------------------
AUDIT_ARCH_64BIT = table.AUDIT_ARCH_64BIT
AUDIT_ARCH_LE = table.AUDIT_ARCH_LE
AUDIT_ARCH_CONVENTION_MIPS64_N32 = table.AUDIT_ARCH_CONVENTION_MIPS64_N32
X32_SYSCALL_BIT = table.X32_SYSCALL_BIT

#: The architectures sysgate supports, in listing order: exactly those it has syscall tables for
#: (data/syscalls/<arch>.json; tests/test_syscalls.py checks that the two agree). Every arch
#: selection goes through :func:`canonical_arch`, so every error names this one list.
AUDIT_ARCH = {a.name: a.audit for a in table.SUPPORTED}
SUPPORTED_ARCHES = tuple(AUDIT_ARCH)

#: AUDIT_ARCH values of architectures without syscall tables: named when seen (disassembly,
#: notifications), refused when asked for.
UNSUPPORTED_AUDIT_ARCH = {a.name: a.audit for a in table.ARCHES if not a.supported}

#: Common aliases used by Docker/OCI profiles and uname(2).
ARCH_ALIASES = table.ALIASES


#: Normalise an architecture name (``amd64``, ``SCMP_ARCH_X86_64``…) to ours (the table's rule).
canonical_arch = table.canonical_arch
#: The architecture of the running kernel/interpreter.
native_arch = table.native_arch


def arch_or_native(name: str | None) -> str:
    """:func:`canonical_arch` of ``name``, or the running kernel's architecture when it is empty/None."""
    return canonical_arch(name) if name else native_arch()


def is_big_endian(arch: str) -> bool:
    """True when the architecture's seccomp_data args are big-endian."""
    return table.get(canonical_arch(arch)).big_endian


def is_64bit(arch: str) -> bool:
    """True when C ``long`` is 64 bits wide (x32 is not, though its registers are)."""
    return table.get(canonical_arch(arch)).long_bits == 64


def arch_from_audit(value: int, nr: int = 0) -> str:
    """Our arch name for an AUDIT_ARCH value (x32 is told apart by the nr bit)."""
    arch = table.by_audit(value, nr)
    return arch.name if arch else f"0x{value:08x}"
