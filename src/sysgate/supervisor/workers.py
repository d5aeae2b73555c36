"""Worker threads for slow (blocking) handlers: one lane per handler, stuck threads written off.

Blocking handlers must not stall the event loop, so the loop hands them to this pool,
and no handler may take the pool away from the others, however stuck it is:

* **Lanes.** Each handler (keyed by its callable) has its own lane: at most ``size``
  threads run its calls and at most ``max_pending`` of its calls wait or run (beyond
  that :meth:`WorkerPool.submit` raises :class:`PoolRefused` and the loop fails the
  call closed). Calls stuck in one handler leave every other handler its threads.
  Threads start on demand and end after :data:`IDLE_EXIT` seconds without work, so
  a lane costs nothing while unused (the agent makes handlers per container).
* **Write-off.** When the loop answers a running call at its deadline it calls
  :meth:`WorkerPool.abandon`: the call no longer counts as pending, its late result
  is dropped, and its thread is *written off*: it leaves the lane, whose next call
  gets a new thread. A thread cannot be killed, so written-off threads are bounded
  per lane by ``max_stuck``: past that, a thread whose call was abandoned keeps its
  slot, and once every slot is taken that way, new calls to that handler are refused
  at once (fail closed fast) instead of queueing behind calls that will not end or
  starting threads without bound (logged once). A lane thus has at most
  ``size + max_stuck`` threads. A written-off thread that returns rejoins its lane
  when the lane has a free slot, else it ends.

Finished calls' results are queued in :attr:`WorkerPool.completed` for the loop,
which an eventfd wakes up. Threads are daemons: a stuck one never holds up exit.
"""
from __future__ import annotations

import collections
import logging
import os
import signal
import threading
import time

log = logging.getLogger("sysgate.supervisor")
_SYNCHRONOUS_SIGNALS = {signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGTRAP, signal.SIGSYS}

#: seconds an idle worker waits for a call before it ends
IDLE_EXIT = 60.0

# job states
QUEUED, RUNNING, DONE, ABANDONED = range(4)


class PoolRefused(Exception):
    """A lane cannot take the call (its queue is full, or its threads are stuck)."""


class Job:
    """One call handed to a lane; ``run()``'s result goes to :attr:`WorkerPool.completed`."""

    __slots__ = ("run", "lane", "state", "thread")

    def __init__(self, run, lane: "Lane"):
        self.run, self.lane, self.state, self.thread = run, lane, QUEUED, None


class Lane:
    """The threads and queue of one handler."""

    def __init__(self, key, owner, lock: threading.Lock):
        self.key = key
        self.owner = owner                   # the handler: keeps id(owner) from being reused
        self.jobs: collections.deque = collections.deque()
        self.workers: set = set()            # threads holding a slot (idle or running)
        self.stuck: set = set()              # written-off threads still running an abandoned call
        self.overdue = 0                     # workers running an abandoned call (max_stuck reached)
        self.idle = 0
        self.pending = 0                     # calls queued or running, not abandoned
        self.warned = False                  # "lane stuck" logged since it was last below max_stuck
        self.wakeup = threading.Condition(lock)

    def __repr__(self) -> str:
        return (f"<Lane {self.owner!r}: {len(self.workers)} workers, {len(self.stuck)} stuck, "
                f"{self.pending} pending>")


