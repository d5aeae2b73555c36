/* Every path-taking metadata call, with its result: run the same binary with and without sysgate. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <unistd.h>
#include <dirent.h>

#define NR_fchmodat2 452
#define NR_setxattrat 463
#define NR_getxattrat 464
#define NR_listxattrat 465
#define NR_removexattrat 466
struct xargs { uint64_t value; uint32_t size; uint32_t flags; };
struct ts64 { int64_t sec; int64_t nsec; };

static void T(const char *name, long r) {
    printf("%-26s %ld %s\n", name, r, r < 0 ? strerrorname_np(errno) : "-");
    errno = 0;
}
static void show(const char *path) {
    struct stat st;
    if (lstat(path, &st) == 0)
        printf("  %s mode=%o uid=%d gid=%d size=%lld mtime=%lld.%09ld atime=%lld\n", path, st.st_mode & 07777,
               (int)st.st_uid, (int)st.st_gid, (long long)st.st_size,
               st.st_mtim.tv_sec < 100000000 ? (long long)st.st_mtim.tv_sec : -1LL,
               st.st_mtim.tv_sec < 100000000 ? (long)st.st_mtim.tv_nsec : -1L,
               st.st_atim.tv_sec < 100000000 ? (long long)st.st_atim.tv_sec : -1LL);
    else
        printf("  %s missing %s\n", path, strerrorname_np(errno));
}

int main(int argc, char **argv) {
    char buf[256];
    T("chdir", syscall(SYS_chdir, argv[1]));
    /* chmod family */
    T("chmod", syscall(SYS_chmod, "f", 0600)); show("f");
    T("fchmodat", syscall(SYS_fchmodat, AT_FDCWD, "f", 04640)); show("f");
    T("fchmodat2 nofollow lnk", syscall(NR_fchmodat2, AT_FDCWD, "lnk", 0644, AT_SYMLINK_NOFOLLOW));
    T("fchmodat2 badflags", syscall(NR_fchmodat2, AT_FDCWD, "f", 0644, 0x8));
    T("fchmodat2 follow lnk", syscall(NR_fchmodat2, AT_FDCWD, "lnk", 0604, 0)); show("f");
    T("chmod missing", syscall(SYS_chmod, "nope", 0600));
    T("chmod notdir", syscall(SYS_chmod, "f/x", 0600));
    T("chmod efault", syscall(SYS_chmod, (char *)1, 0600));
    T("chmod empty", syscall(SYS_chmod, "", 0600));
    /* chown family (32-bit ids natively; i386 chown is the 16-bit one) */
    T("chown", syscall(SYS_chown, "f", 1234, -1)); show("f");
    T("lchown lnk", syscall(SYS_lchown, "lnk", 77, 88)); show("lnk"); show("f");
    T("fchownat", syscall(SYS_fchownat, AT_FDCWD, "f", -1, 4321, 0)); show("f");
    T("fchownat badflags", syscall(SYS_fchownat, AT_FDCWD, "f", 1, 1, 0x2));
#ifdef __i386__
    T("chown16", syscall(SYS_chown, "f", 0xFFFF, 0x1234)); show("f");
    T("chown32", syscall(SYS_chown32, "f", 70000, 0xFFFF)); show("f");
    T("lchown32", syscall(SYS_lchown32, "lnk", 70001, 70002)); show("lnk");
