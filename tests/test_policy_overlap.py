"""policy.overlap: the grouped search finds an overlap exactly when comparing every pair does,
and single-literal compatibility agrees with evaluating the comparisons on candidate values."""
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sysgate.policy.model import Cmp
from sysgate.policy.overlap import TooComplex, compatible, find_overlap

U64 = 2 ** 64 - 1
VALUES = [0, 1, 2, 3, 5, 7, 8, 0xFF, 0x100, U64 - 1, U64]


@st.composite
def literals(draw, arg=None):
    arg = draw(st.integers(0, 2)) if arg is None else arg
    op = draw(st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "&=="]))
    value = draw(st.sampled_from(VALUES))
    if op == "&==":
        mask = draw(st.sampled_from([1, 3, 7, 0xF0, 0xFF, U64]))
        return Cmp(arg, op, draw(st.sampled_from([value & mask, value])), mask=mask)
    return Cmp(arg, op, value)


@st.composite
def rules(draw):
    lits = {}
    for arg in draw(st.sets(st.integers(0, 2), max_size=3)):
        lits[arg] = draw(literals(arg))
    return lits


def witnesses(a: Cmp, b: Cmp):
    """Values where a comparison changes truth, and the smallest/largest/next values a mask
    allows: if both comparisons can hold, one of these satisfies both."""
    out = {0, U64}
    masked = [c for c in (a, b) if c.op == "&=="]
    base = 0
    for c in masked:
        base |= c.value
    free = U64
    for c in masked:
        free &= ~c.mask
    for v in [c.value for c in (a, b)] + [base]:
        out.update(x & U64 for x in (v - 1, v, v + 1))
    out.update({base, base | free, base | (free & -free), base | (free & U64 & ~(free & -free))})
    return out


@settings(max_examples=400, deadline=None)
@given(literals(0), literals(0))
def test_compatible_agrees_with_evaluation(a, b):
    exists = any(a.evaluate((x,) * 6) and b.evaluate((x,) * 6) for x in witnesses(a, b))
    assert compatible(a, b) == exists == compatible(b, a)


def brute_force(items):
    return any(x[2] != y[2] and all(compatible(c, y[1][k]) for k, c in x[1].items() if k in y[1])
               for i, x in enumerate(items) for y in items[i + 1:])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(rules(), st.integers(0, 2)), max_size=40))
def test_grouped_search_matches_every_pair(raw):
    items = [(i, lits, action) for i, (lits, action) in enumerate(raw)]
    found = find_overlap(items)
    assert (found is not None) == brute_force(items)
    if found:
        (_, a, act_a), (_, b, act_b) = items[found[0]], items[found[1]]
        assert act_a != act_b and all(compatible(c, b[k]) for k, c in a.items() if k in b)


def test_many_equal_tests_are_checked_without_comparing_every_pair():
    """20,000 rules testing arg1 for distinct values (different actions): no overlap, found
    within a budget far below the 2e8 pairs."""
    items = [(i, {1: Cmp(1, "==", i)}, i % 3) for i in range(20_000)]
    assert find_overlap(items, budget=200_000) is None
    items.append((20_000, {0: Cmp(0, "==", 1)}, 1))           # no test on arg1: overlaps one with another action
    assert find_overlap(items, budget=200_000) is not None


def test_budget_ends_a_search_grouping_cannot_split():
    """Rules without an equality test to group by are compared pairwise: past the budget the
    search says so (the importer then warns) instead of running for minutes."""
    disjoint = [(i, {0: Cmp(0, "<=", 5) if i % 2 else Cmp(0, ">=", 6)}, i % 2) for i in range(400)]
    assert find_overlap(disjoint) is None
    with pytest.raises(TooComplex):
        find_overlap(disjoint, budget=1000)
