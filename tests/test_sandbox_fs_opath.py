"""Issue 11, bug 4: O_PATH opens failed with EBADF (seccomp's ADDFD cannot install an O_PATH
file) and O_PATH fds could not be reopened (pidfd_getfd cannot fetch them). Both now work as
with the kernel alone, and the rules still apply."""
from __future__ import annotations

import subprocess

import pytest

from support.cprog import cprog
from support.handlers import run
from sysgate.handlers.fs import FsHandler

PROGRAM = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
static void show(const char *what, int fd) {
    char buf[64] = {0};
    if (fd < 0) { printf("%s error %d\n", what, errno); return; }
    int n = read(fd, buf, sizeof buf - 1);
    printf("%s read:%.*s", what, n > 0 ? n : 0, buf);
    close(fd);
}
static void reopen(const char *what, int fd) {
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    show(what, open(path, O_RDONLY));
}
int main(int argc, char **argv) {
    const char *dir = argv[1], *file = argv[2], *denied = argv[3];
    struct stat st, st2;
    int fd = open(file, O_PATH);
    printf("open %d\n", fd < 0 ? errno : 0);
    printf("fstat %d\n", fstat(fd, &st) ? errno : (int)(st.st_size));
    printf("fstatat-empty %d same-inode %d\n", fstatat(fd, "", &st2, AT_EMPTY_PATH) ? errno : 0,
           st.st_ino == st2.st_ino);
    int e = openat(fd, "", O_RDONLY);
    printf("openat-empty %d\n", e < 0 ? errno : 0);
    reopen("proc-reopen", fd);
    int dfd = open(dir, O_PATH | O_DIRECTORY);
    printf("dir %d\n", dfd < 0 ? errno : 0);
    show("dirfd-openat", openat(dfd, "allowed.txt", O_RDONLY));
    int tree = syscall(SYS_open_tree, AT_FDCWD, file, O_CLOEXEC);   /* an O_PATH fd the kernel made */
    reopen("open_tree-reopen", tree);
    char fresh[4096];
    snprintf(fresh, sizeof fresh, "%s/fresh", dir);
    int c = open(fresh, O_PATH | O_CREAT | O_TRUNC | O_WRONLY, 0644);   /* O_PATH ignores the rest */
    printf("opath-creat %d exists %d\n", c < 0 ? errno : 0, access(fresh, F_OK) == 0);
    int d = open(denied, O_PATH);
    printf("denied-open %d\n", d < 0 ? errno : 0);
    int dtree = syscall(SYS_open_tree, AT_FDCWD, denied, O_CLOEXEC);
    printf("denied-open_tree %d\n", dtree < 0 ? errno : 0);
    if (dtree >= 0) reopen("denied-open_tree-reopen", dtree);
    return 0;
}
"""


@pytest.mark.usefixtures("landlock")
def test_o_path_open_fstat_and_reopen_match_the_kernel(tmp_path):
    d = tmp_path / "ok"
    d.mkdir()
    (d / "allowed.txt").write_text("ALLOWED\n")
    (tmp_path / "denied.txt").write_text("SECRET\n")
    argv = [cprog(PROGRAM), str(d), str(d / "allowed.txt"), str(tmp_path / "denied.txt")]
    kernel = subprocess.run(argv, capture_output=True, text=True).stdout.splitlines()
    code, out = run(argv, FsHandler([f"deny {tmp_path}/denied.txt", f"allow rw {d}/**", "allow read /**"]))
    mine = out.splitlines()
    assert code == 0, out
    assert "open 0" in mine and "proc-reopen read:ALLOWED" in mine and "open_tree-reopen read:ALLOWED" in mine, out
    same = [line for line in kernel if not line.startswith("denied")]
    assert [line for line in mine if not line.startswith("denied")] == same, (out, kernel)
    assert "denied-open 0" in kernel and "denied-open_tree-reopen read:SECRET" in kernel
    assert "opath-creat 2 exists 0" in mine, out         # O_PATH|O_CREAT creates nothing
    # open_tree without OPEN_TREE_CLONE is served as an O_PATH open: the rules refuse it at once
    assert "denied-open 13" in mine and "denied-open_tree 13" in mine and "SECRET" not in out, out
