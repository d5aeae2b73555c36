/* For tests/test_supervisor_pool.py: T threads each make one notified getppid(i) call; once a
 * byte arrives on stdin (the supervisor holds every call), the main thread interrupts them K
 * times with an SA_RESTART signal (each interruption leaves a dead notification behind and the
 * call restarts as a new one); prints "i result errno". */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

static long result[64];
static int err[64];
static void on_signal(int sig) { (void)sig; }
static void *call(void *arg)
{
	long i = (long)arg;
	result[i] = syscall(__NR_getppid, i, 0, 0, 0, 0, 0);
	err[i] = result[i] < 0 ? errno : 0;
	return NULL;
}

int main(int argc, char **argv)
{
	int t = atoi(argv[1]), k = atoi(argv[2]);
	pthread_t th[64];
	char c;
	struct sigaction sa = { .sa_handler = on_signal, .sa_flags = SA_RESTART };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR1, &sa, NULL);
	for (long i = 0; i < t; i++)
		pthread_create(&th[i], NULL, call, (void *)i);
	if (read(0, &c, 1) != 1)
		return 2;
	for (int r = 0; r < k; r++) {
		for (int i = 0; i < t; i++)
			pthread_kill(th[i], SIGUSR1);
		usleep(20000);
	}
	printf("signalled\n");
	fflush(stdout);
	for (int i = 0; i < t; i++)
		pthread_join(th[i], NULL);
	for (int i = 0; i < t; i++)
		printf("%d %ld %d\n", i, result[i], err[i]);
	return 0;
}
