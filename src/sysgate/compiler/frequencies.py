"""Syscall frequency files for ``compile_policy(..., frequencies=...)``.

Either a JSON object ``{"read": 120, "futex": 80, ...}`` or text, one syscall a
line: ``read 120``, ``read: 120`` or ``120 read``; ``#`` starts a comment. Only
the ratios matter; syscalls not listed count as (almost) never called.
"""
from __future__ import annotations

import json

from ..errors import SourceError
from ..files import read_text


def parse_frequencies(text: str, filename: str = "<frequencies>") -> dict[str, float]:
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SourceError(f"invalid JSON: {exc.msg}", filename, exc.lineno, exc.colno) from None
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in data.values()):
            raise SourceError("every value must be a number", filename)
        return _checked({str(k): float(v) for k, v in data.items()}, filename)
    out: dict[str, float] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].replace(":", " ").split()
        if not words:
            continue
        if len(words) != 2:
            raise SourceError("expected 'SYSCALL WEIGHT'", filename, lineno)
        name, weight = (words[1], words[0]) if _number(words[0]) is not None else words
        value = _number(weight)
        if value is None:
            raise SourceError(f"{weight!r} is not a number", filename, lineno)
        out[name] = out.get(name, 0.0) + value
    return _checked(out, filename)


def load_frequencies(path: str) -> dict[str, float]:
    return parse_frequencies(read_text(path, "frequencies"), path)


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _checked(weights: dict[str, float], filename: str) -> dict[str, float]:
    bad = [name for name, w in weights.items() if not w >= 0]
    if bad:
        raise SourceError(f"negative or invalid weight for {', '.join(bad)}", filename)
    return weights
