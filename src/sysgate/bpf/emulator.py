"""Run a seccomp filter on a ``struct seccomp_data`` exactly as the kernel would.

Semantics (those of the kernel's cBPF -> eBPF translation, checked against the
running kernel by tests/test_bpf_kernel.py): A, X and M[0..15] are 32-bit
unsigned and wrap around; ``ld #len`` is 64; ``div x`` with X == 0 ends the
program with return value 0; shifts by X use X & 31. seccomp_data is laid out
in the byte order of the given architecture, so on big-endian ones ``ld [16]``
reads the high half of ``args[0]``.

For speed the program is translated once into Python functions, one per basic
block (generated source, compiled with ``exec``); :meth:`Emulator.run` then
costs one call per block executed. Programs are checked with
:func:`sysgate.bpf.checker.check` first, so the generated code never sees an
instruction seccomp would refuse.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, NamedTuple, Sequence

from ..kernel import abi
from ..kernel.abi import SeccompData
from .checker import check
from .syntax import U32
from .disasm import as_program, insn_text, jump_targets
from .insn import (BPF_ABS, BPF_ADD, BPF_ALU, BPF_AND, BPF_DIV, BPF_IMM, BPF_JA, BPF_JEQ, BPF_JGE, BPF_JGT,
                   BPF_JSET, BPF_K, BPF_LD, BPF_LDX, BPF_LEN, BPF_LSH, BPF_MEM, BPF_MEMWORDS,
                   BPF_MISC, BPF_MUL, BPF_NEG, BPF_OR, BPF_RET, BPF_RSH, BPF_ST, BPF_STX, BPF_SUB, BPF_TAX,
                   BPF_TXA, BPF_W, BPF_X, BPF_XOR, Insn, bpf_op, bpf_src)

U64 = 0xFFFFFFFFFFFFFFFF

#: Python statement for each straight-line instruction (``{k}`` is the constant).
_STATEMENTS = {
    BPF_LD | BPF_W | BPF_ABS: "A = w[{w}]",
    BPF_LD | BPF_IMM: "A = {k}",
    BPF_LD | BPF_W | BPF_LEN: f"A = {abi.SECCOMP_DATA_SIZE}",
    BPF_LDX | BPF_W | BPF_LEN: f"X = {abi.SECCOMP_DATA_SIZE}",
    BPF_LDX | BPF_IMM: "X = {k}",
    BPF_LD | BPF_MEM: "A = M[{k}]",
    BPF_LDX | BPF_MEM: "X = M[{k}]",
    BPF_ST: "M[{k}] = A",
    BPF_STX: "M[{k}] = X",
    BPF_MISC | BPF_TAX: "X = A",
    BPF_MISC | BPF_TXA: "A = X",
    BPF_ALU | BPF_NEG: "A = -A & 0xffffffff",
}
_ALU = {BPF_ADD: "A = (A + {v}) & 0xffffffff", BPF_SUB: "A = (A - {v}) & 0xffffffff",
        BPF_MUL: "A = (A * {v}) & 0xffffffff", BPF_DIV: "A //= {v}", BPF_AND: "A &= {v}", BPF_OR: "A |= {v}",
        BPF_XOR: "A ^= {v}", BPF_LSH: "A = (A << {v}) & 0xffffffff", BPF_RSH: "A >>= {v}"}
_TESTS = {BPF_JEQ: "A == {v}", BPF_JGT: "A > {v}", BPF_JGE: "A >= {v}", BPF_JSET: "A & {v}"}
#: DIV by X == 0 returns 0 from the whole program.
_DIV_X = BPF_ALU | BPF_DIV | BPF_X


def _statement(insn: Insn) -> str:
    code, _, _, k = insn
    if code in _STATEMENTS:
        return _STATEMENTS[code].format(k=k, w=k >> 2)
    op = bpf_op(code)
    if bpf_src(code) == BPF_K:
        return _ALU[op].format(v=k)
    if op in (BPF_LSH, BPF_RSH):
        return _ALU[op].format(v="(X & 31)")
    if code == _DIV_X:
        return "if not X: return -1, A, X\n    A //= X"
    return _ALU[op].format(v="X")


def _ending(pc: int, insn: Insn) -> str:
    """The ``return next, A, X`` of a block ending with ``insn`` (a return value v is ``~v``)."""
    code, jt, jf, k = insn
    if code == BPF_RET | BPF_K:
        return f"return {~k}, A, X"
    if code & 0x07 == BPF_RET:
        return "return ~A, A, X"
    if bpf_op(code) == BPF_JA:
        return f"return {pc + 1 + k}, A, X"
    test = _TESTS[bpf_op(code)].format(v=k if bpf_src(code) == BPF_K else "X")
    return f"return ({pc + 1 + jt} if {test} else {pc + 1 + jf}), A, X"


def _ends_block(insn: Insn) -> bool:
    return insn.is_jump or insn.is_ret or insn.code == _DIV_X


@lru_cache(maxsize=256)
def _translate(prog: tuple[Insn, ...], every_insn: bool) -> tuple[list, list[int]]:
    """Per-block functions ``f(w, A, X, M) -> (next pc or ~ret, A, X)`` indexed by the
    block's first pc, and the number of instructions in each block (cached: translating
    costs about 50 µs per block)."""
    leaders = {0}
    for pc, (insn, targets) in enumerate(zip(prog, jump_targets(list(prog)))):
        if every_insn or _ends_block(insn):
            leaders.add(pc + 1)
        if insn.is_jump:
            leaders.update(targets)
    starts = sorted(p for p in leaders if p < len(prog))
    source, sizes = [], [0] * len(prog)
    for start, stop in zip(starts, starts[1:] + [len(prog)]):
        block, last = prog[start:stop], prog[stop - 1]
        if last.is_jump or last.is_ret:
            body = [_statement(i) for i in block[:-1]] + [_ending(stop - 1, last)]
        else:
            body = [_statement(i) for i in block] + [f"return {stop}, A, X"]
        source.append(f"def b{start}(w, A, X, M):\n    " + "\n    ".join(body) + "\n")
        sizes[start] = stop - start
    namespace: dict = {}
    exec(compile("\n".join(source), "<bpf-emulator>", "exec"), namespace)  # noqa: S102 - generated above
    blocks = [namespace.get(f"b{pc}") for pc in range(len(prog))]
    return blocks, sizes


class TraceStep(NamedTuple):
    """One executed instruction and the registers after it."""

    pc: int
    insn: Insn
    a: int
    x: int


@dataclass(frozen=True)
class Trace:
    ret: int
    steps: tuple[TraceStep, ...]

    @property
    def count(self) -> int:
        return len(self.steps)


class Emulator:
    """A checked, translated program; :meth:`run` it on many inputs."""

    def __init__(self, program: Iterable[Insn] | bytes, arch: str | None = None):
        self.program = as_program(program)
        check(self.program)
        self.arch = abi.arch_or_native(arch)
        order = ">" if abi.is_big_endian(self.arch) else "<"
        self._layout = struct.Struct(f"{order}IIQ6Q")
        self._words = struct.Struct(f"{order}16I")
        self._blocks, self._sizes = _translate(tuple(self.program), every_insn=False)
        self._steps: tuple | None = None

    def words(self, data: SeccompData) -> tuple[int, ...]:
        """seccomp_data as the 16 32-bit words a filter loads (``ld [4*i]``)."""
        args = tuple(a & U64 for a in data.args) + (0,) * (6 - len(data.args))
        raw = self._layout.pack(data.nr & U32, data.arch & U32, data.instruction_pointer & U64, *args)
        return self._words.unpack(raw)

    def run(self, data: SeccompData) -> tuple[int, int]:
        """(filter return value, instructions executed)."""
        return self.run_words(self.words(data))

    def run_words(self, w: Sequence[int]) -> tuple[int, int]:
        """Like :meth:`run` on data already turned into :meth:`words`."""
        blocks, sizes = self._blocks, self._sizes
        a = x = pc = count = 0
        memory = [0] * BPF_MEMWORDS
        while pc >= 0:
            count += sizes[pc]
            pc, a, x = blocks[pc](w, a, x, memory)
        return ~pc, count

    def trace(self, data: SeccompData) -> Trace:
        """Run instruction by instruction, recording the registers after each."""
        if self._steps is None:
            self._steps = _translate(tuple(self.program), every_insn=True)[0]
        w, memory = self.words(data), [0] * BPF_MEMWORDS
        a = x = pc = 0
        steps = []
        while pc >= 0:
            at = pc
            pc, a, x = self._steps[pc](w, a, x, memory)
            steps.append(TraceStep(at, self.program[at], a, x))
        return Trace(~pc, tuple(steps))


def emulate(program: Iterable[Insn] | bytes, data: SeccompData, arch: str | None = None) -> tuple[int, int]:
    """One-off run: (return value, instructions executed). Reuse an :class:`Emulator` for many."""
    return Emulator(program, arch).run(data)


def format_step(step: TraceStep, arch: str | None = None) -> str:
    """``   12: jeq #257, L16     A=0x00000101 X=0x00000000`` for a trace listing (jump
    targets are absolute, named like the disassembler's labels)."""
    text = insn_text(step.insn, arch, lambda offset: f"L{step.pc + 1 + offset}")
    return f"{step.pc:5}: {text:<32} A=0x{step.a:08x} X=0x{step.x:08x}"
