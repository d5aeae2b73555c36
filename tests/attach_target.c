#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <signal.h>
#include <ucontext.h>
#include <sys/epoll.h>

/* argv: MODE DIR TOKEN. The thread-group leader (where sysgate injects) is, at attach time,
 *   read  - blocked in read(0)                      (restarted after -ERESTARTSYS)
 *   sleep - in a 1.5 s nanosleep                    (restarted through restart_syscall)
 *   spin  - running code that checks every general register and a stack pattern,
 *   heap  - blocked in read(0) on a stack malloc'ed from the heap (no private stack below sp),
 *   epoll - in epoll_wait(stdin), which a ptrace stop would end with EINTR: sysgate must pick
 *           another thread, and epoll_wait must report stdin readable,
 *   exit  - gone (pthread_exit): sysgate must pick another thread.
 * Three workers loop on write/getpid; a reader thread sits in read(0) unless the leader reads.
 * After "go TOKEN\n" every thread checks that mkdir fails with EPERM and getppid returns 4242.
 * SIGUSR1 (SA_RESTART) is counted and the count printed at the end. */

#define NWORKERS 3
#define PATTERN_BYTES 16384
static volatile int phase;
static volatile sig_atomic_t usr1_count;
static void on_usr1(int sig) { (void)sig; usr1_count++; }
static const char *dir, *token;
static int failures;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static void report(const char *fmt, const char *who, const char *what, long got) {
    pthread_mutex_lock(&lock);
    printf(fmt, who, what, got, errno);
    if (fmt[0] == 'F') failures++;
    pthread_mutex_unlock(&lock);
}
#define FAIL(who, what, got) report("FAIL %s: %s (got %ld, errno %d)\n", who, what, (long)(got))

static void filtered_checks(const char *who) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, who);
    errno = 0;
    long r = mkdir(path, 0700);
    if (!(r == -1 && errno == EPERM)) FAIL(who, "mkdir was not denied with EPERM", r);
    long p = syscall(SYS_getppid);
    if (p != 4242) FAIL(who, "getppid was not answered by the listener", p);
    report("checked %s\n", who, "", 0);
}

static void read_go(const char *who) {
    char line[128] = {0}, expect[160];
    size_t n = 0;
    while (n < sizeof line - 1) {
        ssize_t r = read(0, line + n, 1);
        if (r != 1) { FAIL(who, "read(stdin) failed", r); break; }
        if (line[n++] == '\n') break;
    }
    snprintf(expect, sizeof expect, "go %s\n", token);
    if (strcmp(line, expect) != 0) FAIL(who, "read returned the wrong data", n);
    phase = 1;
}

static void *worker(void *arg) {
    char who[32];
    snprintf(who, sizeof who, "worker%ld", (long)arg);
    int null = open("/dev/null", O_WRONLY);
    unsigned long rounds = 0;
    pid_t me = getpid();
    while (!phase) {
        if (write(null, "x", 1) != 1) FAIL(who, "write(/dev/null) failed", -1);
        if (syscall(SYS_getpid) != me) FAIL(who, "getpid returned the wrong value", -1);
        rounds++;
    }
    if (rounds < 100) FAIL(who, "too few loop rounds", rounds);
    filtered_checks(who);
    return NULL;
}

static void *reader(void *arg) {
    (void)arg;
    read_go("reader");
    filtered_checks("reader");
    return NULL;
}