#endif
    int dirfd = open("dir", O_RDONLY | O_DIRECTORY);
    T("fchownat empty_path", syscall(SYS_fchownat, dirfd, "", 9, 9, AT_EMPTY_PATH)); show("dir");
    /* xattrs */
    T("setxattr", syscall(SYS_setxattr, "f", "user.a", "value", 5, 0));
    T("setxattr create exists", syscall(SYS_setxattr, "f", "user.a", "v", 1, 1));
    T("setxattr replace missing", syscall(SYS_setxattr, "f", "user.zz", "v", 1, 2));
    T("setxattr badflags", syscall(SYS_setxattr, "f", "user.a", "v", 1, 4));
    T("setxattr empty name", syscall(SYS_setxattr, "f", "", "v", 1, 0));
    char longname[400];
    memset(longname, 'x', sizeof longname); longname[sizeof longname - 1] = 0;
    T("setxattr long name", syscall(SYS_setxattr, "f", longname, "v", 1, 0));
    memcpy(longname, "user.", 5); longname[255] = 0;
    T("setxattr name 255", syscall(SYS_setxattr, "f", longname, "v", 1, 0));
    longname[255] = 'x'; longname[256] = 0;
    T("setxattr name 256", syscall(SYS_setxattr, "f", longname, "v", 1, 0));
    T("setxattr e2big", syscall(SYS_setxattr, "f", "user.b", "v", 70000, 0));
    T("setxattr efault value", syscall(SYS_setxattr, "f", "user.b", (char *)1, 4, 0));
    T("lsetxattr symlink user", syscall(SYS_lsetxattr, "lnk", "user.b", "v", 1, 0));
    T("setxattr via link", syscall(SYS_setxattr, "lnk", "user.b", "bee", 3, 0));
    T("setxattr trusted", syscall(SYS_setxattr, "f", "trusted.t", "tt", 2, 0));
    T("getxattr size0", syscall(SYS_getxattr, "f", "user.a", NULL, 0));
    T("getxattr small", syscall(SYS_getxattr, "f", "user.a", buf, 2));
    memset(buf, 0, sizeof buf);
    T("getxattr", syscall(SYS_getxattr, "f", "user.a", buf, sizeof buf)); printf("  value=%s\n", buf);
    T("getxattr missing", syscall(SYS_getxattr, "f", "user.none", buf, sizeof buf));
    T("getxattr efault", syscall(SYS_getxattr, "f", "user.a", (char *)1, 100));
    T("lgetxattr lnk", syscall(SYS_lgetxattr, "lnk", "user.b", buf, sizeof buf));
    T("getxattr trusted", syscall(SYS_getxattr, "f", "trusted.t", buf, sizeof buf));
    long n = syscall(SYS_listxattr, "f", NULL, 0);
    T("listxattr size0", n);
    memset(buf, 0, sizeof buf);
    n = syscall(SYS_listxattr, "f", buf, sizeof buf); T("listxattr", n);
    for (char *p = buf; p < buf + (n > 0 ? n : 0); p += strlen(p) + 1) printf("  name=%s\n", p);
    T("listxattr small", syscall(SYS_listxattr, "f", buf, 3));
    T("llistxattr lnk", syscall(SYS_llistxattr, "lnk", buf, sizeof buf));
    T("removexattr", syscall(SYS_removexattr, "f", "user.b"));
    T("removexattr again", syscall(SYS_removexattr, "f", "user.b"));
    T("lremovexattr lnk", syscall(SYS_lremovexattr, "lnk", "user.a"));
    T("removexattr trusted", syscall(SYS_removexattr, "f", "trusted.t"));
    struct xargs xa = { (uintptr_t)"at-value", 8, 0 };
    T("setxattrat", syscall(NR_setxattrat, AT_FDCWD, "f", 0, "user.c", &xa, sizeof xa));
    T("setxattrat empty_path", syscall(NR_setxattrat, dirfd, "", AT_EMPTY_PATH, "user.d", &xa, sizeof xa));
    T("setxattrat badsize", syscall(NR_setxattrat, AT_FDCWD, "f", 0, "user.c", &xa, 8));
    T("setxattrat badat", syscall(NR_setxattrat, AT_FDCWD, "f", 0x2, "user.c", &xa, sizeof xa));
    memset(buf, 0, sizeof buf);
    struct xargs xg = { (uintptr_t)buf, sizeof buf, 0 };
    T("getxattrat", syscall(NR_getxattrat, AT_FDCWD, "f", 0, "user.c", &xg, sizeof xg)); printf("  value=%s\n", buf);
    xg.flags = 1;
    T("getxattrat flags", syscall(NR_getxattrat, AT_FDCWD, "f", 0, "user.c", &xg, sizeof xg));
    T("listxattrat", syscall(NR_listxattrat, dirfd, "", AT_EMPTY_PATH, buf, sizeof buf)); printf("  first=%s\n", buf);
    T("removexattrat", syscall(NR_removexattrat, AT_FDCWD, "f", 0, "user.c"));
    /* truncate */
    T("truncate", syscall(SYS_truncate, "f", 3)); show("f");
    T("truncate dir", syscall(SYS_truncate, "dir", 0));
    T("truncate negative", syscall(SYS_truncate, "f", -1L));
    T("truncate missing", syscall(SYS_truncate, "nope", 0));
    T("truncate fifo", syscall(SYS_truncate, "fifo0", 0));
#ifdef __i386__
    T("truncate64", syscall(SYS_truncate64, "f", 0x0, 0x1)); show("f");   /* 4 GiB: the high word */
    T("truncate64 small", syscall(SYS_truncate64, "f", 5, 0)); show("f");
