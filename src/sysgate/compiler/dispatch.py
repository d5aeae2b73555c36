"""Syscall-number dispatch: a weighted binary search tree over ranges of numbers.

The 32-bit number space is cut into :class:`Range` s of equal outcome (consecutive
numbers that share a decision node, including the runs of numbers without a rule,
collapse into one). The tree tests ``nr >= start`` at each inner node, so it costs
one instruction per level. Its shape minimises the expected number of levels, with
each range weighted by how often its syscalls are expected: Knuth's O(n²) dynamic
programme for optimal alphabetic trees, or, for very many ranges, a split at the
weighted median (at most a couple of levels worse). Spans of a few ranges are also
planned exhaustively with ``jeq`` allowed at any node (:func:`_exact`): taking one number
away merges its two neighbours when they share an outcome, which no alphabetic tree does.
"""
from __future__ import annotations

from bisect import bisect_left, bisect_right
from itertools import accumulate

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
    numbers = sorted(n for n in outcomes if low <= n <= high)
    weighted = sorted(n for n in weights if low <= n <= high)
    cursor = low
    for nr in numbers:
        if nr > cursor:
            _append(out, cursor, nr - 1, fallback, _weight_between(weighted, weights, cursor, nr - 1))
        _append(out, nr, nr, outcomes[nr], weights.get(nr, 0.0))
        cursor = nr + 1
    if cursor <= high:
        _append(out, cursor, high, fallback, _weight_between(weighted, weights, cursor, high))
    for r in out:
        r.weight = max(r.weight, min_weight)
    return out


def _append(out: list[Range], start: int, end: int, node: Node, weight: float) -> None:
    """Add ``start..end`` to ``out``, extending the last range when it is an adjacent one of ``node``."""
    if out and out[-1].node is node and out[-1].end + 1 == start:
        out[-1].end = end
        out[-1].weight += weight
    else:
        out.append(Range(start, end, node, weight))


def _weight_between(sorted_numbers: list[int], weights: dict[int, float], start: int, end: int) -> float:
    i, j = bisect_left(sorted_numbers, start), bisect_right(sorted_numbers, end)
    return sum(weights[n] for n in sorted_numbers[i:j])


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
#: Price of one instruction of tree code, as a fraction of the total weight: among
#: trees of (nearly) equal expected depth the smaller wins, and ranges that are almost
#: never reached are tested with as few instructions as possible.
SIZE_COST = 0.002


class Leaf:
    """Ranges ``i..j-1`` handled without splitting: ``jeq`` for each exception, then ``background``."""

    __slots__ = ("background", "exceptions", "cost")

    def __init__(self, background: Node, exceptions: list[Range], cost: float):
        self.background, self.exceptions, self.cost = background, exceptions, cost


#: Spans of at most this many ranges are also planned exactly as decision trees whose nodes
#: may test one number with ``jeq`` anywhere, not only in a final chain (:func:`_exact`).
EXACT_SPAN = 5

#: A span in :func:`_exact`: a tuple of segments ``(start, end, node, weight, single)``; a
#: segment is a range, or two neighbours of one node merged over the number a ``jeq`` above
#: took away (never ``single`` then: a ``jeq`` on its start would not cover it).
Segments = tuple


class Exact:
    """Ranges ``i..j-1`` tested by the tree :func:`_exact` found for them (``segments``)."""

    __slots__ = ("segments", "cost", "choices")

    def __init__(self, segments: Segments, cost: float, choices: dict):
        self.segments, self.cost, self.choices = segments, cost, choices


def _without(segments: Segments, m: int) -> Segments:
    """``segments`` once a ``jeq`` took segment ``m`` away: its neighbours merge when they
    share a node (the number between them can no longer occur)."""
    if 0 < m < len(segments) - 1:
        a, b = segments[m - 1], segments[m + 1]
        if a[2] is b[2]:
            return (*segments[:m - 1], (a[0], b[1], a[2], a[3] + b[3], False), *segments[m + 2:])
    return (*segments[:m], *segments[m + 1:])


def _exact(segments: Segments, size_cost: float, choices: dict) -> float:
    """The cheapest tree for ``segments``, exhaustively: each node either splits them with
    ``jge`` at a segment's start or takes a single number away with ``jeq`` (its neighbours of
    one node then merge, which an alphabetic tree can never do above its leaves). A test
    costs the weight it sees plus ``size_cost``. Records ``choices[segments]``: ``(cost, k,
    is_jeq)``; memoised there, so spans sharing sub-spans share the work."""
    known = choices.get(segments)
    if known is not None:
        return known[0]
    if len(segments) == 1:
        choices[segments] = (0.0, 0, False)
        return 0.0
    best, best_k, best_jeq = None, 0, False
    for k in range(1, len(segments)):
        c = _exact(segments[:k], size_cost, choices) + _exact(segments[k:], size_cost, choices)
        if best is None or c < best:
            best, best_k = c, k
    for m, seg in enumerate(segments):
        if seg[4]:
            c = _exact(_without(segments, m), size_cost, choices)
            if c < best:
                best, best_k, best_jeq = c, m, True
    best += sum(seg[3] for seg in segments) + size_cost
    choices[segments] = (best, best_k, best_jeq)
    return best


def _mergeable(segments: Segments, i: int, j: int) -> bool:
    """Can a ``jeq`` inside ``i..j-1`` merge two neighbours of one node? Only then may
    :func:`_exact` beat the alphabetic tree and the exception chains (it is worth its time)."""
    return any(segments[m][4] and segments[m - 1][2] is segments[m + 1][2] for m in range(i + 1, j - 1))


