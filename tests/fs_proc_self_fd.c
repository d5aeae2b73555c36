/* chmod through /proc/self/fd/N of an O_PATH fd, and fchmodat(AT_SYMLINK_NOFOLLOW) (glibc does the same), for tests/test_sandbox_fs_calls.py */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
int main(int argc, char **argv) {
	char link[64]; struct stat st;
	for (int i = 1; i < argc; i++) {
		int fd = open(argv[i], O_PATH | O_NOFOLLOW | O_CLOEXEC);
		snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
		int a = chmod(link, 0751); int ea = a ? errno : 0;
		int b = fchmodat(AT_FDCWD, argv[i], 0750, AT_SYMLINK_NOFOLLOW); int eb = b ? errno : 0;
		int c = stat(link, &st); int ec = c ? errno : 0;
		printf("%s chmod=%d/%s fchmodat=%d/%s stat=%d/%s mode=%o\n", i == 1 ? "allowed" : "denied", a, strerror(ea), b, strerror(eb),
		       c, strerror(ec), c ? 0 : st.st_mode & 07777);
		close(fd);
	}
	return 0;
}
