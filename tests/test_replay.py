"""Handler testing without root: fake notifications, recording real runs, replaying them."""
from __future__ import annotations

import errno
import json
import os
import subprocess

import pytest
from hypothesis import given, settings, strategies as st

from sysgate.process.forked import call_in_child
from sysgate.process import launch
from sysgate.errors import SysgateError
from sysgate.kernel import abi
from sysgate.policy.parser import parse_policy
from sysgate.supervisor import Notification, Reply, ReplyError, Supervisor, TargetGone
from sysgate.testing import (Dispatcher, FakeMemory, FakeNotification, Recorder, load, notification_from_record,
                             replay, run_handler)
from sysgate.testing.record import decode_bytes, encode_bytes
from support.guards import guard, stricter_guard
from support.cli import SYSGATE

AT_FDCWD = -100


# --- fake notifications -------------------------------------------------------------------
def test_fake_notification_decodes_like_a_real_one():
    n = FakeNotification("openat", (AT_FDCWD, 0x1000, os.O_RDONLY), memory={0x1000: "/etc/shadow"}, pid=77)
    assert isinstance(n, Notification)
    assert (n.syscall, n.arch, n.pid, n.nr) == ("openat", "x86_64", 77, 257)
    assert n.args[0] == (1 << 64) - 100 and len(n.args) == 6
    assert n.arguments["pathname"] == 0x1000 and n.arguments["dirfd"] == (1 << 64) - 100
    assert n.group == "default" and n.state == {}
    compat = FakeNotification(4, (1, 0x2000, 3), arch="i386")
    assert (compat.syscall, compat.arch, compat.audit_arch) == ("write", "i386", 0x40000003)


def test_fake_notification_drives_a_path_handler():
    denied = FakeNotification("openat", (AT_FDCWD, 0x1000, 0), memory={0x1000: "/srv/secret/key"})
    assert run_handler(guard, denied) == {"kind": "errno", "errno": errno.EACCES}
    assert denied.reply_kind == "errno" and denied.verdict == Reply.errno("EACCES") and denied.replied

    allowed = FakeNotification("openat", (AT_FDCWD, 0x1000, 0), memory={0x1000: b"/srv/public\0junk"})
    assert run_handler(guard, allowed) == {"kind": "continue"}
    assert allowed.reply_kind == "continue"


def test_fake_memory_faults_limits_and_gone_targets():
    unmapped = FakeNotification("openat", (AT_FDCWD, 0x2000, 0), memory={0x1000: "/x"})
    outcome = run_handler(guard, unmapped, on_error_errno="EIO")
    assert outcome["kind"] == "errno" and outcome["errno"] == errno.EIO and "Bad address" in outcome["exception"]
    assert unmapped.memory.misses == [(0x2000, 4096)]

    long_path = FakeNotification("openat", (AT_FDCWD, 0x1000, 0), memory={0x1000: b"a" * 5000})
    with pytest.raises(OSError) as exc:
        long_path.read_string(0x1000)
    assert exc.value.errno == errno.ENAMETOOLONG
    with pytest.raises(OSError) as exc:
        long_path.read_string(0x1000 + 4990)           # memory ends before a NUL
    assert exc.value.errno == errno.EFAULT
    with pytest.raises(OSError) as exc:
        FakeMemory(faults={0x500: errno.EIO}).read(0x500, 4)
    assert exc.value.errno == errno.EIO

    gone = FakeNotification("openat", (AT_FDCWD, 0x1000, 0), memory={0x1000: "/x"}, alive=False)
    with pytest.raises(TargetGone):
        gone.read_string(0x1000)
    assert run_handler(guard, gone) == {"kind": "gone"} and gone.verdict is None
    assert gone.send_value(1) is False and gone.verdict == Reply.value(1)   # like SEND after ENOENT


