"""Syscall-number dispatch: a weighted binary search tree over ranges of numbers.

The 32-bit number space is cut into :class:`Range` s of equal outcome (consecutive
numbers that share a decision node, including the runs of numbers without a rule,
collapse into one). The tree tests ``nr >= start`` at each inner node, so it costs
one instruction per level. Its shape minimises the expected number of levels, with
each range weighted by how often its syscalls are expected: Knuth's O(n²) dynamic
programme for optimal alphabetic trees, or, for very many ranges, a split at the
weighted median (at most a couple of levels worse). A span may instead be an exception
chain (``jeq`` for each number of other outcomes, then one background outcome), or start
with a ``jeq`` that takes a heavy single number away (:func:`_hoists`): its two neighbours
of one outcome then merge, which no alphabetic tree does. On the container default profiles
that is all ``jeq`` can win: an exhaustive planner (``jge`` or ``jeq`` at any node, spans of
up to 5 ranges) found the same trees at several times the compile time, and chains with pairs
of numbers as exceptions changed nothing.
"""
from __future__ import annotations

from bisect import bisect_left, bisect_right
from itertools import accumulate
from operator import mul

from .graph import MAX32, Graph, Node

#: Above this many ranges the O(n²) optimum is replaced by weighted-median splits.
OPTIMAL_LIMIT = 600


class Range:
    """Numbers ``start..end`` (inclusive) all decided by ``node``; ``weight`` = expected frequency."""

    __slots__ = ("start", "end", "node", "weight")

    def __init__(self, start: int, end: int, node: Node, weight: float = 0.0):
        self.start, self.end, self.node, self.weight = start, end, node, weight

    def __repr__(self) -> str:
        return f"Range({self.start:#x}..{self.end:#x}, {self.node!r}, {self.weight:g})"


def ranges_from(outcomes: dict[int, Node], fallback: Node, weights: dict[int, float],
                low: int = 0, high: int = MAX32, min_weight: float = 1e-6) -> list[Range]:
    """Cover ``low..high`` with ranges: numbers in ``outcomes`` get their node, the rest ``fallback``;
    neighbours with the same node merge."""
    out: list[Range] = []
    weighted = _within(sorted(weights), low, high)
    cursor, last = low, None
    for nr in _within(sorted(outcomes), low, high):
        if nr > cursor:
            _append(out, cursor, nr - 1, fallback, _weight_between(weighted, weights, cursor, nr - 1))
            last = out[-1]
        node, weight = outcomes[nr], weights.get(nr, 0.0)
        if last is not None and last.node is node:  # _append for one number, inline: it runs for each
            last.end = nr
            last.weight += weight
        else:
            last = Range(nr, nr, node, weight)
            out.append(last)
        cursor = nr + 1
    if cursor <= high:
        _append(out, cursor, high, fallback, _weight_between(weighted, weights, cursor, high))
    for r in out:
        if r.weight < min_weight:
            r.weight = min_weight
    return out


def _within(numbers: list[int], low: int, high: int) -> list[int]:
    """The part ``low..high`` of sorted ``numbers``."""
    return numbers[bisect_left(numbers, low):bisect_right(numbers, high)]


def _append(out: list[Range], start: int, end: int, node: Node, weight: float) -> None:
    """Add ``start..end`` to ``out``, extending the last range when it is an adjacent one of ``node``."""
    if out and out[-1].node is node and out[-1].end + 1 == start:
        out[-1].end = end
        out[-1].weight += weight
    else:
        out.append(Range(start, end, node, weight))


def _weight_between(sorted_numbers: list[int], weights: dict[int, float], start: int, end: int) -> float:
    return sum(weights[n] for n in _within(sorted_numbers, start, end))


def merge(parts: list[list[Range]]) -> list[Range]:
    """Concatenate range lists over adjacent spans, merging equal neighbours at the seams
    (the input ranges are not modified)."""
    out: list[Range] = []
    for part in parts:
        for r in part:
            _append(out, r.start, r.end, r.node, r.weight)
    return out


