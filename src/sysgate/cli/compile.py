"""``sysgate compile`` (policy -> BPF) and ``sysgate explain`` (which rule decides a call)."""
from __future__ import annotations

import sys

from ..errors import SysgateError

U64 = (1 << 64) - 1


#: Output formats of ``sysgate compile``: the BPF formats, and a stored filter (JSON).
COMPILE_FORMATS = ("raw", "c", "text", "filter")


def register(sub) -> None:
    p = sub.add_parser("compile", help="compile a policy (text or OCI/Docker JSON) to a seccomp BPF filter",
                       description="Compile a policy to classic BPF for one or more architectures. Raw and C "
                                   "output is in the byte order of the target architectures' kernels. BPF "
                                   "cannot carry notify(NAME) handler routes, filter flags or the need for a "
                                   "listener: a policy with them is refused unless --format filter (a stored "
                                   "filter for sysgate run/attach --filter) or --allow-lossy.")
    p.add_argument("policy", help="policy file: sysgate text or OCI/Docker JSON ('-' for stdin)")
    p.add_argument("--arch", action="append", metavar="ARCH",
                   help="architecture to compile for; repeat or separate with commas (default: the policy's)")
    p.add_argument("-o", "--output", metavar="OUT", help="write here instead of stdout")
    p.add_argument("--format", choices=COMPILE_FORMATS, default="raw",
                   help="raw: struct sock_filter bytes (default); c: a C array; text: assembler; "
                        "filter: a stored sysgate filter (JSON with the handler routes and flags)")
    p.add_argument("--frequencies", metavar="FILE",
                   help="syscall call frequencies (JSON object or 'NAME WEIGHT' lines): frequent "
                        "syscalls are then decided in fewer instructions")
    p.add_argument("--strict", action="store_true", help="the policy's warnings are errors: write nothing")
    p.add_argument("--allow-lossy", action="store_true",
                   help="write the output even when it cannot carry all of the policy (raw/c/text: "
                        "notify(NAME) routes, filter flags, the need for a listener; any: an OCI "
                        "listenerPath); each dropped item is a warning")
    p.set_defaults(func=run_compile)

    p = sub.add_parser("explain", help="show which rule of a policy decides a syscall, and its BPF cost",
                       description="Evaluate SYSCALL(ARGS...) against a policy and its compiled filter.")
    p.add_argument("policy", help="policy file: sysgate text or OCI/Docker JSON")
    p.add_argument("syscall", help="syscall name or number")
    p.add_argument("args", nargs="*", metavar="ARG",
                   help="arguments: numbers (negative ones are two's complement) or constants like AT_FDCWD")
    p.add_argument("--arch", help="architecture of the call (default: the policy's first)")
    p.add_argument("--handlers", metavar="CONFIG",
                   help="handler config (as for run): also say which layer (Landlock, notify) decides the call")
    p.set_defaults(func=run_explain)