def test_fake_replies_follow_the_supervisor_rules():
    n = FakeNotification("getppid")
    assert run_handler(lambda n: None, n, default=Reply.errno("ENOSYS")) == {"kind": "errno",
                                                                            "errno": errno.ENOSYS}
    n = FakeNotification("getppid")
    n.send_value(7)
    with pytest.raises(ReplyError):
        n.send_errno("EPERM")
    assert n.verdict == Reply.value(7)

    def twice(n):
        n.send_value(1)
        return Reply.value(2)

    n = FakeNotification("getppid")
    outcome = run_handler(twice, n)                     # the first reply stands; the error is noted
    assert outcome["kind"] == "value" and outcome["value"] == 1 and "ReplyError" in outcome["exception"]
    n = FakeNotification("getppid")
    assert run_handler(lambda n: "yes", n)["errno"] == errno.EPERM      # not a Reply: fail closed


@pytest.mark.parametrize("blocking", [False, True])
def test_unsendable_returned_reply_fails_closed(blocking):
    """A Reply changed after it was built into one the kernel cannot take (an errno wider than
    its field) is answered on_error_errno: it used to leave a worker-run notification claimed
    and unanswered."""
    def handler(n):
        reply = Reply.errno("EACCES")
        reply.error = 1 << 40
        return reply

    d = Dispatcher(on_error_errno="EIO")
    d.on("getppid", handler, blocking=blocking)
    outcome = d.dispatch(FakeNotification("getppid"))
    assert outcome["kind"] == "errno" and outcome["errno"] == errno.EIO and "exception" in outcome
    with pytest.raises(ValueError):
        Reply(5, 0, abi.SECCOMP_USER_NOTIF_FLAG_CONTINUE)      # the kernel refuses CONTINUE with a value
    with pytest.raises(ValueError):
        Reply(0, 0, 4)                                         # no such response flag

def test_fake_inject_fd_and_group_state():
    state = {"opened": 0}

    def opener(n):
        n.state["opened"] += 1
        fd = os.open("/dev/null", os.O_RDONLY)
        try:
            n.inject_fd(fd)
        finally:
            os.close(fd)

    n = FakeNotification("openat", (AT_FDCWD, 0, 0), group="box", state=state, fd_numbers=[9])
    assert run_handler(opener, n) == {"kind": "inject_fd", "value": 9}
    assert n.group == "box" and state == {"opened": 1} and n.injected[0]["send"] is True
    with pytest.raises(OSError) as exc:
        FakeNotification("openat").inject_fd(987654)
    assert exc.value.errno == errno.EBADF


def test_dispatcher_routes_like_the_supervisor():
    d = Dispatcher(Reply.errno("EPERM"))
    d.on("getppid", lambda n: Reply.value(1))
    d.on(39, lambda n: Reply.value(2))                  # getpid by native number
    d.fallback(lambda n: Reply.continue_())
    assert d.dispatch(FakeNotification("getppid")) == {"kind": "value", "value": 1}
    assert d.dispatch(FakeNotification("getpid")) == {"kind": "value", "value": 2}
    assert d.dispatch(FakeNotification("getpid", arch="i386")) == {"kind": "continue"}   # numbers are native only
    assert Dispatcher().dispatch(FakeNotification("uname")) == {"kind": "errno", "errno": errno.EPERM}
    d.on("getppid", lambda n: Reply.value(3), group="box")      # group handlers first, as in the supervisor
    assert d.dispatch(FakeNotification("getppid", group="box")) == {"kind": "value", "value": 3}
    assert d.dispatch(FakeNotification("getppid")) == {"kind": "value", "value": 1}
    with pytest.raises(SysgateError):
        d.on("getppidd", lambda n: None)                   # a typo, refused like the supervisor does


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.integers(0, 64).map(lambda a: a * 16), st.binary(min_size=1, max_size=80), max_size=6),
       st.integers(0, 64 * 16 + 100), st.integers(0, 200))
