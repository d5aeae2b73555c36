"""Which handlers serve which container: listenerMetadata and the agent's config file.

``listenerMetadata`` is read as KEY=VALUE lines, the format of the Kinvolk
seccompagent (a line without ``=`` is a key with an empty value; a line starting
with ``=`` is skipped). Keys understood:

* ``handlers=mkdir-emulate,mknod-emulate,mount-deny:EACCES`` — sysgate handler names,
  each optionally ``:ARG``; a later handler for the same syscall wins.
* ``default=continue|deny[:ERRNO]|kill-container`` — verdict for notified syscalls
  without a handler (default ``continue``, as in seccompagent).
* seccompagent keys: ``MKDIR_TMPL`` (mkdir emulated with a suffix; ``{{.Pid}}``,
  ``{{.Pid1}}``, ``{{.Container}}``, ``{{.Bundle}}``, ``{{.Pod}}``, ``{{.Namespace}}`` are expanded;
  Pod and Namespace are empty: there is no Kubernetes lookup),
  ``DEFAULT_ACTION=kill-container``, ``MOUNT_PROC=true`` / ``MOUNT_SYSFS=true``
  (handler ``mount-emulate:proc,sysfs``, which :mod:`.handlers` refuses: the container's
  listener is then rejected, failing closed). Other keys are ignored.

The optional config file (JSON) picks a base selection per container::

    {"default":    {"handlers": ["mkdir-deny"], "default": "continue"},
     "containers": [{"id": "web-*", "annotations": {"tier": "front"},
                     "handlers": ["mknod-emulate"], "metadata": false}]}

The first ``containers`` entry whose ``id`` glob and ``annotations`` all match is
used, else ``default``; unless it says ``"metadata": false`` the container's own
metadata is applied on top of it.
"""
from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass, field

from ..files import read_text
from ..errors import SourceError, SysgateError
from ..handlers import registry

DEFAULT_VERDICTS = ("continue", "deny", "kill-container")
_TEMPLATE_FIELD = re.compile(r"\{\{\s*\.(\w+)\s*\}\}")
_ENTRY_KEYS = {"id", "annotations", "handlers", "default", "metadata"}


class ConfigError(SysgateError):
    """A handler selection (metadata or config file) is invalid."""


@dataclass(frozen=True)
class HandlerSpec:
    """One handler by name with its optional argument (``mount-deny:EACCES``)."""

    name: str
    arg: str | None = None

    @classmethod
    def parse(cls, text: str) -> "HandlerSpec":
        name, sep, arg = text.strip().partition(":")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise ConfigError(f"bad handler name {text.strip()!r}")
        return cls(name, arg if sep else None)

    def __str__(self) -> str:
        return self.name if self.arg is None else f"{self.name}:{self.arg}"


@dataclass(frozen=True)
class Selection:
    """The handler set of one container (names only; :mod:`.handlers` builds them)."""

    handlers: tuple[HandlerSpec, ...] = ()
    default: HandlerSpec = HandlerSpec("continue")
    use_metadata: bool = True

    def extended(self, handlers=(), default: HandlerSpec | None = None) -> "Selection":
        return Selection(self.handlers + tuple(handlers), default or self.default, self.use_metadata)


def parse_metadata(text: str) -> dict[str, str]:
    """seccompagent's KEY=VALUE lines -> dict (the last duplicate wins)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            if line:
                out[line] = ""
        elif key:
            out[key] = value
    return out


def parse_default(text: str) -> HandlerSpec:
    spec = HandlerSpec.parse(text)
    if spec.name not in DEFAULT_VERDICTS:
        raise ConfigError(f"default verdict must be one of {', '.join(DEFAULT_VERDICTS)}, not {text!r}")
    return spec


def apply_metadata(base: Selection, metadata: str, context: dict[str, object]) -> Selection:
    """``base`` extended by the container's metadata; ``context`` fills MKDIR_TMPL fields."""
    if not base.use_metadata or not metadata.strip():
        return base
    keys = parse_metadata(metadata)
    handlers: list[HandlerSpec] = []
    default = None
    if "DEFAULT_ACTION" in keys:
        if keys["DEFAULT_ACTION"] != "kill-container":
            raise ConfigError(f"DEFAULT_ACTION={keys['DEFAULT_ACTION']} is not supported (only kill-container)")
        default = HandlerSpec("kill-container")
    if "MKDIR_TMPL" in keys:
        handlers.append(HandlerSpec("mkdir-suffix", expand_template(keys["MKDIR_TMPL"], context)))
    filesystems = [fs for key, fs in (("MOUNT_PROC", "proc"), ("MOUNT_SYSFS", "sysfs")) if keys.get(key) == "true"]
    if filesystems:
        handlers.append(HandlerSpec("mount-emulate", ",".join(filesystems)))
    if "handlers" in keys:
        handlers += [HandlerSpec.parse(item) for item in keys["handlers"].split(",") if item.strip()]
    if "default" in keys:
        default = parse_default(keys["default"])
    return base.extended(handlers, default)


