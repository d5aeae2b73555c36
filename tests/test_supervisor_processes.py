"""Supervisor(processes=N): real targets with many threads served by forked worker processes.

Every call is answered exactly once, handler errors fail closed, hang-ups release every
copy of the listener, a SIGKILLed worker fails everything closed instead of leaving calls
waiting, and stopping or closing ends every worker. No timing is asserted: waits are bounded.
"""
from __future__ import annotations

import errno
import functools
import os
import select
import signal
import subprocess
import sys
import threading
import time
import types

import pytest

from sysgate.errors import SysgateError
from sysgate.handlers.audit import AuditHandler, AuditLog
from sysgate.kernel import notify
from sysgate.supervisor import Reply, Supervisor
from sysgate.supervisor.processes import WORKER_LOST, find_unsafe
from sysgate.supervisor.routing import _PolicyChooser
from sysgate.testing.record import Recorder
from support import TESTS
from support.supervisor import Run, fd_count

THREADS, CALLS = 64, 20


def results(text: str) -> list[tuple[int, int]]:
    return [tuple(map(int, line.split())) for line in text.splitlines()]


def _children() -> set[int]:
    """Live (or unreaped) child processes of this process, from every thread's children list."""
    found = set()
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/children") as fh:
            found.update(int(pid) for pid in fh.read().split())
    return found


@pytest.fixture(autouse=True)
def _earlier_children_and_threads():
    """Children left by earlier tests of the session are not this test's; threads they left (a
    written-off handler thread ends within seconds) must end first, since workers are forked only
    while no other thread runs."""
    _EARLIER.clear()
    _EARLIER.update(_children())
    end = time.monotonic() + 60
    for thread in threading.enumerate():
        if thread is not threading.current_thread():
            thread.join(max(0.0, end - time.monotonic()))
    assert threading.active_count() == 1, f"threads left by earlier tests: {threading.enumerate()}"
    yield


_EARLIER: set[int] = set()


def children() -> set[int]:
    """Child processes started by this test and still there (workers, targets)."""
    return _children() - _EARLIER


def listeners_open() -> list[int]:
    return [int(fd) for fd in os.listdir("/proc/self/fd") if notify.is_listener(int(fd))]


def test_every_call_answered_once_by_the_workers(target_bin):
    """Two targets of 64 threads each: each call gets its own notification's id back, from a
    worker (never the parent); the workers' counters reach the parent."""
    parent = os.getpid()
    before = fd_count()
    released = []
    with Supervisor(processes=3) as sup:
        sup.on("getppid", lambda n: Reply.value((os.getpid() << 32) | (n.id & 0xFFFFFFFF)))  # ids count up per listener
        runs = [Run(target_bin, "values", THREADS, CALLS) for _ in range(2)]
        for run in runs:
            sup.add_target(run.target, on_release=lambda lst: released.append(lst.reason))
        assert sup.run_until_idle(60)
        outputs = [run.output() for run in runs]
        codes = [run.finish() for run in runs]
    assert codes == [0, 0]
    for out in outputs:
        got = results(out)
        assert len(got) == THREADS * CALLS
        assert all(err == 0 and ret > 0 for ret, err in got), [r for r in got if r[1]][:5]
        ids = [ret & 0xFFFFFFFF for ret, _ in got]
        assert len(set(ids)) == len(ids)                       # one answer per notification
        assert parent not in {ret >> 32 for ret, _ in got}     # answered in the workers
    assert sup.stats.received == 2 * THREADS * CALLS and sup.stats.errors == 0
    assert released == ["hangup", "hangup"] and sup.stats.released == 2
    assert fd_count() == before and not listeners_open() and not children()


def test_handler_exceptions_fail_closed_in_workers(target_bin):
    def handler(n):
        if n.args[0] % 2:
            raise RuntimeError("odd call")
        return Reply.value(7)

    with Supervisor(processes=2, on_error_errno="EACCES") as sup:
        sup.on("getppid", handler)
        run = Run(target_bin, "values", 8, 10)
        sup.add_target(run.target)
        assert sup.run_until_idle(60)
        got = results(run.output())
        assert run.finish() == 0
    assert got == [(-1, errno.EACCES) if i % 2 else (7, 0) for i in range(80)]
    assert sup.stats.errors == 40


