"""``sysgate attach PID``: put a running process (all its threads) under a seccomp policy."""
from __future__ import annotations

import os
import sys

from ..errors import SysgateError


def register(sub) -> None:
    p = sub.add_parser("attach", help="install a seccomp filter into a running process (ptrace, x86_64)",
                       description="Install a filter on every thread of a running process by injecting "
                                   "prctl/seccomp calls with ptrace. The process keeps running; its "
                                   "registers and memory are restored exactly.")
    p.add_argument("pid", type=int, help="the process to filter")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--policy", metavar="FILE", help="policy file (text or OCI JSON)")
    source.add_argument("--bpf", metavar="FILE", help="a compiled BPF program (8 bytes per instruction)")
    p.add_argument("--no-listener", action="store_true",
                   help="no notification listener: notify rules then fail with ENOSYS")
    p.add_argument("--supervise", action="store_true",
                   help="keep running and answer the policy's notify rules until the process exits")
    p.set_defaults(func=run)


def _load_program(args) -> bytes:
    from ..install import program_bytes

    if args.bpf:
        try:
            with open(args.bpf, "rb") as f:
                return program_bytes(f.read())
        except OSError as exc:
            raise SysgateError(f"{args.bpf}: {exc.strerror}") from None
    try:
        from ..policy.loader import load_policy
    except ImportError:
        raise SysgateError("policy files are not supported by this build; use --bpf") from None
    return program_bytes(load_policy(args.policy))


def run(args) -> int:
    from ..attach import attach, program_notifies

    program = _load_program(args)
    notifies = program_notifies(program)
    if notifies and not (args.supervise or args.no_listener):
        raise SysgateError("the policy has notify rules: add --supervise to answer them, or "
                           "--no-listener to let them fail with ENOSYS")
    listener = notifies and not args.no_listener
    target = attach(args.pid, program, listener=listener)
    with target:
        threads = len(os.listdir(f"/proc/{args.pid}/task"))
        for warning in target.warnings:
            print(f"sysgate: warning: {warning}", file=sys.stderr)
        print(f"attached to process {args.pid}: {len(program) // 8} instructions on {threads} thread(s)"
              + (", listener taken" if listener else ""), file=sys.stderr)
        if args.supervise and listener:
            return _supervise(target, args)
    return 0


def _supervise(target, args) -> int:
    """Answer the target's notifications until it exits."""
    try:
        from ..supervisor import supervise_attached
    except ImportError:
        raise SysgateError("the supervisor is not available in this build") from None
    return supervise_attached(target, policy_file=args.policy)
