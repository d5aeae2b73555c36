"""Built-in notification handlers: audit, fs, net, container, identity/time/random.

Each handler is a callable ``handler(notification) -> Reply | None`` with ``name``,
``syscalls``, ``blocking``, ``install(supervisor)`` and ``close()`` (see :mod:`.base`).
Policies route syscalls to them by name (``openat: notify(fs)``); :mod:`.registry`
builds them from a JSON config and wires a supervisor::

    from sysgate.handlers import build_supervisor
    sup = build_supervisor(policy, {"fs": {"rules": ["allow read /usr/**", "allow rw /tmp/**"]}})
"""
from __future__ import annotations

import importlib

#: public name -> the submodule defining it; imported on first use (PEP 562), so that importing
#: one handler module (``sysgate run`` loads ``.loading`` and ``.registry``) does not import them all.
_EXPORTS = {"AuditHandler": "audit", "AuditLog": "audit", "Handler": "base", "ContainerHandler": "container",
            "format_call": "decode", "format_reply": "decode", "FsHandler": "fs", "PathRules": "fs",
            "IdentityHandler": "identity", "RandomHandler": "identity", "TimeHandler": "identity",
            "NetHandler": "net", "NetRules": "net",
            **dict.fromkeys(("BuiltHandlers", "build_handlers", "build_supervisor", "create", "load_config", "names",
                             "register", "wire"), "registry")}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
