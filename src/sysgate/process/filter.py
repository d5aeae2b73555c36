"""Stored ("detached") filters: compile once, attach to any number of later processes.

A :class:`Filter` is a compiled program plus its install flags and metadata. Every
process launched from it (:meth:`Filter.spawn`) gets the same filter, and its
``Target`` carries the filter's ``group`` so a supervisor can give all of them the
same handlers and shared state — "attach a new process to a running container".
Filters are saved as a small JSON document (:meth:`save` / :meth:`load`). A filter
compiled from a policy with ``notify(NAME)`` rules also stores its routes (``metadata``
``"handlers"``: syscall -> handler names) and the policy's text (``"policy"``), so a loaded
filter routes its notifications to the same handlers (:meth:`handler_policy`).
"""
from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field

from ..files import read_text
from ..errors import SysgateError
from ..kernel import abi
from .install import compile_for, filter_flags, install, notifies, policy_flag_options, program_bytes
from .launch import spawn

FORMAT = "sysgate-filter"
VERSION = 1


@dataclass(eq=False)
class Filter:
    """A compiled filter ready to install or launch with.

    ``program`` is packed BPF; ``arches`` the architectures it was compiled for;
    ``flags`` the install options (``log``, ``spec_allow``, ``wait_killable_recv``);
    ``group`` identifies the supervised group its targets join; ``metadata`` is JSON-able
    data for the supervisor (the handler routes, see :meth:`handler_policy`).
    """

    program: bytes
    arches: list[str] = field(default_factory=lambda: [abi.native_arch()])
    flags: dict[str, bool] = field(default_factory=dict)
    name: str = "filter"
    group: str = ""
    metadata: dict = field(default_factory=dict)
    policy: object | None = None

    FLAG_NAMES = ("log", "spec_allow", "wait_killable_recv")

    def __post_init__(self):
        self.program = program_bytes(self.program)
        unknown = set(self.flags) - set(self.FLAG_NAMES)
        if unknown:
            raise SysgateError(f"unknown filter flag(s) {', '.join(sorted(unknown))}; "
                               f"known: {', '.join(self.FLAG_NAMES)}")
        if not self.group:
            self.group = f"{self.name}-{os.urandom(6).hex()}"   # 12 random hex digits (uuid imports platform)

    @classmethod
    def from_policy(cls, policy, *, arches: list[str] | None = None, group: str = "", program: bytes | None = None,
                    **flags) -> "Filter":
        """Compile ``policy`` (for ``arches``, default the policy's own) into a stored filter;
        ``program``: its already compiled bytes (e.g. with call frequencies, or for another byte order)."""
        arches = list(arches or policy.arches)
        program = compile_for(policy, arches) if program is None else program
        for name in policy_flag_options(policy):
            if name in cls.FLAG_NAMES:   # tsync/new_listener are decided per launch
                flags.setdefault(name, True)
        return cls(program, arches, flags, getattr(policy, "name", "policy"), group, handler_metadata(policy),
                   policy=policy)

    @classmethod
    def from_program(cls, program, *, arches: list[str] | None = None, name: str = "filter",
                     group: str = "", **flags) -> "Filter":
        """Wrap an already compiled program (``Program``, ``list[Insn]`` or bytes)."""
        return cls(program, list(arches or [abi.native_arch()]), flags, name, group)

    @property
    def notifies(self) -> bool:
        """True when the program can return USER_NOTIF (its targets then get a listener)."""
        return notifies(self.program)

    def handler_names(self) -> list[str]:
        """The handlers this filter's ``notify(NAME)`` rules name (sorted; empty when none)."""
        routes = self.policy.handler_routes() if self.policy is not None else self.metadata.get("handlers") or {}
        return sorted({name for names in routes.values() for name in names})

    def handler_policy(self):
        """The policy whose ``notify(NAME)`` rules route this filter's notifications to
        handlers (None when it names no handler); for a loaded filter, parsed from its
        stored text. SysgateError when the routes are stored without the policy."""
        names = self.handler_names()
        if not names:
            return None
        if self.policy is None:
            text = self.metadata.get("policy")
            if not isinstance(text, str):
                raise SysgateError(f"filter {self.name!r} sends syscalls to handler(s) {', '.join(names)} but does "
                                   f"not store the policy that routes them: compile it again from its policy")
            from ..policy.parser import parse_policy

            self.policy = parse_policy(text, f"<stored filter {self.name}>")
        return self.policy

    def kernel_flags(self, *, new_listener: bool | None = None) -> int:
        """The SECCOMP_FILTER_FLAG_* bits to install this filter with."""
        listener = self.notifies if new_listener is None else new_listener
        return filter_flags(new_listener=listener, **self.flags)

    def spawn(self, argv, **options):
        """:func:`sysgate.process.launch.spawn` of ``argv`` under this filter (``options`` as there).

        The returned ``Target`` has ``group`` = this filter's group and ``filter`` = self.
        """
        return spawn(argv, self, **options)

    def install(self, **options):
        """Install this filter on the calling process (see :func:`sysgate.process.install.install`)."""
        merged = {**self.flags, **options}
        merged.setdefault("new_listener", self.notifies)
        return install(self.program, **merged)

    # --- storage ---------------------------------------------------------------
    def to_json(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "name": self.name, "group": self.group,
                "arches": self.arches, "flags": self.flags, "metadata": self.metadata,
                "program": base64.b64encode(self.program).decode("ascii")}

    @classmethod
    def from_json(cls, doc: dict, source: str = "<filter>") -> "Filter":
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise SysgateError(f"{source}: not a stored sysgate filter (missing \"format\": \"{FORMAT}\")")
        if doc.get("version") != VERSION:
            raise SysgateError(f"{source}: stored filter version {doc.get('version')!r} is not supported "
                               f"(this sysgate reads version {VERSION})")
        arches = doc.get("arches") or [abi.native_arch()]
        if not isinstance(arches, list) or not all(isinstance(a, str) for a in arches):
            raise SysgateError(f"{source}: malformed stored filter: \"arches\" must be a list of names")
        try:
            arches = [abi.canonical_arch(a) for a in arches]
        except SysgateError as exc:
            raise SysgateError(f"{source}: malformed stored filter: {exc}") from None
        metadata = doc.get("metadata") or {}
        routes = metadata.get("handlers") if isinstance(metadata, dict) else None
        if not isinstance(metadata, dict) or not (routes is None or _is_routes(routes)):
            raise SysgateError(f"{source}: malformed stored filter: \"metadata\" must be an object whose "
                               f"\"handlers\" maps syscall names to lists of handler names")
        try:
            program = base64.b64decode(doc["program"], validate=True)
            return cls(program, arches, dict(doc.get("flags") or {}),
                       str(doc.get("name", "filter")), str(doc.get("group", "")), metadata)
        except (KeyError, ValueError, TypeError) as exc:
            raise SysgateError(f"{source}: malformed stored filter: {exc}") from None

    def save(self, path) -> None:
        """Write the filter as JSON to ``path``."""
        with open(path, "w") as f:
            json.dump(self.to_json(), f, indent=1)
            f.write("\n")

    @classmethod
    def load(cls, path) -> "Filter":
        """Read a filter written by :meth:`save`."""
        try:
            doc = json.loads(read_text(path, "stored sysgate filter"))
        except json.JSONDecodeError as exc:
            raise SysgateError(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None
        return cls.from_json(doc, str(path))


def _is_routes(routes) -> bool:
    """True for stored handler routes: {syscall: [handler name, ...]}."""
    return isinstance(routes, dict) and all(
        isinstance(names, list) and all(isinstance(n, str) for n in names) for names in routes.values())


def handler_metadata(policy) -> dict:
    """What a stored filter keeps to route ``policy``'s ``notify(NAME)`` rules after loading:
    the routes and the policy's text (its rules decide between several handlers of one syscall)."""
    routes = policy.handler_routes()
    if not routes:
        return {}
    from ..policy.printer import format_policy

    return {"handlers": routes, "policy": format_policy(policy)}
