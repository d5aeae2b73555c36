/* Target program for tests/test_supervisor_*.py: makes notified getppid calls in
 * various situations and prints what it observed, one line per event. The tests
 * compile it with gcc at run time. getppid is the notified syscall everywhere; its
 * arguments carry test data (getppid itself ignores them). */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

static volatile sig_atomic_t signals_seen;

static void on_signal(int sig) { (void)sig; signals_seen++; }

static long notified(long a, long b) { return syscall(__NR_getppid, a, b, 0, 0, 0, 0); }

static void report(long ret) { printf("%ld %d %d\n", ret, ret < 0 ? errno : 0, (int)signals_seen); fflush(stdout); }

static void handle_sigusr1(int flags)
{
	struct sigaction sa = { .sa_handler = on_signal, .sa_flags = flags };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR1, &sa, NULL);
}

/* fifo: start thread i only once thread i-1 is blocked in its notified syscall. */
static pid_t tids[64];
static void *tid_thread(void *arg) { long i = (long)arg; tids[i] = gettid(); notified(i, 0); return NULL; }

static int blocked_in_getppid(pid_t tid)
{
	char path[64], buf[64] = "";
	snprintf(path, sizeof path, "/proc/self/task/%d/syscall", tid);
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	if (!fgets(buf, sizeof buf, f))
		buf[0] = 0;
	fclose(f);
	return atol(buf) == __NR_getppid;
}

static int fifo(int n)
{
	pthread_t th[64];
	for (long i = 0; i < n; i++) {
		tids[i] = 0;
		pthread_create(&th[i], NULL, tid_thread, (void *)i);
		for (int spins = 0; !(__atomic_load_n(&tids[i], __ATOMIC_SEQ_CST) && blocked_in_getppid(tids[i])); spins++) {
			if (spins > 200000)
				return 3;
			usleep(50);
		}
	}
	printf("ready\n");
	fflush(stdout);
	for (int i = 0; i < n; i++)
		pthread_join(th[i], NULL);
	return 0;
}

static void *one_call(void *arg) { (void)arg; notified(0, 0); return NULL; }

/* values: T threads, K calls each (thread t, call k passes t*K+k); every result is kept and
 * printed after the join as "ret errno", one line per call. */
static long values_k, *values_ret;
static int *values_err;
static void *values_thread(void *arg)
{
	long t = (long)arg;
	for (long k = 0; k < values_k; k++) {
		long i = t * values_k + k;
		errno = 0;
		values_ret[i] = notified(i, 0);
		values_err[i] = values_ret[i] < 0 ? errno : 0;
	}
	return NULL;
}

static int values(int t, long k)
{
	pthread_t th[64];
	values_k = k;
	values_ret = calloc(t * k, sizeof *values_ret);
	values_err = calloc(t * k, sizeof *values_err);
	for (long i = 0; i < t; i++)
		pthread_create(&th[i], NULL, values_thread, (void *)i);
	for (int i = 0; i < t; i++)
		pthread_join(th[i], NULL);
	for (long i = 0; i < t * k; i++)
		printf("%ld %d\n", values_ret[i], values_err[i]);
	return 0;
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "getppid";
	long n = argc > 2 ? atol(argv[2]) : 1;

	if (!strcmp(mode, "getppid")) {         /* N calls, one line each */
		for (long i = 0; i < n; i++)
			report(notified(i, 0));
	} else if (!strcmp(mode, "expect")) {   /* N calls; exit 0 iff all returned argv[3] */
		long want = atol(argv[3]);
		for (long i = 0; i < n; i++)
			if (notified(i, 0) != want)
				return 1;
	} else if (!strcmp(mode, "string")) {   /* pass a pointer to argv[2] */
		report(notified((long)argv[2], (long)strlen(argv[2])));
	} else if (!strcmp(mode, "edge")) {     /* a string that ends at the end of a page before an unmapped one */
		long page = sysconf(_SC_PAGESIZE);
		char *p = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		munmap(p + page, page);
		memset(p, 'x', page);
		p[page - 1] = 0;
		report(notified((long)(p + page - 4), 3));   /* "xxx" */
		report(notified((long)(p + page - 2000), 0));
		p[page - 1] = 'x';                           /* no NUL before the hole */
		report(notified((long)(p + page - 10), 0));
	} else if (!strcmp(mode, "restart")) {  /* SIGUSR1 with SA_RESTART during the call */
		handle_sigusr1(SA_RESTART);
		report(notified(0, 0));
	} else if (!strcmp(mode, "signal")) {   /* SIGUSR1 without SA_RESTART */
		handle_sigusr1(0);
		report(notified(0, 0));
	} else if (!strcmp(mode, "fifo")) {
		return fifo((int)n);
	} else if (!strcmp(mode, "threads")) {  /* N threads, one call each, then exit */
		pthread_t th[64];
		for (long i = 0; i < n; i++)
			pthread_create(&th[i], NULL, one_call, NULL);
		for (long i = 0; i < n; i++)
			pthread_join(th[i], NULL);
		report(0);
	} else if (!strcmp(mode, "alternate")) { /* N times getppid(i) then getpgid(i): "ret ret" lines */
		for (long i = 0; i < n; i++) {
			long a = notified(i, 0);
			long b = syscall(__NR_getpgid, i, 0, 0, 0, 0, 0);
			printf("%ld %ld\n", a, b);
		}
	} else if (!strcmp(mode, "values")) {   /* argv[2] threads (<= 64), argv[3] calls each */
		return values((int)n, atol(argv[3]));
	} else if (!strcmp(mode, "pause")) {    /* a call, a byte from stdin, another call */
		char c;
		report(notified(0, 0));
		if (read(0, &c, 1) == 1)
			report(notified(1, 0));
	} else if (!strcmp(mode, "daemon")) {   /* a grandchild outlives us, calls on a byte from stdin */
		pid_t pid = fork();
		if (pid == 0) {
			char c;
			setsid();
			if (read(0, &c, 1) == 1)
				report(notified(0, 0));
			_exit(0);
		}
		printf("daemon %d\n", pid);
		fflush(stdout);
	} else if (!strcmp(mode, "addfd")) {    /* argv[2]: "plain", "rlimit0" */
		if (!strcmp(argv[2], "rlimit0")) {
			struct rlimit rl = { 0, 0 };
			setrlimit(RLIMIT_NOFILE, &rl);
		}
		long fd = notified(0, 0);
		if (fd < 0) {
			report(fd);
		} else {
			char buf[64] = "";
			ssize_t got = read((int)fd, buf, sizeof buf - 1);
			printf("%ld %s\n", fd, got > 0 ? buf : "-");
		}
	} else {
		fprintf(stderr, "unknown mode %s\n", mode);
		return 2;
	}
	return 0;
}
