"""Argument conditions -> decision DAG.

``condition(expr, t, f)`` returns a node that goes to ``t`` when ``expr`` holds
and to ``f`` otherwise, as short-circuit jump code: ``Not`` swaps the targets
(De Morgan pushed down to the comparisons for free), ``And``/``Or`` chain their
items. Comparisons of 64-bit arguments work on two 32-bit words: equality tests
the low word first (it usually decides), ordering tests the high word first and
the low word only when the high words are equal. ``Cmp.width == 32`` compares the
low word only. On 32-bit architectures every argument is a 32-bit register (its high
word is 0 in seccomp_data): a constant that is the zero- or sign-extension of its low
word (``7``, ``-1``) is compared on that low word, as libseccomp does; any other 64-bit
constant decides the comparison by itself (``arg < 0x100000000`` always holds), where
libseccomp would compare its truncated low word and let a deny rule fail open.
"""
from __future__ import annotations

from ..arch import table
from ..kernel import abi
from ..policy.model import And, Cmp, Expr, Not, Or
from .graph import MAX32, Graph, Node


class ArgLayout:
    """Where the halves of each argument live for one architecture."""

    def __init__(self, arch: str):
        self.big_endian = abi.is_big_endian(arch)
        self.narrow = table.get(abi.canonical_arch(arch)).arg_bits == 32    # not x32: 64-bit registers

    def lo(self, index: int) -> int:
        return abi.offset_arg(index) + (4 if self.big_endian else 0)

    def hi(self, index: int) -> int:
        return abi.offset_arg(index) + (0 if self.big_endian else 4)


class ConditionCompiler:
    """Builds condition nodes for one architecture in one :class:`Graph`."""

    def __init__(self, graph: Graph, layout: ArgLayout):
        self.g, self.layout = graph, layout

    def condition(self, expr: Expr, t: Node, f: Node) -> Node:
        if isinstance(expr, Not):
            return self.condition(expr.item, f, t)
        if isinstance(expr, And):
            node = t
            for item in reversed(expr.items):
                node = self.condition(item, node, f)
            return node
        if isinstance(expr, Or):
            node = f
            for item in reversed(expr.items):
                node = self.condition(item, t, node)
            return node
        if isinstance(expr, Cmp):
            return self.compare(expr, t, f)
        raise TypeError(f"not a condition: {expr!r}")

    # --- comparisons ---------------------------------------------------------
    def compare(self, cmp: Cmp, t: Node, f: Node) -> Node:
        if cmp.width == 64 and self.layout.narrow and not extends_low_word(cmp.value):
            # A 32-bit architecture's argument has a high word of 0 in seccomp_data, and this
            # constant does not fit in 32 bits: the comparison is decided without the argument
            # (a < v, a <= v and a != v hold; the rest never do) instead of on a truncated constant.
            return t if cmp.op in ("<", "<=", "!=") else f
        wide = cmp.width == 64 and not self.layout.narrow
        value = cmp.value if wide else cmp.value & MAX32
        mask = None if cmp.mask is None else (cmp.mask if wide else cmp.mask & MAX32)
        lo, hi = self.layout.lo(cmp.arg), (self.layout.hi(cmp.arg) if wide else None)
        op = cmp.op
        if op in ("==", "!=", "&=="):
            hit, miss = (f, t) if op == "!=" else (t, f)
            return self._equal(lo, hi, value, mask, hit, miss)
        if op in (">", ">=", "<", "<="):
            # a < v is not (a >= v); a <= v is not (a > v)
            hit, miss = (t, f) if op[0] == ">" else (f, t)
            return self._greater(lo, hi, value, op in (">=", "<"), hit, miss)
        raise ValueError(f"unknown comparison {op!r}")

    def _equal(self, lo: int, hi: int | None, value: int, mask: int | None, t: Node, f: Node) -> Node:
        """``(arg & mask) == value``; the low word first."""
        full = (1 << 64) - 1 if hi is not None else MAX32
        mask = full if mask is None else mask
        if value & ~mask:
            return f
        node = t
        if hi is not None:
            node = self._word_equal(hi, value >> 32, mask >> 32, node, f)
        return self._word_equal(lo, value & MAX32, mask & MAX32, node, f)

    def _word_equal(self, word: int, value: int, mask: int, t: Node, f: Node) -> Node:
        if mask == 0:
            return t
        if mask == MAX32:
            return self.g.test(word, "jeq", value, t, f)
        if value == 0:  # no bit of the mask set
            return self.g.test(word, "jset", mask, f, t)
        if value == mask and mask & (mask - 1) == 0:  # the single bit set
            return self.g.test(word, "jset", mask, t, f)
        return self.g.test(word, "jeq", value, t, f, mask=mask)

    def _greater(self, lo: int, hi: int | None, value: int, or_equal: bool, t: Node, f: Node) -> Node:
        """``arg > value`` (``>=`` when ``or_equal``): high words decide unless equal."""
        op = "jge" if or_equal else "jgt"
        low = self.g.test(lo, op, value & MAX32, t, f)
        if hi is None:
            return low
        vh = value >> 32
        return self.g.test(hi, "jgt", vh, t, self.g.test(hi, "jeq", vh, low, f))


def _comparisons(expr: Expr | None):
    if isinstance(expr, Cmp):
        yield expr
    elif isinstance(expr, Not):
        yield from _comparisons(expr.item)
    elif isinstance(expr, (And, Or)):
        for item in expr.items:
            yield from _comparisons(item)


def extends_low_word(value: int) -> bool:
    """True when ``value`` is the zero- or sign-extension of its low 32 bits (-1, 7, ...)."""
    high = value >> 32
    return high == 0 or (high == MAX32 and bool(value & 0x80000000))


def narrowed_constants(policy, arches: list[str]) -> list[str]:
    """Warnings for the 64-bit constants and masks of ``policy`` that a filter for a 32-bit
    architecture among ``arches`` cannot test as written (its arguments are one 32-bit
    register): such a constant decides its comparison alone (:meth:`ConditionCompiler.compare`),
    such a mask is applied on its low word. Constants that are the zero- or sign-extension of
    their low word (``-1``) keep their meaning."""
    from ..arch import syscalls

    narrow = [a for a in arches if ArgLayout(a).narrow]
    found: dict[str, None] = {}
    for rule in policy.rules if narrow else ():
        if rule.condition is None:
            continue
        on = [a for a in narrow if syscalls.number(a, rule.syscall) is not None]
        for cmp in _comparisons(rule.condition) if on else ():
            for what, value in (("constant", cmp.value), ("mask", cmp.mask)):
                if cmp.width == 64 and value is not None and not extends_low_word(value):
                    where = f"{rule.source[0]}:{rule.source[1]}: " if rule.source else ""
                    if what == "constant":
                        holds = "always holds" if cmp.op in ("<", "<=", "!=") else "never holds"
                        effect = f"arg{cmp.arg} {cmp.op} {value:#x} {holds} there (the high word is 0)"
                    else:
                        effect = f"the mask {value:#x} of arg{cmp.arg} is applied as {value & MAX32:#x} there"
                    found[f"{where}{rule.syscall}: arguments are 32 bits on {', '.join(on)}: {effect}"] = None
    return list(found)
