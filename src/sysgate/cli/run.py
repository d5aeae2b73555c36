"""``sysgate run``: launch a command under a policy and supervise it.

sysgate keeps answering until every process holding the filter is gone: the command and
whatever it started (daemons, background jobs) that outlives it; ``--exit-with-main`` stops
when the command exits (the notified calls of processes left behind then fail with ENOSYS).
A SIGINT/SIGTERM/SIGHUP/SIGQUIT reaching sysgate after the command exited stops it waiting:
processes left behind are not killed (Ctrl-C reaches them itself when they are in the
terminal's foreground process group), their notified calls fail with ENOSYS from then on.

Exit status, stdio and signals pass through like env(1)/timeout(1): sysgate exits
with the command's code (128+N if signal N killed it; 127 if it cannot be found, 126 if
it cannot be run, 125 for sysgate's own errors) and forwards SIGINT/SIGTERM/SIGHUP/
SIGQUIT sent to it by another process. Signals the terminal generates already reach the
command (it stays in sysgate's process group), so those are not sent twice.

Without a policy the command runs in audit mode: every syscall is notified, allowed
(CONTINUE) and counted, and a per-syscall summary is printed to stderr at exit.
``--log`` instead allows everything with SECCOMP_RET_LOG (the kernel's audit log gets
the record, nothing is notified). ``--notify-all`` prints each syscall strace-style.

A policy's ``notify(NAME)`` rules are answered by the built-in handler NAME (``sysgate
handlers`` lists them), configured by ``--handlers``: a JSON file or inline JSON text with one
section per handler (``{"fs": {"rules": ["allow read /usr/**"]}, "audit": {"log": "a.jsonl"}}``).
A handler without a section gets its defaults (``fs``/``net`` then deny everything).
``--handlers FILE.py[:NAME]`` or ``--handlers MODULE:NAME`` (repeatable) adds custom Python
handlers, answering ``notify(THEIR_NAME)`` (see sysgate.handlers.loading for the contract). Plain
``notify`` rules are printed and allowed. A bad config or a handler that cannot answer a
syscall the policy sends it stops sysgate before the command starts. A stored ``--filter``
compiled from such a policy keeps its routes and is served the same way.

``--record FILE`` writes every notification and the reply it got to FILE (JSON lines) for
``sysgate replay``.

``--sandbox`` puts the secure base under the policy (default: allow everything else): every
path syscall the fs handler answers goes to it, view changes (chroot, mount, namespaces),
io_uring and file handles are refused, and with a ``net`` section in ``--handlers`` every
peer-naming syscall goes to the net handler. Without it, a policy that routes some path or
peer syscalls to fs/net but leaves others to the kernel is refused (one line naming them)
unless ``--force`` is given.
"""
from __future__ import annotations

import argparse
import os
import select
import signal
import struct
import sys

from ..errors import SysgateError

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
PODMAN_PROFILE = "/usr/share/containers/seccomp.json"
DOCKER_PROFILES = ("/etc/docker/seccomp.json", "/usr/share/docker/seccomp.json",
                   "/usr/share/docker.io/seccomp.json",
                   # Debian's golang-github-docker-docker-dev ships moby's default profile
                   "/usr/share/gocode/src/github.com/docker/docker/profiles/seccomp/default.json")


