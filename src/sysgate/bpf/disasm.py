"""Classic BPF -> assembler text (the exact input syntax of :mod:`sysgate.bpf.asm`).

The output is canonical: ``assemble(disassemble(p)) == p`` for every program,
including invalid ones, and re-disassembling gives the same text. Jump targets
become labels ``L<index>``; seccomp_data loads, actions and AUDIT_ARCH values
print symbolically; comparisons against ``nr`` are annotated with syscall
names for the given architecture when the syscall tables are available.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

from ..arch import syscalls
from ..errors import SysgateError
from ..kernel import abi
from .insn import (BPF_ABS, BPF_ALU, BPF_IMM, BPF_IND, BPF_JA, BPF_JEQ, BPF_JGE, BPF_JGT, BPF_JMP, BPF_K,
                   BPF_LD, BPF_LDX, BPF_LEN, BPF_MEM, BPF_MISC, BPF_MSH, BPF_NEG, BPF_RET, BPF_ST, BPF_STX,
                   BPF_TAX, BPF_TXA, BPF_W, Insn, bpf_class, bpf_mode, bpf_op, bpf_size, bpf_src, unpack)
from .syntax import (ALU_OPS, CLASSIC_OPCODES, JUMP_OPS, K_UNUSED, LOAD_SIZES, MASK_OPS, arch_symbol,
                     field_name, format_action, format_number)

_ALU_NAMES = {op: name for name, op in ALU_OPS.items()}
_JUMP_NAMES = {op: name for name, op in JUMP_OPS.items()}
_INVERSE = {BPF_JEQ: "jne", BPF_JGT: "jle", BPF_JGE: "jlt"}
_SIZE_NAMES = {size: name for name, size in LOAD_SIZES.items()}
COMMENT_COLUMN = 40


def as_program(program: Iterable[Insn] | bytes) -> list[Insn]:
    """A program given as packed bytes or instructions, as a list of :class:`Insn`."""
    if isinstance(program, (bytes, bytearray, memoryview)):
        return unpack(bytes(program))
    return [Insn(*i) for i in program]


def raw_text(insn: Insn) -> str:
    """The ``.insn code, jt, jf, k`` form, which spells any 8 bytes."""
    return f".insn 0x{insn.code:02x}, {insn.jt}, {insn.jf}, 0x{insn.k:x}"


def insn_text(insn: Insn, arch: str | None = None, target: Callable[[int], str] = str) -> str:
    """One instruction as text; ``target(offset)`` spells a jump offset (default: the number)."""
    arch = abi.arch_or_native(arch)
    code, jt, jf, k = insn
    if code not in CLASSIC_OPCODES or (code in K_UNUSED and k) or ((jt or jf) and not insn.is_conditional):
        return raw_text(insn)
    cls = bpf_class(code)
    if cls == BPF_LD:
        return _load_text(code, k, arch)
    if cls == BPF_LDX:
        mode = bpf_mode(code)
        if mode == BPF_MSH:
            return f"ldxb 4*([{format_number(k)}]&0xf)"
        return {BPF_IMM: f"ldx #{format_number(k)}", BPF_MEM: f"ldx M[{format_number(k)}]",
                BPF_LEN: "ldx #len"}[mode]
    if cls in (BPF_ST, BPF_STX):
        return f"{'st' if cls == BPF_ST else 'stx'} M[{format_number(k)}]"
    if cls == BPF_ALU:
        op = bpf_op(code)
        if op == BPF_NEG:
            return "neg"
        operand = f"#{format_number(k, op in MASK_OPS)}" if bpf_src(code) == BPF_K else "x"
        return f"{_ALU_NAMES[op]} {operand}"
    if cls == BPF_JMP:
        return _jump_text(insn, target)
    if cls == BPF_RET:
        if code != BPF_RET | BPF_K:
            return "ret a"
        return f"ret #{format_action(k) or format_number(k, True)}"
    return "tax" if code == BPF_MISC | BPF_TAX else "txa"


def _load_text(code: int, k: int, arch: str) -> str:
    mode = bpf_mode(code)
    if mode == BPF_IMM:
        return f"ld #{format_number(k)}"
    if mode == BPF_LEN:
        return "ld #len"
    if mode == BPF_MEM:
        return f"ld M[{format_number(k)}]"
    name = _SIZE_NAMES[bpf_size(code)]
    if mode == BPF_IND:
        return f"{name} [x + {format_number(k)}]"
    field = field_name(k, arch) if bpf_size(code) == BPF_W else None
    return f"ld {field}" if field else f"{name} [{format_number(k)}]"


def _jump_text(insn: Insn, target: Callable[[int], str]) -> str:
    code, jt, jf, k = insn
    op = bpf_op(code)
    if op == BPF_JA:
        return f"ja {target(k)}"
    operand = f"#{format_number(k, op in MASK_OPS)}" if bpf_src(code) == BPF_K else "x"
    if jf == 0:
        return f"{_JUMP_NAMES[op]} {operand}, {target(jt)}"
    if jt == 0 and op in _INVERSE:
        return f"{_INVERSE[op]} {operand}, {target(jf)}"
    return f"{_JUMP_NAMES[op]} {operand}, {target(jt)}, {target(jf)}"


def jump_targets(program: list[Insn]) -> list[tuple[int, ...]]:
    """Absolute successor indexes of each instruction (empty for ``ret``)."""
    result = []
    for pc, insn in enumerate(program):
        if insn.is_ret:
            result.append(())
        elif insn.is_conditional:
            result.append((pc + 1 + insn.jt, pc + 1 + insn.jf))
        elif insn.is_jump:
            result.append((pc + 1 + insn.k,))
        else:
            result.append((pc + 1,))
    return result


def disassemble(program: Iterable[Insn] | bytes, arch: str | None = None, annotate: bool = True,
                numbers: bool = False) -> str:
    """Program -> text starting with ``.arch``; ``numbers`` adds each instruction's index as a comment."""
    prog = as_program(program)
    arch = abi.arch_or_native(arch)
    labelled = _rendered_targets(prog, arch)
    notes = annotations(prog, arch) if annotate else {}
    lines = [f".arch {arch}"]
    for pc, insn in enumerate(prog):
        def target(offset: int, pc: int = pc) -> str:
            return f"L{pc + 1 + offset}" if pc + 1 + offset in labelled else str(offset)

        label = f"L{pc}:" if pc in labelled else ""
        line = f"{label:<8}{insn_text(insn, arch, target)}"
        comment = "; ".join(filter(None, [str(pc) if numbers else "", notes.get(pc, "")]))
        if comment:
            line = f"{line:<{COMMENT_COLUMN}}# {comment}" if len(line) < COMMENT_COLUMN else f"{line} # {comment}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def _rendered_targets(prog: list[Insn], arch: str) -> set[int]:
    """Indexes the text refers to as jump targets (those inside the program get labels)."""
    found: set[int] = set()
    for pc, insn in enumerate(prog):
        if insn.is_jump:
            insn_text(insn, arch, lambda offset, pc=pc: found.add(pc + 1 + offset) or "")
    return {t for t in found if t < len(prog)}


