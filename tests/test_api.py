"""The top-level Python API: ``sysgate.__all__`` resolves, loads lazily, and runs a supervised child."""
import os
import subprocess
import sys

import pytest

import sysgate


@pytest.mark.parametrize("name", sysgate.__all__)
def test_every_public_name_resolves(name):
    obj = getattr(sysgate, name)
    assert obj is not None and name in dir(sysgate)
    assert getattr(sysgate, name) is obj          # cached after the first load


def test_public_names_are_the_defining_objects():
    from sysgate.attach.target import attach
    from sysgate.compiler import compile_policy
    from sysgate.process.launch import Target, spawn
    from sysgate.supervisor import Supervisor

    import sysgate.attach.target   # noqa: F401 -- sets sysgate.attach to the subpackage
    assert sysgate.attach_process is attach and callable(sysgate.attach_process)
    assert (sysgate.compile_policy, sysgate.spawn, sysgate.Target, sysgate.Supervisor) == \
        (compile_policy, spawn, Target, Supervisor)


def test_unknown_names_still_raise_and_submodules_still_import():
    with pytest.raises(AttributeError):
        sysgate.no_such_name
    from sysgate import errors
    assert errors.SysgateError is sysgate.SysgateError


def test_import_sysgate_loads_no_submodule():
    """``import sysgate`` (and so ``sysgate --help``'s first step) stays as cheap as a version string."""
    code = ("import sys, sysgate; "
            "print(sorted(m for m in sys.modules if m.startswith('sysgate.')), 'typing' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split(None, 1)[0] == "[]", out
    loaded = subprocess.run([sys.executable, "-c", "import sys, sysgate; sysgate.Reply; "
                             "print('sysgate.supervisor.notification' in sys.modules)"],
                            capture_output=True, text=True, check=True).stdout
    assert loaded == "True\n"


def test_built_in_handlers_meet_the_handler_contract():
    from sysgate.handlers.identity import IdentityHandler

    handler = IdentityHandler()
    try:
        assert isinstance(handler, sysgate.HandlerObject)
        assert isinstance(handler, sysgate.HandlerFunction)
    finally:
        handler.close()
    assert isinstance(lambda n: None, sysgate.HandlerFunction)
    assert not isinstance(lambda n: None, sysgate.HandlerObject)   # no name, syscalls, install, close


POLICY = """\
default: allow
getppid: notify(fake_parent)
mkdir, mkdirat: errno(EACCES)
"""


def test_supervised_child_sees_the_python_handlers_answer(tmp_path):
    """The README's example: a policy, a spawned child, a notify rule answered in Python."""
    seen = []

    def fake_parent(n: sysgate.Notification) -> sysgate.Reply:
        seen.append((n.syscall, n.pid))
        return sysgate.Reply.value(4242)

    assert isinstance(fake_parent, sysgate.HandlerFunction)
    policy = sysgate.load_text(POLICY)
    program = sysgate.compile_policy(policy)
    assert isinstance(program, sysgate.Program)
    out_r, out_w = os.pipe()
    script = f"echo $PPID; mkdir {tmp_path}/d 2>/dev/null || echo refused"
    with sysgate.Supervisor(default=sysgate.Reply.errno("EPERM")) as sup:
        sup.use_policy(policy, {"fake_parent": fake_parent})
        try:
            target = sysgate.spawn(["/bin/sh", "-c", script], program, stdout=out_w)
        finally:
            os.close(out_w)
        assert isinstance(target, sysgate.Target)
        sup.add_target(target)
        assert sup.run_until_idle(timeout=60)
    with os.fdopen(out_r) as out:
        assert out.read() == "4242\nrefused\n"
    assert target.returncode == 0
    assert seen == [("getppid", target.pid)]
    assert not (tmp_path / "d").exists()


def test_readme_python_api_example_runs():
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md"), encoding="utf-8").read()
    section = readme.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    code = section.split("```python\n", 1)[1].split("\n```", 1)[0]
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["4242", "refused"]
