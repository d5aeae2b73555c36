"""Named syscall groups (``@file-system``, ``@network-io``…) usable in policies.

The names follow systemd's ``SystemCallFilter=`` sets so they feel familiar,
but the lists are our own, written from what each syscall does. A group may
name syscalls that exist on some architectures only (``_llseek``, ``arch_prctl``);
the compiler skips names an architecture does not have. A member starting with
``@`` includes another group. ``sysgate policy groups`` prints them all.
"""
from __future__ import annotations

import difflib

from ..errors import SysgateError

GROUPS: dict[str, list[str]] = {
    # What nearly every program needs from its first instruction: the dynamic loader,
    # libc start-up, memory management, thread-local storage and exit.
    "@default": [
        "arch_prctl", "brk", "cacheflush", "clock_getres", "clock_getres_time64", "clock_gettime",
        "clock_gettime64", "clock_nanosleep", "clock_nanosleep_time64", "execve", "exit", "exit_group",
        "futex", "futex_time64", "futex_waitv", "get_robust_list", "get_thread_area", "getegid",
        "getegid32", "geteuid", "geteuid32", "getgid", "getgid32", "getgroups", "getgroups32", "getpgid",
        "getpgrp", "getpid", "getppid", "getrandom", "getresgid", "getresgid32", "getresuid",
        "getresuid32", "getrlimit", "getsid", "gettid", "gettimeofday", "getuid", "getuid32",
        "membarrier", "mmap", "mmap2", "mprotect", "munmap", "nanosleep", "pause", "prlimit64",
        "restart_syscall", "riscv_flush_icache", "rseq", "rt_sigreturn", "sched_getaffinity",
        "sched_yield", "set_robust_list", "set_thread_area", "set_tid_address", "set_tls", "sigreturn",
        "time", "ugetrlimit", "uname",
    ],
    # Reading and writing file descriptors that are already open.
    "@basic-io": [
        "_llseek", "close", "close_range", "dup", "dup2", "dup3", "lseek", "pread64", "preadv", "preadv2",
        "pwrite64", "pwritev", "pwritev2", "read", "readv", "write", "writev",
    ],
    # Paths, directories, metadata, links, permissions and file-descriptor based file access.
    "@file-system": [
        "access", "chdir", "chmod", "close", "creat", "faccessat", "faccessat2", "fallocate", "fchdir",
        "fchmod", "fchmodat", "fchmodat2", "fcntl", "fcntl64", "fgetxattr", "flistxattr", "fremovexattr",
        "fsetxattr", "fstat", "fstat64", "fstatat64", "fstatfs", "fstatfs64", "ftruncate", "ftruncate64",
        "futimesat", "getcwd", "getdents", "getdents64", "getxattr", "inotify_add_watch", "inotify_init",
        "inotify_init1", "inotify_rm_watch", "lgetxattr", "link", "linkat", "listxattr", "llistxattr",
        "lremovexattr", "lsetxattr", "lstat", "lstat64", "mkdir", "mkdirat", "mknod", "mknodat", "newfstatat",
        "oldfstat", "oldlstat", "oldstat", "open", "openat", "openat2", "readlink", "readlinkat",
        "removexattr", "rename", "renameat", "renameat2", "rmdir", "setxattr", "stat", "stat64", "statfs",
        "statfs64", "statx", "symlink", "symlinkat", "truncate", "truncate64", "umask", "unlink",
        "unlinkat", "utime", "utimensat", "utimensat_time64", "utimes", "getxattrat", "setxattrat",
        "listxattrat", "removexattrat", "file_getattr", "file_setattr",
    ],
    # Waiting for file descriptors and events.
    "@io-event": [
        "_newselect", "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait",
        "epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2", "poll", "ppoll",
        "ppoll_time64", "pselect6", "pselect6_time64", "select",
    ],
    # Inter-process communication: pipes, System V and POSIX IPC, process memory access.
    "@ipc": [
        "ipc", "memfd_create", "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive",
        "mq_timedreceive_time64", "mq_timedsend", "mq_timedsend_time64", "mq_unlink", "msgctl", "msgget",
        "msgrcv", "msgsnd", "pipe", "pipe2", "process_vm_readv", "process_vm_writev", "semctl", "semget",
        "semop", "semtimedop", "semtimedop_time64", "shmat", "shmctl", "shmdt", "shmget",
    ],
    # Sockets.
    "@network-io": [
        "accept", "accept4", "bind", "connect", "getpeername", "getsockname", "getsockopt", "listen",
        "recv", "recvfrom", "recvmmsg", "recvmmsg_time64", "recvmsg", "send", "sendmmsg", "sendmsg",
        "sendto", "setsockopt", "shutdown", "socket", "socketcall", "socketpair",
    ],
    # Creating, replacing and inspecting processes and threads.
    "@process": [
        "capget", "clone", "clone3", "execveat", "fork", "getrusage", "kill", "pidfd_getfd", "pidfd_open",
        "pidfd_send_signal", "prctl", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "setns", "swapcontext",
        "tgkill", "times", "tkill", "unshare", "vfork", "wait4", "waitid", "waitpid",
    ],
    # Signal handlers, masks and signal file descriptors.
    "@signal": [
        "rt_sigaction", "rt_sigpending", "rt_sigprocmask", "rt_sigsuspend", "rt_sigtimedwait",
        "rt_sigtimedwait_time64", "sigaction", "sigaltstack", "signal", "signalfd", "signalfd4",
        "sigpending", "sigprocmask", "sigsuspend",
    ],
    # Mounting and the new mount API.
    "@mount": [
        "chroot", "fsconfig", "fsmount", "fsopen", "fspick", "listmount", "mount", "mount_setattr",
        "move_mount", "open_tree", "open_tree_attr", "pivot_root", "statmount", "umount", "umount2",
    ],
    # Changing credentials and other operations reserved for privileged processes.
    "@privileged": [
        "@chown", "@clock", "@module", "@raw-io", "@reboot", "@swap", "_sysctl", "acct", "bpf", "capset",
        "chroot", "fanotify_init", "fanotify_mark", "nfsservctl", "open_by_handle_at", "pivot_root",
        "quotactl", "quotactl_fd", "setdomainname", "setfsuid", "setfsuid32", "setgroups", "setgroups32",
        "sethostname", "setresuid", "setresuid32", "setreuid", "setreuid32", "setuid", "setuid32",
        "vhangup",
    ],
    # Changing file ownership.
    "@chown": ["chown", "chown32", "fchown", "fchown32", "fchownat", "lchown", "lchown32"],
    # Direct hardware and port access.
    "@raw-io": [
        "ioperm", "iopl", "pciconfig_iobase", "pciconfig_read", "pciconfig_write", "s390_pci_mmio_read",
        "s390_pci_mmio_write",
    ],
    # Rebooting and loading a new kernel.
    "@reboot": ["kexec_file_load", "kexec_load", "reboot"],
    # Swap space.
    "@swap": ["swapoff", "swapon"],
    # Kernel modules.
    "@module": ["delete_module", "finit_module", "init_module"],
    # Setting the system clock.
    "@clock": ["adjtimex", "clock_adjtime", "clock_adjtime64", "clock_settime", "clock_settime64",
               "settimeofday", "stime"],
    # Debugging and tracing other processes and the kernel.
    "@debug": ["lookup_dcookie", "perf_event_open", "pidfd_getfd", "process_vm_readv", "process_vm_writev",
               "ptrace", "rtas", "s390_runtime_instr", "sys_debug_setcontext", "uprobe", "uretprobe"],
    # Syscalls that are unimplemented or superseded; nothing modern needs them.
    "@obsolete": [
        "_sysctl", "afs_syscall", "bdflush", "break", "create_module", "ftime", "get_kernel_syms", "getpmsg",
        "gtty", "idle", "lock", "mpx", "prof", "profil", "putpmsg", "query_module", "security", "sgetmask",
        "ssetmask", "stty", "sysfs", "tuxcall", "ulimit", "uselib", "ustat", "vserver",
    ],
    # Scheduling priorities, CPU affinity, resource limits and NUMA placement.
    "@resources": [
        "ioprio_set", "mbind", "migrate_pages", "move_pages", "nice", "sched_setaffinity",
        "sched_setattr", "sched_setparam", "sched_setscheduler", "set_mempolicy",
        "set_mempolicy_home_node", "setpriority", "setrlimit",
    ],
    # Timers and alarms.
    "@timer": [
        "alarm", "getitimer", "setitimer", "timer_create", "timer_delete", "timer_getoverrun",
        "timer_gettime", "timer_gettime64", "timer_settime", "timer_settime64", "timerfd_create",
        "timerfd_gettime", "timerfd_gettime64", "timerfd_settime", "timerfd_settime64", "times",
    ],
    # Memory locking.
    "@memlock": ["mlock", "mlock2", "mlockall", "munlock", "munlockall"],
    # Keyrings.
    "@keyring": ["add_key", "keyctl", "request_key"],
    # Writing to and syncing file systems.
    "@sync": ["fdatasync", "fsync", "msync", "sync", "sync_file_range", "sync_file_range2", "syncfs"],
    # What an ordinary long-running service uses: everything above that cannot reconfigure
    # the machine. Deliberately excludes @mount, @privileged, @debug, @module, @reboot, @swap,
    # @raw-io, @clock and @obsolete.
    "@system-service": [
        "@default", "@basic-io", "@file-system", "@io-event", "@ipc", "@keyring", "@memlock",
        "@network-io", "@process", "@resources", "@signal", "@sync", "@timer", "@chown",
        "capget", "capset", "copy_file_range", "fadvise64", "fadvise64_64", "arm_fadvise64_64", "flock",
        "get_mempolicy", "getcpu", "getpriority", "ioctl", "ioprio_get", "kcmp", "madvise", "mincore",
        "mremap", "name_to_handle_at", "personality", "pkey_alloc", "pkey_free", "pkey_mprotect",
        "process_madvise", "readahead", "readdir", "remap_file_pages", "sched_get_priority_max",
        "sched_get_priority_min", "sched_getattr", "sched_getparam", "sched_getscheduler",
        "sched_rr_get_interval", "sched_rr_get_interval_time64", "sendfile", "sendfile64", "setfsgid",
        "setfsgid32", "setgid", "setgid32", "setpgid", "setregid", "setregid32", "setresgid",
        "setresgid32", "setsid", "splice", "sysinfo", "tee", "vmsplice", "io_cancel", "io_destroy",
        "io_getevents", "io_pgetevents", "io_pgetevents_time64", "io_setup", "io_submit",
        "io_uring_enter", "io_uring_register", "io_uring_setup", "userfaultfd", "landlock_add_rule",
        "landlock_create_ruleset", "landlock_restrict_self", "seccomp", "cachestat", "map_shadow_stack",
        "mseal", "memfd_secret", "lsm_get_self_attr", "lsm_list_modules",
    ],
}


def expand_group(name: str) -> list[str]:
    """The syscalls of group ``name`` (with or without the ``@``), nested groups expanded,
    without duplicates, in a stable order. Unknown names raise SysgateError."""
    key = name if name.startswith("@") else "@" + name
    if key not in GROUPS:
        hint = difflib.get_close_matches(key, GROUPS, n=1)
        more = f"; did you mean {hint[0]}?" if hint else f"; known: {', '.join(sorted(GROUPS))}"
        raise SysgateError(f"unknown syscall group {key}{more}")
    seen: dict[str, None] = {}
    _expand(key, seen, ())
    return list(seen)


def _expand(key: str, seen: dict[str, None], stack: tuple[str, ...]) -> None:
    for member in GROUPS[key]:
        if member.startswith("@"):
            if member not in stack:
                _expand(member, seen, stack + (key,))
        else:
            seen.setdefault(member, None)
