"""The notification supervisor: one fail-closed event loop for many seccomp listeners.

>>> sup = Supervisor(default=Reply.errno("EPERM"))
>>> @sup.on("getppid")
... def fake_parent(n):
...     n.return_value(1)
>>> sup.add_target(launch.spawn(argv, policy))      # doctest: +SKIP
>>> sup.run_until_idle()                            # doctest: +SKIP
"""
from __future__ import annotations

from .loop import Group, Listener, Stats, Supervisor
from .notification import DeadlineExceeded, Notification, Reply, ReplyError, TargetGone

__all__ = ["Supervisor", "Notification", "Reply", "Listener", "Group", "Stats", "TargetGone", "ReplyError",
           "DeadlineExceeded"]
