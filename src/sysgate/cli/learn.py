"""``sysgate learn``: run a command, watch every syscall, write the policy it needs.

Every syscall of the command (its children and threads included, any architecture)
is notified and allowed (CONTINUE); only clone3 fails with ENOSYS (unless
--allow-clone3), so that libc falls back to clone, whose flags a filter can check.
The policy written
allows the syscalls seen, pins the arguments that change what a call does (socket
families and types, clone/unshare/setns namespace flags, prctl options, ioctl
requests, personality…) to the values seen, and gives everything else the default
action. Check it with ``sysgate run --policy FILE -- CMD``. A live count is shown on
a terminal (or with --progress); a summary is printed at the end.
"""
from __future__ import annotations

import argparse
import os
import sys

from ..errors import SysgateError
from ..files import write_file
from . import command_args


def register(sub) -> None:
    p = sub.add_parser("learn", help="run a command and write the policy it needs",
                       description=__doc__.split("\n\n", 1)[1],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="where to write the policy (- = stdout)")
    p.add_argument("--format", choices=("text", "oci", "spo"),
                   help="sysgate policy language, OCI seccomp JSON or a Kubernetes SeccompProfile in YAML "
                        "(default: oci for *.json, spo for *.yaml/*.yml, else text)")
    p.add_argument("--default", default="errno(EPERM)", metavar="ACTION",
                   help="action for everything not seen (default: errno(EPERM))")
    p.add_argument("--arch", action="append", metavar="ARCH",
                   help="architectures of the policy (repeatable; default: native + every one seen)")
    p.add_argument("--no-pin", action="append", default=[], metavar="SYSCALL",
                   help="allow SYSCALL with any arguments (repeatable; 'all' pins nothing)")
    progress = p.add_mutually_exclusive_group()
    progress.add_argument("--progress", action="store_true", default=None,
                          help="show the live count even when stderr is not a terminal")
    progress.add_argument("--no-progress", dest="progress", action="store_false", help="never show it")
    p.add_argument("--allow-clone3", action="store_true",
                   help="let clone3 run and allow it (its flags cannot be pinned); by default clone3 gets "
                        "ENOSYS while learning and in the policy, so libc uses clone, whose flags are pinned")
    p.add_argument("--top", type=int, default=10, metavar="N", help="syscalls listed in the summary (default 10)")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD ...", help="the command and its arguments")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..learn import (Observer, Progress, arch_warnings, format_for, header_text, notify_all_filter,
                         parse_action, summary_text)
    from ..process.run import run_command

    argv = command_args(args, "sysgate learn -o FILE [options] -- CMD [ARG...]")
    if args.top < 0:
        raise SysgateError(f"--top: the number of syscalls to list must be 0 or more, not {args.top}")
    default = parse_action(args.default)
    fmt = args.format or format_for(args.output)
    _check_unpinned(args.no_pin)
    _check_writable(args.output)
    show = sys.stderr.isatty() if args.progress is None else args.progress
    observer = Observer(progress=Progress(sys.stderr) if show else None, clone3_enosys=not args.allow_clone3)
    try:
        code, target = run_command(notify_all_filter(), argv, observer)
    finally:
        if observer.progress is not None:
            observer.progress.close()
    if target is None:      # could not be started (run_command said why)
        return code
    obs = observer.observations
    header = header_text(argv, obs, target.returncode, default)
    text = render(obs, fmt, default=default, arches=args.arch, unpinned=args.no_pin, header=header,
                  clone3_enosys=not args.allow_clone3, output=args.output)
    write_output(args.output, text)
    for message in arch_warnings(obs, args.arch):
        print(f"sysgate learn: warning: {message}", file=sys.stderr)
    print(summary_text(obs, code, args.top, clone3_enosys=not args.allow_clone3), file=sys.stderr)
    where = "standard output" if args.output == "-" else args.output
    print(f"sysgate learn: wrote {where} ({fmt})", file=sys.stderr)
    if code:
        print(f"sysgate learn: warning: the command failed (status {code}); the policy covers only what "
              f"it did before failing", file=sys.stderr)
    return code


def render(obs, fmt: str, output: str = "-", **options) -> str:
    """The learned policy in format ``fmt`` (text, OCI JSON or a SeccompProfile named after
    ``output``; the last two converted from the text, so all agree)."""
    from ..learn import render as render_policy

    return render_policy(obs, fmt, warn=lambda message: print(f"sysgate learn: warning: {message}",
                                                                 file=sys.stderr), output=output, **options)


def write_output(path: str, text: str) -> None:
    if path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    write_file(path, text)


def _check_writable(path: str) -> None:
    """Fail before the command runs, not after, when the policy could not be written."""
    if path == "-":
        return
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise SysgateError(f"cannot write {path}: no such directory {folder}")
    if not os.access(path if os.path.exists(path) else folder, os.W_OK):
        raise SysgateError(f"cannot write {path}: permission denied")


def _check_unpinned(names: list[str]) -> None:
    from ..arch import syscalls

    known = syscalls.all_names() | {"all"}
    bad = [n for n in names if n not in known]
    if bad:
        raise SysgateError(f"--no-pin: unknown syscall(s) {', '.join(bad)}")
