"""Decision DAG -> linear code: layout, shared returns and jump trampolines.

Tests are laid out in topological order (a node's false branch right after it
when possible); each distinct return value becomes one ``ret`` at the end that
every path to it shares. A conditional jump reaches at most 255 instructions, so
:func:`fix_far_jumps` repairs longer ones: to a ``ret`` by retargeting to (or
placing) a copy of the ``ret`` within reach, which costs nothing at run time;
elsewhere through a ``ja`` trampoline, shared by every jump that can reach it.
"""
from __future__ import annotations

from .graph import Node, Ret, Test, topological
from .program import CompileError
from .linear import AND, JA, LD, MAX_OFFSET, RET, Line, positions


def layout(root: Node) -> list[Line]:
    """Lines for the DAG under ``root``: tests first, then one ``ret`` per value."""
    order = topological(root)
    tests = [n for n in order if isinstance(n, Test)]
    rets = [n for n in order if isinstance(n, Ret)]
    lines: list[Line] = []
    head: dict[int, Line] = {}
    jumps: list[tuple[Line, Test]] = []
    for node in tests:
        first = Line(LD, node.word)
        lines.append(first)
        if node.mask is not None:
            lines.append(Line(AND, node.mask))
        jump = Line.jump(node.op, node.k)
        lines.append(jump)
        jumps.append((jump, node))
        head[id(node)] = first
    for node in rets:
        line = Line(RET, node.k)
        lines.append(line)
        head[id(node)] = line
    for jump, node in jumps:
        jump.t, jump.f = head[id(node.t)], head[id(node.f)]
    return lines


def _reach(lines: list[Line], i: int, target: Line) -> Line:
    """A line within reach of the jump at ``i`` that leads to ``target``: an existing copy of
    the ``ret`` or a trampoline to the same place, else a new one placed right after the jump.
    A line placed there moves with its jump, so insertions elsewhere never break it again:
    every jump is repaired at most once per branch by insertion, and the repair terminates."""
    while target.is_ja:  # never chain trampolines
        target = target.t
    for line in lines[i + 1:i + 2 + MAX_OFFSET]:
        if (target.is_ret and line.is_ret and line.k == target.k) or (line.is_ja and line.t is target):
            return line
    new = Line(RET, target.k) if target.is_ret else Line(JA, 0, target)
    lines.insert(i + 1, new)
    return new


def fix_far_jumps(lines: list[Line]) -> list[Line]:
    """Make every conditional jump reach its targets (in place; returns ``lines``)."""
    for _ in range(4 * len(lines) + 16):
        pos = positions(lines)
        far = next(((i, line) for i, line in enumerate(lines) if line.is_conditional
                    and max(pos[id(line.t)], pos[id(line.f)]) - i - 1 > MAX_OFFSET), None)
        if far is None:
            return lines
        i, line = far
        if pos[id(line.t)] - i - 1 > MAX_OFFSET:
            line.t = _reach(lines, i, line.t)
        else:
            line.f = _reach(lines, i, line.f)
    raise CompileError("internal error: jump trampolines do not converge")
