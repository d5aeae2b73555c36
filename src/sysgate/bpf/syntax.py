"""The text form of classic BPF, shared by the assembler and the disassembler.

Mnemonics follow the kernel's bpf_asm (``ld``, ``ldh``, ``jeq``, ``ret``…);
``struct seccomp_data`` words have names (``nr``, ``arch``, ``ip.lo``,
``args[2].hi``) whose offsets depend on the architecture's byte order, and
return values print as actions (``ERRNO(13)``, ``KILL_PROCESS``).
"""
from __future__ import annotations

from ..arch import table
from ..kernel import abi
from .insn import (BPF_A, BPF_ABS, BPF_ADD, BPF_ALU, BPF_AND, BPF_B, BPF_DIV, BPF_H, BPF_IMM, BPF_IND,
                   BPF_JA, BPF_JEQ, BPF_JGE, BPF_JGT, BPF_JMP, BPF_JSET, BPF_K, BPF_LD, BPF_LDX, BPF_LEN,
                   BPF_LSH, BPF_MEM, BPF_MISC, BPF_MOD, BPF_MSH, BPF_MUL, BPF_NEG, BPF_OR, BPF_RET, BPF_RSH,
                   BPF_ST, BPF_STX, BPF_SUB, BPF_TAX, BPF_TXA, BPF_W, BPF_X, BPF_XOR)

U32 = 0xFFFFFFFF

#: ALU mnemonic -> BPF op (each has a ``#k`` and an ``x`` form; ``neg`` has neither).
ALU_OPS = {"add": BPF_ADD, "sub": BPF_SUB, "mul": BPF_MUL, "div": BPF_DIV, "mod": BPF_MOD,
           "and": BPF_AND, "or": BPF_OR, "xor": BPF_XOR, "lsh": BPF_LSH, "rsh": BPF_RSH}
#: Conditional jumps the hardware has: jump to the first target when the test holds.
JUMP_OPS = {"jeq": BPF_JEQ, "jgt": BPF_JGT, "jge": BPF_JGE, "jset": BPF_JSET}
#: Synthesised jumps: the real op with its two targets swapped (``jne`` = ``jeq`` inverted).
NEGATED_JUMPS = {"jne": BPF_JEQ, "jle": BPF_JGT, "jlt": BPF_JGE}
#: Accepted spellings of the above (bpf_asm's ``jneq``, ``jmp``).
ALIASES = {"jneq": "jne", "jmp": "ja", "jnet": "jne"}
#: Load-word mnemonic -> size bits, for ``ld``/``ldh``/``ldb``.
LOAD_SIZES = {"ld": BPF_W, "ldh": BPF_H, "ldb": BPF_B}

#: Every opcode classic BPF knows (the kernel's allow-table in bpf_check_classic).
CLASSIC_OPCODES = frozenset(
    [BPF_ALU | op | src for op in ALU_OPS.values() for src in (BPF_K, BPF_X)] + [BPF_ALU | BPF_NEG]
    + [BPF_LD | size | mode for size in (BPF_W, BPF_H, BPF_B) for mode in (BPF_ABS, BPF_IND)]
    + [BPF_LD | BPF_W | BPF_LEN, BPF_LD | BPF_IMM, BPF_LD | BPF_MEM]
    + [BPF_LDX | BPF_W | BPF_IMM, BPF_LDX | BPF_W | BPF_MEM, BPF_LDX | BPF_W | BPF_LEN, BPF_LDX | BPF_B | BPF_MSH]
    + [BPF_ST, BPF_STX, BPF_MISC | BPF_TAX, BPF_MISC | BPF_TXA, BPF_RET | BPF_K, BPF_RET | BPF_A]
    + [BPF_JMP | BPF_JA] + [BPF_JMP | op | src for op in JUMP_OPS.values() for src in (BPF_K, BPF_X)])

#: Opcodes whose ``k`` field means nothing (it must be 0 for the symbolic form).
K_UNUSED = frozenset(
    [BPF_ALU | op | BPF_X for op in ALU_OPS.values()] + [BPF_ALU | BPF_NEG]
    + [BPF_JMP | op | BPF_X for op in JUMP_OPS.values()]
    + [BPF_LD | BPF_W | BPF_LEN, BPF_LDX | BPF_W | BPF_LEN, BPF_MISC | BPF_TAX, BPF_MISC | BPF_TXA,
       BPF_RET | BPF_A])


