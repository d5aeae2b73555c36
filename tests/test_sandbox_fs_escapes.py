"""Issue 11, the "stopped correctly" list as one C attack program: every way of naming a denied
file (symlinks, ``..``, dirfds, /proc/self/root, /proc/PID/cwd, /proc/self/fd/N, a hard link
made before the run, openat2 without RESOLVE flags, an x32 syscall number, i386 ``int $0x80``)
is refused by the fs handler while the kernel alone opens every one of them."""
from __future__ import annotations

import os
import subprocess

import pytest

from support.cprog import cprog
from support.handlers import notify_policy, run
from sysgate.handlers.fs import FsHandler

ATTACK = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
static void report(const char *what, int fd) {
    char buf[64] = {0};
    if (fd < 0) { printf("%s %d\n", what, errno); return; }
    int n = read(fd, buf, sizeof buf - 1);
    printf("%s read:%.*s\n", what, n > 0 ? n - 1 : 0, buf);    /* drop the newline */
    close(fd);
}
int main(int argc, char **argv) {
    const char *T = argv[1];                  /* T/secret is denied, T/ok/ allowed */
    char path[4096];
#define P(...) (snprintf(path, sizeof path, __VA_ARGS__), path)
    report("plain", open(P("%s/secret", T), O_RDONLY));
    report("symlink", open(P("%s/ok/abs-link", T), O_RDONLY));
    report("relative-symlink", open(P("%s/ok/rel-link", T), O_RDONLY));
    report("dotdot", open(P("%s/ok/../secret", T), O_RDONLY));
    int dfd = open(P("%s/ok", T), O_RDONLY | O_DIRECTORY);
    report("dirfd-dotdot", openat(dfd, "../secret", O_RDONLY));
    report("dirfd-symlink", openat(dfd, "abs-link", O_RDONLY));
    report("proc-self-root", open(P("/proc/self/root%s/secret", T), O_RDONLY));
    chdir(T);
    report("proc-pid-cwd", open(P("/proc/%d/cwd/secret", getpid()), O_RDONLY));
    report("cwd-relative", open("secret", O_RDONLY));
    report("hardlink", open(P("%s/ok/hard", T), O_RDONLY));
    int held = open(P("%s/ok/allowed", T), O_RDONLY);
    report("proc-fd-reopen-allowed", open(P("/proc/self/fd/%d", held), O_RDONLY));
    struct open_how how = {.flags = O_RDONLY};
    report("openat2", syscall(SYS_openat2, AT_FDCWD, P("%s/ok/../secret", T), &how, sizeof how));
    fflush(stdout);
    pid_t child = fork();                     /* x32 numbers: the filter may kill the caller */
    if (child == 0) { report("x32-openat", syscall(0x40000000 | 257, AT_FDCWD, P("%s/secret", T), O_RDONLY));
                      fflush(stdout); _exit(0); }
    int status;
    waitpid(child, &status, 0);
    if (WIFSIGNALED(status)) printf("x32-openat killed:%d\n", WTERMSIG(status));
    int i386 = -1;
    char *low = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_32BIT, -1, 0);
    snprintf(low, 4096, "%s/secret", T);       /* int $0x80 passes 32-bit pointers */
    __asm__ volatile ("int $0x80" : "=a"(i386) : "a"(295), "b"(-100), "c"(low), "d"(0) : "memory");
    if (i386 < 0) { errno = -i386; i386 = -1; }
    report("int80-openat", i386);
    return 0;
}
"""


@pytest.mark.usefixtures("landlock")
def test_every_alias_of_a_denied_file_is_refused(tmp_path):
    t = tmp_path
    (t / "ok").mkdir()
    (t / "secret").write_text("SECRET\n")
    (t / "ok" / "allowed").write_text("ALLOWED\n")
    (t / "ok" / "abs-link").symlink_to(t / "secret")
    (t / "ok" / "rel-link").symlink_to("../secret")
    os.link(t / "secret", t / "ok" / "hard")
    exe = cprog(ATTACK)
    kernel = dict(line.split(" ", 1) for line in
                  subprocess.run([exe, str(t)], capture_output=True, text=True).stdout.splitlines())
    fs = FsHandler([f"deny {t}/secret", "allow read /**"])
    policy = notify_policy(fs)
    policy.arches = ["x86_64", "i386"]
    code, out = run([exe, str(t)], fs, policy=policy)
    mine = dict(line.split(" ", 1) for line in out.splitlines())
    assert code == 0, out
    assert mine.pop("proc-fd-reopen-allowed") == kernel.pop("proc-fd-reopen-allowed") == "read:ALLOWED"
    # x32 is off in this kernel (ENOSYS); under sysgate's filter the caller is killed: never a file
    assert kernel.pop("x32-openat") == "38" and mine.pop("x32-openat") in ("38", "killed:31"), out
    assert set(kernel.values()) == {"read:SECRET"}, kernel
    # magic links other than the target's own fds are not followed: ELOOP, as documented
    expected = {name: "40" if name.startswith("proc-") else "13" for name in kernel}
    assert mine == expected, out


# Only the path decides here (no deny rule, so no inode is recorded): the plain absolute paths below
# go through symlinks (the last component, a directory on the way), which the fs handler's fast path
# for plain paths (sysgate.handlers.fs.Resolver.open_object) must never take for the real path.
PLAIN = r"""
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>
static void try(const char *name, const char *dir, const char *rel) {
    char path[4096];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    int fd = open(path, O_RDONLY);
    printf("%s open %d stat %d\n", name, fd < 0 ? errno : 0, stat(path, &st) ? errno : 0);
    if (fd >= 0) close(fd);
}
int main(int argc, char **argv) {
    try("plain", argv[1], "file");
    try("last-symlink", argv[1], "link");
    try("dir-symlink", argv[1], "dirlink/other");
    return 0;
}
"""


def test_plain_paths_through_symlinks_are_decided_by_the_real_path(tmp_path):
    allowed, other = tmp_path / "allowed", tmp_path / "other"
    allowed.mkdir()
    other.mkdir()
    (allowed / "file").write_text("a\n")
    (other / "other").write_text("o\n")
    (allowed / "link").symlink_to(other / "other")
    (allowed / "dirlink").symlink_to(other)
    exe = cprog(PLAIN)
    rules = [f"allow read {allowed}/**"] + [f"allow read {d}/**" for d in ("/usr", "/lib", "/lib64", "/etc")]
    code, out = run([exe, str(allowed)], FsHandler(rules))
    assert (code, out) == (0, "plain open 0 stat 0\nlast-symlink open 13 stat 13\ndir-symlink open 13 stat 13\n"), out
