"""The policy model: what a parsed policy *means*, independent of any syntax.

The text parser and the OCI/Docker importers produce a :class:`Policy`; the
compiler turns one into BPF. Semantics:

* rules are tried in source order; for a syscall, the first rule whose
  condition holds decides; if none holds, ``Policy.default`` decides;
* comparisons are unsigned on the argument's width (64 bits, or the low
  32 bits for ``width=32``); constants are stored already masked to the width;
* ``Cmp(op="&==", mask=M, value=V)`` means ``(arg & M) == V``.
"""
from __future__ import annotations

from ..kernel import abi
from ..records import Record, factory

# Records, not dataclasses (sysgate.records: start-up time); sysgate.records.replace is dataclasses.replace.

ACTION_KINDS = ("allow", "errno", "kill_thread", "kill_process", "trap", "log", "notify", "trace")


class Action(Record):
    """A filter verdict. ``data`` is the errno / trace / trap value; ``handler`` names the
    supervisor handler for ``notify`` (e.g. ``notify(fs)``)."""

    kind: str
    data: int = 0
    handler: str | None = None

    def __post_init__(self):
        if self.kind not in ACTION_KINDS:
            raise ValueError(f"unknown action {self.kind!r}")
        if not 0 <= self.data <= 0xFFFF:
            raise ValueError(f"action data {self.data} out of range 0..65535")

    def ret(self) -> int:
        """The SECCOMP_RET_* value this action compiles to."""
        base = {
            "allow": abi.SECCOMP_RET_ALLOW, "errno": abi.SECCOMP_RET_ERRNO,
            "kill_thread": abi.SECCOMP_RET_KILL_THREAD, "kill_process": abi.SECCOMP_RET_KILL_PROCESS,
            "trap": abi.SECCOMP_RET_TRAP, "log": abi.SECCOMP_RET_LOG,
            "notify": abi.SECCOMP_RET_USER_NOTIF, "trace": abi.SECCOMP_RET_TRACE,
        }[self.kind]
        return base | self.data

    def __str__(self) -> str:
        if self.kind == "notify" and self.handler:
            return f"notify({self.handler})"
        if self.kind in ("errno", "trace") or (self.kind == "trap" and self.data):
            return f"{self.kind}({self.data})"
        return self.kind


ALLOW = Action("allow")
KILL_PROCESS = Action("kill_process")


class Cmp(Record):
    """Compare syscall argument ``arg`` (0..5) with ``value``. ``op`` is one of
    ``== != < <= > >=`` or ``&==`` (masked equality with ``mask``)."""

    arg: int
    op: str
    value: int
    mask: int | None = None
    width: int = 64

    OPS = ("==", "!=", "<", "<=", ">", ">=", "&==")

    def __post_init__(self):
        if not 0 <= self.arg <= 5:
            raise ValueError(f"argument index {self.arg} out of range 0..5")
        if self.op not in self.OPS:
            raise ValueError(f"unknown comparison {self.op!r}")
        if self.width not in (32, 64):
            raise ValueError("width must be 32 or 64")
        limit = (1 << self.width) - 1
        object.__setattr__(self, "value", self.value & limit)
        if self.mask is not None:
            object.__setattr__(self, "mask", self.mask & limit)
        if (self.op == "&==") != (self.mask is not None):
            raise ValueError("mask goes with op '&==' and only with it")

    def evaluate(self, args: tuple[int, ...]) -> bool:
        a = args[self.arg] & ((1 << self.width) - 1)
        v = self.value
        if self.op == "&==":
            return (a & self.mask) == v
        return {"==": a == v, "!=": a != v, "<": a < v, "<=": a <= v, ">": a > v, ">=": a >= v}[self.op]


class And(Record):
    items: tuple["Expr", ...]

    def evaluate(self, args) -> bool:
        return all(i.evaluate(args) for i in self.items)


class Or(Record):
    items: tuple["Expr", ...]

    def evaluate(self, args) -> bool:
        return any(i.evaluate(args) for i in self.items)


class Not(Record):
    item: "Expr"

    def evaluate(self, args) -> bool:
        return not self.item.evaluate(args)


Expr = Cmp | And | Or | Not


class Rule(Record):
    """``syscall: condition -> action``; ``condition`` None means always."""

    syscall: str
    action: Action
    condition: Expr | None = None
    source: tuple[str, int] | None = None  # (file, line) for error messages and explain


class Policy(Record, frozen=False):
    """A whole policy for one or more architectures."""

    default: Action = KILL_PROCESS
    arches: list[str] = factory(lambda: [abi.native_arch()])
    rules: list[Rule] = factory(list)
    #: action for a syscall of an arch not in ``arches`` (checked before anything else)
    bad_arch: Action = KILL_PROCESS
    #: allow x32 syscall numbers on x86_64 (normally rejected; implied if "x32" in arches)
    allow_x32: bool = False
    name: str = "policy"
    #: filter flags to install with, short names of ``abi.FILTER_FLAGS`` (e.g. "LOG", "SPEC_ALLOW")
    flags: list[str] = factory(list)
    #: OCI ``listenerPath`` / ``listenerMetadata``: where a runtime sends the notify fd
    listener_path: str | None = None
    listener_metadata: str | None = None
    #: parts of the secure base (``fs``, ``net``: :mod:`sysgate.sandbox.base`) under the rules
    sandbox: list[str] = factory(list)
    #: non-fatal diagnostics from the parser/importer ("file:line:col: message"); not compared
    warnings: list[str] = factory(list)

    _uncompared = ("warnings",)

    def decide(self, syscall: str, args: tuple[int, ...] = (0,) * 6) -> tuple[Action, Rule | None]:
        """The reference semantics: the action for ``syscall(args)`` and the rule that chose it."""
        for rule in self.rules:
            if rule.syscall == syscall and (rule.condition is None or rule.condition.evaluate(args)):
                return rule.action, rule
        return self.default, None

    def handler_routes(self) -> dict[str, list[str]]:
        """syscall -> the handler names of its ``notify(NAME)`` rules, in rule order."""
        routes: dict[str, list[str]] = {}
        for rule in self.rules:
            if rule.action.kind == "notify" and rule.action.handler:
                names = routes.setdefault(rule.syscall, [])
                if rule.action.handler not in names:
                    names.append(rule.action.handler)
        return routes

    def syscalls(self) -> list[str]:
        """Syscall names with rules, in first-appearance order."""
        return list(dict.fromkeys(r.syscall for r in self.rules))
