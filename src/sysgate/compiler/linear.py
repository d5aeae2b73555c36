"""Linear code with symbolic jump targets, between layout and final assembly.

A :class:`Line` is one BPF instruction whose jump targets are other ``Line``
objects, not offsets; inserting or deleting lines therefore never breaks a jump.
Offsets are computed only by :func:`assemble`.
"""
from __future__ import annotations

from ..bpf import insn as bpf
from ..bpf.syntax import JUMP_OPS

LD = bpf.BPF_LD | bpf.BPF_W | bpf.BPF_ABS
AND = bpf.BPF_ALU | bpf.BPF_AND | bpf.BPF_K
RET = bpf.BPF_RET | bpf.BPF_K
JA = bpf.BPF_JMP | bpf.BPF_JA
MAX_OFFSET = 255
_ENDS_FLOW = (bpf.BPF_JMP, bpf.BPF_RET)  # the classes after which the next line is not run


class Line:
    """One instruction: ``code`` and ``k``; ``t``/``f`` are the targets of a conditional
    jump, ``t`` alone the target of ``ja``."""

    __slots__ = ("code", "k", "t", "f")

    def __init__(self, code: int, k: int = 0, t: "Line | None" = None, f: "Line | None" = None):
        self.code, self.k, self.t, self.f = code, k, t, f

    @classmethod
    def jump(cls, op: str, k: int, t: "Line | None" = None, f: "Line | None" = None) -> "Line":
        return cls(bpf.BPF_JMP | JUMP_OPS[op] | bpf.BPF_K, k, t, f)

    @property
    def is_ret(self) -> bool:
        return self.code == RET

    @property
    def is_ja(self) -> bool:
        return self.code == JA

    # bpf.bpf_class(code) is code & 0x07, inlined: the passes ask for every line, many times
    @property
    def is_conditional(self) -> bool:
        code = self.code
        return code & 0x07 == bpf.BPF_JMP and code != JA

    @property
    def falls_through(self) -> bool:
        """True when execution may continue with the next line."""
        return self.code & 0x07 not in _ENDS_FLOW

    def targets(self) -> tuple["Line", ...]:
        if self.is_conditional:
            return (self.t, self.f)
        if self.is_ja:
            return (self.t,)
        return ()

    def copy(self) -> "Line":
        return Line(self.code, self.k, self.t, self.f)

    def __repr__(self) -> str:
        return f"Line(0x{self.code:02x}, 0x{self.k:x})"


def positions(lines: list[Line]) -> dict[int, int]:
    return {id(line): i for i, line in enumerate(lines)}


def assemble(lines: list[Line]) -> list[bpf.Insn]:
    """Resolve targets to offsets. Every jump must point forward, conditional ones
    at most 255 instructions ahead."""
    pos = positions(lines)
    out = []
    for i, line in enumerate(lines):
        if line.is_conditional:
            jt, jf = pos[id(line.t)] - i - 1, pos[id(line.f)] - i - 1
            if not (0 <= jt <= MAX_OFFSET and 0 <= jf <= MAX_OFFSET):
                raise AssertionError(f"jump at {i} out of range ({jt}, {jf})")
            out.append(bpf.jump(line.code, line.k, jt, jf))
        elif line.is_ja:
            off = pos[id(line.t)] - i - 1
            if off < 0:
                raise AssertionError(f"backward ja at {i}")
            out.append(bpf.ja(off))
        else:
            out.append(bpf.stmt(line.code, line.k))
    return out
