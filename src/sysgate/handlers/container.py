"""``container``: what LXD/Incus and seccompagent emulate for unprivileged containers.

The supervisor performs privileged calls *on behalf of* the target, in the target's
view of the filesystem, after checking them against allow-lists:

* ``mknod``/``mknodat``: character devices in ``devices`` (default: null, zero, full,
  random, urandom, tty by major:minor) are created by the supervisor and chowned to the
  caller's fsuid/fsgid; fifos, sockets and regular files are created as the caller (no
  privilege involved); any other device fails with ``EPERM``.
* ``mkdir``/``mkdirat``: directories whose path (as the target sees it) matches a glob in
  ``mkdir`` are created by the supervisor and chowned to the caller; others get
  ``mkdir_otherwise``: CONTINUE (default: the kernel decides with the caller's own rights,
  so nothing is granted and no pointer is trusted) or an errno.
* ``mount``: mounts of an allow-listed ``fstype`` on a target directory matching its glob,
  with flags from the allowed set, are performed in the caller's **mount namespace** by a
  forked helper (setns(2) to a mount namespace needs an unshared fs_struct, i.e. a
  single-threaded process, which the multi-threaded supervisor is not). Pure
  propagation changes (``MS_PRIVATE``/``MS_SLAVE``/``MS_SHARED``/``MS_UNBINDABLE`` with
  ``MS_REC``) are performed the same way. Everything else fails with ``EPERM``.
  Filesystems whose contents depend on the mounter's other namespaces (``proc``: pid,
  ``sysfs``: net, ``mqueue``: ipc, ``cgroup``/``cgroup2``: cgroup) are refused in the
  config: the helper joins only the mount namespace, so they would show the host's view.
* ``sysinfo``: the real values, with ``totalram``/``freeram`` replaced by ``memory``
  (bytes) or the caller's cgroup memory limit (``memory="cgroup"``), as LXCFS does.

Paths are resolved like :mod:`.fs` opens: in the target's root and cwd with openat2
(``RESOLVE_IN_ROOT|RESOLVE_NO_MAGICLINKS``); the created node's parent is the resolved,
checked directory fd, never a path re-read later. The helper mounts with the
supervisor's privileges (the initial user namespace): fine for root-run containers,
more than an unprivileged container's own user namespace would allow.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat as _stat
import struct

from ..errors import SysgateError
from ..kernel import abi
from ..kernel import calls
from ..policy import constants
from ..supervisor import Reply, TargetGone
from .base import ENOSYS, Handler
from .fs import AT_EACCESS, AT_EMPTY_PATH, Resolver, fd_path, glob_regex
from .target import AT_FDCWD, acting_as, credentials, run_in_child, signed32, write_memory

EPERM = Reply.errno(errno.EPERM)
#: (major, minor) -> name of the character devices created by default.
SAFE_DEVICES = {(1, 3): "null", (1, 5): "zero", (1, 7): "full", (1, 8): "random", (1, 9): "urandom", (5, 0): "tty"}
_PROPAGATION = ("MS_PRIVATE", "MS_SLAVE", "MS_SHARED", "MS_UNBINDABLE")
DEFAULT_MOUNT_FLAGS = ("MS_RDONLY", "MS_NOSUID", "MS_NODEV", "MS_NOEXEC", "MS_NOATIME", "MS_NODIRATIME",
                       "MS_RELATIME", "MS_STRICTATIME", "MS_SILENT")
#: filesystem types whose contents follow the mounter's other namespaces -> what they would leak
HOST_VIEW_FSTYPES = {"proc": "processes (pid namespace)", "sysfs": "network devices (net namespace)",
                     "mqueue": "message queues (ipc namespace)", "cgroup": "cgroup tree (cgroup namespace)",
                     "cgroup2": "cgroup tree (cgroup namespace)"}
_CLONE_NEWNS = 0x00020000
_SYSINFO_SIZE = 112      # x86_64/aarch64 struct sysinfo
_SYSINFO_RAM = struct.Struct("=QQ")   # totalram, freeram at offset 32
_SYSINFO_UNIT = struct.Struct("=I")   # mem_unit at offset 104
_libc = ctypes.CDLL(None, use_errno=True)


def _flag(name: str) -> int:
    value = constants.lookup(name)
    if value is None:
        raise SysgateError(f"unknown mount flag {name!r}")
    return value


class MountRule:
    """Allow ``fstype`` mounted on directories matching ``target`` with flags in ``flags``."""

    def __init__(self, fstype: str, target: str = "/**", flags=DEFAULT_MOUNT_FLAGS, source: str | None = None):
        if fstype in HOST_VIEW_FSTYPES:
            raise SysgateError(f"mount rule for {fstype!r}: not supported; the mount helper joins only the "
                               f"target's mount namespace, so {fstype} would show the host's "
                               f"{HOST_VIEW_FSTYPES[fstype]} instead of the target's")
        self.fstype, self.target, self.source = fstype, target, source
        self.regex = glob_regex(target.rstrip("/") or "/")
        self.flags = 0
        for name in flags:
            self.flags |= _flag(name)

    @classmethod
    def from_config(cls, spec) -> "MountRule":
        if isinstance(spec, str):
            return cls(spec)
        if not isinstance(spec, dict) or "fstype" not in spec or set(spec) - {"fstype", "target", "flags", "source"}:
            raise SysgateError(f"mount rule {spec!r}: want {{\"fstype\": ..., \"target\": GLOB, \"flags\": [...]}}")
        strings = isinstance(spec.get("flags", []), list) and all(isinstance(f, str) for f in spec.get("flags", []))
        if not (isinstance(spec["fstype"], str) and isinstance(spec.get("target", ""), str) and strings
                and isinstance(spec.get("source", ""), (str, type(None)))):
            raise SysgateError(f"mount rule {spec!r}: fstype, target and source are strings, flags a list of strings")
        return cls(spec["fstype"], spec.get("target", "/**"), spec.get("flags", DEFAULT_MOUNT_FLAGS),
                   spec.get("source"))

    def allows(self, fstype: str, target: str, flags: int, source: str) -> bool:
        return (fstype == self.fstype and not flags & ~self.flags and self.regex.match(target) is not None
                and (self.source is None or source == self.source))


class ContainerHandler(Handler):
    """mknod/mkdir/mount emulation from allow-lists, and sysinfo faking."""

    name = "container"
    syscalls = ("mknod", "mknodat", "mkdir", "mkdirat", "mount", "sysinfo")
    blocking = True

    def __init__(self, *, devices=SAFE_DEVICES, mkdir=(), mkdir_otherwise: str | int = "continue", mounts=(),
                 memory: int | str | None = None):
        self.devices = {tuple(d) if not isinstance(d, str) else _parse_device(d) for d in devices}
        self.mkdir = [glob_regex(p.rstrip("/") or "/") for p in mkdir]
        self.mkdir_otherwise = Reply.continue_() if mkdir_otherwise == "continue" else Reply.errno(mkdir_otherwise)
        self.mounts = [m if isinstance(m, MountRule) else MountRule.from_config(m) for m in mounts]
        if memory is not None and memory != "cgroup" and not (isinstance(memory, int) and memory > 0):
            raise SysgateError(f"container memory must be a byte count or 'cgroup', not {memory!r}")
        self.memory = memory

    # --- helpers
    @contextlib.contextmanager
    def _parent(self, n, at: bool):
        """Yield (creds, our O_PATH fd of the parent directory, last component, the path as the
        target sees it, the remaining arguments) of a mknod/mkdir-style call."""
        a = n.args
        if at:
            dirfd, path, rest = signed32(a[0]), n.read_string(a[1]), a[2:]
        else:
            dirfd, path, rest = AT_FDCWD, n.read_string(a[0]), a[1:]
        creds = credentials(n)
        with Resolver(n, creds) as resolver:
            with acting_as(creds):      # walk with the caller's search permissions
                dfd, name, view = resolver.parent(dirfd, path.rstrip(b"/") or path)
            try:
                if not name or name in (b".", b".."):
                    raise OSError(errno.EEXIST, os.strerror(errno.EEXIST))
                yield creds, dfd, name, view, rest
            finally:
                os.close(dfd)

    @staticmethod
    def _may_write(creds, dfd: int) -> None:
        with acting_as(creds):
            calls.raw_syscall("faccessat2", ctypes.c_int(dfd), ctypes.c_char_p(b""), ctypes.c_int(os.W_OK | os.X_OK),
                             ctypes.c_int(AT_EMPTY_PATH | AT_EACCESS))

    # --- mknod
    def _mknod(self, n, at: bool = False):
        a = n.args[2:] if at else n.args[1:]
        mode, dev = a[0] & 0xFFFFFFFF, a[1] & 0xFFFFFFFF
        kind = _stat.S_IFMT(mode) or _stat.S_IFREG
        if kind == _stat.S_IFBLK or (kind == _stat.S_IFCHR and (os.major(dev), os.minor(dev)) not in self.devices):
            return EPERM
        if kind not in (_stat.S_IFCHR, _stat.S_IFIFO, _stat.S_IFSOCK, _stat.S_IFREG):
            return Reply.errno(errno.EINVAL)
        with self._parent(n, at) as (creds, dfd, name, _, _):
            perms = mode & 0o7777 & ~creds.umask
            if kind == _stat.S_IFCHR:
                self._may_write(creds, dfd)
                os.mknod(name, kind | perms, dev, dir_fd=dfd)
                os.chown(name, creds.fsuid, creds.fsgid, dir_fd=dfd, follow_symlinks=False)
            else:
                with acting_as(creds):
                    os.mknod(name, kind | perms, 0, dir_fd=dfd)
        return Reply.value(0)

    def _mknodat(self, n):
        return self._mknod(n, at=True)

    # --- mkdir
    def _mkdir(self, n, at: bool = False):
        with self._parent(n, at) as (creds, dfd, name, view, rest):
            if not any(r.match(view) for r in self.mkdir):
                return self.mkdir_otherwise
            os.mkdir(name, rest[0] & 0o7777 & ~creds.umask, dir_fd=dfd)
            os.chown(name, creds.fsuid, creds.fsgid, dir_fd=dfd, follow_symlinks=False)
        return Reply.value(0)

    def _mkdirat(self, n):
        return self._mkdir(n, at=True)

    # --- mount
    def _mount(self, n):
        source_p, target_p, fstype_p, flags, data_p = n.args[:5]
        source = n.read_string(source_p).decode("utf-8", "replace") if source_p else ""
        target = n.read_string(target_p)
        fstype = n.read_string(fstype_p).decode("utf-8", "replace") if fstype_p else ""
        data = n.read_string(data_p) if data_p and fstype else None
        flags &= 0xFFFFFFFF
        propagation = 0
        for name in _PROPAGATION:
            propagation |= _flag(name)
        recursive = _flag("MS_REC")
        creds = credentials(n)
        with Resolver(n, creds) as resolver:
            with acting_as(creds):
                tfd = resolver.open(AT_FDCWD, target, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                view = resolver.view(fd_path(tfd))
                if flags & propagation and not flags & ~(propagation | recursive):
                    fstype_arg, source_arg, data = None, None, None
                elif view is not None and any(r.allows(fstype, view, flags, source) for r in self.mounts):
                    fstype_arg, source_arg = fstype.encode(), source.encode() or fstype.encode()
                else:
                    return EPERM
                err = _in_mount_namespace(n, tfd, lambda: _mount_here(source_arg, fstype_arg, flags, data))
                return Reply.value(0) if err == 0 else Reply.errno(err)
            finally:
                os.close(tfd)

    # --- sysinfo
    def _sysinfo(self, n):
        if n.arch != abi.native_arch():
            return ENOSYS        # the 32-bit compat struct differs
        buf = ctypes.create_string_buffer(_SYSINFO_SIZE)
        if _libc.sysinfo(buf) != 0:
            return Reply.errno(ctypes.get_errno())
        raw = bytearray(buf.raw)
        limit = self._memory_limit(n)
        if limit is not None:
            total, free = limit
            unit = _SYSINFO_UNIT.unpack_from(raw, 104)[0] or 1
            _SYSINFO_RAM.pack_into(raw, 32, total // unit, free // unit)
        write_memory(n, n.args[0], bytes(raw))
        return Reply.value(0)

    def _memory_limit(self, n) -> tuple[int, int] | None:
        if self.memory is None:
            return None
        if self.memory != "cgroup":
            return self.memory, self.memory
        limit = cgroup_memory(n.pid)
        n.check_valid()  # /proc/<tid>/cgroup may have described a recycled tid
        return limit


def _parse_device(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(":")
    try:
        return int(major), int(minor)
    except ValueError:
        raise SysgateError(f"device {text!r}: want MAJOR:MINOR") from None


def cgroup_memory(pid: int) -> tuple[int, int] | None:
    """(limit, limit - usage) of ``pid``'s memory cgroup (v2 or v1), or None when unlimited."""
    try:
        with open(f"/proc/{pid}/cgroup") as fh:
            lines = [line.rstrip("\n").split(":", 2) for line in fh]
    except OSError:
        return None
    for _, controllers, path in lines:
        if controllers == "":
            files = (f"/sys/fs/cgroup{path}/memory.max", f"/sys/fs/cgroup{path}/memory.current")
        elif "memory" in controllers.split(","):
            base = f"/sys/fs/cgroup/memory{path}"
            files = (f"{base}/memory.limit_in_bytes", f"{base}/memory.usage_in_bytes")
        else:
            continue
        try:
            with open(files[0]) as fh:
                limit = fh.read().strip()
            with open(files[1]) as fh:
                usage = int(fh.read())
        except (OSError, ValueError):
            continue
        if limit == "max" or int(limit) >= 1 << 60:
            continue
        return int(limit), max(0, int(limit) - usage)
    return None


def _in_mount_namespace(n, dirfd: int, action) -> int:
    """Run ``action()`` in a forked helper that joined the mount namespace of ``n``'s thread with
    its cwd at ``dirfd``. Returns 0 or the errno it failed with; TargetGone when the thread stopped
    waiting (its tid may then name another process: ID_VALID is checked after the open)."""
    try:
        ns = os.open(f"/proc/{n.pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, ProcessLookupError):
        raise TargetGone(f"thread {n.pid} is gone") from None
    if not n.valid():
        os.close(ns)
        raise TargetGone(f"notification {n.id} is no longer valid")

    def join_and_act():
        if _libc.setns(ns, _CLONE_NEWNS) != 0:
            raise OSError(ctypes.get_errno(), "setns")
        os.fchdir(dirfd)
        action()
    try:
        return run_in_child(join_and_act)
    finally:
        os.close(ns)


def _mount_here(source: bytes | None, fstype: bytes | None, flags: int, data: bytes | None) -> None:
    """mount(2) on the current directory (runs in the helper)."""
    if _libc.mount(source, b".", fstype, ctypes.c_ulong(flags), data) != 0:
        raise OSError(ctypes.get_errno(), "mount")
