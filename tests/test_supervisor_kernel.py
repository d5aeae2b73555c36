"""Kernel behaviours seen through the supervisor (ideas from the kernel's seccomp selftests):
target killed mid-call, signals and restarts, closed listener, pid namespaces, FIFO order,
filter-empty hang-up (threads, daemons), ADDFD, WAIT_KILLABLE_RECV, target memory reads."""
from __future__ import annotations

import ctypes
import errno
import json
import os
import select
import signal
import socket
import time

import pytest

from sysgate.process.install import install
from sysgate.kernel import abi
from sysgate.supervisor import Reply, Supervisor, TargetGone
from sysgate.supervisor import memory
from support.supervisor import Run, fd_count, notify_getppid

SIGUSR1_BIT = 1 << (signal.SIGUSR1 - 1)


def wait_for(predicate, timeout: float = 5.0, what: str = "condition") -> None:
    """Poll a kernel-side state that offers no fd to wait on (ID_VALID, /proc); bounded."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.001)


def signal_pending(pid: int, bit: int) -> bool:
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    return bool((int(fields["SigPnd"], 16) | int(fields["ShdPnd"], 16)) & bit)


def test_target_killed_mid_call_is_counted_and_loop_continues(target_bin):
    results = []

    def kill_then_reply(n):
        target = n.listener.target
        target.kill(signal.SIGKILL)
        wait_for(lambda: not n.valid(), what="the id to become invalid")
        results.append(n.send_value(1))       # ENOENT: counted, not an error

    with Supervisor() as sup:
        sup.on("getppid", kill_then_reply, blocking=True, group="victim")
        sup.on("getppid", lambda n: Reply.value(42), group="other")
        victim, other = Run(target_bin, "getppid", 1), Run(target_bin, "expect", 20, 42)
        sup.add_target(victim.target, group="victim")
        sup.add_target(other.target, group="other")
        assert sup.run_until_idle(10)
    assert results == [False] and sup.stats.gone == 1 and sup.stats.errors == 0
    assert victim.finish() == -signal.SIGKILL and other.finish() == 0


def test_signal_with_sa_restart_gives_a_new_id(target_bin):
    ids, late = [], []

    def handler(n):
        ids.append(n.id)
        if len(ids) > 1:
            return Reply.value(42)
        signal.pidfd_send_signal(n.listener.pidfd, signal.SIGUSR1)
        wait_for(lambda: not n.valid(), what="the interrupted id to become invalid")
        try:
            n.read_memory(n.instruction_pointer, 1)
            late.append("read stale memory")
        except TargetGone:
            late.append("gone")
        late.append(n.send_value(1))           # the old id: ENOENT, counted
        return None

    with Supervisor(workers=2) as sup:
        sup.on("getppid", handler, blocking=True)
        run = Run(target_bin, "restart")
        sup.add_target(run.target)
        assert sup.run_until_idle(10)
        out = run.output()
    assert out.split() == ["42", "0", "1"]            # restarted, answered; the signal handler ran once
    assert len(ids) == 2 and ids[0] != ids[1]
    assert late == ["gone", False] and sup.stats.gone == 1
    assert run.finish() == 0


def test_closed_listener_fails_waiting_syscall_with_enosys(target_bin):
    run = Run(target_bin, "getppid", 1)
    sup = Supervisor()
    sup.add_target(run.target)
    lst = sup.listeners[0]
    assert select.select([lst.fd], [], [], 5)[0]       # notified and waiting, never RECVed
    sup.close()
    assert run.readline().split() == ["-1", str(errno.ENOSYS), "0"]
    assert run.finish() == 0


def test_fifo_order_of_pending_notifications(target_bin):
    run = Run(target_bin, "fifo", 6)
    assert run.readline() == "ready\n"                # all six threads wait, in creation order
    order = []
    with Supervisor() as sup:
        sup.on("getppid", lambda n: order.append(n.args[0]) or Reply.value(0))
        sup.add_target(run.target)
        assert sup.run_until_idle(10)
    assert order == list(range(6))
    assert run.finish() == 0


@pytest.mark.parametrize("threads", [0, 8])
def test_filter_empty_hangup_releases_listener(target_bin, threads):
    base = fd_count()
    released = []
    with Supervisor() as sup:
        sup.on("getppid", lambda n: Reply.value(0))
        run = Run(target_bin, "threads", threads)
        lst = sup.add_target(run.target, on_release=released.append)
        assert sup.run_until_idle(10)
        assert released == [lst] and lst.reason == "hangup" and lst.fd == -1
        assert sup.stats.received == threads
        assert run.finish() == 0
    assert fd_count() == base


def _fork_child(fn) -> tuple[int, int]:
    """Run ``fn()`` in a forked child that reports its JSON result on a pipe; (pid, read end)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            result = fn()
        except BaseException as exc:  # report everything to the parent
            result = {"error": repr(exc)}
        os.write(w, json.dumps(result).encode())
        os._exit(0)
    os.close(w)
    return pid, r


