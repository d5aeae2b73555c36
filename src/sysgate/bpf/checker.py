"""Validate a seccomp filter exactly as the kernel does before installing it.

The kernel runs ``bpf_check_classic`` (net/core/filter.c) and then
``seccomp_check_filter`` (kernel/seccomp.c); any failure is ``EINVAL``.
:func:`check` applies the same rules in the same order and raises
:class:`BPFCheckError` for the first one broken, naming the instruction
index and the rule (one of :data:`RULES`).

What seccomp refuses although classic BPF has it (rule ``seccomp-opcode``):
``mod`` (ALU MOD, both forms), ``ldh``/``ldb`` (LD H/B ABS), every indexed
load ``ld/ldh/ldb [x + k]`` (IND), ``ldxb 4*([k]&0xf)`` (LDX B MSH) and ``ret x``
does not exist at all. ``ld [k]`` must read a 32-bit aligned word of struct
seccomp_data (rule ``seccomp-load``; this also rules out the SKF_AD_* ancillary
loads); ``ld #len`` / ``ldx #len`` are allowed and load 64.
"""
from __future__ import annotations

from collections.abc import Iterable

from ..errors import SysgateError
from ..kernel import abi
from .insn import (BPF_A, BPF_ABS, BPF_ALU, BPF_DIV, BPF_IMM, BPF_JA, BPF_JMP, BPF_K, BPF_LD, BPF_LDX,
                   BPF_LEN, BPF_LSH, BPF_MAXINSNS, BPF_MEM, BPF_MEMWORDS, BPF_MISC, BPF_MOD, BPF_NEG, BPF_RET,
                   BPF_RSH, BPF_ST, BPF_STX, BPF_TAX, BPF_TXA, BPF_W, BPF_X, Insn, bpf_class, bpf_mode)
from .disasm import as_program, insn_text
from .syntax import ALU_OPS, CLASSIC_OPCODES

#: Rule name -> what it requires (in the order the kernel checks them).
RULES = {
    "length": f"a program has 1..{BPF_MAXINSNS} instructions",
    "opcode": "the opcode must be a classic BPF instruction",
    "div-by-zero": "division (or modulo) by the constant 0",
    "shift-range": "shifts by a constant must be below 32",
    "memory-slot": f"scratch memory slots are M[0]..M[{BPF_MEMWORDS - 1}]",
    "jump-range": "jumps must land inside the program",
    "ancillary": "unknown ancillary (SKF_AD_*) load",
    "last-ret": "the last instruction must be 'ret #k' or 'ret a'",
    "memory-unset": "a scratch memory slot must be stored on every path before it is loaded",
    "seccomp-opcode": "seccomp filters may not use this instruction",
    "seccomp-load": "seccomp filters load 32-bit aligned words inside struct seccomp_data (k < 64, k % 4 == 0)",
}

SKF_AD_OFF = 0xFFFFF000
#: The SKF_AD_* offsets the kernel knows (0 = PROTOCOL … 60 = VLAN_TPID).
ANCILLARY = frozenset(range(0, 64, 4))
_WORD_ABS = BPF_LD | BPF_W | BPF_ABS

#: The instructions seccomp_check_filter lets through (word loads are range-checked separately).
SECCOMP_OPCODES = frozenset(
    [BPF_RET | BPF_K, BPF_RET | BPF_A, BPF_ALU | BPF_NEG, BPF_LD | BPF_IMM, BPF_LDX | BPF_IMM,
     BPF_MISC | BPF_TAX, BPF_MISC | BPF_TXA, BPF_LD | BPF_MEM, BPF_LDX | BPF_MEM, BPF_ST, BPF_STX,
     _WORD_ABS, BPF_LD | BPF_W | BPF_LEN, BPF_LDX | BPF_W | BPF_LEN]
    + [BPF_ALU | op | src for op in ALU_OPS.values() if op != BPF_MOD for src in (BPF_K, BPF_X)]
    + [code for code in CLASSIC_OPCODES if bpf_class(code) == BPF_JMP])
_MEMORY = frozenset({BPF_LD | BPF_MEM, BPF_LDX | BPF_MEM, BPF_ST, BPF_STX})


class BPFCheckError(SysgateError):
    """The kernel would refuse the program (EINVAL). ``index`` is None for a length error."""

    def __init__(self, rule: str, index: int | None, message: str, insn: Insn | None = None):
        self.rule, self.index, self.insn = rule, index, insn
        where = "" if index is None else f"instruction {index}"
        if insn is not None:
            where += f" ({insn_text(insn)})"
        #: The message without the instruction index, for errors reported at a source line.
        self.detail = f"{message} [{rule}]"
        super().__init__(f"{where}: {self.detail}" if where else self.detail)