@pytest.mark.parametrize("targets", [1, 2], ids=["one-listener", "two-listeners"])
def test_sigkill_of_a_worker_fails_every_call_closed(target_bin, targets):
    """A worker killed in the middle of a call: the parent kills the others and closes its
    copies, so the call it held and every later one fail with ENOSYS; nothing hangs. (One
    listener is served by blocking RECVs, several through epoll: both paths.)"""
    def handler(n):
        if n.args[0] == 500:
            os.kill(os.getpid(), signal.SIGKILL)
        return Reply.value(1)

    before = fd_count()
    with Supervisor(processes=3) as sup:
        sup.on("getppid", handler)
        runs = [Run(target_bin, "values", THREADS, CALLS) for _ in range(targets)]
        listeners = [sup.add_target(run.target) for run in runs]
        assert sup.run_until_idle(60)
        outputs = [results(run.output()) for run in runs]
        assert [run.finish() for run in runs] == [0] * targets
    for got in outputs:
        assert len(got) == THREADS * CALLS
        assert set(got) <= {(1, 0), (-1, errno.ENOSYS)}
    assert (-1, errno.ENOSYS) in [got[500] for got in outputs]
    assert {lst.reason for lst in listeners} <= {WORKER_LOST, "hangup"} and sup.stats.workers_lost == 1
    assert fd_count() == before and not listeners_open() and not children()


def test_blocking_handlers_run_in_each_workers_threads(target_bin):
    """A blocking handler runs in the worker's own thread pool (started after the fork)."""
    def handler(n):
        return Reply.value(threading.get_ident() != main and 3)

    handler.blocking = True
    main = threading.get_ident()
    with Supervisor(processes=2, workers=2) as sup:
        sup.on("getppid", handler)
        run = Run(target_bin, "values", 16, 10)
        sup.add_target(run.target)
        assert sup.run_until_idle(60)
        got = results(run.output())
        assert run.finish() == 0
    assert got == [(3, 0)] * 160
    assert not children()


def test_stop_from_a_signal_ends_every_worker_and_serving_resumes(target_bin):
    """run() returns on stop() and its workers end with it; the next run forks new ones over
    the listener the parent kept; close() then fails the remaining calls with ENOSYS. The
    target outlives both runs: it blocks writing to its full stdout pipe."""
    state = {}
    previous = signal.signal(signal.SIGALRM, lambda *_: state["sup"].stop())
    try:
        with Supervisor(processes=2) as sup:
            state["sup"] = sup
            sup.on("getppid", lambda n: Reply.value(5))
            run = Run(target_bin, "getppid", 100000)
            sup.add_target(run.target)
            for _ in range(2):
                signal.setitimer(signal.ITIMER_REAL, 0.2)
                assert sup.run(timeout=60)               # True: stopped, not timed out
                assert children() <= {run.target.pid}    # no worker left
                assert len(sup.listeners) == 1           # the parent kept the listener
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    got = [r[:2] for r in results(run.output())]
    run.finish()
    answered = got.count((5, 0))
    assert len(got) == 100000 and got[:answered] == [(5, 0)] * answered
    assert set(got[answered:]) <= {(-1, errno.ENOSYS)}


def test_stop_called_by_handlers_ends_the_run(target_bin):
    """stop() in a handler ends its own worker; once no worker is left the run ends too (as stop()
    in a handler ends a one-process run) instead of leaving the listener unserved."""
    with Supervisor(processes=2) as sup:
        def handler(n):
            sup.stop()
            return Reply.value(5)

        sup.on("getppid", handler)
        run = Run(target_bin, "getppid", 100000)
        sup.add_target(run.target)
        assert sup.run(timeout=60)
        assert children() <= {run.target.pid} and len(sup.listeners) == 1
    got = [r[:2] for r in results(run.output())]
    run.finish()
    answered = got.count((5, 0))
    assert 1 <= answered <= 2 and got[:answered] == [(5, 0)] * answered
    assert set(got[answered:]) == {(-1, errno.ENOSYS)}


