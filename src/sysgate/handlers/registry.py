"""Handlers by name: policies say ``notify(fs)``, configs say ``{"fs": {...}}``.

A handler config is a JSON object with one section per handler name::

    {
      "fs":    {"rules": ["allow read /usr/**", "allow rw /tmp/**"], "default": "deny"},
      "net":   {"rules": ["allow connect 127.0.0.0/8:1-65535", "allow connect unix:/run/**"]},
      "container": {"mkdir": ["/run/**"], "mounts": [{"fstype": "tmpfs", "target": "/mnt/**"}], "memory": "cgroup"},
      "identity": {"hostname": "sandbox"},
      "time":  {"start": 1700000000, "step": 0.001},
      "random": {"seed": 42},
      "audit": {"log": "audit.jsonl", "summary": true, "wrap": true}
    }

Each handler registers the JSON shape (:class:`Kind`) of every option it takes, so a
config with a wrong shape (``"rules": 5``) is one error naming handler, option and value.
``audit.log`` is a path or ``"-"`` (stderr); ``wrap`` (true, or a list of names) records
the decisions of those handlers; ``notify(audit)`` in a policy audits (and CONTINUEs)
on its own. :func:`wire` checks the policy against the handlers: a notified
syscall a handler cannot answer is an error before anything runs.
"""
from __future__ import annotations

import importlib
import json
import os
import math
import re
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, NamedTuple

from ..files import read_text
from ..errors import SysgateError
if TYPE_CHECKING:
    from .audit import AuditLog


class Entry(NamedTuple):
    """One handler name. Policy form (``notify(NAME)`` and a config section): ``factory(**config)``,
    ``options`` maps each config key to its :class:`Kind`. Agent form (the seccompagent-compatible
    names a container's metadata selects, see :mod:`.seccompagent`): ``factory(arg, state)``
    answering the fixed ``syscalls``."""

    factory: Callable
    options: dict
    syscalls: tuple | None = None       # agent form only

    @property
    def agent(self) -> bool:
        return self.syscalls is not None


#: every handler name, both forms: the one table
_HANDLERS: dict[str, Entry] = {}


class Kind(NamedTuple):
    """The JSON shape a config option takes: ``words`` for error messages, ``test`` to check it."""

    words: str
    test: Callable[[object], bool]

    def __or__(self, other: "Kind") -> "Kind":
        return Kind(f"{self.words} or {other.words}", lambda v: self.test(v) or other.test(v))


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite(value) -> bool:
    """An int or float that is a finite float (JSON allows NaN, Infinity and huge integers)."""
    try:
        return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)
    except OverflowError:
        return False


def list_of(kind: Kind, words: str) -> Kind:
    """A JSON list whose items are all ``kind`` (``words``: how to name it, e.g. "a list of strings")."""
    return Kind(words, lambda v: isinstance(v, list) and all(kind.test(x) for x in v))


ANY = Kind("anything", lambda v: True)
NULL = Kind("null", lambda v: v is None)
STRING = Kind("a string", lambda v: isinstance(v, str))
BOOL = Kind("true or false", lambda v: isinstance(v, bool))
INTEGER = Kind("an integer", _is_int)
COUNT = Kind("an integer >= 0", lambda v: _is_int(v) and v >= 0)
NUMBER = Kind("a finite number", _is_finite)
SECONDS = Kind("a number of seconds > 0", lambda v: NUMBER.test(v) and v > 0)
#: a clock value in seconds that still fits a 64-bit nanosecond count
CLOCK = Kind("a number of seconds between -9e9 and 9e9", lambda v: NUMBER.test(v) and abs(v) <= 9e9)
STRINGS = list_of(STRING, "a list of strings")


def register(name: str, factory, options=()) -> None:
    """Make ``notify(name)`` available: ``factory(**config)`` builds the handler; ``options``
    are the config keys it accepts (checked, so typos are reported), a sequence of names or a
    dict name -> :class:`Kind` (then each value's shape is checked too)."""
    kinds = dict(options) if isinstance(options, dict) else dict.fromkeys(options, ANY)
    _HANDLERS[name] = Entry(factory, kinds)


def register_agent(name: str, syscalls, factory) -> None:
    """Make ``name`` selectable by the OCI agent (container metadata ``handlers=NAME[:ARG]``):
    ``factory(arg, state)`` builds the handler answering ``syscalls``."""
    _HANDLERS[name] = Entry(factory, {}, tuple(syscalls))


def describe_options(name: str) -> dict:
    """Option name -> :class:`Kind` for the handler ``name``."""
    return dict(lookup(name).options)


