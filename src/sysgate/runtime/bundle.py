"""Connect a bundle's seccomp profile to ``sysgate agent``: the ``config.json`` rewrite of ``sysgate-runc``.

Rules (each decided here and nowhere else):

* A profile with ``SCMP_ACT_NOTIFY`` (default action or any rule) gets ``listenerPath`` (the
  agent socket) unless it already names one, and ``listenerMetadata`` built from, in order:
  the platform's ``--metadata``, the profile's own ``listenerMetadata``, the container's
  ``io.sysgate.metadata`` annotation and ``io.sysgate.handlers`` (as a ``handlers=`` line).
  The agent reads KEY=VALUE lines and the last duplicate wins, so a container's annotations
  refine the platform's choice; a platform that must not be overridden says
  ``"metadata": false`` in the agent's config file.
* A bundle *without* ``linux.seccomp`` gets the platform default profile (``--policy``).
  A bundle with a profile keeps it as it is: the default never replaces nor merges into a
  container's own profile, so the wrapper cannot weaken one.
* A profile without NOTIFY rules (after the above) is left alone: the file is not written.
* Anything the wrapper cannot do (unreadable or invalid ``config.json``, unknown
  ``io.sysgate.*`` annotation, no agent socket for a NOTIFY profile) raises
  :class:`BundleError`; the container must then not start.

The file is replaced atomically (a temporary file in the bundle, then ``rename``) with its
mode kept; every other key of the JSON is kept with its order.
"""
from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable

from ..errors import SysgateError

NOTIFY = "SCMP_ACT_NOTIFY"
ANNOTATION_PREFIX = "io.sysgate."
ANNOTATION_METADATA = "io.sysgate.metadata"
ANNOTATION_HANDLERS = "io.sysgate.handlers"
KNOWN_ANNOTATIONS = (ANNOTATION_METADATA, ANNOTATION_HANDLERS)


class BundleError(SysgateError):
    """The bundle cannot be connected to the agent; the container must not start."""


class AgentUnavailable(BundleError):
    """A NOTIFY profile names an agent socket nobody listens on."""


class Platform:
    """What the platform (the wrapper's own options) asks for every container.

    ``default_profile`` returns the default ``linux.seccomp`` object; it is called only for
    bundles without one."""

    def __init__(self, agent_socket: str, metadata: str = "", default_profile: Callable[[], dict] | None = None):
        self.agent_socket, self.metadata, self.default_profile = agent_socket, metadata, default_profile


def has_notify(seccomp: dict) -> bool:
    """Whether a ``linux.seccomp`` object notifies any syscall (so it needs a listener)."""
    if seccomp.get("defaultAction") == NOTIFY:
        return True
    rules = seccomp.get("syscalls") or []
    return any(isinstance(rule, dict) and rule.get("action") == NOTIFY for rule in rules)


def container_metadata(annotations: dict) -> list[str]:
    """The metadata parts chosen by the container's ``io.sysgate.*`` annotations."""
    parts = []
    for key in sorted(annotations):
        if key.startswith(ANNOTATION_PREFIX) and key not in KNOWN_ANNOTATIONS:
            raise BundleError(f"unknown annotation {key} (known: {', '.join(KNOWN_ANNOTATIONS)})")
    for key in KNOWN_ANNOTATIONS:
        value = annotations.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise BundleError(f"annotation {key} must be a string")
        if key == ANNOTATION_HANDLERS:
            if "\n" in value or "\r" in value:
                raise BundleError(f"annotation {key} must be one line (a comma-separated handler list)")
            value = f"handlers={value}"
        parts.append(value)
    return parts


def connect_config(config: dict, platform: Platform) -> bool:
    """Rewrite a parsed ``config.json`` in place; True when it changed."""
    linux = config.get("linux")
    if linux is None:
        linux = {}
    if not isinstance(linux, dict):
        raise BundleError('"linux" must be an object')
    annotations = config.get("annotations") or {}
    if not isinstance(annotations, dict):
        raise BundleError('"annotations" must be an object')
    extra = container_metadata(annotations)
    seccomp = linux.get("seccomp")
    changed = False
    if seccomp is None and platform.default_profile is not None:
        seccomp = platform.default_profile()
        linux["seccomp"] = seccomp
        config["linux"] = linux
        changed = True
    if seccomp is None:
        return False
    if not isinstance(seccomp, dict):
        raise BundleError('"linux.seccomp" must be an object')
    if not isinstance(seccomp.get("syscalls", []), (list, type(None))):
        raise BundleError('"linux.seccomp.syscalls" must be a list')
    if not has_notify(seccomp):
        return changed
    own = seccomp.get("listenerMetadata", "")
    if not isinstance(own, str):
        raise BundleError('"linux.seccomp.listenerMetadata" must be a string')
    metadata = "\n".join(part for part in (platform.metadata, own, *extra) if part)
    if metadata != own:
        seccomp["listenerMetadata"] = metadata
        changed = True
    if not seccomp.get("listenerPath"):
        seccomp["listenerPath"] = platform.agent_socket
        changed = True
    check_agent_socket(seccomp["listenerPath"])
    return changed


def check_agent_socket(path) -> None:
    """The agent must be listening there, or the container would start unsupervised or not at all."""
    if not isinstance(path, str):
        raise BundleError('"linux.seccomp.listenerPath" must be a string')
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise AgentUnavailable(f"agent socket {path}: {exc.strerror} (is sysgate agent running?)") from None
    if not stat.S_ISSOCK(mode):
        raise AgentUnavailable(f"agent socket {path} is not a socket")


def connect_bundle(bundle: str, platform: Platform, config_name: str = "config.json") -> bool:
    """Read ``bundle/config_name``, rewrite it if needed (atomically); True when it was rewritten."""
    path = os.path.join(bundle, config_name)
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
            mode = stat.S_IMODE(os.fstat(fh.fileno()).st_mode)
    except OSError as exc:
        raise BundleError(f"cannot read {path}: {exc.strerror}") from None
    try:
        config = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}: not a valid JSON config ({exc})") from None
    except RecursionError:
        raise BundleError(f"{path}: not a valid JSON config (nested too deeply)") from None
    if not isinstance(config, dict):
        raise BundleError(f"{path}: the config must be a JSON object")
    try:
        if not connect_config(config, platform):
            return False
    except AgentUnavailable:
        raise
    except BundleError as exc:
        raise BundleError(f"{path}: {exc}") from None
    write_atomically(path, json.dumps(config, ensure_ascii=False).encode("utf-8"), mode)
    return True


def write_atomically(path: str, data: bytes, mode: int) -> None:
    """A new file next to ``path`` (O_EXCL, never following a link), synced, then renamed over it."""
    tmp = f"{path}.sysgate-{os.getpid()}-{os.urandom(4).hex()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise BundleError(f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            os.fchmod(fh.fileno(), mode)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise BundleError(f"cannot write {path}: {exc.strerror}") from None
