"""Finish slow emulated connects in one waiter thread, so they never hold a worker of the pool.

A blocking ``connect`` to a peer that does not answer (a full listen backlog drops the SYN,
a filtered port) can take minutes. The handler starts such a connect *non-blocking* on its
duplicate of the target's socket and hands it here with :meth:`Waiter.add`; the target keeps
waiting in its syscall, exactly as it would in the kernel, and the worker is free at once.
The thread polls the sockets and, in slices of :data:`SLICE` seconds, checks that each
target still waits (ID_VALID): a target interrupted by a signal has already got ``EINTR``
(or a restart, which comes back as a new notification) from the kernel, and its entry is
dropped. When a socket is ready, ``finish()`` produces the kernel's answer (0,
``ECONNREFUSED``, ``ETIMEDOUT``…); entries without a socket to poll (a unix connect to a
full backlog) call ``finish()`` every slice until it stops raising BlockingIOError.
"""
from __future__ import annotations

import errno
import logging
import os
import select
import threading
import time
from dataclasses import dataclass, field

from ..supervisor import Reply

log = logging.getLogger("sysgate.handlers")
SLICE = 0.05


@dataclass(eq=False)
class Wait:
    """One target waiting for its connect or send: ``finish()`` -> the Reply (BlockingIOError:
    not yet); ``fd`` is polled for POLLOUT when not None; ``until`` (monotonic) answers
    ``on_timeout`` (a Reply, or a callable making one); ``close()`` releases what it holds."""

    n: object
    finish: object
    close: object
    fd: int | None = None
    until: float | None = None
    on_timeout: object = None

    def timed_out(self) -> Reply:
        return self.on_timeout() if callable(self.on_timeout) else self.on_timeout
    done: bool = field(default=False)


def wait_here(wait: Wait) -> Reply | None:
    """Wait for ``wait`` in the calling thread (when the waiter is full): the same slices and
    checks; None when the target stopped waiting."""
    poller = select.poll()
    if wait.fd is not None:
        poller.register(wait.fd, select.POLLOUT)
    while wait.n.valid():
        ready = bool(poller.poll(SLICE * 1000)) if wait.fd is not None else (time.sleep(SLICE) or True)
        if ready:
            try:
                return wait.finish()
            except BlockingIOError:
                pass
        if wait.until is not None and time.monotonic() >= wait.until:
            return wait.timed_out()
    return None


class Waiter:
    """The waiter thread (started on first use) and its waits."""

    def __init__(self):
        self._lock = threading.Lock()
        self._waits: list[Wait] = []
        self._thread: threading.Thread | None = None
        self._stop = False
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def add(self, wait: Wait) -> None:
        """Answer ``wait.n`` later from the waiter thread (the caller already took the reply over)."""
        with self._lock:
            if self._stop:
                wait.close()
                raise RuntimeError("waiter closed")
            self._waits.append(wait)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="sysgate-net-waiter", daemon=True)
                self._thread.start()
        os.write(self._wake_w, b"x")

    def pending(self) -> int:
        with self._lock:
            return len(self._waits)

    def close(self) -> None:
        with self._lock:
            self._stop = True
            thread = self._thread
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass
        if thread is not None:
            thread.join(5)
        with self._lock:
            waits, self._waits = self._waits, []
        for wait in waits:
            wait.close()
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        registered: dict[int, Wait] = {}
        while True:
            with self._lock:
                if self._stop:
                    return
                waits = list(self._waits)
            for wait in waits:
                if wait.fd is not None and wait.fd not in registered:
                    registered[wait.fd] = wait
                    poller.register(wait.fd, select.POLLOUT)
            ready = {fd for fd, _ in poller.poll(SLICE * 1000)}
            if self._wake_r in ready:
                try:
                    os.read(self._wake_r, 4096)
                except BlockingIOError:
                    pass
            now = time.monotonic()
            for wait in waits:
                self._step(wait, now, wait.fd is None or wait.fd in ready)
            with self._lock:
                finished = [w for w in self._waits if w.done]
                self._waits = [w for w in self._waits if not w.done]
            for wait in finished:
                if wait.fd is not None and registered.pop(wait.fd, None) is not None:
                    poller.unregister(wait.fd)
                wait.close()

    def _step(self, wait: Wait, now: float, ready: bool) -> None:
        try:
            if not wait.n.valid():
                wait.done = True             # interrupted or gone: the kernel already answered it
                return
            reply = None
            if ready:
                try:
                    reply = wait.finish()
                except BlockingIOError:
                    reply = None
            if reply is None and wait.until is not None and now >= wait.until:
                reply = wait.timed_out()
            if reply is not None:
                wait.done = True
                wait.n.send_later(reply)
        except Exception:                    # never let one wait kill the thread
            log.exception("net waiter: finishing %r failed", wait.n)
            wait.done = True
            try:
                wait.n.send_later(Reply.errno(errno.EIO))
            except Exception:
                pass
