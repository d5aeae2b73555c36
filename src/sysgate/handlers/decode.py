"""strace-style decoding of a notification: ``openat(AT_FDCWD, "/etc/passwd", O_RDONLY|O_CLOEXEC)``.

Arguments are rendered from the syscall's signature (:func:`sysgate.arch.syscalls.signature`):
strings are read from the target (one read, checked with ID_VALID), socket addresses are
decoded, well-known flag arguments are spelled with the constants of
``sysgate/data/constants.json`` (open flags, ``AT_*``, mmap ``PROT_*``/``MAP_*``, clone
flags, socket ``AF_*``/``SOCK_*``, access modes), fds/ints are decimal and the rest hex.
Unknown bits stay visible as a trailing hex term (``O_RDONLY|0x40000000``).
"""
from __future__ import annotations

import errno
import json
import os
from functools import cache

from ..errors import SysgateError
from ..policy import constants
from . import sockaddr
from .target import AT_FDCWD

#: flag names tried in order (multi-bit names before the bits they contain); "=" marks
#: a field compared as a whole under a mask (access mode, mapping type, address family).
_OPEN = ("O_TMPFILE", "O_SYNC", "O_DSYNC", "O_CREAT", "O_EXCL", "O_NOCTTY", "O_TRUNC", "O_APPEND", "O_NONBLOCK",
         "O_ASYNC", "O_DIRECT", "O_DIRECTORY", "O_NOFOLLOW", "O_NOATIME", "O_CLOEXEC", "O_PATH")
_AT = ("AT_SYMLINK_NOFOLLOW", "AT_SYMLINK_FOLLOW", "AT_NO_AUTOMOUNT", "AT_EMPTY_PATH", "AT_RECURSIVE")
_PROT = ("PROT_READ", "PROT_WRITE", "PROT_EXEC", "PROT_GROWSDOWN", "PROT_GROWSUP")
_MAP = ("MAP_FIXED_NOREPLACE", "MAP_FIXED", "MAP_ANONYMOUS", "MAP_32BIT", "MAP_GROWSDOWN", "MAP_DENYWRITE",
        "MAP_EXECUTABLE", "MAP_LOCKED", "MAP_NORESERVE", "MAP_POPULATE", "MAP_NONBLOCK", "MAP_STACK",
        "MAP_HUGETLB", "MAP_SYNC")
_MAP_TYPES = ("MAP_SHARED", "MAP_PRIVATE", "MAP_SHARED_VALIDATE")
_CLONE = tuple(n for n in ("CLONE_VM", "CLONE_FS", "CLONE_FILES", "CLONE_SIGHAND", "CLONE_PIDFD", "CLONE_PTRACE",
                           "CLONE_VFORK", "CLONE_PARENT", "CLONE_THREAD", "CLONE_NEWNS", "CLONE_SYSVSEM",
                           "CLONE_SETTLS", "CLONE_PARENT_SETTID", "CLONE_CHILD_CLEARTID", "CLONE_DETACHED",
                           "CLONE_UNTRACED", "CLONE_CHILD_SETTID", "CLONE_NEWCGROUP", "CLONE_NEWUTS",
                           "CLONE_NEWIPC", "CLONE_NEWUSER", "CLONE_NEWPID", "CLONE_NEWNET", "CLONE_IO"))
_SOCK_FLAGS = ("SOCK_NONBLOCK", "SOCK_CLOEXEC")
_SOCK_TYPES = ("SOCK_STREAM", "SOCK_DGRAM", "SOCK_RAW", "SOCK_RDM", "SOCK_SEQPACKET", "SOCK_DCCP", "SOCK_PACKET")
_ACCESS = {1: "X_OK", 2: "W_OK", 4: "R_OK"}


@cache
def _values(names: tuple[str, ...]) -> tuple[tuple[str, int], ...]:
    table = constants.table()
    return tuple((name, table[name]) for name in names if table.get(name))


@cache
def _prefixed(prefix: str) -> dict[int, str]:
    """value -> first name with ``prefix`` (sorted, so AF_ wins over PF_ aliases)."""
    out: dict[int, str] = {}
    for name, value in sorted(constants.table().items()):
        if name.startswith(prefix):
            out.setdefault(value, name)
    return out


