"""Syscall numbers per architecture and syscall argument signatures.

The data comes from ``data/syscalls/<arch>.json`` (tools/gen_syscall_tables.py,
from the kernel headers) and ``data/signatures.json`` (tools/gen_signatures.py,
from the man pages).  Nothing is read until first use; every file is read once.
Numbers are what the kernel puts in ``seccomp_data.nr`` (x32 numbers include
``__X32_SYSCALL_BIT``).
"""
from __future__ import annotations

import os
from functools import cache

from ..errors import SysgateError
from ..records import Record
from . import table as arch_table  # (``table`` here is the function below)
from .numbers import DATA as _DATA
from .numbers import arch_tables as _arch_data

_MAX_NR = 0x7FFFFFFF
_SUPPORTED = tuple(a.name for a in arch_table.SUPPORTED)


class Param(Record):
    """One syscall argument: C name and type, decoding ``kind`` and value ``width`` (32/64)."""

    name: str
    type: str
    kind: str
    width: int

    def __str__(self) -> str:
        sep = "" if self.type.endswith("*") else " "
        return f"{self.type}{sep}{self.name}"


class Signature(Record):
    """Argument list of a syscall, in the kernel's order."""

    name: str
    params: tuple[Param, ...]
    source: str = ""
    note: str = ""

    @property
    def arg_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def __str__(self) -> str:
        return f"{self.name}({', '.join(map(str, self.params))})"


# --------------------------------------------------------------------------- loading
def _read_json(*parts: str) -> dict:
    import json

    with open(os.path.join(_DATA, *parts), encoding="utf-8") as fh:
        return json.load(fh)


def _available() -> tuple[str, ...]:
    """The architectures with tables: the table's supported ones (one list for every message)."""
    return _SUPPORTED


def table_files() -> list[str]:
    """The architectures ``data/syscalls`` has tables for (tests check it equals the supported list)."""
    return sorted(f[:-5] for f in os.listdir(os.path.join(_DATA, "syscalls")) if f.endswith(".json"))


@cache
def _signatures() -> dict:
    return _read_json("signatures.json")


def _canonical(arch: str | None) -> str:
    try:
        return arch_table.native_arch() if arch is None else arch_table.canonical_arch(str(arch))
    except ValueError as exc:
        raise SysgateError(str(exc)) from None


def arch_name(arch: str | None = None) -> str:
    """Canonical name of ``arch`` (None: the running kernel's); SysgateError if it is not supported."""
    if arch in _available():          # fast path: already canonical
        return arch
    return _canonical(arch)


# --------------------------------------------------------------------------- numbers
def arches() -> list[str]:
    """Architectures with a syscall table (canonical names)."""
    return list(_available())


def table(arch: str | None = None) -> dict[str, int]:
    """``{name: nr}`` of ``arch`` (a fresh copy; aliases not included)."""
    return dict(_arch_data(arch_name(arch))[0])


def number(arch: str | None, name: str) -> int | None:
    """Number of syscall ``name`` on ``arch``, or None if it has none there."""
    return _arch_data(arch_name(arch))[1].get(name)


def name(arch: str | None, nr: int) -> str | None:
    """Name of syscall number ``nr`` on ``arch``, or None."""
    return _arch_data(arch_name(arch))[2].get(nr)


def all_names() -> set[str]:
    """Every syscall name known on any architecture."""
    return _all_names().copy()


@cache
def _all_names() -> frozenset[str]:
    return frozenset(n for a in _available() for n in _arch_data(a)[1])


def _parse_number(text: str) -> int | None:
    """``text`` as a decimal/0x/0o/0b integer, or None."""
    try:
        return int(text, 0)
    except ValueError:
        return None


