"""Issue 11, bug 5: the i386 stat family (stat64, lstat64, fstatat64, stat, lstat, oldstat,
oldlstat, statx) is
routed to the fs handler with the compat struct layouts: an allowed file gets the very bytes
the kernel writes (buffers pre-filled, so untouched padding is compared too), a denied one
EACCES instead of its metadata."""
from __future__ import annotations

import errno
import os
import subprocess

import pytest

from support.cprog import cprog
from support.handlers import notify_policy, run
from sysgate.handlers.fs import FsHandler

PROGRAM = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
static unsigned char buf[512];
static void dump(const char *what, long r, int size) {
    printf("%s %d ", what, r < 0 ? errno : 0);
    for (int i = 0; i < size; i++) printf("%02x", buf[i]);
    printf("\n");
}
static void one(const char *tag, const char *path, const char *link) {
    char what[64];
#define CALL(name, size, ...) memset(buf, 0xab, sizeof buf); snprintf(what, sizeof what, "%s-%s", tag, name); \
    dump(what, syscall(__VA_ARGS__), size);
    CALL("stat64", 96, 195, path, buf)
    CALL("lstat64", 96, 196, link, buf)
    CALL("fstatat64", 96, 300, AT_FDCWD, path, buf, 0)
    CALL("fstatat64-nofollow", 96, 300, AT_FDCWD, link, buf, AT_SYMLINK_NOFOLLOW)
    CALL("stat", 64, 106, path, buf)
    CALL("lstat", 64, 107, link, buf)
    CALL("statx", 256, 383, AT_FDCWD, path, 0, 0x7ff, buf)
    CALL("oldstat", 32, 18, path, buf)
    CALL("oldlstat", 32, 84, link, buf)
}
int main(int argc, char **argv) {
    one("allowed", argv[1], argv[2]);
    one("denied", argv[3], argv[3]);
    one("small", argv[4], argv[4]);
    return 0;
}
"""


def _policy(fs):
    policy = notify_policy(fs)
    policy.arches = ["x86_64", "i386"]
    return policy


@pytest.mark.usefixtures("landlock")
def test_i386_stat_family_matches_the_kernel_and_denies(tmp_path):
    try:
        exe = cprog(PROGRAM, m32=True)
    except subprocess.CalledProcessError:
        pytest.skip("no gcc -m32")
    allowed, link, denied = tmp_path / "allowed.txt", tmp_path / "link", tmp_path / "denied.txt"
    allowed.write_text("ALLOWED\n")
    link.symlink_to(allowed)
    denied.write_text("SECRET\n")
    small = next((p for p in ("/etc/hostname", "/etc/passwd", "/etc/hosts", "/bin/sh") if os.stat(p).st_ino < 0x10000),
                 None)
    if small is None:
        pytest.skip("no file with a 16-bit inode number for oldstat")
    argv = [exe, str(allowed), str(link), str(denied), small]
    printed = subprocess.run(argv, capture_output=True, text=True).stdout
    kernel = dict(line.split(" ", 1) for line in printed.splitlines())
    fs = FsHandler([f"deny {denied}", "allow read /**"])
    code, out = run(argv, fs, policy=_policy(fs))
    mine = dict(line.split(" ", 1) for line in out.splitlines())
    assert code == 0, out
    for name in ("stat64", "lstat64", "fstatat64", "fstatat64-nofollow", "stat", "lstat", "statx",
                 "oldstat", "oldlstat"):
        assert mine[f"allowed-{name}"] == kernel[f"allowed-{name}"], name
        assert mine[f"denied-{name}"].startswith(f"{errno.EACCES} "), (name, mine[f"denied-{name}"])
        if name.startswith("old"):      # 16-bit inode: EOVERFLOW for big inode numbers, like the kernel
            continue
        assert kernel[f"allowed-{name}"].startswith("0 ") and kernel[f"denied-{name}"].startswith("0 "), kernel
    for name in ("stat64", "stat", "oldstat", "oldlstat", "statx"):
        assert mine[f"small-{name}"] == kernel[f"small-{name}"] and kernel[f"small-{name}"].startswith("0 "), name


def test_sysgate_run_routes_the_i386_stat_family_to_fs(tmp_path, landlock):
    """``sysgate run`` used to refuse ``stat64: notify(fs)`` (fs did not answer it), leaving it
    to the kernel: a denied file's metadata leaked."""
    import sys

    try:
        exe = cprog(PROGRAM, m32=True)
    except subprocess.CalledProcessError:
        pytest.skip("no gcc -m32")
    # the secure base routes the whole i386 stat family (and a dynamic i386 program starts under it)
    (tmp_path / "p.policy").write_text("arch: x86_64, i386\ndefault: allow\nsandbox: fs\n")
    denied = tmp_path / "denied.txt"
    denied.write_text("SECRET\n")
    (tmp_path / "h.json").write_text('{"fs": {"rules": ["deny %s", "allow read /**"]}}' % denied)
    out = subprocess.run([sys.executable, "-m", "sysgate", "run", f"--landlock={landlock}",
                          "--policy", str(tmp_path / "p.policy"),
                          "--handlers", str(tmp_path / "h.json"), "--", exe, "/etc/passwd", "/etc/passwd",
                          str(denied), "/etc/passwd"], capture_output=True, text=True, timeout=60)
    lines = dict(line.split(" ", 2)[:2] for line in out.stdout.splitlines())
    assert out.returncode == 0, out.stderr
    for name in ("stat64", "lstat64", "fstatat64", "stat", "lstat", "oldstat", "oldlstat"):
        assert lines[f"denied-{name}"] == str(errno.EACCES), (name, out.stdout)
        assert lines[f"allowed-{name}"] in ("0", "75" if name.startswith("old") else "0"), (name, out.stdout)