def _arches(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [a.strip() for v in values for a in v.split(",") if a.strip()]


def _load(path: str, arch: str | None, warn=None):
    from ..policy_loader import load_policy

    return load_policy(path, arch=arch, warn=warn)


def absent_syscalls(policy, arches: list[str]) -> list[str]:
    """Syscalls with rules in ``policy`` that exist on none of ``arches`` (their rules vanish
    from a filter for them) but on one of the policy's own (the parser already warns of those)."""
    from ..arch import syscalls

    supported = syscalls.arches()
    targets = [a for a in arches if a in supported]
    own = [a for a in policy.arches if a in supported]

    def absent(name: str, on: list[str]) -> bool:
        return bool(on) and all(syscalls.number(a, name) is None for a in on)

    return [name for name in policy.syscalls()
            if absent(name, targets) and not absent(name, own) and not name[:1].isdigit()]


def _listed(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def not_carried(policy, program, fmt: str) -> list[str]:
    """What output format ``fmt`` cannot carry of ``policy``, one phrase per item. BPF alone
    (raw, c, text) loses the routes of ``notify(NAME)`` actions, the filter flags and that its
    USER_NOTIF returns need a listener (without one the kernel fails those calls with ENOSYS);
    a stored filter keeps those but only the flags it installs with. Neither keeps an OCI listener."""
    from ..bpf.insn import may_notify

    lost = []
    flags = [str(f).lower() for f in policy.flags]
    if fmt == "filter":
        from ..process.filter import Filter

        flags = [f for f in flags if f not in Filter.FLAG_NAMES]
        if flags:
            lost.append(f"its filter flags {', '.join(flags)} (a stored filter installs with "
                        f"{', '.join(Filter.FLAG_NAMES)}; each launch decides the rest)")
    else:
        routes = policy.handler_routes()
        for what, action in (("default", policy.default), ("bad_arch", policy.bad_arch)):
            if action.kind == "notify" and action.handler:
                routes[f"the {what} action"] = [action.handler]
        if routes:
            lost.append("the handler routes of its notify(NAME) actions ("
                        + ", ".join(f"{call} -> {'/'.join(names)}" for call, names in routes.items()) + ")")
        if flags:
            lost.append(f"its filter flags ({', '.join(flags)})")
        if may_notify(program.insns):
            calls = list(dict.fromkeys(r.syscall for r in policy.rules if r.action.kind == "notify"))
            calls += [f"the {what} action" for what, action in (("default", policy.default),
                                                                  ("bad_arch", policy.bad_arch))
                      if action.kind == "notify"]
            lost.append(f"that it needs a listener: installed without one (e.g. by bwrap --seccomp), the "
                        f"calls it sends to USER_NOTIF ({_listed(calls)}) fail with ENOSYS")
    if policy.listener_path or policy.listener_metadata:
        lost.append(f"its OCI listenerPath {policy.listener_path!r}"
                    + (f" and listenerMetadata {policy.listener_metadata!r}" if policy.listener_metadata else ""))
    return lost


def run_compile(args) -> int:
    """``sysgate compile``, with the cyclic collector paused: a compile makes tens of thousands of
    objects that live until it ends, which collections only walk (~4 % of its wall time)."""
    import gc

    enabled = gc.isenabled()
    gc.disable()
    try:
        return _compile(args)
    finally:
        if enabled:
            gc.enable()


def _compile(args) -> int:
    from ..bpf.formats import dump
    from ..compiler import compile_policy
    from ..compiler.args import narrowed_constants
    from . import exit_frozen, write_program

    arches = _arches(args.arch)
    source = "<stdin>" if args.policy == "-" else args.policy
    warnings: list[str] = []
    policy = _load(args.policy, arches[0] if arches else None, warnings.append)
    frequencies = None
    if args.frequencies:
        from ..compiler.frequencies import load_frequencies

        frequencies = load_frequencies(args.frequencies)
    program = compile_policy(policy, arches, frequencies=frequencies)
    warnings += narrowed_constants(policy, program.arches)
    absent = absent_syscalls(policy, program.arches)
    if absent:
        warnings.append(f"{source}: syscall(s) {_listed(absent)} do not exist on {', '.join(program.arches)}; "
                        f"their rules have no effect there")
    for message in warnings:
        print(f"warning: {message}", file=sys.stderr)
    if warnings and args.strict:
        raise SysgateError(f"{source}: {len(warnings)} warning(s) and --strict: nothing written")
    lost = not_carried(policy, program, args.format)
    if lost and not args.allow_lossy:
        alternative = ("write a stored filter for sysgate run/attach --filter (--format filter), or pass "
                       "--allow-lossy to write the BPF without them" if args.format != "filter" else
                       "pass --allow-lossy to write it without them")
        raise SysgateError(f"{source}: {_format_name(args.format)} cannot carry {'; '.join(lost)}; {alternative}")
    for item in lost:
        print(f"warning: {source}: dropped from the {_format_name(args.format)}: {item}", file=sys.stderr)
    if args.format == "filter":
        data = _stored_filter(policy, program)
    else:
        origin = f"compiled by sysgate compile from {source} for {', '.join(program.arches)}"
        data = dump(program.insns, args.format, program.arches[0],
                    byteorder=program.byteorder if args.format == "raw" else None, origin=origin)
    write_program(data, args.output, args.format)
    if args.output:
        print(f"{args.output}: {len(program)} instructions for {', '.join(program.arches)}", file=sys.stderr)
    exit_frozen()           # write_program closed the file or flushed stdout
    return 0


def _format_name(fmt: str) -> str:
    return "stored filter" if fmt == "filter" else f"{fmt} BPF"


def _stored_filter(policy, program) -> bytes:
    """``program`` of ``policy`` as a stored filter (JSON; program bytes in the target's byte order)."""
    import json

    from ..process.filter import Filter

    filt = Filter.from_policy(policy, arches=program.arches, program=program.pack(program.byteorder))
    return (json.dumps(filt.to_json(), indent=1) + "\n").encode()


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
    from ..arch import syscalls
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
    if args.handlers is not None:
        from ..sandbox.landlock import call_layer

        print(call_layer(policy, args.handlers, name, values))
    if ret != action.ret():
        print(f"note: the compiled filter returns {format_action(ret) or hex(ret)}", file=sys.stderr)
        return 1
    return 0
