"""The secure base: what ``sysgate run --sandbox`` (or ``sandbox: fs, net`` in a policy) puts
under a policy so that its ``fs``/``net`` rules cannot be walked around.

Parts:

``fs``   every syscall the fs handler answers goes to ``notify(fs)`` (its compat names on
         every enabled architecture too); a path syscall of the same operation that the
         handler does not answer (i386's ``fstatat64`` next to ``newfstatat``), and every
         other path syscall except exec and chdir, is refused with ``EPERM``. Refused
         always: view changes (mounts, roots, namespaces, file handles), io_uring, reaching
         other processes (ptrace, process_vm_*, pidfd_getfd), typing into the terminal
         (TIOCSTI, TIOCLINUX); ``clone3`` gets ``ENOSYS`` (its flags are in memory, where
         seccomp cannot look, so libc falls back to ``clone``, whose namespace flags are
         refused).
``net``  every peer-naming syscall the net handler answers goes to ``notify(net)``; one it
         does not answer (``sendmmsg``, i386 ``socketcall``) is refused; so are packet and
         raw IP sockets (they send to any peer with ``write``).

Precedence (the base only ever narrows the policy):

1. the base's refusals come first: no rule of the policy can allow ``chroot``;
2. for a routed syscall, the policy's refusals (``errno``, ``kill``, ``trap``) and its
   rules routing to the same handler stay in place, in order;
3. every other outcome the policy gives a routed syscall (``allow``, ``log``, ``trace``,
   ``notify`` to another handler or to none), including its default, becomes the route:
   what the policy lets run, the handler decides; what it refuses stays refused.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..arch import syscalls, table
from ..errors import SysgateError
from ..policy import constants
from ..policy.model import Action, And, Cmp, Not, Or, Policy, Rule
from ..records import replace
from . import surface

PARTS = ("fs", "net")
SOURCE = ("<sandbox>", 0)
EPERM = Action("errno", constants.lookup("EPERM"))
ENOSYS = Action("errno", constants.lookup("ENOSYS"))
REFUSING = ("errno", "kill_thread", "kill_process", "trap")


@dataclass
class Base:
    """The base for some parts on some architectures, before it meets a policy."""

    parts: tuple[str, ...]
    arches: list[str]
    refusals: list[Rule] = field(default_factory=list)
    routes: dict[str, str] = field(default_factory=dict)             # syscall -> handler
    unanswered: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # handler -> syscall -> arches
    left: list[str] = field(default_factory=list)                     # path syscalls left to the policy
    weak: list[str] = field(default_factory=list)                     # routed, but checked then CONTINUEd

    def notice(self) -> str | None:
        """One line naming what the handlers do not answer and the base therefore refuses."""
        pieces = []
        for handler, missing in self.unanswered.items():
            if missing:
                names = [name if len(where) == len(self.arches) else f"{name} ({'/'.join(where)})"
                         for name, where in missing.items()]
                pieces.append(f"refused (EPERM), the {handler} handler does not answer them: {_few(names)}")
        if self.left:
            pieces.append(f"left to the kernel, the fs handler does not answer them: {', '.join(self.left)}")
        if self.weak:
            pieces.append(f"checked, then run by CONTINUE, so a thread racing the checked memory can get past "
                          f"the check (exec limits under Landlock, --no-exec-after-start/--allow-exec, are the "
                          f"kernel's guard): {', '.join(self.weak)}")
        return "sandbox: " + "; ".join(pieces) if pieces else None


def _few(names: list[str], shown: int = 8) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def default_policy() -> Policy:
    """What ``sysgate run --sandbox`` puts the base under when no policy is given: allow
    everything else, on the native architecture and the compat ABIs whose calls the handlers
    decode (its ``same_flags``; x32 stays off unless asked)."""
    from ..kernel import abi

    native = abi.native_arch()
    compat = [c for c in table.get(native).same_flags if not table.get(c).nr_bit]
    return Policy(default=Action("allow"), arches=[native, *compat], name="sandbox")


def is_refusal(action: Action) -> bool:
    return action.kind in REFUSING


def enabled_arches(policy: Policy) -> list[str]:
    """The architectures whose numbers ``policy``'s filter lets through (x32 when asked)."""
    arches = table.with_x32(list(dict.fromkeys(policy.arches)), policy.allow_x32)
    return [a for a in arches if a in syscalls.arches()]


def present(name: str, arches: list[str]) -> list[str]:
    """The arches among ``arches`` where syscall ``name`` exists."""
    return [a for a in arches if syscalls.number(a, name) is not None]


def build_base(arches: list[str], parts) -> Base:
    """The base for ``parts`` (``fs``, ``net``) on ``arches``; the handlers' syscall lists
    are read now (:func:`surface.handler_syscalls`)."""
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise SysgateError(f"unknown sandbox part(s) {', '.join(sorted(unknown))} (known: {', '.join(PARTS)})")
    parts = tuple(p for p in PARTS if p in set(parts))
    base = Base(parts, list(arches))
    if "fs" in parts:
        _families(base, "fs", surface.PATH_FAMILIES + surface.FD_FAMILIES, essential=surface.ESSENTIAL)
        _fs_refusals(base)
    if "net" in parts:
        _families(base, "net", surface.PEER_FAMILIES)
        _net_refusals(base)
    refused = {r.syscall for r in base.refusals if r.condition is None}
    base.routes = {s: h for s, h in base.routes.items() if s not in refused}   # e.g. fs answering chroot
    return base


