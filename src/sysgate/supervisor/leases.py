"""Leases: the worker thread that answered a blocking call goes on receiving its listener's calls.

Handing each blocking call from the loop thread to a worker thread, and the result back, costs
two thread wake-ups per call, as much as the fs handler's own work on this path. So when the
loop hands a call to a worker that starts at once, it also *lends* it the listener: the loop
stops polling the fd (EPOLL_CTL_MOD to no events) and the worker, once it answered, polls it
for up to ``lease_window`` seconds, then RECVs and answers the next calls of the same handler
itself, as a one-threaded supervisor would (the target's wake-up and the next RECV meet in one
thread, on one CPU).

The lease ends, and the loop polls the fd again, when nothing arrives within the window, the
next call belongs to another handler (the worker hands it back: the loop answers it), the
listener hangs up or is released, the supervisor stops, or another call of the handler waits
for a thread. The loop also takes the listener back (:meth:`Lease.revoke_if_slow`; the worker
finishes its call, unleased) when a call has run longer than the window, or longer than
:data:`QUEUED_AFTER` while other calls wait on the listener (the target's other threads or
processes must not wait one behind another), when a call misses its deadline (the loop answers
it and writes the thread off, as for any blocking call), when it stops serving (``run``
returns: no handler starts on its behalf afterwards) and before it closes the listener.

Exactly one thread receives from a listener at a time: the worker RECVs only under the lease's
lock and while the lease is not revoked; the loop re-arms the fd only after revoking under that
lock, or after the worker gave the lease back. The loop never waits for that lock: when the
worker holds it (for one RECV), the loop looks again later. Worker processes share listeners
with each other, where a poll followed by RECV could block: they do not lend them.
"""
from __future__ import annotations

import threading

#: seconds on one call after which a lent listener with calls waiting goes back to the loop
QUEUED_AFTER = 0.0002


class Lease:
    """One listener lent to one worker thread, with the call it is answering (its Deadline)."""

    __slots__ = ("listener", "handler", "lock", "current", "started", "revoked", "handback", "received", "gone")

    def __init__(self, listener, handler, first, started: float):
        self.listener = listener
        self.handler = handler           #: the RegisteredHandler whose calls the worker answers
        self.lock = threading.Lock()
        self.current = first             #: the Deadline of the call being answered, None between calls
        self.started = started           #: when that call was received
        self.revoked = False             #: the loop took the listener back: the worker must not RECV
        self.handback = None             #: a RECVed call of another handler, for the loop to answer
        self.received = 0                #: calls RECVed by the worker (the loop adds them to its stats)
        self.gone = 0                    #: ENOENT from the worker's RECV

    def busy_for(self, now: float) -> float | None:
        """Seconds on the current call (a hint, read without the lock), None between calls."""
        return None if self.current is None else now - self.started

    def revoke_if_slow(self, now: float, limit: float) -> bool:
        """Revoke the lease when its call has run longer than ``limit`` seconds (True; also when
        it was revoked before). Never waits for the lock: False while the worker holds it."""
        if not self.lock.acquire(blocking=False):
            return False
        try:
            if self.current is not None and now - self.started > limit:
                self.revoked = True
            return self.revoked
        finally:
            self.lock.release()

    def revoke(self) -> None:
        """Revoke the lease now (waits for the lock: the worker holds it for one RECV only)."""
        with self.lock:
            self.revoked = True

    def revoke_if_overdue(self, now: float, recheck: float):
        """The loop's deadline check: ``(the overdue call's Deadline, None)`` after revoking the lease,
        or ``(None, when to look again)`` while the worker is between calls (in ``recheck``
        seconds: it gives the lease back within a window) or on a call still in time."""
        if not self.lock.acquire(blocking=False):
            return None, now + 0.001
        try:
            cur = self.current
            if cur is None:
                return None, now + recheck
            if cur.when > now:
                return None, cur.when
            self.revoked = True
            return cur, None
        finally:
            self.lock.release()
