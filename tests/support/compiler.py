"""Shared pieces of the compiler tests: hypothesis strategies for random policies,
the reference verdict (``Policy.decide`` plus the architecture rules), running a
program on seccomp_data, and the kernel's action-cache emulation."""
from __future__ import annotations

from functools import cache

from hypothesis import strategies as st

from sysgate.arch import syscalls
from sysgate.bpf import insn as bpf
from sysgate.bpf.emulator import Emulator
from sysgate.compiler.args import extends_low_word
from sysgate.kernel import abi
from sysgate.kernel.abi import SeccompData
from sysgate.policy.model import ALLOW, Action, And, Cmp, Not, Or, Policy, Rule

MAX32 = 0xFFFFFFFF
MAX64 = (1 << 64) - 1
X32_BIT = abi.X32_SYSCALL_BIT
EDGE_VALUES = (0, 1, 2, MAX32 - 1, MAX32, 1 << 32, (1 << 32) + 1, 1 << 63, MAX64 - 1, MAX64,
               0x1_0000_0005, 0xFFFF_FFFF_0000_0005, 5, 0x8000_0000)


# --- running programs -----------------------------------------------------------
def emulator(program, arch: str) -> Emulator:
    """The project's emulator for ``program`` (it runs the checker first)."""
    return Emulator(program.insns if hasattr(program, "insns") else program, arch)


def verdict(program, nr: int, arch: str, args=(0,) * 6, emu: Emulator | None = None) -> int:
    emu = emu or emulator(program, arch)
    return emu.run(SeccompData(nr & MAX32, abi.AUDIT_ARCH[arch], 0, tuple(args)))[0]


#: Conditional jumps against a constant -> whether they jump to ``jt``.
_CONSTANT_TESTS = {
    bpf.BPF_JMP | bpf.BPF_JEQ | bpf.BPF_K: lambda a, k: a == k,
    bpf.BPF_JMP | bpf.BPF_JGT | bpf.BPF_K: lambda a, k: a > k,
    bpf.BPF_JMP | bpf.BPF_JGE | bpf.BPF_K: lambda a, k: a >= k,
    bpf.BPF_JMP | bpf.BPF_JSET | bpf.BPF_K: lambda a, k: bool(a & k),
}


def cacheable(insns: list[bpf.Insn], nr: int, arch: str) -> bool:
    """The kernel's seccomp_is_const_allow(): emulate with only nr and arch known;
    any other load, or an unknown instruction, means "not cacheable"."""
    a, pc, audit = 0, 0, abi.AUDIT_ARCH[arch]
    while pc < len(insns):
        ins = insns[pc]
        code, k = ins.code, ins.k
        if code == bpf.BPF_LD | bpf.BPF_W | bpf.BPF_ABS:
            if k == abi.OFFSET_NR:
                a = nr
            elif k == abi.OFFSET_ARCH:
                a = audit
            else:
                return False
        elif code == bpf.BPF_RET | bpf.BPF_K:
            return k == abi.SECCOMP_RET_ALLOW
        elif code == bpf.BPF_JMP | bpf.BPF_JA:
            pc += k
        elif code in _CONSTANT_TESTS:
            pc += ins.jt if _CONSTANT_TESTS[code](a, k) else ins.jf
        elif code == bpf.BPF_ALU | bpf.BPF_AND | bpf.BPF_K:
            a &= k
        else:
            return False
        pc += 1
    raise AssertionError("ran off the end of the filter")


# --- reference semantics ------------------------------------------------------------
def narrowed(policy: Policy) -> Policy:
    """The policy as a 32-bit architecture applies it: comparisons on 32 bits, except that a
    64-bit constant that is no extension of its low word meets the argument's high word of 0."""
    def narrow(e):
        if isinstance(e, Cmp):
            if e.width == 64 and not extends_low_word(e.value):
                return e        # a constant beyond 32 bits: compared with the zero-extended argument
            return Cmp(e.arg, e.op, e.value & MAX32, None if e.mask is None else e.mask & MAX32, 32)
        if isinstance(e, Not):
            return Not(narrow(e.item))
        if isinstance(e, (And, Or)):
            return type(e)(tuple(narrow(i) for i in e.items))
        return e

    rules = [Rule(r.syscall, r.action, None if r.condition is None else narrow(r.condition), r.source)
             for r in policy.rules]
    return Policy(policy.default, list(policy.arches), rules, policy.bad_arch, policy.allow_x32, policy.name)


