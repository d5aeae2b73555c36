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


def under_fs(argv, rules, **spawn):
    fs = FsHandler([*SYSTEM, f"allow read {os.path.dirname(argv[0])}/**", *rules])
    return run(argv, fs, policy=fs_policy(fs), **spawn)


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


WRITES = ["chmod", "fchmodat2", "chown", "fchownat", "setxattr", "removexattr", "setxattrat", "removexattrat",
          "truncate", "utimes", "utimensat", "futimesat"]
READS = ["getxattr", "listxattr", "getxattrat", "listxattrat", "statfs", "inotify_add_watch", "fanotify_mark"]


@pytest.fixture(scope="module", params=[False, True], ids=["x86_64", "i386"])
def deny_prog(request):
    with open(os.path.join(HERE, "fs_calls_deny.c")) as fh:
        return cprog(fh.read(), m32=request.param), request.param


def attack_tree(base):
    """(the paths argv[1:5] of fs_calls_deny.c, fs rules, an fd of a denied directory)."""
    (base / "rw").mkdir(parents=True)
    (base / "hidden").mkdir()
    (base / "hidden" / "inside").write_text("x")
    for name in ("ro.txt", "secret.txt"):
        (base / name).write_text("data\n")
        os.setxattr(base / name, "user.keep", b"k")
    (base / "rw" / "link").symlink_to(base / "secret.txt")
    rules = [f"allow read {base}", f"allow read {base}/ro.txt", f"deny {base}/secret.txt", f"allow rw {base}/rw/**"]
    paths = [f"{base}/ro.txt", f"{base}/secret.txt", f"{base}/rw", f"{base}/rw/link"]
    return paths, rules, os.open(base / "hidden", os.O_RDONLY | os.O_DIRECTORY)


def test_denied_paths_are_refused_by_every_call(deny_prog, tmp_path):
    """Writes to a read-only file, anything on a denied file or through a symlink to it, device
    nodes, mount marks, file handles and listing an inherited denied directory: all refused,
    where the kernel alone (root) allows every one of them."""
    prog, m32 = deny_prog
    paths, _, inherited = attack_tree(tmp_path / "native")
    native = subprocess.run([prog, *paths, str(inherited)], capture_output=True, text=True,
                            pass_fds=(inherited,)).stdout
    os.close(inherited)
    paths, rules, inherited = attack_tree(tmp_path / "boxed")
    try:
        code, out = under_fs([prog, *paths, str(inherited)], rules, pass_fds=(inherited,))
    finally:
        os.close(inherited)
    got = dict((" ".join(line.split()[:-1]), line.split()[-1]) for line in out.splitlines())
    writes = WRITES + (["chown32", "truncate64"] if m32 else [])
    expected = {f"ro {c}": "EACCES" for c in writes} | {f"ro {c}": "ok" for c in READS}
    for what in ("secret", "link"):
        expected |= {f"{what} {c}": "EACCES" for c in writes + READS}
    expected |= {"rw mknod chr": "EPERM", "rw mknod blk": "EPERM", "rw mknod fifo": "ok", "secret mknod fifo": "EACCES",
                 "rw fanotify mount mark": "EPERM", "rw fanotify inode mark": "ok",
                 "rw name_to_handle_at": "EOPNOTSUPP", "rw open_by_handle_at": "EPERM",
                 "inherited getdents64": "EACCES"}
    assert code == 0 and got == expected
    assert not os.path.exists(tmp_path / "boxed" / "rw" / "dev")
    assert os.getxattr(tmp_path / "boxed" / "secret.txt", "user.keep") == b"k"
    assert (tmp_path / "boxed" / "secret.txt").read_text() == "data\n"
    native_refused = [line for line in native.splitlines() if not line.endswith((" ok", "ENODATA"))]
    assert native_refused == [], "the kernel alone allows all of it (these refusals are sysgate's)"
