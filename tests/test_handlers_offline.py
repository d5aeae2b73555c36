"""The built-in handlers driven offline by FakeNotification and replay, as root and as an
unprivileged user (a forked child that dropped to nobody): they decide with the fake's
credentials and resolve against this process, never answering "gone" for want of /proc."""
from __future__ import annotations

import errno
import os
import shutil
import socket
import struct
import tempfile
from pathlib import Path

import pytest

from sysgate.process.forked import call_in_child
from sysgate.handlers import FsHandler, IdentityHandler, NetHandler
from sysgate.handlers.target import Credentials
from sysgate.testing import FakeNotification, run_handler
from sysgate.testing.fake import own_credentials

AT_FDCWD = -100
NOBODY = Credentials(tgid=os.getpid(), uid=65534, gid=65534, fsuid=65534, fsgid=65534, groups=(), umask=0o022,
                     cap_effective=0)
ROOTISH = {"cap_effective": (1 << 41) - 1}


def nobody() -> Credentials:
    """NOBODY for this process (the scenarios run in a forked child: its fds are under its own tgid)."""
    return NOBODY._replace(tgid=os.getpid())


def drop_to_nobody() -> None:
    """(This Python may live where nobody cannot read: import what the handlers load lazily first.)"""
    import encodings.ascii  # noqa: F401
    own_credentials()
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)


@pytest.fixture
def tree():
    """public (0644) and private (0600, root's) files, a unix socket and a TCP listener, in a
    directory nobody can reach (pytest's tmp_path lies under a 0700 directory)."""
    if os.geteuid() != 0:
        pytest.skip("the fixture makes root-owned files; the tests then drop to nobody themselves")
    tmp_path = Path(tempfile.mkdtemp(prefix="sysgate-offline-"))
    tmp_path.chmod(0o755)
    (tmp_path / "public").write_text("public\n")
    (tmp_path / "private").write_text("private\n")
    (tmp_path / "private").chmod(0o600)
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(str(tmp_path / "sock"))
    unix.listen(4)
    (tmp_path / "sock").chmod(0o777)
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(4)
    yield tmp_path, tcp.getsockname()[1]
    unix.close()
    tcp.close()
    shutil.rmtree(tmp_path)


def sockaddr_in(port: int, host: str = "127.0.0.1") -> bytes:
    return struct.pack("=H", socket.AF_INET) + struct.pack("!H", port) + socket.inet_aton(host) + bytes(8)


def sockaddr_un(path: str) -> bytes:
    return struct.pack("=H", socket.AF_UNIX) + path.encode() + b"\0"


def scenarios(root: str, port: int) -> dict:
    """Every outcome, as run_handler reports it, under this process's identity."""
    out = {}
    fs = FsHandler([f"allow read {root}/**"])

    def opened(path, **kw):
        n = FakeNotification("openat", (AT_FDCWD, 0x1000, os.O_RDONLY), memory={0x1000: path}, **kw)
        outcome = run_handler(fs, n)
        return n.reply_kind if n.reply_kind == "inject_fd" else outcome.get("errno", outcome)

    out["public"] = opened(f"{root}/public")
    out["private"] = opened(f"{root}/private")
    out["outside rules"] = opened("/etc/hostname")
    out["private as nobody creds"] = opened(f"{root}/private", credentials=nobody())
    os.chdir(root)
    out["relative to our cwd"] = opened("public")

    uname = FakeNotification("uname", (0x1000,), memory={0x1000: bytes(6 * 65)})
    out["uname"] = run_handler(IdentityHandler(hostname="fakehost"), uname)
    out["uname wrote"] = uname.memory.read(0x1000 + 65, 9).rstrip(b"\0").decode()
    out["uname outside memory"] = run_handler(IdentityHandler(), FakeNotification("uname", (0x1000,),
                                                                                  memory={0x1000: bytes(10)}))

    net = NetHandler([f"allow connect unix:{root}/sock", f"allow connect 127.0.0.1:{port}",
                      "allow bind 127.0.0.1:1023"])

    def call(name, sock, addr, **kw):
        n = FakeNotification(name, (sock.fileno(), 0x1000, len(addr)), memory={0x1000: addr}, **kw)
        return run_handler(net, n)

    with socket.socket(socket.AF_UNIX) as s:
        out["unix connect"] = call("connect", s, sockaddr_un(f"{root}/sock"))
        out["unix peer"] = s.getpeername()
    with socket.socket() as s:
        out["tcp connect"] = call("connect", s, sockaddr_in(port))
        out["tcp peer"] = list(s.getpeername())
    with socket.socket() as s:
        out["tcp denied"] = call("connect", s, sockaddr_in(port + 1 if port < 65535 else port - 1))
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        out["bind 1023"] = call("bind", s, sockaddr_in(1023))
    with socket.socket() as s:
        out["bind 1023 as nobody creds"] = call("bind", s, sockaddr_in(1023), credentials=nobody())
    return out