#: A leaf may test this many single numbers with ``jeq`` before its background outcome.
MAX_EXCEPTIONS = 6
#: The longest span a leaf may cover: its exceptions and the background ranges between them.
MAX_LEAF_SPAN = 2 * MAX_EXCEPTIONS + 1
#: The multipliers of a chain's exceptions: the ``k``-th ``jeq`` is reached after ``k`` tests.
RANKS = range(1, MAX_EXCEPTIONS + 1)
#: Price of one instruction of tree code, as a fraction of the total weight: among
#: trees of (nearly) equal expected depth the smaller wins, and ranges that are almost
#: never reached are tested with as few instructions as possible.
SIZE_COST = 0.002


class Leaf:
    """Ranges ``i..j-1`` handled without splitting: ``jeq`` for each exception, then ``background``."""

    __slots__ = ("background", "exceptions")

    def __init__(self, background: Node, exceptions: list[Range]):
        self.background, self.exceptions = background, exceptions


#: A heavy single number whose neighbours share a node may be taken away with ``jeq`` above
#: their leaf, at the top of a span of at most this many ranges (:func:`_hoists`).
HOIST_SPAN = 8


class Hoist:
    """Ranges ``i..j-1``: ``jeq`` takes range ``m`` away first, then its two neighbours are one
    range of the tree below, whose splits are ``splits[(i, j)]`` for the spans holding them."""

    __slots__ = ("m", "splits")

    def __init__(self, m: int, splits: dict[tuple[int, int], int]):
        self.m, self.splits = m, splits

    def beside(self, i: int, j: int) -> list[tuple[int, int]]:
        """The spans next to the merged pair in the tree below the ``jeq`` (planned apart)."""
        out = []
        while (i, j) != (self.m - 1, self.m + 2):
            k = self.splits[(i, j)]
            if k < self.m:
                out.append((i, k))
                i = k
            else:
                out.append((k, j))
                j = k
        return out


def _hoists(ranges: list[Range]) -> list[int]:
    """Indexes of single numbers worth a ``jeq`` above their leaf: their neighbours share a node
    (taking them away merges the two), and they outweigh a range next to that pair. Moving the
    ``jeq`` one level up saves the number one test and costs everything in the sibling sub-tree
    one, which holds such a range; lighter numbers are best tested in the leaf's chain."""
    n = len(ranges)
    out = []
    for m in range(1, n - 1):
        r = ranges[m]
        if r.start == r.end and ranges[m - 1].node is ranges[m + 1].node:
            beside = [ranges[k].weight for k in (m - 2, m + 2) if 0 <= k < n]
            if beside and r.weight > min(beside):
                out.append(m)
    return out


Plan = dict  # (i, j) -> int (split index) | Leaf | Hoist


