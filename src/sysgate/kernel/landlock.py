"""The raw Landlock ABI (include/uapi/linux/landlock.h): rights per ABI version and the three syscalls.

Landlock is an allow-list LSM: a ruleset *handles* some access rights, rules grant some
of them beneath a file hierarchy (``path_beneath``) or for a TCP port (``net_port``), and
``landlock_restrict_self`` applies it to the calling thread and everything it execs.
Rights a kernel does not know must not be asked for (EINVAL), so every mask here is cut
to the running kernel's ABI version (:func:`abi_version`, 0 when Landlock is missing).
"""
from __future__ import annotations

import ctypes
import errno
import os
import struct

from . import calls

# --- access rights for files and directories (bit, first ABI) ---------------------------
FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
FS_REMOVE_DIR = 1 << 4
FS_REMOVE_FILE = 1 << 5
FS_MAKE_CHAR = 1 << 6
FS_MAKE_DIR = 1 << 7
FS_MAKE_REG = 1 << 8
FS_MAKE_SOCK = 1 << 9
FS_MAKE_FIFO = 1 << 10
FS_MAKE_BLOCK = 1 << 11
FS_MAKE_SYM = 1 << 12
FS_REFER = 1 << 13          # ABI 2: reparenting (rename/link across directories)
FS_TRUNCATE = 1 << 14       # ABI 3
FS_IOCTL_DEV = 1 << 15      # ABI 5: ioctl on character/block devices

NET_BIND_TCP = 1 << 0       # ABI 4
NET_CONNECT_TCP = 1 << 1    # ABI 4

SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0   # ABI 6
SCOPE_SIGNAL = 1 << 1                 # ABI 6

CREATE_RULESET_VERSION = 1 << 0
RESTRICT_SELF_LOG_SAME_EXEC_OFF = 1 << 0   # ABI 7
RESTRICT_SELF_LOG_NEW_EXEC_ON = 1 << 1     # ABI 7
RESTRICT_SELF_LOG_SUBDOMAINS_OFF = 1 << 2  # ABI 7

RULE_PATH_BENEATH = 1
RULE_NET_PORT = 2

FS_ABI1 = (1 << 13) - 1
#: rights that only make sense on a directory (EINVAL in a path_beneath rule on a file)
FS_FILE_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV

_RULESET_ATTR = struct.Struct("=QQQ")       # handled_access_fs, handled_access_net, scoped
_PATH_BENEATH = struct.Struct("=Qi")        # __attribute__((packed)): 12 bytes
_NET_PORT = struct.Struct("=QQ")            # allowed_access, port


def fs_rights(abi: int) -> int:
    """Every filesystem right ABI ``abi`` knows."""
    if abi < 1:
        return 0
    mask = FS_ABI1
    if abi >= 2:
        mask |= FS_REFER
    if abi >= 3:
        mask |= FS_TRUNCATE
    if abi >= 5:
        mask |= FS_IOCTL_DEV
    return mask


def net_rights(abi: int) -> int:
    """The TCP rights of ABI ``abi`` (none before 4)."""
    return NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0


def scopes(abi: int) -> int:
    """The IPC scopes of ABI ``abi`` (none before 6)."""
    return SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0


_version: int | None = None


def abi_version() -> int:
    """The running kernel's Landlock ABI version; 0 when Landlock is not built in or disabled."""
    global _version
    if _version is None:
        try:
            _version = calls.raw_syscall("landlock_create_ruleset", ctypes.c_void_p(0), ctypes.c_size_t(0),
                                        ctypes.c_uint32(CREATE_RULESET_VERSION))
        except OSError as exc:
            if exc.errno not in (errno.ENOSYS, errno.EOPNOTSUPP):
                raise
            _version = 0
    return _version


def create_ruleset(handled_fs: int, handled_net: int = 0, scoped: int = 0) -> int:
    """A new ruleset fd (O_CLOEXEC) handling those rights; the caller checks them against the ABI."""
    attr = ctypes.create_string_buffer(_RULESET_ATTR.pack(handled_fs, handled_net, scoped), _RULESET_ATTR.size)
    return calls.raw_syscall("landlock_create_ruleset", attr, ctypes.c_size_t(_RULESET_ATTR.size),
                            ctypes.c_uint32(0))


def add_path_rule(ruleset: int, allowed: int, parent_fd: int) -> None:
    """Grant ``allowed`` beneath the file or directory behind ``parent_fd`` (an O_PATH fd will do)."""
    attr = ctypes.create_string_buffer(_PATH_BENEATH.pack(allowed, parent_fd), _PATH_BENEATH.size)
    calls.raw_syscall("landlock_add_rule", ctypes.c_int(ruleset), ctypes.c_int(RULE_PATH_BENEATH), attr,
                     ctypes.c_uint32(0))


def add_port_rule(ruleset: int, allowed: int, port: int) -> None:
    """Grant the TCP rights ``allowed`` for ``port`` (any address)."""
    attr = ctypes.create_string_buffer(_NET_PORT.pack(allowed, port), _NET_PORT.size)
    calls.raw_syscall("landlock_add_rule", ctypes.c_int(ruleset), ctypes.c_int(RULE_NET_PORT), attr,
                     ctypes.c_uint32(0))


def restrict_self(ruleset: int, flags: int = 0) -> None:
    """Enforce ``ruleset`` on the calling thread (needs no_new_privs or CAP_SYS_ADMIN)."""
    calls.raw_syscall("landlock_restrict_self", ctypes.c_int(ruleset), ctypes.c_uint32(flags))


def open_path(path: str) -> int:
    """An O_PATH fd for a rule's hierarchy (follows symlinks, as the kernel resolves accesses)."""
    return os.open(path, os.O_PATH | os.O_CLOEXEC)
