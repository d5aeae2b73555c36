"""What handlers need to know about, and do in the name of, the notifying thread.

* :func:`credentials` reads the thread's ids, groups, umask and capabilities from
  ``/proc/<tid>/status`` (:mod:`sysgate.kernel.procfs`; checked with ID_VALID afterwards: the tid may be recycled);
  :func:`take_thread` hands out the thread's kept ``/proc/TID`` fds for a handler's whole call.
* :func:`acting_as` runs filesystem work with the thread's fsuid/fsgid/groups *and*
  effective capabilities: the calls are per-thread (raw syscalls, not glibc's
  process-wide wrappers), so only the calling supervisor thread changes identity, and the
  kernel decides what the supervisor does on the target's behalf exactly as it would for
  the target. :func:`as_supervisor` switches back inside it for /proc and pidfd work.
* :func:`same_user_namespace`: ids and capabilities of a target in another user
  namespace cannot be reproduced by the supervisor (callers fail closed).
* :func:`write_memory` writes a syscall's *output* buffer (see its docstring).
* :func:`fetch_fd` duplicates one of the target's fds (pidfd_getfd) into the supervisor.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import threading
from dataclasses import dataclass
from typing import NamedTuple

from ..kernel import calls, procfs
from ..supervisor import TargetGone

AT_FDCWD = -100


class Credentials(NamedTuple):
    """Identity of one target thread (from ``/proc/<tid>/status``). A named tuple, not a frozen
    dataclass: one is built per emulated call, three times faster."""

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


_THREADS = procfs.ThreadFiles()     # the notifying threads' /proc directory and status, kept open (see there)


def credentials(n) -> Credentials:
    """The credentials of ``n``'s thread; TargetGone when it is no longer waiting (ID_VALID is
    checked after the read: the tid may have been recycled)."""
    creds = unchecked_credentials(n)
    n.check_valid()
    return creds


def take_thread(n) -> tuple[tuple[int, int], bytes]:
    """(``n``'s thread's kept ``/proc/TID`` directory and status fds, its status text read now),
    for a caller that looks at the thread several times in one call (:meth:`FsHandler.handle`);
    :func:`give_back` the pair afterwards. TargetGone when the thread is gone (not checked with
    ID_VALID: the caller checks once after its last read, see :func:`unchecked_credentials`)."""
    try:
        return _THREADS.take(n.pid)
    except (FileNotFoundError, ProcessLookupError):
        raise TargetGone(f"thread {n.pid} is gone") from None


def give_back(n, pair: tuple[int, int]) -> None:
    _THREADS.put(n.pid, pair)


def unchecked_credentials(n, status: bytes | None = None) -> Credentials:
    """:func:`credentials` without the ID_VALID check, for a caller that checks it once after its
    last read of the target and before its decision takes effect (:meth:`FsHandler.handle`);
    ``status``: the thread's status text that caller read with :func:`take_thread`.

    On every emulated call: ``/proc/<tid>/status`` is read whole and afresh (a thread with
    thousands of groups needs more than one read; the file is kept open per thread,
    :class:`~sysgate.kernel.procfs.ThreadFiles`) and only the fields used are parsed
    (:func:`~sysgate.kernel.procfs.credential_fields`)."""
    own = getattr(n, "credentials", None)     # a notification that carries them (testing.FakeNotification)
    if own is not None:
        return own
    if status is None:
        pair, status = take_thread(n)
        give_back(n, pair)
    return Credentials._make(procfs.credential_fields(status))


def same_user_namespace(n, check: bool = True, directory: int | None = None) -> bool:
    """Is ``n``'s thread in the supervisor's user namespace? (Its ids and capabilities mean
    something else in another one: the supervisor cannot act with them.) ``check=False``
    skips the ID_VALID after the look, for a caller that checks once later (see
    :func:`unchecked_credentials`); ``directory``: that caller's fd of the thread's ``/proc/TID``
    (:func:`take_thread`)."""
    try:
        if directory is None:
            theirs = os.readlink(f"/proc/{n.pid}/ns/user")
        else:
            theirs = os.readlink("ns/user", dir_fd=directory)
    except (FileNotFoundError, ProcessLookupError):
        raise TargetGone(f"thread {n.pid} is gone") from None
    if check:
        n.check_valid()
    return theirs == _own_user_namespace()


@functools.cache
def _own_user_namespace() -> str:
    """``user:[INODE]``: a namespace's inode number is unique while it lives (ours does), and
    reading the link costs half a stat of it (no nsfs dentry to build)."""
    return os.readlink("/proc/self/ns/user")


# --- acting as the target ------------------------------------------------------------
_CAP_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _capget() -> tuple[int, int, int]:
    """(effective, permitted, inheritable) of the calling thread."""
    header, data = _CapHeader(_CAP_VERSION_3, 0), (_CapData * 2)()
    calls.raw_syscall("capget", ctypes.byref(header), data)
    return tuple(getattr(data[0], f) | getattr(data[1], f) << 32 for f in ("effective", "permitted", "inheritable"))


def _capset(effective: int, permitted: int, inheritable: int) -> None:
    """Set the calling *thread's* capability sets (capset(2) with pid 0 acts on this thread only)."""
    header, data = _CapHeader(_CAP_VERSION_3, 0), (_CapData * 2)()
    for i in (0, 1):
        data[i].effective = effective >> 32 * i & 0xFFFFFFFF
        data[i].permitted = permitted >> 32 * i & 0xFFFFFFFF
        data[i].inheritable = inheritable >> 32 * i & 0xFFFFFFFF
    calls.raw_syscall("capset", ctypes.byref(header), data)


