"""kernel.procfs: the one /proc/PID/status parser, on generated texts and on a live child."""
from __future__ import annotations

import os
import subprocess
import sys
import time

from hypothesis import given, settings, strategies as st

from sysgate.handlers.target import credentials
from sysgate.kernel import procfs

KEY = st.text(st.characters(blacklist_characters=":\n\t", blacklist_categories=("Cs",)), min_size=1, max_size=12)
VALUE = st.text(st.characters(blacklist_characters="\n", blacklist_categories=("Cs",)), max_size=20)


def render(fields: dict[str, str]) -> bytes:
    return "".join(f"{k}:\t{v}\n" for k, v in fields.items()).encode()


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(KEY, VALUE, max_size=12), st.booleans())
def test_parse_gives_back_every_field(fields, final_newline):
    data = render(fields)
    if not final_newline:
        data = data[:-1]
    assert procfs.parse_status(data) == fields


NAMES = ["Name", "Uid", "Groups", "CapEff", "Uid:"]
LINE = st.tuples(st.sampled_from(NAMES[:-1]) | KEY, VALUE).map(lambda kv: f"{kv[0]}:\t{kv[1]}\n".encode())


@settings(max_examples=500, deadline=None)
@given(st.lists(LINE | st.binary(max_size=12), max_size=10), st.lists(st.sampled_from(NAMES) | KEY, max_size=5))
def test_looking_up_keys_agrees_with_the_full_parse(parts, keys):
    """The per-key lookup (credentials) and the full parse (installers) read any text alike:
    duplicates (the first wins), junk between lines, a missing final newline."""
    data = b"".join(parts)
    full = procfs.parse_status(data)
    assert procfs.parse_status(data, keys) == {k: full[k] for k in keys if k in full}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 2**32 - 2), max_size=8), st.sampled_from(["", " ", "\t"]))
def test_ids(numbers, trail):
    assert procfs.ids(" ".join(map(str, numbers)) + trail) == tuple(numbers)


def _fields_by_full_parse(data: bytes) -> tuple:
    full = procfs.parse_status(data)
    uid, gid = procfs.ids(full["Uid"]), procfs.ids(full["Gid"])
    return (int(full["Tgid"]), uid[0], gid[0], uid[3], gid[3], procfs.ids(full.get("Groups", "")),
            int(full.get("Umask", "22"), 8), int(full.get("CapEff", "0"), 16))


