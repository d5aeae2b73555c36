"""The compiler's result and its error type."""
from __future__ import annotations

from ..bpf import insn as bpf
from ..errors import SysgateError


class CompileError(SysgateError):
    """The policy cannot be compiled (too large, unknown syscall or architecture...)."""


class Program:
    """A compiled filter: ``insns`` for ``arches``; ``pack()`` gives the bytes for sock_fprog.
    (A plain class: creating a dataclass costs ``sysgate compile`` start-up time.)"""

    __slots__ = ("insns", "arches", "stats")

    def __init__(self, insns: list[bpf.Insn], arches: list[str], stats: dict | None = None):
        self.insns, self.arches, self.stats = insns, arches, {} if stats is None else stats

    def __eq__(self, other) -> bool:
        return isinstance(other, Program) and (self.insns, self.arches) == (other.insns, other.arches)

    __hash__ = None

    def __repr__(self) -> str:
        return f"Program({len(self.insns)} insns, {self.arches})"

    def pack(self, byteorder: str | None = None) -> bytes:
        """The bytes for sock_fprog in ``byteorder`` (None: this machine's, to install here;
        :attr:`byteorder` for a file the target kernel will load)."""
        return bpf.pack(self.insns, byteorder)

    @property
    def byteorder(self) -> str:
        """The byte order of the kernels of :attr:`arches`; CompileError when they mix both,
        since one program's bytes have one order (libseccomp refuses such a mix too)."""
        orders: dict[str, list[str]] = {}
        for arch in self.arches:
            orders.setdefault(bpf.byte_order(arch), []).append(arch)
        if len(orders) > 1:
            raise CompileError(f"the architectures mix little-endian ({', '.join(orders['little'])}) and "
                               f"big-endian ({', '.join(orders['big'])}) kernels, but a BPF program's bytes "
                               f"have one byte order: compile them separately")
        return next(iter(orders))

    def __len__(self) -> int:
        return len(self.insns)

    def __iter__(self):
        return iter(self.insns)