def _leaf_row(ranges: list[Range], i: int, size_cost: float) -> list[tuple[float, Node, list[Range]] | None]:
    """The cheapest exception chain for every span ``i..j-1`` (2 <= j - i <= MAX_LEAF_SPAN) that
    allows one, at index ``j - i`` (else None), as ``(cost, background, exceptions)``: at most one
    node owns ranges wider than one number (it is the background; with none, every node is tried,
    the first seen winning ties) and at most MAX_EXCEPTIONS ranges are not the background's. Built
    range by range: each node that may still be the background keeps the weight of its ranges and
    its exceptions, heaviest first. (Tuples: the planner makes a :class:`Leaf` of the few it picks.)"""
    out: list = [None] * (MAX_LEAF_SPAN + 1)
    wide: Node | None = None
    # [node, weight of its ranges, exceptions, their weights] for each node that may still be
    # the background, in order of appearance
    candidates: list[list] = []
    span: list[Range] = []
    for r in ranges[i:i + MAX_LEAF_SPAN]:
        node, weight = r.node, r.weight
        if r.start != r.end:
            if wide is not None and node is not wide:
                break  # two wide outcomes: neither this span nor any longer one is a leaf
            if wide is None:
                wide = node
                candidates = [state for state in candidates if state[0] is node]
        new = wide is None or wide is node
        full = False
        for state in candidates:
            if state[0] is node:
                state[1] += weight
                new = False
                continue
            weights = state[3]
            at = len(weights)
            while at and weights[at - 1] < weight:  # after equal weights: the order of the span
                at -= 1
            state[2].insert(at, r)
            weights.insert(at, weight)
            full |= len(weights) > MAX_EXCEPTIONS
        if full:
            candidates = [state for state in candidates if len(state[3]) <= MAX_EXCEPTIONS]
        if new and len(span) <= MAX_EXCEPTIONS:  # (a node seen before has left for good)
            exceptions = sorted(span, key=_heaviest) if span else []
            candidates.append([node, weight, exceptions, [e.weight for e in exceptions]])
        span.append(r)
        if len(span) < 2:
            continue
        best = best_cost = None
        for state in candidates:
            weights = state[3]
            cost = sum(map(mul, weights, RANKS)) + (state[1] + size_cost) * len(weights)
            if best is None or cost < best_cost:
                best, best_cost = state, cost
        if best is not None:
            out[len(span)] = (best_cost, best[0], best[2][:])
        if not candidates and (wide is not None or len(span) > MAX_EXCEPTIONS):
            break  # no node can become the background of a longer span
    return out


def _heaviest(r: Range) -> float:
    return -r.weight


def plan_tree(ranges: list[Range], total: float | None = None) -> Plan:
    """How to test each sub-list ``(i, j)`` of ``ranges`` in the tree: Knuth's dynamic programme
    (the best root of ``i..j`` lies between those of ``i..j-1`` and ``i+1..j``), where a span may
    also be an exception chain (:func:`_leaf_row`) or start with a hoisted ``jeq``
    (:func:`_hoists`) when that is cheaper. An instruction costs :data:`SIZE_COST` times
    ``total`` (default: the weight of ``ranges``). Row by row from the last range: a span's
    shorter sub-spans are then known, and its window starts where the previous span's ended."""
    n = len(ranges)
    prefix = [0.0, *accumulate(r.weight for r in ranges)]
    if n > OPTIMAL_LIMIT:
        return _median_plan(ranges, prefix)
    size_cost = SIZE_COST * (prefix[n] if total is None else total)
    hoisted: dict[tuple[int, int], list[int]] = {}  # span -> the hoistable numbers it holds
    without: dict[tuple[int, int, int], float] = {}  # (m, i, j) -> cost of i..j-1 once m is gone
    splits: dict[int, dict[tuple[int, int], int]] = {}
    for m in _hoists(ranges):
        splits[m] = {}
        for i in range(max(0, m + 2 - HOIST_SPAN), m):
            for j in range(m + 2, min(n, i + HOIST_SPAN) + 1):
                hoisted.setdefault((i, j), []).append(m)
    cost = [[0.0] * (n + 1) for _ in range(n + 1)]  # cost[i][j] of ranges i..j-1
    root = [[0] * (n + 1) for _ in range(n + 1)]  # every row ascends: Knuth's windows
    chosen: dict[tuple[int, int], Leaf | Hoist] = {}
    for i in range(n - 1, -1, -1):
        row, roots, below, base = cost[i], root[i], root[i + 1], prefix[i]
        roots[i + 1] = i
        leaves = _leaf_row(ranges, i, size_cost)
        short = i + MAX_LEAF_SPAN  # longer spans: only splits
        k = i + 1
        left, right = row[k], cost[k]  # the costs of the two sides of split k
        for j in range(i + 2, n + 1):
            hi_k = below[j]
            best = left + right[j]
            if k < hi_k:  # most windows are one split wide: the root of both shorter spans
                best_k = k
                while k < hi_k:
                    k += 1
                    c = row[k] + cost[k][j]
                    if c < best:
                        best, best_k = c, k
                k = best_k
                left, right = row[k], cost[k]
            roots[j] = k
            weight = prefix[j] - base + size_cost
            best += weight
            if j <= short:
                leaf = leaves[j - i]
                if leaf is not None and leaf[0] < best:
                    best = leaf[0]
                    chosen[(i, j)] = Leaf(leaf[1], leaf[2])
                for m in hoisted.get((i, j), ()) if hoisted else ():
                    c = weight + _without(m, i, j, cost, without, splits[m], weight - ranges[m].weight)
                    if c < best - 1e-9:
                        best = c
                        chosen[(i, j)] = Hoist(m, splits[m])
            row[j] = best
    plan: Plan = {}
    stack = [(0, n)]
    while stack:
        i, j = stack.pop()
        if j - i < 2:
            continue
        step = plan[(i, j)] = chosen.get((i, j), root[i][j])
        if isinstance(step, int):
            stack += [(i, step), (step, j)]
        elif isinstance(step, Hoist):
            stack += step.beside(i, j)
    return plan


