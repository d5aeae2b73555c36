"""Serving one supervisor's listeners from N processes: ``Supervisor(processes=N)``.

Python runs one thread at a time, so one loop answers at most one CPU's worth of
notifications. With ``processes=N`` the supervisor forks N worker processes when serving
starts (:meth:`Supervisor.run`, ``run_until_idle``, ``serve_forever``); each gets a copy of
every listener and runs the ordinary loop on it. The kernel hands each notification to
exactly one ``SECCOMP_IOCTL_NOTIF_RECV``, so every call is answered once, by the process
that received it, with :func:`~.notification.answer_or_fail_closed` as always. A process
that sees a listener readable but loses the race to another one blocks in RECV until the
next notification of that listener or its hang-up (the kernel has no non-blocking RECV);
whoever received last is never blocked, so some process always serves.

The parent serves nothing itself: it keeps its copy of each listener to see the hang-up
(its epoll asks for no events, so it is woken only by EPOLLHUP), reaps the targets, calls
``on_release`` and watches the workers through pidfds.

**A worker that dies fails everything closed.** A notification a worker received and did
not answer stays pending while any process holds the listener, and the kernel has no way to
list pending notifications: the ids could be published before handling, but a SIGKILL
between RECV's return and the publication would still lose one. So the parent treats the
death of a worker (a signal, a non-zero exit, or not ending within ``grace`` of a stop) as
the death of the supervisor, exactly as with one process: it kills the other workers and
closes its own copies, so every waiting call fails with ENOSYS and later ones too
(``Listener.reason == "worker lost"``, ``Stats.workers_lost``). Workers also die with the
parent (``PR_SET_PDEATHSIG``), for the same reason.

**Handler state is per process.** Each worker runs its own copy of the handlers, of
``Group.state`` and of blocking handlers' worker threads; nothing written in a worker
reaches the parent or the other workers. The parallel mode is for handlers whose answer
depends only on the call (and on files or the kernel). A handler that keeps results in
memory declares ``process_safe = False`` (the audit handler's summary, the recorder's
count): serving with ``processes > 1`` then refuses to start, in one line, instead of
losing its data, also when it is wrapped in a bound method, a partial or a function
(:func:`find_unsafe`). Only the counters of :class:`~.loop.Stats` are sent back to the
parent, when each worker ends (a killed worker's are lost). A handler calling ``stop()``
ends its own worker; the run ends when no worker is left.

Workers are forked before any thread runs (forking a threaded process copies locks held by
other threads): serving refuses to start while other threads are alive. They inherit the
parent's open files and signal mask, as after any fork, except that SIGTERM, which ends a
worker, is unblocked (``sysgate run`` blocks it to read it from a signalfd). Listeners
cannot be added or removed while workers serve; stop serving first (the next run forks new
workers over the current listeners).
"""
from __future__ import annotations

import dataclasses
import errno
import functools
import json
import logging
import math
import os
import select
import signal
import threading
import time
import types

from ..errors import SysgateError
from ..kernel import abi, calls, notify
from .workers import WorkerPool

log = logging.getLogger("sysgate.supervisor")

_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
#: seconds a stopping worker gives its blocking handlers before it answers their calls on_error_errno
WORKER_GRACE = 2.0
#: seconds the parent waits for stopping workers (more than WORKER_GRACE) before it kills them
STOP_GRACE = WORKER_GRACE + 3.0
#: Listener.reason of listeners closed because a worker process died
WORKER_LOST = "worker lost"
_TERM_RESEND = 0.05     # seconds between SIGTERMs while stopping: a RECV entered after one still ends


class Worker:
    """One forked worker process, seen from the parent."""

    __slots__ = ("pid", "pidfd", "stats_fd", "status")

    def __init__(self, pid: int, pidfd: int, stats_fd: int):
        self.pid, self.pidfd, self.stats_fd, self.status = pid, pidfd, stats_fd, None

    def signal(self, sig: int) -> None:
        """Send ``sig`` through the pidfd (never to a recycled pid); only while not yet reaped."""
        if self.status is None:
            try:
                signal.pidfd_send_signal(self.pidfd, sig)
            except ProcessLookupError:
                pass