def test_close_after_a_stopped_run_fails_waiting_calls_closed(target_bin):
    """A target blocked in a call when serving stops (the handler never ran for it because
    serving had stopped): close() releases the listener and the call gets ENOSYS."""
    with Supervisor(processes=2) as sup:
        sup.on("getppid", lambda n: Reply.value(5))
        run = Run(target_bin, "getppid", 1)
        sup.add_target(run.target)
        assert not sup.run(timeout=0)                # timed out at once: workers forked and stopped
        assert not children() - {run.target.pid}
    assert results(run.readline())[0][:2] in ((5, 0), (-1, errno.ENOSYS))
    assert run.finish() == 0
    assert not listeners_open()


def test_serve_forever_ends_workers_on_sigterm(target_bin):
    previous = signal.signal(signal.SIGALRM, lambda *_: os.kill(os.getpid(), signal.SIGTERM))
    try:
        sup = Supervisor(processes=2)
        sup.on("getppid", lambda n: Reply.value(9))
        run = Run(target_bin, "values", 4, 5)
        sup.add_target(run.target)
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        sup.serve_forever()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    got = results(run.output())
    assert run.finish() == 0
    assert len(got) == 20 and set(got) <= {(9, 0), (-1, errno.ENOSYS)}
    assert not sup.listeners and not listeners_open() and not children()


@pytest.mark.parametrize("kind", ["audit", "recorder"])
def test_handlers_keeping_results_in_memory_are_refused(target_bin, tmp_path, kind):
    with Supervisor(processes=2) as sup, Recorder(tmp_path / "rec.jsonl") as recorder:
        handler = AuditHandler(AuditLog(None)) if kind == "audit" else recorder.wrap(lambda n: None)
        sup.fallback(handler)
        run = Run(target_bin, "getppid", 1)
        sup.add_target(run.target)
        with pytest.raises(SysgateError, match="process_safe = False"):
            sup.run_until_idle(10)
        assert children() <= {run.target.pid}
    run.finish()


def _audit_wrappers(audit: AuditHandler) -> dict:
    """Ways of handing the process-unsafe ``audit`` to the supervisor that hide its ``process_safe``."""
    def nested(n):
        return audit(n)

    @functools.wraps(audit.handle)
    def decorated(n):
        return audit.handle(n)

    return {
        "bound method": audit.handle,
        "partial": functools.partial(audit),
        "partial of a bound method": functools.partial(audit.handle),
        "partial argument": functools.partial(lambda h, n: h(n), audit),
        "lambda": lambda n: audit(n),
        "default argument": lambda n, h=audit: h(n),
        "nested function": nested,
        "functools.wraps": decorated,
        "lambda calling a partial": (lambda inner: lambda n: inner(n))(functools.partial(audit)),
        "policy chooser": _PolicyChooser(types.SimpleNamespace(name="p"), {"a": (lambda n: None), "b": audit}),
    }


@pytest.mark.parametrize("how", list(_audit_wrappers(AuditHandler(AuditLog(None)))))
def test_wrapped_handlers_keeping_results_in_memory_are_refused(target_bin, how):
    """Wrapping a process_safe = False handler (in a bound method, a partial, a lambda...) does not
    get it past the check."""
    audit = AuditHandler(AuditLog(None))
    wrapped = _audit_wrappers(audit)[how]
    assert find_unsafe(wrapped) is audit
    with Supervisor(processes=2) as sup:
        sup.on("getppid", wrapped)
        run = Run(target_bin, "getppid", 1)
        sup.add_target(run.target)
        with pytest.raises(SysgateError, match=r"handler\(s\) audit.* \(process_safe = False\)"):
            sup.run_until_idle(10)
        assert children() <= {run.target.pid}
    run.finish()


class _Plain:
    def answer(self, n):
        return Reply.value(5)


class _Vouching:
    """Wraps an unsafe handler but declares itself process-safe: the explicit mark is trusted."""

    process_safe = True

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, n):
        return self.inner(n)


def test_process_safe_wrappers_are_served():
    """Unmarked callables are process-safe, wrapped or not (the contract's default); an explicit
    process_safe = True vouches for what it wraps."""
    def plain(n):
        return Reply.value(5)

    audit = AuditHandler(AuditLog(None))
    for fn in (plain, _Plain().answer, functools.partial(plain), lambda n: plain(n), _Vouching(audit),
               functools.partial(_Vouching(audit)), os.getpid, print):
        assert find_unsafe(fn) is None, fn
    loop = functools.partial(plain)
    loop.func_again = loop                    # cycles end
    assert find_unsafe(loop) is None


