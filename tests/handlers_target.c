/* Targets for the handler tests: each mode makes raw syscalls (syscall(2), never the vDSO). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/time.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

static char path[256];
static char path_a[256], path_b[256];
static volatile int stop;

static void *flipper(void *unused) {
    size_t la = strlen(path_a) + 1, lb = strlen(path_b) + 1;
    (void)unused;
    while (!stop) {
        memcpy(path, path_a, la);
        memcpy(path, path_b, lb);
    }
    return NULL;
}

/* race ALLOWED DENIED N: one thread flips the path buffer, this one opens it N times.
   Prints: opened-allowed secret-read denied other */
static int race(const char *a, const char *b, int n) {
    pthread_t th;
    long ok = 0, secret = 0, denied = 0, other = 0;
    strcpy(path_a, a);
    strcpy(path_b, b);
    strcpy(path, a);
    pthread_create(&th, NULL, flipper, NULL);
    for (int i = 0; i < n; i++) {
        char data[64] = {0};
        long fd = syscall(SYS_openat, AT_FDCWD, path, O_RDONLY);
        if (fd >= 0) {
            if (read(fd, data, sizeof data - 1) < 0) other++;
            else if (strstr(data, "SECRET")) secret++;
            else if (strstr(data, "ALLOWED")) ok++;
            else other++;
            close(fd);
        } else if (errno == EACCES) denied++;
        else other++;
    }
    stop = 1;
    pthread_join(th, NULL);
    printf("%ld %ld %ld %ld\n", ok, secret, denied, other);
    return 0;
}

static int clocks(void) {
    struct timespec a, b;
    struct timeval tv;
    long t1 = syscall(SYS_clock_gettime, CLOCK_REALTIME, &a);
    long t2 = syscall(SYS_clock_gettime, CLOCK_MONOTONIC, &b);
    long t3 = syscall(SYS_gettimeofday, &tv, NULL);
    time_t tt = 0;
    long t4 = syscall(SYS_time, &tt);
    printf("%ld %lld.%09ld %ld %lld.%09ld %ld %lld.%06ld %ld %lld\n", t1, (long long)a.tv_sec, a.tv_nsec, t2,
           (long long)b.tv_sec, b.tv_nsec, t3, (long long)tv.tv_sec, (long)tv.tv_usec, t4, (long long)tt);
    return 0;
}

static int random_bytes(int n) {
    unsigned char buf[256];
    long got = syscall(SYS_getrandom, buf, n, 0);
    printf("%ld ", got);
    for (long i = 0; i < got; i++) printf("%02x", buf[i]);
    printf("\n");
    return 0;
}

static int names(void) {
    struct utsname u;
    long r = syscall(SYS_uname, &u);
    long s = syscall(SYS_sethostname, "evil", 4);
    int e = errno;
    printf("%ld %s %s %s %s %ld %d\n", r, u.sysname, u.nodename, u.release, u.machine, s, e);
    return 0;
}

static int report(const char *what, long r) {
    printf("%s %ld %d\n", what, r, r < 0 ? errno : 0);
    return 0;
}

/* nodes DIR: mknod allowed and refused devices, mkdir, in DIR */
static int nodes(const char *dir) {
    char p[512];
    snprintf(p, sizeof p, "%s/null", dir);
    report("null", syscall(SYS_mknodat, AT_FDCWD, p, S_IFCHR | 0666, makedev(1, 3)));
    snprintf(p, sizeof p, "%s/sda", dir);
    report("sda", syscall(SYS_mknodat, AT_FDCWD, p, S_IFBLK | 0600, makedev(8, 0)));
    snprintf(p, sizeof p, "%s/mem", dir);
    report("mem", syscall(SYS_mknodat, AT_FDCWD, p, S_IFCHR | 0600, makedev(1, 1)));
    snprintf(p, sizeof p, "%s/fifo", dir);
    report("fifo", syscall(SYS_mknodat, AT_FDCWD, p, S_IFIFO | 0600, 0));
    snprintf(p, sizeof p, "%s/made", dir);
    report("mkdir", syscall(SYS_mkdirat, AT_FDCWD, p, 0750));
    snprintf(p, sizeof p, "%s/other", dir);
    report("mkdir-other", syscall(SYS_mkdirat, AT_FDCWD, p, 0750));
    return 0;
}

/* mounts DIR: in a new private mount namespace, mount tmpfs (allowed) and ramfs (refused) on DIR */
static int mounts(const char *dir) {
    char p[512];
    if (unshare(CLONE_NEWNS) < 0) return report("unshare", -1);
    report("private", syscall(SYS_mount, "none", "/", NULL, MS_REC | MS_PRIVATE, NULL));
    report("tmpfs", syscall(SYS_mount, "tmpfs", dir, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m"));
    snprintf(p, sizeof p, "%s/inside", dir);
    report("write", syscall(SYS_mkdirat, AT_FDCWD, p, 0700));
    report("ramfs", syscall(SYS_mount, "ramfs", dir, "ramfs", 0, NULL));
    fflush(stdout);
    /* prove where it landed: the tmpfs is visible here, not in the parent's namespace */
    struct stat st;
    report("inside-visible", stat(p, &st));
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc >= 5 && !strcmp(argv[1], "race")) return race(argv[2], argv[3], atoi(argv[4]));
    if (argc >= 2 && !strcmp(argv[1], "clocks")) return clocks();
    if (argc >= 3 && !strcmp(argv[1], "random")) return random_bytes(atoi(argv[2]));
    if (argc >= 2 && !strcmp(argv[1], "names")) return names();
    if (argc >= 3 && !strcmp(argv[1], "nodes")) return nodes(argv[2]);
    if (argc >= 3 && !strcmp(argv[1], "mounts")) return mounts(argv[2]);
    fprintf(stderr, "usage: %s race|clocks|random|names|nodes|mounts ...\n", argv[0]);
    return 2;
}