def check_forkable(sup) -> None:
    """Refuse to fork workers that would silently lose state, or copy another thread's locks."""
    unsafe = unsafe_handlers(sup)
    if unsafe:
        raise SysgateError(f"handler(s) {', '.join(unsafe)} keep their results in memory (process_safe = False): "
                           "serve them with processes=1")
    if threading.active_count() > 1:
        raise SysgateError(f"processes={sup.processes}: worker processes must be forked before any thread starts "
                           f"({threading.active_count() - 1} other thread(s) running)")


def unsafe_handlers(sup) -> list[str]:
    """The names of ``sup``'s handlers that keep results in memory (see :func:`find_unsafe`), sorted."""
    names = set()
    for grp in (sup._global, *sup._groups.values()):
        for h in (*grp.handlers.values(), grp.fallback):
            culprit = None if h is None else find_unsafe(h.fn)
            if culprit is not None:
                name, outer = _name(culprit), _name(h.fn)
                names.add(name if culprit is h.fn or name == outer else f"{name} (inside {outer})")
    return sorted(names)


#: how deep :func:`find_unsafe` looks into wrappers of wrappers
_WRAP_DEPTH = 8


def find_unsafe(fn, _depth: int = 0, _seen: dict | None = None):
    """The handler that declares ``process_safe = False``: ``fn`` itself or one it wraps; None when none does.

    A handler without the attribute is process-safe (the contract's default: a plain function answering
    from the call alone), but a wrapper does not hide what it wraps: bound methods (``__self__``,
    ``__func__``), :func:`functools.partial` (``func``, its arguments), ``functools.wraps`` wrappers
    (``__wrapped__``), the callables a function closes over or takes as defaults (a lambda or nested
    wrapper calling a handler), and the handlers an object lists in ``wraps_handlers`` (the policy's
    chooser) are looked into. An explicit ``process_safe = True`` vouches for everything the object wraps.
    """
    mark = _attr(fn, "process_safe")
    if mark is False:
        return fn
    seen = {} if _seen is None else _seen        # id -> object, kept alive so that no id is reused meanwhile
    if mark is True or _depth >= _WRAP_DEPTH or id(fn) in seen:
        return None
    seen[id(fn)] = fn
    for inner in _wrapped(fn):
        culprit = find_unsafe(inner, _depth + 1, seen)
        if culprit is not None:
            return culprit
    return None


def _wrapped(fn):
    """The callables ``fn`` delegates to, as far as can be seen from outside."""
    inner = [_attr(fn, name) for name in ("__wrapped__", "__func__", "__self__")]
    inner.extend(_attr(fn, "wraps_handlers") or ())
    if isinstance(fn, functools.partial):
        inner.extend((fn.func, *fn.args, *fn.keywords.values()))
    elif isinstance(fn, types.FunctionType):
        for cell in fn.__closure__ or ():
            try:
                inner.append(cell.cell_contents)
            except ValueError:          # a cell not filled yet
                pass
        inner.extend(fn.__defaults__ or ())
        inner.extend((fn.__kwdefaults__ or {}).values())
    return [obj for obj in inner
            if obj is not None and callable(obj) and not isinstance(obj, (type, types.ModuleType))]


def _attr(obj, name: str):
    try:
        return getattr(obj, name, None)
    except Exception:       # a property that fails: as if it were not there
        return None