def check(program: Iterable[Insn] | bytes) -> None:
    """Raise :class:`BPFCheckError` unless seccomp(2) would accept ``program``."""
    prog = as_program(program)
    if not 0 < len(prog) <= BPF_MAXINSNS:
        raise BPFCheckError("length", None, f"the program has {len(prog)} instructions; "
                            f"seccomp takes 1..{BPF_MAXINSNS}")
    for pc, insn in enumerate(prog):
        _check_classic(pc, insn, len(prog))
    if prog[-1].code not in (BPF_RET | BPF_K, BPF_RET | BPF_A):
        last = len(prog) - 1
        raise BPFCheckError("last-ret", last, "the program must end with ret", prog[last])
    _check_memory(prog)
    for pc, insn in enumerate(prog):
        _check_seccomp(pc, insn)


def _check_classic(pc: int, insn: Insn, length: int) -> None:
    code, jt, jf, k = insn

    def fail(rule: str, message: str):
        raise BPFCheckError(rule, pc, message, insn)

    if code not in CLASSIC_OPCODES:
        fail("opcode", f"0x{code:02x} is not a classic BPF opcode")
    if code in (BPF_ALU | BPF_DIV | BPF_K, BPF_ALU | BPF_MOD | BPF_K) and k == 0:
        fail("div-by-zero", "division by the constant 0")
    if code in (BPF_ALU | BPF_LSH | BPF_K, BPF_ALU | BPF_RSH | BPF_K) and k >= 32:
        fail("shift-range", f"shift by {k}; constant shifts must be below 32")
    if code in _MEMORY and k >= BPF_MEMWORDS:
        fail("memory-slot", f"M[{k}] does not exist; slots are M[0]..M[{BPF_MEMWORDS - 1}]")
    if code == BPF_JMP | BPF_JA and k >= length - pc - 1:
        fail("jump-range", f"ja lands at {pc + 1 + k}, beyond the last instruction {length - 1}")
    if insn.is_conditional and max(jt, jf) + pc + 1 >= length:
        fail("jump-range", f"jump lands at {pc + 1 + max(jt, jf)}, beyond the last instruction {length - 1}")
    if bpf_class(code) == BPF_LD and bpf_mode(code) == BPF_ABS and k >= SKF_AD_OFF and k - SKF_AD_OFF not in ANCILLARY:
        fail("ancillary", f"offset 0x{k:x} is not a known SKF_AD_* ancillary load")


def _check_memory(prog: list[Insn]) -> None:
    """The kernel's check_load_and_stores, step for step (including its treatment of
    straight-line code after ``ret``, which keeps the slots of the code before it)."""
    everything = (1 << BPF_MEMWORDS) - 1
    masks = [everything] * len(prog)
    valid = 0
    for pc, insn in enumerate(prog):
        valid &= masks[pc]
        if insn.code in (BPF_ST, BPF_STX):
            valid |= 1 << insn.k
        elif insn.code in (BPF_LD | BPF_MEM, BPF_LDX | BPF_MEM):
            if not valid & (1 << insn.k):
                raise BPFCheckError("memory-unset", pc, f"M[{insn.k}] may be loaded before it is stored", insn)
        elif insn.code == BPF_JMP | BPF_JA:
            masks[pc + 1 + insn.k] &= valid
            valid = everything
        elif insn.is_conditional:
            masks[pc + 1 + insn.jt] &= valid
            masks[pc + 1 + insn.jf] &= valid
            valid = everything


def _check_seccomp(pc: int, insn: Insn) -> None:
    if insn.code not in SECCOMP_OPCODES:
        raise BPFCheckError("seccomp-opcode", pc, "seccomp filters may not use this instruction", insn)
    if insn.code == _WORD_ABS and (insn.k >= abi.SECCOMP_DATA_SIZE or insn.k % 4):
        raise BPFCheckError("seccomp-load", pc, f"load at offset {insn.k}: seccomp filters read 32-bit aligned "
                            f"words inside struct seccomp_data (offset < {abi.SECCOMP_DATA_SIZE}, a multiple "
                            "of 4)", insn)


def is_valid(program: Iterable[Insn] | bytes) -> bool:
    """True when :func:`check` passes."""
    try:
        check(program)
    except BPFCheckError:
        return False
    return True