def flags_text(value: int, names: tuple[str, ...], *, leading: str | None = None) -> str:
    """``value`` as ``A|B|0x..``; ``leading`` is a term already decoded from a masked field."""
    terms = [leading] if leading else []
    rest = value
    for name, bit in _values(names):
        if rest & bit == bit:
            terms.append(name)
            rest &= ~bit
    if rest or not terms:
        terms.append(f"0x{rest:x}" if rest or terms else "0")
    return "|".join(terms)


def open_flags(value: int) -> str:
    acc = {0: "O_RDONLY", 1: "O_WRONLY", 2: "O_RDWR"}.get(value & 3, "0x3")
    return flags_text(value & ~3, _OPEN, leading=acc)


def at_flags(value: int, syscall: str = "") -> str:
    names = _AT + (("AT_REMOVEDIR",) if syscall == "unlinkat" else ("AT_EACCESS",) if "access" in syscall else ())
    return flags_text(value, names)


def mmap_flags(value: int) -> str:
    kind = {v: n for n, v in _values(_MAP_TYPES)}.get(value & 0xF)
    return flags_text(value & ~0xF if kind else value, _MAP, leading=kind)


def clone_flags(value: int) -> str:
    sig = value & 0xFF
    lead = None
    if sig:
        lead = _signal_name(sig)
    return flags_text(value & ~0xFF, _CLONE, leading=lead)


def socket_type(value: int) -> str:
    kind = {v: n for n, v in _values(_SOCK_TYPES)}.get(value & 0xF, f"0x{value & 0xF:x}")
    return flags_text(value & ~0xF, _SOCK_FLAGS, leading=kind)


def family(value: int) -> str:
    return _prefixed("AF_").get(value, str(value))


def socketcall_name(value: int) -> str:
    """``SYS_CONNECT`` for socketcall's sub-call 3 (the number when unknown)."""
    name = _SOCKETCALL_NAMES.get(value)
    return f"SYS_{name.upper()}" if name else str(value)


_SOCKETCALL_NAMES = {v: k for k, v in sockaddr.SOCKETCALL.items()}


def access_mode(value: int) -> str:
    if value == 0:
        return "F_OK"
    terms = [name for bit, name in sorted(_ACCESS.items(), reverse=True) if value & bit]
    rest = value & ~7
    return "|".join(terms + ([f"0x{rest:x}"] if rest else []))


def _signal_name(sig: int) -> str:
    import signal

    try:
        return signal.Signals(sig).name
    except ValueError:
        return str(sig)


#: (syscall or "*", parameter name) -> decoder(value, syscall)
_DECODERS = {
    ("open", "flags"): lambda v, s: open_flags(v), ("openat", "flags"): lambda v, s: open_flags(v),
    ("mmap", "prot"): lambda v, s: flags_text(v, _PROT), ("mprotect", "prot"): lambda v, s: flags_text(v, _PROT),
    ("pkey_mprotect", "prot"): lambda v, s: flags_text(v, _PROT), ("mmap", "flags"): lambda v, s: mmap_flags(v),
    ("clone", "flags"): lambda v, s: clone_flags(v), ("unshare", "flags"): lambda v, s: flags_text(v, _CLONE),
    ("setns", "nstype"): lambda v, s: flags_text(v, _CLONE),
    ("socket", "domain"): lambda v, s: family(v), ("socketpair", "domain"): lambda v, s: family(v),
    ("socket", "type"): lambda v, s: socket_type(v), ("socketpair", "type"): lambda v, s: socket_type(v),
    ("access", "mode"): lambda v, s: access_mode(v), ("faccessat", "mode"): lambda v, s: access_mode(v),
    ("faccessat2", "mode"): lambda v, s: access_mode(v),
    ("socketcall", "call"): lambda v, s: socketcall_name(v),
}
_AT_SYSCALLS_FLAGS = ("flags", "flag")
_SOCKADDR_CALLS = {"connect": (1, 2), "bind": (1, 2), "sendto": (4, 5)}     # (address, length) arguments
_OCTAL = ("mode",)


