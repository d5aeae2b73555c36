"""Leases (sysgate.supervisor.leases): the worker thread that answered a blocking call receives
the listener's next calls itself. With real targets: every call is still answered exactly once
and with its own value, a call of another handler is handed back to the loop, a slow call does
not hold the target's other threads, a call past its deadline is answered by the loop and the
listener taken back, stop and hang-up end a lease. Time bounds are liveness limits, not
measurements."""
from __future__ import annotations

import errno
import functools
import os
import random
import select
import threading
import time

import pytest

from sysgate.supervisor import DeadlineExceeded, Reply, Supervisor
from support.supervisor import Run, notify_calls


def values(text: str) -> list[tuple[int, int]]:
    return [tuple(map(int, line.split()[:2])) for line in text.splitlines()]


def echo(n):
    return Reply.value(n.args[0] + 1000)


def answer_all(target_bin, handler, threads: int, calls: int, **options):
    """``threads`` x ``calls`` getppid(i) answered by blocking ``handler``: each must return
    i + 1000. The supervisor's stats."""
    with Supervisor(**options) as sup:
        sup.on("getppid", handler, blocking=True)
        run = Run(target_bin, "values", threads, calls)
        sup.add_target(run.target)
        assert sup.run_until_idle(60)
        assert values(run.output()) == [(i + 1000, 0) for i in range(threads * calls)]
        run.finish()
    return sup.stats


@pytest.mark.parametrize("window", [0.002, 0.0], ids=["leased", "unleased"])
def test_every_call_gets_its_own_answer(target_bin, window):
    """One thread, 300 blocking calls in a row: with leases nearly all are RECVed by the worker
    (stats.leased), without none are; the answers are the same."""
    stats = answer_all(target_bin, echo, 1, 300, lease_window=window)
    assert stats.received == 300 and stats.errors == stats.timeouts == 0
    if window:
        assert stats.leased >= 150, stats   # a lease ends only when a call is slower than 2 ms
    else:
        assert stats.leased == 0


def test_a_call_of_another_handler_is_handed_back(target_bin):
    """getppid (blocking) and getpgid (inline, loop thread) alternate: the worker RECVs each
    getpgid and hands it back; both handlers answer every one of their calls."""
    loop_thread, seen = threading.current_thread(), []

    def inline(n):
        seen.append(threading.current_thread() is loop_thread)
        return Reply.value(n.args[0] + 2000)

    with Supervisor() as sup:
        sup.on("getppid", echo, blocking=True)
        sup.on("getpgid", inline)
        run = Run(target_bin, "alternate", 200, program=notify_calls("getppid", "getpgid"))
        sup.add_target(run.target)
        assert sup.run_until_idle(30)
        assert values(run.output()) == [(i + 1000, i + 2000) for i in range(200)]
        run.finish()
    assert len(seen) == 200 and all(seen), "inline handlers run in the loop thread only"
    assert sup.stats.received == 400 and sup.stats.leased >= 100 and sup.stats.errors == 0


def serve_like_a_foreign_loop(sup, until, timeout: float) -> bool:
    """What ``sysgate run`` and the asyncio adapter do: wait on fileno() for next_timeout(), run_once(0)."""
    end = time.monotonic() + timeout
    while not until():
        if time.monotonic() > end:
            return False
        delay = sup.next_timeout()
        select.select([sup.fileno()], [], [], 0.5 if delay is None else delay)
        sup.run_once(0)
    return True


@pytest.mark.parametrize("driver", ["run", "run_once"])
def test_a_slow_call_does_not_hold_the_other_threads(target_bin, driver):
    """Thread 0's call blocks until released; the target's 7 other threads are answered
    meanwhile: the loop takes the listener back from the worker stuck on the slow call (also
    when a foreign event loop drives it by next_timeout and run_once)."""
    release, answered = threading.Event(), []

    def handler(n):
        if n.args[0] == 0:
            release.wait(20)
        answered.append(n.args[0])
        return Reply.value(n.args[0] + 1000)

    with Supervisor(workers=4) as sup:
        sup.on("getppid", handler, blocking=True, deadline=30)
        run = Run(target_bin, "values", 8, 1)
        sup.add_target(run.target)
        try:
            serve = sup.run if driver == "run" else functools.partial(serve_like_a_foreign_loop, sup)
            assert serve(timeout=15, until=lambda: len(answered) == 7), "the others waited behind the slow call"
            assert 0 not in answered
        finally:
            release.set()
        assert sup.run_until_idle(15)
        assert values(run.output()) == [(i + 1000, 0) for i in range(8)]
        run.finish()
    assert sup.stats.timeouts == sup.stats.errors == 0


def test_a_leased_call_past_its_deadline(target_bin):
    """Call 5 of 20 (all leased, one thread) outlives its deadline: the loop answers it
    ETIMEDOUT, writes the thread off and takes the listener back; the late verdict is dropped;
    the calls after it get their own answers."""
    release, late = threading.Event(), []

    def handler(n):
        if n.args[0] == 5:
            release.wait(20)
        try:
            n.send_value(n.args[0] + 1000)
        except DeadlineExceeded:
            late.append(n.args[0])

    with Supervisor(on_error_errno="ETIMEDOUT") as sup:
        sup.on("getppid", handler, blocking=True, deadline=0.5)
        run = Run(target_bin, "values", 1, 20)
        sup.add_target(run.target)
        try:
            assert sup.run(15, until=lambda: run.target.poll() is not None)
        finally:
            release.set()
        assert sup.run(10, until=lambda: late == [5])
        assert sup.run_until_idle(10)
        expected = [(i + 1000, 0) for i in range(20)]
        expected[5] = (-1, 110)     # ETIMEDOUT
        assert values(run.output()) == expected
        run.finish()
    assert sup.stats.timeouts == 1 and sup.stats.written_off == 1 and sup.stats.received == 20


