"""Symbolic constants usable in policies (``EPERM``, ``O_WRONLY``, ``AF_UNIX``, ``TIOCSTI``…).

The table is ``sysgate/data/constants.json``, generated from the Linux and libc
headers by ``tools/gen_constants.py`` (values of the machine that generated it,
x86_64; a few flags such as ``O_DIRECTORY`` differ on other architectures).
"""
from __future__ import annotations

import errno
import json
import os
from functools import lru_cache

from ..arch.numbers import DATA


@lru_cache(maxsize=None)
def table() -> dict[str, int]:
    """Every known constant, name -> value."""
    with open(os.path.join(DATA, "constants.json"), encoding="utf-8") as fh:
        return json.load(fh)["constants"]


def lookup(name: str) -> int | None:
    """The value of ``name``, or None if unknown."""
    return table().get(name)


def errno_by_name(name: str) -> int | None:
    """The value of an errno name (``EPERM``), or None."""
    value = table().get(name)
    return value if value is not None and hasattr(errno, name) else None


def similar(name: str, n: int = 3) -> list[str]:
    """Known constant names that look like ``name`` (for "did you mean")."""
    import difflib

    return difflib.get_close_matches(name.upper(), table(), n=n, cutoff=0.75)
