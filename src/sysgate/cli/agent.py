"""``sysgate agent``: the OCI seccomp agent for runc and crun.

Point a container's ``linux.seccomp.listenerPath`` at the socket; the runtime sends
the container's seccomp listener there and the agent answers the notified syscalls
with the handlers chosen by ``listenerMetadata`` (KEY=VALUE lines, e.g.
``handlers=mkdir-emulate,mknod-emulate,mount-deny:EACCES``) or the config file.
Stops on SIGTERM/SIGINT; the containers' waiting syscalls then fail with ENOSYS.

With --learn DIR the agent learns instead: every notified syscall of a container is
recorded and allowed, and when the container is gone its profile is written to
DIR/<container id>.json (OCI) and .policy (sysgate). --learning-profile prints the
linux.seccomp object that notifies every syscall to --socket, for the container's config.
"""
from __future__ import annotations

import argparse
import os
import sys

from ..errors import SysgateError


def register(sub) -> None:
    p = sub.add_parser("agent", help="OCI seccomp agent: answer notifications of runc/crun containers",
                       description=__doc__.split("\n\n", 1)[1],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--socket", required=True, metavar="PATH", help="AF_UNIX socket to listen on (listenerPath)")
    p.add_argument("--config", metavar="FILE", help="JSON file choosing handlers per container id/annotations")
    p.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                   help="time a runtime gets to send its whole state (default 5)")
    p.add_argument("--learn", metavar="DIR",
                   help="learn: allow and record every notified syscall, write each container's profile to DIR")
    p.add_argument("--learning-profile", action="store_true",
                   help="print the linux.seccomp object for learning through --socket, and exit")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.set_defaults(func=run)


def run(args) -> int:
    import logging
    import signal
    import threading

    from ..agent.config import AgentConfig
    from ..agent.learning import check_directory, learning_profile
    from ..agent.server import Agent

    if args.learning_profile:
        import json

        print(json.dumps(learning_profile(os.path.abspath(args.socket)), indent=2))
        return 0
    learn_dir = check_directory(os.path.abspath(args.learn)) if args.learn is not None else None
    if learn_dir is not None and args.config:
        raise SysgateError("--learn and --config: a learning agent uses no handlers")

    logging.basicConfig(level=getattr(logging, args.log_level.upper()), stream=sys.stderr,
                        format="sysgate agent: %(levelname)s: %(message)s")
    config = AgentConfig.load(args.config) if args.config else AgentConfig()
    _raise_fd_limit()
    agent = Agent(args.socket, config, connection_timeout=args.timeout, learn_dir=learn_dir)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, lambda *_: agent.stop())
    try:
        agent.listen()
        print(f"sysgate agent: ready on {args.socket}", file=sys.stderr, flush=True)
        agent.run()
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        agent.close()
    return 0


def _raise_fd_limit() -> None:
    """Soft RLIMIT_NOFILE up to the hard one: pending clients may hold up to max_fds fds each, and
    every container process adds a listener; running out would refuse runtimes at accept()."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (OSError, ValueError):
            pass
