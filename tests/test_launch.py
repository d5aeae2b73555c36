"""spawn(): real commands launched under real filters; listener hand-over; stored filters."""
from __future__ import annotations

import json
import os
import re
import select
import signal
import stat
import sys

import pytest

from sysgate.process import launch
from sysgate.bpf.insn import ret
from sysgate.errors import SysgateError
from sysgate.process.filter import Filter
from sysgate.process.install import InstallError
from sysgate.kernel import abi, notify
from support.filters import deny_mkdir, nr, only, run_in_child

PY = sys.executable
ALLOW = [ret(abi.SECCOMP_RET_ALLOW)]
NOTIFY_ALL = [ret(abi.SECCOMP_RET_USER_NOTIF)]


def serve_continue(target) -> list[notify.RawNotification]:
    """A minimal supervisor: CONTINUE everything until the target exits; returns what it saw."""
    seen = list(target.pending)
    for n in target.pending:
        notify.send_continue(target.listener, n.id)
    poller = select.poll()
    poller.register(target.listener, select.POLLIN)
    poller.register(target.pidfd, select.POLLIN)
    while True:
        ready = dict(poller.poll())
        if ready.get(target.listener, 0) & select.POLLIN:
            try:
                n = notify.recv(target.listener)
                notify.send_continue(target.listener, n.id)
                seen.append(n)
            except OSError:
                pass
        elif target.pidfd in ready:
            return seen


def run_capture(argv, program, serve=False, **kw):
    """spawn with stdout on a pipe; returns (returncode, stdout text)."""
    r, w = os.pipe()
    try:
        target = launch.spawn(argv, program, stdout=w, **kw)
    finally:
        os.close(w)
    with target:
        if serve:
            serve_continue(target)
        out = b""
        while chunk := os.read(r, 65536):
            out += chunk
        os.close(r)
        return target.wait(), out.decode()


MKDIR_SCRIPT = ("import os, sys\n"
                "try:\n    os.mkdir(sys.argv[1]); print('created')\n"
                "except OSError as e:\n    print(e.errno)\n"
                "open(sys.argv[1] + '.file', 'w').close(); print('file ok')\n")


def test_policy_errno_reaches_the_target(tmp_path):
    rc, out = run_capture([PY, "-c", MKDIR_SCRIPT, str(tmp_path / "d")], deny_mkdir(abi.SECCOMP_RET_ERRNO | 13))
    assert rc == 0 and out.split() == ["13", "file", "ok"]
    assert not (tmp_path / "d").exists() and (tmp_path / "d.file").exists()


def test_kill_action_kills_the_target(tmp_path):
    rc, out = run_capture([PY, "-c", MKDIR_SCRIPT, str(tmp_path / "d")], deny_mkdir(abi.SECCOMP_RET_KILL_PROCESS))
    assert rc == -signal.SIGSYS and out == "" and not (tmp_path / "d").exists()


def test_only_the_target_is_filtered(tmp_path):
    before = open("/proc/self/status").read().split("Seccomp:")[1].split()[0]
    rc, _ = run_capture(["true"], deny_mkdir(abi.SECCOMP_RET_ERRNO | 13))
    os.mkdir(tmp_path / "parent-can")
    assert rc == 0 and open("/proc/self/status").read().split("Seccomp:")[1].split()[0] == before


@pytest.mark.parametrize("argv, expected", [(["/bin/true"], ""), ([PY, "-c", "print(1)"], "1\n")])
def test_notify_all_launch_completes(argv, expected):
    r, w = os.pipe()
    target = launch.spawn(argv, NOTIFY_ALL, stdout=w)
    os.close(w)
    with target:
        assert target.listener is not None
        seen = serve_continue(target)
        assert target.wait() == 0
    assert os.read(r, 100).decode() == expected
    os.close(r)
    # The launcher's own read/execve were answered during the launch, not handed over:
    assert seen and seen[0].data.nr not in (nr("read"), nr("execve"))
    assert {n.pid for n in seen} == {target.pid}


def test_wait_killable_recv_launch():
    with launch.spawn(["/bin/true"], NOTIFY_ALL, wait_killable_recv=True) as target:
        serve_continue(target)
        assert target.wait() == 0
    with pytest.raises(SysgateError, match="WAIT_KILLABLE_RECV applies to a listener"):
        launch.spawn(["true"], ALLOW, wait_killable_recv=True)


