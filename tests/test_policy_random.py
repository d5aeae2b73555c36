"""Property tests: random policies printed as text and parsed back decide like a reference
evaluator; printing and OCI export round-trip; random text only ever raises SourceError."""
from __future__ import annotations

import json
from dataclasses import dataclass

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sysgate.arch import syscalls
from sysgate.errors import SourceError, SysgateError
from sysgate.policy import constants
from sysgate.policy.model import Action, And, Cmp, Not, Or, Policy, Rule
from sysgate.policy.oci import export_oci, import_oci
from sysgate.policy.parser import parse_policy
from sysgate.policy.printer import format_policy

SYSCALLS = ["openat", "kill", "mmap", "socket", "read", "clone"]
CONSTANTS = ["O_WRONLY", "O_RDWR", "O_CREAT", "O_ACCMODE", "AF_UNIX", "AF_INET", "PROT_EXEC", "PROT_WRITE",
             "CLONE_NEWUSER", "SIGKILL", "AT_FDCWD", "EPERM"]
INTERESTING = [0, 1, 2, 3, 9, 15, 16, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 1 << 32, (1 << 32) | 1,
               0xFFFFFFFFFFFFFFFF, 0x8000000000000000, 0o2000000, 0x10000000, 0x40]
SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- a tiny source-level AST with its own evaluator -------------------------------------------------------
@dataclass
class Value:
    value: int
    text: str


@dataclass
class Comparison:
    arg: str                 # a name, or "argN"
    cast: int | None         # u32()/u64()
    mask: Value | None
    op: str                  # relation or "in"
    values: list[Value]


@dataclass
class Combine:
    kind: str                # "&&" | "||" | "!"
    items: list


def width_of(syscall, cmp: Comparison) -> int:
    return cmp.cast or syscalls.arg_width(syscall, syscalls.arg_index(syscall, cmp.arg))


def evaluate(node, syscall, args) -> bool:
    if isinstance(node, Combine):
        if node.kind == "!":
            return not evaluate(node.items[0], syscall, args)
        results = [evaluate(i, syscall, args) for i in node.items]
        return all(results) if node.kind == "&&" else any(results)
    w = (1 << width_of(syscall, node)) - 1
    a = args[syscalls.arg_index(syscall, node.arg)] & w
    if node.mask is not None:
        a &= node.mask.value & w
    vals = [v.value & w for v in node.values]
    if node.op == "in":
        return a in vals
    v = vals[0]
    return {"==": a == v, "!=": a != v, "<": a < v, "<=": a <= v, ">": a > v, ">=": a >= v}[node.op]


def render(node, syscall, top=True) -> str:
    if isinstance(node, Combine):
        if node.kind == "!":
            return f"!({render(node.items[0], syscall, False)})"
        inner = f" {node.kind} ".join(render(i, syscall, False) for i in node.items)
        return inner if top else f"({inner})"
    arg = node.arg if node.cast is None else f"u{node.cast}({node.arg})"
    if node.mask is not None:
        arg = f"{arg} & {node.mask.text}"
    if node.op == "in":
        return f"{arg} in {{{', '.join(v.text for v in node.values)}}}"
    return f"{arg} {node.op} {node.values[0].text}"


@st.composite
def values(draw, width=64):
    kind = draw(st.sampled_from(["dec", "hex", "oct", "bin", "neg", "const", "or"]))
    if kind == "const":
        name = draw(st.sampled_from(CONSTANTS))
        v = constants.lookup(name)
        if v < 0 and -v > 1 << (width - 1) or v >= 1 << width:
            return Value(1, "1")
        return Value(v, name)
    if kind == "or":
        a, b = draw(st.sampled_from(CONSTANTS[:4])), draw(st.sampled_from(CONSTANTS[4:8]))
        return Value(constants.lookup(a) | constants.lookup(b), f"{a} | {b}")
    if kind == "neg":
        v = draw(st.integers(1, 1 << (width - 1)))
        return Value(-v, f"-{v}")
    v = draw(st.one_of(st.sampled_from([x for x in INTERESTING if x < 1 << width]), st.integers(0, (1 << width) - 1)))
    return Value(v, {"dec": str(v), "hex": hex(v), "oct": "0o%o" % v, "bin": bin(v)}[kind])


