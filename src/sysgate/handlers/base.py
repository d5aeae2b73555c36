"""The base class of the built-in handlers.

What a handler is and what the supervisor and registry call on it is stated once, in
:mod:`sysgate.supervisor.contract`; :class:`Handler` satisfies its ``HandlerObject`` and adds
what the built-ins share: a call outside ``syscalls``, or of an architecture outside
``arches`` (whose numbering or argument encoding the handler does not implement), gets
``ENOSYS``; the rest goes to the method ``_<syscall>``, and an OSError becomes its errno.
Handlers whose structs differ between ABIs (stat, msghdr, timespec…) check ``n.arch`` themselves.
"""
from __future__ import annotations

import errno
from functools import cache

from ..arch import table
from ..kernel import abi
from ..supervisor import Reply

ENOSYS = Reply.errno(errno.ENOSYS)


class Handler:
    """Base class: subclasses set ``name``/``syscalls`` and implement :meth:`handle`."""

    name = "handler"
    syscalls: tuple[str, ...] = ()
    blocking = False

    #: architectures whose calls the handler decodes (default: :func:`same_flags_arches`)
    arches: frozenset | None = None

    def __call__(self, n):
        if n.syscall not in self.syscalls or n.arch not in (self.arches or same_flags_arches()):
            return ENOSYS
        try:
            return self.handle(n)
        except OSError as exc:          # also for subclasses overriding handle (EFAULT buffers…)
            return oserror_reply(exc)

    def handle(self, n):
        """Call the method ``_<syscall>(n)`` (an OSError becomes the errno reply)."""
        return getattr(self, "_" + n.syscall)(n)

    def install(self, sup, *, group: str | None = None, only=None) -> None:
        """Register this handler on ``sup`` for its syscalls (or the subset ``only``) that some
        architecture it decodes has (compat-only names: i386 ``stat64``, ``chown32``,
        ``socketcall``, ``olduname``…)."""
        from ..arch import syscalls

        arches = self.arches or same_flags_arches()
        for name in self.syscalls if only is None else only:
            if any(syscalls.number(arch, name) is not None for arch in arches):
                sup.on(name, self, group=group)

    def close(self) -> None:
        """Release resources (nothing by default)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


@cache
def same_flags_arches() -> frozenset:
    """The native arch and its compat ABIs that share its flag values (the architecture table's
    ``same_flags``; x86_64: also i386, x32; not arm on aarch64, whose O_DIRECTORY/O_NOFOLLOW/
    O_DIRECT/O_LARGEFILE differ)."""
    native = abi.native_arch()
    return frozenset((native, *table.get(native).same_flags))


def oserror_reply(exc: OSError) -> Reply:
    """The reply for an emulated call that failed with ``exc`` (EIO when it has no errno)."""
    return Reply.errno(exc.errno if exc.errno and 0 < exc.errno < 4096 else errno.EIO)


def check_default(kind: str, default: str) -> None:
    """Rule lists fall back to ``allow`` or ``deny``; anything else is a config error."""
    if default not in ("allow", "deny"):
        from ..errors import SysgateError

        raise SysgateError(f"{kind} default must be allow or deny, not {default!r}")
