"""The kernel's action cache (5.11+) must cover every unconditionally allowed syscall:
emulating the filter as seccomp_cache_prepare() does (only nr and arch known, any
other load aborts) must reach ALLOW exactly for the numbers the policy allows
whatever the arguments."""
from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from support.compiler import (cacheable, comparisons, expected, hypothesis_settings, policies, probe_values,
                              table_names)
from sysgate.arch import syscalls
from sysgate.compiler import compile_policy
from sysgate.policy_loader import load_policy
from sysgate.policy.model import ALLOW, And, Cmp

PODMAN = "/usr/share/containers/seccomp.json"


def always_allowed(policy, arch: str) -> set[int]:
    """Numbers whose every possible outcome (rules up to the first unconditional one,
    then the default) is ALLOW."""
    top = max(syscalls.table(arch).values()) + 1
    out = set()
    for nr in range(top + 1):
        name = syscalls.name(arch, nr)
        outcomes = []
        for rule in policy.rules:
            if rule.syscall == name:
                outcomes.append(rule.action)
                if rule.condition is None:
                    break
        else:
            outcomes.append(policy.default)
        if all(a.ret() == ALLOW.ret() for a in outcomes):
            out.add(nr)
    return out


def allowed_for_every_argument(policy, arch: str, nr: int) -> bool:
    """Semantic check for a number the syntactic rule above misses: a later rule can be shadowed
    (``arg1 == 1`` twice: the second outcome is unreachable), which the compiler may see. The
    conditions here are conjunctions of comparisons on distinct arguments, so each argument's
    behaviour changes only at the constants: trying every constant, its neighbours and the edges
    on each argument the syscall's rules name covers every region of the argument space."""
    name = syscalls.name(arch, nr)
    points: dict[int, set[int]] = {}
    for rule in policy.rules:
        if rule.syscall != name or rule.condition is None:
            continue
        for cmp in (rule.condition.items if isinstance(rule.condition, And) else (rule.condition,)):
            assert isinstance(cmp, Cmp)
            points.setdefault(cmp.arg, {0, 0xFFFFFFFF}).update({cmp.value - 1, cmp.value, cmp.value + 1})
    names = sorted(points)
    for values in itertools.product(*(sorted(points[a]) for a in names)):
        args = [0] * 6
        for a, v in zip(names, values):
            args[a] = v
        if expected(policy, policy.arches, nr, arch, tuple(args)) != ALLOW.ret():
            return False
    return True


def cached(program, arch: str) -> set[int]:
    top = max(syscalls.table(arch).values()) + 1
    return {nr for nr in range(top + 1) if cacheable(program.insns, nr, arch)}


def test_podman_profile_allowed_syscalls_are_all_cacheable():
    policy = load_policy(PODMAN, arch="x86_64")
    program = compile_policy(policy, ["x86_64", "i386", "x32"])
    for arch in ("x86_64", "i386"):
        allowed = always_allowed(policy, arch)
        assert len(allowed) > 250
        assert cached(program, arch) == allowed


# Conditions that are neither always true nor always false: conjunctions of
# comparisons on distinct arguments with non-extreme constants that fit in 32 bits (on a
# 32-bit arch such as i386 the argument's high word is 0, so `arg0 != 0x100000005` always
# holds there and the call is rightly cached; compile warns of such constants).
def _proper(cmp):
    return 0 < cmp.value < 0xFFFFFFFF and cmp.op != "&=="


proper_conditions = st.lists(comparisons(ops=("==", "!=", "<", ">", "<=", ">=")).filter(_proper),
                             min_size=1, max_size=3, unique_by=lambda c: c.arg).map(
    lambda cs: cs[0] if len(cs) == 1 else And(tuple(cs)))


@hypothesis_settings(60)
@given(policies(arches=("x86_64", "i386"), condition=proper_conditions,
                names=table_names()[:60] + ("read", "write", "openat", "mmap")))
def test_cacheable_equals_unconditionally_allowed(policy):
    program = compile_policy(policy, ["x86_64", "i386"])
    for arch in ("x86_64", "i386"):
        got, syntactic = cached(program, arch), always_allowed(policy, arch)
        assert syntactic <= got
        for nr in got - syntactic:
            assert allowed_for_every_argument(policy, arch, nr), (arch, nr)


@hypothesis_settings(40)
@given(policies(), st.randoms(use_true_random=False))
def test_cacheable_is_sound_for_any_condition(policy, rng):
    """With arbitrary (possibly tautological) conditions: every syntactically
    unconditional ALLOW is cached, and whatever is cached is allowed for all sampled args."""
    program = compile_policy(policy, ["x86_64"])
    got = cached(program, "x86_64")
    assert always_allowed(policy, "x86_64") <= got
    values = probe_values(policy)
    for nr in got:
        for _ in range(5):
            args = tuple(rng.choice(values) for _ in range(6))
            assert expected(policy, ["x86_64"], nr, "x86_64", args) == ALLOW.ret()