def test_credential_fields_agree_with_the_full_parse():
    """The per-call credential parse finds what the one full parser finds: live status texts (ours,
    a child with groups and another umask), and without the optional Umask, Groups and CapEff lines."""
    child = subprocess.Popen([sys.executable, "-c", "import os, sys; os.setgroups([7, 5, 900]); os.umask(0o77); "
                              "sys.stdout.write('ok\\n'); sys.stdout.flush(); sys.stdin.read()"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "ok\n"
        texts = []
        for pid in (os.getpid(), child.pid):
            with open(f"/proc/{pid}/status", "rb") as f:
                texts.append(f.read())
    finally:
        child.stdin.close()
        child.wait()
    texts += [b"\n".join(line for line in texts[1].split(b"\n") if not line.startswith(drop))
              for drop in (b"Umask:", b"Groups:", b"CapEff:")]
    for data in texts:
        assert procfs.credential_fields(data) == _fields_by_full_parse(data)
    assert procfs.credential_fields(texts[1])[5:7] == ((5, 7, 900), 0o77)


class _Notification:
    """Just what credentials() reads: the thread id and the ID_VALID check."""

    def __init__(self, pid: int):
        self.pid = pid

    def check_valid(self) -> None:
        pass


def test_live_child_with_more_groups_than_one_read():
    """A child with 3000 supplementary groups: its status is larger than 16 KiB (one read),
    yet every group, the ids and the capabilities after the Groups line are read (before,
    credentials cut the Groups line and read CapEff as 0)."""
    groups = list(range(100000, 103000))
    child = subprocess.Popen([sys.executable, "-c", """
import os, sys
os.setgroups(range(100000, 103000))
os.setresgid(1234, 1235, 1236)
os.setresuid(0, 0, 0)
os.umask(0o027)
sys.stdout.write("ready\\n"); sys.stdout.flush()
sys.stdin.read()
"""], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "ready\n"
        path = f"/proc/{child.pid}/status"
        assert os.path.getsize(path) == 0          # proc: the size is only known by reading
        fields = procfs.read_status(path)
        assert len(b"".join(open(path, "rb"))) > 16384
        assert procfs.ids(fields["Groups"]) == tuple(groups)
        assert int(fields["Tgid"]) == child.pid and procfs.ids(fields["Gid"]) == (1234, 1235, 1236, 1235)
        assert fields["Name"].startswith("python")
        creds = credentials(_Notification(child.pid))
        assert creds.groups == tuple(groups) and (creds.tgid, creds.gid, creds.fsgid) == (child.pid, 1234, 1235)
        assert creds.umask == 0o027
        assert creds.cap_effective == int(fields["CapEff"], 16) != 0
    finally:
        child.stdin.close()
        child.wait()


_UMASK_CHILD = """
import os, sys
for line in sys.stdin:
    os.umask(int(line, 8))
    sys.stdout.write("ok\\n"); sys.stdout.flush()
"""


def _read(files: procfs.ThreadFiles, tid: int, keys) -> dict:
    """Thread ``tid``'s status fields through ``files``, as a handler's call takes and returns them."""
    pair, data = files.take(tid)
    files.put(tid, pair)
    return procfs.parse_status(data, keys)


def test_thread_status_is_read_afresh_from_the_kept_file():
    """ThreadFiles keeps the file open: a change between two reads is seen by the second."""
    status = procfs.ThreadFiles()
    child = subprocess.Popen([sys.executable, "-c", _UMASK_CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    try:
        for mask in ("0022", "0077", "0002"):
            child.stdin.write(mask + "\n")
            child.stdin.flush()
            assert child.stdout.readline() == "ok\n"
            assert _read(status, child.pid, ("Umask",))["Umask"] == mask
            assert child.pid in status._fds          # the kept file was read, not a new one
    finally:
        child.stdin.close()
        child.wait()


def _spawn_with_pid(pid: int, argv) -> subprocess.Popen | None:
    """A child numbered ``pid`` (root: ns_last_pid), or None when another process took the number first."""
    with open("/proc/sys/kernel/ns_last_pid", "w") as f:
        f.write(str(pid - 1))
    child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    if child.pid == pid:
        return child
    child.kill()
    child.wait()
    return None


def _exec_name(status: procfs.ThreadFiles, pid: int, name: str) -> bool:
    """Does ``status`` read ``name`` for child ``pid`` (polled while it still runs as the forked
    interpreter, before its exec)?"""
    for _ in range(500):
        seen = _read(status, pid, ("Name",))["Name"]
        if seen == name:
            return True
        if not seen.startswith("python"):
            return False
        time.sleep(0.01)
    return False


def test_thread_status_of_a_recycled_number_is_the_new_thread(needs_root):
    """A kept file belongs to the thread it was opened for: once that thread is gone and its number
    names another process, the read is the new process's (never the dead one's, never an error),
    and so are the lookups in the kept directory."""
    status = procfs.ThreadFiles()
    for _ in range(20):
        first = subprocess.Popen(["sleep", "60"])
        assert _exec_name(status, first.pid, "sleep")
        assert first.pid in status._fds
        first.kill()
        first.wait()
        second = _spawn_with_pid(first.pid, ["cat"])
        if second is not None:
            break
    else:
        raise AssertionError("could not get a recycled pid in 20 tries")
    try:
        assert _exec_name(status, second.pid, "cat")
        pair, _ = status.take(second.pid)         # the kept directory is the new process's too
        try:
            assert os.path.basename(os.readlink("exe", dir_fd=pair[0])) == "cat"
        finally:
            status.put(second.pid, pair)
    finally:
        second.kill()
        second.wait()
