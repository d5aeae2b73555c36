"""Every path-taking syscall routed to ``fs`` (handlers/fsmeta.py): the same C programs with and
without sysgate (64-bit and i386), denied paths, and the attacks on what is CONTINUEd."""
from __future__ import annotations

import os
import subprocess

import pytest

from cprog import cprog
from handlers_support import run
from sysgate import syscalls
from sysgate.handlers.fs import FsHandler
from sysgate.policy.model import ALLOW, Action, Policy, Rule

HERE = os.path.dirname(os.path.abspath(__file__))
SYSTEM = ["allow read /", "allow read /usr/**", "allow read /lib/**", "allow read /lib64/**", "allow read /etc/**",
          "allow read /dev/null", "allow read /proc/**"]
ARCHES = ["x86_64", "i386"]


def fs_policy(handler) -> Policy:
    """Allow everything, except every syscall of ``handler`` (on both ABIs), notified to it."""
    names = [s for s in handler.syscalls if any(syscalls.number(a, s) is not None for a in ARCHES)]
    return Policy(default=ALLOW, arches=list(ARCHES), rules=[Rule(s, Action("notify", handler=handler.name))
                                                             for s in names])


def under_fs(argv, rules):
    fs = FsHandler([*SYSTEM, f"allow read {os.path.dirname(argv[0])}/**", *rules])
    return run(argv, fs, policy=fs_policy(fs))


def make_tree(path):
    (path / "dir").mkdir(parents=True)
    (path / "f").write_text("hello\n")
    os.chmod(path / "f", 0o644)
    (path / "lnk").symlink_to("f")
    os.mkfifo(path / "fifo0")
    return path


@pytest.fixture(scope="module", params=[False, True], ids=["x86_64", "i386"])
def meta_prog(request):
    with open(os.path.join(HERE, "fs_calls_meta.c")) as fh:
        return cprog(fh.read(), m32=request.param)


def test_metadata_calls_match_the_kernel(meta_prog, tmp_path):
    """chmod/chown/xattr/truncate/statfs/utime/mknod/getdents/inotify: allowed, every result and
    errno (ENOENT, ENOTDIR, EFAULT, EINVAL, ERANGE, E2BIG, EOVERFLOW…) equals the kernel's own."""
    native = make_tree(tmp_path / "native")
    expected = subprocess.run([meta_prog, str(native)], capture_output=True, text=True, check=True).stdout
    boxed = make_tree(tmp_path / "boxed")
    code, out = under_fs([meta_prog, str(boxed)], [f"allow rw {boxed}/**"])
    assert code == 0 and out == expected
    assert "inotify_add_watch          1" in out and "event=1" in out
