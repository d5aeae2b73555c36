"""Replay recorded notifications into handlers, without a kernel, and compare the replies.

:class:`Dispatcher` answers :class:`~sysgate.testing.fake.FakeNotification` objects the
way the supervisor answers real ones (routed by the supervisor's own
:class:`~sysgate.supervisor.routing.Routes`; None -> default; exceptions -> ``on_error_errno``;
TargetGone -> no reply; a blocking handler runs in a thread and, past its deadline, the
call is answered ``on_error_errno`` and its late verdict dropped). :func:`replay` rebuilds
each recorded notification with the memory its handler read back then, dispatches it and
reports every reply that differs::

    header, records = record.load("calls.jsonl")
    d = Dispatcher.for_recording(header)
    d.on("openat", my_handler)
    report = replay(records, d)
    assert report.ok, report.format()
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from ..supervisor import DeadlineExceeded, Reply, TargetGone
from ..supervisor.notification import Deadline, answer_or_fail_closed, errno_value, send_claimed_error, share
from ..supervisor.routing import RegisteredHandler, Routes, no_handler
from .fake import FakeMemory, FakeNotification
from .record import decode_bytes, reply_dict, reply_from_dict

log = logging.getLogger("sysgate.testing")


class Dispatcher(Routes):
    """A kernel-free stand-in for :class:`~sysgate.supervisor.Supervisor`: the same handler
    tables (:class:`~sysgate.supervisor.routing.Routes`: ``on``, ``table``, ``fallback``,
    ``use_policy``, groups) and the same answer rule.

    Blocking handlers (``blocking``, or a ``deadline``: arguments or the handler's attributes, as
    for the supervisor) run in a thread of their own with the same deadline rule as the
    supervisor's workers: ``deadline``, else ``handler_timeout`` seconds.
    """

    def __init__(self, default: Reply | None = None, *, on_error_errno: int | str = "EPERM",
                 handler_timeout: float = 5.0):
        Routes.__init__(self)
        self.default = default if default is not None else Reply.errno("EPERM")
        self.on_error_errno = errno_value(on_error_errno)
        self.handler_timeout = handler_timeout

    @classmethod
    def for_recording(cls, header: dict) -> "Dispatcher":
        """A dispatcher with the default verdict and error errno the recording was made with."""
        default = reply_from_dict(header["default"]) if "default" in header else None
        return cls(default, on_error_errno=header.get("on_error_errno", "EPERM"))

    def dispatch(self, n) -> dict:
        """Answer ``n`` like the supervisor would; returns the outcome (see :func:`outcome`)."""
        handler = self.handler_for(self.group(n.group), n)
        if handler is not None and handler.blocking:
            exc = self._run_with_deadline(handler, n)
        else:
            fn = handler.fn if handler is not None else no_handler
            exc = answer_or_fail_closed(n, fn, self.default, self.on_error_errno)
        if isinstance(exc, TargetGone):
            return {"kind": "gone"}
        if exc is not None:
            log.debug("handler for %s failed: %r", n.syscall, exc)
            return {**outcome(n), "exception": repr(exc)}
        return outcome(n)

    def _run_with_deadline(self, handler: RegisteredHandler, n) -> Exception | None:
        """Run a blocking handler in a thread, as a supervisor worker does; at its deadline answer
        ``on_error_errno`` (returning DeadlineExceeded) and leave the thread behind: its late
        verdict is dropped."""
        timeout = handler.deadline if handler.deadline is not None else self.handler_timeout
        share(n, Deadline(time.monotonic() + timeout, n, handler))
        failure: list = []

        def work():
            failure.append(answer_or_fail_closed(n, handler.fn, self.default, self.on_error_errno))

        thread = threading.Thread(target=work, name="sysgate-replay-worker", daemon=True)
        thread.start()
        thread.join(timeout)
        if thread.is_alive() and n.claim_at_deadline():
            send_claimed_error(n, self.on_error_errno)
            return DeadlineExceeded(f"handler for {n.syscall} missed its {timeout:g}s deadline")
        thread.join(timeout)    # it answered just before the deadline: let it finish
        return failure[0] if failure else None


def outcome(n: FakeNotification) -> dict:
    """The reply ``n`` got, as recorded (``{"kind": "errno", "errno": 13}``…); kind "none"
    when it got none."""
    if n.verdict is None:
        return {"kind": "none"}
    return reply_dict(n.verdict, injected_fd=n.reply_kind == "inject_fd")


def run_handler(handler, n: FakeNotification, *, default: Reply | None = None, on_error_errno: int | str = "EPERM"):
    """Run ``handler(n)`` with the supervisor's rules and return the outcome (see
    :func:`outcome`): None means ``default``, a returned Reply is sent,
    TargetGone means no reply, any other exception (or a second reply) answers ``on_error_errno``."""
    dispatcher = Dispatcher(default, on_error_errno=on_error_errno)
    dispatcher.fallback(handler)
    return dispatcher.dispatch(n)


def notification_from_record(doc: dict) -> FakeNotification:
    """A fake notification carrying a record's registers and the memory read from it."""
    segments, faults, numbers = {}, {}, []
    for event in doc.get("io", ()):
        kind = event.get("kind")
        if kind == "addfd":
            numbers.append(event["result"])
        elif "errno" in event:
            faults[event["address"]] = event["errno"]
        elif kind in ("memory", "string") and ("text" in event or "base64" in event):
            data = decode_bytes(event)
            segments[event["address"]] = data + b"\0" if kind == "string" else data
    if doc["reply"].get("kind") == "inject_fd" and not numbers:
        numbers.append(doc["reply"]["value"])
    gone = doc["reply"].get("kind") == "gone"
    # the target is the replaying process (its root, cwd and credentials), never the recorded pid,
    # which may belong to an unrelated process by now
    return FakeNotification(doc["nr"], tuple(doc["args"]), arch=doc["arch"],
                            id=doc.get("id"), instruction_pointer=doc.get("ip", 0),
                            group=doc.get("group", "default"), memory=FakeMemory(segments, faults),
                            alive=not gone, fd_numbers=numbers or None)


