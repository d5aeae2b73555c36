"""Hypothesis strategies for classic BPF programs: valid seccomp filters that
reveal their A register, and arbitrary (mostly invalid) instruction soup."""
from __future__ import annotations

from hypothesis import strategies as st

from sysgate.bpf.checker import BPFCheckError, check
from sysgate.bpf.insn import (BPF_ABS, BPF_ALU, BPF_DIV, BPF_IMM, BPF_JA, BPF_JMP, BPF_K, BPF_LD, BPF_LDX,
                              BPF_LEN, BPF_LSH, BPF_MEM, BPF_MISC, BPF_MOD, BPF_NEG, BPF_RET, BPF_RSH, BPF_ST, BPF_STX,
                              BPF_TAX, BPF_TXA, BPF_W, BPF_X, BPF_A, Insn, ret)
from sysgate.bpf.syntax import ALU_OPS, CLASSIC_OPCODES, JUMP_OPS
from sysgate.bpf.asm import assemble
from sysgate.kernel import abi

U32 = 0xFFFFFFFF
#: Constants that sit on the edges of the checker's and the ALU's rules.
EDGES = [0, 1, 2, 3, 4, 15, 16, 31, 32, 60, 63, 64, 255, 256, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000,
         0xFFFFF000, 0xFFFFF03C, 0xFFFFF040, U32]
constants = st.one_of(st.sampled_from(EDGES), st.integers(0, U32))
ACTIONS = [abi.SECCOMP_RET_ALLOW, abi.SECCOMP_RET_LOG, abi.SECCOMP_RET_ERRNO | 7, abi.SECCOMP_RET_ERRNO | 4095,
           abi.SECCOMP_RET_TRAP | 3, abi.SECCOMP_RET_TRACE | 1, abi.SECCOMP_RET_USER_NOTIF,
           abi.SECCOMP_RET_KILL_THREAD, abi.SECCOMP_RET_KILL_PROCESS, abi.SECCOMP_RET_ERRNO]

#: Ends every generated valid program's body: returns ERRNO(300 + byte) for byte
#: args[5] / 8 of A, so four probes reveal all of A through the kernel's errno.
REVEAL = assemble("st M[15]\n ld args[5].lo\n tax\n ld M[15]\n rsh x\n and #0xff\n add #300\n"
                  " or #ERRNO\n ret a", check=False, arch=abi.native_arch())
CONST_EXITS = [ret(abi.SECCOMP_RET_ERRNO | (1000 + j)) for j in range(4)]
REVEAL_SHIFTS = (0, 8, 16, 24)
#: ALU operations seccomp accepts (all but mod).
SECCOMP_ALU_OPS = [op for op in ALU_OPS.values() if op != BPF_MOD]


def _straight(draw) -> Insn:
    """One valid straight-line instruction (scratch memory is repaired afterwards)."""
    kind = draw(st.sampled_from(["ld", "ld", "ldi", "ldxi", "len", "tax", "txa", "alu", "alu", "alux", "neg",
                                 "st", "ldm"]))
    if kind == "ld":
        return Insn(BPF_LD | BPF_W | BPF_ABS, 0, 0, 4 * draw(st.integers(0, 15)))
    if kind in ("ldi", "ldxi"):
        return Insn((BPF_LD if kind == "ldi" else BPF_LDX) | BPF_IMM, 0, 0, draw(constants))
    if kind == "len":
        return Insn(draw(st.sampled_from([BPF_LD, BPF_LDX])) | BPF_W | BPF_LEN, 0, 0, 0)
    if kind in ("tax", "txa"):
        return Insn(BPF_MISC | (BPF_TAX if kind == "tax" else BPF_TXA))
    if kind == "neg":
        return Insn(BPF_ALU | BPF_NEG)
    if kind == "alux":
        op = draw(st.sampled_from(SECCOMP_ALU_OPS))
        return Insn(BPF_ALU | op | BPF_X)
    if kind == "alu":
        op = draw(st.sampled_from(SECCOMP_ALU_OPS))
        k = draw(constants)
        if op in (BPF_LSH, BPF_RSH):
            k %= 32
        if op == BPF_DIV and k == 0:
            k = 1
        return Insn(BPF_ALU | op | BPF_K, 0, 0, k)
    slot = draw(st.integers(0, 14))
    if kind == "st":
        return Insn(draw(st.sampled_from([BPF_ST, BPF_STX])), 0, 0, slot)
    return Insn(draw(st.sampled_from([BPF_LD, BPF_LDX])) | BPF_MEM, 0, 0, slot)