# --------------------------------------------------------------------------- numbers
def format_number(k: int, hexadecimal: bool = False) -> str:
    """Canonical spelling of a constant: decimal below 65536 unless ``hexadecimal``."""
    return f"0x{k:x}" if hexadecimal or k >= 0x10000 else str(k)


#: ALU/jump ops whose constants are bit masks, printed in hex.
MASK_OPS = frozenset({BPF_AND, BPF_OR, BPF_XOR, BPF_JSET})


# --------------------------------------------------------------------------- seccomp_data
def _halves(arch: str) -> tuple[str, str]:
    """Names of the 32-bit words at +0 and +4 of a 64-bit field."""
    return ("hi", "lo") if abi.is_big_endian(arch) else ("lo", "hi")


def field_name(offset: int, arch: str) -> str | None:
    """Name of the seccomp_data word at ``offset`` (``nr``, ``args[1].hi``…), or None."""
    if offset == abi.OFFSET_NR:
        return "nr"
    if offset == abi.OFFSET_ARCH:
        return "arch"
    if offset % 4 or not abi.OFFSET_IP <= offset < abi.SECCOMP_DATA_SIZE:
        return None
    half = _halves(arch)[(offset // 4) % 2]
    if offset < abi.offset_arg(0):
        return f"ip.{half}"
    return f"args[{(offset - abi.offset_arg(0)) // 8}].{half}"


def field_offset(base: str, index: int | None, half: str | None, arch: str) -> int:
    """Offset of ``base[index].half``; ValueError naming what is wrong."""
    if base in ("nr", "arch"):
        if index is not None or half is not None:
            raise ValueError(f"'{base}' is a 32-bit field: it takes no index or .lo/.hi")
        return abi.OFFSET_NR if base == "nr" else abi.OFFSET_ARCH
    if base not in ("ip", "args"):
        raise ValueError(f"unknown seccomp_data field '{base}' (fields: nr, arch, ip.lo/hi, args[0-5].lo/hi)")
    if (base == "args") != (index is not None):
        raise ValueError("'args' needs an index, e.g. args[1].lo" if base == "args" else "'ip' takes no index")
    if half not in ("lo", "hi"):
        raise ValueError(f"'{base}' is 64 bits wide: say which half, .lo or .hi")
    start = abi.OFFSET_IP if base == "ip" else abi.offset_arg(index)
    return start + 4 * _halves(arch).index(half)


# --------------------------------------------------------------------------- actions
_ACTION_BY_VALUE = {value: name for name, value in abi.ACTIONS.items()}
#: Names accepted in immediates besides the actions: the AUDIT_ARCH_* constants.
ARCH_SYMBOLS = {f"AUDIT_ARCH_{a.name.upper()}": a.audit  # every kernel value, also of arches without tables
                for a in table.ARCHES if not a.nr_bit}    # (x32 reports x86_64's)
_ARCH_BY_VALUE = {value: name for name, value in ARCH_SYMBOLS.items()}


def format_action(ret: int) -> str | None:
    """``ERRNO(13)``, ``ALLOW``, ``TRACE(5)``… for a return value; None for an unknown action."""
    name = _ACTION_BY_VALUE.get(ret & abi.SECCOMP_RET_ACTION_FULL)
    if name is None:
        return None
    data = ret & abi.SECCOMP_RET_DATA
    return f"{name}({data})" if data or name == "ERRNO" else name


def action_value(name: str, data: int | None) -> int | None:
    """Return value for action ``name`` (``KILL`` = ``KILL_THREAD``) with ``data``; None if unknown."""
    base = abi.ACTIONS.get("KILL_THREAD" if name == "KILL" else name)
    if base is None:
        return None
    return base | (data or 0)


def arch_symbol(value: int) -> str | None:
    """``AUDIT_ARCH_X86_64`` for 0xc000003e, or None."""
    return _ARCH_BY_VALUE.get(value)
