"""Compile small C attack and target programs once per session (64-bit, or i386 with ``-m32``)."""
from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile

_CACHE = os.path.join(tempfile.gettempdir(), f"sysgate-cprog-{os.getuid()}")


def cprog(source: str, *, m32: bool = False, flags: tuple[str, ...] = ()) -> str:
    """The path of ``source`` (C text) compiled with gcc; cached by content and flags."""
    args = ["-O1", "-pthread", *(["-m32"] if m32 else []), *flags]
    key = hashlib.sha256(("\0".join(args) + "\0" + source).encode()).hexdigest()[:20]
    os.makedirs(_CACHE, exist_ok=True)
    out = os.path.join(_CACHE, key)
    if not os.path.exists(out):
        src = out + ".c"
        with open(src, "w") as f:
            f.write(source)
        tmp = out + f".{os.getpid()}.tmp"
        subprocess.run(["gcc", *args, "-o", tmp, src], check=True)
        os.replace(tmp, out)
    return out
