"""Shape of the compiler's output: architecture handling, argument comparisons,
code quality properties (no redundant loads, no jump to a jump, shared returns...),
size limit, frequencies and speed."""
from __future__ import annotations

import random

import pytest
from hypothesis import given

from support.compiler import (MAX32, MAX64, X32_BIT, emulator, expected, hypothesis_settings, policies,
                              random_policy, verdict)
from sysgate.arch import syscalls
from sysgate.bpf import insn as bpf
from sysgate.bpf.checker import check
from sysgate.bpf.disasm import jump_targets
from sysgate.compiler import CompileError, compile_policy
from sysgate.compiler.frequencies import parse_frequencies
from sysgate.errors import SourceError, SysgateError
from sysgate.kernel import abi
from sysgate.policy_loader import load_policy
from sysgate.policy.model import ALLOW, Action, Cmp, Policy, Rule

KILL = Action("kill_process")
EPERM = Action("errno", 1)
LD = bpf.BPF_LD | bpf.BPF_W | bpf.BPF_ABS


def _policy(*rules, default=KILL, arches=("x86_64",), **kw) -> Policy:
    return Policy(default=default, arches=list(arches), rules=list(rules), **kw)


# --- architectures --------------------------------------------------------------
def test_foreign_arch_gets_bad_arch():
    program = compile_policy(_policy(Rule("read", ALLOW), bad_arch=EPERM))
    for arch in ("i386", "aarch64", "s390x"):
        assert verdict(program, 0, arch) == EPERM.ret()
    assert verdict(program, 0, "x86_64") == ALLOW.ret()


def test_x32_numbers_rejected_unless_targeted():
    read_x32 = syscalls.number("x32", "read")
    assert read_x32 == X32_BIT
    policy = _policy(Rule("read", ALLOW), default=EPERM, bad_arch=Action("errno", 7))
    plain = compile_policy(policy)
    assert verdict(plain, read_x32, "x86_64") == Action("errno", 7).ret()
    assert verdict(plain, X32_BIT + 999, "x86_64") == Action("errno", 7).ret()
    for targeted in (compile_policy(policy, ["x86_64", "x32"]),
                     compile_policy(_policy(Rule("read", ALLOW), default=EPERM, allow_x32=True))):
        assert verdict(targeted, read_x32, "x86_64") == ALLOW.ret()
        assert verdict(targeted, X32_BIT + 999, "x86_64") == EPERM.ret()
        assert verdict(targeted, 0, "x86_64") == ALLOW.ret()


def test_x32_only_rejects_x86_64_numbers():
    program = compile_policy(_policy(Rule("read", ALLOW), bad_arch=EPERM), ["x32"])
    assert verdict(program, 0, "x86_64") == EPERM.ret()
    assert verdict(program, X32_BIT, "x86_64") == ALLOW.ret()


@pytest.mark.parametrize("arches", [["x86_64"], ["x86_64", "i386", "x32"], ["aarch64"], ["s390x", "x86_64"]])
def test_nr_minus_one_is_allowed(arches):
    """A tracer that skips a syscall shows the filter nr -1: let it through on every arch."""
    program = compile_policy(_policy(Rule("read", EPERM), default=KILL, bad_arch=KILL), arches)
    for arch in arches:
        assert verdict(program, MAX32, arch) == ALLOW.ret()
        assert verdict(program, MAX32 - 1, arch) != ALLOW.ret()


def test_unknown_arch_is_a_compile_error():
    with pytest.raises(CompileError, match="unknown architecture"):
        compile_policy(_policy(Rule("read", ALLOW)), ["vax"])


def test_arch_without_syscall_table_is_a_clear_error():
    with pytest.raises(SysgateError, match="no syscall table"):
        compile_policy(_policy(Rule("read", ALLOW)), ["mips"])


# --- argument comparisons -----------------------------------------------------------
WIDE = [0, 1, 4, 5, 6, MAX32 - 1, MAX32, 1 << 32, (1 << 32) + 5, (1 << 32) + 4, 5 << 32, (5 << 32) + 5,
        (5 << 32) + 6, (4 << 32) + 6, 1 << 63, MAX64 - 1, MAX64]