def test_no_listener_without_notify_action():
    with launch.spawn(["true"], ALLOW) as target:
        assert target.listener is None and target.wait() == 0


@pytest.mark.parametrize("argv, code", [(["sh", "-c", "exit 7"], 7), (["sh", "-c", "kill -TERM $$"], -15),
                                        (["false"], 1)])
def test_exit_status_passes_through(argv, code):
    with launch.spawn(argv, NOTIFY_ALL) as target:
        serve_continue(target)
        assert target.wait() == code
    assert launch.exit_status(code) == (code if code >= 0 else 128 + 15)


def test_exec_failure_not_found_is_127():
    with pytest.raises(launch.LaunchError) as err:
        launch.spawn(["sysgate-no-such-command"], NOTIFY_ALL)
    assert err.value.exit_code == 127
    assert str(err.value) == "cannot run 'sysgate-no-such-command': No such file or directory"


@pytest.mark.parametrize("program", [ALLOW, NOTIFY_ALL])
def test_exec_failure_in_child_is_reported(tmp_path, program):
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\n")
    script.chmod(stat.S_IRUSR | stat.S_IWUSR)
    with pytest.raises(launch.LaunchError) as err:
        launch.spawn([str(script)], program)
    if os.geteuid() == 0:  # root may read it, but the kernel still wants an x bit
        assert "Permission denied" in str(err.value) and err.value.exit_code == 126
    with pytest.raises(launch.LaunchError, match="No such file or directory") as err:
        launch.spawn([str(tmp_path / "missing")], program)
    assert err.value.exit_code == 127


def test_filter_denying_execve_is_a_clear_error():
    with pytest.raises(launch.LaunchError, match=r"cannot run 'true': Operation not permitted \(the filter"):
        launch.spawn(["true"], only(nr("execve"), abi.SECCOMP_RET_ERRNO | 1))


def test_setup_failure_names_the_stage():
    with pytest.raises(launch.LaunchError, match="cwd setup failed: No such file or directory"):
        launch.spawn(["true"], ALLOW, cwd="/nonexistent-sysgate-dir")


def test_stdio_env_cwd(tmp_path):
    r_in, w_in = os.pipe()
    os.write(w_in, b"hello\n")
    os.close(w_in)
    rc, out = run_capture(["sh", "-c", 'read x; echo "$x $FOO $(pwd)"'], NOTIFY_ALL, serve=True,
                          stdin=r_in, env={"FOO": "bar", "PATH": os.environ["PATH"]}, cwd=tmp_path)
    os.close(r_in)
    assert rc == 0 and out == f"hello bar {tmp_path}\n"


def test_target_gets_default_signal_dispositions_and_mask():
    """Python ignores SIGPIPE/SIGXFSZ; exec would keep that, so the launcher resets them."""
    assert signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN
    old = signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])
    try:
        rc, out = run_capture(["cat", "/proc/self/status"], ALLOW, sigmask=[])
        rc2, out2 = run_capture(["cat", "/proc/self/status"], ALLOW)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    fields = dict(line.split(":\t") for line in out.splitlines() if ":\t" in line)
    assert rc == 0 and int(fields["SigIgn"], 16) == 0 and int(fields["SigBlk"], 16) == 0
    inherited = dict(line.split(":\t") for line in out2.splitlines() if ":\t" in line)
    assert int(inherited["SigBlk"], 16) == 1 << (signal.SIGUSR1 - 1)


def test_pass_fds_reach_the_target():
    r, w = os.pipe()
    rc, out = run_capture([PY, "-c", f"import os; os.write({w}, b'via-fd\\n'); print('done')"], ALLOW,
                          pass_fds=(w,))
    os.close(w)
    assert rc == 0 and out == "done\n" and os.read(r, 100) == b"via-fd\n"
    os.close(r)


def test_no_fd_leaks():
    def fds():
        return sorted(os.listdir("/proc/self/fd"))
    launch.spawn(["true"], ALLOW).__exit__(None, None, None)  # warm caches (feature probe)
    before = fds()
    for program in (ALLOW, NOTIFY_ALL):
        with launch.spawn(["true"], program) as target:
            if target.listener is not None:
                serve_continue(target)
            target.wait()
        with pytest.raises(launch.LaunchError):
            launch.spawn(["/nonexistent"], program)
        with pytest.raises(launch.LaunchError):
            launch.spawn(["true"], program, cwd="/nonexistent")
    assert fds() == before


