"""What is known about the words a filter has tested, along the edges of the DAG.

A :class:`Fact` describes one operand (a word of seccomp_data, possibly masked):
an interval ``[lo, hi]``, a few excluded values, and bits known to be one or zero.
``Facts`` maps operands to facts. The simplifier uses them to decide tests in
advance (jump threading) and merges them with :func:`meet` where paths join.
"""
from __future__ import annotations

from collections import namedtuple

from .graph import MAX32, Test

MAX_EXCLUDED = 8

Operand = tuple[int, "int | None"]


class Fact(namedtuple("Fact", "lo hi excluded ones zeros", defaults=(0, MAX32, frozenset(), 0, 0))):
    """Interval ``lo..hi``, ``excluded`` values (a frozenset), bits known to be ``ones`` and ``zeros``.
    (A collections.namedtuple: typing.NamedTuple would import typing at start-up.)"""

    __slots__ = ()

    def outcome(self, op: str, k: int) -> bool | None:
        """The result of ``value OP k`` for every value this fact allows, else None."""
        if op == "jeq":
            if self.lo == self.hi == k:
                return True
            if k < self.lo or k > self.hi or k in self.excluded or k & self.zeros or ~k & self.ones:
                return False
        elif op == "jgt":
            if self.lo > k:
                return True
            if self.hi <= k:
                return False
        elif op == "jge":
            if self.lo >= k:
                return True
            if self.hi < k:
                return False
        else:  # jset
            if self.ones & k:
                return True
            if not k & ~self.zeros:
                return False
            if self.lo == self.hi:
                return bool(self.lo & k)
        return None

    def refine(self, op: str, k: int, result: bool) -> "Fact | None":
        """This fact plus ``(value OP k) == result``; None if that is impossible."""
        lo, hi, excluded, ones, zeros = self
        if op == "jeq":
            if result:
                lo, hi = max(lo, k), min(hi, k)
                ones, zeros = ones | k, zeros | (~k & MAX32)
            elif len(excluded) < MAX_EXCLUDED:
                excluded = excluded | {k}
        elif op == "jgt":
            lo, hi = (max(lo, k + 1), hi) if result else (lo, min(hi, k))
        elif op == "jge":
            lo, hi = (max(lo, k), hi) if result else (lo, min(hi, k - 1))
        elif result:
            if k & (k - 1) == 0:
                ones |= k
        else:
            zeros |= k
        while lo <= hi and lo in excluded:
            lo += 1
        while hi >= lo and hi in excluded:
            hi -= 1
        if lo > hi or ones & zeros:
            return None
        return Fact(lo, hi, frozenset(x for x in excluded if lo < x < hi), ones, zeros)

    def join(self, other: "Fact") -> "Fact":
        """The weakest fact implied by either (for merging paths)."""
        lo, hi = min(self.lo, other.lo), max(self.hi, other.hi)

        def ruled_out(fact: Fact, x: int) -> bool:
            return x < fact.lo or x > fact.hi or x in fact.excluded

        excluded = frozenset(x for x in self.excluded | other.excluded
                             if ruled_out(self, x) and ruled_out(other, x) and lo < x < hi)
        return Fact(lo, hi, excluded, self.ones & other.ones, self.zeros & other.zeros)


Facts = dict  # Operand -> Fact

UNKNOWN = Fact()


def outcome(facts: Facts, node: Test) -> bool | None:
    """The known result of ``node``'s comparison under ``facts``, else None."""
    fact = facts.get(node.operand)
    if fact is None and node.mask is not None:
        whole = facts.get((node.word, None))
        if whole is None:
            return None
        m = node.mask
        value = whole.lo & m if whole.lo == whole.hi else None
        fact = Fact(0, m, frozenset(), whole.ones & m, (whole.zeros | ~m) & MAX32)
        if value is not None:
            fact = Fact(value, value, frozenset(), value, ~value & MAX32)
    return None if fact is None else fact.outcome(node.op, node.k)


def refine(facts: Facts, node: Test, result: bool) -> Facts | None:
    """``facts`` plus the knowledge that ``node`` evaluated to ``result``."""
    fact = facts.get(node.operand, UNKNOWN).refine(node.op, node.k, result)
    if fact is None:
        return None
    new = dict(facts)
    new[node.operand] = fact
    return new


def meet(a: Facts | None, b: Facts) -> Facts:
    """Facts true on both of two joining paths (``a`` None: the first path)."""
    if a is None:
        return b
    if a is b:
        return a
    return {op: a[op] if a[op] is b[op] else a[op].join(b[op]) for op in a.keys() & b.keys()}
