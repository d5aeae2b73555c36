/* fsopen benchmark target: opens PATH (openat, O_RDONLY|O_CLOEXEC) and closes it N times,
 * then prints "N mean_ns bad" (bad: opens that failed). A filter notifying openat is
 * already installed (sysgate's launcher put it there).
 * usage: opener N PATH */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc < 3)
		return 2;
	long n = atol(argv[1]), bad = 0;
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (long i = 0; i < n; i++) {
		int fd = openat(AT_FDCWD, argv[2], O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			bad++;
		else
			close(fd);
	}
	clock_gettime(CLOCK_MONOTONIC, &b);
	double ns = (b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec);
	printf("%ld %.1f %ld\n", n, n ? ns / n : 0.0, bad);
	return bad ? 1 : 0;
}
