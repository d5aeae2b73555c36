"""The compiled filters on the real kernel: random policies whose every action is an
ERRNO with its own value are installed in forked children (tests/support/bpfkernel.py) and
probed with real syscalls; the errno each call fails with must be the one the
reference semantics picks. Only nr == -1 is ever allowed (it runs nothing: ENOSYS)."""
from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from support.bpfkernel import expected_verdict, kernel_batch, probe_data
from support.compiler import MAX32, expected, hypothesis_settings, probe_values, random_condition, table_names
from sysgate.arch import syscalls
from sysgate.compiler import compile_policy
from sysgate.kernel import abi
from sysgate.policy.model import Action, Policy, Rule

NATIVE = abi.native_arch()


#: Syscalls seccomp does not filter: the kernel lets uretprobe and uprobe through (they raise
#: SIGILL outside a uprobe trampoline), so no filter verdict can be observed.
UNFILTERED = {"uretprobe", "uprobe"}


def errno_policy(rng: random.Random) -> Policy:
    names = rng.sample([n for n in table_names(NATIVE) if n not in UNFILTERED], 6)
    rules = [Rule(rng.choice(names), Action("errno", 100 + i), random_condition(rng) if rng.random() < 0.7 else None)
             for i in range(rng.randint(1, 12))]
    return Policy(default=Action("errno", 99), arches=[NATIVE], rules=rules, bad_arch=Action("errno", 98))


def _probes(policy: Policy, rng: random.Random) -> list[tuple[int, tuple[int, ...]]]:
    values = probe_values(policy)
    numbers = {syscalls.number(NATIVE, r.syscall) for r in policy.rules} | {1000, MAX32}
    if NATIVE == "x86_64":
        numbers.add(abi.X32_SYSCALL_BIT)  # x32 read: not targeted, so bad_arch
    return [(nr, tuple(rng.choice(values) for _ in range(6))) for nr in sorted(numbers) for _ in range(4)]


@hypothesis_settings(4)
@given(st.integers(0, 2**32))
def test_kernel_agrees_with_reference(seed):
    rng = random.Random(seed)
    cases, wanted = [], []
    for _ in range(8):
        policy = errno_policy(rng)
        probes = _probes(policy, rng)
        cases.append((compile_policy(policy).pack(), [probe_data(nr, args) for nr, args in probes]))
        wanted.append([expected_verdict(expected(policy, [NATIVE], nr, NATIVE, args)) for nr, args in probes])
    for (program, datas), got, want in zip(cases, kernel_batch(cases), wanted):
        for data, g, w in zip(datas, got, want):
            assert g == w, f"nr={data.nr} args={[hex(a) for a in data.args]}: kernel {g}, expected {w}"


def test_kernel_runs_the_podman_profile():
    from sysgate.policy_loader import load_policy

    policy = load_policy("/usr/share/containers/seccomp.json", arch=NATIVE)
    program = compile_policy(policy, policy.arches).pack()
    probes = [(n, (0,) * 6) for n in ("kexec_load", "add_key", "delete_module")]  # denied: nothing runs
    probes = [(syscalls.number(NATIVE, n), a) for n, a in probes if syscalls.number(NATIVE, n) is not None]
    probes += [(1000, (0,) * 6), (MAX32, (0,) * 6)]
    (got,) = kernel_batch([(program, [probe_data(nr, a) for nr, a in probes])])
    want = [expected_verdict(expected(policy, policy.arches, nr, NATIVE, a)) for nr, a in probes]
    assert got == want
