"""Syscall numbers per architecture, from ``data/syscalls/<arch>.json`` (tools/gen_syscall_tables.py).

The bottom of the name/number lookup, beside the architecture table (sysgate.arch is the bottom
layer: it imports nothing else of sysgate but errors): :mod:`sysgate.kernel.calls` makes syscalls
by name with it, and :mod:`.syscalls` builds the public lookups (suggestions, signatures) on it.
Each table is read once, on first use.
"""
from __future__ import annotations

import os
from functools import cache

from . import table

#: The directory of sysgate's generated data files.
DATA = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data")


@cache
def arch_tables(arch: str) -> tuple[dict[str, int], dict[str, int], dict[int, str]]:
    """(canonical name -> nr, name incl. aliases -> nr, nr -> canonical name) for the canonical ``arch``."""
    import json     # here: json imports re, and a launch (kernel.calls) may need no table at all

    with open(os.path.join(DATA, "syscalls", table.get(arch).table_file), encoding="utf-8") as fh:
        raw = json.load(fh)
    canonical = dict(raw["syscalls"])
    lookup = dict(canonical)
    lookup.update({alias: canonical[target] for alias, target in raw.get("aliases", {}).items()})
    reverse: dict[int, str] = {}
    for nm, nr in canonical.items():
        reverse.setdefault(nr, nm)
    return canonical, lookup, reverse