def _signed(value: int, bits: int) -> int:
    return value - (1 << bits) if value >> (bits - 1) & 1 else value


def decode_arg(n, param, value: int, *, max_string: int = 96, read: bool = True) -> str:
    """One argument as text (``param`` is a :class:`sysgate.arch.syscalls.Param`)."""
    syscall = n.syscall
    if param.width == 32:
        value &= 0xFFFFFFFF
    decoder = _DECODERS.get((syscall, param.name))
    if decoder is not None:
        return decoder(value, syscall)
    if param.kind == "flags" and param.name in _AT_SYSCALLS_FLAGS and syscall.endswith("at") \
            or (syscall in ("statx", "faccessat2", "execveat") and param.name == "flags"):
        return at_flags(value, syscall)
    if param.kind == "fd" or param.kind in ("int", "long"):
        signed = _signed(value, param.width)
        return "AT_FDCWD" if param.kind == "fd" and signed == AT_FDCWD else str(signed)
    if param.kind == "string":
        if not value:
            return "NULL"
        if not read:
            return f"0x{value:x}"
        return _string(n, value, max_string)
    if param.name in _OCTAL and param.kind in ("uint32", "ulong"):
        return f"0{value:o}" if value else "0"
    if param.kind in ("ptr",) and not value:
        return "NULL"
    if param.kind in ("uint32", "ulong"):
        return str(value)
    return f"0x{value:x}"


def _string(n, address: int, max_string: int) -> str:
    try:
        text = n.read_string(address, max_string + 1)
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            try:
                text = n.read_memory(address, max_string)
            except Exception:
                return f"0x{address:x}"
            return json.dumps(text.decode("utf-8", "backslashreplace"), ensure_ascii=False) + "..."
        return f"0x{address:x}"
    except Exception:   # TargetGone and friends: show the pointer
        return f"0x{address:x}"
    return json.dumps(text.decode("utf-8", "backslashreplace"), ensure_ascii=False)


def _sockaddr(n, address: int, length: int) -> str | None:
    if not address or not 2 <= length <= 128:
        return None
    try:
        return str(sockaddr.parse(n.read_memory(address, length)))
    except Exception:
        return None


def decode_args(n, *, max_string: int = 96, read: bool = True) -> list[str]:
    """Every argument of ``n`` as text (raw hex when the signature is unknown)."""
    from ..arch import syscalls

    try:
        sig = syscalls.signature(n.syscall, n.arch)
    except SysgateError:
        sig = None
    if sig is None:
        return [f"0x{a:x}" for a in n.args]
    out = [decode_arg(n, p, a, max_string=max_string, read=read) for p, a in zip(sig.params, n.args)]
    if n.syscall in ("open", "openat") and len(out) == len(sig.params) and sig.params[-1].name == "mode":
        flags = n.args[len(sig.params) - 2] & 0xFFFFFFFF
        if not flags & (os.O_CREAT | os.O_TMPFILE):
            out.pop()                                  # like strace: the mode only matters when creating
    where = _SOCKADDR_CALLS.get(n.syscall)
    if read and where and len(out) > where[1]:
        text = _sockaddr(n, n.args[where[0]], n.args[where[1]] & 0xFFFFFFFF)
        if text:
            out[where[0]] = text
    return out


def format_call(n, *, max_string: int = 96, read: bool = True) -> str:
    """``name(arg, ...)`` strace-style; ``read=False`` never touches target memory."""
    return f"{n.syscall}({', '.join(decode_args(n, max_string=max_string, read=read))})"


def format_reply(reply) -> str:
    """The result part: ``= 3``, ``= -1 EACCES (Permission denied)``, ``= ? <continue>``."""
    if reply is None:
        return "= ? <no reply>"
    if reply.flags:
        return "= ? <continue>"
    if reply.error:
        name = errno.errorcode.get(reply.error, str(reply.error))
        return f"= -1 {name} ({os.strerror(reply.error)})"
    return f"= {reply.val}"
