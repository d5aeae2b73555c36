"""Policy -> decision DAG: the architecture check, then per architecture a
number dispatch whose leaves are the syscalls' rule chains.

Architectures that share an AUDIT_ARCH value share one dispatch: x86_64 and x32
both report ``AUDIT_ARCH_X86_64`` and x32 numbers carry ``__X32_SYSCALL_BIT``
(0x40000000). Unless the policy targets x32 ("x32" among the architectures, or
``allow_x32`` with x86_64), every number with that bit gets the ``bad_arch``
action, like any other foreign ABI.

``nr == -1`` (0xffffffff) is allowed on every architecture. The kernel shows the
filter -1 when a ptrace tracer cancels a syscall at syscall-entry (seccomp runs
after the tracer) and when a program calls ``syscall(-1)``; no syscall runs then,
so allowing it only keeps the tracer's result (or ``ENOSYS``) instead of killing
the tracee. libseccomp likewise exempts -1 from its x32 check; it then applies the
filter's default action to it, which we do not.
"""
from __future__ import annotations

from collections.abc import Callable

from ..arch import syscalls, table
from ..arch.numbers import arch_tables
from ..kernel import abi
from ..policy.model import ALLOW, Policy, Rule
from .args import ArgLayout, ConditionCompiler
from .dispatch import Range, build_tree, merge, ranges_from
from .program import CompileError
from .graph import MAX32, Graph, Node, Test, zero_path
from .simplify import simplify

NR_SKIP = MAX32  # nr == -1
#: Weight of an x32 syscall relative to an x86_64 one in their shared dispatch (x32 is rare).
X32_SHARE = 0.01
#: A gap this wide between syscall numbers ends a table's main block (ARM's private
#: syscalls at 0xf0000 are not a reason to expect the million numbers before them).
MAX_GAP = 256
#: A syscall whose argument checks take ``c`` instructions weighs ``CHECK_BASE**c`` times its
#: frequency, ``c`` at most MAX_CHECK_BOOST: a tree is only about log2(ranges) deep, and
#: several huge weights would push every other syscall down.
MAX_CHECK_BOOST = 6
#: 2 would lift such a syscall ``c`` levels, all its checks cost, at the expense of every other
#: number; 1.8 lifts it about 0.85 ``c`` levels. Measured on podman's and Docker's default
#: profiles (x86_64 + i386 + x32, uniform mean over the x86_64 numbers): 2 -> mean 8.265 and
#: 8.682, max 13 and 14; 1.8 -> 8.233 and 8.682, max 14 and 14; 1 (no lift) -> 8.227 and
#: 8.669 but max 16 (personality's checks on top of a deep leaf).
CHECK_BASE = 1.8


class ArchView:
    """One AUDIT_ARCH value and the architectures dispatched under it."""

    __slots__ = ("audit", "arches", "ranges", "root")

    def __init__(self, audit: int, arches: list[str]):
        self.audit, self.arches = audit, arches
        self.ranges: list[Range] = []
        self.root: Node | None = None


def resolver(arch: str) -> Callable[[str], int | None]:
    """The number of a syscall name on the canonical ``arch`` as seccomp sees it (x32 with its bit
    set), None if it has none there: a lookup in ``arch``'s table, fetched once (it runs for every
    rule)."""
    known, bit = arch_tables(arch)[1], table.get(arch).nr_bit

    def resolve(name: str) -> int | None:
        nr = known.get(name)
        if nr is None and name[:1].isdigit():
            nr = syscalls.resolve(arch, name)
        return nr if nr is None else nr | bit

    return resolve


def table_numbers(arch: str) -> set[int]:
    """Every syscall number of ``arch`` (x32 with its bit set)."""
    bit = table.get(arch).nr_bit
    return {nr | bit for nr in syscalls.table(arch).values()}


def canonical_arches(arches: list[str]) -> list[str]:
    out: list[str] = []
    for name in arches:
        try:
            arch = abi.canonical_arch(name)
        except ValueError as exc:
            raise CompileError(str(exc)) from None
        if arch not in out:
            out.append(arch)
    if not out:
        raise CompileError("no architecture to compile for")
    return out