def test_nested_listener_is_refused_clearly():
    def child():
        from sysgate.process.install import install
        install(only(1000, abi.SECCOMP_RET_USER_NOTIF), new_listener=True)
        try:
            launch.spawn(["true"], NOTIFY_ALL)
        except InstallError as exc:
            return str(exc)
    rc, out = run_in_child(child)
    assert rc == 0 and "already has a listener" in out, out


# --- stored filters ------------------------------------------------------------
def test_stored_filter_round_trip_and_group(tmp_path):
    f = Filter.from_program(deny_mkdir(abi.SECCOMP_RET_ERRNO | 13), name="box")
    path = tmp_path / "box.json"
    f.save(path)
    g = Filter.load(path)
    assert (g.program, g.group, g.arches, g.name) == (f.program, f.group, f.arches, "box")
    targets = [g.spawn([PY, "-c", MKDIR_SCRIPT, str(tmp_path / f"d{i}")]) for i in range(2)]
    for t in targets:
        with t:
            assert t.group == f.group and t.filter is g and t.wait() == 0
    assert not (tmp_path / "d0").exists() and (tmp_path / "d1.file").exists()


def test_stored_filter_flags_and_listener(tmp_path):
    f = Filter.from_program(NOTIFY_ALL, log=True)
    assert f.notifies and f.kernel_flags() & abi.SECCOMP_FILTER_FLAG_LOG
    with launch.spawn(["true"], f) as t:
        assert t.listener is not None and t.group == f.group
        serve_continue(t)
        assert t.wait() == 0


