/* Benchmark target: calls getppid N times and prints the mean round trip in ns.
 * usage: target N            (a filter notifying getppid is already installed)
 *        target N install    (install it here and pass the listener over fd 3 with
 *                             SCM_RIGHTS before the first getppid)
 *        target N install|- T  (T threads, N calls each, started together: prints
 *                             "calls wall_ns_per_call bad cpu_ns", the last being this
 *                             process's CPU time, for the throughput benchmark) */
#define _GNU_SOURCE
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int install_notify_getppid(void)
{
	struct sock_filter insns[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_getppid, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = 4, .filter = insns };
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
		return -1;
	return syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
}

static int send_fd(int sock, int fd)
{
	char data = 'L';
	struct iovec iov = { .iov_base = &data, .iov_len = 1 };
	union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } u;
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
			      .msg_controllen = sizeof(u.buf) };
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	return sendmsg(sock, &msg, 0) == 1 ? 0 : -1;
}

static long per_thread, thread_bad;
static pthread_barrier_t start;

static void *caller(void *arg)
{
	long bad = 0;
	(void)arg;
	pthread_barrier_wait(&start);
	for (long i = 0; i < per_thread; i++)
		if (syscall(__NR_getppid) != 42)
			bad++;
	__atomic_add_fetch(&thread_bad, bad, __ATOMIC_RELAXED);
	return NULL;
}

static int threaded(long n, int t)
{
	pthread_t th[1024];
	struct timespec a, b;
	struct rusage ru;
	per_thread = n;
	pthread_barrier_init(&start, NULL, t + 1);
	for (int i = 0; i < t; i++)
		pthread_create(&th[i], NULL, caller, NULL);
	pthread_barrier_wait(&start);
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (int i = 0; i < t; i++)
		pthread_join(th[i], NULL);
	clock_gettime(CLOCK_MONOTONIC, &b);
	getrusage(RUSAGE_SELF, &ru);
	double ns = (b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec);
	double cpu = (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e9 + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e3;
	printf("%ld %.1f %ld %.0f\n", n * t, ns / (n * t), thread_bad, cpu);
	return thread_bad ? 1 : 0;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 1000;
	if (argc > 2 && !strcmp(argv[2], "install")) {
		int fd = install_notify_getppid();
		if (fd < 0 || send_fd(3, fd)) {
			perror("install");
			return 2;
		}
		close(fd);
		close(3);
	}
	if (argc > 3) {
		int t = atoi(argv[3]);
		if (t < 1 || t > 1024)
			return 2;
		return threaded(n, t);
	}
	struct timespec a, b;
	long bad = 0;
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (long i = 0; i < n; i++)
		if (syscall(__NR_getppid) != 42)
			bad++;
	clock_gettime(CLOCK_MONOTONIC, &b);
	double ns = (b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec);
	printf("%ld %.1f %ld\n", n, n ? ns / n : 0.0, bad);
	return bad ? 1 : 0;
}
