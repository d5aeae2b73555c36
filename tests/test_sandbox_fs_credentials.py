"""Issue 11, attack 2: every open and change is decided with the target's own credentials
(fsuid, fsgid, supplementary groups and effective capabilities), exactly as the kernel would:
each case runs the same C program with and without sysgate and compares the answers."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import pytest

from support.cprog import cprog
from support.handlers import notify_policy, run
from sysgate.handlers.fs import FsHandler

# argv: MODE DIR; MODE: root | nocaps | user | group. Prints one "name errno" line per try.
PROBE = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
static const char *D;
static const char *p(const char *rel) { static char b[4][4096]; static int i; i = (i + 1) % 4;
    snprintf(b[i], 4096, "%s/%s", D, rel); return b[i]; }
static void try_open(const char *name, const char *rel, int flags) {
    int fd = open(p(rel), flags, 0644);
    printf("%s %d\n", name, fd < 0 ? errno : 0);
    if (fd >= 0) close(fd);
}
int main(int argc, char **argv) {
    const char *mode = argv[1];
    D = argv[2];
    if (!strcmp(mode, "nocaps")) {
        struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
        struct __user_cap_data_struct d[2];
        memset(d, 0, sizeof d);
        if (syscall(SYS_capset, &h, d)) { perror("capset"); return 1; }
    } else if (!strcmp(mode, "user") || !strcmp(mode, "group")) {
        gid_t g = 4242;
        if (setgroups(!strcmp(mode, "group"), &g) || setresgid(65534, 65534, 65534) || setresuid(65534, 65534, 65534)) {
            perror("drop"); return 1;
        }
    }
    try_open("nobody-0600", "nobody-0600", O_RDONLY);
    try_open("root-0600", "root-0600", O_RDONLY);
    try_open("group-0640", "group-0640", O_RDONLY);
    try_open("group-0640-write", "group-0640", O_WRONLY);
    try_open("create-in-nobody-0700", "nobody-dir/new", O_WRONLY | O_CREAT);
    try_open("create-in-root-0755", "root-dir/new", O_WRONLY | O_CREAT);
    printf("mkdir %d\n", mkdir(p("nobody-dir/sub"), 0755) ? errno : 0);
    printf("unlink %d\n", unlink(p("root-dir/keep")) ? errno : 0);
    printf("access-w %d\n", access(p("root-0600"), W_OK) ? errno : 0);
    return 0;
}
"""


@pytest.fixture
def base(needs_root):
    d = tempfile.mkdtemp(prefix="sysgate-creds-")
    os.chmod(d, 0o755)

    def make(name, mode, uid, gid):
        path = os.path.join(d, name)
        with open(path, "w") as fh:
            fh.write(name + "\n")
        os.chown(path, uid, gid)
        os.chmod(path, mode)

    make("nobody-0600", 0o600, 65534, 65534)
    make("root-0600", 0o600, 0, 0)
    make("group-0640", 0o640, 0, 4242)
    for name, uid, mode in (("nobody-dir", 65534, 0o700), ("root-dir", 0, 0o755)):
        os.mkdir(os.path.join(d, name))
        os.chown(os.path.join(d, name), uid, uid)
        os.chmod(os.path.join(d, name), mode)
    with open(os.path.join(d, "root-dir", "keep"), "w"):
        pass
    yield d
    shutil.rmtree(d)


def reset(d):
    for leftover in ("nobody-dir/new", "root-dir/new"):
        if os.path.exists(os.path.join(d, leftover)):
            os.unlink(os.path.join(d, leftover))
    if os.path.isdir(os.path.join(d, "nobody-dir", "sub")):
        os.rmdir(os.path.join(d, "nobody-dir", "sub"))
    if not os.path.exists(os.path.join(d, "root-dir", "keep")):
        open(os.path.join(d, "root-dir", "keep"), "w").close()


@pytest.mark.usefixtures("landlock")
@pytest.mark.parametrize("mode", ["root", "nocaps", "user", "group"])
def test_decisions_match_the_kernel(base, mode):
    exe = cprog(PROBE)
    reset(base)
    kernel = subprocess.run([exe, mode, base], capture_output=True, text=True)
    assert kernel.returncode == 0, kernel.stderr
    reset(base)
    code, out = run([exe, mode, base], FsHandler(["allow read /**", f"allow rw {base}/**"]))
    assert code == 0, out
    assert out == kernel.stdout, f"sysgate:\n{out}\nkernel:\n{kernel.stdout}"