def test_spawn_is_the_one_launcher_and_filter_does_not_cycle_back(tmp_path):
    """Filter.spawn is spawn(argv, filter): the same Target either way (filter, group, flags);
    launch.py does not import filter.py (filter.py imports launch.py), so importing the
    launcher alone loads no stored-filter code."""
    import subprocess
    f = Filter.from_program(NOTIFY_ALL, log=True)
    with launch.spawn(["true"], f, group="other", listener=True) as t:
        assert (t.filter, t.group) == (f, "other") and t.listener is not None
        serve_continue(t)
        assert t.wait() == 0
    with f.spawn(["true"]) as t:
        assert (t.filter, t.group) == (f, f.group)
        serve_continue(t)
        assert t.wait() == 0
    probe = "import sys, sysgate.process.launch; print('sysgate.process.filter' in sys.modules)"
    out = subprocess.run([PY, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out == "False\n"


@pytest.mark.parametrize("doc, message", [
    ({"format": "other"}, "not a stored sysgate filter"),
    ({"format": "sysgate-filter", "version": 99}, "version 99 is not supported"),
    ({"format": "sysgate-filter", "version": 1, "program": "!!"}, "malformed stored filter"),
    ({"format": "sysgate-filter", "version": 1, "program": "AAAA"}, "multiple of 8"),
    ({"format": "sysgate-filter", "version": 1, "program": "BgAAAAAA/38=", "flags": {"x": 1}}, "unknown filter flag"),
])
def test_stored_filter_bad_input(doc, message):
    with pytest.raises(SysgateError, match=message):
        Filter.from_json(doc)


def test_stored_filter_from_policy():
    from sysgate.policy.model import Action, Policy, Rule

    policy = Policy(default=Action("allow"), rules=[Rule("mkdir", Action("errno", 13)),
                                                    Rule("mkdirat", Action("errno", 13))])
    f = Filter.from_policy(policy)
    rc, out = run_capture([PY, "-c", MKDIR_SCRIPT, "/tmp/sysgate-never-created"], f)
    assert rc == 0 and out.split()[0] == "13"


# --- sysgate run ------------------------------------------------------------------
def sysgate_run(*args, timeout=30, **kw):
    import subprocess
    return subprocess.run([PY, "-m", "sysgate", "run", *args], capture_output=True, text=True,
                          timeout=timeout, **kw)


def test_cli_run_passes_exit_codes_and_signals():
    assert sysgate_run("--", "sh", "-c", "exit 7").returncode == 7
    assert sysgate_run("--log", "--", "sh", "-c", "kill -KILL $$").returncode == 128 + 9


def test_cli_run_default_audit_summary():
    res = sysgate_run("--", "sh", "-c", "echo hi")
    assert res.returncode == 0 and res.stdout == "hi\n"
    title, head, columns, *rows = res.stderr.splitlines()
    total = int(head.split(": ")[1].split()[0])
    assert title == "sysgate: audit of 'sh'" and columns.split()[:2] == ["calls", "p50"]
    assert total > 10 and sum(int(r.split()[0]) for r in rows) == total
    assert all(r.split()[-2:] == ["continue", r.split()[0]] for r in rows)


def test_cli_run_notify_all_prints_each_syscall():
    res = sysgate_run("--notify-all", "--", "/bin/cat", "/etc/hostname")
    lines = res.stderr.splitlines()
    assert res.returncode == 0 and len(lines) > 5
    assert all(line.startswith("[pid ") and line.endswith(")") for line in lines)
    assert any('open' in line and '(AT_FDCWD, "/etc/hostname", O_RDONLY' in line for line in lines)
    assert lines[-1].endswith("exit_group(0)") and not any("execve" in line for line in lines)


def test_cli_run_exec_failure_message():
    res = sysgate_run("--", "sysgate-no-such-command", "x")
    assert res.returncode == 127
    assert res.stderr == "sysgate: cannot run 'sysgate-no-such-command': No such file or directory\n"
    res = sysgate_run("--profile", "/nonexistent/profile.json", "--", "true")
    assert res.returncode == 125 and "profile '/nonexistent/profile.json' not found" in res.stderr


def test_cli_run_forwards_sigterm():
    import subprocess
    import time
    script = ("import signal, sys, time\nsignal.signal(signal.SIGTERM, lambda *a: sys.exit(5))\n"
              "print('ready', flush=True)\ntime.sleep(20)\n")
    proc = subprocess.Popen([PY, "-m", "sysgate", "run", "--log", "--", PY, "-c", script],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 5 and time.monotonic() - t0 < 5


def test_cli_run_terminal_sigint_reaches_target_once():
    """^C on a terminal signals the whole foreground group: sysgate must not send a second SIGINT."""
    import pty
    import time
    script = ("import signal, time\nn = []\nsignal.signal(signal.SIGINT, lambda *a: n.append(1))\n"
              "print('ready', flush=True)\nt = time.time() + 1.5\n"
              "while time.time() < t: time.sleep(0.05)\nprint('sigints', len(n), flush=True)\n")
    pid, master = pty.fork()
    if pid == 0:
        os.execv(PY, [PY, "-m", "sysgate", "run", "--log", "--", PY, "-c", script])
    out = b""
    while b"ready" not in out:
        out += os.read(master, 1024)
    time.sleep(0.2)
    os.write(master, b"\x03")
    while b"sigints" not in out or not out.endswith(b"\n"):
        try:
            out += os.read(master, 1024)
        except OSError:
            break
    _, status = os.waitpid(pid, 0)
    os.close(master)
    assert os.waitstatus_to_exitcode(status) == 0 and b"sigints 1" in out, out


def test_cli_run_podman_profile():
    if not os.path.exists("/usr/share/containers/seccomp.json"):
        pytest.skip("podman profile not installed")
    from sysgate.arch.syscalls import number
    script = ("import ctypes, sys\nlibc = ctypes.CDLL(None, use_errno=True)\n"
              "r = libc.syscall(int(sys.argv[1]), 0)\nprint('ok' if r >= 0 else ctypes.get_errno())\n")
    uffd = str(number(None, "userfaultfd"))
    res = sysgate_run("--profile", "podman", "--", PY, "-c", script, uffd)
    assert res.returncode == 0 and res.stdout == "1\n"   # podman: userfaultfd -> EPERM
    res = sysgate_run("--log", "--", PY, "-c", script, uffd)
    assert res.returncode == 0 and res.stdout == "ok\n"


# --- through policies and the supervisor ---------------------------------------------
def policy(text: str):
    from sysgate.policy.parser import parse_policy
    return parse_policy(text, "test.policy")


@pytest.mark.parametrize("rule, expected", [("errno(EACCES)", (0, "13")), ("kill_process", (-signal.SIGSYS, None)),
                                            ("allow", (0, "created"))])
def test_policy_actions_on_launched_target(tmp_path, rule, expected):
    pol = policy(f"default: allow\nmkdir, mkdirat: {rule}\n")
    rc, out = run_capture([PY, "-c", MKDIR_SCRIPT, str(tmp_path / "d")], pol)
    assert (rc, out.split()[0] if out else None) == expected
    assert (tmp_path / "d").exists() == (rule == "allow")


def test_policy_flags_reach_the_filter():
    f = Filter.from_policy(policy("flags: log\ndefault: allow\n"))
    assert f.flags == {"log": True} and f.kernel_flags() == abi.SECCOMP_FILTER_FLAG_LOG


def test_group_of_targets_shares_supervisor_state(tmp_path):
    from sysgate.supervisor import Reply, Supervisor

    f = Filter.from_policy(policy("default: allow\nmkdir, mkdirat: notify\n"))

    def deny_and_count(n):
        n.state["mkdirs"] = n.state.get("mkdirs", 0) + 1
        return Reply.errno(77)

    outs = []
    with Supervisor() as sup:
        sup.on("mkdir", deny_and_count, group=f.group)
        sup.on("mkdirat", deny_and_count, group=f.group)
        targets = []
        for i in range(3):
            r, w = os.pipe()
            targets.append((f.spawn([PY, "-c", MKDIR_SCRIPT, str(tmp_path / f"d{i}")], stdout=w), r))
            os.close(w)
            sup.add_target(targets[-1][0])
        assert sup.run_until_idle(timeout=20)
        for t, r in targets:
            with t:
                assert t.wait() == 0
            outs.append(os.read(r, 1000).decode().split()[0])
            os.close(r)
        assert sup.group(f.group).state["mkdirs"] == 3
    assert outs == ["77"] * 3


def test_concurrent_launches_from_threads():
    import threading
    results = []
    devnull = os.open(os.devnull, os.O_WRONLY)

    def one():
        with launch.spawn([PY, "-c", "print(1)"], NOTIFY_ALL, stdout=devnull) as t:
            serve_continue(t)
            results.append(t.wait())
    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    os.close(devnull)
    assert results == [0] * 6


def test_cli_run_stored_filter(tmp_path):
    Filter.from_program(deny_mkdir(abi.SECCOMP_RET_ERRNO | 13)).save(tmp_path / "f.json")
    res = sysgate_run("--filter", str(tmp_path / "f.json"), "--", PY, "-c", MKDIR_SCRIPT, str(tmp_path / "d"))
    assert res.returncode == 0 and res.stdout.split()[0] == "13"
    (tmp_path / "bad.json").write_text("{")
    res = sysgate_run("--filter", str(tmp_path / "bad.json"), "--", "true")
    assert res.returncode == 125 and res.stderr.startswith("sysgate: error: ") and "invalid JSON" in res.stderr


def test_cli_run_policy_file(tmp_path):
    (tmp_path / "p.policy").write_text("default: allow\nmkdir, mkdirat: errno(EACCES)\nrmdir: notify\n")
    script = MKDIR_SCRIPT + ("import os, sys\ntry:\n    os.rmdir(sys.argv[1] + '.x')\n"
                             "except OSError as e:\n    print(e.errno)\n")
    res = sysgate_run("--policy", str(tmp_path / "p.policy"), "--", PY, "-c", script, str(tmp_path / "d"))
    assert res.returncode == 0 and res.stdout.split() == ["13", "file", "ok", "2"]  # rmdir continued: ENOENT
    assert "sysgate: notify: [pid" in res.stderr and "rmdir(" in res.stderr


FS_SCRIPT = "cat public; cat secret; echo rc=$?; uname >/dev/null"


def fs_policy(tmp_path) -> str:
    (tmp_path / "public").write_text("public text\n")
    (tmp_path / "secret").write_text("secret text\n")
    (tmp_path / "fs.policy").write_text("default: allow\nopenat: notify(fs)\nuname: notify\n")
    return str(tmp_path / "fs.policy")


def fs_config(tmp_path) -> dict:
    """The fs handler's section for fs_policy's files: everything readable but the secret."""
    return {"fs": {"rules": [f"deny {tmp_path}/secret", "allow rw /dev/null", "allow read /**"]}}


def test_cli_run_fs_handler_allows_and_denies_files(tmp_path):
    config = {**fs_config(tmp_path),
              "audit": {"log": str(tmp_path / "audit.jsonl"), "wrap": True, "summary": False}}
    (tmp_path / "handlers.json").write_text(json.dumps(config))
    res = sysgate_run("--force", "--policy", fs_policy(tmp_path), "--handlers", str(tmp_path / "handlers.json"),
                      "--", "sh", "-c", FS_SCRIPT, cwd=tmp_path)
    assert res.returncode == 0 and res.stdout == "public text\nrc=1\n", res.stderr
    assert "secret: Permission denied" in res.stderr and "secret text" not in res.stdout
    assert "sysgate: notify: [pid" in res.stderr and "uname(" in res.stderr    # plain notify: reported
    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    verdicts = {r["call"].split('"')[1]: r["verdict"] for r in records if r["call"].count('"') >= 2}
    assert verdicts["public"] == "fd" and verdicts["secret"] == "errno"
    assert {r["handler"] for r in records} == {"fs"}


def test_cli_run_audit_handler_inline_config_and_defaults(tmp_path):
    (tmp_path / "a.policy").write_text("default: allow\nopenat: notify(audit)\n")
    log = tmp_path / "a.jsonl"
    inline = json.dumps({"audit": {"log": str(log), "summary": True}})
    res = sysgate_run("--policy", str(tmp_path / "a.policy"), "--handlers", inline, "--", "cat", "/etc/hostname")
    assert res.returncode == 0 and res.stdout == open("/etc/hostname").read()
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert any('"/etc/hostname"' in r["call"] and r["verdict"] == "continue" for r in records)
    assert all(r["syscall"] == "openat" for r in records)
    assert "sysgate audit:" in res.stderr and "openat" in res.stderr             # the summary at exit
    # without --handlers: notify(audit) logs to stderr with its defaults
    res = sysgate_run("--policy", str(tmp_path / "a.policy"), "--", "cat", "/etc/hostname")
    assert res.returncode == 0 and '"syscall": "openat"' in res.stderr
    # notify(fs) without a section: fs denies everything (fail closed), with a warning
    res = sysgate_run("--force", "--policy", fs_policy(tmp_path), "--", "sh", "-c", "cat public", cwd=tmp_path)
    assert res.returncode != 0 and res.stdout == ""
    assert "handler 'fs' has no section in --handlers: it denies every call" in res.stderr


@pytest.mark.parametrize("policy, config, message", [
    ("openat: notify(fs)", '{"fs": {"rulez": []}}', r"handler 'fs': unknown option\(s\) rulez"),
    ("openat: notify(fs)", '{"fs": {"rules": ["allow sideways /x"]}}', "unknown mode 'sideways'"),
    ("openat: notify(fs)", '{"fs": ', "<config>:1:8: invalid JSON"),
    ("openat: notify(fs)", '{"fss": {}}', r"unknown section\(s\) fss"),
    ("openat: notify(fs)", "/nonexistent/h.json", "/nonexistent/h.json: no such handler config file"),
    ("openat: notify(nosuch)", None, "unknown handler 'nosuch'"),
    ("connect: notify(fs)", '{"fs": {}}', "policy notifies connect to handler 'fs', which answers only"),
])
def test_cli_run_bad_handler_config_is_one_line_before_the_command(tmp_path, policy, config, message):
    (tmp_path / "p.policy").write_text(f"default: errno(EPERM)\n{policy}\n")   # nothing left to the kernel
    marker = tmp_path / "ran"
    res = sysgate_run("--policy", str(tmp_path / "p.policy"), *(["--handlers", config] if config else []),
                      "--", "touch", str(marker))
    assert res.returncode == 125 and not marker.exists()
    assert res.stderr.startswith("sysgate: error: ") and res.stderr.count("\n") == 1, res.stderr
    assert re.search(message, res.stderr), res.stderr


def test_cli_run_handlers_needs_a_policy(tmp_path):
    res = sysgate_run("--handlers", "{}", "--", "true")
    assert res.returncode == 125 and "--handlers needs --policy" in res.stderr


# --- stored filters keep their notify(NAME) routes -------------------------------------------------
def test_stored_filter_keeps_handler_routes_and_conditions(tmp_path):
    from sysgate.policy_loader import load_text

    policy = load_text("default: allow\nopenat: arg2 & 0x3 == 0 -> notify(fs)\nopenat: notify(audit)\n"
                       "connect: notify(net)\nuname: notify\n", "routes.policy")
    Filter.from_policy(policy).save(tmp_path / "f.json")
    loaded = Filter.load(tmp_path / "f.json")
    assert loaded.metadata["handlers"] == {"openat": ["fs", "audit"], "connect": ["net"]}
    assert loaded.handler_names() == ["audit", "fs", "net"]
    stored = loaded.handler_policy()
    for args in [(0, 0, 0), (0, 0, 1), (0, 0, 2), (0, 0, 0o102)]:    # O_RDONLY, O_WRONLY, O_RDWR, O_CREAT|O_RDWR
        assert stored.decide("openat", args + (0,) * 3)[0] == policy.decide("openat", args + (0,) * 3)[0]
    assert stored.decide("uname")[0].handler is None
    plain = Filter.from_policy(load_text("default: allow\nuname: notify\n"))
    assert plain.metadata == {} and plain.handler_policy() is None


def test_cli_run_stored_filter_routes_named_handlers(tmp_path):
    from sysgate.policy_loader import load_policy

    Filter.from_policy(load_policy(fs_policy(tmp_path))).save(tmp_path / "f.json")
    config = json.dumps(fs_config(tmp_path))
    res = sysgate_run("--force", "--filter", str(tmp_path / "f.json"), "--handlers", config,
                      "--", "sh", "-c", FS_SCRIPT, cwd=tmp_path)
    assert res.returncode == 0 and res.stdout == "public text\nrc=1\n", res.stderr
    assert "secret: Permission denied" in res.stderr and "uname(" in res.stderr
    # without a config, fs denies everything (fail closed), as with --policy
    res = sysgate_run("--force", "--filter", str(tmp_path / "f.json"), "--", "sh", "-c", "cat public", cwd=tmp_path)
    assert res.returncode != 0 and res.stdout == ""
    assert "handler 'fs' has no section in --handlers: it denies every call" in res.stderr
    # routes stored without the policy that decides them: refused before the command starts
    doc = json.loads((tmp_path / "f.json").read_text())
    del doc["metadata"]["policy"]
    (tmp_path / "routes-only.json").write_text(json.dumps(doc))
    marker = tmp_path / "ran"
    res = sysgate_run("--filter", str(tmp_path / "routes-only.json"), "--", "touch", str(marker))
    assert res.returncode == 125 and not marker.exists() and res.stderr.count("\n") == 1, res.stderr
    assert res.stderr.startswith("sysgate: error: filter 'fs' sends syscalls to handler(s) fs but does not store")


def test_cli_run_record_then_replay_show(tmp_path):
    import subprocess

    config = json.dumps(fs_config(tmp_path))
    rec = tmp_path / "rec.jsonl"
    res = sysgate_run("--force", "--policy", fs_policy(tmp_path), "--handlers", config, "--record", str(rec),
                      "--", "sh", "-c", FS_SCRIPT, cwd=tmp_path)
    assert res.returncode == 0 and res.stdout == "public text\nrc=1\n", res.stderr
    count = int(re.search(r"sysgate: (\d+) notifications recorded to ", res.stderr).group(1))
    shown = subprocess.run([PY, "-m", "sysgate", "replay", str(rec), "--show"], capture_output=True, text=True,
                           timeout=30)
    assert shown.returncode == 0 and len(shown.stdout.splitlines()) == count, shown.stderr
    assert re.search(r'openat\(AT_FDCWD, "public", O_RDONLY\) -> inject_fd \d+', shown.stdout), shown.stdout
    assert 'openat(AT_FDCWD, "secret", O_RDONLY) -> errno EACCES' in shown.stdout
    assert re.search(r"uname\(0x[0-9a-f]+\) -> continue", shown.stdout)     # the plain notify, reported
    res = sysgate_run("--record", "/nonexistent/rec.jsonl", "--", "true")
    assert res.returncode == 125 and "cannot write /nonexistent/rec.jsonl" in res.stderr


def test_cli_run_handlers_with_a_filter_without_routes(tmp_path):
    Filter.from_program(NOTIFY_ALL).save(tmp_path / "f.json")
    res = sysgate_run("--filter", str(tmp_path / "f.json"), "--handlers", '{"fs": {}}', "--", "true")
    assert res.returncode == 125 and "a handler config needs a policy" in res.stderr
