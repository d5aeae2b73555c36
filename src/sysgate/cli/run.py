"""``sysgate run``: launch a command under a policy and supervise it.

Exit status, stdio and signals pass through like env(1)/timeout(1): sysgate exits
with the command's code (128+N if signal N killed it; 127 if it cannot be found, 126 if
it cannot be run, 125 for sysgate's own errors) and forwards SIGINT/SIGTERM/SIGHUP/
SIGQUIT sent to it by another process. Signals the terminal generates already reach the
command (it stays in sysgate's process group), so those are not sent twice.

Without a policy the command runs in audit mode: every syscall is notified, allowed
(CONTINUE) and counted, and a per-syscall summary is printed to stderr at exit.
``--log`` instead allows everything with SECCOMP_RET_LOG (the kernel's audit log gets
the record, nothing is notified). ``--notify-all`` prints each syscall strace-style.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import select
import signal
import struct
import sys

from ..errors import SysgateError

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
PODMAN_PROFILE = "/usr/share/containers/seccomp.json"
DOCKER_PROFILES = ("/etc/docker/seccomp.json", "/usr/share/docker/seccomp.json",
                   "/usr/share/docker.io/seccomp.json")


def register(sub) -> None:
    p = sub.add_parser("run", help="run a command under a seccomp policy (audit-only without one)",
                       description=__doc__.split("\n\n", 1)[1],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--policy", metavar="FILE", help="policy file (sysgate language or OCI/Docker JSON)")
    src.add_argument("--profile", metavar="NAME", help="podman, docker, or the path of an OCI/Docker JSON profile")
    src.add_argument("--filter", metavar="FILE", help="a stored filter (JSON written by sysgate.filter.Filter.save)")
    src.add_argument("--notify-all", action="store_true", help="notify every syscall and print it decoded")
    p.add_argument("--log", action="store_true",
                   help="with a policy: log its non-allow actions to the kernel audit log (FLAG_LOG); "
                        "without: allow every syscall with RET_LOG instead of the notified audit")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD ...", help="the command and its arguments")
    p.set_defaults(func=run)


def run(args) -> int:
    argv = command_args(args, "sysgate run [options] -- CMD [ARG...]")
    try:
        filt, reporter = build(args)
        code, target = run_command(filt, argv, reporter)
    except SysgateError as exc:
        exc.exit_code = 125
        raise
    if target is not None and reporter is not None:
        reporter.finish(target)
    return code


def command_args(args, usage: str) -> list[str]:
    """The command of a ``nargs=REMAINDER`` argument, without a leading ``--``."""
    argv = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not argv:
        raise SysgateError(f"no command given: {usage}")
    return argv


def run_command(filt, argv: list[str], handler) -> tuple[int, object]:
    """Launch ``argv`` under the stored filter ``filt`` and :func:`supervise` it with ``handler``.

    Returns (shell-style status, the exited Target), or (126/127, None) after printing
    why the command could not be started. Signals are forwarded meanwhile.
    """
    from ..launch import LaunchError

    with SignalForwarder() as forwarder:
        try:
            target = filt.spawn(argv, sigmask=forwarder.original_mask)
        except LaunchError as exc:
            _print(f"sysgate: {exc}")
            return exc.exit_code, None
        with target:
            code = supervise(target, handler, forwarder)
    if target.returncode == -signal.SIGSYS:
        _print(f"sysgate: {target.argv[0]!r} was killed by SIGSYS: a filter action "
               f"(kill or an unhandled trap) stopped it")
    return code, target


def build(args):
    """The stored filter to launch with and the reporter that answers its notifications."""
    from ..bpf.insn import ret
    from ..filter import Filter
    from ..kernel import abi

    if args.filter:
        filt = Filter.load(args.filter)
        if args.log:
            filt.flags["log"] = True
        return filt, (PolicyReporter() if filt.notifies else None)
    path = args.policy or (profile_path(args.profile) if args.profile else None)
    if path:
        from ..policy.loader import load_policy

        pol = load_policy(path)
        _refuse_named_handlers(pol)
        filt = Filter.from_policy(pol, log=args.log)
        return filt, (PolicyReporter() if filt.notifies else None)
    if args.notify_all:
        return Filter.from_program([ret(abi.SECCOMP_RET_USER_NOTIF)], name="notify-all"), TraceReporter()
    if args.log:
        return Filter.from_program([ret(abi.SECCOMP_RET_LOG)], name="log-all"), None
    return Filter.from_program([ret(abi.SECCOMP_RET_USER_NOTIF)], name="audit"), AuditReporter()


def _refuse_named_handlers(policy) -> None:
    """``notify(NAME)`` rules need configured handlers, which ``sysgate run`` cannot build yet:
    refuse rather than let those syscalls through unchecked."""
    names = sorted({r.action.handler for r in policy.rules if r.action.kind == "notify" and r.action.handler})
    if names:
        raise SysgateError(f"policy {policy.name!r} routes syscalls to handler(s) {', '.join(names)}, which "
                           f"`sysgate run` does not configure; use plain `notify` (report and allow) or "
                           f"supervise it from Python (Supervisor.use_policy)")


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


def supervise(target, reporter, forwarder) -> int:
    """Serve ``target``'s notifications with the supervisor until it exits; its shell status.

    ``reporter`` answers every notification without a handler of its own (None: the
    supervisor's fail-closed default). Signals arrive on ``forwarder``'s signalfd.
    """
    from ..launch import exit_status
    from ..supervisor import Supervisor

    with Supervisor() as sup:
        if reporter is not None:
            sup.fallback(reporter)
        if target.listener is not None:
            sup.add_target(target)
        poller = select.poll()
        for fd in (sup.fileno(), target.pidfd, forwarder.fileno()):
            poller.register(fd, select.POLLIN)
        while True:
            timeout = sup.next_timeout()
            ready = dict(poller.poll(None if timeout is None else max(1, int(timeout * 1000))))
            sup.run_once(0)
            if forwarder.fileno() in ready:
                forwarder.forward(target)
            if target.pidfd in ready:
                return exit_status(target.wait())


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

    def __exit__(self, *exc) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        signal.pthread_sigmask(signal.SIG_SETMASK, self.original_mask)
