"""The handler contract: the one statement of what the supervisor, the handler registry and
the custom-handler loader call on a handler (``handlers.base``, ``handlers.loading`` and the
README's "Custom handlers in Python" point here).

Written as :class:`typing.Protocol` classes so that a type checker can check a handler
without it inheriting from anything; :class:`~sysgate.handlers.base.Handler` is the
built-in base that satisfies :class:`HandlerObject`.

- :class:`HandlerFunction` is all :meth:`Supervisor.on <sysgate.supervisor.routing.Routes.on>`
  needs: a callable taking the :class:`~sysgate.supervisor.notification.Notification` and
  returning a :class:`~sysgate.supervisor.notification.Reply`, or None for the supervisor's
  default verdict. It may also raise :class:`~sysgate.supervisor.notification.TargetGone`
  (the target died; nothing is sent) or any other exception (answered with the
  supervisor's ``on_error_errno``, EPERM by default). Two optional attributes are read when
  it is registered (:func:`~sysgate.supervisor.routing.handler_of`): ``blocking`` (True: it
  does slow work and runs in a worker thread, not in the event loop) and ``deadline``
  (seconds; implies ``blocking``; past it the call fails closed with ``on_error_errno`` and
  the late verdict is dropped). They are optional, so they are not protocol members. A third,
  ``process_safe = False``, says the handler keeps results in memory (a summary, a count):
  ``Supervisor(processes=N)`` with N > 1 runs a copy of it in each worker process, so it
  refuses to serve it instead of losing them (:mod:`~sysgate.supervisor.processes`). A handler
  without it is process-safe, unless it visibly wraps one that is not: bound methods, partials,
  ``functools.wraps`` wrappers, the callables a function closes over, and the handlers an object
  lists in ``wraps_handlers`` are looked into (:func:`~sysgate.supervisor.processes.find_unsafe`);
  an object that delegates in another way declares ``process_safe`` itself (``True`` vouches for
  what it wraps).
- :class:`HandlerObject` is a named handler as the registry (``notify(NAME)`` in a policy,
  ``--handlers``) uses it: a handler function with a ``name`` (for a custom handler loaded
  by :mod:`sysgate.handlers.loading`, default the function's ``__name__``; a built-in's name
  is refused), the ``syscalls``
  it answers, ``install(sup)`` to register itself and ``close()`` to release what it holds
  (called once after the run). A policy notifying a handler of a syscall outside its
  ``syscalls`` is refused before the command starts; a call routed to it anyway gets
  ``ENOSYS`` (fail closed, and visible to the program). A custom handler without
  ``syscalls`` is given whatever the policy routes to it.

Every handler: decide on what you read from the target's memory only by emulating the call,
never with ``Reply.continue_()`` (another thread can rewrite the memory before the kernel
reads it: :meth:`~sysgate.supervisor.notification.Notification.send_continue`). Handlers
run in the supervisor's process with its privileges.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .loop import Supervisor
    from .notification import Notification, Reply

__all__ = ["HandlerFunction", "HandlerObject"]


@runtime_checkable
class HandlerFunction(Protocol):
    """``handler(notification) -> Reply | None``; called once per notification routed to it."""

    def __call__(self, n: Notification, /) -> Reply | None: ...


@runtime_checkable
class HandlerObject(Protocol):
    """A named, installable handler (``isinstance`` checks that the members exist, not their types)."""

    #: the name a policy's ``notify(NAME)`` routes to
    name: str
    #: the syscall names it answers; others routed to it should get ``ENOSYS``
    syscalls: tuple[str, ...]
    #: True when it does slow work: the supervisor runs it in a worker thread
    blocking: bool

    def __call__(self, n: Notification, /) -> Reply | None: ...

    def install(self, sup: Supervisor, *, group: str | None = None) -> None:
        """Register itself on ``sup`` (for targets of ``group``) for the syscalls it answers."""

    def close(self) -> None:
        """Release the files and sockets it holds; called once the supervisor is done with it."""
