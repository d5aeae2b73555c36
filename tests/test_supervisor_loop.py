"""Supervisor API with real targets: dispatch, replies, fail-closed errors, deadlines, workers, scale."""
from __future__ import annotations

import asyncio
import errno
import os
import select
import signal
import threading
import time

import pytest

from sysgate.errors import SysgateError
from sysgate.kernel import abi
from sysgate.policy.model import Action, Policy, Rule, Cmp
from sysgate.supervisor import Reply, ReplyError, Supervisor
from support.supervisor import GETPPID, Run, fd_count


def serve(sup: Supervisor, *runs: Run, timeout: float = 20) -> list[str]:
    """Add the targets, serve until all are released, return their outputs."""
    for run in runs:
        sup.add_target(run.target)
    assert sup.run_until_idle(timeout), "targets still running"
    outputs = [run.output() for run in runs]
    for run in runs:
        run.finish()
    return outputs


def lines(text: str) -> list[tuple[int, int, int]]:
    return [tuple(map(int, line.split())) for line in text.splitlines()]


def test_handler_by_name_return_value_and_decoding(target_bin):
    seen = []
    with Supervisor() as sup:
        @sup.on("getppid")
        def handler(n):
            seen.append((n.syscall, n.arch, n.nr, n.args[0], n.group, n.pid))
            n.send_value(1000 + n.args[0])
        run = Run(target_bin, "getppid", 3)
        pid = run.target.pid
        (out,) = serve(sup, run)
    assert lines(out) == [(1000, 0, 0), (1001, 0, 0), (1002, 0, 0)]
    assert [s[:4] for s in seen] == [("getppid", abi.native_arch(), GETPPID, i) for i in range(3)]
    assert {s[4] for s in seen} == {"default"} and {s[5] for s in seen} == {pid}
    assert sup.stats.received == 3 and sup.stats.released == 1


def test_returned_reply_default_and_errno_names(target_bin):
    answers = iter([Reply.value(7), None, Reply.errno("EACCES"), Reply.errno(errno.ENOENT)])
    with Supervisor(default=Reply.errno("EROFS")) as sup:
        sup.on(GETPPID, lambda n: next(answers))          # a number = native arch
        (out,) = serve(sup, Run(target_bin, "getppid", 4))
    assert lines(out) == [(7, 0, 0), (-1, errno.EROFS, 0), (-1, errno.EACCES, 0), (-1, errno.ENOENT, 0)]


def test_no_handler_gets_default_and_fallback(target_bin):
    with Supervisor(default=Reply.errno("EPERM")) as sup:
        (out,) = serve(sup, Run(target_bin, "getppid", 1))
    assert lines(out) == [(-1, errno.EPERM, 0)]
    with Supervisor() as sup:
        sup.fallback(lambda n: Reply.value(len(n.syscall)))
        (out,) = serve(sup, Run(target_bin, "getppid", 1))
    assert lines(out) == [(7, 0, 0)]


def test_continue_runs_the_real_syscall(target_bin):
    with Supervisor() as sup:
        sup.on("getppid", lambda n: n.send_continue())
        (out,) = serve(sup, Run(target_bin, "getppid", 2))
    assert lines(out) == [(os.getpid(), 0, 0)] * 2


def test_exceptions_and_bad_returns_fail_closed(target_bin, caplog):
    calls = iter(["raise", "bad", "double", "reply-and-return"])

    def handler(n):
        what = next(calls)
        if what == "raise":
            raise ValueError("boom")
        if what == "bad":
            return 42                         # not a Reply
        if what == "double":
            n.send_value(5)
            n.send_value(6)                 # programming error: the first reply stands
        if what == "reply-and-return":
            n.send_value(8)
            return Reply.value(9)
        return None

    with Supervisor(on_error_errno="EACCES") as sup:
        sup.on("getppid", handler)
        (out,) = serve(sup, Run(target_bin, "getppid", 4))
    assert lines(out) == [(-1, errno.EACCES, 0), (-1, errno.EACCES, 0), (5, 0, 0), (8, 0, 0)]
    assert sup.stats.errors == 4
    assert "boom" in caplog.text


@pytest.mark.parametrize("blocking", [False, True])
def test_reply_the_kernel_refuses_fails_closed(target_bin, blocking):
    """A returned Reply the kernel refuses (CONTINUE with a value: EINVAL from SEND) is answered
    on_error_errno instead of leaving the target waiting until the supervisor closes (ENOSYS)."""
    def handler(n):
        reply = Reply.continue_()
        reply.val = 5
        return reply

    with Supervisor(on_error_errno="EACCES") as sup:
        sup.on("getppid", handler, blocking=blocking)
        (out,) = serve(sup, Run(target_bin, "getppid", 2))
    assert lines(out) == [(-1, errno.EACCES, 0)] * 2
    assert sup.stats.errors == 2

def test_double_reply_raises(target_bin):
    errors = []

    def handler(n):
        n.send_errno("EPERM")
        try:
            n.send_continue()
        except ReplyError as exc:
            errors.append(exc)

    with Supervisor() as sup:
        sup.on("getppid", handler)
        serve(sup, Run(target_bin, "getppid", 1))
    assert len(errors) == 1 and sup.stats.errors == 0