def expected(policy: Policy, arches: list[str], nr: int, arch: str, args) -> int:
    """What the compiled filter must return for ``nr``/``args`` coming from ``arch``."""
    nr &= MAX32
    x32 = "x32" in arches or (policy.allow_x32 and "x86_64" in arches)
    if nr == MAX32:
        return ALLOW.ret()
    if arch in ("x86_64", "x32"):
        arch = "x32" if nr & X32_BIT else "x86_64"
        if arch == "x32" and not x32:
            return policy.bad_arch.ret()
    if arch not in arches and not (arch == "x32" and x32):
        return policy.bad_arch.ret()
    name = syscalls.name(arch, nr)
    if name is None:
        return policy.default.ret()
    if not abi.is_64bit(arch) and arch != "x32":
        policy, args = narrowed(policy), tuple(a & MAX32 for a in args)
    return policy.decide(name, tuple(args))[0].ret()


# --- strategies --------------------------------------------------------------------
@cache
def table_names(arch: str = "x86_64") -> tuple[str, ...]:
    return tuple(sorted(syscalls.table(arch)))


ACTIONS = st.one_of(
    st.just(Action("allow")), st.just(Action("kill_process")), st.just(Action("kill_thread")),
    st.just(Action("log")), st.just(Action("trap")),
    st.builds(Action, st.just("errno"), st.integers(1, 4095)),
    st.builds(Action, st.just("trace"), st.integers(0, 0xFFFF)),
)

values = st.one_of(st.sampled_from(EDGE_VALUES), st.integers(0, MAX64),
                   st.integers(0, 0xFFFF), st.integers(0, 7).map(lambda h: (h << 32) | 5))


@st.composite
def comparisons(draw, ops=Cmp.OPS, widths=(64, 32), args=range(6)):
    op = draw(st.sampled_from(ops))
    value = draw(values)
    mask = draw(values) if op == "&==" else None
    if op == "&==" and draw(st.booleans()):
        value &= mask  # satisfiable more often
    return Cmp(draw(st.sampled_from(list(args))), op, value, mask, draw(st.sampled_from(widths)))


def conditions(depth: int = 3):
    leaf = comparisons()
    return st.recursive(
        leaf,
        lambda inner: st.one_of(st.builds(Not, inner),
                                st.lists(inner, min_size=1, max_size=3).map(lambda xs: And(tuple(xs))),
                                st.lists(inner, min_size=1, max_size=3).map(lambda xs: Or(tuple(xs)))),
        max_leaves=depth * 2)


@st.composite
def policies(draw, arches=("x86_64",), names=None, condition=None, max_rules=20):
    names = names or draw(st.lists(st.sampled_from(table_names()), min_size=1, max_size=8, unique=True))
    condition = conditions() if condition is None else condition
    rules = draw(st.lists(st.builds(Rule, st.sampled_from(names), ACTIONS,
                                    st.one_of(st.none(), condition)), max_size=max_rules))
    return Policy(default=draw(ACTIONS), arches=list(arches), rules=rules, bad_arch=draw(ACTIONS),
                  allow_x32=draw(st.booleans()))


def probe_values(policy: Policy) -> list[int]:
    """Argument values near every constant of the policy (boundaries, hi-word-only changes)."""
    out = set(EDGE_VALUES)

    def visit(e):
        if isinstance(e, Cmp):
            for v in (e.value, e.mask or 0):
                out.update({v, (v + 1) & MAX64, (v - 1) & MAX64, v ^ (1 << 32), v & MAX32,
                            v | (MAX32 << 32), (v & MAX32) | (1 << 40)})
        elif isinstance(e, Not):
            visit(e.item)
        elif isinstance(e, (And, Or)):
            for i in e.items:
                visit(i)

    for rule in policy.rules:
        if rule.condition is not None:
            visit(rule.condition)
    return sorted(out)


def random_condition(rng, depth: int = 2):
    """A random condition (for policies too big to draw through hypothesis)."""
    if depth == 0 or rng.random() < 0.5:
        op = rng.choice(Cmp.OPS)
        value = rng.choice(EDGE_VALUES + (rng.getrandbits(64), rng.randrange(100)))
        mask = rng.choice(EDGE_VALUES + (rng.getrandbits(64),)) if op == "&==" else None
        return Cmp(rng.randrange(6), op, value, mask, rng.choice((32, 64)))
    kind = rng.choice((And, Or, Not))
    if kind is Not:
        return Not(random_condition(rng, depth - 1))
    return kind(tuple(random_condition(rng, depth - 1) for _ in range(rng.randint(1, 3))))


def random_policy(rng, n_rules: int, names=None, arches=("x86_64",), conditional: float = 0.5) -> Policy:
    names = names or table_names()
    actions = [Action("allow"), Action("kill_process"), Action("log"), Action("trap"),
               *(Action("errno", e) for e in range(1, 6))]
    rules = [Rule(rng.choice(names), rng.choice(actions),
                  random_condition(rng) if rng.random() < conditional else None) for _ in range(n_rules)]
    return Policy(default=rng.choice(actions), arches=list(arches), rules=rules, bad_arch=rng.choice(actions))


def hypothesis_settings(examples: int):
    from hypothesis import HealthCheck, settings

    return settings(max_examples=examples, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example,
                                           HealthCheck.data_too_large])
