"""Path guards: the handlers under test in the record/replay tests (also imported by the
``--handlers`` module a test writes for ``sysgate replay``)."""
from __future__ import annotations

from sysgate.supervisor import Reply


def guard(n):
    """The handler under test: refuse paths containing "secret", let the rest run."""
    path = n.read_string(n.args[1])
    if b"secret" in path:
        return Reply.errno("EACCES")
    return Reply.continue_()


def stricter_guard(n):
    path = n.read_string(n.args[1])
    if b"secret" in path or b"public" in path:
        return Reply.errno("EPERM")
    return Reply.continue_()
