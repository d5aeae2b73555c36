"""sysgate attach: ptrace-inject a filter into live multi-threaded processes and check they carry on.

The target (tests/attach_target.c, compiled at test time) has a thread-group
leader that is blocked in read(), in nanosleep() or spinning in register-checking
code when sysgate injects into it, three workers looping on system calls and a
reader thread blocked in read(). After the attach every thread must find mkdir
denied with EPERM and getppid answered (4242) through the listener, and the
whole process must exit 0: its loops, its restarted system calls, its
registers and the stack below its stack pointer all survived the injection.
"""
from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from sysgate.attach import target as attach_mod
from sysgate.attach import inject
from sysgate.arch import syscalls
from sysgate.attach.target import attach
from sysgate.bpf.insn import BPF_JEQ, BPF_JMP, BPF_K, jump, ld_abs, pack, ret
from sysgate.errors import SysgateError
from sysgate.kernel import abi, notify

pytestmark = pytest.mark.skipif(abi.native_arch() != "x86_64" or os.geteuid() != 0,
                                reason="attach is implemented for x86_64; the tests ptrace as root")

NR_MKDIR, NR_GETPPID = syscalls.number("x86_64", "mkdir"), syscalls.number("x86_64", "getppid")
TOKEN = "t0k3n"


def policy(notify_getppid: bool = True) -> bytes:
    """mkdir -> ERRNO(EPERM); getppid -> USER_NOTIF (or allowed); anything else allowed."""
    return pack([
        ld_abs(abi.OFFSET_ARCH),
        jump(BPF_JMP | BPF_JEQ | BPF_K, abi.AUDIT_ARCH["x86_64"], 1, 0),
        ret(abi.SECCOMP_RET_KILL_PROCESS),
        ld_abs(abi.OFFSET_NR),
        jump(BPF_JMP | BPF_JEQ | BPF_K, NR_MKDIR, 0, 1),
        ret(abi.SECCOMP_RET_ERRNO | 1),
        jump(BPF_JMP | BPF_JEQ | BPF_K, NR_GETPPID, 0, 1),
        ret(abi.SECCOMP_RET_USER_NOTIF if notify_getppid else abi.SECCOMP_RET_ALLOW),
        ret(abi.SECCOMP_RET_ALLOW),
    ])


@pytest.fixture(scope="module")
def target_binary(tmp_path_factory) -> str:
    if not shutil.which("gcc"):
        pytest.skip("gcc is needed to build the target program")
    out = tmp_path_factory.mktemp("attach") / "target"
    source = Path(__file__).with_name("attach_target.c")
    subprocess.run(["gcc", "-O2", "-pthread", "-o", str(out), str(source)], check=True)
    return str(out)


def proc_status(pid: int, tid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/task/{tid}/status") as f:
        return {k: v.strip() for k, _, v in (line.partition(":") for line in f)}


def threads(pid: int) -> list[int]:
    return sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))


def syscall_of(pid: int, tid: int) -> str:
    with open(f"/proc/{pid}/task/{tid}/syscall") as f:
        return f.read().strip()


def wait_until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for the target"
        time.sleep(0.005)


def python_process(code: str, *args: str) -> subprocess.Popen:
    """A Python child running ``code``, once it has printed "ready" and its main thread blocks in read()."""
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        wait_until(lambda: syscall_of(proc.pid, proc.pid).startswith("0 "))
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc


