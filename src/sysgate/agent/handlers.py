"""Minimal container handlers of the agent (to be replaced by ``sysgate.handlers.container``).

Each registry entry maps a handler name (as written in metadata or the config file)
to the syscalls it serves and a factory ``factory(arg, state) -> fn(notification)``:

=================  ==========================================================
``mkdir-deny``     mkdir/mkdirat fail with ``arg`` (errno name/number, EPERM)
``mkdir-emulate``  the agent performs mkdir in the container, as the caller
``mkdir-suffix``   like mkdir-emulate, ``arg`` appended (seccompagent MKDIR_TMPL)
``mknod-deny``     mknod/mknodat fail with ``arg`` (EPERM)
``mknod-emulate``  the agent creates allow-listed char devices (null, zero, full,
                   random, urandom, tty); other devices EPERM; fifos/files continue
``mount-deny``     mount fails with ``arg`` (EPERM)
=================  ==========================================================

Emulation runs in a forked helper that chroots into ``/proc/PID/root`` (the caller's
root in its own mount namespace), changes to the caller's cwd (or ``dirfd``), takes
the caller's fsuid/fsgid and umask, and makes the call; symlinks and ``..`` are thus
resolved inside the container.
"""
from __future__ import annotations

import errno
import os
import signal
import stat
from dataclasses import dataclass, field

from ..supervisor.notification import Reply, errno_value
from .config import ConfigError, HandlerSpec, Selection
from .protocol import ContainerProcessState

AT_FDCWD = -100
#: (major, minor) of the character devices mknod-emulate creates.
SAFE_DEVICES = {(1, 3): "null", (1, 5): "zero", (1, 7): "full", (1, 8): "random", (1, 9): "urandom",
                (5, 0): "tty"}


@dataclass
class HandlerSet:
    """Handlers of one container: ``{syscall: fn}`` plus the verdict for the rest."""

    handlers: dict = field(default_factory=dict)
    fallback: object = None
    pidfd: int | None = None

    def close(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


def build(selection: Selection, state: ContainerProcessState, registry: dict | None = None) -> HandlerSet:
    """Instantiate ``selection`` for a container; unknown names raise ConfigError."""
    registry = HANDLERS if registry is None else registry
    result = HandlerSet()
    for spec in selection.handlers:
        if spec.name not in registry:
            raise ConfigError(f"unknown handler {spec.name!r} (known: {', '.join(sorted(registry))})")
        syscalls, factory = registry[spec.name]
        fn = factory(spec.arg, state)
        for name in syscalls:
            result.handlers[name] = fn
    result.fallback = _fallback(selection.default, state, result)
    return result


# --- verdict handlers ------------------------------------------------------------------
def _errno_arg(arg: str | None, default: int = errno.EPERM) -> int:
    if arg is None or arg == "":
        return default
    try:
        return errno_value(int(arg) if arg.isdigit() else arg)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def deny(arg: str | None, state=None):
    """Fail the syscall with errno ``arg`` (default EPERM)."""
    reply = Reply.errno(_errno_arg(arg))

    def deny_handler(n):
        return reply
    return deny_handler


def _fallback(spec: HandlerSpec, state: ContainerProcessState, owner: HandlerSet):
    if spec.name == "continue":
        reply = Reply.continue_()
        return lambda n: reply
    if spec.name == "deny":
        return deny(spec.arg)
    if spec.name == "kill-container":
        owner.pidfd = os.pidfd_open(state.container_pid)

        def kill_container(n):
            if owner.pidfd is not None:
                signal.pidfd_send_signal(owner.pidfd, signal.SIGKILL)
            return Reply.errno(errno.EPERM)
        return kill_container
    raise ConfigError(f"unknown default verdict {spec}")


# --- emulation -------------------------------------------------------------------------
def _signed32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def _credentials(pid: int) -> tuple[int, int, int]:
    """(fsuid, fsgid, umask) of thread ``pid`` from /proc/PID/status."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.split()
    return int(fields["Uid"][3]), int(fields["Gid"][3]), int(fields.get("Umask", ["0022"])[0], 8)


def in_container(pid: int, dirfd: int, action) -> int:
    """Run ``action()`` in a child chrooted to ``pid``'s root, cwd at ``dirfd`` (or its cwd),
    with its fsuid/fsgid/umask. Returns 0 or the errno the action failed with."""
    uid, gid, umask = _credentials(pid)
    where = f"/proc/{pid}/cwd" if dirfd == AT_FDCWD else f"/proc/{pid}/fd/{dirfd}"
    child = os.fork()
    if child == 0:
        code = 255
        try:
            start = os.open(where, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            os.chroot(f"/proc/{pid}/root")
            os.fchdir(start)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            os.umask(umask)
            action()
            code = 0
        except OSError as exc:
            code = exc.errno if exc.errno and exc.errno < 255 else 255
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    code = os.waitstatus_to_exitcode(status)
    return errno.EIO if code < 0 or code == 255 else code


def _path_args(n) -> tuple[int, bytes, list[int]]:
    """(dirfd, path, remaining args) of a mkdir/mknod-family notification."""
    args = list(n.args)
    if n.syscall.endswith("at"):
        dirfd, addr, rest = _signed32(args[0]), args[1], args[2:]
    else:
        dirfd, addr, rest = AT_FDCWD, args[0], args[1:]
    return dirfd, n.read_string(addr), rest


def _answer(n, err: int):
    return Reply.value(0) if err == 0 else Reply.errno(err)


def mkdir_emulate(arg: str | None = None, state=None):
    """Create the directory in the container on the caller's behalf (``arg`` = name suffix)."""
    suffix = (arg or "").encode()

    def mkdir_handler(n):
        dirfd, path, rest = _path_args(n)
        mode = rest[0] & 0o7777
        if not path:
            return Reply.errno(errno.ENOENT)
        if suffix:
            path = path.rstrip(b"/") + suffix if path.strip(b"/") else path
        if not n.valid():
            return None
        return _answer(n, in_container(n.pid, dirfd, lambda: os.mkdir(path, mode)))
    mkdir_handler.blocking = True
    return mkdir_handler


def mknod_emulate(arg: str | None = None, state=None):
    """Create allow-listed character devices; deny other devices; continue fifos/files/sockets."""
    def mknod_handler(n):
        dirfd, path, rest = _path_args(n)
        mode, dev = rest[0] & 0xFFFFFFFF, rest[1] & 0xFFFFFFFF
        kind = stat.S_IFMT(mode)
        if kind not in (stat.S_IFCHR, stat.S_IFBLK):
            return Reply.continue_()   # no privilege involved: the kernel's checks decide
        if kind != stat.S_IFCHR or (os.major(dev), os.minor(dev)) not in SAFE_DEVICES:
            return Reply.errno(errno.EPERM)
        if not path:
            return Reply.errno(errno.ENOENT)
        if not n.valid():
            return None
        return _answer(n, in_container(n.pid, dirfd, lambda: os.mknod(path, mode, dev)))
    mknod_handler.blocking = True
    return mknod_handler


HANDLERS = {
    "mkdir-deny": (("mkdir", "mkdirat"), deny),
    "mkdir-emulate": (("mkdir", "mkdirat"), lambda arg, state: mkdir_emulate(None)),
    "mkdir-suffix": (("mkdir", "mkdirat"), mkdir_emulate),
    "mknod-deny": (("mknod", "mknodat"), deny),
    "mknod-emulate": (("mknod", "mknodat"), mknod_emulate),
    "mount-deny": (("mount",), deny),
}