def _child_result(pid: int, r: int) -> dict:
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return json.loads(data or b'{"error": "no result"}')


def _in_child(fn) -> dict:
    return _child_result(*_fork_child(fn))


def test_daemon_outliving_target_keeps_listener_until_it_exits(target_bin):
    """Seed 000: the target exits, a daemon it forked keeps the filter; the listener is released
    only when the daemon exits too. Runs in a subreaper child so the orphan is reaped."""
    def scenario():
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(36, 1, 0, 0, 0)                     # PR_SET_CHILD_SUBREAPER
        stdin_r, stdin_w = os.pipe()
        released = []
        with Supervisor() as sup:
            sup.on("getppid", lambda n: Reply.value(7))
            run = Run(target_bin, "daemon", stdin=stdin_r)
            os.close(stdin_r)
            daemon = int(run.readline().split()[1])
            lst = sup.add_target(run.target, on_release=released.append)
            sup.run(10, until=lambda: run.target.returncode is not None)
            still_held = lst.reason is None
            os.write(stdin_w, b"x")
            reaped = []

            def reap_daemon():
                if not reaped and os.waitpid(daemon, os.WNOHANG)[0]:
                    reaped.append(daemon)
                return bool(released)
            sup.run(10, until=reap_daemon)
            out = run.output()
            run.finish()
        return {"still_held": still_held, "released": [listener.reason for listener in released], "out": out,
                "received": sup.stats.received}

    result = _in_child(scenario)
    assert result == {"still_held": True, "released": ["hangup"], "out": "7 0 0\n", "received": 1}


def test_sibling_pid_namespace_reports_pid_0(needs_root):
    """A supervisor in one new pid namespace, the target in a sibling one: pid 0, no memory access."""
    CLONE_NEWPID = 0x20000000
    libc = ctypes.CDLL(None, use_errno=True)
    sup_end, tgt_end = socket.socketpair()

    def in_new_pidns(body):
        def run():
            if libc.unshare(CLONE_NEWPID):
                return {"error": os.strerror(ctypes.get_errno())}
            return _in_child(body)
        return run

    def supervisor():
        fd = socket.recv_fds(sup_end, 1, 1)[1][0]
        seen = {}

        def handler(n):
            seen["pid"] = n.pid
            try:
                n.read_memory(n.instruction_pointer, 1)
            except OSError as exc:
                seen["read"] = errno.errorcode[exc.errno]
            return Reply.value(42)
        with Supervisor() as sup:
            sup.on("getppid", handler)
            sup.add_listener(fd)
            sup.run(10, until=lambda: "pid" in seen)
        return seen

    def target():
        fd = install(notify_getppid(), new_listener=True)
        socket.send_fds(tgt_end, [b"L"], [fd])
        os.close(fd)
        return {"getppid": os.getppid()}

    children = [_fork_child(in_new_pidns(supervisor)), _fork_child(in_new_pidns(target))]
    seen, answered = (_child_result(*child) for child in children)
    assert answered == {"getppid": 42}
    assert seen == {"pid": 0, "read": "ESRCH"}


@pytest.mark.parametrize("case, expected", [
    ("send", "{fd} hello"),
    ("setfd", "100 hello"),
    ("nosend", "{fd} hello"),
    ("rlimit0", f"-1 {errno.EMFILE} 0"),
])
def test_inject_fd(target_bin, case, expected):
    def handler(n):
        r, w = os.pipe()
        os.write(w, b"hello")
        os.close(w)
        try:
            if case == "setfd":
                n.inject_fd(r, target_fd=100)
            elif case == "nosend":
                n.send_value(n.inject_fd(r, send=False))
            else:
                n.inject_fd(r)
        except OSError as exc:
            n.send_errno(exc.errno)                  # EMFILE: the target's RLIMIT_NOFILE is 0
        finally:
            os.close(r)

    with Supervisor() as sup:
        sup.on("getppid", handler)
        run = Run(target_bin, "addfd", "rlimit0" if case == "rlimit0" else "plain")
        sup.add_target(run.target)
        assert sup.run_until_idle(10)
        out = run.output().strip()
    first_free = 3  # the target has stdin/stdout/stderr only
    assert out == expected.format(fd=first_free)
    assert run.finish() == 0


