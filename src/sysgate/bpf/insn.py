"""Classic BPF instruction model: opcode constants, ``Insn`` and (un)packing.

A program is a ``list[Insn]``; :func:`pack` turns it into the bytes the kernel
expects in ``struct sock_fprog``: 8 bytes per instruction, in the byte order of the
kernel that will run it (:func:`byte_order`: this machine's, or a target
architecture's, so a filter cross-compiled for s390x is big-endian like
libseccomp's ``seccomp_export_bpf`` writes it).
"""
from __future__ import annotations

import struct
import sys
from collections import namedtuple
from collections.abc import Iterable

from ..kernel import abi
from ..kernel.abi import SOCK_FILTER

#: ``struct sock_filter`` (code, jt, jf, k) in each byte order.
SOCK_FILTER_IN = {"little": struct.Struct("<HBBI"), "big": struct.Struct(">HBBI")}

# instruction classes
BPF_LD, BPF_LDX, BPF_ST, BPF_STX, BPF_ALU, BPF_JMP, BPF_RET, BPF_MISC = range(8)
# ld/ldx sizes
BPF_W, BPF_H, BPF_B = 0x00, 0x08, 0x10
# ld/ldx modes
BPF_IMM, BPF_ABS, BPF_IND, BPF_MEM, BPF_LEN, BPF_MSH = 0x00, 0x20, 0x40, 0x60, 0x80, 0xA0
# alu/jmp operations
BPF_ADD, BPF_SUB, BPF_MUL, BPF_DIV, BPF_OR, BPF_AND = 0x00, 0x10, 0x20, 0x30, 0x40, 0x50
BPF_LSH, BPF_RSH, BPF_NEG, BPF_MOD, BPF_XOR = 0x60, 0x70, 0x80, 0x90, 0xA0
BPF_JA, BPF_JEQ, BPF_JGT, BPF_JGE, BPF_JSET = 0x00, 0x10, 0x20, 0x30, 0x40
# sources
BPF_K, BPF_X = 0x00, 0x08
# ret sources
BPF_A = 0x10
# misc
BPF_TAX, BPF_TXA = 0x00, 0x80

BPF_MEMWORDS = 16
BPF_MAXINSNS = 4096


def bpf_class(code: int) -> int:
    return code & 0x07


def bpf_size(code: int) -> int:
    return code & 0x18


def bpf_mode(code: int) -> int:
    return code & 0xE0


def bpf_op(code: int) -> int:
    return code & 0xF0


def bpf_src(code: int) -> int:
    return code & 0x08


def bpf_rval(code: int) -> int:
    return code & 0x18


class Insn(namedtuple("Insn", "code jt jf k", defaults=(0, 0, 0))):
    """One ``struct sock_filter``: opcode ``code``, jump-if-true ``jt``, jump-if-false ``jf``, constant
    ``k`` (ints). (collections.namedtuple, not typing.NamedTuple: importing typing costs every
    command about 2 ms of start-up.)"""

    __slots__ = ()

    def pack(self) -> bytes:
        return SOCK_FILTER.pack(self.code, self.jt, self.jf, self.k & 0xFFFFFFFF)

    @property
    def is_jump(self) -> bool:
        return bpf_class(self.code) == BPF_JMP

    @property
    def is_conditional(self) -> bool:
        return self.is_jump and bpf_op(self.code) != BPF_JA

    @property
    def is_ret(self) -> bool:
        return bpf_class(self.code) == BPF_RET


# --- constructors (the common shapes; names follow the kernel's macros) ------
def stmt(code: int, k: int = 0) -> Insn:
    return Insn(code, 0, 0, k & 0xFFFFFFFF)


def jump(code: int, k: int, jt: int, jf: int) -> Insn:
    return Insn(code, jt, jf, k & 0xFFFFFFFF)


def ld_abs(offset: int) -> Insn:
    """``ld [offset]``: load a 32-bit word of struct seccomp_data."""
    return stmt(BPF_LD | BPF_W | BPF_ABS, offset)


def ret(k: int) -> Insn:
    return stmt(BPF_RET | BPF_K, k)


def ja(k: int) -> Insn:
    return stmt(BPF_JMP | BPF_JA, k)


def byte_order(arch: str | None = None) -> str:
    """``"big"`` or ``"little"``: how the kernel of ``arch`` reads a program (None: this machine's)."""
    if arch is None:
        return sys.byteorder
    return "big" if abi.is_big_endian(arch) else "little"


def other_byte_order(order: str) -> str:
    return "little" if order == "big" else "big"


def pack(program: Iterable[Insn], byteorder: str | None = None) -> bytes:
    """Program -> bytes for sock_fprog, in ``byteorder`` (None: this machine's, to install here)."""
    layout = SOCK_FILTER_IN[byteorder or sys.byteorder]
    return b"".join(layout.pack(i.code, i.jt, i.jf, i.k & 0xFFFFFFFF) for i in program)


def unpack(raw: bytes, byteorder: str | None = None) -> list[Insn]:
    """Bytes (8 per instruction, in ``byteorder``; None: this machine's) -> program."""
    layout = SOCK_FILTER_IN[byteorder or sys.byteorder]
    if len(raw) % layout.size:
        raise ValueError(f"BPF program size {len(raw)} is not a multiple of {layout.size}")
    return [Insn(*layout.unpack_from(raw, off)) for off in range(0, len(raw), layout.size)]


def may_notify(insns: Iterable[Insn]) -> bool:
    """True when a program may return SECCOMP_RET_USER_NOTIF (``RET A`` counts as maybe): it
    needs a listener."""
    for ins in insns:
        if ins.is_ret:
            if bpf_rval(ins.code) != BPF_K:
                return True
            if ins.k & abi.SECCOMP_RET_ACTION_FULL == abi.SECCOMP_RET_USER_NOTIF:
                return True
    return False