class Target:
    """The C target in one of its modes, started and waiting for sysgate."""

    def __init__(self, binary: str, mode: str, workdir: Path):
        self.mode, self.dir = mode, workdir
        self.proc = subprocess.Popen([binary, mode, str(workdir), TOKEN], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE)
        self.pid = self.proc.pid
        assert self.proc.stdout.readline() == b"ready\n"
        blocked = {"read": "read", "heap": "read", "sleep": "clock_nanosleep", "epoll": "epoll_wait"}.get(mode)
        if blocked:
            wait_until(lambda: syscall_of(self.pid, self.pid).startswith(f"{syscalls.number('x86_64', blocked)} "))
        if mode == "exit":
            wait_until(lambda: proc_status(self.pid, self.pid)["State"].startswith("Z"))
        if mode not in ("read", "heap", "epoll"):  # the reader thread is blocked in read(0) too
            wait_until(lambda: any(syscall_of(self.pid, t).startswith("0 ") for t in threads(self.pid)[1:]))
        else:
            time.sleep(0.05)

    @property
    def thread_count(self) -> int:
        return 4 if self.mode in ("read", "heap", "epoll", "exit") else 5

    def go(self) -> None:
        self.proc.stdin.write(f"go {TOKEN}\n".encode())
        self.proc.stdin.flush()

    def finish(self) -> tuple[int, str]:
        out, _ = self.proc.communicate(timeout=10)
        return self.proc.returncode, out.decode()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def start(target_binary, tmp_path):
    started = []

    def _start(mode: str) -> Target:
        t = Target(target_binary, mode, tmp_path)
        started.append(t)
        return t

    yield _start
    for t in started:
        t.kill()


def answer_getppid(listener: int, pid: int, count: int) -> None:
    """Act as the supervisor: answer ``count`` getppid notifications with 4242."""
    for _ in range(count):
        ready, _, _ = select.select([listener], [], [], 5)
        assert ready, "no notification arrived"
        n = notify.recv(listener)
        assert n.data.nr == NR_GETPPID and n.pid in threads(pid)
        notify.send(listener, n.id, val=4242)


def listeners_in(pid: int) -> list[str]:
    """The target's fds that are seccomp listeners."""
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if "seccomp" in os.readlink(f"/proc/{pid}/fd/{fd}"):
                found.append(fd)
        except OSError:
            continue
    return found


def assert_all_filtered(pid: int) -> None:
    for tid in threads(pid):
        status = proc_status(pid, tid)
        if status["State"].startswith("Z"):
            continue  # an exited thread-group leader
        assert status["Seccomp"] == "2", f"thread {tid} is not filtered"
        assert status["NoNewPrivs"] == "1"


def check_run(t: Target, listener: int) -> str:
    time.sleep(0.2)  # the workers keep looping under the filter meanwhile
    t.go()
    answer_getppid(listener, t.pid, t.thread_count)
    code, out = t.finish()
    assert code == 0 and "FAIL" not in out, out
    assert out.count("checked ") == t.thread_count, out
    assert not any(t.dir.iterdir()), "mkdir was not denied"
    return out


def maps_of(pid: int) -> list[str]:
    with open(f"/proc/{pid}/maps") as f:
        return f.read().splitlines()


@pytest.mark.parametrize("mode", ["read", "heap", "sleep", "spin", "epoll", "exit"])
def test_attach_filters_every_thread_and_target_carries_on(start, mode):
    t = start(mode)
    blocked = mode in ("read", "heap")
    if blocked:  # registers and the stack below sp (4 KiB of it: on the heap, that much is the thread's own)
        before = syscall_of(t.pid, t.pid)
        sp = int(before.split()[-2], 16)
        private = inject.private_stack_below(f"/proc/{t.pid}/task/{t.pid}", sp) < sp
        assert private == (mode == "read")  # "heap" makes sysgate use an injected mmap() instead
        with open(f"/proc/{t.pid}/mem", "rb") as mem:
            mem.seek(sp - 4096)
            stack_before = mem.read(4096)
        mappings = maps_of(t.pid)
    with attach(t.pid, policy()) as target:
        assert target.pid == t.pid and target.listener_fd is not None and not target.warnings
        assert_all_filtered(t.pid)
        if blocked:  # the leader is back in the same read(), with the same registers, stack and mappings
            wait_until(lambda: syscall_of(t.pid, t.pid) != "running")
            assert syscall_of(t.pid, t.pid) == before
            with open(f"/proc/{t.pid}/mem", "rb") as mem:
                mem.seek(sp - 4096)
                assert mem.read(4096) == stack_before
            assert maps_of(t.pid) == mappings
        assert not listeners_in(t.pid)  # sysgate closed the target's copy
        out = check_run(t, target.listener_fd)
    if mode != "exit":  # a process whose leader exited reports from its threads only
        assert "usr1 0" in out and "done 0" in out