# --------------------------------------------------------------------------- annotations
_UNKNOWN = object()


def annotations(prog: list[Insn], arch: str, successors: list[tuple[int, ...]] | None = None) -> dict[int, str]:
    """Comments for comparisons of ``nr`` (syscall names) and ``arch`` (AUDIT_ARCH names).

    Tracks which seccomp_data field A holds along every path (jumps only go forward,
    so one pass in order sees all predecessors of an instruction first)."""
    successors = successors or jump_targets(prog)
    holds: list = [None] * len(prog)
    notes = {}
    for pc, insn in enumerate(prog):
        state = _UNKNOWN if holds[pc] is None else holds[pc]
        if insn.is_conditional and bpf_src(insn.code) == BPF_K and state in ("nr", "arch"):
            note = _syscall_name(arch, insn.k) if state == "nr" else arch_symbol(insn.k)
            if note:
                notes[pc] = note
        state = _after(insn, state, arch)
        for nxt in successors[pc]:
            if nxt < len(prog):
                holds[nxt] = state if holds[nxt] in (None, state) else _UNKNOWN
    return notes


def _after(insn: Insn, state, arch: str):
    """What A holds after ``insn``: a field name, or _UNKNOWN."""
    code = insn.code
    if code == BPF_LD | BPF_W | BPF_ABS:
        return field_name(insn.k, arch) or _UNKNOWN
    if bpf_class(code) in (BPF_LD, BPF_ALU) or code == BPF_MISC | BPF_TXA:
        return _UNKNOWN
    return state


def _syscall_name(arch: str, nr: int) -> str | None:
    try:
        return syscalls.name(arch, nr)
    except SysgateError:  # no table for this architecture
        return None