@pytest.mark.parametrize("op", Cmp.OPS)
@pytest.mark.parametrize("value", [5, (5 << 32) + 5, 0, MAX64, 1 << 32])
@pytest.mark.parametrize("arch", ["x86_64", "s390x"])
def test_64_bit_comparisons_on_both_byte_orders(op, value, arch):
    mask = (0xF << 32) | 0xF if op == "&==" else None
    cmp = Cmp(1, op, value & (mask if mask is not None else MAX64), mask)
    policy = _policy(Rule("openat", ALLOW, cmp), default=EPERM, arches=(arch,))
    emu = emulator(compile_policy(policy), arch)
    nr = syscalls.number(arch, "openat")
    for a in WIDE:
        args = (0, a, 0, 0, 0, 0)
        want = ALLOW.ret() if cmp.evaluate(args) else EPERM.ret()
        assert verdict(None, nr, arch, args, emu) == want, (op, hex(value), hex(a))


def test_32_bit_comparisons_ignore_the_high_word():
    policy = _policy(Rule("openat", ALLOW, Cmp(0, "==", -100 & MAX32, width=32)), default=EPERM)
    program = compile_policy(policy)
    nr = syscalls.number("x86_64", "openat")
    assert verdict(program, nr, "x86_64", (-100 & MAX64,)) == ALLOW.ret()
    assert verdict(program, nr, "x86_64", (-100 & MAX32,)) == ALLOW.ret()
    assert verdict(program, nr, "x86_64", (-101 & MAX64,)) == EPERM.ret()
    # only the low word is read
    loads = {i.k for i in program.insns if i.code == LD}
    assert abi.offset_arg(0) + 4 not in loads


def test_32_bit_arch_compares_low_words_only():
    policy = _policy(Rule("write", ALLOW, Cmp(0, "==", MAX64)), default=EPERM, arches=("i386",))
    program = compile_policy(policy)
    assert verdict(program, syscalls.number("i386", "write"), "i386", (MAX32,)) == ALLOW.ret()


# --- code quality ---------------------------------------------------------------------
def _paths_reload(program, data) -> bool:
    """True if the run loads a word the accumulator already holds from the previous load."""
    trace = emulator(program, "x86_64").trace(data)
    last = None
    for step in trace.steps:
        if step.insn.code == LD:
            if last == step.insn.k:
                return True
            last = step.insn.k
        elif not step.insn.is_jump:
            last = None
    return False


@hypothesis_settings(40)
@given(policies(arches=("x86_64", "i386")))
def test_output_is_clean(policy):
    program = compile_policy(policy)
    insns = program.insns
    check(insns)
    targets = jump_targets(insns)
    reached = {0}
    for i, (ins, succ) in enumerate(zip(insns, targets)):
        if i in reached:
            reached.update(succ)
        if ins.is_conditional:
            assert ins.jt != ins.jf, f"jt == jf at {i}"
            for off in (ins.jt, ins.jf):
                nxt = insns[i + 1 + off]
                assert not (nxt.is_jump and not nxt.is_conditional), f"jump to ja at {i}"
        elif ins.is_jump:
            assert ins.k != 0, f"ja 0 at {i}"
            assert not insns[i + 1 + ins.k].is_ret, f"ja to ret at {i}"
    assert reached == set(range(len(insns))), "unreachable instructions"
    rng = random.Random(1)
    for rule in policy.rules[:5]:
        nr = syscalls.number("x86_64", rule.syscall)
        args = tuple(rng.choice(WIDE) for _ in range(6))
        assert not _paths_reload(program, abi.SeccompData(nr, abi.AUDIT_ARCH["x86_64"], 0, args))


def test_small_program_shares_one_ret_per_action():
    policy = _policy(Rule("read", ALLOW), Rule("write", ALLOW, Cmp(0, "==", 1)), Rule("write", EPERM),
                     Rule("close", ALLOW), Rule("openat", Action("errno", 13), Cmp(2, "&==", 0, 3)),
                     default=EPERM)
    program = compile_policy(policy)
    rets = [i.k for i in program.insns if i.is_ret]
    assert len(rets) == len(set(rets)) == 4  # allow, errno(1), errno(13), kill (bad arch)


