"""Do two conditional rules of one syscall, with different actions, match a common call?

libseccomp orders such overlapping rules by its own criteria, not by the profile's order
(which sysgate keeps), so the OCI importer warns about them. A profile can have a hundred
thousand conditional entries: comparing every pair is quadratic. Rules are grouped instead
by their equality (or same-mask) test on the most tested argument — rules testing one
argument for different values cannot overlap — so the usual shape (many ``argN == value``
rules) is checked in about linear time; what grouping cannot split is compared pairwise,
within a work budget.

A rule here is ``(position, {arg index: Cmp}, action)``: an imported OCI rule has at most
one 64-bit comparison per argument, and its condition is their conjunction.
"""
from __future__ import annotations

from collections import Counter

from .model import Cmp

U64 = (1 << 64) - 1
_SMALL = 8          # compare groups this small pairwise
_MAX_SPLITS = 32    # nested splits before comparing pairwise


class TooComplex(Exception):
    """The budget ran out before the check could decide."""


def find_overlap(items: list, budget: int = 2_000_000) -> tuple[int, int] | None:
    """The positions of two ``items`` with different actions whose conditions can both hold,
    or None. Raises TooComplex after about ``budget`` steps."""
    return _Search(budget).find(items, 0)


class _Search:
    def __init__(self, budget: int):
        self.left = budget

    def spend(self, steps: int) -> None:
        self.left -= steps
        if self.left < 0:
            raise TooComplex

    def find(self, items: list, depth: int):
        if len(items) < 2 or len({it[2] for it in items}) < 2:
            return None
        self.spend(len(items))
        key = _split_key(items) if len(items) > _SMALL and depth < _MAX_SPLITS else None
        if key is None:
            return self.pairwise(items)
        arg, mask = key
        groups: dict[int, list] = {}
        rest = []
        for it in items:
            c = it[1].get(arg)
            if c is not None and _key_of(c) == key:
                groups.setdefault(c.value, []).append(it)
            else:
                rest.append(it)
        found = self.find(rest, depth + 1)
        if found:
            return found
        for group in groups.values():
            literal = group[0][1][arg]
            stripped = [(pos, {a: c for a, c in lits.items() if a != arg}, act) for pos, lits, act in group]
            found = self.find(stripped, depth + 1)
            if found:
                return found
            # pairs across the group and the rest: the rest's test on ``arg`` must admit some value of
            # the group's; members of ``stripped`` do not overlap each other, nor do those of ``rest``
            across = [it for it in rest if arg not in it[1] or compatible(literal, it[1][arg])]
            found = self.find(stripped + across, depth + 1) if across else None
            if found:
                return found
        return None

    def pairwise(self, items: list):
        for i, (pos1, lits1, act1) in enumerate(items):
            self.spend(len(items) - i)
            for pos2, lits2, act2 in items[i + 1:]:
                if act1 != act2 and _overlap(lits1, lits2):
                    return (min(pos1, pos2), max(pos1, pos2))
        return None


def _key_of(c: Cmp):
    if c.op == "==":
        return (c.arg, U64)
    if c.op == "&==":
        return (c.arg, c.mask)
    return None


def _split_key(items: list):
    counts = Counter(k for _, lits, _ in items for c in lits.values() if (k := _key_of(c)) is not None)
    if not counts:
        return None
    key, n = counts.most_common(1)[0]
    return key if n > 1 else None


def _overlap(a: dict, b: dict) -> bool:
    return all(compatible(c, b[arg]) for arg, c in a.items() if arg in b)


def compatible(a: Cmp, b: Cmp) -> bool:
    """Whether some 64-bit value satisfies both comparisons (of the same argument)."""
    if not _size(a) or not _size(b):
        return False
    if a.op == "==":
        return _holds(b, a.value)
    if b.op == "==":
        return _holds(a, b.value)
    if a.op == "!=" or b.op == "!=":
        ne, other = (a, b) if a.op == "!=" else (b, a)
        return other.op == "!=" or _size(other) > 1 or not _holds(other, ne.value)
    if a.op == "&==" and b.op == "&==":
        return not (a.value ^ b.value) & a.mask & b.mask
    if a.op == "&==" or b.op == "&==":          # a mask and a one-sided range
        m, r = (a, b) if a.op == "&==" else (b, a)
        lo, hi = _range(r)
        return m.value <= hi and (m.value | (~m.mask & U64)) >= lo
    (lo1, hi1), (lo2, hi2) = _range(a), _range(b)
    return max(lo1, lo2) <= min(hi1, hi2)


def _holds(c: Cmp, value: int) -> bool:
    return c.evaluate((value,) * 6)


def _range(c: Cmp) -> tuple[int, int]:
    return {"<": (0, c.value - 1), "<=": (0, c.value), ">": (c.value + 1, U64), ">=": (c.value, U64),
            "==": (c.value, c.value)}[c.op]


def _size(c: Cmp) -> int:
    """How many 64-bit values satisfy ``c``."""
    if c.op == "&==":
        return 0 if c.value & ~c.mask else 1 << (64 - c.mask.bit_count())
    if c.op == "!=":
        return U64
    lo, hi = _range(c)
    return max(0, hi - lo + 1)
