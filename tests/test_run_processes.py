"""``sysgate run --processes N``: the command's notifications answered by N worker processes.

Real runs of real commands: a Python program opening files from 8 threads under the ``fs``
handler (allowed, denied, missing: the handler emulates each answer) gets the same answers
with 2 workers as with 1, and the workers exist while it runs and are gone after; usage errors
and what cannot be served from several processes stop sysgate in one line before the command
starts; SIGTERM reaches the command; ``--exit-with-main`` ends the workers at once even though
sysgate has SIGTERM blocked (it reads it from a signalfd) when it forks them. Every sysgate is
started in a session of its own, so that what it leaves behind is found in its process group.
No timing is asserted: every wait is bounded.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

POLICY = "default: allow\nopenat: notify(fs)\nuname: notify(identity)\n"

# 8 threads open ./public (allowed), ./secret (denied) and ./missing (allowed, not there); then
# the node name (identity handler), how many children sysgate has (the command and the workers)
# and exit 3
OPENER = r"""
import os, sys, threading
results = {}
def work(t):
    for i in range(int(sys.argv[1])):
        for name in ("public", "secret", "missing"):
            try:
                with open(name) as f:
                    answer = f.read().strip()
            except OSError as e:
                answer = f"errno {e.errno}"
            results[t, i, name] = answer
threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
for key in sorted(results):
    print(*key, results[key])
print("node", os.uname().nodename)
ppid = os.getppid()
with open(f"/proc/{ppid}/task/{ppid}/children") as f:
    print("children", len(f.read().split()))
sys.exit(3)
"""

# prints ready, then keeps opening ./public until SIGTERM, which it answers with status 7
TERMINATED = r"""
import signal, sys, time
def term(*_):
    print("got TERM", flush=True)
    sys.exit(7)
signal.signal(signal.SIGTERM, term)
print("ready", flush=True)
while True:
    open("public").close()
    time.sleep(0.01)
