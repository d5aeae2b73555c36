"""Running a command under a stored filter and serving its notifications until it is done.

The library half of ``sysgate run`` (also used by ``learn``, ``record`` and ``attach``):
:func:`run_supervised` wires a policy's handlers and a recorder onto a supervisor,
:func:`run_command` launches and :func:`supervise` serves, forwarding signals
(:class:`SignalForwarder`) like env(1)/timeout(1). The reporters answer the notifications
no named handler takes: audit (count and allow), trace (print and allow).
"""
from __future__ import annotations

import ctypes
import os
import select
try:        # the C module signal.py wraps in enums: importing enum costs a launch about 3 ms, and ints do here
    import _signal as signal
except ImportError:     # pragma: no cover (an interpreter without it)
    import signal
import struct
import sys

from ..errors import SysgateError
from .launch import LaunchError, exit_status

# The supervisor and the handlers are imported where they are used: a filter without notifications
# (``sysgate run`` of most policies) is launched and waited for without them.

#: the signals sysgate passes on to the command it runs
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def run_supervised(filt, argv: list[str], reporter, policy=None, handlers=None, *,
                   record: str | None = None, landlock=None, exit_with_main: bool = False,
                   custom: dict | None = None, processes: int = 1) -> tuple[int, object]:
    """:func:`run_command` on a new supervisor: ``policy``'s ``notify(NAME)`` rules go to the
    handlers configured by ``handlers`` and the ``custom`` ones (see :func:`sysgate.handlers.registry.wire`),
    every other notification to ``reporter``. With ``record`` (a path), every notification and its reply
    is also written there for ``sysgate replay``. ``landlock``: a LandlockPlan for the command.

    ``processes`` > 1 serves the notifications from that many worker processes (``sysgate run
    --processes``, see :mod:`sysgate.supervisor.processes`); handlers that keep their results in
    memory, the audit mode and ``record`` are refused in one line before the command starts. It
    has no effect when ``filt`` notifies nothing."""
    from ..handlers.registry import wire
    from ..supervisor import Supervisor

    if not filt.notifies:
        processes = 1               # nothing to serve: no worker is forked
    if processes > 1 and record:
        raise SysgateError(f"--processes {processes} cannot be used with --record: the recording is written "
                           "by one process (use --processes 1)")
    handler_set = recorder = None
    try:
        with Supervisor(processes=processes) as sup:
            if record:
                from ..testing import Recorder

                recorder = Recorder(record, sup, argv=argv)
            wrap = recorder.wrap if recorder else None
            handler_set = wire(sup, policy, handlers, wrap=wrap, custom=custom, warn=warn)
            if reporter is not None and wrap:
                reporter = wrap(reporter)
            if processes > 1:
                check_processes(sup, reporter, handler_set)
            code, target = run_command(filt, argv, reporter, supervisor=sup, landlock=landlock,
                                       exit_with_main=exit_with_main)
    finally:
        if handler_set is not None:
            handler_set.finish(sys.stderr)
        if recorder is not None:
            recorder.close()
    if recorder is not None:
        warn(f"sysgate: {recorder.count} notifications recorded to {record}")
    return code, target


def check_processes(sup, reporter, handler_set=None) -> None:
    """A one-line SysgateError, naming the option or handler, when ``sup``'s worker processes
    (``sup.processes`` > 1) cannot serve ``reporter`` and the handlers routed on ``sup`` (they keep
    results in memory), or cannot be forked (threads run). Called before the target starts
    (``handler_set``: the :func:`~sysgate.handlers.registry.wire` result, whose audit is refused)."""
    from ..supervisor.processes import check_forkable, find_unsafe, unsafe_handlers

    n = sup.processes
    if isinstance(reporter, AuditReporter):
        raise SysgateError(f"--processes {n} needs a policy: without one every call is audited and the summary "
                           "is counted in one process (use --processes 1, or --log)")
    if handler_set is not None and handler_set.audit is not None:
        handler_set.summary = False         # nothing ran: finish() prints no summary
        raise SysgateError(f"--processes {n} cannot serve the audit handler (notify(audit) or an audit section "
                           "in --handlers): its log and summary are kept by one process (use --processes 1)")
    unsafe = unsafe_handlers(sup)
    if reporter is not None and find_unsafe(reporter) is not None:
        unsafe.append(f"{type(reporter).__name__} (the notifications no handler takes)")
    if unsafe:
        raise SysgateError(f"--processes {n} cannot serve handler(s) {', '.join(unsafe)}: they keep their results "
                           "in memory (process_safe = False), each worker process would keep a part "
                           "(use --processes 1)")
    try:
        check_forkable(sup)
    except SysgateError as exc:
        raise SysgateError(f"--processes {n}: {exc}") from None