def test_signal_arriving_during_injection_is_delivered_once(start, monkeypatch):
    t = start("read")
    tgkill = ctypes.CDLL(None, use_errno=True).tgkill
    original_call = inject.Injection.call
    sent = []

    def call_after_a_signal(self, name, *args, **options):
        if not sent:  # a real signal reaches the stopped thread before its first injected call
            assert tgkill(self.pid, self.tid, signal.SIGUSR1) == 0
            sent.append(name)
        return original_call(self, name, *args, **options)

    monkeypatch.setattr(inject.Injection, "call", call_after_a_signal)
    with attach(t.pid, policy()) as target:
        assert sent == ["prctl"]
        assert_all_filtered(t.pid)
        out = check_run(t, target.listener_fd)
    assert "usr1 1" in out  # held during the injection, delivered on release, read() restarted


MKDIRER = ("import os, sys\nprint('ready', flush=True)\nfor line in sys.stdin:\n"
           "    try:\n        os.mkdir(line.strip()); print('made', flush=True)\n"
           "    except OSError as e:\n        print('errno', e.errno, flush=True)\n")


def test_attach_without_listener_to_a_python_process(tmp_path):
    proc = python_process(MKDIRER)
    try:
        with attach(proc.pid, policy(notify_getppid=False), listener=False) as target:
            assert target.listener_fd is None
            assert_all_filtered(proc.pid)
        proc.stdin.write(f"{tmp_path / 'new'}\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == "errno 1\n"
        proc.stdin.close()
        assert proc.wait(timeout=5) == 0
        assert not (tmp_path / "new").exists()
    finally:
        proc.kill()
        proc.wait()


# --- refusals -------------------------------------------------------------------
def free_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_refuses_missing_process():
    with pytest.raises(SysgateError, match=r"no process with PID \d+"):
        attach(free_pid(), policy())


def test_refuses_itself():
    with pytest.raises(SysgateError, match="itself"):
        attach(os.getpid(), policy())


def test_refuses_already_traced_process(target_binary, tmp_path):
    if not shutil.which("strace"):
        pytest.skip("strace is needed to trace the target")
    proc = subprocess.Popen(["strace", "-o", "/dev/null", "sleep", "30"])
    try:
        tracee = None

        def traced():  # strace's child has become `sleep`, is traced and asleep
            nonlocal tracee
            for pid in (int(p) for p in os.listdir("/proc") if p.isdigit() and _ppid(int(p)) == proc.pid):
                try:
                    status = proc_status(pid, pid)
                    asleep = syscall_of(pid, pid).startswith("230 ")
                except OSError:
                    continue
                if status["Name"] == "sleep" and status["TracerPid"] == str(proc.pid) and asleep:
                    tracee = pid
                    return True
            return False

        wait_until(traced)
        with pytest.raises(SysgateError, match=rf"already traced by process {proc.pid} \(strace\)"):
            attach(tracee, policy())
        assert proc_status(tracee, tracee)["Seccomp"] == "0"
    finally:
        if tracee:  # strace's child would outlive a killed strace
            os.kill(tracee, signal.SIGKILL)
        proc.kill()
        proc.wait()


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError):
        return -1


