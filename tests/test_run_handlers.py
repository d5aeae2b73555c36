"""``sysgate run --handlers FILE.py|MODULE:NAME``: custom Python handlers answer the
``notify(NAME)`` rules of a policy, in a real run of a real shell.

dash reads $PPID with getppid(2) when it starts: the custom handler answers it with 4242,
which the kernel alone never returns (the real parent is sysgate).
"""
from __future__ import annotations

import os
import subprocess
import sys

HANDLER = '''
from sysgate.supervisor import Reply

def fake_ppid(n):
    return Reply.value(4242)

fake_ppid.syscalls = ["getppid"]

class Slow:
    """A blocking handler (runs in a worker thread) with a deadline, closed after the run."""
    name = "slowppid"
    syscalls = ("getppid",)
    blocking = True
    deadline = 10.0

    def __call__(self, n):
        return Reply.value(77)

    def close(self):
        open(CLOSED, "w").close()

handlers = [fake_ppid]
slow = Slow()
'''


def _files(tmp_path, handler="fake_ppid"):
    (tmp_path / "myhandlers.py").write_text(HANDLER.replace("CLOSED", repr(str(tmp_path / "closed"))))
    (tmp_path / "p.policy").write_text(f"default: allow\ngetppid: notify({handler})\n")


def _run(tmp_path, *handlers, cmd=("sh", "-c", "echo $PPID"), env=None, options=()):
    args = [*options, *(a for spec in handlers for a in ("--handlers", spec))]
    return subprocess.run([sys.executable, "-m", "sysgate", "run", "--policy", str(tmp_path / "p.policy"),
                           *args, "--", *cmd], capture_output=True, text=True, timeout=60, env=env)


def test_file_handler_answers_the_policys_named_rule(tmp_path):
    _files(tmp_path)
    r = _run(tmp_path, str(tmp_path / "myhandlers.py"))
    assert (r.returncode, r.stdout) == (0, "4242\n"), r.stderr
    # the kernel alone: the shell's real parent
    plain = subprocess.run(["sh", "-c", "echo $PPID"], capture_output=True, text=True)
    assert plain.stdout != "4242\n"


def test_module_attr_blocking_handler_with_deadline_and_close(tmp_path):
    _files(tmp_path, "slowppid")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    r = _run(tmp_path, "myhandlers:slow", env=env)
    assert (r.returncode, r.stdout) == (0, "77\n"), r.stderr
    assert (tmp_path / "closed").exists()


def test_custom_handler_next_to_the_builtin_config(tmp_path):
    _files(tmp_path)
    (tmp_path / "p.policy").write_text("default: allow\ngetppid: notify(fake_ppid)\nuname: notify(identity)\n")
    r = _run(tmp_path, f"{tmp_path}/myhandlers.py:handlers", '{"identity": {"hostname": "fakehost"}}',
             cmd=("sh", "-c", "echo $PPID; uname -n"))
    assert (r.returncode, r.stdout) == (0, "4242\nfakehost\n"), r.stderr


def test_bad_custom_handlers_are_one_line_before_the_command_runs(tmp_path):
    _files(tmp_path)
    marker = tmp_path / "ran"
    cmd = ("touch", str(marker))
    cases = {
        f"{tmp_path}/missing.py": "no such file",
        f"{tmp_path}/myhandlers.py:nothing": "has no 'nothing'",
        "no_such_module_xyz:handlers": "cannot load 'no_such_module_xyz': ModuleNotFoundError",
    }
    for spec, words in cases.items():
        r = _run(tmp_path, spec, cmd=cmd)
        assert r.returncode == 125 and words in r.stderr and len(r.stderr.splitlines()) == 1, (spec, r.stderr)
    (tmp_path / "boom.py").write_text("raise RuntimeError('broken on import')\n")
    r = _run(tmp_path, str(tmp_path / "boom.py"), cmd=cmd)
    assert r.returncode == 125 and "RuntimeError: broken on import" in r.stderr, r.stderr
    # the policy notifies uname to a handler that answers only getppid
    (tmp_path / "p.policy").write_text("default: allow\nuname: notify(fake_ppid)\n")
    r = _run(tmp_path, str(tmp_path / "myhandlers.py"), cmd=cmd)
    assert r.returncode == 125 and "which answers only getppid" in r.stderr, r.stderr
    # a custom handler cannot take a built-in's name
    (tmp_path / "fs.py").write_text("def fs(n):\n    return None\nhandlers = [fs]\n")
    (tmp_path / "p.policy").write_text("default: allow\ngetppid: notify(fs)\n")
    r = _run(tmp_path, str(tmp_path / "fs.py"), cmd=cmd, options=["--force"])
    assert r.returncode == 125 and "name of a built-in handler" in r.stderr, r.stderr
    assert not marker.exists()


def test_policy_check_knows_the_custom_names_it_is_given(tmp_path):
    _files(tmp_path)
    r = subprocess.run([sys.executable, "-m", "sysgate", "policy", "check", str(tmp_path / "p.policy")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "unknown handler 'fake_ppid'" in r.stderr, r.stderr
    r = subprocess.run([sys.executable, "-m", "sysgate", "policy", "check", str(tmp_path / "p.policy"),
                        "--handlers", str(tmp_path / "myhandlers.py")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
