"""Each compiler pass on its own contract, on small inputs (the whole compiler is tested end to end
in test_compiler_semantics and test_compiler_kernel).

graph: hash-consing and static folding are sound; dispatch: the ranges cover every syscall number
exactly once and the search tree finds each number's node; simplify: same decisions, never more
nodes; emit: the laid-out code decides like the DAG, every jump reaches, returns are shared, far
jumps get repaired; peephole: every pass keeps the program's meaning and never lengthens it;
linear: offsets point at the target lines.
"""
from __future__ import annotations

from hypothesis import given, strategies as st

from sysgate.bpf.emulator import Emulator
from sysgate.compiler import dispatch
from sysgate.compiler.emit import fix_far_jumps, layout
from sysgate.compiler.graph import MAX32, OPS, Graph, Ret, decide, static_outcome, walk
from sysgate.compiler.graph import Test as DagTest   # not collected by pytest
from sysgate.compiler.linear import AND, JA, LD, MAX_OFFSET, RET, Line, assemble
from sysgate.compiler.peephole import PASSES, optimize
from sysgate.compiler.simplify import simplify
from support.compiler import hypothesis_settings

NR, ARCH, ARG0_LO, ARG0_HI = 0, 4, 16, 20      # byte offsets in struct seccomp_data
WORDS = (NR, ARCH, ARG0_LO, ARG0_HI)
INTERESTING = (0, 1, 2, 5, 0x7FFFFFFF, 0x80000000, MAX32 - 1, MAX32)
values = st.one_of(st.sampled_from(INTERESTING), st.integers(0, MAX32))
masks = st.one_of(st.none(), st.sampled_from((0, 1, 0xFF, 0x80000000, MAX32)), st.integers(0, MAX32))
seccomp_words = st.lists(values, min_size=len(WORDS), max_size=len(WORDS)).map(
    lambda vs: tuple(vs[WORDS.index(4 * i)] if 4 * i in WORDS else 0 for i in range(16)))