def test_workers_end_on_sigterm_when_the_parent_blocks_it(target_bin):
    """A parent that has SIGTERM blocked when it forks the workers (sysgate run reads SIGTERM from a
    signalfd): the workers unblock it, so stopping them ends them by SIGTERM, not by SIGKILL after
    the grace, which counts as losing them and fails the listener closed. The other blocked signals
    stay blocked in the workers."""
    blocked = {signal.SIGTERM, signal.SIGHUP}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
    r, w = os.pipe()
    try:
        with Supervisor(processes=2) as sup:
            def handler(n):
                if n.args[0] == 0:        # the worker's mask, as the kernel has it
                    with open(f"/proc/{os.getpid()}/status") as status:
                        os.write(w, next(line for line in status if line.startswith("SigBlk:")).encode())
                return Reply.value(5)

            sup.on("getppid", handler)
            run = Run(target_bin, "getppid", 100000)     # outlives the run: blocks writing its full stdout
            listener = sup.add_target(run.target)
            assert not sup.run(timeout=1)                # timed out: the workers are stopped
            assert sup.stats.workers_lost == 0 and not listener.released, sup.stats
            assert children() <= {run.target.pid}
            assert signal.pthread_sigmask(signal.SIG_BLOCK, ()) >= blocked     # the parent's mask is kept
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    got = [r[:2] for r in results(run.output())]
    run.finish()
    assert got[0] == (5, 0) and set(got) <= {(5, 0), (-1, errno.ENOSYS)}
    assert select.select([r], [], [], 30)[0]
    sigblk = int(os.read(r, 100).split()[1], 16)
    os.close(r)
    os.close(w)
    assert not sigblk & (1 << (signal.SIGTERM - 1)) and sigblk & (1 << (signal.SIGHUP - 1)), hex(sigblk)


def test_refusals(target_bin):
    with pytest.raises(ValueError):
        Supervisor(processes=0)
    with Supervisor(processes=2) as sup:
        with pytest.raises(SysgateError, match="run_once"):
            sup.run_once(0)
        done = threading.Event()
        thread = threading.Thread(target=done.wait)
        thread.start()
        try:
            with pytest.raises(SysgateError, match="before any thread starts"):
                sup.run(timeout=0)
        finally:
            done.set()
            thread.join()


PARENT_SCRIPT = r"""
import sys, time
sys.path.insert(0, sys.argv[3])
from support.supervisor import notify_getppid
from sysgate.process import launch
from sysgate.supervisor import Reply, Supervisor

target = launch.spawn([sys.argv[1], "getppid", "3"], notify_getppid(), stdout=int(sys.argv[2]))

def handler(n):
    if n.args[0] == 1:
        time.sleep(3600)          # the second call stays in a worker until the parent is killed
    return Reply.value(5)

with Supervisor(processes=2) as sup:
    sup.on("getppid", handler)
    sup.add_target(target)
    sup.run_until_idle()
"""


def read_lines(fd: int, timeout: float = 30) -> list[str]:
    """Everything written to pipe ``fd`` until EOF, each wait bounded by ``timeout``."""
    data = b""
    while select.select([fd], [], [], timeout)[0]:
        chunk = os.read(fd, 4096)
        if not chunk:
            return data.decode().splitlines()
        data += chunk
    raise AssertionError(f"no EOF within {timeout}s; got {data!r}")


def test_workers_die_with_the_parent(target_bin):
    """SIGKILL of the supervising process: its workers die too (PR_SET_PDEATHSIG), the last copy of
    the listener closes, and the target's waiting call fails with ENOSYS instead of hanging."""
    r, w = os.pipe()
    proc = subprocess.Popen([sys.executable, "-c", PARENT_SCRIPT, target_bin, str(w), TESTS], pass_fds=(w,))
    os.close(w)
    try:
        assert select.select([r], [], [], 30)[0]
        first = os.read(r, 6)                        # "5 0 0\n": the first call was answered
        proc.kill()
        proc.wait(30)
        rest = read_lines(r)
    finally:
        os.close(r)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert first == b"5 0 0\n"
    assert [tuple(map(int, line.split()))[:2] for line in rest] == [(-1, errno.ENOSYS)] * 2
