"""Tokenizer of the policy language (see :mod:`sysgate.policy.parser` for the language).

Newlines end statements except inside ``( )`` and ``{ }`` or after a
backslash, so long conditions can span several lines. Strings are double-quoted,
with JSON's escapes.
"""
from __future__ import annotations

import json
import re
from sys import intern
from dataclasses import dataclass

from ..errors import SourceError


@dataclass(frozen=True, slots=True)
class Token:
    kind: str      # NAME GROUP NUMBER STRING OP NEWLINE EOF
    text: str
    line: int
    column: int
    value: int | str | None = None   # NUMBER: its value; STRING: the text it stands for


_TOKEN = re.compile(r"""
    (?P<space>[ \t\r\f]+|\\\r?\n|\#[^\n]*)
  | (?P<newline>\n)
  | (?P<number>0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+|[0-9][0-9_]*)(?P<bad>[A-Za-z_][A-Za-z0-9_]*)?
  | (?P<group>@[A-Za-z0-9][A-Za-z0-9_-]*(?::[A-Za-z0-9][A-Za-z0-9_-]*)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<string>"(?:[^"\\\n]|\\[^\n])*")
  | (?P<op>->|==|!=|<=|>=|&&|\|\||[<>!&|~(){},:-])
""", re.VERBOSE)

_CLOSE = {"(": ")", "{": "}"}
_KINDS = {"name": "NAME", "group": "GROUP", "op": "OP"}


def tokenize(text: str, filename: str) -> list[Token]:
    """Split ``text`` into tokens; raises SourceError on characters outside the language
    and on unbalanced brackets."""
    return list(iter_tokens(text, filename))


def iter_tokens(text: str, filename: str):
    """:func:`tokenize` one token at a time, so a parser holds only the statement it reads
    (a million-line policy would otherwise be tens of millions of objects at once). Names and
    operators are interned: they repeat."""
    stack: list[Token] = []          # open brackets
    line, line_start, pos = 1, 0, 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        column = pos - line_start + 1
        if not m:
            ch = text[pos]
            hint = " (strings use double quotes)" if ch == "'" else ""
            raise SourceError(f"unexpected character {ch!r}{hint}", filename, line, column)
        kind = m.lastgroup if m.lastgroup != "bad" else "number"
        chunk = m.group(0)
        if m.group("bad"):
            raise SourceError(f"malformed number {chunk!r}", filename, line, column)
        if kind == "newline":
            if not stack:
                yield Token("NEWLINE", "\n", line, column)
        elif kind == "number":
            yield Token("NUMBER", chunk, line, column, _number(chunk, filename, line, column))
        elif kind == "string":
            yield Token("STRING", chunk, line, column, _string(chunk, filename, line, column))
        elif kind != "space":
            tok = Token(_KINDS[kind], intern(chunk), line, column)
            if chunk in _CLOSE:
                stack.append(tok)
            elif chunk in (")", "}"):
                if not stack:
                    raise SourceError(f"unmatched {chunk!r}", filename, line, column)
                opener = stack.pop()
                if _CLOSE[opener.text] != chunk:
                    raise SourceError(f"{chunk!r} does not match {opener.text!r} opened at "
                                      f"{opener.line}:{opener.column}", filename, line, column)
            yield tok
        # advance the line counter over everything consumed
        newlines = chunk.count("\n")
        if newlines:
            line += newlines
            line_start = pos + chunk.rfind("\n") + 1
        pos = m.end()
    if stack:
        opener = stack[-1]
        raise SourceError(f"{opener.text!r} is never closed", filename, opener.line, opener.column)
    yield Token("NEWLINE", "\n", line, pos - line_start + 1)
    yield Token("EOF", "", line, pos - line_start + 1)


def _string(text: str, filename: str, line: int, column: int) -> str:
    """A double-quoted string with JSON's escapes (``\\"``, ``\\\\``, ``\\n``, ``\\u00e9``)."""
    try:
        return json.loads(text, strict=False)
    except ValueError as exc:
        raise SourceError(f"malformed string {text[:40]!r}: {getattr(exc, 'msg', exc)}", filename, line,
                          column) from None


def _number(text: str, filename: str, line: int, column: int) -> int:
    """Decimal, 0x hex, 0o or C-style leading-zero octal, 0b binary; ``_`` separators allowed."""
    digits = text.replace("_", "")
    try:
        if len(digits) > 1 and digits[0] == "0" and digits[1].isdigit():
            return int(digits, 8)
        return int(digits, 0)
    except ValueError:
        raise SourceError(f"malformed number {text!r}", filename, line, column) from None