@dataclass
class Difference:
    """One notification whose replayed reply differs from the recorded one."""

    index: int                   #: position in the recording (0 = first notification)
    line: int | None
    call: str                    #: ``openat(...)`` as recorded
    recorded: dict
    replayed: dict
    unrecorded_reads: list = field(default_factory=list)   #: (address, length) the replay could not serve

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line else f"#{self.index}"
        text = f"{where}: {self.call}: recorded {_reply_text(self.recorded)}, replayed {_reply_text(self.replayed)}"
        if self.unrecorded_reads:
            reads = ", ".join(f"{n} bytes at 0x{a:x}" for a, n in self.unrecorded_reads)
            text += f" (read memory that was not recorded: {reads})"
        return text


@dataclass
class ReplayReport:
    replayed: int = 0
    differences: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences

    def format(self) -> str:
        lines = [f"{self.replayed} notifications replayed, {len(self.differences)} differ"]
        lines += [f"  {d}" for d in self.differences]
        return "\n".join(lines)


def replay(records: list[dict], dispatcher: Dispatcher) -> ReplayReport:
    """Dispatch every record's notification and compare the replies with the recorded ones."""
    report = ReplayReport()
    for index, doc in enumerate(records):
        n = notification_from_record(doc)
        got = dispatcher.dispatch(n)
        report.replayed += 1
        expected = doc["reply"]
        if _comparable(got) != _comparable(expected):
            misses = list(n.memory.misses)
            report.differences.append(Difference(index, doc.get("line"), _call_text(doc, n), expected, got, misses))
    return report


def describe(doc: dict) -> str:
    """One record as a line: ``[pid 12] openat(...) -> errno EACCES``."""
    return f"[pid {doc.get('pid', 0)}] {_call_text(doc, notification_from_record(doc))} -> {_reply_text(doc['reply'])}"


def _comparable(reply: dict) -> dict:
    return {k: v for k, v in reply.items() if k != "exception"}


def _reply_text(reply: dict) -> str:
    kind = reply.get("kind")
    if kind == "errno":
        import errno

        text = f"errno {errno.errorcode.get(reply['errno'], reply['errno'])}"
    elif kind in ("value", "inject_fd"):
        text = f"{kind} {reply['value']}"
    else:
        text = str(kind)
    return text + (f" [{reply['exception']}]" if "exception" in reply else "")


def _call_text(doc: dict, n: FakeNotification) -> str:
    from ..handlers.decode import format_call

    try:
        return format_call(n)
    except Exception:
        return f"{doc.get('syscall', doc['nr'])}({', '.join(hex(a) for a in doc['args'])})"
