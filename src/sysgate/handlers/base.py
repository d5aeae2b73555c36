"""The handler protocol shared by every built-in handler.

A handler is a callable ``handler(notification) -> Reply | None`` with a few attributes
the supervisor and the registry understand:

``name``       registry name (``notify(fs)`` in a policy routes to the handler named ``fs``)
``syscalls``   the syscalls it knows how to answer (``install`` registers these)
``blocking``   True when it does slow work: the supervisor runs it in a worker thread
``close()``    release files/sockets it holds (also called by the registry's supervisor)

Handlers answer every syscall they are given; a syscall outside ``syscalls`` gets
``ENOSYS`` (fail closed, and visible to the program).
"""
from __future__ import annotations

import errno

from ..supervisor import Reply

ENOSYS = Reply.errno(errno.ENOSYS)


class Handler:
    """Base class: subclasses set ``name``/``syscalls`` and implement :meth:`handle`."""

    name = "handler"
    syscalls: tuple[str, ...] = ()
    blocking = False

    def __call__(self, n):
        if n.syscall not in self.syscalls:
            return ENOSYS
        return self.handle(n)

    def handle(self, n):
        """Call the method ``_<syscall>(n)``; an OSError becomes the errno reply."""
        try:
            return getattr(self, "_" + n.syscall)(n)
        except OSError as exc:
            return oserror_reply(exc)

    def install(self, sup, *, group: str | None = None, only=None) -> None:
        """Register this handler on ``sup`` for its syscalls (or the subset ``only``) that the
        running kernel knows."""
        from .. import syscalls

        for name in self.syscalls if only is None else only:
            if syscalls.number(None, name) is not None:
                sup.on(name, self, group=group)

    def close(self) -> None:
        """Release resources (nothing by default)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


def oserror_reply(exc: OSError) -> Reply:
    """The reply for an emulated call that failed with ``exc`` (EIO when it has no errno)."""
    return Reply.errno(exc.errno if exc.errno and 0 < exc.errno < 4096 else errno.EIO)


def check_default(kind: str, default: str) -> None:
    """Rule lists fall back to ``allow`` or ``deny``; anything else is a config error."""
    if default not in ("allow", "deny"):
        from ..errors import SysgateError

        raise SysgateError(f"{kind} default must be allow or deny, not {default!r}")
