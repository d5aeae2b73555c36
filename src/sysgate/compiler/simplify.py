"""Jump threading on the decision DAG, repeated to a fixed point.

Walking the DAG in topological order, each node learns what every path into it
has established about the words tested so far (:mod:`.facts`). An edge whose
target test is already decided by those facts is redirected past it, as often as
possible. Rebuilding through the :class:`~.graph.Graph` then merges duplicated
nodes and drops tests whose two branches became equal; unreachable nodes vanish.
"""
from __future__ import annotations

from . import facts as F
from .graph import Graph, Node, Test, topological

MAX_ROUNDS = 16


def _follow(node: Node, known: F.Facts) -> tuple[Node, F.Facts]:
    """Skip every test decided by ``known``; returns the real target and the facts on arrival."""
    while isinstance(node, Test):
        result = F.outcome(known, node)
        if result is None:
            break
        refined = F.refine(known, node, result)
        known = refined if refined is not None else known
        node = node.t if result else node.f
    return node, known


def _thread_once(roots: list[Node], graph: Graph) -> tuple[list[Node], bool]:
    order = topological(*roots)
    incoming: dict[int, F.Facts] = {id(root): {} for root in roots}
    edges: dict[int, tuple[Node, Node]] = {}
    changed = False
    for node in order:
        if id(node) not in incoming or not isinstance(node, Test):
            continue
        known = incoming[id(node)]
        targets = []
        for result, target in ((True, node.t), (False, node.f)):
            after = F.refine(known, node, result)
            if after is None:  # this branch can never be taken: keep it, learn nothing
                after = known
            new_target, arrival = _follow(target, after)
            changed |= new_target is not target
            if isinstance(new_target, Test):  # a return learns nothing from what is known
                incoming[id(new_target)] = F.meet(incoming.get(id(new_target)), arrival)
            targets.append(new_target)
        edges[id(node)] = (targets[0], targets[1])
    if not changed:
        return roots, False
    rebuilt: dict[int, Node] = {}
    for node in reversed(order):
        if isinstance(node, Test):
            if id(node) not in edges:
                continue  # unreachable now
            t, f = edges[id(node)]
            rebuilt[id(node)] = graph.test(node.word, node.op, node.k, rebuilt[id(t)], rebuilt[id(f)], node.mask)
        else:
            rebuilt[id(node)] = node
    return [rebuilt[id(root)] for root in roots], True


def simplify(roots: list[Node], graph: Graph) -> list[Node]:
    """Thread jumps through decided tests under ``roots`` (each entered knowing nothing) until
    nothing changes; returns the new roots."""
    for _ in range(MAX_ROUNDS):
        roots, changed = _thread_once(roots, graph)
        if not changed:
            break
    return roots
