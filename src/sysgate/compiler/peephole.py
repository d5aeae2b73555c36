"""Clean-up passes on linear code, repeated until none changes anything.

* redundant loads: a load (or load + AND) of what the accumulator already holds
  on every path into it is dropped; a jump from a path where it holds the word
  already goes past the load;
* jump threading: a jump to a ``ja`` goes straight to its target, a ``ja`` to a
  ``ret`` becomes that ``ret``, a ``ja`` to the next line disappears;
* a conditional jump with both targets equal becomes a ``ja``;
* lines no path reaches are deleted.
"""
from __future__ import annotations

from .linear import AND, JA, LD, Line

State = tuple | None  # ("ld", offset) | ("and", offset, mask) | None (unknown)


def _after(line: Line, state: State) -> State:
    if line.code == LD:
        return ("ld", line.k)
    if line.code == AND:
        return ("and", state[1], line.k) if state and state[0] == "ld" else None
    if line.falls_through:
        return None
    return state


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


def redundant_loads(lines: list[Line]) -> list[Line]:
    incoming: dict[int, list[State]] = {}
    index = {id(line): i for i, line in enumerate(lines)}
    dead: set[int] = set()
    state: State = None
    for i, line in enumerate(lines):
        if id(line) in dead:  # the AND of a dropped load pair
            continue
        states = incoming.get(id(line), [])
        if i == 0:
            states.append(None)
        elif lines[i - 1].falls_through:
            states.append(state)
        state = states[0] if states and all(s == states[0] for s in states) else None
        if line.code == LD and state == ("ld", line.k):
            dead.add(id(line))
        elif (line.code == LD and i + 1 < len(lines) and lines[i + 1].code == AND
              and id(lines[i + 1]) not in incoming and state == ("and", line.k, lines[i + 1].k)):
            dead.update((id(line), id(lines[i + 1])))
        else:
            state = _after(line, state)
        for attr in ("t", "f") if line.is_conditional else ("t",) if line.is_ja else ():
            target = getattr(line, attr)
            if target.code == LD and state == ("ld", target.k):  # this edge needs no reload
                target = lines[index[id(target)] + 1]
                setattr(line, attr, target)
            incoming.setdefault(id(target), []).append(state)
    return _drop(lines, dead)


def thread_jumps(lines: list[Line]) -> list[Line]:
    def final(target: Line) -> Line:
        while target.is_ja:
            target = target.t
        return target

    index = {id(line): i for i, line in enumerate(lines)}
    for i, line in enumerate(lines):
        if line.is_conditional:
            line.t, line.f = final(line.t), final(line.f)
            if line.t is line.f:
                line.code, line.k, line.f = JA, 0, None
        if line.is_ja:
            line.t = final(line.t)
            if line.t.is_ret:
                line.code, line.k, line.t = line.t.code, line.t.k, None
    dead = {id(line) for i, line in enumerate(lines)
            if line.is_ja and index[id(line.t)] == i + 1}
    return _drop(lines, dead)


def unreachable(lines: list[Line]) -> list[Line]:
    reached: set[int] = set()
    if lines:
        reached.add(id(lines[0]))
    for i, line in enumerate(lines):
        if id(line) not in reached:
            continue
        reached.update(id(t) for t in line.targets())
        if line.falls_through and i + 1 < len(lines):
            reached.add(id(lines[i + 1]))
    return [line for line in lines if id(line) in reached]


PASSES = (redundant_loads, thread_jumps, unreachable)


def optimize(lines: list[Line]) -> list[Line]:
    """Run every pass until the code stops changing."""
    while True:
        before = [(line.code, line.k, id(line.t), id(line.f)) for line in lines]
        for run in PASSES:
            lines = run(lines)
        if [(line.code, line.k, id(line.t), id(line.f)) for line in lines] == before:
            return lines
