"""``sysgate replay``: feed recorded notifications into handlers, without a kernel.

A recording (JSON lines written by ``sysgate.testing.Recorder``) holds each notification
with the target memory its handler read and the reply the kernel got. Replay rebuilds
each one as a fake notification, answers it with the given handlers the way the
supervisor would, and reports every reply that differs (exit status 1). Needs neither
root nor a seccomp-capable kernel.

--handlers takes the name of a built-in handler (``sysgate handlers``; configured from
--config), or MODULE[:NAME] or FILE.py[:NAME] (NAME defaults to ``handlers``; loaded like
``sysgate run --handlers``, see sysgate.handlers.loading): a dict
{syscall: handler}, a handler object with a ``syscalls`` attribute, a callable (used for
every syscall), or a list of those.
"""
from __future__ import annotations

import argparse
import re

from ..errors import SysgateError
from . import command_args


def register(sub) -> None:
    p = sub.add_parser("replay", help="replay recorded notifications into handlers (no kernel, no root)",
                       description=__doc__.split("\n\n", 1)[1],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", help="a recording (JSON lines)")
    p.add_argument("--handlers", action="append", default=[], metavar="MODULE[:NAME]",
                   help="where the handlers are (repeatable)")
    p.add_argument("--config", metavar="FILE", help="handler config (JSON) for built-in handlers")
    p.add_argument("--default", metavar="REPLY",
                   help="reply for calls without a handler: continue, errno(NAME), value(N) "
                        "(default: the one recorded)")
    p.add_argument("--show", action="store_true", help="print the recorded calls and replies instead")
    p.set_defaults(func=run)

    rec = sub.add_parser("record", help="run a command and record its notifications for sysgate replay",
                         description="Run CMD with every syscall notified (or only the notify rules of "
                                     "--policy), read each string argument, allow the call (CONTINUE) and "
                                     "record it all to FILE (JSON lines) for `sysgate replay`.")
    rec.add_argument("-o", "--output", required=True, metavar="FILE",
                     help="the recording to write (a file, not -: the command writes to standard output itself)")
    rec.add_argument("--policy", metavar="FILE", help="record only what this policy notifies")
    rec.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD ...", help="the command and its arguments")
    rec.set_defaults(func=run_record)


def run_record(args) -> int:
    from ..process.filter import Filter
    from ..learn import notify_all_filter
    from ..process.run import run_supervised

    if args.output == "-":
        raise SysgateError("record -o -: the recorded command writes to the same standard output, which would "
                           "mix into the recording; give a file name (e.g. -o run.jsonl)")
    argv = command_args(args, "sysgate record -o FILE [--policy FILE] -- CMD [ARG...]")
    if args.policy:
        from ..policy_loader import load_policy

        filt = Filter.from_policy(load_policy(args.policy))
        if not filt.notifies:
            raise SysgateError(f"{args.policy}: the policy notifies nothing: there would be nothing to record")
    else:
        filt = notify_all_filter()
    code, _ = run_supervised(filt, argv, read_strings_and_continue, record=args.output)
    return code


def read_strings_and_continue(n):
    """Read every string argument (so a replay can serve it to path handlers), then CONTINUE."""
    from ..arch import syscalls
    from ..supervisor import Reply

    sig = syscalls.signature(n.syscall, n.arch) if not n.syscall.startswith("syscall_") else None
    for param, value in zip(sig.params if sig else (), n.args):
        if param.kind == "string" and value:
            try:
                n.read_string(value)
            except OSError:
                pass
    return Reply.continue_()


def run(args) -> int:
    from ..handlers import loading
    from ..testing import Dispatcher, load, replay

    header, records = load(args.file)
    if args.show:
        show(records)
        return 0
    if not args.handlers:
        raise SysgateError("nothing to replay into: give --handlers MODULE[:NAME] (or --show)")
    dispatcher = Dispatcher.for_recording(header)
    if args.default:
        dispatcher.default = parse_reply(args.default)
    config = None
    for spec in args.handlers:
        if is_builtin(spec):
            from ..handlers import registry

            if config is None:
                config = registry.load_config(args.config)
                registry.check_sections(config)
            install(dispatcher, registry.create(spec, config.get(spec)), spec)
        else:
            install(dispatcher, loading.load_object(spec), spec)
    report = replay(records, dispatcher)
    print(report.format())
    return 0 if report.ok else 1


def show(records) -> None:
    from ..testing.replay import describe

    for doc in records:
        print(describe(doc))


def parse_reply(text: str):
    """``continue``, ``errno(NAME|N)`` (or a bare errno name) or ``value(N)``."""
    from ..supervisor import Reply

    text = text.strip()
    if text == "continue":
        return Reply.continue_()
    m = re.fullmatch(r"(errno|value)\((-?\w+)\)|(E[A-Z0-9]+)", text)
    try:
        if m and m.group(3):
            return Reply.errno(m.group(3))
        if m and m.group(1) == "errno":
            arg = m.group(2)
            return Reply.errno(int(arg) if arg.isdigit() else arg)
        if m and m.group(1) == "value":
            return Reply.value(_s64(m.group(2)))
    except ValueError as exc:
        raise SysgateError(f"--default: {exc}") from None
    raise SysgateError(f"--default: expected continue, errno(NAME) or value(N), not {text!r}")


def is_builtin(spec: str) -> bool:
    """True when ``spec`` names a built-in handler (``fs``, ``net``, ``audit``…)."""
    from ..handlers import registry

    return spec in registry.names()


def install(dispatcher, obj, spec: str) -> None:
    """Register ``obj`` (dict, handler with ``syscalls``, callable, or a list of them)."""
    if isinstance(obj, dict):
        dispatcher.table(obj)
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            install(dispatcher, item, spec)
    elif callable(obj) and getattr(obj, "syscalls", None):
        for name in obj.syscalls:
            dispatcher.on(name, obj)
    elif callable(obj):
        dispatcher.fallback(obj)
    else:
        raise SysgateError(f"--handlers {spec}: expected a dict, a handler or a callable, not {type(obj).__name__}")


def _s64(text: str) -> int:
    """A syscall return value: a 64-bit signed integer (decimal, 0x…)."""
    try:
        value = int(text, 0)
    except ValueError:
        raise SysgateError(f"--default: value({text}): not a number") from None
    if not -2**63 <= value < 2**63:
        raise SysgateError(f"--default: value({text}): out of the 64-bit signed range")
    return value