def _families(base: Base, handler: str, families, *, essential=frozenset()) -> None:
    """Route what ``handler`` answers; refuse the rest of each family (whole families it does
    not answer at all too, unless ``essential`` or fd-based)."""
    answered, weak = surface.handler_facts(handler)
    answered = set(answered)
    base.weak += [name for name in weak if present(name, base.arches)]
    missing = base.unanswered.setdefault(handler, {})
    for family in families:
        covered = answered.intersection(family)
        fd_based = family in surface.FD_FAMILIES
        for name in family:
            where = present(name, base.arches)
            if not where:
                continue
            if name in answered:
                base.routes[name] = handler
            elif covered or not (fd_based or name in essential):
                missing[name] = where
                base.refusals.append(Rule(name, EPERM, None, SOURCE))
            elif name in essential:
                base.left.append(name)
    for name in sorted(answered - set(base.routes)):      # answered calls outside the known families
        if present(name, base.arches):
            base.routes[name] = handler


def _any_bit(arg: int, mask: int) -> Not:
    """``arg & mask != 0`` on the low 32 bits (the kernel reads these flags as 32-bit)."""
    return Not(Cmp(arg, "&==", 0, mask=mask, width=32))


def _flags_index(syscall: str, arches: list[str]) -> int | None:
    """The position of ``syscall``'s ``flags`` argument, the same on every one of ``arches``."""
    where = present(syscall, arches)
    positions = {syscalls.arg_index(syscall, "flags", a) for a in where}
    if len(positions) > 1:
        raise SysgateError(f"sandbox: {syscall}'s flags are at different positions on {', '.join(where)}; "
                           f"filter these architectures with separate policies")
    return positions.pop() if positions else None


def _refuse(base: Base, names, action: Action = EPERM, condition=None) -> None:
    for name in names:
        if present(name, base.arches):
            base.refusals.append(Rule(name, action, condition, SOURCE))


def _fs_refusals(base: Base) -> None:
    _refuse(base, surface.VIEW_CHANGES)
    _refuse(base, surface.IO_URING)
    _refuse(base, surface.OTHER_PROCESS)
    _refuse(base, ["clone3"], ENOSYS)
    index = _flags_index("clone", base.arches)
    if index is not None:
        _refuse(base, ["clone"], EPERM, _any_bit(index, surface.NAMESPACE_FLAGS))
    index = _flags_index("unshare", base.arches)
    if index is not None:
        _refuse(base, ["unshare"], EPERM, _any_bit(index, ~surface.UNSHARE_HARMLESS & 0xFFFFFFFF))
    requests = [Cmp(1, "==", constants.lookup(name), width=32) for name in surface.TERMINAL_INJECTION]
    _refuse(base, ["ioctl"], EPERM, Or(tuple(requests)))


def _net_refusals(base: Base) -> None:
    def eq(arg, name):
        return Cmp(arg, "==", constants.lookup(name), width=32)

    def sock_type(name):
        return Cmp(1, "&==", constants.lookup(name), mask=0xF, width=32)

    raw = And((Or((sock_type("SOCK_RAW"), sock_type("SOCK_PACKET"))), Not(eq(0, "AF_NETLINK"))))
    _refuse(base, ["socket"], EPERM, Or((eq(0, "AF_PACKET"), raw)))


def apply_base(policy: Policy, parts=()) -> Policy:
    """``policy`` with the base for ``parts`` (plus those it already has, ``policy.sandbox``)
    under it, by the precedence in this module's docstring. Applying twice is harmless: the
    base's own rules are recognised by their source and rebuilt."""
    wanted = tuple(p for p in PARTS if p in {*policy.sandbox, *parts})
    base = build_base(enabled_arches(policy), wanted)
    own = [r for r in policy.rules if r.source != SOURCE]
    rules = list(base.refusals)
    decided: set[str] = set()
    for rule in own:
        handler = base.routes.get(rule.syscall)
        if handler is not None and not is_refusal(rule.action) and rule.action != _route(handler):
            rule = replace(rule, action=_route(handler))
        if rule.condition is None:
            decided.add(rule.syscall)
        rules.append(rule)
    if not is_refusal(policy.default):
        rules += [Rule(s, _route(h), None, SOURCE) for s, h in base.routes.items() if s not in decided]
    return replace(policy, rules=rules, sandbox=list(wanted), warnings=list(policy.warnings))


def _route(handler: str) -> Action:
    return Action("notify", handler=handler)


def notice(policy: Policy) -> str | None:
    """The base's one-line notice for a policy it was applied to (None without a base)."""
    if not policy.sandbox:
        return None
    return build_base(enabled_arches(policy), policy.sandbox).notice()
