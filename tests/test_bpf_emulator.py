"""The emulator against the running kernel: actions, ALU corner cases, random valid programs."""
from __future__ import annotations

import os
import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from support.bpfkernel import Verdict, expected_verdict, kernel_batch, probe_data
from support.bpfprograms import REVEAL_SHIFTS, syscall_args, unassigned_nrs, valid_programs
from sysgate.bpf.asm import assemble
from sysgate.bpf.checker import BPFCheckError
from sysgate.bpf.disasm import disassemble
from sysgate.bpf.emulator import Emulator, emulate, format_step
from sysgate.kernel import abi

NR = 1000
ARGS = (5, 0x1_0000_0007, 0xFFFFFFFF_FFFFFFFE, 0, 300, 9)

#: Programs whose result depends on one ALU/load corner case, each ending in ERRNO(A & 0xfff)
#: or a computed return value.
CORNERS = {
    "add wraps": "ld #0xffffffff\n add #2",
    "sub wraps": "ld #1\n sub #3",
    "mul wraps": "ld #0x10001\n mul #0x10001",
    "div": "ld #1000\n div #7",
    "div by x": "ld #1000\n ldx #9\n div x",
    "div by x = 0 returns 0": "ld #1000\n ldx #0\n div x",
    "neg": "ld #5\n neg",
    "lsh by x >= 32 uses x & 31": "ld #3\n ldx #33\n lsh x",
    "rsh by x >= 32 uses x & 31": "ld #0x3000\n ldx #40\n rsh x",
    "rsh by x = 32": "ld #0x3000\n ldx #32\n rsh x",
    "lsh #31": "ld #3\n lsh #31\n rsh #20",
    "len is 64": "ld #len",
    "ldx len": "ldx #len\n txa",
    "args lo": "ld args[1].lo",
    "args hi": "ld args[1].hi",
    "args[2] hi": "ld args[2].hi\n and #0xffff",
    "nr": "ld nr",
    "arch": "ld arch\n rsh #16",
    "memory": "ld #7\n st M[0]\n ldx #9\n stx M[15]\n ld M[15]\n ldx M[0]\n add x",
    "jset": "ld args[0].lo\n jset #4, t\n ld #1\n ja e\nt: ld #2\ne: add #0",
    "jgt x": "ld #5\n ldx #4\n jgt x, t\n ld #1\n ja e\nt: ld #2\ne: add #0",
    "jge signedness": "ld #0x80000000\n jge #1, t\n ld #1\n ja e\nt: ld #2\ne: add #0",
}


def _errno_of_a(body: str) -> list:
    return assemble(body + "\n and #0xfff\n or #ERRNO\n ret a")


def test_every_action_matches_the_kernel():
    data = probe_data(NR, ARGS)
    actions = ["ALLOW", "LOG", "ERRNO(0)", "ERRNO(13)", "ERRNO(4095)", "ERRNO(65535)", "TRAP(0)", "TRAP(77)",
               "TRACE(1)", "USER_NOTIF", "KILL_THREAD", "KILL_PROCESS", "0x12340000", "0x7fff0001", "0x7ffe0000",
               "0x10000"]
    programs = [assemble(f"ret #{a}") for a in actions]
    verdicts = kernel_batch([(p, [data]) for p in programs])
    for action, program, (got,) in zip(actions, programs, verdicts):
        value, count = emulate(program, data)
        assert count == 1
        assert got == expected_verdict(value), action


def test_allowed_probe_really_runs():
    """ALLOW lets a real syscall through: getppid() in the child returns this process's pid."""
    from sysgate.arch import syscalls

    getppid = syscalls.number(None, "getppid")
    program = assemble(f"ld nr\n jeq #{getppid}, 0, 1\n ret #ALLOW\n ret #ERRNO(9)")
    verdicts = kernel_batch([(program, [probe_data(getppid), probe_data(NR)])])[0]
    assert verdicts == [expected_verdict(abi.SECCOMP_RET_ALLOW, Verdict("returned", os.getpid())),
                        Verdict("errno", 9)]


@pytest.mark.parametrize("name", sorted(CORNERS))
def test_corner_cases_match_the_kernel(name):
    program = _errno_of_a(CORNERS[name])
    data = probe_data(NR, ARGS)
    (got,), = kernel_batch([(program, [data])])
    assert got == expected_verdict(emulate(program, data)[0]), disassemble(program)


def test_div_by_x_zero_returns_zero_and_counts_up_to_the_div():
    program = assemble("ld #1000\n ldx #0\n div x\n ret #ALLOW")
    assert emulate(program, probe_data(NR)) == (0, 3)


