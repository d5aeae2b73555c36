"""Blocking handlers that never return, with real targets: a stuck handler frees its worker at
the deadline, cannot starve other handlers, answers exactly once, and cannot hang shutdown.

Handlers block on purpose by opening a FIFO without a writer (issue 11: four such opens used
to wedge the whole pool, and every later fs call failed after its deadline, for good).
Time bounds below are generous liveness limits (answered at all), not measurements.
"""
from __future__ import annotations

import errno
import logging
import os
import random
import signal
import select
import subprocess
import sys
import threading
import time

import pytest

from sysgate.supervisor import DeadlineExceeded, Reply, Supervisor
from sysgate.supervisor.workers import ABANDONED, DONE, RUNNING, WorkerPool
from sysgate.testing.fake import FakeNotification
from sysgate.testing.replay import Dispatcher
from support import TESTS
from support.cprog import cprog
from support.supervisor import Run


class Fifo:
    """A FIFO whose readers block in open() until :meth:`release` opens a writer (kept open)."""

    def __init__(self, path):
        self.path = str(path)
        os.mkfifo(self.path)
        self.writer = -1

    def block(self) -> None:
        os.close(os.open(self.path, os.O_RDONLY))

    def release(self) -> None:
        if self.writer < 0:
            self.writer = os.open(self.path, os.O_RDWR | os.O_NONBLOCK)   # never blocks on Linux

    def close(self) -> None:
        if self.writer >= 0:
            os.close(self.writer)


@pytest.fixture
def fifo(tmp_path):
    f = Fifo(tmp_path / "fifo")
    yield f
    f.release()     # stuck handlers left behind return, whatever the test did
    f.close()


def results(text: str) -> list[tuple[int, int]]:
    return [tuple(map(int, line.split()[:2])) for line in text.splitlines()]


def worker_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "sysgate-worker")


def test_calls_stuck_in_one_handler_leave_the_others_their_workers(target_bin, fifo):
    """8 calls stuck in handler A (4 running, 4 queued, far from their deadline): handler B still
    gets workers of its own and answers its 20 calls with its real value."""
    def a(n):
        fifo.block()
        return Reply.value(1)

    with Supervisor(workers=4) as sup:
        sup.on("getppid", a, blocking=True, deadline=60, group="a")
        sup.on("getppid", lambda n: Reply.value(2), blocking=True, group="b")
        stuck = Run(target_bin, "threads", 8)
        sup.add_target(stuck.target, group="a")
        assert sup.run(10, until=lambda: sup.stats.received == 8)
        other = Run(target_bin, "expect", 20, 2)
        sup.add_target(other.target, group="b")
        assert sup.run(10, until=lambda: other.target.returncode is not None), "handler B starved"
        assert other.target.returncode == 0
        lane = sup._pool.lane(a)
        assert len(lane.workers) == 4 and lane.pending == 8 and sup.stats.timeouts == 0
        fifo.release()
        assert sup.run_until_idle(10)
        assert stuck.output() == "0 0 0\n"
        stuck.finish()
        other.finish()
    assert sup.stats.timeouts == sup.stats.rejected == sup.stats.errors == 0


def test_handler_stuck_past_its_deadline_frees_its_worker(target_bin, fifo):
    """8 calls stuck forever in handler A are answered at their deadline and their threads written
    off; the listener is released on POLLHUP although they still run; later calls to A and B get
    their real answers; the late results are dropped (never sent); when the stuck threads return
    the pool is back to its size."""
    entered, late = [], []

    def a(n):
        if n.listener.target is stuck.target:
            entered.append(n.id)
            fifo.block()
        try:
            n.send_value(1)
        except DeadlineExceeded:
            late.append(n.id)

    released = []
    with Supervisor(workers=4, on_error_errno="ETIMEDOUT") as sup:
        sup.on("getppid", a, blocking=True, deadline=0.3, group="a")
        sup.on("getppid", lambda n: Reply.value(2), deadline=0.3, group="b")
        stuck = Run(target_bin, "threads", 8)
        sup.add_target(stuck.target, group="a", on_release=released.append)
        assert sup.run(10, until=lambda: released), "all 8 answered and the listener released"
        assert sup.stats.timeouts == 8 and released[0].reason == "hangup"
        lane = sup._pool.lane(a)
        assert 4 <= len(entered) == sup.stats.written_off == len(lane.stuck) <= 8
        assert stuck.output() == "0 0 0\n"

        later_a, later_b = Run(target_bin, "expect", 5, 1), Run(target_bin, "expect", 5, 2)
        sup.add_target(later_a.target, group="a")
        sup.add_target(later_b.target, group="b")
        assert sup.run(10, until=lambda: None not in (later_a.target.returncode, later_b.target.returncode))
        assert (later_a.target.returncode, later_b.target.returncode) == (0, 0)
        assert sup.stats.timeouts == 8

        fifo.release()
        assert sup.run(10, until=lambda: len(late) == len(entered))
        assert sup.run(10, until=lambda: not lane.stuck)
        assert sup.stats.gone == 0 and sup.stats.errors == 0   # a late SEND would have met ENOENT
        assert len(lane.workers) <= sup._pool.size
        assert worker_threads() <= 2 * sup._pool.size           # lanes a and b
        for run in (stuck, later_a, later_b):
            run.finish()
    assert sup.stats.received == 18