Plan = dict  # (i, j) -> int (split index) | Leaf | Exact


def _leaves(ranges: list[Range], size_cost: float) -> dict[tuple[int, int], Leaf]:
    """The cheapest exception chain for every span ``i..j-1`` (2 <= j - i <= MAX_LEAF_SPAN) that
    allows one: at most one node owns ranges wider than one number (it is the background; with
    none, every node is tried) and at most MAX_EXCEPTIONS ranges are not the background's."""
    out: dict[tuple[int, int], Leaf] = {}
    n = len(ranges)
    for i in range(n):
        wide: Node | None = None
        for j in range(i + 1, min(n, i + MAX_LEAF_SPAN) + 1):
            r = ranges[j - 1]
            if r.start != r.end:
                if wide is not None and r.node is not wide:
                    break  # two wide outcomes: neither this span nor any longer one is a leaf
                wide = r.node
            if j - i < 2:
                continue
            span = ranges[i:j]
            best = None
            for background in ((wide,) if wide is not None else {id(r.node): r.node for r in span}.values()):
                exceptions = [r for r in span if r.node is not background]
                if len(exceptions) > MAX_EXCEPTIONS:
                    continue
                exceptions.sort(key=lambda r: -r.weight)
                rest = sum(r.weight for r in span if r.node is background)
                m = len(exceptions)
                cost = sum(r.weight * (k + 1) for k, r in enumerate(exceptions)) + (rest + size_cost) * m
                if best is None or cost < best.cost:
                    best = Leaf(background, exceptions, cost)
            if best is not None:
                out[(i, j)] = best
    return out


def plan_tree(ranges: list[Range], total: float | None = None) -> Plan:
    """How to test each sub-list ``(i, j)`` of ``ranges`` in the tree: Knuth's dynamic programme
    (the best root of ``i..j`` lies between those of ``i..j-1`` and ``i+1..j``), where a span may
    also be an exception chain (:func:`_leaves`) when that is cheaper. An instruction costs
    :data:`SIZE_COST` times ``total`` (default: the weight of ``ranges``)."""
    n = len(ranges)
    prefix = [0.0, *accumulate(r.weight for r in ranges)]
    if n > OPTIMAL_LIMIT:
        return _median_plan(ranges, prefix)
    size_cost = SIZE_COST * (prefix[n] if total is None else total)
    leaves = _leaves(ranges, size_cost)
    segments = tuple((r.start, r.end, r.node, r.weight, r.start == r.end) for r in ranges)
    choices: dict = {}
    cost = [[0.0] * (n + 1) for _ in range(n + 1)]  # cost[i][j] of ranges i..j-1
    into = [[0.0] * (n + 1) for _ in range(n + 1)]  # into[j][i] = cost[i][j], for row-wise sums
    root = [[0] * (n + 1) for _ in range(n + 1)]
    chosen: dict[tuple[int, int], Leaf | Exact] = {}
    for i in range(n):
        root[i][i + 1] = i
    for length in range(2, n + 1):
        span_leaves = length <= MAX_LEAF_SPAN
        for i in range(n - length + 1):
            j = i + length
            row, column, roots = cost[i], into[j], root[i]
            if length == 2:
                best_k = lo_k = hi_k = i + 1
            else:
                lo_k, hi_k = roots[j - 1], root[i + 1][j]
                best_k = lo_k = lo_k if lo_k > i else i + 1
                hi_k = hi_k if hi_k < j else j - 1
            best = row[lo_k] + column[lo_k]
            for k in range(lo_k + 1, hi_k + 1):  # Knuth's window: usually a few splits
                c = row[k] + column[k]
                if c < best:
                    best, best_k = c, k
            roots[j] = best_k
            best += prefix[j] - prefix[i] + size_cost
            if span_leaves:
                leaf = leaves.get((i, j))
                if leaf is not None and leaf.cost < best:
                    best = leaf.cost
                    chosen[(i, j)] = leaf
                if length <= EXACT_SPAN and _mergeable(segments, i, j):
                    exact = _exact(segments[i:j], size_cost, choices)
                    if exact < best - 1e-9:
                        best = exact
                        chosen[(i, j)] = Exact(segments[i:j], exact, choices)
            row[j] = column[i] = best
    plan: Plan = {}
    stack = [(0, n)]
    while stack:
        i, j = stack.pop()
        if (i, j) in chosen:
            plan[(i, j)] = chosen[(i, j)]
        elif j - i >= 2:
            k = plan[(i, j)] = root[i][j]
            stack += [(i, k), (k, j)]
    return plan


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
        if isinstance(step, Exact):
            return exact(step.segments, step.choices)
        if isinstance(step, Leaf):
            out = step.background
            for r in reversed(step.exceptions):
                out = graph.test(word, "jeq", r.start, r.node, out)
            return out
        return graph.test(word, "jge", ranges[step].start, node(step, j), node(i, step))

    def exact(segments: Segments, choices: dict) -> Node:
        if len(segments) == 1:
            return segments[0][2]
        _, k, is_jeq = choices[segments]
        if is_jeq:
            seg = segments[k]
            return graph.test(word, "jeq", seg[0], seg[2], exact(_without(segments, k), choices))
        return graph.test(word, "jge", segments[k][0], exact(segments[k:], choices), exact(segments[:k], choices))

    return node(0, len(ranges))
