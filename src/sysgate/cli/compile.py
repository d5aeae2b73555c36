"""``sysgate compile`` (policy -> BPF) and ``sysgate explain`` (which rule decides a call)."""
from __future__ import annotations

import sys

from ..errors import SysgateError

U64 = (1 << 64) - 1


def register(sub) -> None:
    from ..bpf.formats import FORMATS

    p = sub.add_parser("compile", help="compile a policy (text or OCI/Docker JSON) to a seccomp BPF filter",
                       description="Compile a policy to classic BPF for one or more architectures.")
    p.add_argument("policy", help="policy file: sysgate text or OCI/Docker JSON ('-' for stdin)")
    p.add_argument("--arch", action="append", metavar="ARCH",
                   help="architecture to compile for; repeat or separate with commas (default: the policy's)")
    p.add_argument("-o", "--output", metavar="OUT", help="write here instead of stdout")
    p.add_argument("--format", choices=FORMATS, default="raw",
                   help="raw: struct sock_filter bytes (default); c: a C array; text: assembler")
    p.add_argument("--frequencies", metavar="FILE",
                   help="syscall call frequencies (JSON object or 'NAME WEIGHT' lines): frequent "
                        "syscalls are then decided in fewer instructions")
    p.set_defaults(func=run_compile)

    p = sub.add_parser("explain", help="show which rule of a policy decides a syscall, and its BPF cost",
                       description="Evaluate SYSCALL(ARGS...) against a policy and its compiled filter.")
    p.add_argument("policy", help="policy file: sysgate text or OCI/Docker JSON")
    p.add_argument("syscall", help="syscall name or number")
    p.add_argument("args", nargs="*", metavar="ARG",
                   help="arguments: numbers (negative ones are two's complement) or constants like AT_FDCWD")
    p.add_argument("--arch", help="architecture of the call (default: the policy's first)")
    p.set_defaults(func=run_explain)


def _arches(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [a.strip() for v in values for a in v.split(",") if a.strip()]


def _load(path: str, arch: str | None):
    from ..policy.loader import load_policy

    return load_policy(path, arch=arch)


def run_compile(args) -> int:
    from ..bpf.formats import dump
    from ..compiler import compile_policy
    from .bpf import write_output
    from ..compiler.frequencies import load_frequencies

    arches = _arches(args.arch)
    policy = _load(args.policy, arches[0] if arches else None)
    frequencies = load_frequencies(args.frequencies) if args.frequencies else None
    program = compile_policy(policy, arches, frequencies=frequencies)
    write_output(dump(program.insns, args.format, program.arches[0]), args.output, args.format)
    if args.output:
        print(f"{args.output}: {len(program)} instructions for {', '.join(program.arches)}", file=sys.stderr)
    return 0


def _argument(text: str) -> int:
    from ..policy import constants

    value = constants.lookup(text)
    if value is None:
        try:
            value = int(text, 0)
        except ValueError:
            hint = constants.similar(text)
            raise SysgateError(f"argument {text!r} is neither a number nor a known constant"
                               + (f" (did you mean {', '.join(hint)}?)" if hint else "")) from None
    if not -(1 << 63) <= value <= U64:
        raise SysgateError(f"argument {text} does not fit in 64 bits")
    return value & U64


def run_explain(args) -> int:
    from .. import syscalls
    from ..bpf.emulator import Emulator
    from ..bpf.syntax import format_action
    from ..compiler import compile_policy
    from ..kernel import abi
    from ..policy.printer import action_text

    policy = _load(args.policy, args.arch)
    arch = abi.canonical_arch(args.arch) if args.arch else policy.arches[0]
    if len(args.args) > 6:
        raise SysgateError(f"a syscall has at most 6 arguments, got {len(args.args)}")
    values = tuple(_argument(a) for a in args.args) + (0,) * (6 - len(args.args))
    nr = syscalls.resolve(arch, args.syscall)
    name = syscalls.name(arch, nr) or str(nr)
    program = compile_policy(policy)
    ret, count = Emulator(program.insns, arch).run(abi.SeccompData(nr, abi.AUDIT_ARCH[arch], 0, values))
    action, rule = policy.decide(name, values)
    if arch not in policy.arches:
        why = f"the bad_arch action ({arch} is not among {', '.join(policy.arches)})"
        action = policy.bad_arch
    elif rule is None:
        why = "the default action"
    elif rule.source:
        why = f"rule at {rule.source[0]}:{rule.source[1]}"
    else:
        why = f"rule '{rule.syscall}: ...'"
    call = f"{name}({', '.join(args.args)})"
    print(f"{call} -> {action_text(action)} by {why} ({count} instructions)")
    if ret != action.ret():
        print(f"note: the compiled filter returns {format_action(ret) or hex(ret)}", file=sys.stderr)
        return 1
    return 0