def check_options(name: str, config, options: dict) -> dict:
    """``config`` (a handler's section) when it is an object whose keys are in ``options`` and
    whose values have the declared :class:`Kind`; else a :class:`SysgateError` naming the problem."""
    config = {} if config is None else config
    if not isinstance(config, dict):
        raise SysgateError(f"handler {name!r}: its config must be an object, not {_show(config)}")
    unknown = sorted(set(config) - set(options))
    if unknown:
        raise SysgateError(f"handler {name!r}: unknown option(s) {', '.join(unknown)} "
                           f"(known: {', '.join(options) or 'none'})")
    for key, value in config.items():
        if not options[key].test(value):
            raise SysgateError(f"handler {name!r}: option {key!r} must be {options[key].words}, not {_show(value)}")
    return config


def _show(value) -> str:
    """``value`` as the user wrote it (JSON), falling back to repr."""
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def names() -> list[str]:
    """The handlers a policy can name (``notify(NAME)``)."""
    return sorted(name for name, entry in _HANDLERS.items() if not entry.agent)


def agent_names() -> list[str]:
    """The handlers the OCI agent can select (seccompagent-compatible)."""
    _register_agent_handlers()
    return sorted(name for name, entry in _HANDLERS.items() if entry.agent)


def describe() -> list[dict]:
    """Every registered handler: name, one-line summary, syscalls it answers, config options, and
    ``weaker``: syscalls it lets the kernel finish after a check (CONTINUE), with why."""
    rows = []
    for name in names():
        options = _HANDLERS[name].options
        handler = create(name)
        doc = (type(handler).__doc__ or "").strip().splitlines()[0]
        doc = re.sub(r":\w+:`([^`]*)`", r"\1", doc).replace("``", "")
        rows.append({"name": name, "summary": doc, "syscalls": list(handler.syscalls),
                     "options": list(_AUDIT_OPTIONS if name == "audit" else options),
                     "weaker": dict(getattr(handler, "weak_guarantees", {}))})
        handler.close()
    return rows


def lookup(name: str) -> Entry:
    """The :class:`Entry` of the policy handler ``name``. The one check of a handler name, shared
    by ``run``/``attach`` (through :func:`create`), config sections and ``policy check``: an
    unknown name is a SysgateError listing the known ones, with a did-you-mean."""
    return _lookup(name, names())


def lookup_agent(name: str) -> Entry:
    """The :class:`Entry` (agent form) of the seccompagent-compatible handler ``name``."""
    return _lookup(name, agent_names())


def _lookup(name: str, known: list[str]) -> Entry:
    if name in known:
        return _HANDLERS[name]
    import difflib

    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise SysgateError(f"unknown handler {name!r} (known: {', '.join(known)}){hint}")


def create(name: str, config: dict | None = None):
    """The handler ``name`` built from its config section."""
    entry = lookup(name)
    config = check_options(name, config, entry.options)
    try:
        handler = entry.factory(**config)
    except (TypeError, ValueError) as exc:
        raise SysgateError(f"handler {name!r}: {exc}") from None
    handler.name = name
    return handler