def test_more_stuck_threads_than_max_stuck_fail_closed_fast(target_bin, fifo, caplog):
    """workers=2, max_stuck=2: two threads are written off, two more keep their slots; then the
    handler's calls are refused at once (not queued behind stuck ones, no new thread), logged
    once; once the FIFO opens, the handler serves again."""
    def a(n):
        fifo.block()
        return Reply.value(1)

    with Supervisor(workers=2, max_stuck=2, on_error_errno="ETIMEDOUT") as sup:
        sup.on("getppid", a, deadline=0.2)
        run = Run(target_bin, "getppid", 6)
        with caplog.at_level(logging.ERROR, "sysgate.supervisor"):
            sup.add_target(run.target)
            assert sup.run(20, until=lambda: run.target.returncode is not None)
        assert results(run.output()) == [(-1, errno.ETIMEDOUT)] * 6
        assert (sup.stats.timeouts, sup.stats.rejected, sup.stats.written_off) == (4, 2, 2)
        lane = sup._pool.lane(a)
        assert len(lane.stuck) == 2 and len(lane.workers) == 2
        assert worker_threads() == 4
        assert caplog.text.count("threads stuck past their deadline") == 1
        fifo.release()
        assert sup.run(10, until=lambda: sup._pool.lane(a).overdue == 0)    # the stuck calls returned
        again = Run(target_bin, "expect", 3, 1)
        sup.add_target(again.target)
        assert sup.run_until_idle(10)
        assert again.finish() == 0 and run.finish() == 0


@pytest.mark.parametrize("how", ["reply", "return"])
def test_exactly_one_answer_when_the_handler_returns_at_its_deadline(target_bin, how):
    """300 calls whose handler answers right at its deadline (±1 ms): the target sees one answer
    per call, the handler's and the deadline's bookkeeping agree with what it saw, and no
    second SEND ever reached the kernel (it would fail with ENOENT: stats.gone)."""
    entered, won, late = [], [], []
    rng = random.Random(11)

    def racer(n):
        entered.append(n.id)
        until = n.deadline.when + rng.choice((-0.001, 0.0, 0.0, 0.001))
        threading.Event().wait(max(0.0, until - time.monotonic()))
        if how == "return":
            return Reply.value(7)
        try:
            n.send_value(7)
            won.append(n.id)
        except DeadlineExceeded:
            late.append(n.id)

    with Supervisor(on_error_errno="ETIMEDOUT") as sup:
        sup.on("getppid", racer, deadline=0.01)
        run = Run(target_bin, "getppid", 300)
        sup.add_target(run.target)
        assert sup.run_until_idle(60)
        lane = sup._pool.lane(racer)     # idle does not wait for handlers answered at their deadline:
        assert sup.run(10, until=lambda: not lane.stuck and not lane.overdue)   # let them end
        got = results(run.output())
        run.finish()
    assert len(got) == 300 and set(got) <= {(7, 0), (-1, errno.ETIMEDOUT)}
    timeouts = got.count((-1, errno.ETIMEDOUT))
    assert timeouts == sup.stats.timeouts and 0 < timeouts < 300, "the race did not happen both ways"
    if how == "reply":   # a call can also time out before a thread took it up (the handler never ran)
        assert len(won) == 300 - timeouts and len(late) <= timeouts and len(won) + len(late) == len(entered)
    assert sup.stats.gone == 0 and sup.stats.errors == 0


def catches(pid: int, sig: int) -> bool:
    with open(f"/proc/{pid}/status") as f:
        caught = next(line for line in f if line.startswith("SigCgt:"))
    return bool(int(caught.split()[1], 16) & (1 << (sig - 1)))


def test_sigterm_shutdown_does_not_wait_for_stuck_workers(tmp_path):
    """A supervisor process with one written-off thread and one stuck in its slot, both blocked in
    open() for good: SIGTERM ends serve_forever within its grace and the interpreter exits."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    script = f"""