def expand_template(template: str, context: dict[str, object]) -> str:
    """Expand seccompagent's ``{{.Field}}`` placeholders; an unknown field is an error."""
    def field_value(match: re.Match) -> str:
        name = match.group(1)
        if name not in context:
            raise ConfigError(f"MKDIR_TMPL: unknown field {{{{.{name}}}}} (known: {', '.join(sorted(context))})")
        return str(context[name])
    return _TEMPLATE_FIELD.sub(field_value, template)


@dataclass
class AgentConfig:
    """The parsed config file: a default selection and ordered per-container entries."""

    default: Selection = field(default_factory=Selection)
    entries: list[tuple[str, dict[str, str], Selection]] = field(default_factory=list)

    def base_for(self, container_id: str, annotations: dict[str, str]) -> Selection:
        for pattern, wanted, selection in self.entries:
            if fnmatch.fnmatchcase(container_id, pattern) and all(
                    annotations.get(k) == v for k, v in wanted.items()):
                return selection
        return self.default

    def select(self, container_id: str, annotations: dict[str, str], metadata: str,
               context: dict[str, object]) -> Selection:
        """The handler selection of one container process."""
        return apply_metadata(self.base_for(container_id, annotations), metadata, context)

    @classmethod
    def load(cls, path: str) -> "AgentConfig":
        return cls.parse(read_text(path, "agent config"), path)

    @classmethod
    def parse(cls, text: str, source: str = "<config>") -> "AgentConfig":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SourceError(exc.msg, source, exc.lineno, exc.colno) from None
        if not isinstance(doc, dict) or set(doc) - {"default", "containers"}:
            raise SourceError('the config must be an object with "default" and/or "containers"', source)
        try:
            config = cls(default=_selection(doc.get("default", {}), "default"))
            entries = doc.get("containers", [])
            if not isinstance(entries, list):
                raise ConfigError('"containers" must be a list')
            for i, entry in enumerate(entries):
                where = f"containers[{i}]"
                selection = _selection(entry, where)
                wanted = entry.get("annotations", {})
                if not isinstance(wanted, dict) or not all(isinstance(v, str) for v in wanted.values()):
                    raise ConfigError(f"{where}.annotations must map strings to strings")
                pattern = entry.get("id", "*")
                if not isinstance(pattern, str):
                    raise ConfigError(f"{where}.id must be a string (a glob)")
                config.entries.append((pattern, wanted, selection))
        except ConfigError as exc:
            raise SourceError(str(exc), source) from None
        return config


def _selection(obj, where: str) -> Selection:
    if not isinstance(obj, dict):
        raise ConfigError(f"{where} must be an object")
    unknown = set(obj) - _ENTRY_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    names = obj.get("handlers", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{where}.handlers must be a list of handler names")
    use_metadata = obj.get("metadata", True)
    if not isinstance(use_metadata, bool):
        raise ConfigError(f"{where}.metadata must be true or false")
    default = obj.get("default", "continue")
    if not isinstance(default, str):
        raise ConfigError(f"{where}.default must be a string")
    specs = tuple(HandlerSpec.parse(n) for n in names)
    for spec in specs:          # a typo is reported when the agent starts, not per container
        try:
            registry.lookup_agent(spec.name)
        except SysgateError as exc:
            raise ConfigError(f"{where}.handlers: {exc}") from None
    return Selection(specs, parse_default(default), use_metadata)
