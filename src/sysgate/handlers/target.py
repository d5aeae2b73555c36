"""What handlers need to know about, and do in the name of, the notifying thread.

* :func:`credentials` reads the thread's ids, groups, umask and capabilities from
  ``/proc/<tid>/status`` (checked with ID_VALID afterwards: the tid may be recycled).
* :func:`acting_as` runs filesystem work with the thread's fsuid/fsgid/groups: the
  calls are per-thread (raw syscalls, not glibc's process-wide wrappers), so only the
  calling supervisor thread changes identity, and switching fsuid away from 0 drops the
  root filesystem capabilities, which the switch back restores.
* :func:`write_memory` writes a syscall's *output* buffer (see its docstring).
* :func:`fetch_fd` duplicates one of the target's fds (pidfd_getfd) into the supervisor.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import threading
from dataclasses import dataclass

from ..kernel import sys as ksys
from ..supervisor import TargetGone

AT_FDCWD = -100


@dataclass(frozen=True)
class Credentials:
    """Identity of one target thread (from ``/proc/<tid>/status``)."""

    tgid: int
    uid: int
    gid: int
    fsuid: int
    fsgid: int
    groups: tuple[int, ...]
    umask: int
    cap_effective: int

    def has_cap(self, cap: int) -> bool:
        return bool(self.cap_effective >> cap & 1)


def credentials(n) -> Credentials:
    """The credentials of ``n``'s thread; TargetGone when it is no longer waiting."""
    own = getattr(n, "credentials", None)     # a notification that carries them (testing.FakeNotification)
    if own is not None:
        return own
    fields: dict[str, list[str]] = {}
    try:
        with open(f"/proc/{n.pid}/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                fields[key] = value.split()
    except (FileNotFoundError, ProcessLookupError):
        raise TargetGone(f"thread {n.pid} is gone") from None
    n.check_valid()
    return Credentials(tgid=int(fields["Tgid"][0]), uid=int(fields["Uid"][0]), gid=int(fields["Gid"][0]),
                       fsuid=int(fields["Uid"][3]), fsgid=int(fields["Gid"][3]),
                       groups=tuple(int(g) for g in fields.get("Groups", [])),
                       umask=int(fields.get("Umask", ["0022"])[0], 8),
                       cap_effective=int(fields.get("CapEff", ["0"])[0], 16))


_identity_lock = threading.local()


@contextlib.contextmanager
def acting_as(creds: Credentials | None):
    """Run the body with ``creds``' fsuid/fsgid/groups in this thread (no-op for None, fsuid 0, or the
    identity this thread already has)."""
    if (creds is None or (creds.fsuid == 0 and creds.fsgid == 0) or getattr(_identity_lock, "active", False)
            or _is_ours(creds)):      # already this identity: nothing to switch (and no privilege needed)
        yield
        return
    saved_groups = os.getgroups()
    _identity_lock.active = True
    try:
        _set_groups(creds.groups)
        ksys.raw_syscall("setfsgid", ctypes.c_uint(creds.fsgid))
        ksys.raw_syscall("setfsuid", ctypes.c_uint(creds.fsuid))
        yield
    finally:
        try:
            ksys.raw_syscall("setfsuid", ctypes.c_uint(os.geteuid()))
            ksys.raw_syscall("setfsgid", ctypes.c_uint(os.getegid()))
            _set_groups(saved_groups)
        finally:   # a failed switch must not leave the flag set: later calls would skip the switch
            _identity_lock.active = False


def _is_ours(creds: Credentials) -> bool:
    return (creds.fsuid, creds.fsgid) == (os.geteuid(), os.getegid()) and set(creds.groups) == set(os.getgroups())


def _set_groups(groups) -> None:
    array = (ctypes.c_uint * max(1, len(groups)))(*groups)
    ksys.raw_syscall("setgroups", ctypes.c_int(len(groups)), array)


def write_memory(n, address: int, data: bytes) -> None:
    """Write ``data`` into the target's output buffer at ``address`` for notification ``n``.

    seccomp_unotify(2) warns that writing target memory is never safe in general: a target
    that abandoned the syscall (signal) may have reused the memory. Handlers only use this
    for the buffer the *emulated syscall itself* fills (uname, clock_gettime, getrandom,
    stat…), exactly what the kernel would write there; ID_VALID is checked right before and
    right after, so the window is the same one the kernel's own copy-out has against a
    racing thread of the target. Raises TargetGone, or OSError(EFAULT) for a bad buffer.
    """
    if not data:
        return
    writer = getattr(n, "write_memory", None)  # a notification with memory of its own (testing.FakeNotification)
    if writer is not None:
        return writer(address, data)
    n.check_valid()
    try:
        written = ksys.process_vm_writev(n.pid, address, data)
    except OSError as exc:
        if not n.valid():
            raise TargetGone(f"notification {n.id} is no longer valid") from None
        if exc.errno in (errno.ESRCH,):
            raise TargetGone(f"thread {n.pid} is gone") from None
        raise
    if written != len(data):
        raise OSError(errno.EFAULT, "short write into the target's buffer")
    n.check_valid()


def read_exact(n, address: int, length: int) -> bytes:
    """Exactly ``length`` bytes of target memory for ``n`` (:meth:`Notification.read_memory`);
    OSError(EFAULT) when the range runs into unmapped memory, as the kernel's copy-in would.
    Nothing is read (no ID_VALID either) for ``length`` 0."""
    if not length:
        return b""
    data = n.read_memory(address, length)
    if len(data) < length:
        raise OSError(errno.EFAULT, os.strerror(errno.EFAULT))
    return data


def fetch_fd(n, fd: int, creds: Credentials | None = None) -> int:
    """A duplicate (O_CLOEXEC) of ``fd`` of the notifying thread's process (pidfd_getfd).

    OSError(EBADF) when it has no such fd. The pidfd is opened per call: children of a
    launched target share its listener but not its fd table.
    """
    tgid = (creds or credentials(n)).tgid
    try:
        pidfd = os.pidfd_open(tgid)
    except ProcessLookupError:
        raise TargetGone(f"thread {n.pid} is gone") from None
    try:
        dup = ksys.pidfd_getfd(pidfd, fd)
    finally:
        os.close(pidfd)
    if not n.valid():
        os.close(dup)
        raise TargetGone(f"notification {n.id} is no longer valid")
    return dup


def signed32(value: int) -> int:
    """A register holding a C ``int`` as a Python int (AT_FDCWD = -100)."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def run_in_child(action) -> int:
    """Run ``action()`` in a forked child (for what a multi-threaded process cannot do, such as
    joining a mount namespace). Returns 0, or the errno of the OSError it raised (EIO otherwise)."""
    child = os.fork()
    if child == 0:
        code = 255
        try:
            action()
            code = 0
        except OSError as exc:
            code = exc.errno if exc.errno and exc.errno < 255 else 255
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    code = os.waitstatus_to_exitcode(status)
    return errno.EIO if code < 0 or code == 255 else code