def evaluate(node, w) -> int:
    """The DAG's return value for seccomp_data words ``w`` (the reference for the later passes)."""
    while isinstance(node, DagTest):
        value = w[node.word // 4] & (MAX32 if node.mask is None else node.mask)
        node = node.t if decide(node.op, node.k, value) else node.f
    return node.k


def run(insns, w) -> int:
    return Emulator(insns, "x86_64").run_words(w)[0]


@st.composite
def dags(draw, max_tests: int = 24):
    """A random decision DAG built through a Graph, sharing nodes at random: (graph, root)."""
    graph = Graph()
    pool = [graph.ret(k) for k in draw(st.lists(st.integers(0, 5), min_size=1, max_size=4, unique=True))]
    for _ in range(draw(st.integers(0, max_tests))):
        t, f = (pool[draw(st.integers(0, len(pool) - 1))] for _ in range(2))
        pool.append(graph.test(draw(st.sampled_from(WORDS)), draw(st.sampled_from(OPS)), draw(values), t, f,
                               mask=draw(masks)))
    return graph, pool[-1]


def code(root) -> list:
    return assemble(fix_far_jumps(layout(root)))


# --- graph ---------------------------------------------------------------------------------
def test_graph_returns_one_node_per_distinct_request():
    g = Graph()
    allow, kill = g.ret(0x7FFF0000), g.ret(0)
    assert g.ret(0x7FFF0000) is allow
    node = g.test(NR, "jeq", 5, allow, kill)
    assert g.test(NR, "jeq", 5, allow, kill) is node and g.test(NR, "jeq", 5, kill, allow) is not node
    assert g.test(NR, "jeq", 5, allow, allow) is allow                 # equal branches: no test
    assert g.test(NR, "jeq", 5, allow, kill, mask=MAX32) is node       # a full mask is no mask
    assert g.test(NR, "jge", 0, allow, kill) is allow                  # always true
    assert g.test(NR, "jset", 1, allow, kill, mask=0) is kill          # reads nothing


@given(st.sampled_from(OPS), values, masks, values)
def test_static_outcomes_hold_for_every_value(op, k, mask, value):
    top = MAX32 if mask is None else mask
    fixed = static_outcome(op, k, mask)
    if fixed is not None:
        assert decide(op, k, value & top) is fixed


@hypothesis_settings(200)
@given(dags(), seccomp_words)
def test_graph_folding_keeps_the_decision(dag, w):
    """A test the Graph folded away would have taken the branch it kept: rebuilding every
    node by hand without the Graph gives the same verdicts."""
    _, root = dag

    def unfolded(node):
        if isinstance(node, Ret):
            return node
        return DagTest(node.word, node.mask, node.op, node.k, unfolded(node.t), unfolded(node.f))

    assert evaluate(root, w) == evaluate(unfolded(root), w)


# --- dispatch --------------------------------------------------------------------------------
outcome_maps = st.dictionaries(st.one_of(st.integers(0, 600), st.sampled_from((0x40000000, MAX32))),
                               st.integers(0, 3), max_size=60)


def _ranges(outcomes, weights=None, low=0, high=MAX32):
    g = Graph()
    rets = [g.ret(k) for k in range(4)]
    fallback = g.ret(99)
    ranges = dispatch.ranges_from({nr: rets[k] for nr, k in outcomes.items()}, fallback, weights or {}, low, high)
    return g, ranges, fallback


@given(outcome_maps)
def test_ranges_cover_every_number_exactly_once(outcomes):
    _, ranges, fallback = _ranges(outcomes)
    assert ranges[0].start == 0 and ranges[-1].end == MAX32
    for a, b in zip(ranges, ranges[1:]):
        assert b.start == a.end + 1 and a.node is not b.node       # contiguous, no gap or overlap, merged
    for r in ranges:
        assert r.start <= r.end and r.weight > 0
        numbers = [nr for nr in outcomes if r.start <= nr <= r.end]
        assert all(r.node.k == outcomes[nr] for nr in numbers)
        if r.end - r.start + 1 > len(numbers):                      # holds a number without a rule
            assert r.node is fallback


@given(outcome_maps, st.integers(1, 600))
def test_merged_parts_equal_the_ranges_of_the_whole_span(outcomes, cut):
    _, whole, _ = _ranges(outcomes)
    g = Graph()
    rets = [g.ret(k) for k in range(4)]
    nodes = {nr: rets[k] for nr, k in outcomes.items()}
    fallback = g.ret(99)
    parts = [dispatch.ranges_from(nodes, fallback, {}, 0, cut - 1),
             dispatch.ranges_from(nodes, fallback, {}, cut, MAX32)]
    merged = dispatch.merge(parts)
    assert [(r.start, r.end, r.node.k) for r in merged] == [(r.start, r.end, r.node.k) for r in whole]


@hypothesis_settings(100)
@given(outcome_maps, st.dictionaries(st.integers(0, 600), st.floats(0.001, 100.0), max_size=20))
def test_dispatch_tree_finds_every_numbers_outcome(outcomes, weights):
    g, ranges, fallback = _ranges(outcomes, weights)
    root = dispatch.build_tree(g, ranges, NR)
    probes = {0, 1, MAX32, *outcomes, *(nr + 1 for nr in outcomes if nr < MAX32),
              *(nr - 1 for nr in outcomes if nr > 0)}
    for nr in probes:
        w = (nr,) + (0,) * 15
        assert evaluate(root, w) == (outcomes[nr] if nr in outcomes else fallback.k), hex(nr)


def test_dispatch_plan_over_many_ranges_still_finds_each_number():
    """Past OPTIMAL_LIMIT ranges the weighted-median plan takes over: same answers."""
    outcomes = {nr: nr % 2 for nr in range(0, 4 * dispatch.OPTIMAL_LIMIT, 3)}
    g, ranges, fallback = _ranges(outcomes)
    assert len(ranges) > dispatch.OPTIMAL_LIMIT
    root = dispatch.build_tree(g, ranges, NR)
    for nr in range(0, 4 * dispatch.OPTIMAL_LIMIT + 2):
        assert evaluate(root, (nr,) + (0,) * 15) == outcomes.get(nr, fallback.k)


def _tests_to(root, nr: int) -> int:
    """How many tests the tree under ``root`` runs for number ``nr``."""
    count, node = 0, root
    while isinstance(node, DagTest):
        count += 1
        node = node.t if decide(node.op, node.k, nr) else node.f
    return count


small_outcomes = st.dictionaries(st.integers(0, 40), st.integers(0, 2), max_size=14)


@hypothesis_settings(150)
@given(small_outcomes, st.dictionaries(st.integers(0, 40), st.floats(0.001, 50.0), max_size=10))
def test_dispatch_tree_with_hoisted_jeqs_finds_every_numbers_node(outcomes, weights):
    """Trees that take heavy numbers away with a ``jeq`` above their leaf (and the same plan
    without hoists) find every number's node, each range on one path. (Not compared by cost:
    Knuth's window is exact for alphabetic trees only, so either plan may be the cheaper.)"""
    g, ranges, fallback = _ranges(outcomes, weights, 0, 60)
    hoisting = dispatch.build_tree(g, ranges, NR)
    saved = dispatch.HOIST_SPAN
    try:
        dispatch.HOIST_SPAN = 0
        without = dispatch.build_tree(g, ranges, NR)
    finally:
        dispatch.HOIST_SPAN = saved
    for r in ranges:
        for nr in {r.start, r.end, (r.start + r.end) // 2}:
            assert _tests_to(hoisting, nr) == _tests_to(hoisting, r.start)
            assert evaluate(hoisting, (nr,) + (0,) * 15) == r.node.k
            assert evaluate(without, (nr,) + (0,) * 15) == r.node.k


def _leaf_from_scratch(span, size_cost):
    """The cheapest exception chain for ``span`` by its definition (see dispatch._leaf_row)."""
    wide = {id(r.node): r.node for r in span if r.start != r.end}
    if len(wide) > 1:
        return None
    best = None
    for background in (wide or {id(r.node): r.node for r in span}).values():
        exceptions = sorted((r for r in span if r.node is not background), key=lambda r: -r.weight)
        if len(exceptions) > dispatch.MAX_EXCEPTIONS:
            continue
        rest = sum(r.weight for r in span if r.node is background)
        cost = sum(r.weight * (k + 1) for k, r in enumerate(exceptions)) + (rest + size_cost) * len(exceptions)
        if best is None or cost < best[2]:
            best = (background, exceptions, cost)
    return best


@hypothesis_settings(150)
@given(st.dictionaries(st.integers(0, 60), st.integers(0, 3), max_size=40),
       st.dictionaries(st.integers(0, 60), st.sampled_from((0.01, 1.0, 1.8, 3.24, 7.5)), max_size=30),
       st.floats(0.001, 10.0))
def test_leaf_rows_built_range_by_range_equal_leaves_built_from_scratch(outcomes, weights, size_cost):
    _, ranges, _ = _ranges(outcomes, weights, 0, 70)
    for i in range(len(ranges)):
        row = dispatch._leaf_row(ranges, i, size_cost)
        for j in range(i + 2, min(len(ranges), i + dispatch.MAX_LEAF_SPAN) + 1):
            leaf = row[j - i]
            expected = _leaf_from_scratch(ranges[i:j], size_cost)
            assert (None if leaf is None else (leaf[1], leaf[2], leaf[0])) == expected


def test_a_heavy_number_between_neighbours_of_one_node_is_tested_first():
    """Like personality (argument checks follow, so it weighs more) between two EPERM numbers:
    one ``jeq`` at the top, then a tree in which its neighbours are one range."""
    outcomes = {10: 1, 11: 2, 12: 1, 13: 0, 14: 0}
    weights = {nr: 1.0 for nr in range(8, 24)} | {11: 12.0}
    g, ranges, fallback = _ranges(outcomes, weights, 8, 23)
    root = dispatch.build_tree(g, ranges, NR)
    assert (root.op, root.k) == ("jeq", 11)
    assert _tests_to(root, 11) == 1
    for r in ranges:
        for nr in range(r.start, r.end + 1):
            assert evaluate(root, (nr,) + (0,) * 15) == r.node.k


# --- simplify --------------------------------------------------------------------------------
@hypothesis_settings(200)
@given(dags(), st.lists(seccomp_words, min_size=1, max_size=8))
def test_simplify_keeps_every_decision_and_never_adds_nodes(dag, inputs):
    graph, root = dag
    before = [evaluate(root, w) for w in inputs]
    size = len(list(walk(root)))
    (simple,) = simplify([root], graph)
    assert [evaluate(simple, w) for w in inputs] == before
    assert len(list(walk(simple))) <= size


def test_simplify_drops_a_test_its_path_already_decided():
    g = Graph()
    a, b, c = g.ret(1), g.ret(2), g.ret(3)
    inner = g.test(NR, "jeq", 5, a, b)
    root = g.test(NR, "jeq", 5, inner, c)        # on the true edge, nr == 5 is known
    (simple,) = simplify([root], g)
    assert isinstance(simple, DagTest) and (simple.t, simple.f) == (a, c)


# --- emit and linear ---------------------------------------------------------------------------
@hypothesis_settings(200)
@given(dags(), st.lists(seccomp_words, min_size=1, max_size=8))
def test_laid_out_code_decides_like_the_dag(dag, inputs):
    _, root = dag
    insns = code(root)
    for w in inputs:
        assert run(insns, w) == evaluate(root, w)


@given(dags())
def test_layout_shares_one_ret_per_return_value(dag):
    _, root = dag
    lines = layout(root)
    rets = [line.k for line in lines if line.is_ret]
    assert sorted(rets) == sorted({n.k for n in walk(root) if isinstance(n, Ret)})
    assert lines[-1].is_ret


@given(dags())
def test_assembled_jumps_point_at_their_target_lines(dag):
    _, root = dag
    lines = fix_far_jumps(layout(root))
    where = {id(line): i for i, line in enumerate(lines)}
    for i, (line, insn) in enumerate(zip(lines, assemble(lines))):
        if line.is_conditional:
            assert (insn.jt, insn.jf) == (where[id(line.t)] - i - 1, where[id(line.f)] - i - 1)
            assert 0 <= insn.jt <= MAX_OFFSET and 0 <= insn.jf <= MAX_OFFSET
        elif line.is_ja:
            assert insn.k == where[id(line.t)] - i - 1 >= 0


def test_a_long_chain_of_tests_still_decides_like_the_dag():
    """400 ``jeq`` tests in a row, all jumping to a few shared returns."""
    g = Graph()
    node = g.ret(0)
    for nr in range(400, 0, -1):
        node = g.test(NR, "jeq", nr, g.ret(nr % 3 + 1), node)
    insns = code(node)
    for nr in range(0, 402):
        assert run(insns, (nr,) + (0,) * 15) == (nr % 3 + 1 if 1 <= nr <= 400 else 0)


def test_far_jumps_get_a_ret_copy_or_a_trampoline_within_reach():
    far_test = Line.jump("jeq", 1, Line(RET, 3), Line(RET, 4))
    far_ret = Line(RET, 9)
    body = [Line(LD, NR) for _ in range(300)] + [Line(RET, 2)]
    lines = [Line(LD, NR), Line.jump("jeq", 1, far_test, None), Line.jump("jeq", 2, far_ret, body[0]), *body,
             far_test, far_test.t, far_test.f, far_ret]
    lines[1].f = lines[2]
    try:
        assemble(lines)
    except AssertionError:
        pass
    else:
        raise AssertionError("the test program should start with jumps out of reach")
    insns = assemble(fix_far_jumps(lines))
    assert all(i.jt <= MAX_OFFSET and i.jf <= MAX_OFFSET for i in insns)
    assert [run(insns, (nr,) + (0,) * 15) for nr in (0, 1, 2, 3)] == [2, 3, 9, 2]


# --- peephole --------------------------------------------------------------------------------
@st.composite
def linear_programs(draw):
    """Random forward-jumping linear code with many reloads, jumps to jumps and dead lines."""
    n = draw(st.integers(2, 30))
    lines = [Line(RET, 0) for _ in range(n)]
    for i in range(n - 1):
        kind = draw(st.sampled_from(("ld", "ld", "and", "jmp", "jmp", "ja", "ret")))
        later = st.integers(i + 1, n - 1)
        line = lines[i]
        if kind == "ld":
            line.code, line.k = LD, draw(st.sampled_from(WORDS))
        elif kind == "and":
            line.code, line.k = AND, draw(masks.filter(lambda m: m is not None))
        elif kind == "jmp":
            line.code = Line.jump(draw(st.sampled_from(OPS)), 0).code
            line.k, line.t, line.f = draw(values), lines[draw(later)], lines[draw(later)]
        elif kind == "ja":
            line.code, line.t = JA, lines[draw(later)]
        else:
            line.k = draw(st.integers(0, 3))
    lines[-1].k = draw(st.integers(0, 3))
    return lines


def _copy(lines: list[Line]) -> list[Line]:
    copies = {id(line): Line(line.code, line.k) for line in lines}
    for line in lines:
        new = copies[id(line)]
        new.t = copies[id(line.t)] if line.t is not None else None
        new.f = copies[id(line.f)] if line.f is not None else None
    return [copies[id(line)] for line in lines]


def _snapshot(lines: list[Line]) -> list[tuple]:
    return [(line.code, line.k, id(line.t), id(line.f)) for line in lines]


@hypothesis_settings(300)
@given(linear_programs(), st.sampled_from((*PASSES, optimize)), st.lists(seccomp_words, min_size=1, max_size=8))
def test_peephole_passes_keep_the_meaning_and_never_lengthen(lines, peephole_pass, inputs):
    before = assemble(_copy(lines))
    out = peephole_pass(_copy(lines))
    after = assemble(out if peephole_pass is optimize else out[0])
    assert len(after) <= len(before)
    for w in inputs:
        assert run(after, w) == run(before, w)


@hypothesis_settings(300)
@given(linear_programs(), st.sampled_from(PASSES))
def test_a_peephole_pass_says_whether_it_changed_the_code(lines, peephole_pass):
    """optimize stops on these answers instead of comparing the code before and after."""
    before = _snapshot(lines)
    out, changed = peephole_pass(lines)
    assert changed == (_snapshot(out) != before)


def test_peephole_removes_what_it_promises():
    ret = Line(RET, 7)
    other = Line(RET, 8)
    load = Line(LD, NR)
    lines = [load, Line.jump("jeq", 1, t=None, f=None), Line(LD, NR), Line(JA, 0, ret), Line(LD, ARCH), ret, other]
    lines[1].t, lines[1].f = lines[2], lines[2]
    out = optimize(lines)
    # both branches equal -> ja -> next line; the reload is redundant; the ja to a ret is that ret;
    # the ld [arch] and the other ret are unreachable
    assert [(line.code, line.k) for line in out] == [(LD, NR), (RET, 7)]
