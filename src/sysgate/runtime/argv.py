"""Command lines of ``sysgate-runc``: its own options first, then a runc/crun command line.

The runtime's command line is only *read* here (subcommand, bundle, log file), never
reordered: the wrapper execs the runtime with exactly the arguments it was given.
runc (urfave/cli) and crun (getopt) both accept ``--flag VALUE``, ``--flag=VALUE`` and,
for runc, single-dash long flags (``-root X``); the global flags come before the
subcommand and the subcommand's flags before the container id.
"""
from __future__ import annotations

from ..errors import SysgateError

#: the wrapper's own options (each takes a value); everything after them belongs to the runtime
WRAPPER_OPTIONS = {"--agent-socket": "agent_socket", "--runtime": "runtime",
                   "--policy": "policy", "--metadata": "metadata"}
DEFAULT_AGENT_SOCKET = "/run/sysgate-agent.sock"
DEFAULT_RUNTIME = "runc"

#: runc and crun global flags that take a value (all others are booleans: --debug, --systemd-cgroup)
GLOBAL_VALUE_FLAGS = frozenset({"root", "log", "log-format", "log-level", "criu", "rootless", "cgroup-manager"})
#: create/run flags that take a value (crun's ``--config/-f`` names the config file inside the bundle)
CREATE_VALUE_FLAGS = frozenset({"bundle", "b", "console-socket", "pid-file", "preserve-fds", "config", "f"})
CREATE_COMMANDS = frozenset({"create", "run"})


class UsageError(SysgateError):
    """The wrapper's own options are malformed."""


class WrapperOptions:
    """The wrapper's own options (plain classes here: the wrapper runs before every runtime call,
    so this module imports nothing slow)."""

    def __init__(self):
        self.agent_socket: str | None = None
        self.runtime: str = DEFAULT_RUNTIME
        self.policy: str | None = None
        self.metadata: str = ""


class RuntimeCall:
    """What the wrapper needs to know about one runtime invocation."""

    def __init__(self, argv: list[str]):
        self.argv = argv
        self.command: str | None = None
        self.globals: dict[str, str] = {}
        self.options: dict[str, str] = {}

    @property
    def creates(self) -> bool:
        return self.command in CREATE_COMMANDS

    @property
    def bundle(self) -> str:
        return self.options.get("bundle") or self.options.get("b") or "."

    @property
    def config_name(self) -> str:
        return self.options.get("config") or self.options.get("f") or "config.json"

    @property
    def log_file(self) -> str | None:
        return self.globals.get("log") or None

    @property
    def log_format(self) -> str:
        return self.globals.get("log-format", "text")


def split_wrapper_options(argv: list[str]) -> tuple[WrapperOptions, list[str]]:
    """The wrapper's leading options and the runtime's command line (``--`` ends the options)."""
    opts = WrapperOptions()
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            i += 1
            break
        name, eq, value = arg.partition("=")
        if name not in WRAPPER_OPTIONS:
            break
        if not eq:
            if i + 1 >= len(argv):
                raise UsageError(f"option {name} needs a value")
            value = argv[i + 1]
            i += 1
        if name in ("--agent-socket", "--runtime", "--policy") and not value:
            raise UsageError(f"option {name} needs a non-empty value")
        setattr(opts, WRAPPER_OPTIONS[name], value)
        i += 1
    return opts, argv[i:]


def _flag(arg: str) -> tuple[str, str | None] | None:
    """``--name=value`` / ``-name value`` -> (name, inline value or None); None for a non-flag."""
    if not arg.startswith("-") or arg in ("-", "--"):
        return None
    name, eq, value = arg.lstrip("-").partition("=")
    return name, (value if eq else None)


def _scan_flags(argv: list[str], start: int, value_flags: frozenset) -> tuple[dict[str, str], int]:
    """Flags from ``argv[start:]`` up to the first positional argument (its index is returned)."""
    found: dict[str, str] = {}
    i = start
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            return found, i + 1
        flag = _flag(arg)
        if flag is None:
            return found, i
        name, value = flag
        if value is None and name in value_flags:
            value = argv[i + 1] if i + 1 < len(argv) else ""
            i += 1
        found[name] = "" if value is None else value
        i += 1
    return found, i


def parse_runtime_argv(argv: list[str]) -> RuntimeCall:
    """The subcommand, global flags and (for create/run) the subcommand's flags of ``argv``."""
    call = RuntimeCall(list(argv))
    call.globals, i = _scan_flags(argv, 0, GLOBAL_VALUE_FLAGS)
    if i < len(argv):
        call.command = argv[i]
        if call.creates:
            call.options, _ = _scan_flags(argv, i + 1, CREATE_VALUE_FLAGS)
    return call