def test_racing_threads_answered_exactly_once(target_bin):
    """16 threads x 100 calls with handlers that take 0 to 4 ms (around the 2 ms window): leases
    start, end, are taken back and handed over under load; every call gets its own answer once."""
    rng = random.Random(7)
    delays = [rng.choice((0, 0, 0, 0.001, 0.003, 0.004)) for _ in range(1600)]

    def handler(n):
        time.sleep(delays[n.args[0]])
        return Reply.value(n.args[0] + 1000)

    stats = answer_all(target_bin, handler, 16, 100, workers=4)
    assert stats.received == 1600 and stats.errors == stats.timeouts == stats.gone == 0
    assert stats.leased > 0


def test_stop_ends_a_lease(target_bin):
    """A worker waiting for the next call of a lent listener (left lent by a foreign loop) gives it
    back when run() returns on stop; closing releases it: the target's next call fails with ENOSYS."""
    r, w = os.pipe()
    with Supervisor(lease_window=0.5) as sup:
        sup.on("getppid", echo, blocking=True)
        run = Run(target_bin, "pause", stdin=r)
        os.close(r)
        lst = sup.add_target(run.target)
        assert serve_like_a_foreign_loop(sup, lambda: lst.lease is not None, 10)
        assert run.readline() == "1000 0 0\n"     # answered by the worker; no run_once since: still lent
        threading.Timer(0.05, sup.stop).start()
        start = time.monotonic()
        sup.run(10)
        assert time.monotonic() - start < 5
        assert lst.lease is None, "run() returned: the listener is the loop's again"
    assert sup._pool.threads == 0
    os.write(w, b"x")
    os.close(w)
    assert run.readline() == f"-1 {errno.ENOSYS} 0\n"
    run.finish()


def test_lease_window_is_checked():
    for bad in (-1, 2):
        with pytest.raises(ValueError, match="lease_window"):
            Supervisor(lease_window=bad)


def test_calls_waiting_behind_a_lent_listener_spread_over_the_workers(target_bin):
    """16 threads, calls of 1.5 ms (under the window, far over QUEUED_AFTER): a worker holding the
    listener does not answer them one after the other; the loop takes it back while calls wait
    and the lane's 4 workers run them at once."""
    lock, running, peak = threading.Lock(), [0], [0]

    def handler(n):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.0015)
        with lock:
            running[0] -= 1
        return Reply.value(n.args[0] + 1000)

    answer_all(target_bin, handler, 16, 20, workers=4)
    assert peak[0] >= 2, f"at most {peak[0]} calls ran at once"   # one by one (1) before


def test_no_call_is_answered_once_run_returned(target_bin):
    """run() returns (until, then stop): the worker holding the listener gives it back, so no
    handler runs until the loop serves again; then the rest is answered."""
    count = [0]

    def handler(n):
        count[0] += 1
        time.sleep(0.0005)            # 2000 calls: a second of work, all leased (one thread)
        return Reply.value(n.args[0] + 1000)

    with Supervisor() as sup:
        sup.on("getppid", handler, blocking=True)
        run = Run(target_bin, "values", 1, 2000)
        sup.add_target(run.target)
        assert sup.run(10, until=lambda: count[0] >= 10)
        time.sleep(0.05)                  # a call already running when run returned may finish
        before = count[0]
        time.sleep(0.3)
        assert count[0] == before, f"{count[0] - before} calls answered after run() returned"
        assert sup.run_until_idle(30)
        assert values(run.output()) == [(i + 1000, 0) for i in range(2000)]
        run.finish()


def test_closing_a_lent_listener_revokes_its_lease(target_bin):
    """A foreign loop (run_once) leaves the listener lent between calls; close(0) closes its fd
    under the worker's poll. Another target's listener then gets the same fd number: the old
    worker must not RECV (and lose) that target's call, which its own supervisor answers."""
    r, w = os.pipe()
    seen = []

    def handler(n):
        seen.append(n.pid)
        return Reply.value(n.args[0] + 1000)

    sup = Supervisor(lease_window=0.5)
    sup.on("getppid", handler, blocking=True)
    first = Run(target_bin, "pause", stdin=r)
    os.close(r)
    lst = sup.add_target(first.target)
    assert serve_like_a_foreign_loop(sup, lambda: lst.lease is not None, 10)
    assert first.readline() == "1000 0 0\n"     # the worker answered and polls for 0.5 s
    assert lst.lease is not None
    old_fd = lst.fd
    sup.close(0)
    other = Run(target_bin, "getppid", 1)
    if other.target.listener != old_fd:
        os.dup2(other.target.listener, old_fd)
        os.close(other.target.listener)
        other.target.listener = old_fd
    time.sleep(0.05)                       # its call waits on the listener with the old number
    os.write(w, b"x")                      # wakes the old worker's poll, were it still there
    time.sleep(0.05)
    with Supervisor(lease_window=0) as second:
        second.on("getppid", lambda n: Reply.value(2000))
        second.add_target(other.target)
        assert second.run(10, until=lambda: other.target.poll() is not None), "the call was lost"
    assert other.readline() == "2000 0 0\n" and seen == [first.target.pid]
    os.close(w)
    first.finish()
    other.finish()