def register(sub) -> None:
    p = sub.add_parser("run", help="run a command under a seccomp policy (audit-only without one)",
                       description=__doc__.split("\n\n", 1)[1],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--policy", metavar="FILE", help="policy file (sysgate language or OCI/Docker JSON)")
    src.add_argument("--profile", metavar="NAME", help="podman, docker, or the path of an OCI/Docker JSON profile")
    src.add_argument("--filter", metavar="FILE", help="a stored filter (JSON written by sysgate.process.filter.Filter.save)")
    src.add_argument("--notify-all", action="store_true", help="notify every syscall and print it decoded")
    p.add_argument("--log", action="store_true",
                   help="with a policy: log its non-allow actions to the kernel audit log (FLAG_LOG); "
                        "without: allow every syscall with RET_LOG instead of the notified audit")
    p.add_argument("--handlers", metavar="CONFIG|FILE.py[:NAME]|MODULE:NAME", action="append",
                   help="the handlers a --policy or --filter names (notify(NAME)): the config of the built-in "
                        "ones (a JSON file or inline JSON), or custom Python handlers (repeatable)")
    p.add_argument("--record", metavar="FILE", help="record every notification and its reply for sysgate replay")
    p.add_argument("--sandbox", action="store_true",
                   help="put the secure base under the policy: all path syscalls to fs, no view changes "
                        "or io_uring; with a net section in --handlers, all peer-naming syscalls to net")
    p.add_argument("--force", action="store_true",
                   help="run a policy whose fs/net routes can be walked around (see policy check)")
    add_landlock_options(p)
    p.add_argument("--exit-with-main", action="store_true",
                   help="stop serving when the command exits, not when every process it started is gone "
                        "(notified calls of daemons left behind then fail with ENOSYS)")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD ...", help="the command and its arguments")
    p.set_defaults(func=run)


def run(args) -> int:
    try:
        argv = command_args(args, "sysgate run [options] -- CMD [ARG...]")
        from ..handlers.loading import handler_options

        args.handler_config, args.custom_handlers = handler_options(args.handlers)
        filt, reporter, policy = build(args)
        wall = landlock_plan(args, policy)
        filt, policy = unroute_landlocked(args, filt, policy, wall)
        code, target = run_supervised(filt, argv, reporter, policy, args.handler_config, record=args.record,
                                      landlock=wall, exit_with_main=args.exit_with_main,
                                      custom=args.custom_handlers)
    except SysgateError as exc:
        exc.exit_code = 125
        raise
    if target is not None and reporter is not None:
        reporter.finish(target)
    return code


def run_supervised(filt, argv: list[str], reporter, policy=None, handlers=None, *,
                   record: str | None = None, landlock=None, exit_with_main: bool = False,
                   custom: dict | None = None) -> tuple[int, object]:
    """:func:`run_command` on a new supervisor: ``policy``'s ``notify(NAME)`` rules go to the
    handlers configured by ``handlers`` and the ``custom`` ones (see :func:`attach_handlers`), every other
    notification to ``reporter``. With ``record`` (a path), every notification and its reply
    is also written there for ``sysgate replay``. ``landlock``: a LandlockPlan for the command."""
    from ..supervisor import Supervisor
    from ..testing import Recorder

    handler_set = recorder = None
    try:
        with Supervisor() as sup:
            if record:
                recorder = Recorder(record, sup, argv=argv)
            wrap = recorder.wrap if recorder else None
            handler_set = attach_handlers(sup, policy, handlers, wrap=wrap, custom=custom)
            if reporter is not None and wrap:
                reporter = wrap(reporter)
            code, target = run_command(filt, argv, reporter, supervisor=sup, landlock=landlock,
                                       exit_with_main=exit_with_main)
    finally:
        if handler_set is not None:
            handler_set.finish(sys.stderr)
        if recorder is not None:
            recorder.close()
    if recorder is not None:
        _print(f"sysgate: {recorder.count} notifications recorded to {record}")
    return code, target


def command_args(args, usage: str) -> list[str]:
    """The command of a ``nargs=REMAINDER`` argument, without a leading ``--``."""
    argv = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not argv:
        raise SysgateError(f"no command given: {usage}")
    return argv


def run_command(filt, argv: list[str], handler, *, supervisor=None, landlock=None,
                exit_with_main: bool = False) -> tuple[int, object]:
    """Launch ``argv`` under the stored filter ``filt`` and :func:`supervise` it with ``handler``
    (on ``supervisor`` when given) until every process holding the filter is gone (with
    ``exit_with_main``: until ``argv`` exits).

    Returns (shell-style status, the exited Target), or (126/127, None) after printing
    why the command could not be started. Signals are forwarded meanwhile.
    """
    from ..process.launch import LaunchError

    with SignalForwarder() as forwarder:
        try:
            target = filt.spawn(argv, sigmask=forwarder.original_mask, landlock=landlock)
        except LaunchError as exc:
            _print(f"sysgate: {exc}")
            return exc.exit_code, None
        with target:
            code = supervise(target, handler, forwarder, supervisor=supervisor, exit_with_main=exit_with_main)
    if target.returncode == -signal.SIGSYS:
        _print(f"sysgate: {target.argv[0]!r} was killed by SIGSYS: a filter action "
               f"(kill or an unhandled trap) stopped it")
    return code, target


def add_landlock_options(p) -> None:
    """``--landlock``, ``--no-exec-after-start``, ``--allow-exec`` (see the README's "Landlock layer")."""
    from ..sandbox.landlock import MODES

    p.add_argument("--landlock", choices=MODES, default="auto",
                   help="a kernel-enforced Landlock ruleset derived from the fs/net rules and exec limits: "
                        "auto (default: when the kernel has it), on (fail without it), off (notify alone)")
    p.add_argument("--no-exec-after-start", action="store_true",
                   help="Landlock: the command may exec only its own binary (and its interpreter) again")
    p.add_argument("--allow-exec", metavar="PATH", action="append", default=[],
                   help="Landlock: also allow exec of PATH (a file, or every file beneath a directory); repeatable")
    p.add_argument("--landlock-scope", metavar="SCOPES",
                   help="Landlock (ABI 6): signal,abstract-unix: signals and abstract unix connects reach only "
                        "processes inside the sandbox")


def landlock_plan(args, policy):
    """The LandlockPlan for ``args`` under ``policy`` (None: no Landlock layer)."""
    from ..sandbox.landlock import parse_scopes, plan_for_policy

    limits = args.no_exec_after_start or args.allow_exec
    return plan_for_policy(policy, args.handler_config, mode=args.landlock, scoped=parse_scopes(args.landlock_scope),
                           exec_paths=list(args.allow_exec) if limits else None, warn=_print)


def unroute_landlocked(args, filt, policy, wall):
    """(filter, policy) with the open routes Landlock decides exactly no longer notified."""
    from ..process.filter import Filter
    from ..sandbox.landlock import without_open_routes

    lighter = without_open_routes(policy, wall) if policy is not None and not args.filter else None
    if lighter is None:
        return filt, policy
    return Filter.from_policy(lighter, log=args.log), lighter


def build(args):
    """(stored filter to launch with, reporter answering its plain notifications, its policy or None)."""
    from ..bpf.insn import ret
    from ..process.filter import Filter
    from ..kernel import abi

    if args.sandbox and (args.filter or args.notify_all):
        raise SysgateError("--sandbox needs --policy or --profile (or neither): a stored filter is already compiled")
    if args.filter:
        filt = Filter.load(args.filter)
        if args.log:
            filt.flags["log"] = True
        return filt, (PolicyReporter() if filt.notifies else None), secure_policy(filt.handler_policy(), args)
    if args.handlers and not (args.policy or args.profile or args.sandbox):
        raise SysgateError("--handlers needs --policy or --filter (their notify(NAME) rules choose the handlers)")
    path = args.policy or (profile_path(args.profile) if args.profile else None)
    if path or args.sandbox:
        from ..policy.loader import load_policy
        from ..sandbox.base import default_policy

        pol = secure_policy(load_policy(path) if path else default_policy(), args)
        filt = Filter.from_policy(pol, log=args.log)
        return filt, (PolicyReporter() if filt.notifies else None), pol
    if args.notify_all:
        return Filter.from_program([ret(abi.SECCOMP_RET_USER_NOTIF)], name="notify-all"), TraceReporter(), None
    if args.log:
        return Filter.from_program([ret(abi.SECCOMP_RET_LOG)], name="log-all"), None, None
    return Filter.from_program([ret(abi.SECCOMP_RET_USER_NOTIF)], name="audit"), AuditReporter(), None


def secure_policy(policy, args):
    """``policy`` with the secure base under it (``--sandbox``: the fs part, and the net part
    when ``--handlers`` configures net), or as it is when its fs/net routes cannot be walked
    around; else SysgateError naming what is unsafe in one line (``--force``: a warning)."""
    from ..sandbox import base, coverage

    if policy is None:
        return None
    if args.sandbox:
        from ..handlers import registry

        parts = ["fs", *(["net"] if "net" in registry.load_config(args.handler_config) else [])]
        policy = base.apply_base(policy, parts)
    if policy.sandbox:
        note = base.notice(policy)
        if note:
            _print(f"sysgate: {note}")
        return policy
    warnings = coverage.warnings_line(policy)
    if warnings and not args.force:
        raise SysgateError(f"policy {policy.name!r} is not a sandbox: it {warnings} "
                           f"(--sandbox adds the secure base, --force runs it as it is)")
    if warnings:
        _print(f"sysgate: warning: policy {policy.name!r} is not a sandbox: it {warnings}")
    return policy


def attach_handlers(sup, policy, source, *, group: str | None = None, wrap=None, custom=None):
    """Route ``policy``'s ``notify(NAME)`` rules on ``sup`` (for ``group``, default all targets)
    to handlers configured by ``source`` (a JSON file, JSON text, a dict or None) or given in
    ``custom`` (name -> handler, e.g. from :func:`.handlers.loading.handler_options`); returns
    their HandlerSet, to ``finish()`` after the run (None when the policy names no handler).
    ``wrap(handler)``, when given, is what gets routed instead of each handler (e.g.
    :meth:`sysgate.testing.Recorder.wrap`).

    Every error (unknown handler or option, a syscall a handler cannot answer) is raised
    here, before the command starts: the policy's named rules are never left unanswered.
    """
    from ..handlers import registry

    config = registry.load_config(source)
    custom = custom or {}
    if policy is None:
        if config or custom:
            raise SysgateError("a handler config needs a policy: its notify(NAME) rules choose the handlers")
        return None
    named = {r.action.handler for r in policy.rules if r.action.kind == "notify" and r.action.handler}
    unknown = sorted(set(config) - set(registry.names()))
    if unknown:
        raise SysgateError(f"handler config: unknown section(s) {', '.join(unknown)} "
                           f"(handlers: {', '.join(registry.names())})")
    if not named:
        if config or custom:
            _print(f"sysgate: warning: policy {policy.name!r} names no handler (notify(NAME)); "
                   f"--handlers is not used")
        return None
    unused = sorted((set(config) | set(custom)) - named - {"audit"})
    if unused:
        _print(f"sysgate: warning: policy {policy.name!r} does not use handler(s) {', '.join(unused)}")
    rule_based = {row["name"] for row in registry.describe() if "rules" in row["options"]}
    for name in sorted((named & rule_based) - set(config)):
        _print(f"sysgate: warning: handler {name!r} has no section in --handlers: it denies every call")
    handler_set = registry.build_handlers(policy, config, custom)
    routed = {name: wrap(h) for name, h in handler_set.handlers.items()} if wrap else handler_set.handlers
    sup.use_policy(policy, routed, group=group)
    return handler_set


def profile_path(name: str) -> str:
    """The JSON file for ``--profile``: podman's, a Docker default profile, or a path."""
    if name == "podman":
        candidates = (PODMAN_PROFILE,)
    elif name == "docker":
        from importlib import resources

        shipped = [str(p) for p in resources.files("sysgate.data").iterdir()
                   if p.name.startswith("docker") and p.name.endswith(".json")]
        candidates = (*shipped, *DOCKER_PROFILES)
    else:
        candidates = (name,)
    for path in candidates:
        if os.path.isfile(path):
            return path
    where = ", ".join(candidates)
    raise SysgateError(f"profile {name!r} not found (looked for {where})")


# --- answering notifications ---------------------------------------------------------
class AuditReporter:
    """Allow everything (CONTINUE) and print the per-syscall summary of
    :class:`sysgate.handlers.audit.AuditLog` at exit."""

    def __init__(self):
        from ..handlers.audit import AuditHandler, AuditLog

        self.log = AuditLog(None, strings=False)
        self.handler = AuditHandler(self.log)

    def __call__(self, n):
        return self.handler(n)

    def finish(self, target) -> None:
        _print(f"sysgate: audit of {target.argv[0]!r}\n{self.log.summary()}")


class TraceReporter:
    """Print every notified syscall strace-style (``[pid N] openat(AT_FDCWD, "/etc/x", O_RDONLY)``)
    and let it run."""

    prefix = ""

    def __call__(self, n):
        from ..handlers.decode import format_call
        from ..supervisor import Reply

        _print(f"{self.prefix}[pid {n.pid}] {format_call(n)}")
        return Reply.continue_()

    def finish(self, target) -> None:
        pass


class PolicyReporter(TraceReporter):
    """A policy's ``notify`` rules without a named handler: report and allow."""

    prefix = "sysgate: notify: "


def _print(text: str) -> None:
    try:
        print(text, file=sys.stderr)
    except OSError:  # stderr closed (e.g. a pipe to `head`): keep the command running
        pass


def supervise(target, reporter, forwarder, *, supervisor=None, exit_with_main: bool = False) -> int:
    """Serve ``target``'s notifications with the supervisor; the target's shell status.

    Serving goes on until no process holds the filter any more (the listener hangs up): the
    target and every process it started, daemons included, so their notified calls are still
    answered after the target exited. ``exit_with_main`` stops as soon as the target exits
    instead (closing the listener: notified calls of processes left behind then fail with
    ENOSYS). A forwarded signal arriving after the target exited also stops serving (the
    processes left behind are not killed: they keep running, their notified calls get ENOSYS).

    ``reporter`` answers every notification without a handler of its own (None: the
    supervisor's fail-closed default). Signals arrive on ``forwarder``'s signalfd.
    ``supervisor`` (with handlers already routed) is used and left open; by default a
    new one is made and closed.
    """
    from ..process.launch import exit_status
    from ..supervisor import Supervisor

    if supervisor is None:
        with Supervisor() as sup:
            return supervise(target, reporter, forwarder, supervisor=sup, exit_with_main=exit_with_main)
    sup = supervisor
    if reporter is not None:
        sup.fallback(reporter)
    listener = sup.add_target(target) if target.listener is not None else None
    poller = select.poll()
    for fd in (sup.fileno(), target.pidfd, forwarder.fileno()):
        poller.register(fd, select.POLLIN)
    code = None
    while True:
        timeout = sup.next_timeout()
        ready = dict(poller.poll(None if timeout is None else max(1, int(timeout * 1000))))
        sup.run_once(0)
        if code is None and (target.pidfd in ready or target.returncode is not None):   # (reaped by sup)
            code = exit_status(target.wait())
            poller.unregister(target.pidfd)     # stays readable: poll it no more
        if forwarder.fileno() in ready:
            if code is not None:                # only processes it left behind: stop waiting for them
                forwarder.drain()
                return code
            forwarder.forward(target)
        if code is not None and (exit_with_main or listener is None or listener.released):
            return code


# --- signals ----------------------------------------------------------------------------
_SIGNALFD_SIGINFO_SIZE = 128
_SI_KERNEL = 0x80
_SIGINFO_HEAD = struct.Struct("=Iii")  # ssi_signo, ssi_errno, ssi_code


class SignalForwarder:
    """Blocks the forwarded signals and receives them on a signalfd.

    ``forward`` sends each one on to the target unless the kernel generated it for the
    terminal's foreground process group (si_code SI_KERNEL): the target got that one too.
    """

    def __init__(self):
        self.original_mask = None
        self.fd = -1

    def __enter__(self) -> "SignalForwarder":
        import ctypes

        self.original_mask = signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
        words = (ctypes.c_ulong * (1024 // (8 * ctypes.sizeof(ctypes.c_ulong))))()
        bits = 8 * ctypes.sizeof(ctypes.c_ulong)
        for sig in FORWARDED:
            words[(sig - 1) // bits] |= 1 << ((sig - 1) % bits)
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.signalfd(-1, ctypes.byref(words), os.O_CLOEXEC | os.O_NONBLOCK)
        if self.fd < 0:
            err = ctypes.get_errno()
            signal.pthread_sigmask(signal.SIG_SETMASK, self.original_mask)
            raise SysgateError(f"signalfd: {os.strerror(err)}")
        return self

    def fileno(self) -> int:
        return self.fd

    def forward(self, target) -> None:
        while True:
            try:
                info = os.read(self.fd, _SIGNALFD_SIGINFO_SIZE)
            except BlockingIOError:
                return
            signo, _, code = _SIGINFO_HEAD.unpack_from(info)
            if code != _SI_KERNEL:
                target.kill(signo)

    def drain(self) -> None:
        """Consume the pending signals without forwarding them."""
        while True:
            try:
                os.read(self.fd, _SIGNALFD_SIGINFO_SIZE)
            except BlockingIOError:
                return

    def __exit__(self, *exc) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        signal.pthread_sigmask(signal.SIG_SETMASK, self.original_mask)