def test_consecutive_rules_on_one_argument_share_its_loads():
    rules = [Rule("ioctl", Action("errno", n), Cmp(1, "==", n)) for n in range(1, 9)]
    program = compile_policy(_policy(*rules, default=ALLOW))
    lo = abi.offset_arg(1)
    assert sum(1 for i in program.insns if i.code == LD and i.k == lo) == 1
    emu = emulator(program, "x86_64")
    nr = syscalls.number("x86_64", "ioctl")
    # arch, its check, nr, the dispatch, then one load and a compare per rule at most
    ret, count = emu.run(abi.SeccompData(nr, abi.AUDIT_ARCH["x86_64"], 0, (0, 8)))
    assert ret == Action("errno", 8).ret()
    assert count <= 4 + 3 + 1 + 8 + 2


def test_frequent_syscalls_are_reached_sooner():
    policy = load_policy("/usr/share/containers/seccomp.json", arch="x86_64")
    plain = emulator(compile_policy(policy, ["x86_64"]), "x86_64")
    hot = {"futex": 1000, "epoll_wait": 800, "read": 500}
    tuned = emulator(compile_policy(policy, ["x86_64"], frequencies=hot), "x86_64")

    def cost(emu, name):
        return emu.run(abi.SeccompData(syscalls.number("x86_64", name), abi.AUDIT_ARCH["x86_64"]))[1]

    assert sum(cost(tuned, n) * w for n, w in hot.items()) < sum(cost(plain, n) * w for n, w in hot.items())
    assert max(cost(tuned, n) for n in hot) <= 7  # arch (2), nr, at most 3 tests, ret


def test_argument_checks_do_not_make_the_longest_path():
    """A syscall with argument checks sits higher in the number dispatch, so that its
    checks do not add to the tree's depth: in podman's profile personality(2) (five allowed
    personas, 64-bit) costs no more than the deepest unconditional syscall plus one."""
    policy = load_policy("/usr/share/containers/seccomp.json", arch="x86_64")
    emu = emulator(compile_policy(policy, ["x86_64", "i386", "x32"]), "x86_64")
    top = max(syscalls.table("x86_64").values()) + 1
    counts = {nr: emu.run(abi.SeccompData(nr, abi.AUDIT_ARCH["x86_64"]))[1] for nr in range(top + 1)}
    personality = counts.pop(syscalls.number("x86_64", "personality"))
    assert personality <= max(counts.values()) + 1
    assert max(personality, *counts.values()) <= 14


def test_podman_profile_compiles_small():
    policy = load_policy("/usr/share/containers/seccomp.json", arch="x86_64")
    program = compile_policy(policy, ["x86_64", "i386", "x32"])
    assert len(program) <= 250
    assert program.arches == ["x86_64", "i386", "x32"]
    assert len(program.pack()) == 8 * len(program)


def test_long_programs_get_trampolines_and_stay_valid():
    rng = random.Random(3)
    policy = random_policy(rng, 500, arches=("x86_64", "i386", "x32"))
    program = compile_policy(policy)
    check(program.insns)
    assert len(program) > 1000
    emu = emulator(program, "x86_64")
    for rule in policy.rules[::10]:
        nr = syscalls.number("x86_64", rule.syscall)
        for _ in range(3):
            args = tuple(rng.choice(WIDE) for _ in range(6))
            assert verdict(None, nr, "x86_64", args, emu) == expected(policy, policy.arches, nr, "x86_64", args)


def test_too_big_is_a_compile_error():
    names = sorted(syscalls.table("x86_64"))[:300]
    rules = [Rule(n, Action("errno", 1 + i % 50), Cmp(i % 6, "<", (7 << 32) + i)) for i, n in enumerate(names)]
    rules += [Rule(n, Action("errno", 51 + i % 50), Cmp((i + 1) % 6, ">", (9 << 32) + i)) for i, n in enumerate(names)]
    with pytest.raises(CompileError, match="at most 4096"):
        compile_policy(_policy(*rules, default=ALLOW, arches=("x86_64", "i386", "x32")))


# --- frequency files ---------------------------------------------------------------------
def test_frequency_files():
    assert parse_frequencies('{"read": 3, "write": 1.5}') == {"read": 3.0, "write": 1.5}
    assert parse_frequencies("# calls\nread 10\nwrite: 2\n7 futex\nread 1\n") == {
        "read": 11.0, "write": 2.0, "futex": 7.0}
    with pytest.raises(SourceError, match="f:2"):
        parse_frequencies("read 1\nwrite\n", "f")
    with pytest.raises(SourceError, match="negative"):
        parse_frequencies('{"read": -1}', "f")