def _without(m: int, i: int, j: int, cost: list[list[float]], without: dict, splits: dict,
             weight: float) -> float:
    """The cheapest alphabetic tree over ranges ``i..j-1`` once a ``jeq`` above took range ``m``
    away (its neighbours are one range now; ``weight``: what reaches the root, plus a test's
    price). Its sub-spans are shorter: ``cost`` and ``without`` hold them already."""
    if i == m - 1 and j == m + 2:
        without[(m, i, j)] = 0.0
        return 0.0
    best = None
    for k in range(i + 1, j):
        if k < m:
            c = cost[i][k] + without[(m, k, j)]
        elif k > m + 1:
            c = without[(m, i, k)] + cost[k][j]
        else:
            continue  # inside the merged pair
        if best is None or c < best:
            best, splits[(i, j)] = c, k
    best += weight
    without[(m, i, j)] = best
    return best


def _median_plan(ranges: list[Range], prefix: list[float]) -> Plan:
    plan: Plan = {}
    stack = [(0, len(ranges))]
    while stack:
        i, j = stack.pop()
        if j - i < 2:
            continue
        half = (prefix[i] + prefix[j]) / 2
        k = bisect_left(prefix, half, i + 1, j)
        # choose the better of the two cut points around the median
        if k > i + 1 and abs(prefix[k - 1] - half) <= abs(prefix[k] - half):
            k -= 1
        k = min(max(k, i + 1), j - 1)
        plan[(i, j)] = k
        stack += [(i, k), (k, j)]
    return plan


def build_tree(graph: Graph, ranges: list[Range], word: int, total: float | None = None,
               plan: Plan | None = None) -> Node:
    """The search tree over ``ranges`` (which must cover a contiguous span) on ``word``; ``total``:
    the weight of the whole tree it is part of, when it is a sub-tree planned apart; ``plan``:
    a given plan instead of :func:`plan_tree`'s."""
    if plan is None:
        plan = plan_tree(ranges, total)

    def node(i: int, j: int) -> Node:
        if j - i == 1:
            return ranges[i].node
        step = plan[(i, j)]
        if isinstance(step, Hoist):
            r = ranges[step.m]
            return graph.test(word, "jeq", r.start, r.node, merged(step, i, j))
        if isinstance(step, Leaf):
            out = step.background
            for r in reversed(step.exceptions):
                out = graph.test(word, "jeq", r.start, r.node, out)
            return out
        return graph.test(word, "jge", ranges[step].start, node(step, j), node(i, step))

    def merged(hoist: Hoist, i: int, j: int) -> Node:
        """Ranges ``i..j-1`` without ``hoist.m``."""
        m = hoist.m
        if i == m - 1 and j == m + 2:
            return ranges[i].node
        k = hoist.splits[(i, j)]
        if k < m:
            return graph.test(word, "jge", ranges[k].start, merged(hoist, k, j), node(i, k))
        return graph.test(word, "jge", ranges[k].start, node(k, j), merged(hoist, i, k))

    return node(0, len(ranges))