def test_the_cases_differ(base):
    """The four identities really get different answers from the kernel (the comparison means something)."""
    exe = cprog(PROBE)
    seen = set()
    for mode in ("root", "nocaps", "user", "group"):
        reset(base)
        seen.add(subprocess.run([exe, mode, base], capture_output=True, text=True).stdout)
    assert len(seen) == 4


@pytest.mark.usefixtures("landlock")
def test_setpriv_without_capabilities_is_refused_a_foreign_0600_file(base):
    code, out = run(["setpriv", "--inh-caps=-all", "--bounding-set=-all", "cat", f"{base}/nobody-0600"],
                    FsHandler(["allow read /**"]))
    assert "nobody-0600" not in out.splitlines() and "Permission denied" in out, out


USERNS = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
int main(int argc, char **argv) {
    if (unshare(CLONE_NEWUSER)) { perror("unshare"); return 1; }
    int fd = open(argv[1], O_RDONLY);
    printf("open %d\n", fd < 0 ? errno : 0);
    return 0;
}
"""


@pytest.mark.usefixtures("landlock")
def test_a_target_in_another_user_namespace_is_refused(tmp_path, landlock):
    """Its ids and capabilities mean something else there: the supervisor cannot act as it (fail closed).
    With the Landlock wall, exact rules (``allow read /**``) take plain opens off the notify path
    (README "Landlock layer"): the kernel decides this open with the target's own credentials and
    Landlock's grants, so the answer is the kernel's."""
    public = tmp_path / "public"
    public.write_text("x\n")
    public.chmod(0o644)
    exe = cprog(USERNS)
    kernel = subprocess.run([exe, str(public)], capture_output=True, text=True)
    assert kernel.stdout == "open 0\n", kernel.stderr
    code, out = run([exe, str(public)], FsHandler(["allow read /**"]))
    assert out == (kernel.stdout if landlock == "on" else "open 13\n"), out


# Between two opens of one thread its credentials change (setfsuid, setgroups, capset), and two
# threads with different fsuids take turns: every open must be decided with the caller's ids *now*
# (the supervisor keeps each thread's status file open: see sysgate.kernel.procfs.ThreadFiles).
CHANGES = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
static const char *D;
static void try_open(const char *name, const char *rel) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", D, rel);
    int fd = open(path, O_RDONLY);
    printf("%s %d\n", name, fd < 0 ? errno : 0);
    fflush(stdout);
    if (fd >= 0) close(fd);
}
static void caps(unsigned effective) {
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct d[2];
    syscall(SYS_capget, &h, d);
    d[0].effective = effective ? d[0].permitted : 0;
    d[1].effective = effective ? d[1].permitted : 0;
    syscall(SYS_capset, &h, d);
}
static pthread_barrier_t turn;
static void *other(void *arg) {         /* a second thread of another fsuid (setfsuid is per thread) */
    syscall(SYS_setfsuid, 65534);
    for (int i = 0; i < 3; i++) {
        pthread_barrier_wait(&turn);
        try_open("thread-root-0600", "root-0600");
        pthread_barrier_wait(&turn);
    }
    return arg;
}
int main(int argc, char **argv) {
    D = argv[1];
    gid_t g = 4242;
    try_open("root-0600", "root-0600");
    syscall(SYS_setfsuid, 65534);
    try_open("fsuid-root-0600", "root-0600");
    try_open("fsuid-nobody-0600", "nobody-0600");
    syscall(SYS_setfsgid, 65534);
    try_open("fsgid-group-0640", "group-0640");
    syscall(SYS_setgroups, 1, &g);
    try_open("groups-group-0640", "group-0640");
    syscall(SYS_setgroups, 0, &g);
    try_open("nogroups-group-0640", "group-0640");
    syscall(SYS_setfsuid, 0);
    syscall(SYS_setfsgid, 0);
    try_open("back-nobody-0600", "nobody-0600");
    caps(0);
    try_open("nocaps-nobody-0600", "nobody-0600");
    caps(1);
    try_open("caps-nobody-0600", "nobody-0600");
    pthread_t t;
    pthread_barrier_init(&turn, NULL, 2);
    pthread_create(&t, NULL, other, NULL);
    for (int i = 0; i < 3; i++) {
        try_open("main-root-0600", "root-0600");
        pthread_barrier_wait(&turn);
        pthread_barrier_wait(&turn);
    }
    pthread_join(t, NULL);
    return 0;
}
"""


def test_credentials_changed_between_calls_decide_the_next_call(base):
    exe = cprog(CHANGES)
    kernel = subprocess.run([exe, base], capture_output=True, text=True)
    assert kernel.returncode == 0, kernel.stderr
    assert len(set(kernel.stdout.split())) > 3, kernel.stdout      # the changes change the answers
    code, out = run([exe, base], FsHandler(["allow read /**", f"allow rw {base}/**"]))
    assert code == 0, out
    assert out == kernel.stdout, f"sysgate:\n{out}\nkernel:\n{kernel.stdout}"


# Between two calls of one thread its root (chroot, and back through a kept fd), its cwd (chdir) and
# its user namespace (unshare) change: each call must be decided with them as they are *now* (the
# supervisor keeps each thread's /proc/TID directory open, sysgate.kernel.procfs.ThreadFiles, and
# resolves a thread whose root is its own from its own root fd, sysgate.handlers.fs.Resolver).
PLACES = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>
static void try(const char *name, const char *path) {
    struct stat st;
    int fd = open(path, O_RDONLY);
    printf("%s open %d stat %d\n", name, fd < 0 ? errno : 0, stat(path, &st) ? errno : 0);
    fflush(stdout);
    if (fd >= 0) close(fd);
}
int main(int argc, char **argv) {
    char jail[4096], outside[4096], x[4096], y[4096];
    snprintf(jail, sizeof jail, "%s/jail", argv[1]);
    snprintf(outside, sizeof outside, "%s/outside", argv[1]);
    snprintf(x, sizeof x, "%s/x", argv[1]);
    snprintf(y, sizeof y, "%s/y", argv[1]);
    try("host-outside", outside);
    try("host-inner", "/inner");
    int old = open("/", O_PATH | O_DIRECTORY);
    if (chroot(jail) || chdir("/")) { perror("chroot"); return 1; }
    try("jail-outside", outside);
    try("jail-inner", "/inner");
    if (fchdir(old) || chroot(".")) { perror("back"); return 1; }
    try("back-outside", outside);
    try("back-inner", "/inner");
    if (chdir(x)) { perror("chdir"); return 1; }
    try("cwd-x", "only-in-x");
    if (chdir(y)) { perror("chdir"); return 1; }
    try("cwd-y", "only-in-x");
    if (unshare(CLONE_NEWUSER)) { perror("unshare"); return 1; }
    try("userns-outside", outside);
    return 0;
}
"""


def test_root_cwd_and_user_namespace_changed_between_calls_decide_the_next_call(needs_root, tmp_path):
    for name in ("jail", "x", "y"):
        (tmp_path / name).mkdir()
    (tmp_path / "outside").write_text("o\n")
    (tmp_path / "jail" / "inner").write_text("i\n")
    (tmp_path / "x" / "only-in-x").write_text("x\n")
    exe = cprog(PLACES)
    kernel = subprocess.run([exe, str(tmp_path)], capture_output=True, text=True)
    assert kernel.returncode == 0, kernel.stderr
    expected = kernel.stdout.replace("userns-outside open 0 stat 0", "userns-outside open 13 stat 13")
    assert expected != kernel.stdout and len(set(expected.split())) > 8, kernel.stdout   # the changes matter
    handler = FsHandler(["allow read /**"])
    policy = notify_policy(handler)      # chroot let through (the fs handler refuses it): a target may have
    policy.rules = [r for r in policy.rules if r.syscall != "chroot"]     # been started in another root
    code, out = run([exe, str(tmp_path)], handler, policy=policy)
    assert code == 0, out
    assert out == expected, f"sysgate:\n{out}\nexpected (the kernel's, refused in another user namespace):\n{expected}"