_CAP_SETGID, _CAP_SETUID = 6, 7


def _setfsid(name: str, value: int, verify: bool) -> None:
    """setfsuid/setfsgid. The call reports no error: without CAP_SETUID/CAP_SETGID (``verify``)
    the value is read back, and a switch that did not happen fails closed."""
    calls.raw_syscall(name, ctypes.c_uint(value))
    if verify and calls.raw_syscall(name, ctypes.c_uint(0xFFFFFFFF)) != value:
        raise OSError(errno.EPERM, f"{name}({value}) did not take effect")


@dataclass
class _Identity:
    fsuid: int
    fsgid: int
    groups: list[int]
    caps: tuple[int, int, int]

    def __post_init__(self):
        # the kernel sorts a thread's groups (status lists them so): compared as they come per call
        self.sorted_groups = tuple(sorted(self.groups))

    @property
    def verify(self) -> bool:
        return (self.caps[0] >> _CAP_SETUID & 1 and self.caps[0] >> _CAP_SETGID & 1) == 0


def _own_identity() -> _Identity:
    """The supervisor thread's own identity, read once per thread (it does not change its ids)."""
    own = _state.own
    if own is None:
        own = _state.own = _Identity(os.geteuid(), os.getegid(), os.getgroups(), _capget())
    return own


def _apply(fsuid: int, fsgid: int, groups, effective: int, own: _Identity) -> None:
    """Switch this thread to fsuid/fsgid/groups and the effective capability set ``effective``.
    The order matters: setfsuid away from 0 clears the filesystem capabilities from the
    effective set (and back to 0 raises them), so the capabilities are set last."""
    if list(groups) != own.groups:
        _set_groups(groups)
    _setfsid("setfsgid", fsgid, own.verify)
    _setfsid("setfsuid", fsuid, own.verify)
    _capset(effective, own.caps[1], own.caps[2])


class _ThreadState(threading.local):
    """Per supervisor thread: its own identity (read once), and while :func:`acting_as` switched,
    that identity (``saved``) and the target's ``creds``. Class attributes are the defaults, so
    reading them never raises (no AttributeError per call)."""

    own: _Identity | None = None
    saved: _Identity | None = None
    creds: Credentials | None = None


_state = _ThreadState()


def acting_as(creds: Credentials | None):
    """Run the body with ``creds``' fsuid, fsgid, supplementary groups and *effective
    capabilities* in this thread, so that the kernel's permission checks on what the
    supervisor does are the ones it would make for the target (a root target that dropped
    its capabilities is refused what it would be refused). All calls are per-thread raw
    syscalls (not glibc's process-wide wrappers); the supervisor's permitted set is kept so
    the ``finally`` can restore everything. No-op for None, when nested, or when the target
    already has the supervisor's identity (a shared null context: nothing is built per call).
    The target's effective set is limited to our permitted one (capset cannot raise beyond it)."""
    if creds is None or _state.saved is not None:
        return _NO_SWITCH
    own = _own_identity()
    effective = creds.cap_effective & own.caps[1]
    if creds.fsuid == own.fsuid and creds.fsgid == own.fsgid and effective == own.caps[0] and \
            (creds.groups == own.sorted_groups or sorted(creds.groups) == own.sorted_groups):
        return _NO_SWITCH
    return _switched(creds, effective, own)


_NO_SWITCH = contextlib.nullcontext()


@contextlib.contextmanager
def _switched(creds: Credentials, effective: int, own: _Identity):
    """The switching half of :func:`acting_as`."""
    _state.saved, _state.creds = own, creds
    try:
        _apply(creds.fsuid, creds.fsgid, creds.groups, effective, own)
        yield
    finally:
        _state.saved = _state.creds = None
        _restore(own, creds)


def _restore(own: _Identity, creds: Credentials) -> None:
    """Back to the supervisor's identity: capabilities first (setfsuid and setgroups need them)."""
    _capset(*own.caps)
    _setfsid("setfsuid", own.fsuid, own.verify)
    _setfsid("setfsgid", own.fsgid, own.verify)
    if list(creds.groups) != own.groups:
        _set_groups(own.groups)
    if own.caps[0] != own.caps[1]:
        _capset(*own.caps)        # setfsuid back to 0 raised the filesystem capabilities: exact again


