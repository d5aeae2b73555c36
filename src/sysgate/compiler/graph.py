"""The compiler's intermediate form: a hash-consed decision DAG.

A filter is a DAG of two node kinds: :class:`Ret` (return a constant) and
:class:`Test` (load a 32-bit word of ``struct seccomp_data``, optionally AND it
with a mask, compare, branch). Nodes are created only through a :class:`Graph`,
which returns the existing node for an identical request. Identical sub-trees
(the same argument check for several syscalls, the same return) therefore exist
once and become shared code, and a test whose branches agree disappears.

A test's outcome depends only on the word it reads, never on which path led
to it, so the layout stage may share or drop loads freely.
"""
from __future__ import annotations

from collections.abc import Iterator

from ..bpf.syntax import JUMP_OPS

MAX32 = 0xFFFFFFFF

#: Comparison operators, named after the BPF jumps they become.
OPS = tuple(JUMP_OPS)


class Node:
    __slots__ = ()


class Ret(Node):
    """``ret #k``."""

    __slots__ = ("k",)

    def __init__(self, k: int):
        self.k = k

    def __repr__(self) -> str:
        return f"Ret(0x{self.k:08x})"


class Test(Node):
    """``(word & mask) OP k ? t : f``; ``word`` is a byte offset in seccomp_data, ``mask``
    None means the whole word."""

    __slots__ = ("word", "mask", "op", "k", "t", "f")

    def __init__(self, word: int, mask: int | None, op: str, k: int, t: Node, f: Node):
        self.word, self.mask, self.op, self.k, self.t, self.f = word, mask, op, k, t, f

    @property
    def operand(self) -> tuple[int, int | None]:
        """What the test reads: ``(word, mask)``."""
        return self.word, self.mask

    def __repr__(self) -> str:
        m = f"&0x{self.mask:x}" if self.mask is not None else ""
        return f"Test([{self.word}]{m} {self.op} 0x{self.k:x})"


def decide(op: str, k: int, value: int) -> bool:
    """Evaluate ``value OP k`` as the BPF jump would."""
    if op == "jeq":
        return value == k
    if op == "jgt":
        return value > k
    if op == "jge":
        return value >= k
    return bool(value & k)


def static_outcome(op: str, k: int, mask: int | None) -> bool | None:
    """The outcome of a test that does not depend on the loaded word, else None."""
    top = MAX32 if mask is None else mask
    if op == "jge" and k == 0:
        return True
    if op == "jgt" and k >= top:
        return False
    if op == "jge" and k > top:
        return False
    if op == "jset" and not (k & top):
        return False
    if op == "jeq" and (k & ~top & MAX32):
        return False
    return None


class Graph:
    """Factory of canonical nodes (see the module docstring)."""

    def __init__(self):
        self._nodes: dict[tuple, Node] = {}

    def ret(self, k: int) -> Ret:
        key = ("ret", k & MAX32)
        node = self._nodes.get(key)
        if node is None:
            node = self._nodes[key] = Ret(k & MAX32)
        return node

    def test(self, word: int, op: str, k: int, t: Node, f: Node, mask: int | None = None) -> Node:
        """A canonical test node; folds tests with equal branches or a static outcome."""
        if op not in OPS:
            raise ValueError(f"unknown test {op!r}")
        if mask is not None:
            mask &= MAX32
            if mask == MAX32:
                mask = None
            elif mask == 0:
                return t if decide(op, k, 0) else f
        k &= MAX32
        if t is f:
            return t
        fixed = static_outcome(op, k, mask)
        if fixed is not None:
            return t if fixed else f
        key = ("test", word, mask, op, k, id(t), id(f))
        node = self._nodes.get(key)
        if node is None:
            node = self._nodes[key] = Test(word, mask, op, k, t, f)
        return node


def zero_path(node: Node, word: int | None = None) -> int:
    """Instructions a call whose tested words are all 0 executes from ``node`` to its return
    (a load whenever the word changes, an AND for a mask, the jump); ``word``: the word the
    accumulator holds on entry."""
    count = 0
    while isinstance(node, Test):
        count += (node.word != word) + (node.mask is not None) + 1
        word = node.word if node.mask is None else None
        node = node.t if decide(node.op, node.k, 0) else node.f
    return count


def walk(root: Node) -> Iterator[Node]:
    """Every node reachable from ``root``, each once (depth first, pre-order)."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        yield node
        if isinstance(node, Test):
            stack.append(node.f)
            stack.append(node.t)


def topological(*roots: Node) -> list[Node]:
    """Nodes under ``roots`` in an order where every node precedes its successors (reverse
    post-order, visiting ``t`` before ``f`` so that a node's false branch tends to follow it)."""
    order: list[Node] = []
    seen: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False) for root in reversed(roots)]
    while stack:
        node, done = stack.pop()
        if done:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        if isinstance(node, Test):
            # pushed last = explored first = finishes first = placed last
            stack.append((node.f, False))
            stack.append((node.t, False))
    order.reverse()
    return order
