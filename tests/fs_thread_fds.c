/* For tests/test_sandbox_fs_calls.py: a thread with a fd table of its own (unshare(CLONE_FILES))
 * whose fd 3 names another file than the leader's fd 3. fstat(3) (AT_EMPTY_PATH) and
 * /proc/thread-self/fd/3 must reach the thread's file, /proc/self/fd/3 the leader's. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *dir;

static void show(const char *what, int r, const struct stat *st)
{
	printf("%s r=%d size=%ld mode=%o %s\n", what, r, r ? 0L : (long)st->st_size, r ? 0 : st->st_mode & 07777,
	       r ? strerror(errno) : "");
}

static void *thread(void *arg)
{
	char path[512];
	struct stat st;
	(void)arg;
	unshare(CLONE_FILES);
	close(3);
	snprintf(path, sizeof path, "%s/mine", dir);
	if (open(path, O_RDONLY) != 3)
		return NULL;
	show("fstat(3)", fstatat(3, "", &st, AT_EMPTY_PATH), &st);
	show("stat thread-self/fd/3", stat("/proc/thread-self/fd/3", &st), &st);
	show("stat self/fd/3", stat("/proc/self/fd/3", &st), &st);
	printf("chmod thread-self/fd/3 r=%d\n", chmod("/proc/thread-self/fd/3", 0640));
	show("after chmod fstat(3)", fstatat(3, "", &st, AT_EMPTY_PATH), &st);
	return NULL;
}

int main(int argc, char **argv)
{
	char path[512];
	pthread_t th;
	dir = argv[1];
	snprintf(path, sizeof path, "%s/leaders", dir);
	if (open(path, O_RDONLY) != 3)
		return 2;
	pthread_create(&th, NULL, thread, NULL);
	pthread_join(th, NULL);
	return 0;
}