/* Returns 0 if every general register kept its value until *flag became non-zero. */
int spin_regs(volatile int *flag);
__asm__(
    ".text\n"
    ".globl spin_regs\n"
    ".type spin_regs,@function\n"
    "spin_regs:\n"
    "push %rbx\n"
    "push %rbp\n"
    "push %r12\n"
    "push %r13\n"
    "push %r14\n"
    "push %r15\n"
    "mov %rdi, %rbp\n"
    "xor %r12d, %r12d\n"
    "lea 1(%r12), %rax\n"
    "lea 2(%r12), %rbx\n"
    "lea 3(%r12), %rcx\n"
    "lea 4(%r12), %rdx\n"
    "lea 5(%r12), %rsi\n"
    "lea 6(%r12), %rdi\n"
    "lea 7(%r12), %r8\n"
    "lea 8(%r12), %r9\n"
    "lea 9(%r12), %r10\n"
    "lea 10(%r12), %r11\n"
    "lea 11(%r12), %r13\n"
    "lea 12(%r12), %r14\n"
    "lea 13(%r12), %r15\n"
    "1: inc %r12\n"
    "inc %rax\n"
    "inc %rbx\n"
    "inc %rcx\n"
    "inc %rdx\n"
    "inc %rsi\n"
    "inc %rdi\n"
    "inc %r8\n"
    "inc %r9\n"
    "inc %r10\n"
    "inc %r11\n"
    "inc %r13\n"
    "inc %r14\n"
    "inc %r15\n"
    "sub %r12, %rax\n"
    "cmp $1, %rax\n"
    "jne 9f\n"
    "add %r12, %rax\n"
    "sub %r12, %rbx\n"
    "cmp $2, %rbx\n"
    "jne 9f\n"
    "add %r12, %rbx\n"
    "sub %r12, %rcx\n"
    "cmp $3, %rcx\n"
    "jne 9f\n"
    "add %r12, %rcx\n"
    "sub %r12, %rdx\n"
    "cmp $4, %rdx\n"
    "jne 9f\n"
    "add %r12, %rdx\n"
    "sub %r12, %rsi\n"
    "cmp $5, %rsi\n"
    "jne 9f\n"
    "add %r12, %rsi\n"
    "sub %r12, %rdi\n"
    "cmp $6, %rdi\n"
    "jne 9f\n"
    "add %r12, %rdi\n"
    "sub %r12, %r8\n"
    "cmp $7, %r8\n"
    "jne 9f\n"
    "add %r12, %r8\n"
    "sub %r12, %r9\n"
    "cmp $8, %r9\n"
    "jne 9f\n"
    "add %r12, %r9\n"
    "sub %r12, %r10\n"
    "cmp $9, %r10\n"
    "jne 9f\n"
    "add %r12, %r10\n"
    "sub %r12, %r11\n"
    "cmp $10, %r11\n"
    "jne 9f\n"
    "add %r12, %r11\n"
    "sub %r12, %r13\n"
    "cmp $11, %r13\n"
    "jne 9f\n"
    "add %r12, %r13\n"
    "sub %r12, %r14\n"
    "cmp $12, %r14\n"
    "jne 9f\n"
    "add %r12, %r14\n"
    "sub %r12, %r15\n"
    "cmp $13, %r15\n"
    "jne 9f\n"
    "add %r12, %r15\n"
    "cmpl $0, (%rbp)\n"
    "je 1b\n"
    "xor %eax, %eax\n"
    "jmp 8f\n"
    "9: mov $1, %eax\n"
    "8: pop %r15\n"
    "pop %r14\n"
    "pop %r13\n"
    "pop %r12\n"
    "pop %rbp\n"
    "pop %rbx\n"
    "ret\n");

static ucontext_t main_context, heap_context;
static void read_go_leader(void) { read_go("leader"); }

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 4) return 2;
    const char *mode = argv[1];
    dir = argv[2];
    token = argv[3];
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct sigaction sa = {.sa_handler = on_usr1, .sa_flags = SA_RESTART};
    sigaction(SIGUSR1, &sa, NULL);
    pthread_t threads[NWORKERS + 1];
    int n = 0;
    for (long i = 0; i < NWORKERS; i++) pthread_create(&threads[n++], NULL, worker, (void *)i);
    int leader_reads = strcmp(mode, "read") == 0 || strcmp(mode, "heap") == 0 || strcmp(mode, "epoll") == 0;
    if (!leader_reads) pthread_create(&threads[n++], NULL, reader, NULL);
    printf("ready\n");
    if (strcmp(mode, "exit") == 0) pthread_exit(NULL);  /* the process lives on in its threads */
    if (strcmp(mode, "read") == 0) {
        read_go("leader");
    } else if (strcmp(mode, "epoll") == 0) {
        int ep = epoll_create1(0);
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = 0};
        epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev);
        int r = epoll_wait(ep, &ev, 1, -1);
        if (r != 1) FAIL("leader", "epoll_wait did not report stdin", r);
        read_go("leader");
    } else if (strcmp(mode, "heap") == 0) {
        size_t size = 65536;
        getcontext(&heap_context);
        heap_context.uc_stack.ss_sp = malloc(size);
        heap_context.uc_stack.ss_size = size;
        heap_context.uc_link = &main_context;
        makecontext(&heap_context, read_go_leader, 0);
        swapcontext(&main_context, &heap_context);
    } else if (strcmp(mode, "sleep") == 0) {
        struct timespec ts = {1, 500000000};
        double t0 = now();
        int r = nanosleep(&ts, NULL);
        double slept = now() - t0;
        if (r != 0) FAIL("leader", "nanosleep failed", r);
        if (slept < 1.5 || slept > 3.0) FAIL("leader", "nanosleep took the wrong time (ms)", slept * 1000);
        while (!phase) usleep(1000);
    } else {
        uintptr_t sp;
        __asm__ volatile("mov %%rsp, %0" : "=r"(sp));
        volatile unsigned char *below = (volatile unsigned char *)(sp - 64 - PATTERN_BYTES);
        for (int i = 0; i < PATTERN_BYTES; i++) below[i] = (unsigned char)(i * 7 + 3);
        int regs_bad = spin_regs(&phase), changed = -1;
        for (int i = 0; i < PATTERN_BYTES && changed < 0; i++)
            if (below[i] != (unsigned char)(i * 7 + 3)) changed = i;
        if (regs_bad) FAIL("leader", "a register changed while spinning", 0);
        if (changed >= 0) FAIL("leader", "the stack below sp changed at offset", changed);
    }
    filtered_checks("leader");
    for (int i = 0; i < n; i++) pthread_join(threads[i], NULL);
    printf("usr1 %d\n", (int)usr1_count);
    printf("done %d\n", failures);
    return failures ? 1 : 0;
}
