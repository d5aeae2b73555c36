"""``audit``: a JSON-lines record of every notified syscall, and a summary table at exit.

Each record holds the time, pid, syscall, the strace-style call (:mod:`.decode`), the
verdict, the result and the handler's latency in microseconds::

    {"time": 1700000000.123, "pid": 42, "syscall": "openat", "call": "openat(AT_FDCWD, \\"/etc/hosts\\", O_RDONLY)",
     "verdict": "fd", "result": "= 3", "latency_us": 81.2, "handler": "fs"}

Two uses:

* **wrapping** another handler (``AuditHandler(log, inner=FsHandler(...))``): the inner
  handler decides; the audit records what it decided (also replies it sent itself, e.g.
  an injected fd). This is how audit composes with enforcement.
* **alone**: every syscall it is given is answered with CONTINUE. That is auditing only,
  *not* enforcement: the kernel runs the call as the target asked, and what the record
  shows for memory arguments may differ from what the kernel then read.

``verdict`` is one of ``value``, ``fd``, ``errno``, ``continue``, ``default`` (the
handler left the answer to the supervisor's default), ``gone`` or ``error``.
"""
from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter, defaultdict

from ..supervisor import Reply, TargetGone
from .base import Handler
from .decode import format_call, format_reply

_CONTINUE = Reply.continue_()


class AuditLog:
    """Where records go (a path, a text stream or None) plus per-syscall statistics."""

    def __init__(self, sink=None, *, strings: bool = True, max_string: int = 96):
        self._own = isinstance(sink, str)
        self.stream = open(sink, "a", encoding="utf-8", buffering=1) if self._own else sink
        self.strings, self.max_string = strings, max_string
        self.counts: Counter = Counter()
        self.verdicts: dict[str, Counter] = defaultdict(Counter)
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self._lock = threading.Lock()

    def record(self, entry: dict) -> None:
        line = json.dumps(entry, ensure_ascii=False) if self.stream is not None else None
        with self._lock:
            name = entry["syscall"]
            self.counts[name] += 1
            self.verdicts[name][entry["verdict"]] += 1
            self.latencies[name].append(entry["latency_us"])
            if line is not None:
                self.stream.write(line + "\n")

    def summary(self) -> str:
        """A table: calls, verdicts, p50/p99 latency (µs) per syscall, busiest first."""
        with self._lock:
            rows = [(name, n, dict(self.verdicts[name]), sorted(self.latencies[name]))
                    for name, n in self.counts.most_common()]
        total = sum(r[1] for r in rows)
        lines = [f"sysgate audit: {total} notified syscalls, {len(rows)} distinct",
                 f"{'calls':>8}  {'p50 µs':>8}  {'p99 µs':>8}  {'syscall':<16}  verdicts"]
        for name, n, verdicts, lat in rows:
            text = ", ".join(f"{k} {v}" for k, v in sorted(verdicts.items(), key=lambda kv: -kv[1]))
            lines.append(f"{n:8d}  {percentile(lat, 50):8.1f}  {percentile(lat, 99):8.1f}  {name:<16}  {text}")
        return "\n".join(lines)

    def close(self) -> None:
        if self._own and self.stream is not None:
            self.stream.close()
        self.stream = None


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values (0.0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, -(-len(sorted_values) * pct // 100))
    return sorted_values[int(rank) - 1]


class _Recorder:
    """Stands in for a notification, remembering the reply the inner handler sends itself."""

    def __init__(self, n):
        self._n = n
        self.sent: Reply | None = None
        self.kind: str | None = None

    def __getattr__(self, name):
        return getattr(self._n, name)

    def send_value(self, value: int) -> bool:
        self.sent, self.kind = Reply.value(value), "value"
        return self._n.send_value(value)

    def send_errno(self, e) -> bool:
        self.sent, self.kind = Reply.errno(e), "errno"
        return self._n.send_errno(e)

    def send_continue(self) -> bool:
        self.sent, self.kind = _CONTINUE, "continue"
        return self._n.send_continue()

    def send_reply(self, reply: Reply) -> bool:
        self.sent, self.kind = reply, _kind(reply)
        return self._n.send_reply(reply)

    def inject_fd(self, fd: int, target_fd: int | None = None, send: bool = True, cloexec: bool = False) -> int:
        number = self._n.inject_fd(fd, target_fd, send, cloexec)
        if send:
            self.sent, self.kind = Reply.value(number), "fd"
        return number


def _kind(reply: Reply) -> str:
    return "continue" if reply.flags else "errno" if reply.error else "value"


class AuditHandler(Handler):
    """Record every call into ``log``; ``inner`` decides (without it: CONTINUE, audit only)."""

    name = "audit"
    #: the per-syscall summary lives in this process: worker processes would each keep a part
    process_safe = False

    def __init__(self, log: AuditLog | None = None, inner=None):
        self.log = log if log is not None else AuditLog(sys.stderr)
        self.inner = inner
        self.blocking = bool(getattr(inner, "blocking", False))
        self.deadline = getattr(inner, "deadline", None)
        self.syscalls = tuple(getattr(inner, "syscalls", ()))

    def __call__(self, n):
        return self.handle(n)

    def handle(self, n):
        call = format_call(n, max_string=self.log.max_string, read=self.log.strings)
        start = time.perf_counter()
        rec = _Recorder(n)
        result, verdict = None, None
        try:
            result = _CONTINUE if self.inner is None else self.inner(rec)
        except TargetGone:
            verdict = "gone"
            raise
        except Exception:
            verdict = "error"
            raise
        finally:
            latency = (time.perf_counter() - start) * 1e6
            if verdict is None:
                if rec.sent is not None:
                    reply, verdict = rec.sent, rec.kind
                elif result is not None:
                    reply, verdict = result, _kind(result)
                else:
                    reply, verdict = None, "default"
            else:
                reply = None
            self.log.record({"time": round(time.time(), 6), "pid": n.pid, "syscall": n.syscall, "call": call,
                             "verdict": verdict, "result": format_reply(reply) if reply else "= ?",
                             "latency_us": round(latency, 1),
                             "handler": getattr(self.inner, "name", None) if self.inner else "audit"})
        return result

    def install(self, sup, *, group: str | None = None, only=None) -> None:
        """With an inner handler: its syscalls; alone: every notified syscall (the fallback)."""
        if self.inner is None and only is None:
            sup.fallback(self, group=group)
        else:
            super().install(sup, group=group, only=only)

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()