def test_corner_case_values():
    """A few exact results (the kernel agreement above checks the rest)."""
    data = abi.SeccompData(NR, abi.AUDIT_ARCH["x86_64"], 0, ARGS)
    run = lambda body: emulate(assemble(body + "\n ret a"), data, "x86_64")[0]  # noqa: E731
    assert run(CORNERS["add wraps"]) == 1
    assert run(CORNERS["sub wraps"]) == 0xFFFFFFFE
    assert run(CORNERS["mul wraps"]) == (0x10001 * 0x10001) & 0xFFFFFFFF
    assert run(CORNERS["lsh by x >= 32 uses x & 31"]) == 6
    assert run(CORNERS["len is 64"]) == 64
    assert run(CORNERS["args hi"]) == 1 and run(CORNERS["args lo"]) == 7


@pytest.mark.parametrize("arch", ["s390x", "ppc64le", "x86_64", "aarch64"])
def test_seccomp_data_follows_the_arch_byte_order(arch):
    data = abi.SeccompData(7, abi.AUDIT_ARCH[arch], 0x11_22334455, (0xAAAA_0000BBBB, 2, 3, 4, 5, 6))
    big = abi.is_big_endian(arch)
    words = Emulator([assemble("ret #ALLOW")[0]], arch).words(data)
    assert words[0] == 7 and words[1] == abi.AUDIT_ARCH[arch]
    assert words[2:4] == ((0x11, 0x22334455) if big else (0x22334455, 0x11))
    assert words[4:6] == ((0xAAAA, 0xBBBB) if big else (0xBBBB, 0xAAAA))
    # symbolic field names resolve to the right half on every arch
    lo = assemble(f".arch {arch}\n ld args[0].lo\n ret a")
    hi = assemble(f".arch {arch}\n ld args[0].hi\n ret a")
    assert emulate(lo, data, arch)[0] == 0xBBBB and emulate(hi, data, arch)[0] == 0xAAAA
    assert (lo[0].k == 20) == big


def test_emulator_refuses_invalid_programs():
    with pytest.raises(BPFCheckError) as err:
        Emulator(assemble("mod #3\n ret a", check=False))
    assert err.value.rule == "seccomp-opcode" and err.value.index == 0


def test_trace_follows_the_path():
    program = assemble("ld nr\n jeq #1000, yes\n ret #ALLOW\nyes: ld args[0].lo\n ret #ERRNO(1)")
    emulator = Emulator(program)
    trace = emulator.trace(probe_data(NR, ARGS))
    assert [s.pc for s in trace.steps] == [0, 1, 3, 4]
    assert (trace.ret, trace.count) == emulator.run(probe_data(NR, ARGS))
    assert trace.steps[2].a == 5
    assert format_step(trace.steps[1]).split()[1:4] == ["jeq", "#1000,", "L3"]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_programs(), unassigned_nrs, syscall_args)
def test_trace_and_fast_path_agree(program, nr, args):
    emulator = Emulator(program)
    data = abi.SeccompData(nr - (1 << 32) if nr >= 1 << 31 else nr, abi.AUDIT_ARCH["x86_64"], 0x1234, args)
    trace = emulator.trace(data)
    assert (trace.ret, trace.count) == emulator.run(data)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(st.tuples(valid_programs(), unassigned_nrs, syscall_args), min_size=8, max_size=8))
def test_random_valid_programs_match_the_kernel(cases):
    """The kernel's errno reveals A byte by byte (REVEAL); every probe must match the emulator."""
    batch = [(program, [probe_data(nr, args[:5] + (shift,)) for shift in REVEAL_SHIFTS])
             for program, nr, args in cases]
    for (program, datas), verdicts in zip(batch, kernel_batch(batch)):
        emulator = Emulator(program)
        expected = [expected_verdict(emulator.run(d)[0]) for d in datas]
        assert verdicts == expected, disassemble(program, numbers=True)


def test_speed():
    lines = ["ld arch", "jne #AUDIT_ARCH_X86_64, kill", "ld nr"] + [f"jeq #{i}, allow" for i in range(100)]
    program = assemble("\n".join(lines + ["ret #ERRNO(1)", "allow: ret #ALLOW", "kill: ret #KILL_PROCESS"]))
    emulator = Emulator(program, "x86_64")
    words = emulator.words(abi.SeccompData(99, abi.AUDIT_ARCH["x86_64"]))
    start, executed = time.perf_counter(), 0
    for _ in range(2000):
        executed += emulator.run_words(words)[1]
    rate = executed / (time.perf_counter() - start)
    assert executed == 2000 * 104  # ld arch, jne, ld nr, 100 jeq, ret
    assert rate > 300_000, f"{rate:.0f} instructions/s"