@pytest.mark.parametrize("sig, fatal", [(signal.SIGUSR1, False), (signal.SIGTERM, True)])
def test_wait_killable_recv(target_bin, sig, fatal):
    """Once RECVed, a non-fatal signal stays pending (the syscall is not interrupted); a fatal one kills."""
    observed = []

    def handler(n):
        signal.pidfd_send_signal(n.listener.pidfd, sig)
        if fatal:
            wait_for(lambda: not n.valid(), what="the killed target's id to become invalid")
            observed.append(n.send_value(1))
            return None
        wait_for(lambda: signal_pending(n.pid, SIGUSR1_BIT), what="SIGUSR1 to be pending")
        observed.append(n.valid())
        return Reply.value(42)

    with Supervisor() as sup:
        sup.on("getppid", handler, blocking=True)
        run = Run(target_bin, "signal", wait_killable_recv=True)
        sup.add_target(run.target)
        assert sup.run_until_idle(10)
        out = run.output()
    if fatal:
        assert observed == [False] and out == "" and run.finish() == -signal.SIGTERM
    else:
        assert observed == [True] and out.split() == ["42", "0", "1"] and run.finish() == 0


def test_without_wait_killable_recv_a_signal_interrupts(target_bin):
    """Contrast: without the flag SIGUSR1 (no SA_RESTART) interrupts the waiting syscall."""
    def handler(n):
        signal.pidfd_send_signal(n.listener.pidfd, signal.SIGUSR1)
        wait_for(lambda: not n.valid(), what="the id to become invalid")
        return Reply.value(42)                  # too late: ENOENT

    with Supervisor() as sup:
        sup.on("getppid", handler, blocking=True)
        run = Run(target_bin, "signal")
        sup.add_target(run.target)
        assert sup.run_until_idle(10)
        out = run.output()
    assert out.split() == ["-1", str(errno.EINTR), "1"] and sup.stats.gone == 1
    assert run.finish() == 0


def test_read_string_arguments(target_bin):
    def handler(n):
        try:
            data = n.read_string(n.args[0])
        except OSError as exc:
            return Reply.errno(exc.errno)
        assert n.read_memory(n.args[0], len(data)) == data
        return Reply.value(len(data) if set(data) <= {ord("x")} else -100)

    with Supervisor() as sup:
        sup.on("getppid", handler)
        run = Run(target_bin, "edge")
        sup.add_target(run.target)
        assert sup.run_until_idle(10)
        out = run.output()
    # "xxx" ending at a page end before a hole; 1999 bytes; no NUL before the hole -> EFAULT
    assert [tuple(map(int, line.split())) for line in out.splitlines()] == \
        [(3, 0, 0), (1999, 0, 0), (-1, errno.EFAULT, 0)]
    assert run.finish() == 0


def test_read_string_limit_and_content(target_bin):
    got = []

    def handler(n):
        got.append(n.read_string(n.args[0]))
        try:
            n.read_string(n.args[0], max=4)
        except OSError as exc:
            got.append(errno.errorcode[exc.errno])
        return Reply.value(n.args[1])

    with Supervisor() as sup:
        sup.on("getppid", handler)
        run = Run(target_bin, "string", "héllo/wörld")
        sup.add_target(run.target)
        assert sup.run_until_idle(10)
        run.output()
    assert got == ["héllo/wörld".encode(), "ENAMETOOLONG"]
    assert run.finish() == 0


def test_proc_mem_fallback_matches_process_vm_readv():
    buf = ctypes.create_string_buffer(b"sysgate memory\0tail")
    address = ctypes.addressof(buf)
    pid = os.fork()
    if pid == 0:          # a stopped copy of us: same addresses
        os.kill(os.getpid(), signal.SIGSTOP)
        os._exit(0)
    try:
        os.waitpid(pid, os.WUNTRACED)
        assert memory.read(pid, address, 19) == memory.read_proc_mem(pid, address, 19) == buf.raw[:19]
        assert memory.read_cstring(pid, address) == b"sysgate memory"
        with pytest.raises(OSError) as exc:
            memory.read_proc_mem(pid, 8, 4)
        assert exc.value.errno == errno.EFAULT
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


