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
    """Lines for the DAG under ``root``: tests in topological order, then the ``ret`` s.

    Each distinct return value is emitted once per *pool*: normally one pool at the end;
    in programs too long for a jump to reach it, an extra pool is flushed (between two
    blocks, where execution never falls through) just before the oldest pending jump
    to a ``ret`` would lose reach."""
    if isinstance(root, Ret):
        return [Line(RET, root.k)]
    blocks: list[tuple[list[Line], Test]] = []
    head: dict[int, Line] = {}
    for node in topological(root):
        if isinstance(node, Test):
            block = [Line(LD, node.word)]
            if node.mask is not None:
                block.append(Line(AND, node.mask))
            block.append(Line.jump(node.op, node.k))
            blocks.append((block, node))
            head[id(node)] = block[0]
    out: list[Line] = []
    pending: dict[int, list[tuple[Line, str]]] = {}  # ret value -> jumps waiting for it
    oldest = 0  # index of the oldest jump in ``pending``

    def flush() -> None:
        for k, waiting in pending.items():
            line = Line(RET, k)
            out.append(line)
            for jump, attr in waiting:
                setattr(jump, attr, line)
        pending.clear()

    for block, node in blocks:
        if pending and len(out) + len(block) + len(pending) + 2 > oldest + 1 + MAX_OFFSET:
            flush()
        out.extend(block)
        jump = block[-1]
        for attr, target in (("t", node.t), ("f", node.f)):
            if isinstance(target, Ret):
                if not pending:
                    oldest = len(out) - 1
                pending.setdefault(target.k, []).append((jump, attr))
            else:
                setattr(jump, attr, head[id(target)])
    flush()
    return out


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