class Lowering:
    """Builds the whole decision DAG for ``policy`` on ``arches``."""

    def __init__(self, policy: Policy, arches: list[str], frequencies: dict[str, float] | None = None):
        self.policy = policy
        self.arches = table.with_x32(canonical_arches(arches), policy.allow_x32)
        self.frequencies = frequencies
        self.graph = Graph()
        self.views = self._views()

    def _views(self) -> list[ArchView]:
        views: dict[int, ArchView] = {}
        for arch in self.arches:
            audit = abi.AUDIT_ARCH[arch]
            views.setdefault(audit, ArchView(audit, [])).arches.append(arch)
        return list(views.values())

    # --- per-syscall chains ------------------------------------------------------
    def _outcomes(self, arch: str) -> dict[int, Node]:
        """Number -> decision node for every syscall of ``arch`` with rules, its argument checks
        simplified (:mod:`.simplify`; the rest of the DAG never needs it: the arch checks and
        the dispatch test each number once and read no argument)."""
        g = self.graph
        conditions = ConditionCompiler(g, ArgLayout(arch))
        by_nr: dict[int, list[Rule]] = {}
        resolve = resolver(arch)
        for rule in self.policy.rules:
            nr = resolve(rule.syscall)
            if nr is not None:
                by_nr.setdefault(nr, []).append(rule)
        outcomes = {}
        default = g.ret(self.policy.default.ret())
        rets: dict[int, Node] = {}  # id(action) -> its return (Action.ret() is not free)
        for nr, rules in by_nr.items():
            node = default
            for rule in reversed(rules):
                action = rets.get(id(rule.action))
                if action is None:
                    action = rets[id(rule.action)] = g.ret(rule.action.ret())
                node = action if rule.condition is None else conditions.condition(rule.condition, action, node)
            outcomes[nr] = node
        checks = list({id(node): node for node in outcomes.values() if isinstance(node, Test)}.values())
        simple = dict(zip(map(id, checks), simplify(checks, g)))
        return {nr: simple.get(id(node), node) for nr, node in outcomes.items()}

    def _weights(self, arch: str) -> dict[int, float]:
        """Expected frequency per number: ``frequencies`` by name, or else every number of the
        table's main block (up to the first gap wider than :data:`MAX_GAP`) and the one after
        it alike, holes included (a program built for a newer kernel probes those), plus each
        syscall beyond; x32 next to x86_64 counts for :data:`X32_SHARE`."""
        host = table.sharing(table.get(arch).audit)[0]
        share = X32_SHARE if table.get(arch).nr_bit and host.name in self.arches else 1.0
        if self.frequencies is None:
            numbers = sorted(table_numbers(arch))
            end = next((a for a, b in zip(numbers, numbers[1:]) if b - a > MAX_GAP), numbers[-1])
            return {nr: share for nr in [*range(numbers[0], end + 2), *numbers]}
        weights: dict[int, float] = {}
        resolve = resolver(arch)
        for name, weight in self.frequencies.items():
            nr = resolve(name)
            if nr is not None and weight > 0:
                weights[nr] = weights.get(nr, 0.0) + float(weight) * share
        return weights

    # --- dispatch ---------------------------------------------------------------
    def _span(self, arch: str | None, low: int, high: int, bad: Node) -> list[Range]:
        """Ranges for ``low..high``: ``arch``'s rules, or ``bad`` throughout when None. A syscall
        whose argument checks take ``c`` instructions (with zero arguments) weighs
        ``CHECK_BASE**c`` times its frequency: a weight-balanced tree puts a range of weight ``w``
        about ``log2(W/w)`` levels deep, so its whole path, tree and checks, stays about as
        short as the others'."""
        if arch is None:
            return [Range(low, high, bad, 1e-6)]
        default = self.graph.ret(self.policy.default.ret())
        ranges = ranges_from(self._outcomes(arch), default, self._weights(arch), low, high)
        for r in ranges:
            if isinstance(r.node, Test):  # argument checks follow: reach them sooner
                r.weight *= CHECK_BASE ** min(zero_path(r.node, abi.OFFSET_NR), MAX_CHECK_BOOST)
        return ranges

    def _view_ranges(self, view: ArchView, bad: Node) -> list[Range]:
        """The ranges of ``view``'s dispatch. Under AUDIT_ARCH_X86_64 the x32 numbers (those with
        ``__X32_SYSCALL_BIT``) are one more range of the native dispatch: ``bad`` when x32 is not a
        target, else a sub-tree of their own, planned apart (x32 calls are rare, so the tree
        reaches them through one test at a low level anyway, and two small plans are much
        cheaper to compute than one big one)."""
        allow = self.graph.ret(ALLOW.ret())
        skip = [Range(NR_SKIP, NR_SKIP, allow, 1e-6)]
        shared = table.sharing(view.audit)
        if len(shared) == 1:
            (arch,) = view.arches
            return merge([self._span(arch, 0, NR_SKIP - 1, bad), skip])
        host, rider = shared           # the table has one such pair: x86_64 and x32
        native = self._span(host.name if host.name in view.arches else None, 0, rider.nr_bit - 1, bad)
        x32 = self._span(rider.name if rider.name in view.arches else None, rider.nr_bit, NR_SKIP - 1, bad)
        if len(x32) > 1:
            weight = sum(r.weight for r in x32)
            # instructions cost as much as in the view's whole tree: x32 code stays small
            tree = build_tree(self.graph, x32, abi.OFFSET_NR, weight + sum(r.weight for r in native))
            x32 = [Range(rider.nr_bit, NR_SKIP - 1, tree, weight)]
        return merge([native, x32, skip])

    def build(self) -> Node:
        g = self.graph
        bad = g.ret(self.policy.bad_arch.ret())
        for view in self.views:
            view.ranges = self._view_ranges(view, bad)
            view.root = build_tree(g, view.ranges, abi.OFFSET_NR)
        node: Node = bad
        for view in reversed(self.views):
            node = g.test(abi.OFFSET_ARCH, "jeq", view.audit, view.root, node)
        return node

