"""Decoding JSON profiles strictly, and naming places and values in them for error messages.

``json.loads`` alone would raise RecursionError on deeply nested input (a traceback, not
an error message), keep the last of two equal keys silently, and accept NaN/Infinity.
"""
from __future__ import annotations

import json
import os
import re
from itertools import accumulate
from sys import intern

from ..errors import SourceError

#: Deepest nesting of arrays/objects accepted (real profiles need 5; config.json about 8).
MAX_DEPTH = 64

_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_DELTA = {"[": 1, "{": 1, "]": -1, "}": -1}


def decode(text: str, filename: str):
    """The JSON value of ``text``; SourceError (with line and column when known) on invalid
    JSON, nesting deeper than :data:`MAX_DEPTH`, duplicate keys, NaN or Infinity."""
    text = text.removeprefix("\ufeff")             # a byte order mark, as some editors write
    _check_depth(text, filename)
    try:
        return json.loads(text, object_pairs_hook=_object, parse_constant=_constant)
    except json.JSONDecodeError as exc:
        raise SourceError(f"invalid JSON: {exc.msg}", filename, exc.lineno, exc.colno) from None
    except _Invalid as exc:
        raise SourceError(f"invalid JSON: {exc}", filename) from None
    except ValueError as exc:           # e.g. an integer of more than sys.get_int_max_str_digits() digits
        raise SourceError(f"invalid JSON: {exc}", filename) from None


def _check_depth(text: str, filename: str) -> None:
    """Brackets outside strings nest at most MAX_DEPTH deep. A C-speed scan: everything but
    brackets removed, then a running sum; brackets inside strings are removed first only when
    the quick count exceeds the limit."""
    if text.count("[") + text.count("{") <= MAX_DEPTH or _depth(text) <= MAX_DEPTH:
        return
    if _depth(_STRING.sub("", text)) > MAX_DEPTH:
        raise SourceError(f"JSON nested deeper than {MAX_DEPTH} levels (the limit for profiles)", filename)


def _depth(text: str) -> int:
    brackets = _NOT_BRACKET.sub("", text)
    return max(accumulate(map(_DELTA.__getitem__, brackets)), default=0)


class _Invalid(ValueError):
    pass


def _object(pairs: list) -> dict:
    """An object without duplicate keys. String values, and strings in lists, are interned:
    a profile repeats the same few (``SCMP_ACT_ALLOW``, syscall names) up to millions of times."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set = set()
        for key, _ in pairs:
            if key in seen:
                raise _Invalid(f"the key {short(key)} appears twice in one object")
            seen.add(key)
    for key, value in pairs:
        if type(value) is str:
            obj[key] = intern(value)
        elif type(value) is list and value and type(value[0]) is str:
            value[:] = [intern(v) if type(v) is str else v for v in value]
    return obj


def _constant(name: str):
    raise _Invalid(f"{name} is not a JSON number")


def member(where: str, key: str) -> str:
    """The JSON path of ``key`` in the object at ``where`` (``$.syscalls``, ``$["a b"]``)."""
    plain = isinstance(key, str) and key.isidentifier() and key.isascii()
    return f"{where}.{key}" if plain else f"{where}[{short(key)}]"


def short(value, limit: int = 40) -> str:
    """``value`` for a message: JSON text of a scalar (cut at ``limit``), else its kind."""
    if isinstance(value, (list, dict)):
        return kind(value)
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):         # not a JSON value (a Python caller's tuple, ...)
        text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def kind(value) -> str:
    """What a JSON value is, for "must be a string, not a list"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "a number"
    return {float: "a non-integer number", str: "a string", list: "a list", dict: "an object"}.get(type(value),
                                                                                                   type(value).__name__)


def did_you_mean(word, candidates, cutoff: float = 0.6) -> str:
    """``; did you mean 'X'?`` for the closest of ``candidates``, or ``""``."""
    if not isinstance(word, str) or len(word) > 200:
        return ""
    import difflib      # here: only a mistake needs it, not every profile read

    candidates = list(candidates)
    prefix = os.path.commonprefix(candidates) if len(candidates) > 1 else ""
    if prefix and word.startswith(prefix):      # SCMP_ACT_FROB: compare FROB with ALLOW, ERRNO, ...
        match = difflib.get_close_matches(word[len(prefix):], [c[len(prefix):] for c in candidates], 1, cutoff)
        match = [prefix + m for m in match]
    else:
        match = difflib.get_close_matches(word, candidates, n=1, cutoff=cutoff)
    return f"; did you mean {match[0]!r}?" if match else ""