@st.composite
def comparisons(draw, syscall):
    params = syscalls.signature(syscall).params
    index = draw(st.integers(0, len(params) - 1))
    arg = draw(st.sampled_from([params[index].name, f"arg{index}"]))
    cast = draw(st.sampled_from([None, None, 32, 64]))
    width = cast or params[index].width
    mask = draw(st.one_of(st.none(), values(width)))
    ops = ["==", "!=", "in"] if mask is not None else ["==", "!=", "<", "<=", ">", ">=", "in"]
    op = draw(st.sampled_from(ops))
    vals = draw(st.lists(values(width), min_size=1, max_size=3)) if op == "in" else [draw(values(width))]
    return Comparison(arg, cast, mask, op, vals)


def conditions(syscall):
    return st.recursive(comparisons(syscall), lambda children: st.one_of(
        st.builds(lambda a: Combine("!", [a]), children),
        st.builds(lambda xs: Combine("&&", xs), st.lists(children, min_size=2, max_size=3)),
        st.builds(lambda xs: Combine("||", xs), st.lists(children, min_size=2, max_size=3))), max_leaves=6)


ACTIONS = st.sampled_from([("allow", Action("allow")), ("errno(EPERM)", Action("errno", 1)),
                           ("errno(13)", Action("errno", 13)), ("kill", Action("kill_thread")),
                           ("kill_process", Action("kill_process")), ("trap(3)", Action("trap", 3)),
                           ("log", Action("log")), ("notify(h)", Action("notify", handler="h")),
                           ("trace(0x10)", Action("trace", 16))])


@st.composite
def source_policies(draw):
    default = draw(ACTIONS)
    lines, reference = [f"default: {default[0]}"], []
    for _ in range(draw(st.integers(1, 6))):
        syscall = draw(st.sampled_from(SYSCALLS))
        kind = draw(st.sampled_from(["action", "condition", "both"]))
        cond = None if kind == "action" else draw(conditions(syscall))
        act = draw(ACTIONS) if kind != "condition" else ("allow", Action("allow"))
        if kind == "action":
            lines.append(f"{syscall}: {act[0]}")
        elif kind == "condition":
            lines.append(f"{syscall}: {render(cond, syscall)}")
        else:
            lines.append(f"{syscall}: {render(cond, syscall)} -> {act[0]}")
        reference.append((syscall, cond, act[1]))
    return "\n".join(lines) + "\n", default[1], reference


def reference_decide(default, reference, syscall, args):
    for name, cond, action in reference:
        if name == syscall and (cond is None or evaluate(cond, name, args)):
            return action
    return default


ARGS = st.tuples(*[st.one_of(st.sampled_from(INTERESTING), st.integers(0, (1 << 64) - 1)) for _ in range(6)])


@SETTINGS
@given(source_policies(), st.lists(st.tuples(st.sampled_from(SYSCALLS), ARGS), min_size=20, max_size=20))
def test_parsed_policy_decides_like_the_reference(generated, probes):
    text, default, reference = generated
    policy = parse_policy(text)
    for syscall, args in probes:
        assert policy.decide(syscall, args)[0] == reference_decide(default, reference, syscall, args), text


# --- model-level round trips ---------------------------------------------------------------------------------
def cmps(width_choices=(32, 64)):
    return st.builds(lambda arg, op, value, mask, width: Cmp(arg, op, value, mask if op == "&==" else None, width),
                     st.integers(0, 5), st.sampled_from(Cmp.OPS),
                     st.sampled_from(INTERESTING) | st.integers(0, 2**64 - 1),
                     st.sampled_from(INTERESTING), st.sampled_from(width_choices))


def exprs(width_choices=(32, 64)):
    return st.recursive(cmps(width_choices), lambda children: st.one_of(
        st.builds(Not, children),
        st.builds(lambda xs: And(tuple(xs)), st.lists(children, min_size=0, max_size=3)),
        st.builds(lambda xs: Or(tuple(xs)), st.lists(children, min_size=0, max_size=3))), max_leaves=5)


