"""The supervisor: one epoll loop over the listener fds of many targets.

Per listener the loop waits for readiness, RECVs into a fresh zeroed buffer (RECV
after EPOLLIN never blocks), finds the handler for (arch, nr) through a per-group
cache and answers. Handlers marked ``blocking`` or given a ``deadline`` run in a
:class:`~sysgate.supervisor.workers.WorkerPool`, each handler in a lane of its own
threads; when the deadline passes first, the loop answers ``on_error_errno`` (fail
closed), drops the late verdict and writes the stuck thread off (it no longer keeps
the listener open or the handler's lane short). Exceptions in handlers
answer ``on_error_errno`` too. EPOLLHUP means no task uses the filter any more
(also when daemons spawned by the target outlived it and then exited): the
listener is unregistered, closed and ``on_release`` is called. ENOENT from the
kernel (target killed, syscall interrupted) is normal and only counted.

Other handlers run inline in the loop thread: they must be quick (no deadline can
interrupt them). Closing the supervisor closes every listener; syscalls still
waiting for an answer then fail with ENOSYS in the targets.

With ``processes=N`` (N > 1) this loop runs in N forked worker processes that share
the listeners, so that notifications are answered on several CPUs at once; the parent
only watches hang-ups, targets and workers (see :mod:`.processes`).
"""
from __future__ import annotations

import errno as _errno
import functools
import heapq
import logging
import os
import select
import signal
import threading
import time
from dataclasses import dataclass

from ..errors import SysgateError
from ..kernel import abi, notify
from . import processes as _processes
from .leases import QUEUED_AFTER, Lease
from .notification import (HEADER, REPLIED, Deadline, DeadlineExceeded, Notification, Reply, ReplyError, TargetGone,
                           answer_or_fail_closed, errno_value, fail_closed, send_claimed_error, share)
from .routing import Group, RegisteredHandler, Routes, no_handler
from .workers import DONE, QUEUED, PoolRefused, WorkerPool

log = logging.getLogger("sysgate.supervisor")

_ZEROED = bytearray(notify.NOTIF_SIZE)   # never written: only copied
_HUP = select.EPOLLHUP | select.EPOLLERR
_IN = select.EPOLLIN
_POLL_END = select.POLLHUP | select.POLLERR | select.POLLNVAL
_unpack_header = HEADER.unpack_from


@dataclass
class Stats:
    """Counters of one supervisor (all monotonic)."""

    received: int = 0     #: notifications RECVed
    gone: int = 0         #: ENOENT from RECV/SEND/ADDFD: target died or its syscall was interrupted
    errors: int = 0       #: handler exceptions answered with on_error_errno
    timeouts: int = 0     #: deadlines that passed before the handler answered
    rejected: int = 0     #: blocking calls refused: the handler's lane was full or its threads stuck
    written_off: int = 0  #: worker threads written off because their handler outlived its deadline
    released: int = 0     #: listeners released (hang-up, removal or shutdown)
    workers_lost: int = 0  #: worker processes that died while serving (everything was failed closed)
    leased: int = 0       #: notifications RECVed by a worker thread the listener was lent to (see .leases)


@dataclass(eq=False)
class Listener:
    """One listener fd owned by the supervisor."""

    fd: int
    group: Group
    stats: Stats
    pidfd: int | None = None
    target: object = None                #: the launch.Target, when added with add_target
    on_release: object = None
    reason: str | None = None            #: why released: "hangup", "removed", "shutdown", "error", "worker lost"
    busy: int = 0                        # handlers running in workers (the fd stays open meanwhile)
    lease: Lease | None = None           # the worker thread receiving from it instead of the loop

    def __post_init__(self):
        self.cache = self.group.cache    # the group's dispatch cache, one attribute away

    @property
    def released(self) -> bool:
        return self.reason is not None


