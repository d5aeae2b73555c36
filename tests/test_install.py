"""install(): real filters installed in forked children, flags, TSYNC and stacked precedence."""
from __future__ import annotations

import ctypes
import os
import signal
import threading
import time

import pytest
from hypothesis import given, settings, strategies as st

from sysgate.process import install as inst
from sysgate.bpf.insn import ld_abs, pack, ret
from sysgate.errors import SysgateError, UnsupportedError
from sysgate.kernel import abi
from sysgate.kernel import calls
from support.filters import only, run_in_child

#: A syscall number no architecture defines: unfiltered it fails with ENOSYS.
NR_UNUSED = 1000
_libc = ctypes.CDLL(None, use_errno=True)


def probe(nr: int = NR_UNUSED) -> str:
    """Call syscall ``nr``: 'errno:N' ('errno:38' = ENOSYS, i.e. the kernel ran it) or 'ok'."""
    r = _libc.syscall(ctypes.c_long(nr), 0, 0, 0)
    return f"errno:{ctypes.get_errno()}" if r == -1 else "ok"


@pytest.mark.parametrize("form", ["insns", "bytes"])
def test_install_applies_errno(form):
    prog = only(NR_UNUSED, abi.SECCOMP_RET_ERRNO | 77)
    program = prog if form == "insns" else pack(prog)
    rc, out = run_in_child(lambda: [probe(), inst.install(program), probe(), calls.get_no_new_privs()])
    assert rc == 0 and out == ["errno:38", None, "errno:77", True]


def test_install_policy_compiles_for_native_arch():
    from sysgate.policy.model import Action, Policy, Rule

    policy = Policy(default=Action("allow"), rules=[Rule("mkdir", Action("errno", 13)),
                                                    Rule("mkdirat", Action("errno", 13))])

    def child():
        inst.install(policy)
        try:
            os.mkdir("/tmp/sysgate-install-test-never")
        except OSError as exc:
            return exc.errno
        return "created"
    assert run_in_child(child) == (0, 13)


def test_new_listener_returns_cloexec_listener():
    def child():
        fd = inst.install(only(NR_UNUSED, abi.SECCOMP_RET_USER_NOTIF), new_listener=True)
        return [os.readlink(f"/proc/self/fd/{fd}"), os.get_inheritable(fd)]
    assert run_in_child(child) == (0, ["anon_inode:seccomp notify", False])


def test_flag_rules():
    assert inst.filter_flags() == 0
    both = inst.filter_flags(tsync=True, new_listener=True)
    assert both == (abi.SECCOMP_FILTER_FLAG_TSYNC | abi.SECCOMP_FILTER_FLAG_NEW_LISTENER
                    | abi.SECCOMP_FILTER_FLAG_TSYNC_ESRCH)
    with pytest.raises(SysgateError, match="WAIT_KILLABLE_RECV"):
        inst.filter_flags(wait_killable_recv=True)


def test_missing_flag_names_kernel_version(monkeypatch):
    from sysgate.process import features

    real = features.features()
    fake = features.Features(real.kernel, real.arch, True, dict(real.actions),
                             {**real.flags, "WAIT_KILLABLE_RECV": False})
    monkeypatch.setattr(features, "_cached", fake)
    with pytest.raises(UnsupportedError, match=r"WAIT_KILLABLE_RECV needs Linux 5\.19"):
        inst.filter_flags(new_listener=True, wait_killable_recv=True)


def test_kernel_rejection_is_a_clear_error():
    bad = [ld_abs(3)]  # misaligned load and no RET: EINVAL
    rc, out = run_in_child(lambda: inst.install(bad))
    assert out["exception"] == "InstallError" and "rejected the BPF program" in out["message"]
    rc, out = run_in_child(lambda: inst.install(b"1234567"))
    assert out["exception"] == "InstallError" and "multiple of 8" in out["message"]


def test_second_listener_is_refused_with_ebusy_message():
    def child():
        inst.install([ret(abi.SECCOMP_RET_ALLOW)], new_listener=True)
        inst.install([ret(abi.SECCOMP_RET_ALLOW)], new_listener=True)
    _, out = run_in_child(child)
    assert out["exception"] == "InstallError" and "already has a listener" in out["message"]


def _start_threads(n, syscall_after: threading.Event):
    """Threads that wait for ``syscall_after`` and then record probe() (and their TID)."""
    results = {}

    def worker(i):
        results[i] = ["tid", calls.gettid()]
        syscall_after.wait()
        results[i] = probe()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    return threads, results


def test_tsync_filters_threads_started_before_install():
    def child():
        go = threading.Event()
        threads, results = _start_threads(3, go)
        time.sleep(0.05)
        inst.install(only(NR_UNUSED, abi.SECCOMP_RET_ERRNO | 55), tsync=True)
        go.set()
        for t in threads:
            t.join()
        return [results[i] for i in range(3)] + [probe()]
    assert run_in_child(child) == (0, ["errno:55"] * 4)


