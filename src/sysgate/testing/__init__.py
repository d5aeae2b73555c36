"""Test seccomp handlers without root and without a kernel listener.

* :class:`FakeNotification` — a real :class:`~sysgate.supervisor.Notification` built from
  ``(syscall, args, memory)``; replies are captured (``reply_kind``, ``verdict``).
* :func:`run_handler` / :class:`Dispatcher` — answer fakes with the supervisor's rules.
* :class:`Recorder` — wrap handlers on a real supervisor to save every notification, the
  memory its handler read and the reply (JSON lines).
* :func:`replay` — feed a recording back into handlers and report differing replies
  (``sysgate replay FILE --handlers MODULE``).
"""
from __future__ import annotations

from .fake import FakeListener, FakeMemory, FakeNotification
from .record import Recorder, load
from .replay import Difference, Dispatcher, ReplayReport, notification_from_record, outcome, replay, run_handler

__all__ = ["FakeNotification", "FakeMemory", "FakeListener", "run_handler", "Recorder", "load", "Dispatcher",
           "replay", "ReplayReport", "Difference", "outcome", "notification_from_record"]