class Supervisor(Routes):
    """Answer seccomp notifications of many targets from one event loop.

    ``default`` answers syscalls without a handler and handlers that return None;
    ``on_error_errno`` answers handler exceptions, refused and timed-out work;
    ``handler_timeout`` is the deadline (seconds) of blocking handlers without their own;
    ``sync_wakeup`` enables SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP on every listener when the
    kernel has it.

    Blocking handlers get capacity of their own (see :mod:`.workers`), so a stuck handler
    cannot starve the others. Per blocking handler: ``workers`` threads run its calls at
    once; ``max_pending`` of its calls may wait or run (more are answered ``on_error_errno``);
    ``max_stuck`` threads may be written off when it misses deadlines (each is replaced, so
    the handler keeps ``workers`` threads); past that its calls fail closed at once while
    all its workers are stuck too. At most ``workers + max_stuck`` threads per handler.

    ``processes`` > 1 serves from that many forked processes sharing the listeners (one CPU
    each): for handlers whose answers need no state shared between calls, since each process
    has its own copy of the handlers (see :mod:`.processes`: what is refused, and why the death
    of one worker fails every listener closed). 1 (the default) serves in this process.

    ``lease_window`` (seconds; 0 turns it off): the worker thread that answered a blocking
    call receives its listener's next calls of that handler itself while they come within
    this window of each other (see :mod:`.leases`).
    """

    def __init__(self, default: Reply | None = None, *, on_error_errno: int | str = _errno.EPERM,
                 handler_timeout: float = 5.0, workers: int = 4, max_pending: int = 1024,
                 max_stuck: int = 16, sync_wakeup: bool = True, processes: int = 1, lease_window: float = 0.002):
        if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
            raise ValueError(f"processes must be a positive number, not {processes!r}")
        self.default = default if default is not None else Reply.errno(_errno.EPERM)
        if not isinstance(self.default, Reply):
            raise TypeError("default must be a Reply, e.g. Reply.errno('EPERM')")
        self.on_error_errno = errno_value(on_error_errno)
        self.handler_timeout = handler_timeout
        self.sync_wakeup = sync_wakeup
        self.stats = Stats()
        self.processes = processes
        if not 0 <= lease_window <= 1:
            raise ValueError(f"lease_window must be 0..1 seconds, not {lease_window!r}")
        self.lease_window = lease_window
        self._pool_args = (workers, max_pending, max_stuck)
        self._pool = WorkerPool(*self._pool_args)
        self._workers: _processes.Workers | None = None   # the worker processes, while they serve
        self._epoll = select.epoll()
        self._epoll.register(self._pool.wakeup_fd, _IN)
        self._signal_fd = -1          # serve_forever's signal wakeup pipe
        self._watched: dict[int, object] = {}   # fd -> callback (watch)
        self._listeners: dict[int, Listener] = {}
        Routes.__init__(self)
        self._backlog: list[tuple[Listener, bytearray]] = []
        self._deadlines: list[Deadline] = []
        self._leases: set[Lease] = set()        # listeners lent to worker threads
        self._dead_search_after = 0.0           # a full lane is searched for dead calls from then on
        self._draining: set[Listener] = set()   # released, closed once their blocking work ends
        self._reaping: dict[int, object] = {}   # pidfd -> launch.Target to reap when it exits
        self._stopping = False
        self._closed = False

    # --- listeners ------------------------------------------------------------------
    def add_listener(self, fd: int, group: str = "default", *, pidfd: int | None = None, on_release=None,
                     pending=(), target=None) -> Listener:
        """Supervise listener ``fd`` (the supervisor now owns and will close it).

        ``pending`` are notifications already RECVed from it (e.g. ``Target.pending``); they are
        answered before anything else. ``on_release(listener)`` is called once the listener is
        released (``listener.reason`` says why). ``pidfd`` (not owned) is kept for handlers.
        """
        if self._closed:
            raise SysgateError("the supervisor is closed")
        if fd in self._listeners:
            raise SysgateError(f"fd {fd} is already supervised")
        self._check_no_workers("add a listener")
        grp = self.group(group)
        lst = Listener(fd, grp, self.stats, pidfd, target, on_release)
        if self.sync_wakeup:
            notify.enable_sync_wakeup(fd)
        for raw in pending:
            self._backlog.append((lst, bytearray(abi.SECCOMP_NOTIF.pack(raw.id, raw.pid, raw.flags,
                                                                       raw.data.pack()))))
        self._listeners[fd] = lst
        grp.listeners.add(lst)
        # with worker processes the parent only waits for the hang-up (EPOLLHUP is always reported)
        self._epoll.register(fd, _IN if self.processes == 1 else 0)
        if self._backlog:
            self._pool.wake()
        return lst

    def add_target(self, target, group: str | None = None, *, on_release=None, reap: bool = True) -> Listener:
        """Supervise a :class:`sysgate.process.launch.Target`: takes over its listener (``target.listener``
        becomes None) and its pending notifications; the group defaults to the target's.

        With ``reap`` the loop also reaps the target when it exits (``target.returncode`` is
        set, no zombie stays). The listener itself is released when no task uses the filter any
        more, which can be later: descendants (daemons) inherit the filter.
        """
        if target.listener is None:
            raise SysgateError(f"target {target.pid} has no listener (its filter never notifies)")
        fd, target.listener = target.listener, None
        pending, target.pending = list(target.pending), []
        lst = self.add_listener(fd, group or target.group or "default", pidfd=target.pidfd,
                                on_release=on_release, pending=pending, target=target)
        if reap and target.pidfd is not None and target.pidfd >= 0:
            self._reaping[target.pidfd] = target
            self._epoll.register(target.pidfd, _IN)
        return lst

    def remove(self, listener: Listener) -> None:
        """Stop supervising ``listener`` and close it (its waiting syscalls fail with ENOSYS)."""
        self._check_no_workers("remove a listener")
        self._release(listener, "removed")

    def watch(self, fd: int, callback) -> None:
        """Call ``callback()`` from the loop whenever ``fd`` (not owned) is readable, e.g. a signalfd
        that :meth:`run`'s ``until`` should see at once rather than at its next 0.1 s check. It must
        consume what made ``fd`` readable (the loop would wake again at once otherwise). With worker
        processes only the parent watches. :meth:`unwatch` before closing ``fd``."""
        if fd in self._watched:
            raise SysgateError(f"fd {fd} is already watched")
        self._epoll.register(fd, _IN)
        self._watched[fd] = callback

    def unwatch(self, fd: int) -> None:
        """Stop watching ``fd`` (see :meth:`watch`)."""
        if self._watched.pop(fd, None) is not None and not self._closed:
            self._epoll.unregister(fd)

    def _check_no_workers(self, what: str) -> None:
        if self._workers is not None:
            raise SysgateError(f"cannot {what} while worker processes serve (processes={self.processes}): "
                               "stop serving first")

    @property
    def listeners(self) -> list[Listener]:
        return list(self._listeners.values())

    def _release(self, lst: Listener, reason: str) -> None:
        if lst.released:
            return
        lst.reason = reason
        self._listeners.pop(lst.fd, None)
        lst.group.listeners.discard(lst)
        try:
            self._epoll.unregister(lst.fd)
        except (OSError, ValueError):
            pass
        if lst.busy == 0:
            self._close_listener(lst)
        else:
            self._draining.add(lst)

    def _close_listener(self, lst: Listener) -> None:
        if lst.lease is not None:    # its worker must not RECV from whatever file gets the fd number next
            self._reclaim(lst.lease)
        fd, lst.fd = lst.fd, -1
        self._draining.discard(lst)
        if fd >= 0:
            os.close(fd)
        self.stats.released += 1
        if lst.on_release is not None:
            try:
                lst.on_release(lst)
            except Exception:
                log.exception("on_release callback failed for group %s", lst.group.name)

    # --- dispatch -------------------------------------------------------------------
    def _resolve(self, lst: Listener, n: Notification, key: int):
        """What answers ``n``'s (arch, nr) in ``lst``'s group, cached per group: a blocking
        :class:`~.routing.RegisteredHandler` (run by :meth:`_submit`) or the callable to run inline."""
        handler = self.handler_for(lst.group, n)
        if handler is None:
            entry = no_handler
        elif handler.blocking:
            entry = handler
        else:
            entry = handler.fn
        lst.group.cache[key] = entry
        return entry

    def _handle(self, lst: Listener, raw: bytearray) -> None:
        """Answer one RECVed notification: the hot path, kept free of avoidable work."""
        nid, pid, _, key = _unpack_header(raw)
        n = Notification(lst, raw, nid, pid)
        entry = lst.cache.get(key) or self._resolve(lst, n, key)
        if entry.__class__ is RegisteredHandler:
            self._submit(entry, n)
            return
        exc = answer_or_fail_closed(n, entry, self.default, self.on_error_errno)
        if exc is not None:
            self._failed(n, exc)

    def _failed(self, n: Notification, exc: Exception) -> None:
        """Count and log what :func:`answer_or_fail_closed` answered ``on_error_errno``."""
        if isinstance(exc, (TargetGone, DeadlineExceeded)):
            return   # nothing to answer: the target is gone, or the deadline answered
        self.stats.errors += 1
        log.error("handler for %s (group %s) failed: %r; answering errno %d", _describe(n), n.listener.group.name,
                  exc, self.on_error_errno, exc_info=not isinstance(exc, ReplyError))

    # --- blocking handlers -----------------------------------------------------------
    def _submit(self, handler: RegisteredHandler, n: Notification) -> None:
        """Hand ``n`` to its handler's lane of workers with a deadline (runs in the loop thread),
        lending the worker the listener when the call starts at once (see :mod:`.leases`)."""
        timeout = handler.deadline if handler.deadline is not None else self.handler_timeout
        now = time.monotonic()
        deadline = Deadline(now + timeout, n, handler)
        share(n, deadline)
        lst = n.listener
        if self.lease_window and self.processes == 1 and lst.lease is None and self._pool.starts_now(handler.fn):
            lease = deadline.lease = lst.lease = Lease(lst, handler, deadline, now)
            self._leases.add(lease)
            self._epoll.modify(lst.fd, 0)            # before the worker can poll it: one receiver
            run = functools.partial(self._run_leased, handler, n, lease, timeout)
        else:
            run = functools.partial(self._run_blocking, handler, n)
        try:
            try:
                deadline.job = self._pool.submit(handler.fn, run)
            except PoolRefused:
                if not self._drop_dead_calls(handler, now):
                    raise
                deadline.job = self._pool.submit(handler.fn, run)
        except PoolRefused as exc:
            if deadline.lease is not None:
                self._take_back(deadline.lease)
            self.stats.rejected += 1
            log.warning("no worker for %s (%s): answering errno %d", _describe(n), exc, self.on_error_errno)
            fail_closed(n, self.on_error_errno)
            return
        lst.busy += 1
        heapq.heappush(self._deadlines, deadline)

    def _run_blocking(self, handler: RegisteredHandler, n: Notification) -> Notification:
        """Run a blocking handler (in a worker thread); the loop gets ``n`` back."""
        if n._state == REPLIED:
            return n  # the deadline passed while it was queued
        exc = answer_or_fail_closed(n, handler.fn, self.default, self.on_error_errno)
        if exc is not None:
            self._failed(n, exc)
        return n

    def _drop_dead_calls(self, handler: RegisteredHandler, now: float) -> bool:
        """``handler``'s lane is full: drop its queued calls that no target waits for any more (a
        signal interrupted them; a restarted call comes back as a new notification), so that they
        do not crowd out live ones. An ID_VALID per queued call: after a search that found none,
        the next waits 50 ms (a lane full of live calls). True when some were dropped."""
        if now < self._dead_search_after:
            return False
        dropped = 0
        for deadline in list(self._deadlines):
            job, n = deadline.job, deadline.notification
            if deadline.handler is handler and job.state == QUEUED and not n.valid() \
                    and self._pool.cancel_queued(job):   # under the pool's lock: no worker took it meanwhile
                n.try_claim()                         # its deadline finds it answered: no timeout counted
                if deadline.lease is not None:
                    self._reclaim(deadline.lease)
                self._finished(n.listener)
                dropped += 1
        self.stats.gone += dropped
        if not dropped:
            self._dead_search_after = now + 0.05
        return dropped > 0

    def _run_leased(self, handler: RegisteredHandler, n: Notification, lease: Lease, timeout: float) -> Lease:
        """Answer ``n``, then the listener's next calls of ``handler`` while they come within the
        lease window (in a worker thread); the loop gets the lease back."""
        try:
            self._follow(handler, n, lease, timeout)
        except Exception:      # never keep the listener: the loop polls it again
            log.exception("worker lost its lease on listener %d", lease.listener.fd)
        return lease

    def _follow(self, handler: RegisteredHandler, n: Notification, lease: Lease, timeout: float) -> None:
        """:meth:`_run_leased`'s loop: answer, wait for the next call, RECV it under the lease's lock."""
        lst = lease.listener
        fd = lst.fd
        lane = self._pool.lane(handler.fn)
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        window = self.lease_window * 1000
        while True:
            self._run_blocking(handler, n)
            with lease.lock:
                lease.current = None
                if lease.revoked:
                    return
            while True:
                if self._stopping or lst.released or (lane is not None and lane.jobs):
                    return
                ready = poller.poll(window)
                if not ready or ready[0][1] & _POLL_END or not ready[0][1] & select.POLLIN:
                    return     # quiet, or hung up (the loop sees it once the fd is polled again)
                with lease.lock:
                    if lease.revoked or lst.fd != fd:
                        return
                    raw = _ZEROED.copy()
                    try:
                        notify.recv_into(fd, raw)
                    except OSError as exc:
                        if exc.errno == _errno.ENOENT:
                            lease.gone += 1
                            continue
                        return     # the loop's RECV meets the error again and handles it
                    lease.received += 1
                    nid, pid, _, key = _unpack_header(raw)
                    if lst.cache.get(key) is not handler:
                        lease.handback = raw
                        return
                    n = Notification(lst, raw, nid, pid)
                    lease.started = now = time.monotonic()
                    lease.current = Deadline(now + timeout, n, handler)
                    share(n, lease.current)
                    break

    def _take_back(self, lease: Lease) -> None:
        """The listener of ``lease`` is the loop's to poll again (idempotent)."""
        lst = lease.listener
        if lst.lease is not lease:
            return
        lst.lease = None
        self._leases.discard(lease)
        self.stats.received += lease.received
        self.stats.leased += lease.received
        self.stats.gone += lease.gone
        lease.received = lease.gone = 0
        if not lst.released and lst.fd >= 0:
            self._epoll.modify(lst.fd, _IN)

    def _end_lease(self, lease: Lease) -> None:
        """A worker gave ``lease`` back: poll the listener again, answer the call it handed back."""
        lst = lease.listener
        self._take_back(lease)
        self._finished(lst)
        raw, lease.handback = lease.handback, None
        if raw is not None and not lst.released:
            self._handle(lst, raw)

    def _check_leases(self, now: float) -> None:
        """Take back the listeners whose worker is on a slow call: longer than the lease window,
        or longer than QUEUED_AFTER while other calls wait on the listener."""
        for lease in list(self._leases):
            busy = lease.busy_for(now)
            if busy is None or busy <= QUEUED_AFTER:
                continue
            limit = QUEUED_AFTER if busy <= self.lease_window and _pending(lease.listener.fd) else self.lease_window
            if lease.revoke_if_slow(now, limit):
                self._take_back(lease)

    def _end_leases(self) -> None:
        """The loop stops serving: every lent listener comes back (calls already running finish)."""
        for lease in list(self._leases):
            self._reclaim(lease)

    def _reclaim(self, lease: Lease) -> None:
        """Revoke ``lease`` now and poll its listener again (the worker finishes its call, if any)."""
        lease.revoke()
        self._take_back(lease)

    def _expire(self, now: float) -> None:
        """Answer calls whose deadline passed; write off the workers still running them."""
        while self._deadlines and self._deadlines[0].when <= now:
            deadline = heapq.heappop(self._deadlines)
            if deadline.job.state == DONE:
                continue
            lease = deadline.lease
            if lease is None:
                n = deadline.notification
            else:
                overdue, recheck = lease.revoke_if_overdue(now, self.lease_window + 0.05)
                if overdue is None:
                    deadline.when = recheck
                    heapq.heappush(self._deadlines, deadline)
                    continue
                n = overdue.notification
            if n.claim_at_deadline():
                self.stats.timeouts += 1
                log.error("handler for %s (group %s) missed its deadline; answering errno %d",
                          _describe(n), n.listener.group.name, self.on_error_errno)
                send_claimed_error(n, self.on_error_errno)
            if self._pool.abandon(deadline.job):   # also when it answered but still runs
                self.stats.written_off = self._pool.written_off
                self._finished(n.listener)
            if lease is not None:
                self._take_back(lease)

    def _collect(self) -> None:
        """Book finished blocking work."""
        self._pool.drain_wakeup()
        done = self._pool.completed
        while done:
            n = done.popleft()
            if n.__class__ is Lease:
                self._end_lease(n)
            elif n is not None:
                self._finished(n.listener)

    def _finished(self, lst: Listener) -> None:
        """One blocking call of ``lst`` is over: close it when it was released meanwhile."""
        lst.busy -= 1
        if lst.busy == 0 and lst.released and lst.fd >= 0:
            self._close_listener(lst)

    # --- the loop -------------------------------------------------------------------
    def fileno(self) -> int:
        """The epoll fd: readable when :meth:`run_once` has work (for foreign event loops)."""
        return self._epoll.fileno()

    def next_timeout(self) -> float | None:
        """Seconds until the next handler deadline (at most the lease window while a listener
        is lent: a slow call's listener is taken back then), or None."""
        if not self._deadlines:
            return None
        timeout = max(0.0, self._deadlines[0].when - time.monotonic())
        return min(timeout, self.lease_window) if self._leases else timeout

    def run_once(self, timeout: float | None = 0) -> None:
        """Wait up to ``timeout`` seconds (None = until something happens) and handle what arrived."""
        self._serve(None if timeout is None else time.monotonic() + timeout, once=True)

    def run(self, timeout: float | None = None, until=None) -> bool:
        """Serve until :meth:`stop`, ``until()`` is true (checked after each batch of events, and at
        least every 0.1 s), or ``timeout`` seconds pass. Returns False when the timeout expired."""
        end = None if timeout is None else time.monotonic() + timeout
        return self._serve(end, until=until)

    def run_until_idle(self, timeout: float | None = None) -> bool:
        """Serve until no listener is left (every target and its descendants are gone and their
        blocking work has finished). False when ``timeout`` seconds expired first."""
        end = None if timeout is None else time.monotonic() + timeout
        return self._serve(end, until_idle=True)

    def _serve(self, end: float | None, until=None, until_idle: bool = False, once: bool = False) -> bool:
        if self.processes > 1 and self._workers is None:
            return self._serve_in_processes(end, until, until_idle, once)
        try:
            return self._serve_events(end, until, until_idle, once)
        finally:
            if not once and self._leases:
                self._end_leases()

    def _serve_events(self, end: float | None, until, until_idle: bool, once: bool) -> bool:
        poll = self._epoll.poll
        listeners = self._listeners
        handle = self._handle
        stats = self.stats
        recv_into = notify.recv_into
        pool = self._pool
        cap = None if until is None else 0.1
        while not self._stopping:
            if self._backlog:
                self._drain_backlog()
            if until_idle and not listeners and self.idle:
                return True
            if until is not None and until():
                return True
            if end is None and cap is None and not self._deadlines:
                timeout = -1
            else:
                now = time.monotonic()
                if end is None:
                    timeout = 3600.0
                else:
                    timeout = end - now
                    if timeout <= 0 and not once:
                        return False
                if cap is not None and cap < timeout:
                    timeout = cap
                if self._deadlines and self._deadlines[0].when - now < timeout:
                    timeout = self._deadlines[0].when - now
                if self._leases and timeout > self.lease_window:
                    timeout = self.lease_window      # to take back a listener whose call is slow
                if timeout < 0:
                    timeout = 0
            received = 0
            for fd, ev in poll(timeout):
                lst = listeners.get(fd)
                if lst is None:
                    if fd == pool.wakeup_fd:
                        self._collect()
                    elif fd == self._signal_fd:
                        _drain(fd)
                    elif fd in self._watched:
                        self._watched[fd]()
                    else:
                        self._reap(fd)
                elif ev & _IN:
                    raw = _ZEROED.copy()  # RECV wants a zeroed buffer; copying is faster than bytearray(80)
                    try:
                        recv_into(fd, raw)
                    except OSError as exc:
                        self._recv_failed(lst, exc)
                        continue
                    received += 1
                    handle(lst, raw)
                elif ev & _HUP:
                    self._release(lst, "hangup")
            stats.received += received
            if self._deadlines:
                now = time.monotonic()
                if self._leases:
                    self._check_leases(now)
                self._expire(now)
            if once:
                return True
        if not once:
            self.consume_stop()
        return True

    def _serve_in_processes(self, end: float | None, until, until_idle: bool, once: bool) -> bool:
        """Fork the worker processes, watch them and the listeners' hang-ups until the run ends,
        then stop them (the next run forks new ones)."""
        if once:
            raise SysgateError(f"processes={self.processes} serves with run, run_until_idle or serve_forever, "
                               "not run_once or a foreign event loop")
        if self._stopping:
            self.consume_stop()
            return True
        self._workers = _processes.Workers.start(self)
        try:
            return self._serve(end, until, until_idle)
        finally:
            workers, self._workers = self._workers, None
            workers.stop(_processes.STOP_GRACE)

    def _reap(self, pidfd: int) -> None:
        """A supervised target exited (its pidfd is readable): reap it.

        Its filter may be reported unused (EPOLLHUP) before or after this, depending on
        the kernel, and later still when descendants inherited it.
        """
        if self._workers is not None and self._workers.exited(pidfd):
            return
        target = self._reaping.pop(pidfd, None)
        if target is None:
            return
        try:
            self._epoll.unregister(pidfd)
        except (OSError, ValueError):
            pass
        try:
            target.poll()
        except ChildProcessError:  # not our child, or reaped elsewhere
            pass

    def _drain_backlog(self) -> None:
        backlog, self._backlog = self._backlog, []
        for lst, raw in backlog:
            if not lst.released:
                self.stats.received += 1
                self._handle(lst, raw)

    def _recv_failed(self, lst: Listener, exc: OSError) -> None:
        if exc.errno == _errno.ENOENT:      # killed or interrupted between POLLIN and RECV
            self.stats.gone += 1
        elif exc.errno != _errno.EINTR:
            log.error("RECV on listener %d (group %s) failed: %s; releasing it", lst.fd, lst.group.name, exc)
            self._release(lst, "error")

    def serve_forever(self, signals=(signal.SIGTERM, signal.SIGINT), grace: float = 5.0) -> None:
        """Serve until :meth:`stop` or one of ``signals``, then :meth:`close` everything
        (``grace`` as there): syscalls still waiting for an answer fail with ENOSYS.

        Signal handlers are installed only when called from the main thread, and restored after.
        """
        previous, wakeup = {}, None
        if threading.current_thread() is threading.main_thread():
            for sig in signals:
                previous[sig] = signal.signal(sig, lambda *_: self.stop())
            # Python runs the handler between bytecodes: a signal that lands just before
            # epoll_wait would wait for the next event or deadline. The C-level handler writes
            # to this pipe, which wakes epoll_wait at once.
            wakeup = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            previous_fd = signal.set_wakeup_fd(wakeup[1], warn_on_full_buffer=False)
            self._signal_fd = wakeup[0]
            self._epoll.register(wakeup[0], _IN)
        try:
            self.run()
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)
            if wakeup is not None:
                signal.set_wakeup_fd(previous_fd)
                self._epoll.unregister(wakeup[0])
                self._signal_fd = -1
                for fd in wakeup:
                    os.close(fd)
            self.close(grace)

    async def serve(self, *, until_idle: bool = False) -> None:
        """Serve on the running asyncio loop (see :mod:`sysgate.supervisor.asyncio_adapter`)."""
        from .asyncio_adapter import serve

        await serve(self, until_idle=until_idle)

    @property
    def idle(self) -> bool:
        """No listener, backlog or blocking work left (a released listener is closed, and its
        ``on_release`` called, once its last blocking call is booked)."""
        return (not self._listeners and not self._backlog and not self._pool.pending and not self._reaping
                and not self._draining and (self._workers is None or not self._workers.alive))

    @property
    def stopping(self) -> bool:
        return self._stopping

    def consume_stop(self) -> None:
        """Forget a :meth:`stop` request (the next run serves again)."""
        self._stopping = False

    def stop(self) -> None:
        """Make :meth:`run` return soon (safe from signal handlers and other threads)."""
        self._stopping = True
        self._pool.wake()

    def close(self, grace: float = 5.0) -> None:
        """Release every listener (waiting syscalls fail with ENOSYS) and stop the workers.

        Blocking handlers still running get ``grace`` seconds to finish first.
        """
        if self._closed:
            return
        self._closed = True
        for lst in list(self._listeners.values()):
            self._release(lst, "shutdown")
        self._pool.shutdown(grace)
        self._collect()
        for lst in list(self._draining):
            log.warning("closing listener of group %s while a handler still runs", lst.group.name)
            self._close_listener(lst)
        self._epoll.close()
        self._pool.close()

    def __enter__(self) -> "Supervisor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _describe(n: Notification) -> str:
    try:
        return f"{n.syscall} of pid {n.pid} (id {n.id})"
    except Exception:
        return f"notification {n.id}"


def _pending(fd: int) -> bool:
    """Does listener ``fd`` hold a notification nobody has RECVed?"""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return any(ev & select.POLLIN for _, ev in poller.poll(0))


def _drain(fd: int) -> None:
    """Empty a non-blocking pipe (signal numbers written by Python's C-level handler)."""
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass
