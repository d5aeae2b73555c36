"""The notification supervisor: one fail-closed event loop for many seccomp listeners.

::

    from sysgate.process import launch
    from sysgate.supervisor import Reply, Supervisor

    with Supervisor(default=Reply.errno("EPERM")) as sup:
        @sup.on("getppid")
        def fake_parent(n):
            return Reply.value(1)

        sup.add_target(launch.spawn(argv, policy))
        sup.run_until_idle()

Modules: :mod:`.loop` (the epoll loop, listeners, groups, lifecycle), :mod:`.notification`
(decoding, memory reads, replies), :mod:`.memory` (reading target memory), :mod:`.workers`
(per-handler worker threads for blocking handlers, stuck ones written off), :mod:`.processes`
(``Supervisor(processes=N)``: the loop in N forked processes, for several CPUs), :mod:`.asyncio`
(running inside asyncio).
"""
from __future__ import annotations

from .loop import Group, Listener, Stats, Supervisor
from .notification import DeadlineExceeded, Notification, Reply, ReplyError, TargetGone

__all__ = ["Supervisor", "Notification", "Reply", "Listener", "Group", "Stats", "TargetGone", "ReplyError",
           "DeadlineExceeded"]
