"""Run a function in a forked child and bring back its JSON result (filters installed there stay there)."""
from __future__ import annotations

import json
import os


def call_in_child(fn, *, on_error=None):
    """``fn()`` in a forked child: (exit code, its JSON-encodable result or None).

    Exit code 0 when ``fn`` returned; 3 when it raised, and then the result is
    ``on_error(exc)`` (None without ``on_error``).
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            os.close(r)
            os.write(w, json.dumps(fn()).encode())
            code = 0
        except BaseException as exc:
            if on_error is not None:
                try:
                    os.write(w, json.dumps(on_error(exc)).encode())
                except BaseException:
                    pass
        finally:
            os._exit(code)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), (json.loads(data) if data else None)
