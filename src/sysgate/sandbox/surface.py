"""Kernel facts the sandbox needs: the syscalls through which a program names a path or a
network peer, and those that change what a checked path means or bypass syscalls.

These are facts about Linux, not about sysgate's handlers. Which of the calls a handler
answers is read from the handler class at run time (:func:`handler_syscalls`), so the
sandbox grows with the handlers.

A *family* is one operation under every name it has on some architecture: ``newfstatat``
on x86_64 is ``fstatat64`` on i386, and ``open``, ``openat``, ``openat2`` and ``creat``
all open. When a handler answers one member of a family, a member it does not answer is
a way around it, so the sandbox refuses that member (:mod:`.base`) and a policy routing
one member but not another gets a warning (:mod:`.coverage`).
"""
from __future__ import annotations

from ..policy import constants

#: Syscalls that take a path, one family per operation (every architecture's names).
PATH_FAMILIES: tuple[tuple[str, ...], ...] = (
    ("open", "openat", "openat2", "creat"),
    ("stat", "lstat", "newfstatat", "statx", "stat64", "lstat64", "fstatat64", "oldstat", "oldlstat"),
    ("access", "faccessat", "faccessat2"),
    ("readlink", "readlinkat"),
    ("mkdir", "mkdirat"),
    ("unlink", "unlinkat", "rmdir"),
    ("rename", "renameat", "renameat2"),
    ("symlink", "symlinkat"),
    ("link", "linkat"),
    ("mknod", "mknodat"),
    ("chmod", "fchmodat", "fchmodat2"),
    ("chown", "lchown", "fchownat", "chown32", "lchown32"),
    ("truncate", "truncate64"),
    ("utime", "utimes", "futimesat", "utimensat", "utimensat_time64"),
    ("getxattr", "lgetxattr", "getxattrat", "listxattr", "llistxattr", "listxattrat",
     "setxattr", "lsetxattr", "setxattrat", "removexattr", "lremovexattr", "removexattrat"),
    ("file_getattr", "file_setattr"),
    ("statfs", "statfs64"),
    ("inotify_add_watch",),
    ("fanotify_mark",),
    ("execve", "execveat"),
    ("chdir",),
    ("acct",), ("swapon", "swapoff"), ("uselib",), ("quotactl",),
)

#: fd-based calls whose compat names must follow a handler that answers one of them.
FD_FAMILIES: tuple[tuple[str, ...], ...] = (
    ("fstat", "fstat64", "oldfstat"),
    ("fchmod",), ("fchown", "fchown32"),
    ("ftruncate", "ftruncate64"),
    ("fstatfs", "fstatfs64"),
    ("getdents", "getdents64", "readdir"),
    ("fgetxattr", "flistxattr", "fsetxattr", "fremovexattr"),
    ("fchdir",),
)

#: Path families the sandbox leaves to the kernel when the fs handler answers none of
#: them: a program cannot start without exec, nor a shell without chdir.
ESSENTIAL = frozenset({"execve", "execveat", "chdir"})

#: Syscalls that name a network peer (i386's socketcall multiplexes them all).
PEER_FAMILIES: tuple[tuple[str, ...], ...] = (
    ("connect", "bind", "sendto", "send", "sendmsg", "sendmmsg", "socketcall"),
)

#: Syscalls that change what a path names (mounts, roots, namespaces) or open files
#: without one, with why each matters. Refused by the sandbox whatever the policy says.
VIEW_CHANGES: dict[str, str] = {
    "chroot": "a new root: the handler's paths would name other files than the program's",
    "pivot_root": "a new root for the mount namespace",
    "mount": "bind mounts put a denied tree under an allowed path",
    "umount": "unmounting uncovers what a mount hid", "umount2": "unmounting uncovers what a mount hid",
    "fsopen": "the new mount API: a mount without mount(2)", "fsconfig": "the new mount API",
    "fsmount": "the new mount API", "fspick": "the new mount API", "move_mount": "the new mount API",
    "open_tree": "clones a mount tree as an fd: a path opened without the handler",
    "open_tree_attr": "clones a mount tree as an fd", "mount_setattr": "changes mount flags (read-only, idmaps)",
    "setns": "enters another namespace: other mounts, other root",
    "name_to_handle_at": "file handles open files by inode, without a path",
    "open_by_handle_at": "opens a file by handle, without a path (the 'shocker' container escape)",
}
#: io_uring runs opens, connects and sends in kernel workers: no syscall for seccomp to see.
IO_URING = ("io_uring_setup", "io_uring_enter", "io_uring_register")
#: Reaching another, unsandboxed, process of the same user: its files are not checked.
OTHER_PROCESS = {
    "ptrace": "controls a process outside the sandbox", "process_vm_writev": "writes another process's memory",
    "process_vm_readv": "reads another process's memory", "pidfd_getfd": "takes another process's open files",
}

_NS = ("CLONE_NEWNS", "CLONE_NEWUSER", "CLONE_NEWPID", "CLONE_NEWNET", "CLONE_NEWUTS", "CLONE_NEWIPC",
       "CLONE_NEWCGROUP", "CLONE_NEWTIME")
#: Every namespace flag. In clone(2) CLONE_NEWTIME shares bits with the exit signal (CSIGNAL),
#: where 0x80 is never a valid signal, so testing it there refuses nothing legitimate.
NAMESPACE_FLAGS = 0
for _name in _NS:
    NAMESPACE_FLAGS |= constants.lookup(_name)
#: unshare(2) flags that do not make a namespace: everything else (new kinds too) is refused.
UNSHARE_HARMLESS = 0
for _name in ("CLONE_FILES", "CLONE_FS", "CLONE_SYSVSEM", "CLONE_THREAD", "CLONE_SIGHAND", "CLONE_VM"):
    UNSHARE_HARMLESS |= constants.lookup(_name)
#: ioctls that type into the controlling terminal, i.e. run commands outside the sandbox.
TERMINAL_INJECTION = ("TIOCSTI", "TIOCLINUX")


def family_of(name: str, families) -> tuple[str, ...] | None:
    for family in families:
        if name in family:
            return family
    return None


def path_syscalls() -> list[str]:
    return [s for family in PATH_FAMILIES for s in family]


def peer_syscalls() -> list[str]:
    return [s for family in PEER_FAMILIES for s in family]


def handler_syscalls(name: str) -> tuple[str, ...]:
    """The syscalls the built-in handler ``name`` (as registered for ``notify(name)``) answers,
    read from the handler now, so that the sandbox follows what the handlers learn."""
    return handler_facts(name)[0]


def handler_facts(name: str) -> tuple[tuple[str, ...], dict[str, str]]:
    """(the syscalls handler ``name`` answers, those it only checks and then lets run by
    CONTINUE with why that is weaker: its ``weak_guarantees``)."""
    from ..handlers import registry

    handler = registry.create(name)
    try:
        return tuple(handler.syscalls), dict(getattr(handler, "weak_guarantees", {}))
    finally:
        handler.close()
