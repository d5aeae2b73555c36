"""Custom handlers written in Python, named on the command line (``run``, ``replay``).

A spec is ``FILE.py[:NAME]`` or ``MODULE:NAME`` (``NAME`` defaults to ``handlers``): the
object called NAME in that file or importable module. The one loader of user handler code,
so ``sysgate run --handlers`` and ``sysgate replay --handlers`` accept the same specs.

What a loaded handler must be (a callable ``handler(notification) -> Reply | None`` with
optional ``name``, ``syscalls``, ``blocking``, ``deadline``, ``close()``) is stated once, in
:mod:`sysgate.supervisor.contract`.

Handlers run in the supervisor's process with its privileges: loading one runs its code.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import re

from ..errors import SysgateError

_MODULE_SPEC = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")


def is_python_spec(text: str) -> bool:
    """True when ``text`` names Python code (``FILE.py[:NAME]``, ``MODULE:NAME``), not a JSON config."""
    where = text.partition(":")[0]
    return where.endswith(".py") or bool(_MODULE_SPEC.fullmatch(text))


def load_object(spec: str, option: str = "--handlers"):
    """The object named by ``MODULE[:NAME]`` or ``FILE.py[:NAME]`` (NAME defaults to ``handlers``);
    a SysgateError in one line when it cannot be loaded (``option`` names the flag in it)."""
    where, _, name = spec.partition(":")
    name = name or "handlers"
    try:
        if where.endswith(".py") or os.sep in where:
            if not os.path.isfile(where):
                raise SysgateError(f"{option}: no such file {where!r}")
            module_spec = importlib.util.spec_from_file_location(f"_sysgate_handlers_{abs(hash(where))}", where)
            if module_spec is None:
                raise SysgateError(f"{option}: cannot load {where!r} as Python")
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
    except SysgateError:
        raise
    except BaseException as exc:   # the user's module failed (even SystemExit): say how, in one line
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise SysgateError(f"{option} {spec}: cannot load {where!r}: {type(exc).__name__}: {exc}") from None
    if not hasattr(module, name):
        raise SysgateError(f"{option} {spec}: {where!r} has no {name!r}")
    return getattr(module, name)


def named_handlers(spec: str, option: str = "--handlers") -> dict:
    """The handlers of ``spec`` (one handler or a list of them) by name, for ``notify(NAME)``."""
    obj = load_object(spec, option)
    items = obj if isinstance(obj, (list, tuple)) else [obj]
    out: dict = {}
    for item in items:
        if isinstance(item, dict) or not callable(item):
            raise SysgateError(f"{option} {spec}: expected a handler (a callable with a name) or a list of "
                               f"them, not {type(item).__name__}")
        handler = CustomHandler(item)
        if not handler.name:
            raise SysgateError(f"{option} {spec}: {item!r} has no name: give it a name attribute "
                               f"(what notify(NAME) calls it)")
        if handler.name in out:
            raise SysgateError(f"{option} {spec}: two handlers are called {handler.name!r}")
        out[handler.name] = handler
    return out


class CustomHandler:
    """A user's handler with the contract's attributes filled in (see the module docstring)."""

    def __init__(self, fn):
        self.fn = fn
        self.wraps_handlers = (fn,)     # its process_safe = False counts (supervisor.processes.find_unsafe)
        name = getattr(fn, "name", None) or getattr(fn, "__name__", None)
        self.name = name if isinstance(name, str) and name != "<lambda>" else None
        syscalls = getattr(fn, "syscalls", None)
        if isinstance(syscalls, str) or (syscalls is not None and not all(isinstance(s, str) for s in syscalls)):
            raise SysgateError(f"handler {self.name!r}: syscalls must be a list of syscall names")
        self.syscalls = tuple(syscalls) if syscalls else None
        self.blocking = bool(getattr(fn, "blocking", False))
        self.deadline = getattr(fn, "deadline", None)
        if self.deadline is not None and not (isinstance(self.deadline, (int, float)) and self.deadline > 0):
            raise SysgateError(f"handler {self.name!r}: deadline must be a number of seconds > 0")

    def __call__(self, n):
        return self.fn(n)

    def close(self) -> None:
        close = getattr(self.fn, "close", None)
        if callable(close):
            close()

    def __repr__(self) -> str:
        return f"<custom handler {self.name} {self.fn!r}>"


def handler_options(values) -> tuple:
    """``(config, custom handlers by name)`` from the ``--handlers`` values: at most one JSON
    config (file or inline) and any number of Python specs (:mod:`sysgate.handlers.loading`)."""
    configs, custom = [], {}
    for value in values or ():
        if not is_python_spec(value):
            configs.append(value)
            continue
        for name, handler in named_handlers(value).items():
            if name in custom:
                raise SysgateError(f"--handlers {value}: a handler called {name!r} was already given")
            custom[name] = handler
    if len(configs) > 1:
        raise SysgateError("--handlers: give at most one JSON config (one section per built-in handler)")
    return (configs[0] if configs else None), custom