@st.composite
def valid_programs(draw, max_body: int = 30) -> list[Insn]:
    """A valid seccomp program: a random body (loads, ALU, scratch memory, forward jumps,
    a few returns) that ends in :data:`REVEAL`, followed by constant ERRNO(1000+j) exits."""
    n = draw(st.integers(1, max_body))
    reveal, exits = n, [n + len(REVEAL) + j for j in range(len(CONST_EXITS))]
    body = []
    for pc in range(n):
        kind = draw(st.sampled_from(["straight"] * 6 + ["cond", "cond", "ja", "ret"]))
        if kind == "straight":
            body.append(_straight(draw))
            continue
        if kind == "ret":
            use_a = draw(st.integers(0, 9)) == 0
            body.append(Insn(BPF_RET | BPF_A) if use_a else ret(draw(st.sampled_from(ACTIONS))))
            continue
        targets = list(range(pc + 1, n)) + [reveal] + exits
        if kind == "ja":
            body.append(Insn(BPF_JMP | BPF_JA, 0, 0, draw(st.sampled_from(targets)) - pc - 1))
            continue
        near = [t for t in targets if t - pc - 1 <= 255]
        jt, jf = (draw(st.sampled_from(near)) - pc - 1 for _ in range(2))
        op = draw(st.sampled_from(sorted(JUMP_OPS.values())))
        src = draw(st.sampled_from([BPF_K, BPF_X]))
        body.append(Insn(BPF_JMP | op | src, jt, jf, draw(constants) if src == BPF_K else 0))
    return repair_memory(body + REVEAL + CONST_EXITS)


def repair_memory(program: list[Insn]) -> list[Insn]:
    """Turn every load of a possibly unset scratch slot into a store of it."""
    program = list(program)
    while True:
        try:
            check(program)
            return program
        except BPFCheckError as exc:
            if exc.rule != "memory-unset":
                raise
            bad = program[exc.index]
            program[exc.index] = Insn(BPF_ST if bad.code == BPF_LD | BPF_MEM else BPF_STX, 0, 0, bad.k)


#: Syscall numbers no architecture assigns (and outside x32's range): safe to probe.
unassigned_nrs = st.one_of(st.integers(1000, 0x3FFFFFFF), st.integers(0x40001000, 0x7FFFFFFF),
                           st.integers(0x80000000, 0xFFFFFFFE))
syscall_args = st.lists(st.one_of(st.integers(0, 0xFFFFFFFFFFFFFFFF), st.sampled_from([0, 1, 0xFFFFFFFF])),
                        min_size=6, max_size=6).map(tuple)


# --------------------------------------------------------------------------- any program
def _near_valid_insn(draw) -> Insn:
    """Mostly plausible seccomp instructions with edge-case constants and offsets."""
    choice = draw(st.integers(0, 9))
    if choice == 0:
        code = draw(st.integers(0, 0xFFFF))
    elif choice <= 3:
        code = draw(st.sampled_from(sorted(CLASSIC_OPCODES)))
    elif choice == 9:
        return Insn(BPF_LD | BPF_W | BPF_ABS, 0, 0, draw(st.one_of(st.integers(0, 70), constants)))
    else:
        return _straight(draw) if choice < 8 else Insn(BPF_JMP | BPF_JA, 0, 0, draw(st.integers(0, 3)))
    small = st.integers(0, 4)
    return Insn(code, draw(st.one_of(small, st.integers(0, 255))), draw(st.one_of(small, st.integers(0, 255))),
                draw(constants))


@st.composite
def any_programs(draw, max_size: int = 12) -> list[Insn]:
    """Programs that may break any checker rule (and often end with a ret)."""
    body = [_near_valid_insn(draw) for _ in range(draw(st.integers(0, max_size)))]
    if draw(st.booleans()):
        body.append(draw(st.sampled_from([ret(abi.SECCOMP_RET_ALLOW), Insn(BPF_RET | BPF_A)])))
    return body


raw_insns = st.builds(Insn, st.integers(0, 0xFFFF), st.integers(0, 255), st.integers(0, 255), constants)