class WorkerPool:
    """Per-handler lanes of threads (see the module docstring)."""

    def __init__(self, size: int = 4, max_pending: int = 1024, max_stuck: int = 16):
        if size < 1:
            raise ValueError("a worker pool needs at least one thread per handler")
        if max_pending < 1 or max_stuck < 0:
            raise ValueError("max_pending must be at least 1 and max_stuck at least 0")
        self.size, self.max_pending, self.max_stuck = size, max_pending, max_stuck
        self._lock = threading.Lock()
        self._lanes: dict[int, Lane] = {}
        self._threads: set = set()
        self._stopping = False               # shutdown: threads end once their lane's queue is empty
        self._closing = False                # close: the last thread to end closes the eventfd
        self.written_off = 0                 #: threads written off so far
        self.completed: collections.deque = collections.deque()   # results for the loop
        self.wakeup_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)

    @property
    def pending(self) -> int:
        """Calls queued or running (abandoned ones excluded)."""
        with self._lock:
            return sum(lane.pending for lane in self._lanes.values())

    def lane(self, owner) -> Lane | None:
        """The lane of handler ``owner`` (None while it has none)."""
        return self._lanes.get(id(owner))

    @property
    def threads(self) -> int:
        """Live worker threads, written-off ones included."""
        with self._lock:
            return len(self._threads)

    def submit(self, owner, run) -> Job:
        """Queue ``run()`` in the lane of handler ``owner``. Raises :class:`PoolRefused`."""
        with self._lock:
            lane = self._lanes.get(id(owner))
            if lane is None:
                lane = self._lanes[id(owner)] = Lane(id(owner), owner, self._lock)
            if lane.pending >= self.max_pending:
                raise PoolRefused(f"{lane.pending} calls pending")
            free = self.size - len(lane.workers)
            if free <= 0 and lane.overdue >= len(lane.workers):
                raise PoolRefused(f"{len(lane.stuck)} threads written off, the other {lane.overdue} stuck too")
            job = Job(run, lane)
            lane.jobs.append(job)
            lane.pending += 1
            start = free > 0 and len(lane.jobs) > lane.idle
            if start:
                thread = self._new_thread(lane)
            else:
                lane.wakeup.notify()
        if start:
            self._start(thread, lane)
        return job

    def starts_now(self, owner) -> bool:
        """Would a call submitted now to handler ``owner``'s lane start at once (an idle thread,
        or room for a new one)? Only the loop submits, so the answer holds until it does."""
        with self._lock:
            lane = self._lanes.get(id(owner))
            return lane is None or len(lane.jobs) < lane.idle or len(lane.workers) < self.size

    def cancel_queued(self, job: Job) -> bool:
        """Drop ``job`` if no thread has taken it yet (True); a started job is left to run."""
        with self._lock:
            if job.state != QUEUED:
                return False
            job.lane.jobs.remove(job)
            job.state = ABANDONED
            job.lane.pending -= 1
            return True

    def abandon(self, job: Job) -> bool:
        """The loop answered ``job``'s call (deadline): forget it. True when the pool will not report it in
        :attr:`completed` (the caller books it now); False when it already finished."""
        if job.state == DONE:    # read without the lock: DONE is final
            return False
        thread = None
        with self._lock:
            lane = job.lane
            if job.state == QUEUED:
                lane.jobs.remove(job)
            elif job.state == RUNNING:
                if job.thread in lane.workers and len(lane.stuck) < self.max_stuck:
                    lane.workers.discard(job.thread)
                    lane.stuck.add(job.thread)
                    self.written_off += 1
                    if len(lane.jobs) > lane.idle:
                        thread = self._new_thread(lane)
                elif job.thread in lane.workers:
                    lane.overdue += 1
                if len(lane.stuck) >= self.max_stuck and not lane.warned:
                    lane.warned = True
                    log.error("handler %r: %d threads stuck past their deadline; its calls fail closed when "
                              "all %d workers are stuck too", lane.owner, len(lane.stuck), self.size)
            else:
                return False
            job.state = ABANDONED
            lane.pending -= 1
        if thread is not None:
            self._start(thread, lane)
        return True

    def _start(self, thread: threading.Thread, lane: Lane) -> None:
        try:
            thread.start()
        except RuntimeError as exc:   # no more threads: queued calls fail closed at their deadline
            log.error("cannot start a worker thread: %s", exc)
            with self._lock:
                lane.workers.discard(thread)
                self._threads.discard(thread)

    def _new_thread(self, lane: Lane) -> threading.Thread:
        """A worker for ``lane`` (lock held; the caller starts it after releasing the lock)."""
        thread = threading.Thread(target=self._work, args=(lane,), name="sysgate-worker", daemon=True)
        lane.workers.add(thread)
        self._threads.add(thread)
        return thread

    def _work(self, lane: Lane) -> None:
        # Process-directed signals (SIGTERM, SIGINT...) must reach the loop thread, whose
        # epoll_wait they interrupt so that Python runs the handler (e.g. serve_forever's stop).
        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals() - _SYNCHRONOUS_SIGNALS)
        me = threading.current_thread()
        lock = self._lock
        lock.acquire()
        try:
            while True:
                if not lane.jobs:
                    if self._stopping:
                        return
                    lane.idle += 1
                    notified = lane.wakeup.wait(IDLE_EXIT)
                    lane.idle -= 1
                    if not lane.jobs:
                        if self._stopping or not notified:   # shutdown, or idle for IDLE_EXIT seconds
                            return
                        continue                            # another worker took the call
                job = lane.jobs.popleft()
                job.state, job.thread = RUNNING, me
                lock.release()
                try:
                    result = job.run()
                except BaseException:  # a job is expected to catch; never lose the thread
                    log.exception("worker job failed")
                    result = None
                lock.acquire()
                job.thread = None
                report = job.state == RUNNING
                if report:
                    job.state = DONE
                    lane.pending -= 1
                    self.completed.append(result)
                elif me in lane.workers:
                    lane.overdue -= 1
                if me in lane.stuck:
                    lane.stuck.discard(me)
                    if len(lane.stuck) < self.max_stuck:
                        lane.warned = False
                    if self._stopping or len(lane.workers) >= self.size:
                        if report:
                            self._wake_unlocked()
                        return
                    lane.workers.add(me)   # rejoin: the lane has a free slot
                if report:
                    self._wake_unlocked()
        finally:
            self._leave(lane, me)
            lock.release()

    def _wake_unlocked(self) -> None:
        self._lock.release()
        try:
            self.wake()
        finally:
            self._lock.acquire()

    def _leave(self, lane: Lane, me) -> None:
        """A thread ends (lock held): drop an empty lane; close the eventfd after the last thread."""
        lane.workers.discard(me)
        lane.stuck.discard(me)
        self._threads.discard(me)
        if not (lane.workers or lane.stuck or lane.jobs) and self._lanes.get(lane.key) is lane:
            del self._lanes[lane.key]
        if self._closing and not self._threads:
            self._close_fd()

    def wake(self) -> None:
        """Make the loop's epoll return (also used by ``Supervisor.stop``)."""
        if self.wakeup_fd < 0:
            return
        try:
            os.eventfd_write(self.wakeup_fd, 1)
        except BlockingIOError:  # counter saturated: the loop is awake anyway
            pass

    def drain_wakeup(self) -> None:
        try:
            os.eventfd_read(self.wakeup_fd)
        except BlockingIOError:
            pass

    def shutdown(self, timeout: float = 5.0) -> bool:
        """Let the threads end once the queued calls ran; wait at most ``timeout`` seconds in all
        (written-off threads are not waited for). True when every thread ended."""
        with self._lock:
            self._stopping = True
            for lane in self._lanes.values():
                lane.wakeup.notify_all()
            waiting = [t for lane in self._lanes.values() for t in lane.workers]
        end = time.monotonic() + timeout
        for thread in waiting:
            if thread is not threading.current_thread():
                thread.join(max(0.0, end - time.monotonic()))
        with self._lock:
            return not self._threads

    def close(self) -> None:
        """Close the eventfd now, or when the last thread that outlived :meth:`shutdown` ends."""
        with self._lock:
            self._stopping = self._closing = True
            if not self._threads:
                self._close_fd()

    def _close_fd(self) -> None:
        fd, self.wakeup_fd = self.wakeup_fd, -1
        if fd >= 0:
            os.close(fd)
