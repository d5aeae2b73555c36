"""The compiler's result and its error type."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..bpf import insn as bpf
from ..errors import SysgateError


class CompileError(SysgateError):
    """The policy cannot be compiled (too large, unknown syscall or architecture...)."""


@dataclass
class Program:
    """A compiled filter: ``insns`` for ``arches``; ``pack()`` gives the bytes for sock_fprog."""

    insns: list[bpf.Insn]
    arches: list[str]
    stats: dict = field(default_factory=dict)

    def pack(self) -> bytes:
        return bpf.pack(self.insns)

    def __len__(self) -> int:
        return len(self.insns)

    def __iter__(self):
        return iter(self.insns)
