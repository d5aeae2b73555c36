"""``sysgate attach PID``: put a running process (all its threads) under a seccomp policy."""
from __future__ import annotations

import os
import sys

from ..errors import SysgateError
from . import processes_option


def register(sub) -> None:
    p = sub.add_parser("attach", help="install a seccomp filter into a running process (ptrace, x86_64)",
                       description="Install a filter on every thread of a running process by injecting "
                                   "prctl/seccomp calls with ptrace. The process keeps running; its "
                                   "registers and memory are restored exactly.")
    p.add_argument("pid", type=int, help="the process to filter")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--policy", metavar="FILE", help="policy file (sysgate language or OCI/Docker JSON)")
    source.add_argument("--filter", metavar="FILE", help="a stored filter (sysgate-filter JSON)")
    source.add_argument("--bpf", metavar="FILE", help="a compiled BPF program (8 bytes per instruction)")
    p.add_argument("--no-listener", action="store_true",
                   help="no notification listener: notify rules then fail with ENOSYS")
    p.add_argument("--supervise", action="store_true",
                   help="keep running and answer the policy's notify rules until the process exits")
    p.add_argument("--handlers", metavar="CONFIG",
                   help="with --supervise: config of the handlers the policy names (notify(NAME)), "
                        "a JSON file or inline JSON, as for sysgate run")
    p.add_argument("--processes", metavar="N",
                   help="with --supervise: answer the notifications from N worker processes, one CPU each "
                        "(1-64, default 1), as for sysgate run; handlers keeping results in memory are refused")
    p.set_defaults(func=run)


def load_filter(args):
    """The stored filter named by --policy, --filter or --bpf."""
    from ..process.filter import Filter

    if args.filter:
        return Filter.load(args.filter)
    if args.bpf:
        from ..files import read_bytes

        return Filter.from_program(read_bytes(args.bpf), name=os.path.basename(args.bpf))
    from ..policy_loader import load_policy

    return Filter.from_policy(load_policy(args.policy))


def run(args) -> int:
    from ..supervisor import Supervisor
    from ..handlers.registry import wire
    from ..process.run import PolicyReporter, check_processes, warn

    filt = load_filter(args)
    if filt.notifies and not (args.supervise or args.no_listener):
        raise SysgateError("the policy has notify rules: add --supervise to answer them, or "
                           "--no-listener to let them fail with ENOSYS")
    if args.handlers is not None and not args.supervise:
        raise SysgateError("--handlers needs --supervise: only a supervising sysgate runs handlers")
    processes = 1 if args.processes is None else processes_option(args.processes)
    if args.processes is not None and not args.supervise:
        raise SysgateError("--processes needs --supervise: only a supervising sysgate has worker processes")
    listener = filt.notifies and not args.no_listener
    if args.supervise and not filt.notifies:
        print("sysgate: the policy has no notify rules: nothing to supervise", file=sys.stderr)
    sup = Supervisor(processes=processes) if listener else None
    handler_set = None
    try:
        if sup is not None:   # every handler error is raised here, before the process is touched
            handler_set = wire(sup, filt.handler_policy(), args.handlers, group=filt.group, warn=warn)
            sup.fallback(PolicyReporter(), group=filt.group)
            if processes > 1:
                check_processes(sup, None, handler_set)
        return _attach(args.pid, filt, sup)
    finally:
        if sup is not None:
            sup.close()
        if handler_set is not None:
            handler_set.finish(sys.stderr)


def _attach(pid: int, filt, sup) -> int:
    """Attach ``filt`` to ``pid``, then serve its notifications on ``sup`` (when not None)."""
    from ..attach.target import attach

    with attach(pid, filt, listener=sup is not None) as target:
        threads = len(os.listdir(f"/proc/{pid}/task"))
        for warning in target.warnings:
            print(f"sysgate: warning: {warning}", file=sys.stderr)
        print(f"attached to process {pid}: {len(filt.program) // 8} instructions on {threads} thread(s)"
              + (", supervising its notifications" if sup is not None else ""), file=sys.stderr)
        if sup is not None:
            return _supervise(sup, target, filt)
    return 0


def _supervise(sup, target, filt) -> int:
    """Answer the target's notifications on ``sup`` until every thread that uses the filter is gone.

    ``notify(NAME)`` rules go to their handlers and plain notify rules are reported
    strace-style on stderr and allowed, as ``sysgate run`` does. Stopping sysgate (Ctrl-C,
    SIGTERM) leaves the filter in place: the target's notified syscalls then fail with ENOSYS.
    With ``--processes N`` the supervisor's worker processes answer, and end with it (they also
    die with it when SIGTERM or SIGKILL ends sysgate).
    """
    sup.add_listener(target.take_listener(), filt.group, pidfd=target.pidfd, target=target,
                     pending=target.pending)
    try:
        with sup:
            sup.run_until_idle()
    except KeyboardInterrupt:
        print(f"sysgate: stopped supervising process {target.pid}; its notified syscalls now fail with ENOSYS",
              file=sys.stderr)
        return 130
    return 0
