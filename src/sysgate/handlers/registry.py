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

``audit.log`` is a path or ``"-"`` (stderr); ``wrap`` (true, or a list of names) records
the decisions of those handlers; ``notify(audit)`` in a policy audits (and CONTINUEs)
on its own. :func:`build_supervisor` checks the policy against the handlers: a notified
syscall a handler cannot answer is an error before anything runs.
"""
from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field

from ..errors import SysgateError
from .audit import AuditHandler, AuditLog
from .container import ContainerHandler
from .fs import FsHandler
from .identity import IdentityHandler, RandomHandler, TimeHandler
from .net import NetHandler

_FACTORIES: dict = {}


def register(name: str, factory, options=()) -> None:
    """Make ``notify(name)`` available: ``factory(**config)`` builds the handler; ``options``
    are the config keys it accepts (checked, so typos are reported)."""
    _FACTORIES[name] = (factory, tuple(options))


def names() -> list[str]:
    return sorted(_FACTORIES)


def describe() -> list[dict]:
    """Every registered handler: name, one-line summary, syscalls it answers, config options."""
    rows = []
    for name in names():
        factory, options = _FACTORIES[name]
        handler = create(name)
        doc = (type(handler).__doc__ or "").strip().splitlines()[0]
        doc = re.sub(r":\w+:`([^`]*)`", r"\1", doc).replace("``", "")
        rows.append({"name": name, "summary": doc,
                     "syscalls": list(handler.syscalls), "options": list(_AUDIT_OPTIONS if name == "audit" else options)})
        handler.close()
    return rows


def create(name: str, config: dict | None = None):
    """The handler ``name`` built from its config section."""
    if name not in _FACTORIES:
        raise SysgateError(f"unknown handler {name!r} (known: {', '.join(names())})")
    factory, options = _FACTORIES[name]
    config = {} if config is None else config
    if not isinstance(config, dict):
        raise SysgateError(f"handler {name!r}: its config must be an object, not {config!r}")
    unknown = sorted(set(config) - set(options))
    if unknown:
        raise SysgateError(f"handler {name!r}: unknown option(s) {', '.join(unknown)} "
                           f"(known: {', '.join(options) or 'none'})")
    try:
        handler = factory(**config)
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
    if not str(source).lstrip().startswith("{"):
        where = str(source)
        try:
            with open(source, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise SysgateError(f"cannot read handler config {where}: {exc.strerror}") from None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SysgateError(f"{where}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None
    if not isinstance(config, dict):
        raise SysgateError(f"{where}: a handler config is a JSON object of handler sections")
    return config


@dataclass
class HandlerSet:
    """The handlers built for one policy, plus the audit log they share."""

    handlers: dict = field(default_factory=dict)        # name -> handler (wrapped when audited)
    audit: AuditLog | None = None
    summary: bool = False

    def install(self, sup, policy=None, *, group: str | None = None) -> None:
        """Route ``policy``'s ``notify(NAME)`` rules (or, without a policy, every handler's
        own syscalls) to these handlers."""
        if policy is not None:
            sup.use_policy(policy, self.handlers, group=group)
        else:
            for handler in self.handlers.values():
                handler.install(sup, group=group)

    def finish(self, stream=None) -> None:
        """Print the audit summary (when configured) and release the handlers."""
        if self.audit is not None:
            if self.summary:
                print(self.audit.summary(), file=stream or sys.stderr)
            self.audit.close()
        for handler in self.handlers.values():
            handler.close()


def build_handlers(policy, config=None) -> HandlerSet:
    """Handlers for every ``notify(NAME)`` of ``policy`` (and every section of ``config`` when
    ``policy`` is None), audited as ``config["audit"]`` says."""
    config = dict(load_config(config))
    audit_cfg = config.pop("audit", None)
    wanted = _policy_handlers(policy) if policy is not None else {n: () for n in config}
    if "audit" in wanted and audit_cfg is None:
        audit_cfg = {}
    result = HandlerSet()
    wrap: set = set()
    if audit_cfg is not None:
        result.audit, wrap, result.summary = _audit(audit_cfg, set(wanted) - {"audit"})
    for name, syscalls in wanted.items():
        if name == "audit":
            handler = AuditHandler(result.audit)
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


def build_supervisor(policy, handler_config=None, *, supervisor=None, group: str | None = None, **options):
    """A :class:`~sysgate.supervisor.Supervisor` (``supervisor``, or a new one made with
    ``options``) answering ``policy``'s ``notify(NAME)`` rules with the configured handlers.

    The handler set is kept as ``supervisor.handler_set``: call its ``finish()`` after the
    run for the audit summary.
    """
    from ..supervisor import Supervisor

    handlers = build_handlers(policy, handler_config)
    sup = supervisor if supervisor is not None else Supervisor(**options)
    handlers.install(sup, policy, group=group)
    sup.handler_set = handlers
    return sup


def _policy_handlers(policy) -> dict[str, list[str]]:
    """handler name -> syscalls the policy notifies to it."""
    out: dict[str, list[str]] = {}
    for syscall, names in policy.handler_routes().items():
        for name in names:
            out.setdefault(name, []).append(syscall)
    return out


def _audit(cfg, available: set):
    if not isinstance(cfg, dict) or set(cfg) - set(_AUDIT_OPTIONS):
        raise SysgateError(f"audit config {cfg!r}: options are {', '.join(_AUDIT_OPTIONS)}")
    log = cfg.get("log", "-")
    sink = sys.stderr if log == "-" else None if log is None else str(log)
    try:
        audit_log = AuditLog(sink, strings=bool(cfg.get("strings", True)), max_string=int(cfg.get("max_string", 96)))
    except OSError as exc:
        raise SysgateError(f"cannot open audit log {log}: {exc.strerror}") from None
    wrap = cfg.get("wrap", False)
    if wrap is True:
        wrap = available
    elif wrap is False:
        wrap = set()
    elif isinstance(wrap, list):
        wrap = set(wrap)
    else:
        raise SysgateError("audit wrap: true, false or a list of handler names")
    return audit_log, wrap, bool(cfg.get("summary", True))


def _audited(log, inner):
    handler = AuditHandler(log, inner)
    handler.name = inner.name
    return handler


register("fs", FsHandler, ("rules", "default", "as_target", "deadline"))
register("net", NetHandler, ("rules", "default", "errno_denied", "deadline"))
register("container", ContainerHandler, ("devices", "mkdir", "mkdir_otherwise", "mounts", "memory"))
register("identity", IdentityHandler, ("hostname", "domainname", "sysname", "release", "version", "machine"))
register("time", TimeHandler, ("start", "step", "monotonic_start"))
register("random", RandomHandler, ("seed",))
register("audit", lambda: AuditHandler(AuditLog(sys.stderr)), ())
_AUDIT_OPTIONS = ("log", "summary", "wrap", "strings", "max_string")   # the "audit" section (see _audit)