def test_fake_memory_matches_a_byte_map(segments, address, length):
    """A read returns the mapped bytes from ``address`` on, up to ``length`` or the first hole."""
    byte_map = {}
    for start in sorted(segments):
        byte_map.update((start + i, b) for i, b in enumerate(segments[start]))
    mem = FakeMemory(segments)
    if length == 0:
        assert mem.read(address, 0) == b""
    elif address not in byte_map:
        with pytest.raises(OSError):
            mem.read(address, length)
    else:
        expected = bytearray()
        while len(expected) < length and address + len(expected) in byte_map:
            expected.append(byte_map[address + len(expected)])
        assert mem.read(address, length) == expected


@given(st.binary(max_size=64))
def test_recorded_bytes_round_trip(data):
    assert decode_bytes(json.loads(json.dumps(encode_bytes(data)))) == data


# --- recording a real run, replaying it -------------------------------------------------------
@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """A real `cat` under `openat: notify`, answered by `guard` through a Recorder."""
    root = tmp_path_factory.mktemp("replay")
    (root / "public").write_text("public data\n")
    (root / "secret").write_text("secret data\n")
    path = str(root / "calls.jsonl")
    policy = parse_policy("default: allow\nopenat: notify\n")
    r, w = os.pipe()
    err_r, err_w = os.pipe()
    with Supervisor(default=Reply.errno("EPERM")) as sup:
        with Recorder(path, sup, argv=["cat"]) as rec:
            sup.on("openat", rec.wrap(guard))
            target = launch.spawn(["cat", str(root / "public"), str(root / "secret")], policy,
                                  stdout=w, stderr=err_w)
            os.close(w)
            os.close(err_w)
            sup.add_target(target)
            assert sup.run_until_idle(timeout=20)
            count = rec.count
    out, err = os.read(r, 65536).decode(), os.read(err_r, 65536).decode()
    os.close(r)
    os.close(err_r)
    assert target.wait(5) == 1
    return {"path": path, "root": root, "out": out, "err": err, "count": count}


def test_recording_holds_notifications_reads_and_replies(recording):
    assert recording["out"] == "public data\n" and "Permission denied" in recording["err"]
    header, records = load(recording["path"])
    assert header["format"] == "sysgate-record" and header["default"] == {"kind": "errno", "errno": 1}
    assert len(records) == recording["count"] >= 3          # the loader's openat calls, then the two files
    by_path = {r["io"][0]["text"]: r for r in records if r["io"]}
    secret = by_path[str(recording["root"] / "secret")]
    assert secret["syscall"] == "openat" and secret["reply"] == {"kind": "errno", "errno": errno.EACCES}
    assert secret["io"][0]["kind"] == "string" and secret["io"][0]["address"] == secret["args"][1]
    assert by_path[str(recording["root"] / "public")]["reply"] == {"kind": "continue"}


def test_replay_same_handler_same_replies(recording):
    header, records = load(recording["path"])
    d = Dispatcher.for_recording(header)
    d.on("openat", guard)
    report = replay(records, d)
    assert report.ok and report.replayed == len(records), report.format()


def test_replay_modified_handler_reports_differences(recording):
    header, records = load(recording["path"])
    d = Dispatcher.for_recording(header)
    d.on("openat", stricter_guard)
    report = replay(records, d)
    assert not report.ok and len(report.differences) == 2       # public now denied, secret EPERM not EACCES
    text = report.format()
    assert "public" in text and "recorded continue, replayed errno EPERM" in text
    assert "recorded errno EACCES, replayed errno EPERM" in text


def test_replay_needs_no_root(recording):
    """The same replay in a forked child that dropped to uid nobody."""
    header, records = load(recording["path"])
    def as_nobody():
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
        results = []
        for handler in (guard, stricter_guard):
            d = Dispatcher.for_recording(header)
            d.on("openat", handler)
            results.append(len(replay(records, d).differences))
        return {"uid": os.geteuid(), "differences": results}

    assert call_in_child(as_nobody) == (0, {"uid": 65534, "differences": [0, 2]})