def expected(root: str, port: int, privileged: bool) -> dict:
    own = {"kind": "value", "value": 0}
    return {"public": "inject_fd", "private": "inject_fd" if privileged else errno.EACCES,
            "outside rules": errno.EACCES, "private as nobody creds": errno.EACCES,
            "relative to our cwd": "inject_fd",
            "uname": own, "uname wrote": "fakehost", "uname outside memory": {"kind": "errno", "errno": errno.EFAULT},
            "unix connect": own, "unix peer": f"{root}/sock", "tcp connect": own, "tcp peer": ["127.0.0.1", port],
            "tcp denied": {"kind": "errno", "errno": errno.EACCES},
            "bind 1023": own if privileged else {"kind": "errno", "errno": errno.EACCES},
            "bind 1023 as nobody creds": {"kind": "errno", "errno": errno.EACCES}}


def test_builtin_handlers_offline_as_root(tree):
    root, port = tree
    assert call_in_child(lambda: scenarios(str(root), port), on_error=repr) == (0, expected(str(root), port, True))


def test_builtin_handlers_offline_as_nobody(tree):
    root, port = tree

    def as_nobody():
        drop_to_nobody()
        assert own_credentials().fsuid == 65534
        return scenarios(str(root), port)

    assert call_in_child(as_nobody, on_error=repr) == (0, expected(str(root), port, False))


def test_fake_credentials_default_to_this_process():
    def probe():
        creds = FakeNotification("getppid").credentials
        return [creds.tgid, creds.uid, creds.fsuid, creds.fsgid, list(creds.groups)]

    code, (tgid, uid, fsuid, fsgid, groups) = call_in_child(probe)
    assert code == 0 and tgid != os.getpid() and (uid, fsuid, fsgid) == (os.getuid(), os.geteuid(), os.getegid())
    explicit = FakeNotification("getppid", credentials=NOBODY, pid=4242)
    assert explicit.credentials is NOBODY and explicit.pid == 4242


def test_failed_identity_switch_is_not_skipped_next_time():
    """acting_as used to leave its per-thread flag set when a switch failed (an unprivileged
    supervisor, or one without CAP_SETGID): every later call then ran as the supervisor."""
    from sysgate.handlers.target import acting_as
    other = Credentials(tgid=1, uid=1234, gid=1234, fsuid=1234, fsgid=1234, groups=(), umask=0o022, cap_effective=0)

    def as_nobody():
        drop_to_nobody()
        seen = []
        for _ in range(2):
            try:
                with acting_as(other):
                    seen.append("ran as the supervisor")
            except PermissionError:
                seen.append("EPERM")
        with acting_as(own_credentials()):      # our own identity: nothing to switch
            seen.append("own")
        return seen

    assert call_in_child(as_nobody, on_error=repr) == (0, ["EPERM", "EPERM", "own"])


def test_replay_into_the_builtin_fs_handler_needs_no_root(tree):
    """Replayed notifications run against the replaying process, with its credentials."""
    from sysgate.testing import Dispatcher, notification_from_record
    root, _ = tree
    records = [{"id": i, "pid": 999999, "arch": "x86_64", "nr": 257, "syscall": "openat", "ip": 0,
                "args": [AT_FDCWD & (2**64 - 1), 0x1000, 0, 0, 0, 0],
                "io": [{"kind": "string", "address": 0x1000, "text": str(root / name)}],
                "reply": {"kind": "continue"}} for i, name in enumerate(("public", "private", "../etc"))]

    def outcomes():
        d = Dispatcher()
        d.on("openat", FsHandler([f"allow read {root}/**"]))
        return [d.dispatch(notification_from_record(doc))["kind"] for doc in records]

    def as_nobody():
        drop_to_nobody()
        return outcomes()

    assert call_in_child(outcomes, on_error=repr) == (0, ["inject_fd", "inject_fd", "errno"])
    assert call_in_child(as_nobody, on_error=repr) == (0, ["inject_fd", "errno", "errno"])
