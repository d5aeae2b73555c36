/* Attacks on the Landlock layer: each mode prints "ok" or the errno number and exits 0. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

static int report(long r) {
    if (r < 0) printf("errno %d\n", errno); else printf("ok\n");
    fflush(stdout);
    return 0;
}

static int read_file(const char *path) {          /* "ok <first line>" or "errno N" */
    char buf[256] = {0};
    int fd = open(path, O_RDONLY);
    if (fd < 0) return report(-1);
    ssize_t n = read(fd, buf, sizeof buf - 1);
    if (n > 0 && buf[n - 1] == '\n') buf[n - 1] = 0;
    printf("ok %s\n", buf);
    return 0;
}

static int uring_open(const char *path) {       /* IORING_OP_OPENAT with raw syscalls */
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    int ring = syscall(__NR_io_uring_setup, 4, &p);
    if (ring < 0) return report(-1);
    size_t sqsz = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    size_t cqsz = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    if (p.features & IORING_FEAT_SINGLE_MMAP && cqsz > sqsz) sqsz = cqsz;
    char *sq = mmap(0, sqsz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ring, IORING_OFF_SQ_RING);
    char *cq = (p.features & IORING_FEAT_SINGLE_MMAP) ? sq :
        mmap(0, cqsz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ring, IORING_OFF_CQ_RING);
    struct io_uring_sqe *sqes = mmap(0, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE,
                                     MAP_SHARED | MAP_POPULATE, ring, IORING_OFF_SQES);
    if (sq == MAP_FAILED || cq == MAP_FAILED || sqes == MAP_FAILED) return report(-1);
    unsigned *tail = (unsigned *)(sq + p.sq_off.tail), *mask = (unsigned *)(sq + p.sq_off.ring_mask);
    unsigned *array = (unsigned *)(sq + p.sq_off.array);
    unsigned t = *tail, idx = t & *mask;
    struct io_uring_sqe *e = &sqes[idx];
    memset(e, 0, sizeof *e);
    e->opcode = IORING_OP_OPENAT;
    e->fd = AT_FDCWD;
    e->addr = (unsigned long)path;
    e->open_flags = O_RDONLY;
    array[idx] = idx;
    __atomic_store_n(tail, t + 1, __ATOMIC_RELEASE);
    if (syscall(__NR_io_uring_enter, ring, 1, 1, IORING_ENTER_GETEVENTS, NULL, 0) < 0) return report(-1);
    unsigned head = __atomic_load_n((unsigned *)(cq + p.cq_off.head), __ATOMIC_ACQUIRE);
    struct io_uring_cqe *cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
    int res = cqes[head & *(unsigned *)(cq + p.cq_off.ring_mask)].res;
    if (res < 0) { printf("errno %d\n", -res); return 0; }
    char buf[256] = {0};
    ssize_t n = read(res, buf, sizeof buf - 1);
    if (n > 0 && buf[n - 1] == '\n') buf[n - 1] = 0;
    printf("ok %s\n", buf);
    return 0;
}

static int tcp(const char *op, int port) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(0x7f000001)};
    if (!strcmp(op, "connect")) return report(connect(s, (struct sockaddr *)&a, sizeof a));
    return report(bind(s, (struct sockaddr *)&a, sizeof a));
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "read")) return read_file(argv[2]);
    if (argc == 3 && !strcmp(argv[1], "uring")) return uring_open(argv[2]);
    if (argc == 3 && (!strcmp(argv[1], "connect") || !strcmp(argv[1], "bind"))) return tcp(argv[1], atoi(argv[2]));
    if (argc == 5 && !strcmp(argv[1], "rename")) {      /* rename A B, then read C */
        if (rename(argv[2], argv[3]) < 0) printf("rename errno %d\n", errno); else printf("rename ok\n");
        return read_file(argv[4]);
    }
    if (argc == 5 && !strcmp(argv[1], "bindmount")) {  /* in a new user+mount ns: bind SRC on DST, read FILE */
        if (unshare(CLONE_NEWUSER | CLONE_NEWNS) < 0) { printf("unshare errno %d\n", errno); return 0; }
        if (mount(argv[2], argv[3], NULL, MS_BIND, NULL) < 0) printf("mount errno %d\n", errno);
        else printf("mount ok\n");
        return read_file(argv[4]);
    }
    fprintf(stderr, "usage\n");
    return 2;
}
