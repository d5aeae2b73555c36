"""One container's handlers: the seccompagent-compatible names its selection lists, built
from the agent entries of :mod:`sysgate.handlers.registry` (the names and what they do:
:mod:`sysgate.handlers.seccompagent`), plus the default verdict for every other call."""
from __future__ import annotations

import errno
import os
import signal
from dataclasses import dataclass, field

from ..errors import SysgateError
from ..handlers import registry
from ..handlers.seccompagent import deny
from ..supervisor.notification import Reply
from .config import ConfigError, HandlerSpec, Selection
from .protocol import ContainerProcessState


@dataclass
class ContainerHandlers:
    """Handlers of one container: ``{syscall: fn}`` plus the verdict for the rest."""

    handlers: dict = field(default_factory=dict)
    fallback: object = None
    pidfd: int | None = None

    def close(self) -> None:
        for handler in {id(h): h for h in self.handlers.values()}.values():
            close = getattr(handler, "close", None)
            if close is not None:
                close()
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


def build(selection: Selection, state: ContainerProcessState) -> ContainerHandlers:
    """Instantiate ``selection`` for a container; an unknown name or bad argument raises ConfigError."""
    result = ContainerHandlers()
    try:
        for spec in selection.handlers:
            entry = registry.lookup_agent(spec.name)
            fn = entry.factory(spec.arg, state)
            for name in entry.syscalls:
                result.handlers[name] = fn
        result.fallback = _fallback(selection.default, state, result)
    except ConfigError:
        raise
    except SysgateError as exc:
        raise ConfigError(str(exc)) from None
    return result


def _fallback(spec: HandlerSpec, state: ContainerProcessState, owner: ContainerHandlers):
    if spec.name == "continue":
        reply = Reply.continue_()
        return lambda n: reply
    if spec.name == "deny":
        return deny(spec.arg)
    if spec.name == "kill-container":
        owner.pidfd = os.pidfd_open(state.container_pid)

        def kill_container(n):
            if owner.pidfd is not None:
                signal.pidfd_send_signal(owner.pidfd, signal.SIGKILL)
            return Reply.errno(errno.EPERM)
        return kill_container
    raise ConfigError(f"unknown default verdict {spec}")
