"""Print a :class:`Policy` in the policy language; parsing the text gives back an
equivalent policy (the same ``decide()`` for every syscall and argument)."""
from __future__ import annotations

import errno
import json

from ..arch import syscalls
from .model import Action, And, Cmp, Expr, Not, Or, Policy


def format_policy(policy: Policy, *, header: str | None = None) -> str:
    """The policy as text. Arguments are written ``arg0``…``arg5`` (prefixed by
    ``u32()``/``u64()`` when the width differs from the signature's)."""
    lines = [f"# {line}".rstrip() for line in (header or "").splitlines()]
    lines.append(f"default: {action_text(policy.default)}")
    lines.append(f"arch: {', '.join(policy.arches)}")
    if policy.bad_arch != Action("kill_process"):
        lines.append(f"bad_arch: {action_text(policy.bad_arch)}")
    if policy.allow_x32:
        lines.append("allow_x32: true")
    if policy.flags:
        lines.append(f"flags: {', '.join(f.lower() for f in policy.flags)}")
    if policy.listener_path:
        lines.append(f"listener_path: {json.dumps(policy.listener_path)}")
    if policy.listener_metadata:
        lines.append(f"listener_metadata: {json.dumps(policy.listener_metadata)}")
    lines.append("")
    for rule in policy.rules:
        if rule.condition is None:
            lines.append(f"{rule.syscall}: {action_text(rule.action)}")
        else:
            cond = format_condition(rule.condition, rule.syscall)
            lines.append(f"{rule.syscall}: {cond} -> {action_text(rule.action)}")
    return "\n".join(lines) + "\n"


def action_text(action: Action) -> str:
    """``action`` in policy syntax, errno values by name (``errno(EPERM)``)."""
    if action.kind == "errno" and action.data in errno.errorcode:
        return f"errno({errno.errorcode[action.data]})"
    return str(action)


def format_condition(expr: Expr, syscall: str) -> str:
    if isinstance(expr, Cmp):
        arg = f"arg{expr.arg}"
        if expr.width != syscalls.arg_width(syscall, expr.arg):
            arg = f"u{expr.width}({arg})"
        if expr.op == "&==":
            return f"{arg} & {_number(expr.mask)} == {_number(expr.value)}"
        return f"{arg} {expr.op} {_number(expr.value)}"
    if isinstance(expr, Not):
        return f"!({format_condition(expr.item, syscall)})"
    if isinstance(expr, (And, Or)):
        if not expr.items:  # an empty And is true, an empty Or false: spell them as comparisons
            return "u64(arg0) & 0 == 0" if isinstance(expr, And) else "!(u64(arg0) & 0 == 0)"
        joiner = " && " if isinstance(expr, And) else " || "
        return joiner.join(f"({format_condition(i, syscall)})" for i in expr.items)
    raise TypeError(f"not a condition: {expr!r}")


def _number(value: int) -> str:
    return str(value) if value < 4096 else hex(value)
