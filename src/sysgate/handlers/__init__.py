"""Built-in notification handlers: audit, fs, net, container, identity/time/random.

Each handler is a callable ``handler(notification) -> Reply | None`` with ``name``,
``syscalls``, ``blocking``, ``install(supervisor)`` and ``close()`` (see :mod:`.base`).
Policies route syscalls to them by name (``openat: notify(fs)``); :mod:`.registry`
builds them from a JSON config and wires a supervisor::

    from sysgate.handlers import build_supervisor
    sup = build_supervisor(policy, {"fs": {"rules": ["allow read /usr/**", "allow rw /tmp/**"]}})
"""
from __future__ import annotations

from .audit import AuditHandler, AuditLog
from .base import Handler
from .container import ContainerHandler
from .decode import format_call, format_reply
from .fs import FsHandler, PathRules
from .identity import IdentityHandler, RandomHandler, TimeHandler
from .net import NetHandler, NetRules
from .registry import BuiltHandlers, build_handlers, build_supervisor, create, load_config, names, register, wire

__all__ = ["Handler", "AuditHandler", "AuditLog", "FsHandler", "PathRules", "NetHandler", "NetRules",
           "ContainerHandler", "IdentityHandler", "TimeHandler", "RandomHandler", "format_call", "format_reply",
           "BuiltHandlers", "build_handlers", "build_supervisor", "create", "load_config", "names", "register", "wire"]