def test_refuses_zombie_and_stopped_processes():
    zombie = subprocess.Popen(["true"])
    wait_until(lambda: open(f"/proc/{zombie.pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z")
    with pytest.raises(SysgateError, match="zombie"):
        attach(zombie.pid, policy())
    zombie.wait()
    stopped = subprocess.Popen(["sleep", "30"])
    try:
        os.kill(stopped.pid, signal.SIGSTOP)
        wait_until(lambda: proc_status(stopped.pid, stopped.pid)["State"].startswith("T"))
        with pytest.raises(SysgateError, match=r"stopped; resume it first \(kill -CONT"):
            attach(stopped.pid, policy())
    finally:
        stopped.kill()
        stopped.wait()


def test_refuses_kernel_thread():
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    flags = int(f.read().rsplit(")", 1)[1].split()[6])
            except OSError:
                continue
            if flags & attach_mod.PF_KTHREAD:
                with pytest.raises(SysgateError, match="kernel thread"):
                    attach(int(entry), policy())
                return
    pytest.skip("no kernel thread visible in this PID namespace")


def test_refuses_without_permission_as_an_unprivileged_user():
    readable = tempfile.TemporaryDirectory()  # pytest's tmp_path is private to root
    os.chmod(readable.name, 0o755)
    prog = Path(readable.name) / "prog.bpf"
    prog.write_bytes(policy(notify_getppid=False))
    prog.chmod(0o644)
    victim = subprocess.Popen(["sleep", "30"])
    try:
        script = ("import sys\nfrom sysgate.cli import main\n"
                  f"sys.exit(main(['attach', '{victim.pid}', '--bpf', '{prog}']))")
        src = str(Path(attach_mod.__file__).parents[1])  # the venv's interpreter may be under /root
        child = subprocess.run(["/usr/bin/python3", "-c", script], capture_output=True,
                               user=65534, group=65534, extra_groups=[], env={"PYTHONPATH": src}, timeout=30)
        if b"No module named" in child.stderr:
            pytest.skip("the sysgate sources are not readable by an unprivileged user")
        assert child.returncode == 2
        message = child.stderr.decode()
        assert "Traceback" not in message and message.count("\n") == 1
        assert f"not permitted to inspect process {victim.pid}" in message
        assert "uid 0" in message and "run as root" in message
    finally:
        victim.kill()
        victim.wait()
        readable.cleanup()


def test_cli_attach_reports_errors_on_one_line(tmp_path):
    prog = tmp_path / "prog.bpf"
    prog.write_bytes(policy())
    pid = free_pid()
    child = subprocess.run([sys.executable, "-m", "sysgate", "attach", str(pid), "--bpf", str(prog)],
                           capture_output=True, text=True, timeout=30)
    assert child.returncode == 2
    assert child.stderr == "sysgate: error: the policy has notify rules: add --supervise to answer them, " \
                           "or --no-listener to let them fail with ENOSYS\n"
    child = subprocess.run([sys.executable, "-m", "sysgate", "attach", str(pid), "--bpf", str(prog),
                            "--no-listener"], capture_output=True, text=True, timeout=30)
    assert child.returncode == 2 and child.stderr == f"sysgate: error: no process with PID {pid}\n"


def test_cli_attach_without_listener(tmp_path):
    prog = tmp_path / "prog.bpf"
    prog.write_bytes(policy(notify_getppid=False))
    victim = subprocess.Popen(["sleep", "30"])
    try:
        wait_until(lambda: syscall_of(victim.pid, victim.pid).startswith("230 "))
        child = subprocess.run([sys.executable, "-m", "sysgate", "attach", str(victim.pid), "--bpf", str(prog)],
                               capture_output=True, text=True, timeout=30)
        assert child.returncode == 0, child.stderr
        assert f"attached to process {victim.pid}: 9 instructions on 1 thread(s)" in child.stderr
        assert proc_status(victim.pid, victim.pid)["Seccomp"] == "2"
        assert victim.poll() is None
    finally:
        victim.kill()
        victim.wait()


# --- targets whose threads do not share one filter chain ------------------------
DIVERGE = """
import sys, threading
from sysgate.kernel import calls
from sysgate.bpf.insn import pack, ret
from sysgate.kernel import abi
def own_filter(errno_value):  # an allow-all filter that differs per thread (unused ERRNO data)
    calls.set_no_new_privs()
    calls.seccomp_set_filter(pack([ret(abi.SECCOMP_RET_ALLOW), ret(abi.SECCOMP_RET_ERRNO | errno_value)]))
done = threading.Event()
worker = threading.Thread(target=lambda: (own_filter(7), done.set(), threading.Event().wait()), daemon=True)
worker.start()
done.wait()
if sys.argv[1] == "both":
    own_filter(8)
print("ready", flush=True)
print("echo", sys.stdin.readline().strip(), flush=True)
"""


@pytest.mark.parametrize("who", ["worker", "both"])
def test_refuses_threads_with_diverged_filters_and_leaves_target_running(who):
    proc = python_process(DIVERGE, who)
    try:
        before = [proc_status(proc.pid, t)["Seccomp_filters"] for t in threads(proc.pid)]
        # one filter only on a worker: refused before touching the process; one each: the kernel refuses TSYNC
        expected = "have different seccomp filters" if who == "worker" else "TSYNC failed"
        with pytest.raises(SysgateError, match=expected):
            attach(proc.pid, policy())
        assert [proc_status(proc.pid, t)["Seccomp_filters"] for t in threads(proc.pid)] == before
        proc.stdin.write("still alive\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == "echo still alive\n"
        assert proc.wait(timeout=5) == 0
    finally:
        proc.kill()
        proc.wait()


def test_cli_attach_supervise_answers_until_the_target_exits(tmp_path):
    prog = tmp_path / "prog.bpf"
    prog.write_bytes(policy())
    code = ("import os, sys\nprint('ready', flush=True)\nfor line in sys.stdin:\n"
            "    print(os.getppid(), flush=True)\n")
    proc = python_process(code)
    try:
        sysgate = subprocess.Popen([sys.executable, "-m", "sysgate", "attach", str(proc.pid), "--bpf", str(prog),
                                    "--supervise"], stderr=subprocess.PIPE, text=True)
        wait_until(lambda: proc_status(proc.pid, proc.pid)["Seccomp"] == "2", timeout=10)
        proc.stdin.write("ppid?\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == f"{os.getpid()}\n"  # notified, reported, allowed
        proc.stdin.close()
        assert proc.wait(timeout=5) == 0
        _, err = sysgate.communicate(timeout=10)
        assert sysgate.returncode == 0, err
        assert f"attached to process {proc.pid}: 9 instructions on 1 thread(s), supervising" in err
        assert f"sysgate: notify: [pid {proc.pid}] getppid()" in err
    finally:
        proc.kill()
        proc.wait()


def test_notified_close_of_the_listener_is_let_through():
    """A notify-everything policy notifies sysgate's own close() too: attach lets it through
    and keeps other threads' notifications for the supervisor."""
    code = ("import os, sys\nprint('ready', flush=True)\nline = sys.stdin.readline()\n"
            "print(len(line), flush=True)\n")
    proc = python_process(code)
    try:
        with attach(proc.pid, pack([ret(abi.SECCOMP_RET_USER_NOTIF)])) as target:
            assert not target.warnings and not listeners_in(proc.pid)
            assert_all_filtered(proc.pid)
            for n in target.pending:  # a single-threaded target has nothing else to notify
                pytest.fail(f"unexpected notification {n}")
            proc.stdin.write("12345\n")
            proc.stdin.flush()
            answered = 0
            while proc.poll() is None:  # answer everything it does until it has exited
                ready, _, _ = select.select([target.listener_fd], [], [], 0.05)
                if ready:
                    try:
                        notify.send_continue(target.listener_fd, notify.recv(target.listener_fd).id)
                        answered += 1
                    except OSError:
                        pass
            assert answered > 0
        assert proc.stdout.read() == "6\n" and proc.returncode == 0
    finally:
        proc.kill()
        proc.wait()


# --- calls sysgate makes under a filter that would kill the target ----------------
def kill_on(name: str, then: int = abi.SECCOMP_RET_ALLOW) -> list:
    """arch check, then KILL_PROCESS for ``name``, ``then`` for everything else."""
    return [ld_abs(abi.OFFSET_ARCH), jump(BPF_JMP | BPF_JEQ | BPF_K, abi.AUDIT_ARCH["x86_64"], 1, 0),
            ret(abi.SECCOMP_RET_KILL_PROCESS), ld_abs(abi.OFFSET_NR),
            jump(BPF_JMP | BPF_JEQ | BPF_K, syscalls.number("x86_64", name), 0, 1),
            ret(abi.SECCOMP_RET_KILL_PROCESS), ret(then)]


ECHO = """
import sys
from sysgate.bpf.insn import pack
from sysgate.kernel import calls
if len(sys.argv) > 1:  # run under a filter of our own first
    calls.set_no_new_privs()
    calls.seccomp_set_filter(bytes.fromhex(sys.argv[1]))
print("ready", flush=True)
for line in sys.stdin:
    print("echo", line.strip(), flush=True)
"""


def echo_process(*args: str) -> subprocess.Popen:
    return python_process(ECHO, *args)


def assert_echoes(proc: subprocess.Popen) -> None:
    proc.stdin.write("still alive\n")
    proc.stdin.flush()
    assert proc.stdout.readline() == "echo still alive\n"


def test_policy_that_kills_close_keeps_the_target_alive():
    proc = echo_process()
    try:
        # getppid notifies (so there is a listener); close() would kill: sysgate must not call it
        program = kill_on("close")[:-1] + [jump(BPF_JMP | BPF_JEQ | BPF_K, NR_GETPPID, 0, 1),
                                           ret(abi.SECCOMP_RET_USER_NOTIF), ret(abi.SECCOMP_RET_ALLOW)]
        with attach(proc.pid, pack(program)) as target:
            assert len(target.warnings) == 1 and "answers close() with KILL_PROCESS" in target.warnings[0]
            assert len(listeners_in(proc.pid)) == 1  # the copy sysgate could not close
            assert_echoes(proc)
    finally:
        proc.kill()
        proc.wait()


def test_existing_filter_that_kills_seccomp_is_not_provoked():
    proc = echo_process(pack(kill_on("seccomp")).hex())
    try:
        with pytest.raises(SysgateError, match=r"did not call seccomp\(\) in it: its seccomp filter answers "
                                               r"seccomp\(\) with KILL_PROCESS"):
            attach(proc.pid, policy())
        assert proc_status(proc.pid, proc.pid)["Seccomp_filters"] == "1"
        assert_echoes(proc)
    finally:
        proc.kill()
        proc.wait()


def test_cli_attach_with_a_policy_file(tmp_path):
    policy_file = tmp_path / "no-mkdir.policy"
    policy_file.write_text("default: allow\nmkdir, mkdirat: errno(EPERM)\n")
    proc = python_process(MKDIRER)
    try:
        child = subprocess.run([sys.executable, "-m", "sysgate", "attach", str(proc.pid), "--policy", str(policy_file)],
                               capture_output=True, text=True, timeout=30)
        assert child.returncode == 0, child.stderr
        assert child.stderr.startswith(f"attached to process {proc.pid}: ")
        proc.stdin.write(f"{tmp_path / 'new'}\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == "errno 1\n"
        assert not (tmp_path / "new").exists()
    finally:
        proc.kill()
        proc.wait()


# --- notify(NAME) rules are routed to their handlers, as by sysgate run ----------------------------
OPENER = ("import sys\nprint('ready', flush=True)\nfor line in sys.stdin:\n"
          "    try:\n        print(open(line.strip()).read().strip(), flush=True)\n"
          "    except OSError as e:\n        print('errno', e.errno, flush=True)\n")


def fs_files(tmp_path) -> tuple[Path, str]:
    """(policy routing openat to fs, config allowing reads but the secret)."""
    (tmp_path / "public").write_text("public text\n")
    (tmp_path / "secret").write_text("secret text\n")
    (tmp_path / "fs.policy").write_text("default: allow\nopenat: notify(fs)\n")
    return tmp_path / "fs.policy", json.dumps({"fs": {"rules": [f"deny {tmp_path}/secret", "allow read /**"]}})


def opener_answers(proc, paths) -> list[str]:
    for path in paths:
        proc.stdin.write(f"{path}\n")
        proc.stdin.flush()
    return [proc.stdout.readline().strip() for _ in paths]


@pytest.mark.parametrize("source, configured", [("policy", True), ("filter", True), ("policy", False)])
def test_cli_attach_supervise_routes_named_handlers(tmp_path, source, configured):
    from sysgate.process.filter import Filter
    from sysgate.policy_loader import load_policy

    policy_file, config = fs_files(tmp_path)
    if source == "filter":
        Filter.from_policy(load_policy(str(policy_file))).save(tmp_path / "f.json")
    where = ["--policy", str(policy_file)] if source == "policy" else ["--filter", str(tmp_path / "f.json")]
    proc = python_process(OPENER)
    try:
        sysgate = subprocess.Popen([sys.executable, "-m", "sysgate", "attach", str(proc.pid), *where, "--supervise",
                                    *(["--handlers", config] if configured else [])],
                                   stderr=subprocess.PIPE, text=True)
        wait_until(lambda: proc_status(proc.pid, proc.pid)["Seccomp"] == "2", timeout=10)
        answers = opener_answers(proc, [tmp_path / "public", tmp_path / "secret"])
        if configured:
            assert answers == ["public text", f"errno {errno.EACCES}"]
        else:   # fs without rules denies everything: fail closed, never reported-and-allowed
            assert answers == [f"errno {errno.EACCES}"] * 2
        proc.stdin.close()
        assert proc.wait(timeout=5) == 0
        _, err = sysgate.communicate(timeout=10)
        assert sysgate.returncode == 0, err
        assert "sysgate: notify:" not in err, err
        assert ("has no section in --handlers: it denies every call" in err) is not configured
    finally:
        proc.kill()
        proc.wait()


def test_cli_attach_supervise_with_worker_processes(tmp_path):
    """--processes 2: two workers answer the fs rules as one process does, and end with sysgate
    when the target exits."""
    policy_file, config = fs_files(tmp_path)
    proc = python_process(OPENER)
    try:
        sysgate = subprocess.Popen([sys.executable, "-m", "sysgate", "attach", str(proc.pid), "--policy",
                                    str(policy_file), "--supervise", "--handlers", config, "--processes", "2"],
                                   stderr=subprocess.PIPE, text=True)
        wait_until(lambda: proc_status(proc.pid, proc.pid)["Seccomp"] == "2", timeout=10)
        paths = [tmp_path / "public", tmp_path / "secret", tmp_path / "missing"] * 20
        answers = opener_answers(proc, paths)
        assert answers == ["public text", f"errno {errno.EACCES}", f"errno {errno.ENOENT}"] * 20
        with open(f"/proc/{sysgate.pid}/task/{sysgate.pid}/children") as f:
            workers = [int(pid) for pid in f.read().split()]
        assert len(workers) == 2
        proc.stdin.close()
        assert proc.wait(timeout=5) == 0
        _, err = sysgate.communicate(timeout=30)
        assert sysgate.returncode == 0, err
        assert "worker process" not in err and "Traceback" not in err, err
        assert not [pid for pid in workers if os.path.exists(f"/proc/{pid}")]     # reaped by sysgate
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("options, message", [
    (["--supervise", "--handlers", '{"fs": {"rulez": []}}'], r"handler 'fs': unknown option\(s\) rulez"),
    (["--no-listener", "--handlers", "{}"], "--handlers needs --supervise"),
    (["--supervise", "--processes", "0"], "--processes wants a number of worker processes from 1 to 64, not '0'"),
    (["--supervise", "--processes", "x"], "--processes wants a number of worker processes from 1 to 64, not 'x'"),
    (["--no-listener", "--processes", "2"], "--processes needs --supervise"),
    (["--supervise", "--processes", "2", "--handlers", '{"audit": {}, "fs": {"rules": []}}'],
     "--processes 2 cannot serve the audit handler"),
])
def test_cli_attach_bad_handler_config_leaves_the_process_alone(tmp_path, options, message):
    policy_file, _ = fs_files(tmp_path)
    victim = subprocess.Popen(["sleep", "30"])
    try:
        wait_until(lambda: syscall_of(victim.pid, victim.pid).startswith("230 "))
        child = subprocess.run([sys.executable, "-m", "sysgate", "attach", str(victim.pid), "--policy",
                                str(policy_file), *options], capture_output=True, text=True, timeout=30)
        assert child.returncode == 2 and child.stderr.count("\n") == 1, child.stderr
        assert child.stderr.startswith("sysgate: error: ") and re.search(message, child.stderr), child.stderr
        assert proc_status(victim.pid, victim.pid)["Seccomp"] == "0"
    finally:
        victim.kill()
        victim.wait()


# --- targets that already carry filters (every container process) -----------------
OLD_FILTER_SYSCALLS = ("getsid", "getpgid", "getpriority")   # old filter k answers the k-th with errno 20+k


def old_filter(k: int) -> bytes:
    nr = syscalls.number("x86_64", OLD_FILTER_SYSCALLS[k])
    return pack([ld_abs(abi.OFFSET_NR), jump(BPF_JMP | BPF_JEQ | BPF_K, nr, 0, 1),
                 ret(abi.SECCOMP_RET_ERRNO | (20 + k)), ret(abi.SECCOMP_RET_ALLOW)])


FILTERED = """
import ctypes, os, sys
from sysgate.kernel import calls
from sysgate.arch import syscalls
libc = ctypes.CDLL(None, use_errno=True)
calls.set_no_new_privs()
for program in sys.argv[1:]:
    calls.seccomp_set_filter(bytes.fromhex(program))
print("ready", flush=True)
for line in sys.stdin:      # a syscall name (called with zero arguments): prints its result or errno
    name = line.strip()
    if name == "mkdir":
        result = libc.mkdir(b"/nonexistent-dir/x", 0o755)
    else:
        result = libc.syscall(syscalls.number("x86_64", name), 0, 0)
    print(f"errno {ctypes.get_errno()}" if result == -1 else f"= {result}", flush=True)
"""


def ask(proc: subprocess.Popen, name: str) -> str:
    proc.stdin.write(name + "\n")
    proc.stdin.flush()
    return proc.stdout.readline().strip()


def test_ptrace_seccomp_filters_lists_the_newest_first():
    """The kernel's PTRACE_SECCOMP_GET_FILTER index 0 is the *oldest* filter (whatever ptrace(2)
    says); seccomp_filters() turns that into newest first, as attach needs."""
    from sysgate.attach import ptrace
    programs = [old_filter(k) for k in range(3)] + [pack([ret(abi.SECCOMP_RET_ALLOW)])]
    proc = python_process(FILTERED, *(p.hex() for p in programs))
    try:
        ptrace.seize(proc.pid)
        ptrace.interrupt(proc.pid)
        assert ptrace.wait(proc.pid).is_interrupt
        assert ptrace.ptrace(ptrace.PTRACE_SECCOMP_GET_FILTER, proc.pid, 0, 0) * 8 == len(programs[0])
        assert ptrace.seccomp_filters(proc.pid) == programs[::-1]
        ptrace.detach(proc.pid)
        assert ask(proc, "getsid") == "errno 20"
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("count", [1, 3])
def test_attach_to_a_process_that_already_has_filters(count):
    """The new filter is verified as the newest, is in force, and the old ones still apply."""
    proc = python_process(FILTERED, *(old_filter(k).hex() for k in range(count)))
    try:
        with attach(proc.pid, policy()) as target:
            assert target.warnings == []
            assert proc_status(proc.pid, proc.pid)["Seccomp_filters"] == str(count + 1)
            assert ask(proc, "mkdir") == "errno 1"                      # the new filter
            proc.stdin.write("getppid\n")
            proc.stdin.flush()
            answer_getppid(target.listener_fd, proc.pid, 1)
            assert proc.stdout.readline().strip() == "= 4242"
            for k in range(count):                                      # the old ones
                assert ask(proc, OLD_FILTER_SYSCALLS[k]) == f"errno {20 + k}"
            assert ask(proc, "getuid") == "= 0"
    finally:
        proc.kill()
        proc.wait()


def test_cli_attach_to_a_filtered_process(tmp_path):
    """`sysgate attach` on a process that already has filters (every container process) exits 0."""
    prog = tmp_path / "prog.bpf"
    prog.write_bytes(policy(notify_getppid=False))
    proc = python_process(FILTERED, *(old_filter(k).hex() for k in range(2)))
    try:
        child = subprocess.run([sys.executable, "-m", "sysgate", "attach", str(proc.pid), "--bpf", str(prog)],
                               capture_output=True, text=True, timeout=30)
        assert child.returncode == 0 and "kill it" not in child.stderr, child.stderr
        assert proc_status(proc.pid, proc.pid)["Seccomp_filters"] == "3"
        assert ask(proc, "mkdir") == "errno 1" and ask(proc, "getpgid") == "errno 21"
    finally:
        proc.kill()
        proc.wait()
