/* The C floor of one fs-handled openat: for every notification on the listener (fd argv[1]):
 * RECV, read the path (process_vm_readv), read the thread's fsuid/fsgid from
 * /proc/TID/status, open /proc/TID/root, ID_VALID (after the reads, before acting),
 * switch fsuid/fsgid when they differ from ours, openat2(root, path, RESOLVE_IN_ROOT |
 * RESOLVE_NO_MAGICLINKS), ADDFD with SEND. No rules: the floor under any rule check.
 * Runs until the filter has no users (POLLHUP) or RECV fails.
 * usage: fsfloor LISTENER_FD */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

static int fs_ids(int tid, unsigned *uid, unsigned *gid)
{
	char path[64], buf[4096];
	snprintf(path, sizeof(path), "/proc/%d/status", tid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t len = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (len <= 0)
		return -1;
	buf[len] = 0;
	char *u = strstr(buf, "\nUid:"), *g = strstr(buf, "\nGid:");
	unsigned r, e, s;
	if (!u || !g || sscanf(u + 5, "%u %u %u %u", &r, &e, &s, uid) != 4 ||
	    sscanf(g + 5, "%u %u %u %u", &r, &e, &s, gid) != 4)
		return -1;
	return 0;
}

int main(int argc, char **argv)
{
	int listener = atoi(argv[1]);
	unsigned own_uid = geteuid(), own_gid = getegid();
	struct seccomp_notif req;
	struct seccomp_notif_resp resp;
	char path[4096];
	for (;;) {
		struct pollfd p = { .fd = listener, .events = POLLIN };
		if (poll(&p, 1, -1) < 0 && errno != EINTR)
			return 1;
		if (!(p.revents & POLLIN))
			return 0;
		memset(&req, 0, sizeof(req));
		if (ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, &req))
			continue;
		memset(&resp, 0, sizeof(resp));
		resp.id = req.id;
		resp.error = -EACCES;
		struct iovec local = { path, sizeof(path) };
		struct iovec remote = { (void *)req.data.args[1],
					4096 - (req.data.args[1] & 4095) };
		ssize_t got = process_vm_readv(req.pid, &local, 1, &remote, 1, 0);
		unsigned uid, gid;
		char root[64];
		snprintf(root, sizeof(root), "/proc/%d/root", req.pid);
		int rootfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (got <= 0 || !memchr(path, 0, got) || fs_ids(req.pid, &uid, &gid) || rootfd < 0 ||
		    ioctl(listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &req.id)) {
			if (rootfd >= 0)
				close(rootfd);
			ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, &resp);
			continue;
		}
		if (uid != own_uid || gid != own_gid) {
			setfsgid(gid);
			setfsuid(uid);
		}
		struct open_how how = { .flags = (req.data.args[2] & ~O_CLOEXEC) | O_CLOEXEC,
					.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS };
		int fd = syscall(SYS_openat2, rootfd, path, &how, sizeof(how));
		int err = errno;
		if (uid != own_uid || gid != own_gid) {
			setfsuid(own_uid);
			setfsgid(own_gid);
		}
		close(rootfd);
		if (fd < 0) {
			resp.error = -err;
			ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, &resp);
			continue;
		}
		struct seccomp_notif_addfd addfd = { .id = req.id, .flags = SECCOMP_ADDFD_FLAG_SEND,
						     .srcfd = fd,
						     .newfd_flags = req.data.args[2] & O_CLOEXEC };
		ioctl(listener, SECCOMP_IOCTL_NOTIF_ADDFD, &addfd);
		close(fd);
	}
}
