"""Which handler answers a notification: per-syscall handlers, fallbacks and groups.

:class:`Routes` is the registration half of the supervisor (a mixin of
:class:`~sysgate.supervisor.loop.Supervisor`). Handlers are registered per syscall
name (or native number), per group of targets, or routed from a policy's
``notify(name)`` actions. Lookup order for a target of group G (:meth:`Routes.handler_for`): G's handler for
the syscall, G's fallback, the global handler, the global fallback, else the default verdict.
The supervisor and :class:`sysgate.testing.replay.Dispatcher` both route with it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import SysgateError
from ..kernel import abi


@dataclass(eq=False)
class Group:
    """Targets sharing handlers and a ``state`` dict (e.g. all targets of one stored filter)."""

    name: str
    state: dict = field(default_factory=dict)
    handlers: dict = field(default_factory=dict)     # syscall name or native nr -> RegisteredHandler
    fallback: "RegisteredHandler | None" = None
    listeners: set = field(default_factory=set)
    cache: dict = field(default_factory=dict)        # dispatch key -> callable(notification)


@dataclass(frozen=True)
class RegisteredHandler:
    """A registered handler: ``blocking`` ones (also those with a ``deadline``) run in workers."""

    fn: object
    blocking: bool = False
    deadline: float | None = None


class Routes:
    """Handler tables by group; ``*`` is the global group."""

    def __init__(self):
        self._groups: dict[str, Group] = {}
        self._global = Group("*")

    def group(self, name: str) -> Group:
        """The group called ``name`` (created on first use)."""
        if name == "*":
            return self._global
        grp = self._groups.get(name)
        if grp is None:
            grp = self._groups[name] = Group(name)
        return grp

    def discard_group(self, name: str) -> None:
        """Forget a group without listeners (its handlers and state), e.g. after a container ended."""
        grp = self._groups.get(name)
        if grp is not None:
            if grp.listeners:
                raise SysgateError(f"group {name!r} still has {len(grp.listeners)} listener(s)")
            del self._groups[name]

    def on(self, syscall: str | int, fn=None, *, blocking: bool | None = None, deadline: float | None = None,
           group: str | None = None):
        """Handle ``syscall`` (a name, or a number of the native arch) with ``fn(notification)``.

        Usable as a decorator (``@sup.on("openat")``). ``blocking`` (or a ``deadline`` in seconds)
        runs the handler in the worker pool; both default to the handler's own ``blocking`` /
        ``deadline`` attributes. ``group`` limits it to targets of that group.
        """
        if fn is None:
            return lambda f: self.on(syscall, f, blocking=blocking, deadline=deadline, group=group) or f
        _check_syscall(syscall)
        grp = self.group(group or "*")
        grp.handlers[syscall] = handler_of(fn, blocking, deadline)
        self._invalidate()
        return None

    handler = on

    def table(self, handlers: dict, *, group: str | None = None) -> None:
        """Register several handlers at once: ``{syscall: fn}``."""
        for syscall, fn in handlers.items():
            self.on(syscall, fn, group=group)

    def fallback(self, fn, *, blocking: bool | None = None, deadline: float | None = None,
                 group: str | None = None) -> None:
        """Handle every syscall that has no handler of its own (instead of the default verdict);
        None removes the fallback."""
        self.group(group or "*").fallback = None if fn is None else handler_of(fn, blocking, deadline)
        self._invalidate()

    def use_policy(self, policy, handlers: dict, *, group: str | None = None) -> None:
        """Route the policy's ``notify(name)`` rules to ``handlers[name]``.

        The filter cannot tell the supervisor which rule matched, so each notified syscall is
        routed by its name; when rules of one syscall name different handlers, the policy's
        own reference semantics (``Policy.decide`` on the argument registers) picks one.
        """
        routes = policy.handler_routes()
        missing = sorted({h for names in routes.values() for h in names} - set(handlers))
        if missing:
            raise SysgateError(f"policy {policy.name!r} notifies handler(s) {', '.join(missing)} "
                               f"but none was given (have: {', '.join(sorted(handlers)) or 'none'})")
        for syscall, names in routes.items():
            if len(names) == 1:
                self.on(syscall, handlers[names[0]], group=group)
            else:
                self.on(syscall, _PolicyChooser(policy, handlers), group=group)

    def _invalidate(self) -> None:
        self._global.cache.clear()
        for grp in self._groups.values():
            grp.cache.clear()

    def handler_for(self, group: Group, n) -> "RegisteredHandler | None":
        """The handler for notification ``n`` of a target in ``group`` (None: default verdict);
        the supervisor caches it per group, the replay dispatcher asks each time."""
        name = n.syscall
        native = n.arch == abi.native_arch()
        for grp in (group, self._global):   # the group's own handlers and fallback come first
            handler = grp.handlers.get(name) or (grp.handlers.get(n.nr) if native else None) or grp.fallback
            if handler is not None:
                return handler
        return None


def no_handler(n) -> None:
    """What runs for a notification without a handler: None, i.e. the default verdict."""
    return None


def handler_of(fn, blocking: bool | None = None, deadline: float | None = None) -> RegisteredHandler:
    """``fn`` as a registered handler: ``blocking`` and ``deadline`` default to its attributes."""
    if not callable(fn):
        raise TypeError(f"a handler must be callable, not {fn!r}")
    if blocking is None:
        blocking = bool(getattr(fn, "blocking", False))
    if deadline is None:
        deadline = getattr(fn, "deadline", None)
    if deadline is not None and deadline <= 0:
        raise ValueError("a handler deadline must be positive (seconds)")
    return RegisteredHandler(fn, blocking or deadline is not None, deadline)


def _check_syscall(syscall) -> None:
    """Reject handler keys that can never match (typos get a suggestion)."""
    from ..arch import syscalls

    if isinstance(syscall, bool) or not isinstance(syscall, (str, int)):
        raise TypeError(f"a syscall is a name or a number, not {syscall!r}")
    if isinstance(syscall, str) and syscall not in syscalls.all_names():
        syscalls.resolve(None, syscall)   # raises SysgateError, with suggestions
        raise SysgateError(f"{syscall!r} is not a syscall name")


class _PolicyChooser:
    """Pick the handler of the policy rule that matches the notification's registers."""

    def __init__(self, policy, handlers: dict):
        self.policy, self.handlers = policy, handlers
        self.blocking = any(getattr(h, "blocking", False) for h in handlers.values())
        self.wraps_handlers = tuple(handlers.values())     # looked into by processes.find_unsafe
        self.__name__ = f"the rules of policy {policy.name!r}"     # as named by processes.check_forkable

    def __call__(self, n):
        action, _ = self.policy.decide(n.syscall, n.raw_args)   # the registers the filter compared
        handler = self.handlers.get(action.handler) if action.kind == "notify" else None
        return None if handler is None else handler(n)