import os, sys
sys.path.insert(0, {TESTS!r})
from support.supervisor import Run
from sysgate.supervisor import Reply, Supervisor
binary = sys.argv[1]
sup = Supervisor(workers=1, max_stuck=1, on_error_errno="ETIMEDOUT")
sup.on("getppid", lambda n: os.open({str(fifo)!r}, os.O_RDONLY) and Reply.value(1), deadline=0.2)
run = Run(binary, "getppid", 3)
sup.add_target(run.target)
assert sup.run(20, until=lambda: run.target.returncode is not None)
assert (sup.stats.timeouts, sup.stats.rejected, sup.stats.written_off) == (2, 1, 1), sup.stats
print("ready", flush=True)
sup.serve_forever(grace=0.5)
print("closed", flush=True)
"""
    binary = str(tmp_path / "target")
    subprocess.run(["gcc", "-O2", "-pthread", "-o", binary, os.path.join(TESTS, "supervisor_target.c")], check=True)
    proc = subprocess.Popen([sys.executable, "-c", script, binary], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        end = time.monotonic() + 10
        while not catches(proc.pid, signal.SIGTERM):   # serve_forever installed its handler
            assert time.monotonic() < end, "serve_forever never caught SIGTERM"
            threading.Event().wait(0.01)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        assert proc.stdout.read() == "closed\n"
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_replay_dispatcher_applies_the_same_deadline_rule(target_bin, fifo):
    """One stuck handler, run by the real supervisor on a real target and by the replay
    Dispatcher on a fake notification: both answer on_error_errno at the deadline, and the
    handler's late verdict is dropped by both."""
    late = []

    def stuck(n):
        fifo.block()
        try:
            n.send_value(1)
        except DeadlineExceeded:
            late.append(n.id)

    with Supervisor(on_error_errno="ETIMEDOUT") as sup:
        sup.on("getppid", stuck, deadline=0.2)
        run = Run(target_bin, "getppid", 1)
        sup.add_target(run.target)
        assert sup.run(10, until=lambda: run.target.returncode is not None)
        real = results(run.output())
        run.finish()

    d = Dispatcher(on_error_errno="ETIMEDOUT")
    d.on("getppid", stuck, deadline=0.2)
    n = FakeNotification("getppid")
    replayed = d.dispatch(n)
    assert real == [(-1, errno.ETIMEDOUT)]
    assert {k: replayed[k] for k in ("kind", "errno")} == {"kind": "errno", "errno": errno.ETIMEDOUT}
    assert "deadline" in replayed["exception"]
    fifo.release()
    deadline = time.monotonic() + 10
    while len(late) < 2 and time.monotonic() < deadline:
        threading.Event().wait(0.01)
    assert len(late) == 2 and n.verdict == Reply.errno("ETIMEDOUT")


class CountedNotification(FakeNotification):
    """Counts the replies that would have reached the kernel."""

    __slots__ = ("sends",)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sends = 0

    def _send(self, val: int, error: int, flags: int) -> bool:
        self.sends += 1
        return super()._send(val, error, flags)


def test_replay_dispatcher_answers_exactly_once_at_the_deadline():
    """The replay race: handlers answering right at the deadline (±1 ms), 200 times, half of them
    still running after they answered: one reply each, whoever wins, and the late one never sent
    (checked after every handler thread ended)."""
    finished = threading.Semaphore(0)
    rng = random.Random(7)

    def racer(n):
        until = n.deadline.when + rng.choice((-0.001, 0.0, 0.0, 0.001))
        threading.Event().wait(max(0.0, until - time.monotonic()))
        try:
            if n.args[0] % 2:
                return Reply.value(7)
            try:
                n.send_value(7)
            except DeadlineExceeded:
                pass
            threading.Event().wait(0.002)   # answered, still running when the deadline comes
            return None
        finally:
            finished.release()

    d = Dispatcher(on_error_errno="ETIMEDOUT")
    d.on("getppid", racer, deadline=0.01)
    notes = [CountedNotification("getppid", (i,)) for i in range(200)]
    outcomes = [d.dispatch(n) for n in notes]
    for _ in notes:
        assert finished.acquire(timeout=10)
    assert [n.sends for n in notes] == [1] * 200
    kinds = [(o["kind"], o.get("value", o.get("errno"))) for o in outcomes]
    assert set(kinds) <= {("value", 7), ("errno", errno.ETIMEDOUT)}
    assert [n.verdict for n in notes] == [Reply.value(7) if k == ("value", 7) else Reply.errno("ETIMEDOUT")
                                          for k in kinds]
    assert 0 < kinds.count(("errno", errno.ETIMEDOUT)) < 200, "the race did not happen both ways"


