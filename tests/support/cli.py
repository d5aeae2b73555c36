"""The ``sysgate`` command in a subprocess, as a user runs it (``python -m sysgate`` of this tree)."""
from __future__ import annotations

import subprocess
import sys

SYSGATE = [sys.executable, "-m", "sysgate"]


def sysgate(*args, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    """``sysgate ARGS`` (each made a string) to completion, its output captured as text;
    ``timeout`` only bounds a hang."""
    return subprocess.run([*SYSGATE, *map(str, args)], capture_output=True, text=True, timeout=timeout, **kw)