# --- ioctl argument packing (kernel/notify.py): every value reaches the kernel or is EINVAL
def _getppid_notifier():
    """A Python target whose getppid notifies; it prints getppid's raw return value."""
    from sysgate.process import launch
    from sysgate.bpf.insn import BPF_JEQ, BPF_JMP, BPF_K, jump, ld_abs, ret
    from sysgate.arch.syscalls import number
    import sys
    nr = number(abi.native_arch(), "getppid")
    program = [ld_abs(abi.OFFSET_NR), jump(BPF_JMP | BPF_JEQ | BPF_K, nr, 0, 1),
               ret(abi.SECCOMP_RET_USER_NOTIF), ret(abi.SECCOMP_RET_ALLOW)]
    code = ("import ctypes; libc = ctypes.CDLL(None); libc.syscall.restype = ctypes.c_long; "
            f"print(libc.syscall({nr}) & (2**64 - 1))")
    r, w = os.pipe()
    try:
        target = launch.spawn([sys.executable, "-c", code], program, stdout=w)
    finally:
        os.close(w)
    target.output = os.fdopen(r)
    return target


@pytest.mark.parametrize("flags", [0x80000000, 0xFFFFFFFF, 2**32, 2**63, 2**64 - 1])
def test_set_flags_with_high_bits_reaches_the_kernel(flags):
    from sysgate.kernel import notify
    target = _getppid_notifier()
    try:
        with pytest.raises(OSError) as raised:      # not OverflowError: the kernel answers EINVAL
            notify.set_flags(target.listener, flags)
        assert raised.value.errno == errno.EINVAL
        notify.set_flags(target.listener, 0)
    finally:
        target.kill()
        target.close()
        target.output.close()


def test_ioctl_values_wider_than_the_field_are_einval_not_truncated():
    from sysgate.kernel import notify
    target = _getppid_notifier()
    try:
        for call in (lambda: notify.set_flags(target.listener, 2**64 + abi.SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP),
                     lambda: notify.set_flags(target.listener, -2**63 - 1),
                     lambda: notify.send(target.listener, 2**64, 0),
                     lambda: notify.send(target.listener, 1, flags=2**32 | abi.SECCOMP_USER_NOTIF_FLAG_CONTINUE),
                     lambda: notify.addfd(target.listener, 1, 2**32),
                     lambda: notify.id_valid(target.listener, -2**64)):
            with pytest.raises(OSError, match="does not fit") as raised:
                call()
            assert raised.value.errno == errno.EINVAL
        # in range, even with the top bit set: the kernel decides
        assert notify.id_valid(target.listener, 2**64 - 1) is False                         # ENOENT
        with pytest.raises(OSError) as raised:
            notify.addfd(target.listener, 2**63, srcfd=-1)
        assert raised.value.errno == errno.EBADF
    finally:
        target.kill()
        target.close()
        target.output.close()


@pytest.mark.parametrize("val", [2**63 + 5, 2**64 - 4096 - 1, 2**31])
def test_send_unsigned_return_values_reach_the_target(val):
    from sysgate.kernel import notify
    target = _getppid_notifier()
    try:
        ready, _, _ = select.select([target.listener], [], [], 10)
        assert ready, "no notification"
        n = notify.recv(target.listener)
        notify.send(target.listener, n.id, val=val)
        assert target.wait(10) == 0
        assert int(target.output.read()) == val
    finally:
        target.kill()
        target.close()
        target.output.close()


@pytest.mark.parametrize("val,printed,errors", [(2**63 + 5, 2**63 + 5, 0), (-4097, 2**64 - 4097, 0),
                                                (2**64, 2**64 - 1, 1), (-2**63 - 1, 2**64 - 1, 1)])
def test_handler_return_values_are_unsigned_or_fail_closed(val, printed, errors):
    """Reply.value(2**63 + 5) reaches the target; a value wider than 64 bits is a handler error
    answered with on_error_errno (it used to leave the target waiting: nothing was sent)."""
    target = _getppid_notifier()
    try:
        with Supervisor(on_error_errno="EPERM") as sup:
            sup.on("getppid", lambda n: Reply.value(val))
            sup.add_target(target)
            assert sup.run_until_idle(10)
        assert target.wait(10) == 0 and int(target.output.read()) == printed
        assert sup.stats.errors == errors
    finally:
        target.kill()
        target.close()
        target.output.close()


def test_return_value_wider_than_64_bits_fails_closed():
    target = _getppid_notifier()
    seen = []

    def handler(n):
        try:
            n.send_value(2**64)
        except ValueError as exc:
            seen.append(str(exc))
            n.send_errno("E2BIG")

    try:
        with Supervisor() as sup:
            sup.on("getppid", handler)
            sup.add_target(target)
            assert sup.run_until_idle(10)
        assert seen == [f"return value {2**64} does not fit in 64 bits"]
        assert target.wait(10) == 0 and int(target.output.read()) == 2**64 - 1      # -1: failed (E2BIG)
    finally:
        target.kill()
        target.close()
        target.output.close()