def test_max_stuck_zero_never_starts_more_than_workers_threads(target_bin, fifo):
    """max_stuck=0: nothing is written off; the stuck worker keeps its slot and the handler's next
    calls fail closed at once instead of queueing behind it."""
    def a(n):
        fifo.block()
        return Reply.value(1)

    with Supervisor(workers=1, max_stuck=0, on_error_errno="ETIMEDOUT") as sup:
        sup.on("getppid", a, deadline=0.2)
        run = Run(target_bin, "getppid", 3)
        sup.add_target(run.target)
        assert sup.run(20, until=lambda: run.target.returncode is not None)
        assert results(run.output()) == [(-1, errno.ETIMEDOUT)] * 3
        assert (sup.stats.timeouts, sup.stats.rejected, sup.stats.written_off) == (1, 2, 0)
        assert worker_threads() == 1
        fifo.release()
        assert sup.run(10, until=lambda: sup._pool.lane(a).overdue == 0)    # the stuck calls returned
        again = Run(target_bin, "expect", 3, 1)
        sup.add_target(again.target)
        assert sup.run_until_idle(10)
        assert again.finish() == 0 and run.finish() == 0


def test_idle_lanes_end_their_threads(target_bin, monkeypatch):
    """A lane's threads end after IDLE_EXIT without work and the lane is dropped (the agent
    registers new handlers per container: their lanes must not pile up)."""
    from sysgate.supervisor import workers

    monkeypatch.setattr(workers, "IDLE_EXIT", 0.05)
    handlers = [lambda n, i=i: Reply.value(i) for i in range(3)]
    with Supervisor() as sup:
        for i, fn in enumerate(handlers):
            sup.on("getppid", fn, blocking=True, group=f"g{i}")
            run = Run(target_bin, "expect", 4, i)
            sup.add_target(run.target, group=f"g{i}")
            assert sup.run_until_idle(10)
            assert run.finish() == 0
        end = time.monotonic() + 10
        while (sup._pool.threads or any(sup._pool.lane(fn) for fn in handlers)) and time.monotonic() < end:
            threading.Event().wait(0.01)
        assert sup._pool.threads == 0 and not any(sup._pool.lane(fn) for fn in handlers)
        again = Run(target_bin, "expect", 2, 0)             # a dropped lane comes back on demand
        sup.add_target(again.target, group="g0")
        assert sup.run_until_idle(10)
        assert again.finish() == 0


def test_calls_interrupted_while_queued_do_not_fill_the_queue(tmp_path):
    """workers=1, max_pending=8, the one worker held: 6 queued calls are interrupted 5 times each
    by an SA_RESTART signal, every interruption leaving a dead notification in the lane's queue
    and the call coming back as a new one. Dead calls are dropped from a full queue, so no live
    call is refused; each thread gets its own answer."""
    with open(os.path.join(TESTS, "restart_queue.c")) as fh:
        prog = cprog(fh.read())
    release = threading.Event()

    def handler(n):
        release.wait(20)            # every call is held: the first in the worker, the others queued
        return Reply.value(n.args[0] + 1000)

    r, w = os.pipe()
    with Supervisor(workers=1, max_pending=8) as sup:
        sup.on("getppid", handler, blocking=True, deadline=30)
        run = Run(prog, 7, 5, stdin=r)
        os.close(r)
        sup.add_target(run.target)
        try:
            assert sup.run(15, until=lambda: sup.stats.received >= 7), "the 7 calls never arrived"
            os.write(w, b"x")       # now the signals: every call waits in the kernel or the queue
            assert sup.run(15, until=lambda: select.select([run.out], [], [], 0)[0]), "never signalled"
            assert run.readline() == "signalled\n"
        finally:
            release.set()
        assert sup.run_until_idle(15)
        assert run.output().splitlines() == [f"{i} {i + 1000} 0" for i in range(7)]
        run.finish()
    os.close(w)
    assert sup.stats.rejected == 0 and sup.stats.received >= 14 and sup.stats.gone >= 6


def test_cancel_queued_leaves_a_started_job_alone():
    """The loop drops a dead queued call with cancel_queued, under the pool's lock: a job a worker
    has already taken is left to run and report (abandoning it would write a healthy thread off
    and, for a lent listener, lose the lease), a job still queued never runs."""
    pool, owner = WorkerPool(size=1), object()
    started, release = threading.Event(), threading.Event()

    def first():
        started.set()
        release.wait(10)
        return "first"

    running = pool.submit(owner, first)
    queued = pool.submit(owner, lambda: "second")
    try:
        assert started.wait(10)
        assert not pool.cancel_queued(running) and running.state == RUNNING
        assert pool.cancel_queued(queued) and queued.state == ABANDONED and pool.pending == 1
        assert not pool.cancel_queued(queued)
    finally:
        release.set()
    deadline = time.monotonic() + 10
    while running.state != DONE and time.monotonic() < deadline:
        time.sleep(0.01)
    assert running.state == DONE and list(pool.completed) == ["first"] and pool.pending == 0
    assert pool.shutdown(5)
    pool.close()