def test_group_state_and_group_handlers(target_bin):
    with Supervisor() as sup:
        def count(n):
            n.state["calls"] = n.state.get("calls", 0) + 1
            return Reply.value(n.state["calls"])
        sup.on("getppid", count)
        sup.on("getppid", lambda n: Reply.value(-5 & 0xFFFF), group="other")
        a, b = Run(target_bin, "getppid", 2), Run(target_bin, "getppid", 2)
        c = Run(target_bin, "getppid", 1)
        sup.add_target(c.target, group="other")
        out_a, out_b = serve(sup, a, b)
        out_c = c.output()
        c.finish()
    assert sorted(r for r, _, _ in lines(out_a) + lines(out_b)) == [1, 2, 3, 4]
    assert lines(out_c) == [(0xFFFB, 0, 0)]
    assert sup.group("default").state["calls"] == 4 and "calls" not in sup.group("other").state


def test_use_policy_routes_notify_handlers(target_bin):
    policy = Policy(default=Action("allow"), rules=[
        Rule("getppid", Action("notify", handler="small"), Cmp(0, "<", 2)),
        Rule("getppid", Action("notify", handler="big")),
    ])
    with Supervisor() as sup:
        with pytest.raises(SysgateError, match="big"):
            sup.use_policy(policy, {"small": lambda n: Reply.value(1)})
        sup.use_policy(policy, {"small": lambda n: Reply.value(1), "big": lambda n: Reply.value(2)})
        (out,) = serve(sup, Run(target_bin, "getppid", 3))
    assert [r for r, _, _ in lines(out)] == [1, 1, 2]


def test_unknown_syscall_name_is_rejected():
    with Supervisor() as sup:
        with pytest.raises(SysgateError, match="did you mean openat"):
            sup.on("opnat", lambda n: None)


def test_blocking_handler_deadline_fails_closed(target_bin):
    release = threading.Event()

    def stuck(n):
        release.wait(10)
        return Reply.value(1)

    with Supervisor(on_error_errno="ETIMEDOUT") as sup:
        sup.on("getppid", stuck, deadline=0.2)
        start = time.monotonic()
        run = Run(target_bin, "getppid", 1)
        sup.add_target(run.target)
        assert sup.run(5, until=lambda: sup.stats.timeouts == 1)
        took = time.monotonic() - start
        assert run.readline().split() == ["-1", str(errno.ETIMEDOUT), "0"]
        release.set()
        assert sup.run_until_idle(10)
        run.finish()
    assert 0.2 <= took < 5 and sup.stats.timeouts == 1


def test_blocking_handler_does_not_stall_other_targets(target_bin):
    """A handler blocked in a worker for a long time; another target's 500 calls go through meanwhile."""
    release = threading.Event()
    with Supervisor(workers=2) as sup:
        sup.on("getppid", lambda n: release.wait(10) and Reply.value(1), blocking=True, group="slow")
        sup.on("getppid", lambda n: Reply.value(42), group="fast")
        slow = Run(target_bin, "getppid", 1)
        sup.add_target(slow.target, group="slow")
        fast = Run(target_bin, "expect", 500, 42)
        sup.add_target(fast.target, group="fast")
        start = time.monotonic()
        assert sup.run(10, until=lambda: fast.target.returncode is not None)
        took = time.monotonic() - start
        assert fast.target.returncode == 0 and slow.target.returncode is None
        release.set()
        assert sup.run_until_idle(10)
        assert slow.output().split() == ["1", "0", "0"]
        slow.finish()
        fast.finish()
    assert took < 2.0, f"fast target took {took:.2f}s while a slow handler was blocked"


def test_pool_full_is_rejected_closed(target_bin):
    release = threading.Event()
    with Supervisor(workers=1, max_pending=1, on_error_errno="EAGAIN") as sup:
        sup.on("getppid", lambda n: release.wait(10) and Reply.value(1), blocking=True)
        first, second = Run(target_bin, "getppid", 1), Run(target_bin, "getppid", 1)
        sup.add_target(first.target)
        sup.run(5, until=lambda: sup.stats.received == 1)
        sup.add_target(second.target)
        assert sup.run(5, until=lambda: second.target.returncode is not None)
        assert second.output().split() == ["-1", str(errno.EAGAIN), "0"]
        release.set()
        assert sup.run_until_idle(10)
        first.finish()
        second.finish()
    assert sup.stats.rejected == 1


def test_many_targets_concurrently_no_fd_leak(target_bin):
    base = fd_count()
    with Supervisor() as sup:
        sup.on("getppid", lambda n: Reply.value(42))
        runs = [Run(target_bin, "expect", 5, 42) for _ in range(200)]
        for run in runs:
            sup.add_target(run.target)
        assert sup.run_until_idle(30)
        codes = [run.finish() for run in runs]
    assert codes == [0] * 200
    assert sup.stats.received == 1000 and sup.stats.released == 200
    assert fd_count() == base