#endif
    /* statfs */
    {
#ifdef __i386__
        struct { uint32_t type, bsize, blocks, bfree, bavail, files, ffree; int32_t fsid[2];
                 uint32_t namelen, frsize, flags, spare[4]; } s;
        struct __attribute__((packed)) { uint32_t type, bsize; uint64_t blocks, bfree, bavail, files, ffree;
                 int32_t fsid[2]; uint32_t namelen, frsize, flags, spare[4]; } s64;
        memset(&s, 0, sizeof s);
        long r = syscall(SYS_statfs, "f", &s); T("statfs", r);
        if (r == 0 || errno == 0) printf("  type=%x bsize=%u namelen=%u flags=%x fsid=%d\n", s.type, s.bsize, s.namelen, s.flags, s.fsid[0] != 0);
        printf("  size64=%d\n", (int)sizeof s64);
        r = syscall(SYS_statfs64, "f", sizeof s64, &s64); T("statfs64", r);
        printf("  type=%x bsize=%u namelen=%u flags=%x blocks=%d\n", s64.type, s64.bsize, s64.namelen, s64.flags, s64.blocks > 0);
        T("statfs64 badsize", syscall(SYS_statfs64, "f", 88, &s64));
#else
        struct { long type, bsize, blocks, bfree, bavail, files, ffree; int fsid[2];
                 long namelen, frsize, flags, spare[4]; } s;
        long r = syscall(SYS_statfs, "f", &s); T("statfs", r);
        printf("  type=%lx bsize=%ld namelen=%ld flags=%lx\n", s.type, s.bsize, s.namelen, s.flags);
#endif
        T("statfs efault", syscall(SYS_statfs, "f", (void *)1));
        T("statfs missing", syscall(SYS_statfs, "nope", &s));
    }
    /* timestamps: the ABI's own long (time_t) */
    {
        long ub[2] = { 1000, 2000 };
        T("utime", syscall(SYS_utime, "f", ub)); show("f");
        long tv[4] = { 3000, 5, 4000, 999999 };
        T("utimes", syscall(SYS_utimes, "f", tv)); show("f");
        tv[1] = 1000000;
        T("utimes badusec", syscall(SYS_utimes, "f", tv));
        tv[1] = 1;
        T("futimesat", syscall(SYS_futimesat, AT_FDCWD, "f", tv)); show("f");
        long ts[4] = { 5000, UTIME_OMIT, 6000, 123 };
        T("utimensat", syscall(SYS_utimensat, AT_FDCWD, "f", ts, 0)); show("f");
        ts[3] = 1000000000;
        T("utimensat badnsec", syscall(SYS_utimensat, AT_FDCWD, "f", ts, 0));
        ts[1] = ts[3] = UTIME_OMIT;
        T("utimensat omit missing", syscall(SYS_utimensat, AT_FDCWD, "nope", ts, 0));
        ts[1] = 0; ts[3] = 7;
        T("utimensat lnk nofollow", syscall(SYS_utimensat, AT_FDCWD, "lnk", ts, AT_SYMLINK_NOFOLLOW)); show("lnk");
        T("utimensat badflags", syscall(SYS_utimensat, AT_FDCWD, "f", ts, 0x2));
        T("utimensat null path", syscall(SYS_utimensat, AT_FDCWD, NULL, ts, 0));
        int ffd = open("f", O_RDONLY);
        ts[0] = 7000;
        T("utimensat fd null", syscall(SYS_utimensat, ffd, NULL, ts, 0)); show("f");
        T("utimensat fd null flags", syscall(SYS_utimensat, ffd, NULL, ts, AT_SYMLINK_NOFOLLOW));
        T("utimensat efault", syscall(SYS_utimensat, AT_FDCWD, "f", (void *)1, 0));
        T("utimensat missing", syscall(SYS_utimensat, AT_FDCWD, "nope", ts, 0));
        close(ffd);
#ifdef __i386__
        struct ts64 t64[2] = { { 86400 * 2, 0xdeadbeef00000005LL }, { 8000, 9 } };
        T("utimensat_time64", syscall(SYS_utimensat_time64, AT_FDCWD, "f", t64, 0)); show("f");
#endif
    }
    /* mknod: files, FIFOs, sockets */
    T("mknod fifo", syscall(SYS_mknodat, AT_FDCWD, "fifo", S_IFIFO | 0666, 0)); show("fifo");
    T("mknod reg", syscall(SYS_mknodat, AT_FDCWD, "reg", 0640, 0)); show("reg");
    T("mknod sock", syscall(SYS_mknodat, AT_FDCWD, "sock", S_IFSOCK | 0600, 0)); show("sock");
    T("mknod exists", syscall(SYS_mknodat, AT_FDCWD, "reg", 0640, 0));
    T("mknod dir", syscall(SYS_mknodat, AT_FDCWD, "d2", S_IFDIR | 0755, 0));
    T("mknod badtype", syscall(SYS_mknodat, AT_FDCWD, "bad", 0170000 & 0110000, 0));
