"""Compiled BPF == the policy's reference semantics (Policy.decide plus the
architecture rules), for random policies and random/edge seccomp_data."""
from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from support.compiler import (MAX32, X32_BIT, emulator, expected, hypothesis_settings, policies, probe_values,
                              random_policy, verdict)
from sysgate.arch import syscalls
from sysgate.compiler import compile_policy

SETTINGS = hypothesis_settings(30)


def _numbers(policy, arch: str) -> list[int]:
    nrs = {syscalls.number(arch, r.syscall) for r in policy.rules} - {None}
    table = syscalls.table(arch)
    nrs |= {0, 1, max(table.values()), max(table.values()) + 1, 1000, MAX32, MAX32 - 1, X32_BIT, 0x7FFF_FFFF}
    # the seams of the x32 sub-tree inside the x86_64 dispatch
    x32_top = max(syscalls.table("x32").values())
    nrs |= {X32_BIT - 1, X32_BIT | x32_top, X32_BIT | (x32_top + 1)}
    return sorted(nrs)


def _check(policy, arches, arch, rng, samples=12, extra_numbers=()):
    program = compile_policy(policy, arches)
    emu = emulator(program, arch)
    values = probe_values(policy)
    for nr in [*_numbers(policy, arch), *extra_numbers]:
        for _ in range(samples):
            args = tuple(rng.choice(values) for _ in range(6))
            want = expected(policy, arches, nr, arch, args)
            got = verdict(program, nr, arch, args, emu)
            assert got == want, (f"nr={nr:#x} arch={arch} args={[hex(a) for a in args]}: "
                                 f"got {got:#x}, want {want:#x}\n{policy}")
    return program


@SETTINGS
@given(policies(), st.randoms(use_true_random=False))
def test_x86_64_matches_reference(policy, rng):
    _check(policy, ["x86_64"], "x86_64", rng)


@SETTINGS
@given(policies(arches=("x86_64", "i386", "x32")), st.randoms(use_true_random=False))
def test_multi_arch_matches_reference(policy, rng):
    arches = ["x86_64", "i386", "x32"]
    _check(policy, arches, "x86_64", rng, samples=4)
    # i386 numbers of the same names (the policy's syscalls exist there too, mostly)
    _check(policy, arches, "i386", rng, samples=4)
    x32 = [syscalls.number("x32", r.syscall) for r in policy.rules]
    _check(policy, arches, "x86_64", rng, samples=4, extra_numbers=[n for n in x32 if n is not None])
    # a foreign architecture gets bad_arch for every number
    program = compile_policy(policy, arches)
    for nr in (0, 1, 59, MAX32):
        assert verdict(program, nr, "aarch64") == policy.bad_arch.ret()


@SETTINGS
@given(policies(arches=("s390x",), names=("read", "openat", "mmap", "ioctl", "socket")),
       st.randoms(use_true_random=False))
def test_big_endian_matches_reference(policy, rng):
    _check(policy, ["s390x"], "s390x", rng)


@SETTINGS
@given(policies(arches=("aarch64", "arm"), names=("read", "openat", "mmap", "ioctl", "write")),
       st.randoms(use_true_random=False))
def test_arm_pair_matches_reference(policy, rng):
    _check(policy, ["aarch64", "arm"], "aarch64", rng, samples=6)
    _check(policy, ["aarch64", "arm"], "arm", rng, samples=6)


def test_random_policy_smoke_many_rules():
    """A big random policy over the whole table (exercises trampolines and sharing)."""
    rng = random.Random(7)
    policy = random_policy(rng, 300, arches=("x86_64", "i386", "x32"))
    program = _check(policy, ["x86_64", "i386", "x32"], "x86_64", rng, samples=2)
    assert 1000 < len(program) <= 4096
