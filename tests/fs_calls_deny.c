/* Attacks on the fs rules through every path-taking call: argv[1] a read-only file, argv[2] a
 * denied file, argv[3] an allowed (rw) directory, argv[4] a symlink there to the denied file,
 * argv[5] an fd number of a denied directory inherited from before the sandbox; with argv[6], also
 * the calls that change the mount table or the root (not run natively). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fanotify.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

struct xargs { uint64_t value; uint32_t size; uint32_t flags; };
static void T(const char *what, const char *name, long r) {
    printf("%s %s %s\n", what, name, r < 0 ? strerrorname_np(errno) : "ok");
    errno = 0;
}

static void writes(const char *what, const char *p) {
    long tv[4] = { 1, 0, 2, 0 };
    struct xargs xa = { (uintptr_t)"v", 1, 0 };
    T(what, "chmod", syscall(SYS_chmod, p, 0777));
    T(what, "fchmodat2", syscall(452, AT_FDCWD, p, 0777, 0));
    T(what, "chown", syscall(SYS_chown, p, 1, 1));
    T(what, "fchownat", syscall(SYS_fchownat, AT_FDCWD, p, 1, 1, 0));
    T(what, "setxattr", syscall(SYS_setxattr, p, "user.x", "v", 1, 0));
    T(what, "removexattr", syscall(SYS_removexattr, p, "user.keep"));
    T(what, "setxattrat", syscall(463, AT_FDCWD, p, 0, "user.x", &xa, sizeof xa));
    T(what, "removexattrat", syscall(466, AT_FDCWD, p, 0, "user.keep"));
    T(what, "truncate", syscall(SYS_truncate, p, 0L));
    char fa[24] = {0};
    T(what, "file_setattr", syscall(469, AT_FDCWD, p, fa, sizeof fa, 0));
    T(what, "utimes", syscall(SYS_utimes, p, tv));
    T(what, "utimensat", syscall(SYS_utimensat, AT_FDCWD, p, NULL, 0));
    T(what, "futimesat", syscall(SYS_futimesat, AT_FDCWD, p, NULL));
#ifdef __i386__
    T(what, "chown32", syscall(SYS_chown32, p, 1, 1));
    T(what, "truncate64", syscall(SYS_truncate64, p, 0, 0));
#endif
}

static void reads(const char *what, const char *p) {
    char buf[256];
    struct xargs xg = { (uintptr_t)buf, sizeof buf, 0 };
    T(what, "getxattr", syscall(SYS_getxattr, p, "user.keep", buf, sizeof buf));
    T(what, "listxattr", syscall(SYS_listxattr, p, buf, sizeof buf));
    T(what, "getxattrat", syscall(464, AT_FDCWD, p, 0, "user.keep", &xg, sizeof xg));
    T(what, "listxattrat", syscall(465, AT_FDCWD, p, 0, buf, sizeof buf));
    T(what, "statfs", syscall(SYS_statfs, p, buf));
    T(what, "file_getattr", syscall(468, AT_FDCWD, p, buf, 24, 0));
    int in = inotify_init1(0);
    T(what, "inotify_add_watch", syscall(SYS_inotify_add_watch, in, p, IN_ALL_EVENTS));
    int fan = fanotify_init(FAN_CLASS_NOTIF, O_RDONLY);
    T(what, "fanotify_mark", syscall(SYS_fanotify_mark, fan, FAN_MARK_ADD, (uint64_t)FAN_OPEN, AT_FDCWD, p));
}

int main(int argc, char **argv) {
    const char *ro = argv[1], *secret = argv[2], *rw = argv[3], *link = argv[4];
    int inherited = atoi(argv[5]);
    char path[4096];
    writes("ro", ro);
    reads("ro", ro);
    writes("secret", secret);
    reads("secret", secret);
    writes("link", link);
    reads("link", link);
    snprintf(path, sizeof path, "%s/dev", rw);
    T("rw", "mknod chr", syscall(SYS_mknodat, AT_FDCWD, path, S_IFCHR | 0666, makedev(1, 3)));
    snprintf(path, sizeof path, "%s/blk", rw);
    T("rw", "mknod blk", syscall(SYS_mknodat, AT_FDCWD, path, S_IFBLK | 0666, makedev(7, 0)));
    snprintf(path, sizeof path, "%s/fifo", rw);
    T("rw", "mknod fifo", syscall(SYS_mknodat, AT_FDCWD, path, S_IFIFO | 0666, 0));
    snprintf(path, sizeof path, "%s.fifo", secret);
    T("secret", "mknod fifo", syscall(SYS_mknodat, AT_FDCWD, path, S_IFIFO | 0666, 0));
    int fan = fanotify_init(FAN_CLASS_NOTIF, O_RDONLY);
    T("rw", "fanotify mount mark", syscall(SYS_fanotify_mark, fan, FAN_MARK_ADD | FAN_MARK_MOUNT,
                                            (uint64_t)FAN_OPEN, AT_FDCWD, rw));
    T("rw", "fanotify inode mark", syscall(SYS_fanotify_mark, fan, FAN_MARK_ADD, (uint64_t)FAN_OPEN, AT_FDCWD, rw));
    struct { unsigned int bytes; int type; unsigned char h[128]; } fh = { 128 };
    int mnt;
    T("rw", "name_to_handle_at", syscall(SYS_name_to_handle_at, AT_FDCWD, rw, &fh, &mnt, 0));
    T("rw", "open_by_handle_at", syscall(SYS_open_by_handle_at, AT_FDCWD, &fh, O_RDONLY));
    char dbuf[4096];
    T("inherited", "getdents64", syscall(SYS_getdents64, inherited, dbuf, sizeof dbuf));
    if (argc > 6) {   /* only under sysgate: natively, as root, these would change this machine */
        T("rw", "open_tree clone", syscall(428, AT_FDCWD, rw, 1));
        T("rw", "open_tree", syscall(428, AT_FDCWD, rw, 0));
        T("rw", "chroot", syscall(SYS_chroot, rw));
        T("rw", "mount bind", syscall(SYS_mount, secret, path, NULL, 4096 /* MS_BIND */, NULL));
        T("rw", "umount2", syscall(SYS_umount2, rw, 0));
        T("rw", "pivot_root", syscall(SYS_pivot_root, rw, rw));
    }
    return 0;
}