def as_supervisor():
    """Inside :func:`acting_as`: run the body with the supervisor's own identity again (to
    open ``/proc/<tid>/…`` links or call pidfd_getfd, which check *our* right to inspect the
    target, not the target's rights), then switch back. Outside it (or when acting_as did not
    switch): a shared null context."""
    if _state.saved is None:
        return _NO_SWITCH
    return _as_supervisor(_state.saved, _state.creds)


@contextlib.contextmanager
def _as_supervisor(own: _Identity, creds: Credentials):
    _restore(own, creds)
    _state.saved = None
    try:
        yield
    finally:
        _apply(creds.fsuid, creds.fsgid, creds.groups, creds.cap_effective & own.caps[1], own)
        _state.saved = own


def _set_groups(groups) -> None:
    array = (ctypes.c_uint * max(1, len(groups)))(*groups)
    calls.raw_syscall("setgroups", ctypes.c_int(len(groups)), array)


def write_memory(n, address: int, data: bytes) -> None:
    """Write ``data`` into the target's output buffer at ``address`` for notification ``n``.

    seccomp_unotify(2) warns that writing target memory is never safe in general: a target
    that abandoned the syscall (signal) may have reused the memory. Handlers only use this
    for the buffer the *emulated syscall itself* fills (uname, clock_gettime, getrandom,
    stat…), exactly what the kernel would write there; ID_VALID is checked right before, so the
    window is the same one the kernel's own copy-out has against a racing thread of the target.
    Not after: nothing could undo the write, and the reply that follows fails (ENOENT) for a
    notification no longer valid, as a TargetGone would have skipped it. Raises TargetGone, or
    OSError(EFAULT) for a bad buffer.
    """
    if not data:
        return
    writer = getattr(n, "write_memory", None)  # a notification with memory of its own (testing.FakeNotification)
    if writer is not None:
        return writer(address, data)
    n.check_valid()
    try:
        with as_supervisor():
            written = calls.process_vm_writev(n.pid, address, data)
    except OSError as exc:
        if not n.valid():
            raise TargetGone(f"notification {n.id} is no longer valid") from None
        if exc.errno in (errno.ESRCH,):
            raise TargetGone(f"thread {n.pid} is gone") from None
        raise
    if written != len(data):
        raise OSError(errno.EFAULT, "short write into the target's buffer")


def read_string(n, address: int, limit: int | None = None) -> bytes:
    """A NUL-terminated string argument of ``n`` (:meth:`Notification.read_string`), read with the
    supervisor's own right to read target memory, also inside :func:`acting_as`."""
    with as_supervisor():
        return n.read_string(address) if limit is None else n.read_string(address, limit)


def read_exact(n, address: int, length: int) -> bytes:
    """Exactly ``length`` bytes of target memory for ``n`` (:meth:`Notification.read_memory`);
    OSError(EFAULT) when the range runs into unmapped memory, as the kernel's copy-in would.
    Read with the supervisor's own rights, as :func:`read_string`. Nothing is read (no ID_VALID
    either) for ``length`` 0."""
    if not length:
        return b""
    with as_supervisor():
        data = n.read_memory(address, length)
    if len(data) < length:
        raise OSError(errno.EFAULT, os.strerror(errno.EFAULT))
    return data


def fetch_fd(n, fd: int, creds: Credentials | None = None, *, leader: bool = False) -> int:
    """A duplicate (O_CLOEXEC) of ``fd`` of the notifying thread (pidfd_getfd), from its own fd
    table, which the kernel uses for the fd arguments of its calls (a thread may have unshared
    it: CLONE_FILES); ``leader``: from the thread-group leader's, as ``/proc/self/fd`` shows.

    OSError(EBADF) when it has no such fd. The pidfd is opened per call: children of a
    launched target share its listener but not its fd table (O_PATH fds too). Before Linux 6.9
    (no PIDFD_THREAD) the leader's table is used. Runs with the supervisor's identity (see
    :func:`as_supervisor`).
    """
    tgid = (creds or credentials(n)).tgid
    with as_supervisor():
        try:
            pidfd = os.pidfd_open(tgid) if leader or n.pid == tgid else _thread_pidfd(n.pid, tgid)
        except ProcessLookupError:
            raise TargetGone(f"thread {n.pid} is gone") from None
        try:
            dup = calls.pidfd_getfd(pidfd, fd)
        finally:
            os.close(pidfd)
    if not n.valid():
        os.close(dup)
        raise TargetGone(f"notification {n.id} is no longer valid")
    return dup


def _thread_pidfd(tid: int, tgid: int) -> int:
    try:
        return calls.pidfd_open(tid, calls.PIDFD_THREAD)
    except OSError as exc:
        if exc.errno != errno.EINVAL:       # EINVAL: a kernel before 6.9
            raise
        return calls.pidfd_open(tgid)


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
