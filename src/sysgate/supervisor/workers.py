"""A bounded pool of threads for slow (blocking) handlers, with a wake-up to the loop.

Blocking handlers must not stall the event loop, so the loop hands them to this
pool. At most ``size`` threads run handlers; at most ``max_pending`` jobs wait or run
(beyond that :meth:`WorkerPool.submit` refuses and the loop fails the notification
closed). Finished jobs are queued for the loop, which an eventfd wakes up.
"""
from __future__ import annotations

import collections
import logging
import os
import queue
import signal
import threading
import time

log = logging.getLogger("sysgate.supervisor")
_SYNCHRONOUS_SIGNALS = {signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGTRAP, signal.SIGSYS}


class WorkerPool:
    """Threads started on demand, up to ``size``; jobs are plain callables."""

    def __init__(self, size: int = 4, max_pending: int = 1024):
        if size < 1:
            raise ValueError("a worker pool needs at least one thread")
        self.size, self.max_pending = size, max_pending
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._pending = 0
        self._closing = False
        self._lock = threading.Lock()
        self.completed: collections.deque = collections.deque()   # results for the loop
        self.wakeup_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)

    @property
    def pending(self) -> int:
        """Jobs queued or running."""
        return self._pending

    def submit(self, job) -> bool:
        """Queue ``job()``; its return value is appended to :attr:`completed`. False when full."""
        with self._lock:
            if self._pending >= self.max_pending:
                return False
            self._pending += 1
            start = self._idle == 0 and len(self._threads) < self.size
            if start:
                thread = threading.Thread(target=self._work, name=f"sysgate-worker-{len(self._threads)}",
                                          daemon=True)
                self._threads.append(thread)
        if start:
            thread.start()
        self._jobs.put(job)
        return True

    def _work(self) -> None:
        # Process-directed signals (SIGTERM, SIGINT...) must reach the loop thread, whose
        # epoll_wait they interrupt so that Python runs the handler (e.g. serve_forever's stop).
        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals() - _SYNCHRONOUS_SIGNALS)
        while True:
            with self._lock:
                self._idle += 1
            job = self._jobs.get()
            with self._lock:
                self._idle -= 1
            if job is None:
                self._exit_thread()
                return
            try:
                result = job()
            except BaseException:  # a job is expected to catch; never lose the slot
                log.exception("worker job failed")
                result = None
            with self._lock:
                self._pending -= 1
            self.completed.append(result)
            self.wake()

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
        """Stop the threads once their jobs finish; True when all ended within ``timeout`` seconds."""
        for _ in self._threads:
            self._jobs.put(None)
        end = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, end - time.monotonic()))
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            return not self._threads

    def _exit_thread(self) -> None:
        with self._lock:
            self._threads = [t for t in self._threads if t is not threading.current_thread()]
            last = self._closing and not self._threads
        if last:
            self._close_fd()

    def close(self) -> None:
        """Close the eventfd now, or when the last thread that outlived :meth:`shutdown` ends."""
        with self._lock:
            self._closing = True
            now = not self._threads
        if now:
            self._close_fd()

    def _close_fd(self) -> None:
        fd, self.wakeup_fd = self.wakeup_fd, -1
        if fd >= 0:
            os.close(fd)
