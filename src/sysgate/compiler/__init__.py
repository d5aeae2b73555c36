"""Policy -> seccomp BPF.

:func:`compile_policy` lowers a :class:`~sysgate.policy.model.Policy` to a decision
DAG (:mod:`.lower`: architecture check, number dispatch (:mod:`.dispatch`),
argument checks (:mod:`.args`), their jumps threaded through decided tests
(:mod:`.simplify`)), lays the DAG out as code with shared returns and trampolines
(:mod:`.emit`) and cleans it up (:mod:`.peephole`).
"""
from __future__ import annotations

from ..bpf.insn import BPF_MAXINSNS
from ..policy.model import Policy
from .emit import fix_far_jumps, layout
from .linear import assemble
from .lower import Lowering
from .peephole import optimize
from .program import CompileError, Program

__all__ = ["compile_policy", "CompileError", "Program"]


def compile_policy(policy: Policy, arches: list[str] | None = None, *,
                   frequencies: dict[str, float] | None = None) -> Program:
    """Compile ``policy`` for ``arches`` (default: the policy's own) into one BPF program.

    ``frequencies`` maps syscall names to relative call frequencies; the number
    dispatch then reaches frequent syscalls in fewer instructions (default: every
    syscall of the architecture's table equally likely).
    """
    lowering = Lowering(policy, list(arches or policy.arches), frequencies)
    root = lowering.build()
    lines = fix_far_jumps(optimize(layout(root)))
    insns = assemble(lines)
    if len(insns) > BPF_MAXINSNS:
        raise CompileError(f"{policy.name}: the filter needs {len(insns)} instructions but the kernel "
                           f"accepts at most {BPF_MAXINSNS}; simplify its argument conditions "
                           f"or compile fewer architectures at once")
    return Program(insns, lowering.arches, {"ranges": {v.audit: len(v.ranges) for v in lowering.views}})