def load_config(source) -> dict:
    """A handler config from a dict, a JSON text or a JSON file path (None: empty)."""
    if source is None:
        return {}
    if isinstance(source, dict):
        return source
    text, where = source, "<config>"
    inline_non_object = not os.path.exists(source) and _json_value(source) is not None
    if not str(source).lstrip().startswith("{") and not inline_non_object:
        text, where = read_text(source, "handler config"), str(source)
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SysgateError(f"{where}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None
    if not isinstance(config, dict):
        raise SysgateError(f"{where}: a handler config must be a JSON object with one section per handler "
                           f"(e.g. {{\"fs\": {{\"rules\": [...]}}}}), not {_show(config)}")
    return config


def _json_value(text: str):
    """``(value,)`` when ``text`` is JSON, else None."""
    try:
        return (json.loads(text),)
    except ValueError:
        return None


@dataclass
class BuiltHandlers:
    """The handlers :func:`build_handlers` made for one policy, plus the audit log they share."""

    handlers: dict = field(default_factory=dict)        # name -> handler (wrapped when audited)
    audit: AuditLog | None = None
    summary: bool = False

    def finish(self, stream=None) -> None:
        """Print the audit summary (when configured) and release the handlers."""
        if self.audit is not None:
            if self.summary:
                print(self.audit.summary(), file=stream or sys.stderr)
            self.audit.close()
        for handler in self.handlers.values():
            handler.close()


def build_handlers(policy, config=None, custom=None) -> BuiltHandlers:
    """Handlers for every ``notify(NAME)`` of ``policy`` (and every section of ``config`` when
    ``policy`` is None), audited as ``config["audit"]`` says. ``custom`` (name -> handler, see
    :mod:`.loading`) answers the names it has instead of a built-in handler."""
    custom = dict(custom or {})
    clash = sorted(set(custom) & set(names()))
    if clash:
        raise SysgateError(f"custom handler(s) {', '.join(clash)} have the name of a built-in handler")
    config = dict(load_config(config))
    check_sections(config)
    audit_cfg = config.pop("audit", None)
    wanted = _policy_handlers(policy) if policy is not None else {n: () for n in config}
    if "audit" in wanted and audit_cfg is None:
        audit_cfg = {}
    result = BuiltHandlers()
    wrap: set = set()
    if audit_cfg is not None:
        result.audit, wrap, result.summary = _audit(audit_cfg, set(wanted) - {"audit"})
    for name, syscalls in wanted.items():
        if name == "audit":
            from .audit import AuditHandler

            handler = AuditHandler(result.audit)
        else:
            if name in custom:
                handler = custom[name]
                if getattr(handler, "syscalls", None) is None:   # answers whatever the policy routes to it
                    handler.syscalls = tuple(syscalls)
            else:
                handler = create(name, config.get(name))
            missing = [s for s in syscalls if s not in handler.syscalls]
            if missing:
                raise SysgateError(f"policy notifies {', '.join(missing)} to handler {name!r}, which answers only "
                                   f"{', '.join(handler.syscalls)}")
            if name in wrap:
                handler = _audited(result.audit, handler)
        result.handlers[name] = handler
    return result


def wire(sup, policy, config=None, *, custom=None, group: str | None = None, wrap=None, warn=None):
    """Route ``policy``'s ``notify(NAME)`` rules on ``sup`` (for ``group``, default all targets)
    to handlers built from ``config`` (a JSON file, JSON text, a dict or None) or given in
    ``custom`` (name -> handler, see :func:`.loading.handler_options`). The one place a policy
    meets its handlers: ``sysgate run``, ``record``, ``attach`` and :func:`build_supervisor`.

    Returns the :class:`BuiltHandlers`, to ``finish()`` after the run (None when the policy names
    no handler). ``wrap(handler)``, when given, is routed instead of each handler (e.g.
    :meth:`sysgate.testing.Recorder.wrap`); ``warn(line)`` gets the config's harmless
    mistakes (sections the policy does not use, a rule handler without rules).

    Every error (unknown handler, section or option, a syscall a handler cannot answer) is
    raised here, before anything runs: the policy's named rules are never left unanswered.
    """
    config = load_config(config)
    custom = custom or {}
    check_sections(config)
    if policy is None:
        if config or custom:
            raise SysgateError("a handler config needs a policy: its notify(NAME) rules choose the handlers")
        return None
    named = {r.action.handler for r in policy.rules if r.action.kind == "notify" and r.action.handler}
    warn = warn or (lambda line: None)
    if not named:
        if config or custom:
            warn(f"sysgate: warning: policy {policy.name!r} names no handler (notify(NAME)); --handlers is not used")
        return None
    unused = sorted((set(config) | set(custom)) - named - {"audit"})
    if unused:
        warn(f"sysgate: warning: policy {policy.name!r} does not use handler(s) {', '.join(unused)}")
    for name in sorted(named - set(config)):
        if name in names() and "rules" in _HANDLERS[name].options:
            warn(f"sysgate: warning: handler {name!r} has no section in --handlers: it denies every call")
    built = build_handlers(policy, config, custom)
    routed = {name: wrap(h) for name, h in built.handlers.items()} if wrap else built.handlers
    sup.use_policy(policy, routed, group=group)
    return built


def check_sections(config: dict) -> None:
    """A SysgateError when ``config`` has a section that is no handler's (a typo), worded as
    :func:`lookup` words an unknown name."""
    unknown = sorted(set(config) - set(names()))
    if unknown:
        try:
            lookup(unknown[0])
        except SysgateError as exc:
            raise SysgateError(f"handler config: unknown section(s) {', '.join(unknown)}: {exc}") from None


def build_supervisor(policy, handler_config=None, *, supervisor=None, group: str | None = None, **options):
    """A :class:`~sysgate.supervisor.Supervisor` (``supervisor``, or a new one made with
    ``options``) answering ``policy``'s ``notify(NAME)`` rules with the configured handlers
    (see :func:`wire`).

    The handler set is kept as ``supervisor.handler_set`` (None when the policy names no
    handler): call its ``finish()`` after the run for the audit summary.
    """
    from ..supervisor import Supervisor

    sup = supervisor if supervisor is not None else Supervisor(**options)
    try:
        sup.handler_set = wire(sup, policy, handler_config, group=group)
    except BaseException:
        if supervisor is None:
            sup.close()
        raise
    return sup


def _policy_handlers(policy) -> dict[str, list[str]]:
    """handler name -> syscalls the policy notifies to it."""
    out: dict[str, list[str]] = {}
    for syscall, names in policy.handler_routes().items():
        for name in names:
            out.setdefault(name, []).append(syscall)
    return out


def _audit(cfg, available: set):
    from .audit import AuditLog

    cfg = check_options("audit", cfg, _AUDIT_OPTIONS)
    log = cfg.get("log", "-")
    sink = sys.stderr if log == "-" else None if log is None else str(log)
    try:
        audit_log = AuditLog(sink, strings=bool(cfg.get("strings", True)), max_string=int(cfg.get("max_string", 96)))
    except OSError as exc:
        raise SysgateError(f"cannot open audit log {log}: {exc.strerror}") from None
    wrap = cfg.get("wrap", False)
    wrap = available if wrap is True else set() if wrap is False else set(wrap)
    return audit_log, wrap, cfg.get("summary", True)


def _audited(log, inner):
    from .audit import AuditHandler

    handler = AuditHandler(log, inner)
    handler.name = inner.name
    return handler


def _imported(module: str, name: str):
    """A factory calling ``module.name``, imported on first use: a run imports only the handlers its policy names."""
    def factory(*args, **config):
        return getattr(importlib.import_module(f"{__package__}.{module}"), name)(*args, **config)
    factory.__name__ = factory.__qualname__ = name
    return factory


def _stderr_audit():
    from .audit import AuditHandler, AuditLog

    return AuditHandler(AuditLog(sys.stderr))


_ERRNO = Kind("an errno name or number", lambda v: isinstance(v, str) or _is_int(v))
register("fs", _imported("fs", "FsHandler"),
         {"rules": STRINGS, "default": STRING, "as_target": BOOL, "deadline": SECONDS | NULL})
register("net", _imported("net", "NetHandler"),
         {"rules": STRINGS, "default": STRING, "errno_denied": _ERRNO, "deadline": SECONDS | NULL})
register("container", _imported("container", "ContainerHandler"), {
    "devices": list_of(STRING | Kind("pair", lambda v: isinstance(v, list) and len(v) == 2 and all(map(_is_int, v))),
                       'a list of "MAJOR:MINOR" strings or [MAJOR, MINOR] pairs'),
    "mkdir": STRINGS,
    "mkdir_otherwise": Kind('"continue" or an errno name or number', _ERRNO.test),
    "mounts": list_of(STRING | Kind("object", lambda v: isinstance(v, dict)), "a list of fstype strings or objects"),
    "memory": ANY})                                      # checked by ContainerHandler
register("identity", _imported("identity", "IdentityHandler"),
         dict.fromkeys(("hostname", "domainname", "sysname", "release", "version", "machine"), STRING | NULL))
register("time", _imported("identity", "TimeHandler"), dict.fromkeys(("start", "step", "monotonic_start"), CLOCK))
register("random", _imported("identity", "RandomHandler"), {"seed": STRING | INTEGER})
register("audit", _stderr_audit, ())
# the "audit" section (see _audit)
_AUDIT_OPTIONS = {"log": Kind('a file name, "-" (stderr) or null', lambda v: v is None or isinstance(v, str)),
                  "summary": BOOL, "wrap": BOOL | STRINGS, "strings": BOOL, "max_string": COUNT}


def _register_agent_handlers() -> None:
    """The seccompagent-compatible names, registered when the agent first asks (they import the
    container handler, which nothing else on ``sysgate run``'s path needs)."""
    global _agent_handlers_registered
    if _agent_handlers_registered:
        return
    _agent_handlers_registered = True
    from . import seccompagent

    register_agent("mkdir-deny", seccompagent.MKDIR, seccompagent.deny)
    register_agent("mkdir-emulate", seccompagent.MKDIR, lambda arg, state: seccompagent.mkdir_emulate(None))
    register_agent("mkdir-suffix", seccompagent.MKDIR, seccompagent.mkdir_emulate)
    register_agent("mknod-deny", seccompagent.MKNOD, seccompagent.deny)
    register_agent("mknod-emulate", seccompagent.MKNOD, seccompagent.mknod_emulate)
    register_agent("mount-deny", ("mount",), seccompagent.deny)
    register_agent("mount-emulate", ("mount",), seccompagent.mount_emulate)


_agent_handlers_registered = False