def resolve(arch: str | None, name_or_number: str | int) -> int:
    """Syscall number for a name (``"openat"``, ``"SYS_openat"``) or number (``257``, ``"0x101"``).

    Raises SysgateError for unknown names, with suggestions.  Numbers are accepted even
    if no name is known for them (new kernels add syscalls); they must fit ``seccomp_data.nr``.
    """
    key = arch_name(arch)
    if isinstance(name_or_number, bool) or not isinstance(name_or_number, (int, str)):
        raise SysgateError(f"syscall must be a name or a number, not {name_or_number!r}")
    if isinstance(name_or_number, str):
        text = name_or_number.strip()
        if text[:1] == "-" and _parse_number(text[1:].strip()) is not None:
            raise SysgateError(f"syscall numbers are not negative: {text!r}")
        if not text[:1].isdigit():
            return _resolve_name(key, text)
        nr = _parse_number(text)
        if nr is None:
            raise SysgateError(f"invalid syscall number {text!r}")
    else:
        nr = name_or_number
        if nr < 0:
            raise SysgateError(f"syscall numbers are not negative: {nr}")
    if not 0 <= nr <= _MAX_NR:
        raise SysgateError(f"syscall number {nr} out of range 0..{_MAX_NR}")
    return nr


def _resolve_name(arch: str, text: str) -> int:
    bare = text
    for prefix in ("SYS_", "__NR_"):
        if bare.startswith(prefix):
            bare = bare[len(prefix):]
    nr = _arch_data(arch)[1].get(bare)
    if nr is not None:
        return nr
    if not text:
        raise SysgateError("empty syscall name")
    elsewhere = [a for a in _available() if bare in _arch_data(a)[1]]
    if elsewhere:
        raise SysgateError(f"{bare!r} is not a syscall on {arch} (it exists on {', '.join(elsewhere)})")
    raise SysgateError(f"unknown syscall {text!r} on {arch}{_suggest(bare, _arch_data(arch)[1])}")


def _suggest(word: str, choices) -> str:
    import difflib

    close = difflib.get_close_matches(word.lower(), list(choices), n=3, cutoff=0.7)
    return f"; did you mean {' or '.join(close)}?" if close else ""


# --------------------------------------------------------------------------- signatures
@cache
def _signature(syscall: str, arch: str | None) -> Signature | None:
    data = _signatures()
    params = None
    if arch is not None:
        params = data["arch_signatures"].get(arch, {}).get(syscall)
    if params is None:
        params = data["signatures"].get(syscall)
    if params is None:
        return None
    return Signature(syscall, tuple(Param(p["name"], p["type"], p["kind"], p["width"]) for p in params),
                     data["sources"].get(syscall, ""), data["notes"].get(syscall, ""))


def signature(syscall: str, arch: str | None = None) -> Signature | None:
    """Argument names/types of ``syscall`` (on ``arch`` when its order differs there), or None."""
    return _signature(syscall, None if arch is None else _canonical(arch))


def arg_index(syscall: str, arg_name: str, arch: str | None = None) -> int:
    """Position of argument ``arg_name`` (or ``arg0``..``arg5``) of ``syscall``."""
    if arg_name.startswith("arg") and arg_name[3:].isdigit():
        index = int(arg_name[3:])
        if index < 6:
            return index
        raise SysgateError(f"syscalls have arguments arg0..arg5, not {arg_name}")
    sig = signature(syscall, arch)
    if sig is None:
        raise SysgateError(f"no argument names known for {syscall!r}; use arg0..arg5")
    try:
        return sig.arg_names.index(arg_name)
    except ValueError:
        valid = ", ".join(sig.arg_names) or "none"
        raise SysgateError(f"{syscall} has no argument {arg_name!r}; its arguments are: {valid} "
                           f"(or arg0..arg5){_suggest(arg_name, sig.arg_names)}") from None


def arg_width(syscall: str, index: int, arch: str | None = None) -> int:
    """Bits of argument ``index`` the kernel uses: 32 for 32-bit C types (and on 32-bit
    arches), 64 when wider or unknown."""
    if arch is not None and arch_table.get(_canonical(arch)).long_bits == 32:
        return 32
    sig = signature(syscall, arch)
    if sig is None or not 0 <= index < len(sig.params):
        return 64
    return sig.params[index].width