def test_replay_cli(recording, tmp_path):
    module = tmp_path / "myhandlers.py"
    module.write_text("from support.guards import guard, stricter_guard\n"
                      "handlers = {'openat': guard}\nstrict = {'openat': stricter_guard}\n")
    env = {**os.environ, "PYTHONPATH": os.path.dirname(__file__)}
    same = subprocess.run([*SYSGATE, "replay", recording["path"], "--handlers", str(module)],
                          capture_output=True, text=True, env=env, timeout=30)
    assert same.returncode == 0 and ", 0 differ" in same.stdout, same.stderr
    diff = subprocess.run([*SYSGATE, "replay", recording["path"], "--handlers", f"{module}:strict"],
                          capture_output=True, text=True, env=env, timeout=30)
    assert diff.returncode == 1 and ", 2 differ" in diff.stdout
    shown = subprocess.run([*SYSGATE, "replay", recording["path"], "--show"], capture_output=True, text=True,
                           timeout=30)
    assert shown.returncode == 0 and f'"{recording["root"]}/secret"' in shown.stdout
    assert "-> errno EACCES" in shown.stdout
    bad = subprocess.run([*SYSGATE, "replay", str(module), "--handlers", str(module)], capture_output=True,
                         text=True, timeout=30)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "not a sysgate recording" in bad.stderr
    builtin = subprocess.run([*SYSGATE, "replay", recording["path"], "--handlers", "audit"],
                             capture_output=True, text=True, timeout=30)      # CONTINUEs all, secret included
    assert builtin.returncode == 1 and ", 1 differ" in builtin.stdout and "secret" in builtin.stdout
    missing = subprocess.run([*SYSGATE, "replay", recording["path"], "--handlers", f"{module}:nothing"],
                             capture_output=True, text=True, env=env, timeout=30)
    assert missing.returncode == 2 and "has no 'nothing'" in missing.stderr


def test_notification_from_record_serves_recorded_reads(recording):
    _, records = load(recording["path"])
    doc = next(r for r in records if r["io"] and "secret" in r["io"][0]["text"])
    n = notification_from_record(doc)
    assert n.read_string(doc["args"][1]).decode() == doc["io"][0]["text"]
    assert (n.syscall, n.id) == ("openat", doc["id"])
    assert n.pid == os.getpid() != doc["pid"]       # the replaying process, never the recorded pid


def test_load_rejects_malformed_files(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"format": "sysgate-record", "version": 1}\n{"nr": 1\n')
    with pytest.raises(SysgateError, match=r"bad.jsonl:2: invalid JSON"):
        load(str(bad))
    bad.write_text('{"format": "sysgate-record", "version": 1}\n{"nr": 1}\n')
    with pytest.raises(SysgateError, match="lacks arch, args, reply"):
        load(str(bad))


def test_record_cli_then_replay_into_a_handler(recording, tmp_path):
    """`sysgate record` lets the calls run and keeps their path strings; replaying them into
    `guard` shows the one call it would answer differently."""
    policy = tmp_path / "openat.policy"
    policy.write_text("default: allow\nopenat: notify\n")
    out = str(tmp_path / "rec.jsonl")
    root = recording["root"]
    rec = subprocess.run([*SYSGATE, "record", "-o", out, "--policy", str(policy), "--",
                          "cat", str(root / "public"), str(root / "secret")], capture_output=True, text=True,
                         timeout=30)
    assert rec.returncode == 0 and rec.stdout == "public data\nsecret data\n", rec.stderr
    header, records = load(out)
    assert {r["syscall"] for r in records} == {"openat"} and header["argv"][0] == "cat"
    d = Dispatcher.for_recording(header)
    d.on("openat", guard)
    report = replay(records, d)
    assert [str(root / "secret") in str(diff) for diff in report.differences] == [True], report.format()