#ifdef SYS_mknod
    T("mknod old", syscall(SYS_mknod, "dir/old", S_IFIFO | 0600, 0)); show("dir/old");
#endif
    /* getdents: sorted names */
    {
        int d = open(".", O_RDONLY | O_DIRECTORY);
        char dbuf[4096];
        long got = syscall(SYS_getdents64, d, dbuf, sizeof dbuf);
        T("getdents64", got > 0 ? 1 : got);
        int entries = 0;
        for (long off = 0; off < got; off += ((struct dirent64 *)(dbuf + off))->d_reclen) entries++;
        printf("  entries=%d\n", entries);
        T("getdents64 again (end)", syscall(SYS_getdents64, d, dbuf, sizeof dbuf));
        lseek(d, 0, SEEK_SET);
        T("getdents64 tiny", syscall(SYS_getdents64, d, dbuf, 8));
        T("getdents64 efault", syscall(SYS_getdents64, d, (void *)1, 4096));
        got = syscall(SYS_getdents64, d, dbuf, sizeof dbuf);   /* EFAULT must not lose entries */
        entries = 0;
        for (long off = 0; off < got; off += ((struct dirent64 *)(dbuf + off))->d_reclen) entries++;
        printf("  entries after efault=%d\n", entries);
        int f = open("f", O_RDONLY);
        T("getdents64 notdir", syscall(SYS_getdents64, f, dbuf, sizeof dbuf));
        T("getdents64 badfd", syscall(SYS_getdents64, 999, dbuf, sizeof dbuf));
#ifdef SYS_getdents
        lseek(d, 0, SEEK_SET);
        T("getdents", syscall(SYS_getdents, d, dbuf, sizeof dbuf) > 0);
#endif
        close(f); close(d);
    }
    /* file attributes by path (6.17) */
    {
        struct { uint64_t xflags; uint32_t extsize, nextents, projid, cowextsize; } fa;
        char big[64];
        memset(&fa, 0, sizeof fa);
        T("file_getattr", syscall(468, AT_FDCWD, "f", &fa, sizeof fa, 0)); printf("  xflags=%llx\n", (unsigned long long)fa.xflags);
        fa.xflags |= 0x80;   /* FS_XFLAG_NODUMP */
        T("file_setattr", syscall(469, AT_FDCWD, "f", &fa, sizeof fa, 0));
        memset(big, 0x55, sizeof big);
        T("file_getattr big", syscall(468, AT_FDCWD, "f", big, sizeof big, 0));
        printf("  xflags=%llx tail=%d\n", (unsigned long long)*(uint64_t *)big, big[40] + big[63]);
        T("file_getattr small", syscall(468, AT_FDCWD, "f", big, 16, 0));
        big[40] = 1;
        T("file_setattr e2big", syscall(469, AT_FDCWD, "f", big, sizeof big, 0));
        T("file_getattr badflags", syscall(468, AT_FDCWD, "f", &fa, sizeof fa, 0x2));
        T("file_getattr lnk nofollow", syscall(468, AT_FDCWD, "lnk", &fa, sizeof fa, AT_SYMLINK_NOFOLLOW));
        T("file_getattr missing", syscall(468, AT_FDCWD, "nope", &fa, sizeof fa, 0));
        T("file_getattr empty_path", syscall(468, dirfd, "", &fa, sizeof fa, AT_EMPTY_PATH));
    }
    /* inotify on the target's own instance */
    {
        int in = inotify_init1(IN_NONBLOCK);
        int wd = syscall(SYS_inotify_add_watch, in, "f", IN_MODIFY | IN_ATTRIB);
        T("inotify_add_watch", wd > 0 ? 1 : wd);
        int again = syscall(SYS_inotify_add_watch, in, "lnk", IN_MODIFY);
        T("inotify same inode same wd", again == wd);
        T("inotify dont_follow lnk", syscall(SYS_inotify_add_watch, in, "lnk", IN_MODIFY | IN_DONT_FOLLOW) != wd);
        T("inotify onlydir file", syscall(SYS_inotify_add_watch, in, "f", IN_MODIFY | IN_ONLYDIR));
        T("inotify badmask", syscall(SYS_inotify_add_watch, in, "f", 0));
        T("inotify not inotify", syscall(SYS_inotify_add_watch, dirfd, "f", IN_MODIFY));
        T("inotify missing", syscall(SYS_inotify_add_watch, in, "nope", IN_MODIFY));
        int w = open("f", O_WRONLY | O_APPEND); write(w, "x", 1); close(w);
        struct inotify_event ev[4];
        long r = read(in, ev, sizeof ev);
        printf("  event=%d mask=%x\n", r > 0, r > 0 ? ev[0].mask : 0);
    }
    return 0;
}
