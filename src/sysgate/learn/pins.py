"""Which syscall arguments a learned policy pins, and how their values are written.

Most syscalls are allowed whatever their arguments. For the few below the value
decides what the call *does* (which address family a socket gets, whether clone
creates a namespace, which prctl option is set), so a learned policy allows only
the values seen while learning: ``socket: domain == AF_UNIX && type in {…}``.
Values are written with symbolic names where the constant table has one.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from ..arch import syscalls
from ..policy import constants

#: Names preferred when several constants share a value.
_PREFERRED = frozenset({"AF_UNIX", "SIGCHLD", "SIGABRT", "SIGIO"})
_SIGNAL = r"SIG[A-Z0-9]+$"
_IOCTL = r"(TC[GS]ET|TCFLSH|TCSBRK|TCXONC|TIOC[A-Z]|FIO|FS_IOC_|SECCOMP_IOCTL_)"


@dataclass(frozen=True)
class Namer:
    """Writes one argument's values: an ``enum`` name for the whole value (or for what the
    ``flags`` leave over), plus single-bit ``flags`` names joined with ``|``."""

    enum: str | None = None      # regex a constant name must match from its start
    flags: str | None = None

    def text(self, value: int) -> str:
        parts, rest = [], value
        if self.flags:
            for name, bit in _bits(self.flags):
                if rest & bit:
                    parts.append(name)
                    rest &= ~bit
        if rest or not parts:
            base = _names(self.enum).get(rest) if self.enum else None
            parts.insert(0, base or (str(rest) if rest < 4096 else hex(rest)))
        return "|".join(parts)


@cache
def _names(pattern: str) -> dict[int, str]:
    """value -> the most readable constant name matching ``pattern`` (fewest ``_``, preferred)."""
    regex = re.compile(pattern)
    best: dict[int, str] = {}
    for name, value in constants.table().items():
        if not regex.match(name):
            continue
        old = best.get(value)
        if old is None or _rank(name) < _rank(old):
            best[value] = name
    return best


def _rank(name: str) -> tuple:
    return (name not in _PREFERRED, name.count("_"), name)


@cache
def _bits(pattern: str) -> tuple[tuple[str, int], ...]:
    """Single-bit constants matching ``pattern``, lowest bit first."""
    singles = {v: n for v, n in _names(pattern).items() if v > 0 and v & (v - 1) == 0}
    return tuple((n, v) for v, n in sorted(singles.items()))


@dataclass(frozen=True)
class Pin:
    """Argument ``arg`` (a signature name) of ``syscall`` is pinned to the values seen."""

    syscall: str
    arg: str
    namer: Namer = Namer()

    def index(self, arch: str | None = None) -> int:
        return syscalls.arg_index(self.syscall, self.arg, arch)

    def value(self, args: tuple[int, ...], arch: str) -> int:
        """The argument's value in ``args`` as the filter compares it (masked to its width)."""
        index = self.index(arch)
        return args[index] & ((1 << syscalls.arg_width(self.syscall, index, arch)) - 1)


_CLONE = Namer(_SIGNAL, r"CLONE_")
_NAMESPACES = Namer(flags=r"CLONE_NEW")

_TABLE = (
    Pin("socket", "domain", Namer(r"AF_")), Pin("socket", "type", Namer(r"SOCK_", r"SOCK_(CLOEXEC|NONBLOCK)$")),
    Pin("socketpair", "domain", Namer(r"AF_")),
    Pin("socketpair", "type", Namer(r"SOCK_", r"SOCK_(CLOEXEC|NONBLOCK)$")),
    Pin("socketcall", "call"),
    Pin("clone", "flags", _CLONE),
    Pin("unshare", "flags", _NAMESPACES), Pin("setns", "nstype", _NAMESPACES),
    Pin("prctl", "option", Namer(r"PR_")),
    Pin("personality", "persona"),
    Pin("ioctl", "request", Namer(_IOCTL)),
    Pin("ptrace", "request", Namer(r"PTRACE_")),
    Pin("seccomp", "operation", Namer(r"SECCOMP_(SET|GET)_")),
    Pin("bpf", "cmd"),
    Pin("keyctl", "operation", Namer(r"KEYCTL_")),
    Pin("ipc", "call"),
)
#: syscall -> the arguments pinned, in the order conditions are written.
PINS: dict[str, tuple[Pin, ...]] = {}
for _pin in _TABLE:
    PINS[_pin.syscall] = PINS.get(_pin.syscall, ()) + (_pin,)


def pins_for(syscall: str, unpinned: frozenset[str] = frozenset()) -> tuple[Pin, ...]:
    """The pinned arguments of ``syscall`` (none when it is in ``unpinned``, or ``"all"`` is)."""
    if syscall in unpinned or "all" in unpinned:
        return ()
    return PINS.get(syscall, ())
