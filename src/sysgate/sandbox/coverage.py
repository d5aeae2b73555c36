"""Warnings for a policy whose ``fs``/``net`` rules can be walked around (issue 11).

A policy that sends ``openat`` to ``notify(fs)`` but lets ``open``, ``openat2`` or i386's
``fstatat64`` run in the kernel checks paths only for programs that cooperate; one that
checks paths but lets ``chroot``, ``mount``, ``unshare(CLONE_NEWNS)`` or io_uring run lets
the program change what a checked path names, or open files with no syscall at all. The
same holds for a policy routing ``connect`` to ``notify(net)`` but not ``sendto``,
``sendmsg``, ``sendmmsg`` or i386's ``socketcall``.

Only policies that route something to ``fs`` or ``net`` are judged: a policy without them
makes no path or peer promise. A policy with the secure base (:mod:`.base`) has nothing to
warn about. "Left to the kernel" means some rule or the default lets the call run without
the handler (anything but a refusal or ``notify(HANDLER)``).
"""
from __future__ import annotations

from ..policy import constants
from ..policy.model import Action, Policy
from . import surface
from .base import enabled_arches, is_refusal, present

#: How many names a warning shows before "and N more".
SHOWN = 5


def coverage_warnings(policy: Policy) -> list[str]:
    """Why ``policy``'s fs/net routes do not confine the program (empty when they do)."""
    arches = enabled_arches(policy)
    out = []
    fs = _routed(policy, "fs", surface.path_syscalls(), arches)
    if fs:
        leaked = _left(policy, "fs", _candidates("fs", surface.PATH_FAMILIES + surface.FD_FAMILIES, fs), arches)
        if leaked:
            out.append(f"routes {_names(fs)} to notify(fs) but leaves {_names(leaked)} to the kernel: "
                       f"their paths are not checked")
    net = _routed(policy, "net", surface.peer_syscalls(), arches)
    if net:
        leaked = _left(policy, "net", _candidates("net", surface.PEER_FAMILIES, net), arches)
        if leaked:
            out.append(f"routes {_names(net)} to notify(net) but leaves {_names(leaked)} to the kernel: "
                       f"their peers are not checked")
    if fs or net:
        uring = [s for s in surface.IO_URING if present(s, arches) and _lets_run(policy, s)]
        if uring:
            out.append(f"lets {_names(uring)} run next to fs/net rules: io_uring opens, connects and sends "
                       f"in kernel workers that seccomp never sees")
        views = [s for s in surface.VIEW_CHANGES if present(s, arches) and _lets_run(policy, s)]
        views += _namespace_calls(policy, arches)
        if views:
            out.append(f"lets {_names(views)} run next to fs/net rules: they change what a checked path names")
    return out


def warnings_line(policy: Policy) -> str:
    """:func:`coverage_warnings` as one sentence (for ``sysgate run``'s one-line refusal)."""
    return "; ".join(coverage_warnings(policy))


def _routed(policy: Policy, handler: str, universe, arches) -> list[str]:
    """Syscalls of ``universe`` that some rule of ``policy`` sends to ``handler``."""
    route = Action("notify", handler=handler)
    routed = {r.syscall for r in policy.rules if r.action == route}
    return [s for s in dict.fromkeys(universe) if s in routed and present(s, arches)]


def _candidates(handler: str, families, routed) -> list[str]:
    """What should go to ``handler`` too: the rest of each routed family first, then every
    syscall the handler answers, then the other members of the families it answers."""
    from .surface import family_of, handler_syscalls

    answered = handler_syscalls(handler)
    first = [s for r in routed for s in (family_of(r, families) or ())]
    rest = [member for name in answered for member in (family_of(name, families) or (name,))]
    return list(dict.fromkeys([*first, *answered, *rest]))


def _left(policy: Policy, handler: str, candidates, arches) -> list[str]:
    route = Action("notify", handler=handler)
    return [s for s in candidates if present(s, arches)
            and any(not is_refusal(a) and a != route for a in _outcomes(policy, s))]


def _outcomes(policy: Policy, syscall: str) -> list[Action]:
    """Every action a call of ``syscall`` can get: its rules up to the first unconditional
    one, else the default too (conditions are assumed satisfiable)."""
    actions = []
    for rule in policy.rules:
        if rule.syscall == syscall:
            actions.append(rule.action)
            if rule.condition is None:
                return actions
    return [*actions, policy.default]


def _lets_run(policy: Policy, syscall: str) -> bool:
    return any(not is_refusal(a) for a in _outcomes(policy, syscall))


def _namespace_calls(policy: Policy, arches) -> list[str]:
    """``unshare(CLONE_NEWNS)``, ``clone(CLONE_NEWUSER|CLONE_NEWNS)``, ``clone3`` when the
    policy's own semantics (:meth:`Policy.decide`) let them run."""
    out = []
    ns = constants.lookup("CLONE_NEWNS") | constants.lookup("CLONE_NEWUSER")
    for syscall, text in (("unshare", "unshare(CLONE_NEWNS)"), ("clone", "clone(CLONE_NEWUSER|CLONE_NEWNS)")):
        if present(syscall, arches):
            args = (ns, 0, 0, 0, 0, 0) if syscall == "unshare" else _clone_args(ns, arches)
            if not is_refusal(policy.decide(syscall, args)[0]):
                out.append(text)
    if present("clone3", arches) and _lets_run(policy, "clone3"):
        out.append("clone3")
    return out


def _clone_args(flags: int, arches) -> tuple[int, ...]:
    from ..arch import syscalls

    index = syscalls.arg_index("clone", "flags", present("clone", arches)[0])
    return tuple(flags if i == index else 0 for i in range(6))


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN])
    return shown + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")
