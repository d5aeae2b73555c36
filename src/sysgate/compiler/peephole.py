"""Clean-up passes on linear code, repeated until none changes anything.

* redundant loads: a load (or load + AND) of what the accumulator already holds
  on every path into it is dropped; a jump from a path where it holds the word
  already goes past the load; lines no path reaches are deleted on the way (every
  jump points forward, so one pass in order knows all of a line's predecessors,
  and those no path reaches tell it nothing);
* jump threading: a jump to a ``ja`` goes straight to its target, a ``ja`` to a
  ``ret`` becomes that ``ret``, a ``ja`` to the next line disappears;
* a conditional jump with both targets equal becomes a ``ja``.
"""
from __future__ import annotations

from .linear import AND, JA, LD, RET, Line

State = tuple | None  # ("ld", offset) | ("and", offset, mask) | None (unknown)


def _drop(lines: list[Line], dead: set[int]) -> list[Line]:
    """Delete lines by id; jumps to a deleted line go to the next kept one."""
    if not dead:
        return lines
    successor: dict[int, Line] = {}
    nxt = None
    for line in reversed(lines):
        if id(line) in dead:
            successor[id(line)] = nxt
        else:
            nxt = line
    kept = [line for line in lines if id(line) not in dead]
    for line in kept:
        if line.t is not None and id(line.t) in dead:
            line.t = successor[id(line.t)]
        if line.f is not None and id(line.f) in dead:
            line.f = successor[id(line.f)]
    return kept


def redundant_loads(lines: list[Line]) -> tuple[list[Line], bool]:
    incoming: dict[int, list[State]] = {}
    index = {id(line): i for i, line in enumerate(lines)}
    dead: set[int] = set()
    state: State = None
    falls = True  # into the first line as from one that falls through, knowing nothing
    moved = False

    def arrive(target: Line) -> Line:
        """Where a jump to ``target`` goes with ``state``: past a load of what it holds."""
        nonlocal moved
        if target.code == LD and state == ("ld", target.k):
            target = lines[index[id(target)] + 1]
            moved = True
        incoming.setdefault(id(target), []).append(state)
        return target

    for i, line in enumerate(lines):
        key = id(line)
        if key in dead:  # the AND of a dropped load pair
            continue
        states = incoming.get(key)
        if states is None:
            if not falls:  # no path reaches this line
                dead.add(key)
                continue
            states = []
        if falls:
            states.append(state)
        state = states[0] if states.count(states[0]) == len(states) else None
        code, falls = line.code, line.falls_through
        if code == LD:
            loaded = ("ld", line.k)
            if state == loaded:
                dead.add(key)
            elif (i + 1 < len(lines) and lines[i + 1].code == AND and id(lines[i + 1]) not in incoming
                  and state == ("and", line.k, lines[i + 1].k)):
                dead.update((key, id(lines[i + 1])))
            else:
                state = loaded
        elif code == AND:
            state = ("and", state[1], line.k) if state and state[0] == "ld" else None
        elif falls:
            state = None
        elif line.is_conditional:
            line.t, line.f = arrive(line.t), arrive(line.f)
        elif code == JA:
            line.t = arrive(line.t)
    return _drop(lines, dead), moved or bool(dead)


def thread_jumps(lines: list[Line]) -> tuple[list[Line], bool]:
    def final(target: Line) -> Line:
        while target.code == JA:
            target = target.t
        return target

    changed = False
    for line in lines:
        if line.is_conditional:
            t, f = final(line.t), final(line.f)
            changed |= t is not line.t or f is not line.f
            line.t, line.f = t, f
            if t is f:
                line.code, line.k, line.f = JA, 0, None
                changed = True
        if line.code == JA:
            t = final(line.t)
            changed |= t is not line.t
            line.t = t
            if t.code == RET:
                line.code, line.k, line.t = RET, t.k, None
                changed = True
    dead = {id(line) for line, after in zip(lines, lines[1:]) if line.code == JA and line.t is after}
    return _drop(lines, dead), changed or bool(dead)


#: Each pass returns the lines and whether it changed anything.
PASSES = (redundant_loads, thread_jumps)


def optimize(lines: list[Line]) -> list[Line]:
    """Run every pass until a round of them changes nothing."""
    changed = True
    while changed:
        changed = False
        for run in PASSES:
            lines, step = run(lines)
            changed |= step
    return lines