def run_command(filt, argv: list[str], handler, *, supervisor=None, landlock=None,
                exit_with_main: bool = False) -> tuple[int, object]:
    """Launch ``argv`` under the stored filter ``filt`` and :func:`supervise` it with ``handler``
    (on ``supervisor`` when given) until every process holding the filter is gone (with
    ``exit_with_main``: until ``argv`` exits).

    Returns (shell-style status, the exited Target), or (126/127, None) after printing
    why the command could not be started. Signals are forwarded meanwhile.
    """
    with SignalForwarder() as forwarder:
        try:
            target = filt.spawn(argv, sigmask=forwarder.original_mask, landlock=landlock)
        except LaunchError as exc:
            warn(f"sysgate: {exc}")
            return exc.exit_code, None
        with target:
            code = supervise(target, handler, forwarder, supervisor=supervisor, exit_with_main=exit_with_main)
    if target.returncode == -signal.SIGSYS:
        warn(f"sysgate: {target.argv[0]!r} was killed by SIGSYS: a filter action "
             f"(kill or an unhandled trap) stopped it")
    return code, target


# --- answering notifications ---------------------------------------------------------
class AuditReporter:
    """Allow everything (CONTINUE) and print the per-syscall summary of
    :class:`sysgate.handlers.audit.AuditLog` at exit."""

    process_safe = False        # the summary is counted in this process

    def __init__(self):
        from ..handlers.audit import AuditHandler, AuditLog

        self.log = AuditLog(None, strings=False)
        self.handler = AuditHandler(self.log)

    def __call__(self, n):
        return self.handler(n)

    def finish(self, target) -> None:
        warn(f"sysgate: audit of {target.argv[0]!r}\n{self.log.summary()}")


class TraceReporter:
    """Print every notified syscall strace-style (``[pid N] openat(AT_FDCWD, "/etc/x", O_RDONLY)``)
    and let it run."""

    prefix = ""

    def __call__(self, n):
        from ..handlers.decode import format_call
        from ..supervisor import Reply

        warn(f"{self.prefix}[pid {n.pid}] {format_call(n)}")
        return Reply.continue_()

    def finish(self, target) -> None:
        pass


class PolicyReporter(TraceReporter):
    """A policy's ``notify`` rules without a named handler: report and allow."""

    prefix = "sysgate: notify: "


def warn(text: str) -> None:
    """Print ``text`` to stderr, unless stderr is closed (e.g. a pipe to `head`): the command keeps running."""
    try:
        print(text, file=sys.stderr)
    except OSError:
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
    new one is made and closed, unless there is nothing to serve (no listener, no ``reporter``):
    then the target is only waited for.
    """
    if supervisor is None and reporter is None and target.listener is None:
        return _wait(target, forwarder)
    if supervisor is None:
        from ..supervisor import Supervisor

        with Supervisor() as sup:
            return supervise(target, reporter, forwarder, supervisor=sup, exit_with_main=exit_with_main)
    sup = supervisor
    if reporter is not None:
        sup.fallback(reporter)
    listener = sup.add_target(target) if target.listener is not None else None
    if sup.processes > 1:
        if listener is None:
            return _wait(target, forwarder)
        return _supervise_in_processes(sup, target, listener, forwarder, exit_with_main)
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


def _supervise_in_processes(sup, target, listener, forwarder, exit_with_main: bool) -> int:
    """:func:`supervise` on a supervisor with worker processes: they answer the notifications
    while the loop of :meth:`~sysgate.supervisor.Supervisor.run` in this process reaps the
    target, sees the listener hang up and forwards signals (it watches the signalfd, so a signal
    is passed on at once). The workers end when the run does."""
    state = {"code": None, "done": False}

    def signalled() -> None:
        if state["code"] is not None:       # only processes it left behind: stop waiting for them
            forwarder.drain()
            state["done"] = True
        else:
            forwarder.forward(target)

    def finished() -> bool:
        if state["code"] is None and target.returncode is not None:      # reaped by the supervisor
            state["code"] = exit_status(target.wait())
        return state["done"] or (state["code"] is not None and (exit_with_main or listener.released))

    sup.watch(forwarder.fileno(), signalled)
    try:
        while not finished():
            sup.run(until=finished)     # (returns early only when every worker ended: then it forks new ones)
    finally:
        sup.unwatch(forwarder.fileno())
    return state["code"]


def _wait(target, forwarder) -> int:
    """:func:`supervise` of a target without a listener: wait for it, forwarding signals."""
    poller = select.poll()
    poller.register(target.pidfd, select.POLLIN)
    poller.register(forwarder.fileno(), select.POLLIN)
    while True:
        ready = dict(poller.poll())
        if target.pidfd in ready or target.returncode is not None:
            return exit_status(target.wait())
        if forwarder.fileno() in ready:
            forwarder.forward(target)


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