class Workers:
    """The worker processes of one serving run (parent side)."""

    def __init__(self, sup):
        self.sup = sup
        self.parent = os.getpid()
        self.all: list[Worker] = []
        self.by_pidfd: dict[int, Worker] = {}     # the workers not reaped yet
        self.lost = False

    @classmethod
    def start(cls, sup) -> "Workers":
        """Fork ``sup.processes`` workers serving every listener of ``sup`` (this returns only in the parent)."""
        check_forkable(sup)
        self = cls(sup)
        backlog, sup._backlog = sup._backlog, []
        # blocked until the worker has its own handlers: an early SIGTERM must not kill it by default
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            for index in range(sup.processes):
                stats_r, stats_w = os.pipe2(os.O_CLOEXEC)
                pid = os.fork()
                if pid == 0:
                    os.close(stats_r)
                    _worker_main(sup, self, stats_w, backlog if index == 0 else [], mask)   # never returns
                os.close(stats_w)
                os.set_blocking(stats_r, False)      # a grandchild may hold the write end: never wait for it
                pidfd = os.pidfd_open(pid)
                worker = Worker(pid, pidfd, stats_r)
                self.all.append(worker)
                self.by_pidfd[pidfd] = worker
                sup._epoll.register(pidfd, select.EPOLLIN)
        except BaseException:
            self.stop(0)
            raise
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        return self

    @property
    def alive(self) -> bool:
        return bool(self.by_pidfd)

    def exited(self, pidfd: int) -> bool:
        """Reap the worker of ``pidfd`` (readable: it ended); False when it is not one of ours."""
        worker = self.by_pidfd.get(pidfd)
        if worker is None:
            return False
        self._reap(worker)
        if worker.status != 0 and not self.lost:
            self._lose(f"worker process {worker.pid} {_describe_status(worker.status)}")
        elif not self.by_pidfd and self.sup._listeners:
            self.sup.stop()     # every worker was stopped (a handler called stop()): so is the run
        return True

    def _reap(self, worker: Worker) -> None:
        if worker.status is not None:
            return
        try:
            self.sup._epoll.unregister(worker.pidfd)
        except (OSError, ValueError):
            pass
        _, status = os.waitpid(worker.pid, 0)
        worker.status = os.waitstatus_to_exitcode(status)
        del self.by_pidfd[worker.pidfd]               # before the number can be reused
        os.close(worker.pidfd)
        self._merge(worker)

    def _merge(self, worker: Worker) -> None:
        """Add the worker's counters (written just before it exited) to the supervisor's."""
        data = b""
        try:
            while chunk := os.read(worker.stats_fd, 4096):
                data += chunk
        except BlockingIOError:
            pass
        finally:
            os.close(worker.stats_fd)
        if not data:
            return
        stats = self.sup.stats
        for name, value in json.loads(data).items():
            if name not in ("released", "workers_lost"):     # the parent counts those itself
                setattr(stats, name, getattr(stats, name) + value)

    def _lose(self, why: str) -> None:
        """Fail closed: kill every worker and close the parent's copies of the listeners."""
        self.lost = True
        self.sup.stats.workers_lost += 1
        log.error("%s: failing closed (closing every listener: waiting calls get ENOSYS)", why)
        for worker in list(self.by_pidfd.values()):
            worker.signal(signal.SIGKILL)
        for worker in list(self.by_pidfd.values()):
            self._reap(worker)
        for lst in list(self.sup._listeners.values()):
            self.sup._release(lst, WORKER_LOST)

    def stop(self, grace: float) -> None:
        """End the workers: SIGTERM (again every few ms, so that a RECV entered after the first one
        still ends), then after ``grace`` seconds SIGKILL, which counts as losing them."""
        end = time.monotonic() + grace
        while True:
            running = list(self.by_pidfd.values())
            if not running:
                return
            if time.monotonic() >= end:
                if not self.lost:
                    self._lose(f"worker process(es) {', '.join(str(w.pid) for w in running)} did not end "
                               f"within {grace}s of the stop")
                return
            for worker in running:
                worker.signal(signal.SIGTERM)
            ready = select.poll()
            for worker in running:
                ready.register(worker.pidfd, select.POLLIN)
            for pidfd, _ in ready.poll(_TERM_RESEND * 1000):
                self.exited(pidfd)