def test_stop_from_another_thread_and_close_gives_enosys(target_bin):
    """stop() from another thread ends run(); close() releases the listeners, so the syscall
    still waiting (its handler is blocked in a worker) fails with ENOSYS; no fd stays open."""
    base = fd_count()
    gate = threading.Event()
    sup = Supervisor()
    sup.on("getppid", lambda n: gate.wait(10) and Reply.value(1), blocking=True)
    run = Run(target_bin, "getppid", 1)
    released = []
    lst = sup.add_target(run.target, on_release=released.append)
    assert sup.run(5, until=lambda: sup.stats.received == 1)
    threading.Timer(0.05, sup.stop).start()
    assert sup.run(5) is True                               # returned because of stop()
    sup.close(grace=0.1)
    assert run.readline().split() == ["-1", str(errno.ENOSYS), "0"]
    gate.set()                                              # the late reply finds the listener closed
    assert run.finish() == 0
    assert released == [lst] and lst.reason == "shutdown"
    deadline = time.monotonic() + 5
    while fd_count() != base and time.monotonic() < deadline:  # the worker closes the eventfd on exit
        time.sleep(0.01)
    assert fd_count() == base


def test_asyncio_adapter(target_bin):
    async def main():
        with Supervisor() as sup:
            sup.on("getppid", lambda n: Reply.value(3))
            runs = [Run(target_bin, "getppid", 2) for _ in range(3)]
            for run in runs:
                sup.add_target(run.target)
            await asyncio.wait_for(sup.serve(until_idle=True), 10)
            return [run.output() for run in runs], runs

    outs, runs = asyncio.run(main())
    for run in runs:
        run.finish()
    assert all(lines(o) == [(3, 0, 0)] * 2 for o in outs)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_forever_shuts_down_cleanly_on_signal(target_bin, sig):
    """In a child: serve_forever with a call in flight; the signal stops it, listeners close, the
    target's waiting syscall fails with ENOSYS, fds return to the baseline."""
    started_r, started_w = os.pipe()
    result_r, result_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(started_r)
            os.close(result_r)
            base = fd_count()
            gate = threading.Event()
            sup = Supervisor()

            def stuck(n):
                os.write(started_w, b"s")
                gate.wait(10)
            sup.on("getppid", stuck, blocking=True)
            run = Run(target_bin, "getppid", 1)
            lst = sup.add_target(run.target)
            sup.serve_forever(grace=0.1)
            out = run.readline().split()
            gate.set()
            run.finish()
            sup._pool.shutdown(5)
            os.close(started_w)
            closed_since = 1  # started_w
            ok = (out == ["-1", str(errno.ENOSYS), "0"] and lst.reason == "shutdown"
                  and fd_count() == base - closed_since)
            os.write(result_w, b"ok" if ok else repr((out, lst.reason, fd_count(), base)).encode())
        finally:
            os._exit(0)
    os.close(started_w)
    os.close(result_w)
    assert select.select([started_r], [], [], 10)[0] and os.read(started_r, 1) == b"s"
    os.kill(pid, sig)
    assert select.select([result_r], [], [], 10)[0]
    assert os.read(result_r, 4096) == b"ok"
    os.waitpid(pid, 0)
    os.close(started_r)
    os.close(result_r)


def test_group_fallback_beats_global_handler(target_bin):
    """A group's own fallback wins over a global per-syscall handler (the group is the target's policy)."""
    with Supervisor() as sup:
        sup.on("getppid", lambda n: Reply.value(1))
        sup.fallback(lambda n: Reply.value(2), group="g")
        run = Run(target_bin, "getppid", 1)
        sup.add_target(run.target, group="g")
        assert sup.run_until_idle(10)
        out = run.output()
        run.finish()
    assert lines(out) == [(2, 0, 0)]


def test_named_arguments_and_lazy_decoding():
    """Decoding a RECV buffer: names from the syscall's signature, raw unsigned registers."""
    from sysgate.arch import syscalls
    from sysgate.supervisor.notification import Notification

    nr = syscalls.number(None, "openat")
    raw = bytearray(abi.SECCOMP_NOTIF.pack(7, 1234, 0, abi.SECCOMP_DATA.pack(
        nr, abi.AUDIT_ARCH[abi.native_arch()], 0x401000, -100 & (2**64 - 1), 0x7FFF0000, 0o102, 0o644, 0, 0)))
    n = Notification(None, raw, 7, 1234)
    assert (n.syscall, n.arch, n.nr, n.instruction_pointer) == ("openat", abi.native_arch(), nr, 0x401000)
    assert n.arguments == {"dirfd": 2**64 - 100, "pathname": 0x7FFF0000, "flags": 0o102, "mode": 0o644}
    assert n.args[4:] == (0, 0)


def test_errno_names_are_checked():
    with pytest.raises(SysgateError, match="EFOO"):
        Reply.errno("EFOO")
    with pytest.raises(SysgateError):
        Supervisor(on_error_errno=5000)