"""

# the daemon of tests/test_run_lifetime.py: waits for the shell to be gone and for ./go, then uname -n
DAEMON = ("(while kill -0 $$ 2>/dev/null; do sleep 0.02; done; touch main-gone; "
          "while [ ! -e go ]; do sleep 0.02; done; "
          "uname -n > out 2> err; echo $? > rc) </dev/null >/dev/null 2>&1 & exit 3")


@pytest.fixture
def work(tmp_path):
    (tmp_path / "public").write_text("public text\n")
    (tmp_path / "secret").write_text("secret text\n")
    (tmp_path / "p.policy").write_text(POLICY)
    (tmp_path / "opener.py").write_text(OPENER)
    (tmp_path / "terminated.py").write_text(TERMINATED)
    (tmp_path / "h.json").write_text(json.dumps({
        "fs": {"rules": [f"deny {tmp_path}/secret", f"allow rw {tmp_path}/**", "allow read /**",
                         "allow write /dev/null"]},
        "identity": {"hostname": "fakehost"}}))
    return tmp_path


def argv(work, *options, cmd, policy=True) -> list[str]:
    where = ["--policy", str(work / "p.policy"), "--handlers", str(work / "h.json")] if policy else []
    return [sys.executable, "-m", "sysgate", "run", "--force", *where, *options, "--", *cmd]


def error_line(err: str) -> str:
    """The one error line of ``err`` (after --force's warning that the policy is not a sandbox)."""
    lines = [line for line in err.splitlines() if "is not a sandbox" not in line]
    assert len(lines) == 1 and lines[0].startswith("sysgate: error: "), err
    return lines[0]


def group(pgid: int) -> dict[int, str]:
    """The processes of process group ``pgid`` (pid -> command line), from /proc."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(stat.rpartition(")")[2].split()[2]) == pgid:
            found[int(entry)] = cmdline
    return found


def sysgates_left(pgid: int) -> dict[int, str]:
    """sysgate processes (the supervisor or its workers) still in the group ``pgid``."""
    return {pid: cmd for pid, cmd in group(pgid).items() if "-m sysgate run" in cmd}


def run(work, *options, cmd, policy=True, timeout=120) -> tuple[int, str, str, int]:
    """(status, stdout, stderr, process group) of a finished ``sysgate run``."""
    proc = subprocess.Popen(argv(work, *options, cmd=cmd, policy=policy), cwd=work, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, out, err, proc.pid


def opener_results(out: str) -> tuple[list[str], dict[str, str]]:
    lines = out.splitlines()
    tail = dict(line.split(" ", 1) for line in lines[-2:])
    return lines[:-2], tail


def test_two_processes_answer_as_one_does(work):
    """Thousands of fs answers (a file's text, EACCES, ENOENT) and an identity answer, the same with
    --processes 2 as with 1; the command's status is kept; two workers served and none is left."""
    calls = "250"
    code1, out1, err1, _ = run(work, "--processes", "1", cmd=[sys.executable, "opener.py", calls])
    code2, out2, err2, pgid = run(work, "--processes", "2", cmd=[sys.executable, "opener.py", calls])
    assert (code1, code2) == (3, 3), err1 + err2
    lines1, tail1 = opener_results(out1)
    lines2, tail2 = opener_results(out2)
    assert len(lines1) == 8 * 250 * 3 and lines2 == lines1
    assert {line.split(" ", 3)[3] for line in lines2} == {"public text", "errno 13", "errno 2"}
    assert tail1 == {"node": "fakehost", "children": "1"}       # the command alone
    assert tail2 == {"node": "fakehost", "children": "3"}       # the command and two workers
    assert "worker process" not in err2 and "Traceback" not in err2, err2
    assert not sysgates_left(pgid)


def test_default_is_one_process(work):
    code, out, err, _ = run(work, cmd=[sys.executable, "opener.py", "1"])
    assert code == 3 and opener_results(out)[1]["children"] == "1", err


def test_no_workers_without_notifications(work):
    """A filter that notifies nothing: --processes changes nothing (no worker is forked)."""
    (work / "p.policy").write_text("default: allow\nmkdir: errno(EPERM)\n")
    code, out, err, _ = run(work, "--processes", "4", "--log",
                            cmd=["sh", "-c", "cat /proc/$PPID/task/$PPID/children; exit 4"], policy=False)
    assert code == 4 and len(out.split()) == 1, err     # only the shell
    code, out, err, _ = run(work, "--processes", "4", "--policy", str(work / "p.policy"),
                            cmd=["sh", "-c", "cat /proc/$PPID/task/$PPID/children; mkdir d"], policy=False)
    assert code != 0 and len(out.split()) == 1 and "Operation not permitted" in err, err
    assert not (work / "d").exists()


@pytest.mark.parametrize("value", ["0", "65", "x", "", "2.5", "١"])
def test_bad_numbers_are_usage_errors(work, value):
    code, out, err, _ = run(work, f"--processes={value}", cmd=["echo", "ran"])
    assert code == 125 and out == "", err
    assert error_line(err).startswith("sysgate: error: --processes wants a number of worker processes from 1 to 64")
    assert not (work / "ran").exists()


def _custom(work) -> str:
    (work / "counting.py").write_text(
        "from sysgate.supervisor import Reply\n"
        "calls = []\n"
        "def counting(n):\n"
        "    calls.append(n.syscall)\n"
        "    return Reply.value(len(calls))\n"
        "counting.process_safe = False\n"
        "counting.syscalls = ['getppid']\n")
    (work / "p.policy").write_text("default: allow\ngetppid: notify(counting)\n")
    return str(work / "counting.py")


@pytest.mark.parametrize("case", ["audit mode", "record", "audit handler", "audit section", "custom handler"])
def test_what_keeps_results_in_memory_is_refused_before_the_command_runs(work, case):
    policy, options = True, []
    if case == "audit mode":
        policy, words = False, "--processes 2 needs a policy"
    elif case == "record":
        options, words = ["--record", str(work / "rec.jsonl")], "--processes 2 cannot be used with --record"
    elif case == "audit handler":
        (work / "p.policy").write_text(POLICY + "getppid: notify(audit)\n")
        words = "--processes 2 cannot serve the audit handler"
    elif case == "audit section":
        config = json.loads((work / "h.json").read_text())
        (work / "h.json").write_text(json.dumps({**config, "audit": {"log": None, "wrap": True}}))
        words = "--processes 2 cannot serve the audit handler"
    else:
        policy = False
        options = ["--policy", str(work / "p.policy"), "--handlers", f"{_custom(work)}:counting"]
        words = "--processes 2 cannot serve handler(s) counting: they keep their results in memory"
    code, out, err, _ = run(work, "--processes", "2", *options, cmd=["echo", "ran"], policy=policy)
    assert code == 125 and words in error_line(err), err
    assert out == "" and not (work / "rec.jsonl").exists()
    code, out, err, _ = run(work, "--processes", "1", *options, cmd=["echo", "ran"], policy=policy)
    assert code == 0 and out == "ran\n", err                # what one process serves


def test_sigterm_reaches_the_command_and_everything_ends(work):
    proc = subprocess.Popen(argv(work, "--processes", "2", cmd=[sys.executable, "terminated.py"]), cwd=work,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        assert len(sysgates_left(proc.pid)) == 3             # sysgate and its two workers
        proc.send_signal(signal.SIGTERM)                     # to sysgate alone: it forwards it
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 7 and out == "got TERM\n", err
    assert "worker process" not in err and "Traceback" not in err, err
    assert not group(proc.pid)


def _wait_for(path, seconds: float = 30.0) -> str:
    end = time.monotonic() + seconds
    while not path.exists() or not path.read_text().endswith("\n"):
        assert time.monotonic() < end, f"{path.name} was never written"
        time.sleep(0.02)
    return path.read_text()


def test_workers_serve_a_daemon_after_the_command_exited(work):
    (work / "go").touch()
    code, out, err, pgid = run(work, "--processes", "2", cmd=["sh", "-c", DAEMON])
    assert code == 3, err
    assert (work / "rc").read_text() == "0\n" and (work / "out").read_text() == "fakehost\n", err
    assert not sysgates_left(pgid)


def test_exit_with_main_ends_the_workers_at_once(work):
    """--exit-with-main with a daemon left: sysgate stops its workers with SIGTERM, which it has
    blocked itself; they end by it (before the fix they inherited the block and were killed after
    the grace: "did not end ... failing closed"). The daemon's notified call then gets ENOSYS
    (only uname is notified here: the daemon's own files must still open after that)."""
    (work / "p.policy").write_text("default: allow\nuname: notify(identity)\n")
    code, out, err, pgid = run(work, "--processes", "2", "--exit-with-main", cmd=["sh", "-c", DAEMON])
    assert code == 3, err
    assert "did not end" not in err and "failing closed" not in err, err
    assert not sysgates_left(pgid)
    assert not (work / "rc").exists()           # the daemon still waits for ./go
    (work / "go").touch()
    assert _wait_for(work / "rc") != "0\n"
    assert "Function not implemented" in (work / "err").read_text()