def test_without_tsync_other_threads_stay_unfiltered():
    def child():
        go = threading.Event()
        threads, results = _start_threads(1, go)
        time.sleep(0.05)
        inst.install(only(NR_UNUSED, abi.SECCOMP_RET_ERRNO | 55))
        go.set()
        threads[0].join()
        return [results[0], probe()]
    assert run_in_child(child) == (0, ["errno:38", "errno:55"])


def _thread_with_own_filter(release: threading.Event):
    """A thread that installs a filter the main thread lacks, then waits for ``release``."""
    ready = threading.Event()
    info = {}

    def worker():
        info["tid"] = calls.gettid()
        inst.install([ret(abi.SECCOMP_RET_ALLOW)])
        ready.set()
        release.wait()

    t = threading.Thread(target=worker)
    t.start()
    ready.wait()
    return t, info["tid"]


@pytest.mark.parametrize("esrch", [False, True])
def test_tsync_reports_non_ancestor_thread(esrch):
    def child():
        release = threading.Event()
        t, tid = _thread_with_own_filter(release)
        try:
            inst.install(only(NR_UNUSED, abi.SECCOMP_RET_ERRNO | 9), tsync=True, tsync_esrch=esrch)
            return "installed"
        except inst.TsyncError as exc:
            return {"tid": exc.tid, "expected": tid, "message": str(exc), "after": probe()}
        finally:
            release.set()
            t.join()
    rc, out = run_in_child(child)
    assert rc == 0 and out != "installed"
    assert out["tid"] == (None if esrch else out["expected"])
    assert out["after"] == "errno:38"  # nothing was installed
    if not esrch:
        assert f"thread {out['expected']}" in out["message"] and "filter mode, 1 filters" in out["message"]


def test_tsync_retry_waits_for_the_thread_to_exit():
    def child():
        release = threading.Event()
        t, _ = _thread_with_own_filter(release)
        threading.Timer(0.1, release.set).start()
        inst.install_tsync_retry(only(NR_UNUSED, abi.SECCOMP_RET_ERRNO | 9), attempts=40, delay=0.01)
        t.join()
        return probe()
    assert run_in_child(child) == (0, "errno:9")


def test_tsync_retry_takes_install_options():
    """install_tsync_retry is install(tsync=True): no_new_privs is not a filter flag."""
    rc, out = run_in_child(lambda: [inst.install_tsync_retry(only(NR_UNUSED, abi.SECCOMP_RET_ERRNO | 9),
                                                             no_new_privs=True), probe()])
    assert (rc, out) == (0, [None, "errno:9"])


def test_tsync_retry_gives_up_with_explanation():
    def child():
        release = threading.Event()
        t, tid = _thread_with_own_filter(release)
        try:
            inst.install_tsync_retry(only(NR_UNUSED, abi.SECCOMP_RET_ERRNO | 9), attempts=3, delay=0.005)
        except inst.TsyncError as exc:
            return [exc.tid == tid, str(exc)]
        finally:
            release.set()
            t.join()
    rc, (same, message) = run_in_child(child)
    assert same and "gave up after 3 attempts" in message


# --- stacked filters follow the kernel's precedence ---------------------------
ACTIONS = {
    "kill_process": abi.SECCOMP_RET_KILL_PROCESS, "kill_thread": abi.SECCOMP_RET_KILL_THREAD,
    "trap": abi.SECCOMP_RET_TRAP, "errno5": abi.SECCOMP_RET_ERRNO | 5, "errno7": abi.SECCOMP_RET_ERRNO | 7,
    "log": abi.SECCOMP_RET_LOG, "allow": abi.SECCOMP_RET_ALLOW,
}


def expected_outcome(stack: list[str]) -> str:
    """The kernel rule: lowest precedence value wins; ties go to the newest filter."""
    best = None
    for name in stack:  # oldest first, so '<=' lets a later equal one win
        if best is None or abi.action_precedence(ACTIONS[name]) <= abi.action_precedence(ACTIONS[best]):
            best = name
    return {"kill_process": "SIGSYS", "kill_thread": "SIGSYS", "trap": "trap", "errno5": "errno:5",
            "errno7": "errno:7", "log": "errno:38", "allow": "errno:38"}[best]


def run_stack(stack: list[str]) -> str:
    def child():
        trapped = []
        signal.signal(signal.SIGSYS, lambda *a: trapped.append(1))
        for name in stack:
            inst.install(only(NR_UNUSED, ACTIONS[name]))
        result = probe()
        return "trap" if trapped else result
    rc, out = run_in_child(child)
    return "SIGSYS" if rc == -signal.SIGSYS else out


def test_stacked_ties_newest_wins_and_kill_beats_errno():
    assert run_stack(["errno5", "errno7"]) == "errno:7"
    assert run_stack(["errno7", "errno5"]) == "errno:5"
    assert run_stack(["kill_process", "errno5"]) == "SIGSYS"
    assert run_stack(["errno5", "log", "allow"]) == "errno:5"
    assert run_stack(["trap", "errno5"]) == "trap"


@settings(max_examples=30, deadline=None)
@given(st.lists(st.sampled_from(sorted(ACTIONS)), min_size=1, max_size=4))
def test_stacked_filters_follow_precedence(stack):
    assert run_stack(stack) == expected_outcome(stack)