def _worker_main(sup, workers: Workers, stats_fd: int, backlog: list, mask) -> None:
    """A forked worker: serve every listener until each has hung up or SIGTERM; never returns.

    On SIGTERM the call being handled inline is finished; blocking handlers get
    :data:`WORKER_GRACE` seconds, then their calls are answered ``on_error_errno`` (the
    deadline rule, applied now): a worker never exits leaving a received call unanswered.
    """
    code = 1
    try:
        _die_with_parent(workers)
        signal.signal(signal.SIGINT, signal.SIG_IGN)     # ^C reaches the whole group: the parent decides
        stats = type(sup.stats)()
        _become_worker(sup, workers, stats, backlog)
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, lambda *_: sup.stop())
        # the mask the parent had, but SIGTERM unblocked whatever it was: the parent may have had it
        # blocked (sysgate run receives it on a signalfd), and a worker that cannot get it is only
        # ended by SIGKILL, which counts as losing it (the other inherited blocks stay: a SIGHUP or
        # SIGQUIT meant for the parent's process group must not kill a worker)
        signal.pthread_sigmask(signal.SIG_SETMASK, set(mask) - {signal.SIGTERM})
        sup._signal_fd = wake_r
        sup._epoll.register(wake_r, select.EPOLLIN)
        only = _single_listener(sup)
        if only is not None:
            _serve_receiving(sup, only)
        else:
            sup._serve(None, until_idle=True)
        sup._pool.shutdown(WORKER_GRACE)
        sup._collect()
        sup._expire(math.inf)
        sup.close(0)
        os.write(stats_fd, json.dumps(dataclasses.asdict(stats)).encode())
        code = 0
    except BaseException:
        log.exception("supervisor worker process %d failed", os.getpid())
    finally:
        os._exit(code)


def _become_worker(sup, workers: Workers, stats, backlog: list) -> None:
    """Turn the forked copy of the parent's supervisor into a serving one-process supervisor."""
    for worker in workers.all:                     # the workers forked before this one
        os.close(worker.pidfd)
        os.close(worker.stats_fd)
    sup._epoll.close()                             # the parent's epoll instance: never touch it
    sup._pool.close()
    sup.processes = 1
    sup.lease_window = 0.0       # listeners shared with the other workers: a poll then RECV could block
    sup._workers = None
    sup._reaping = {}                              # the parent reaps the targets
    sup._watched = {}                              # and watches what it was asked to
    sup._backlog = backlog
    sup.stats = stats
    sup._pool = WorkerPool(*sup._pool_args)
    sup._epoll = select.epoll()
    sup._epoll.register(sup._pool.wakeup_fd, select.EPOLLIN)
    for lst in sup._listeners.values():
        lst.stats, lst.on_release, lst.target = stats, None, None     # the parent calls on_release
        sup._epoll.register(lst.fd, select.EPOLLIN)
    if backlog:
        sup._pool.wake()


def _single_listener(sup):
    """The worker's one listener when it may be served by blocking RECVs alone: nothing else
    to watch (no other listener, no backlog, no handler run by threads, hence no deadline)."""
    if len(sup._listeners) != 1 or sup._backlog:
        return None
    for grp in (sup._global, *sup._groups.values()):
        if any(h is not None and h.blocking for h in (*grp.handlers.values(), grp.fallback)):
            return None
    return next(iter(sup._listeners.values()))


def _serve_receiving(sup, lst) -> None:
    """RECV, answer, repeat: the loop of a worker with one listener (the common case: one target,
    many threads). RECV blocks until a notification is pending, so no epoll_wait is needed per
    notification; EINTR (SIGTERM) ends it when ``stop`` was asked, ENOENT with the filter unused
    (the kernel returns at once once no task uses it) releases the listener."""
    fd, handle, stats = lst.fd, sup._handle, sup.stats
    recv_into, zeroed = notify.recv_into, bytearray(notify.NOTIF_SIZE)
    hangup = select.poll()
    hangup.register(fd, 0)                                 # POLLHUP is always reported
    while not sup._stopping:
        raw = zeroed.copy()
        try:
            recv_into(fd, raw)
        except OSError as exc:
            if exc.errno == errno.EINTR:
                continue
            if exc.errno == errno.ENOENT:
                if hangup.poll(0):
                    sup._release(lst, "hangup")
                    return
                stats.gone += 1
                continue
            log.error("RECV on listener %d (group %s) failed: %s; releasing it", fd, lst.group.name, exc)
            sup._release(lst, "error")
            return
        stats.received += 1
        handle(lst, raw)


def _die_with_parent(workers: Workers) -> None:
    """PR_SET_PDEATHSIG(SIGKILL): a worker never outlives the parent that watches it."""
    try:
        calls.prctl(abi.PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        os._exit(1)
    if os.getppid() != workers.parent:      # the parent died before the prctl
        os._exit(1)


def _describe_status(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def _name(fn) -> str:
    return str(getattr(fn, "name", None) or getattr(fn, "__name__", None) or type(fn).__name__)
