"""Load a policy from a file in any supported format.

``load_policy`` recognises JSON (an OCI ``linux.seccomp`` object, a whole runtime-spec
``config.json``, a Docker/podman profile template, or a Kubernetes ``SeccompProfile``) by
its leading ``{``, a ``SeccompProfile`` resource in YAML by its first line (``---``,
``apiVersion:`` or ``kind:``; see :func:`looks_like_yaml`), a systemd unit file or drop-in by
its ``[Section]`` header or ``SystemCallFilter=``-style lines (:mod:`sysgate.policy.systemd`);
anything else is the sysgate policy language. A policy saying
``sandbox: fs, net`` gets the secure base (:mod:`sysgate.sandbox.base`) here, so every
command compiles the same rules.

A module of its own above :mod:`sysgate.policy` and :mod:`sysgate.sandbox`: the secure base
is built from the policy model and from what the built-in handlers answer, so applying it
from inside ``sysgate.policy`` made the packages import each other.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable

from .files import read_text
from .policy.model import Policy

# Each format's reader is imported when a policy of that format is read: `sysgate compile` of a
# JSON profile loads neither the sysgate language parser nor the systemd reader.


_YAML_FIRST_LINE = re.compile(r"(?:---|\.\.\.|%YAML|%TAG)(?:[ \t#]|\Z)|(?:apiVersion|kind)[ \t]*:")


def looks_like_yaml(text: str) -> bool:
    """The rule that tells a YAML resource from the sysgate language (both may look like
    ``key: value`` lines): the first line that is not blank or a ``#`` comment starts a
    document (``---``, a ``%YAML``/``%TAG`` directive) or is a top-level ``apiVersion:`` or
    ``kind:`` key, which every Kubernetes resource has and the sysgate language never uses."""
    for line in text.removeprefix("\ufeff").splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            return bool(_YAML_FIRST_LINE.match(line))
    return False


def detect_format(text: str) -> str:
    """``"oci"`` for JSON profiles, ``"yaml"`` for YAML resources (:func:`looks_like_yaml`),
    ``"systemd"`` for a unit file or drop-in (its first non-comment line is a unit
    ``[Section]`` header such as ``[Service]``, or a line sets ``SystemCallFilter=``/
    ``SystemCallErrorNumber=``/``SystemCallArchitectures=``/``SystemCallLog=``); else ``"text"``."""
    if text.lstrip("\ufeff \t\r\n").startswith("{"):
        return "oci"
    if looks_like_yaml(text):
        return "yaml"
    from .policy.systemd import looks_like_unit

    if looks_like_unit(text):
        return "systemd"
    return "text"


def load_policy(path: str, *, arch: str | None = None, caps=None, kernel=None,
                warn: Callable[[str], None] | None = None) -> Policy:
    """The policy in file ``path`` (``-`` reads standard input). For JSON profiles, ``arch``,
    ``caps`` and ``kernel`` select the target (see :func:`import_oci`); a text policy names
    its architectures itself (``arch:``)."""
    if path == "-":
        import sys

        text, name = sys.stdin.read(), "<stdin>"
    else:
        text = read_text(path, "policy")
        name = path
    return load_text(text, name, arch=arch, caps=caps, kernel=kernel, warn=warn)


def load_text(text: str, filename: str = "<policy>", *, arch=None, caps=None, kernel=None,
              warn: Callable[[str], None] | None = None) -> Policy:
    """Like :func:`load_policy` for text already read (``filename`` is for messages and includes)."""
    fmt = detect_format(text)
    if fmt == "oci":
        from .policy.oci import import_oci

        return import_oci(text, arch, filename=filename, warn=warn, caps=caps, kernel=kernel)
    if fmt == "yaml":
        from .policy.spo import import_spo

        return import_spo(text, arch, filename=filename, warn=warn, caps=caps, kernel=kernel)
    if fmt == "systemd":
        from .policy.systemd import parse_unit

        return parse_unit(text, filename, warn=warn)
    from .policy.parser import parse_policy

    base = os.path.dirname(filename) if not filename.startswith("<") else None
    policy = parse_policy(text, filename, base_dir=base, warn=warn)
    if caps is not None or kernel is not None:
        message = f"{filename}: capabilities and kernel version select rules of JSON profiles only; ignored"
        policy.warnings.append(message)
        if warn:
            warn(message)
    if policy.sandbox:
        from .sandbox.base import apply_base        # only then: it loads the handlers' facts

        policy = apply_base(policy)
    return policy