MODEL_ACTIONS = st.sampled_from([Action("allow"), Action("errno", 1), Action("errno", 22), Action("kill_thread"),
                                 Action("kill_process"), Action("trap"), Action("trap", 9), Action("log"),
                                 Action("notify"), Action("notify", handler="fs"), Action("trace", 3)])


def model_policies(expr_strategy, actions=MODEL_ACTIONS):
    rule = st.builds(lambda s, a, c: Rule(s, a, c), st.sampled_from(SYSCALLS), actions,
                     st.one_of(st.none(), expr_strategy))
    return st.builds(lambda d, rs, arches: Policy(default=d, rules=rs, arches=arches), actions,
                     st.lists(rule, max_size=6), st.sampled_from([["x86_64"], ["x86_64", "i386"], ["aarch64"]]))


@SETTINGS
@given(model_policies(exprs()), st.lists(st.tuples(st.sampled_from(SYSCALLS), ARGS), min_size=20, max_size=20))
def test_printed_policy_parses_back_to_the_same_decisions(policy, probes):
    text = format_policy(policy)
    back = parse_policy(text)
    assert back.default == policy.default and back.arches == policy.arches
    for syscall, args in probes:
        assert back.decide(syscall, args)[0] == policy.decide(syscall, args)[0], text


OCI_ACTIONS = st.sampled_from([Action("allow"), Action("errno", 1), Action("errno", 22), Action("kill_thread"),
                               Action("kill_process"), Action("trap"), Action("log"), Action("notify"),
                               Action("trace", 3)])
ARGS32 = st.tuples(*[st.one_of(st.sampled_from([v for v in INTERESTING if v < 1 << 32]), st.integers(0, 2**32 - 1))
                     for _ in range(6)])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(model_policies(exprs(), OCI_ACTIONS), st.lists(st.tuples(st.sampled_from(SYSCALLS), ARGS32), min_size=20,
                                                       max_size=20))
def test_text_to_oci_and_back_keeps_decisions(policy, probes):
    """text -> Policy -> OCI JSON -> Policy. OCI compares 64 bits, so probes keep the upper
    halves zero (where a 32-bit comparison and a 64-bit one agree)."""
    policy = parse_policy(format_policy(policy))
    try:
        exported = export_oci(policy)
    except SysgateError:
        assume(False)          # a bounded range on one argument: runc cannot express it
    back = import_oci(json.dumps(exported), policy.arches[0])
    for syscall, args in probes:
        assert back.decide(syscall, args)[0] == policy.decide(syscall, args)[0], (format_policy(policy), exported)


# --- fuzzing: random text never crashes the parser ----------------------------------------------------------
FRAGMENTS = ["read", "write", "openat", "fd", "flags", "arg0", "u32", "u64", ":", ",", "(", ")", "{", "}", "==",
             "!=", "<", "<=", ">", ">=", "&", "|", "~", "!", "&&", "||", "->", "in", "allow", "errno", "kill",
             "trap", "notify", "trace", "log", "default", "arch", "bad_arch", "allow_x32", "flags", "include",
             '"x.policy"', "@mount", "@nope", "0x", "0x1f", "-", "12", "09", "0b2", "O_WRONLY", "EPERM", "x86_64",
             "true", "\n", " ", "#", "\\\n", "'", "\t", "@", "é", "\x00"]


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.lists(st.sampled_from(FRAGMENTS), max_size=30).map("".join), st.text(max_size=60)))
def test_random_text_raises_only_source_errors(text):
    try:
        parse_policy(text, "fuzz.policy", base_dir="/nonexistent")
    except SourceError as exc:
        assert exc.file.endswith(".policy") and exc.line >= 1 and exc.column >= 1, str(exc)


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(
                        st.sampled_from(["defaultAction", "syscalls", "names", "name", "action", "args", "index",
                                         "op", "value", "valueTwo", "errnoRet", "architectures", "archMap",
                                         "includes", "excludes", "caps", "arches", "minKernel", "flags"]),
                        c, max_size=5), max_leaves=12))
def test_random_json_raises_only_source_errors(data):
    try:
        import_oci(data if isinstance(data, dict) else {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": data})
    except SourceError:
        pass
