"""The rest of the path-taking syscalls for ``fs``: a mixin of :class:`~.fs.FsHandler`.

Same model as the open/stat family: the path is read **once**, resolved by the supervisor
(:meth:`FsHandler._lookup`, :meth:`FsHandler._in_parent`), the rules are checked on the object
actually reached, and the supervisor does the work on its own fd, as the target
(fsuid/fsgid/groups), then copies results into the target's buffers. Per call:

========================================  ==========  =============================================
calls                                     rule        how
========================================  ==========  =============================================
chmod, fchmodat, fchmodat2                write       ``fchmodat2(fd, "", mode, AT_EMPTY_PATH)``
chown, lchown, fchownat, i386 chown32,    write       ``fchownat(fd, "", uid, gid, AT_EMPTY_PATH)``
lchown32 (i386 chown/lchown: 16-bit ids)
[l]setxattr, [l]removexattr,              write       on ``/proc/self/fd/N`` (f*xattr refuse O_PATH
setxattrat, removexattrat                             fds); ``trusted.*``/``security.*`` need the
[l]getxattr, [l]listxattr,                read        target's own CAP_SYS_ADMIN (CAP_SETFCAP for
getxattrat, listxattrat                               ``security.capability``), not the supervisor's
file_getattr / file_setattr               read/write  on ``/proc/self/fd/N`` likewise
truncate, i386 truncate64                 write       regular files only; ``O_WRONLY`` reopen + ftruncate
statfs, i386 statfs64                     read        fstatfs on our fd; i386 layouts from :data:`ABI`
utime, utimes, futimesat, utimensat,      write       ``utimensat(fd, "", times, AT_EMPTY_PATH)``; a NULL
i386 utimensat_time64                                 path with a dirfd is futimens on the target's fd
mknod, mknodat                            write       files, FIFOs, sockets made in the checked parent;
                                          (new name)  device nodes: always EPERM (see :meth:`_do_mknod`)
getdents, getdents64                      read (fd)   x86_64: run on our pidfd_getfd duplicate (the open
                                                      file description, hence the offset, is shared);
                                                      i386: CONTINUE after the check (:data:`WEAK`)
inotify_add_watch                         read        added to the target's own instance through a
                                                      pidfd_getfd duplicate; the wd is returned
fanotify_mark                             read        inode marks likewise; mount/filesystem marks EPERM
name_to_handle_at                         --          EOPNOTSUPP (callers fall back to paths)
open_by_handle_at                         --          EPERM: a handle names an inode without a path
open_tree                                 read        an O_PATH open (OPEN_TREE_CLONE: EPERM)
:data:`REFUSED` (chroot, mount calls...)  --          EPERM
chdir, fchdir                             --          CONTINUE without reading anything (no decision)
execve, execveat                          read        refused when denied; allowed ones CONTINUE:
                                                      **a weaker guarantee**, see :data:`WEAK`
========================================  ==========  =============================================

Left to the kernel (not routed): calls on fds the target already holds (``fchmod``,
``fchown``, ``f*xattr``, ``ftruncate``, ``fstatfs``, ``futimens``): those files were opened
through ``fs`` (checked), inherited from before the sandbox, or received over a socket.

Why chdir/fchdir may CONTINUE: no memory is read and nothing is decided. Moving the cwd
grants nothing: every later relative path (and AT_EMPTY_PATH on AT_FDCWD) is resolved by
``fs`` from ``/proc/TID/cwd`` and checked by the real path of what it reaches, and listing
needs an fd, which needs an open (``tests/test_sandbox_fs_calls.py::
test_chdir_into_denied_dir_reaches_nothing``). What it reveals is what the kernel's own answer
reveals: that the directory exists and is searchable.

Exec is the one real gap: the kernel opens the binary (and the ELF or ``#!`` interpreter) itself,
reading the path again after our check. No condition visible from outside (one thread, say)
proves that nobody can rewrite the buffer meanwhile: another process may share the memory
(CLONE_VM, a MAP_SHARED mapping, /proc/PID/mem). So a denied binary is refused (that needs no
CONTINUE) and an allowed one is CONTINUEd, listed in :data:`WEAK` for the policy layer to warn
about; Landlock's EXECUTE right is the kernel-enforced guard.
"""
from __future__ import annotations

import ctypes
import errno
import os
import stat as _stat
import struct
from dataclasses import dataclass

from ..arch import table as arch_table
from ..kernel import abi
from ..kernel import calls
from ..supervisor import Reply
from .target import AT_FDCWD, fetch_fd, read_exact, read_string, signed32, write_memory

AT_EMPTY_PATH, AT_SYMLINK_NOFOLLOW = 0x1000, 0x100
_AT_PATH_FLAGS = AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW
_AT_EXECVE_CHECK = 0x10000
CAP_SYS_ADMIN, CAP_SETFCAP = 21, 31
XATTR_SIZE_MAX = XATTR_LIST_MAX = 65536
XATTR_NAME_MAX = 255
_XATTR_CREATE, _XATTR_REPLACE = 1, 2
_XATTR_ARGS = struct.Struct("=QII")           # struct xattr_args {u64 value; u32 size; u32 flags}
UTIME_NOW, UTIME_OMIT = (1 << 30) - 1, (1 << 30) - 2
_IN_DONT_FOLLOW, _IN_ONLYDIR, _IN_MASK_ADD, _IN_MASK_CREATE = 0x02000000, 0x01000000, 0x20000000, 0x10000000
_IN_ALL_BITS = 0xF700EFFF                     # ALL_INOTIFY_BITS: events and flags
_FAN_MARK_DONT_FOLLOW, _FAN_MARK_ONLYDIR, _FAN_MARK_FLUSH = 0x04, 0x08, 0x80
_FAN_MARK_TYPES = 0x10 | 0x100                # FAN_MARK_MOUNT, FAN_MARK_FILESYSTEM (0x110: MNTNS)
_FILE_ATTR_SIZE = 24                          # struct file_attr (FILE_ATTR_SIZE_VER0)
_STATFS_NATIVE = struct.Struct("=7Q2i3Q4Q")   # x86_64 struct statfs: longs, then fsid, 120 bytes
_HIGH32 = 0xFFFFFFFF00000000
_DENTS_MAX = 1 << 20                      # a getdents buffer larger than this is served in part


@dataclass(frozen=True)
class AbiLayout:
    """The structs the calls here copy in or out, for one ABI (widths from the architecture table)."""

    arch: arch_table.Arch
    statfs: struct.Struct | None        # struct statfs as statfs(2) writes it
    statfs64: struct.Struct | None      # struct statfs64 (statfs64(2): i386 only, size checked)
    uid16: frozenset            # calls whose uid/gid arguments are 16-bit (old_uid_t)

    @property
    def long(self) -> str:
        """C long / time_t / suseconds_t (struct code)."""
        return "q" if self.arch.long_bits == 64 else "i"

    @property
    def bits32(self) -> bool:
        """A 32-bit ABI: 64-bit arguments come split over two registers, and time64 structs'
        tv_nsec is read as its low 32 bits (the kernel's in_compat_syscall() rules)."""
        return self.arch.arg_bits == 32


ABI = {
    "x86_64": AbiLayout(arch_table.get("x86_64"), _STATFS_NATIVE, None, frozenset()),
    # compat_statfs: ints; compat_statfs64: packed (84 bytes); chown/lchown are chown16/lchown16
    "i386": AbiLayout(arch_table.get("i386"), struct.Struct("=7I2i3I4I"), struct.Struct("=2I5Q2i3I4I"),
                      frozenset({"chown", "lchown"})),
}

#: path-taking calls a sandbox never lets through: they change what a path names (mount table,
#: root) or act on files system-wide. EPERM is the kernel's own answer to a caller without the
#: capability, so programs already handle it.
#: (``open_tree`` without OPEN_TREE_CLONE is only an O_PATH open and is served as one by
#: :meth:`MetadataCalls._open_tree`; cloning a mount is refused there.)
REFUSED = ("chroot", "pivot_root", "mount", "umount", "umount2", "move_mount", "fspick", "mount_setattr",
           "open_tree_attr", "acct", "swapon", "swapoff", "quotactl", "uselib")
_OPEN_TREE_CLONE = 1

#: calls whose allowed case ends in CONTINUE after the path was checked: the guarantee is weaker
#: (the policy layer can warn). Everything else is emulated or refused.
_EXEC_RACE = ("the kernel opens the binary itself: the path was checked, but another thread (or a process "
              "sharing the memory) can rewrite the path buffer before the kernel reads it again and exec a binary "
              "the rules deny (the kernel's own permissions still apply); Landlock EXECUTE is the real guard")
_DENTS_RACE = ("i386 only: the directory behind the fd was checked, but a thread sharing the fd table can dup2 "
               "another directory fd (inherited, or received over SCM_RIGHTS) onto that number before the kernel runs")
WEAK = {"execve": _EXEC_RACE, "execveat": _EXEC_RACE, "getdents": _DENTS_RACE, "getdents64": _DENTS_RACE}


def abi_layout(n) -> AbiLayout:
    """The layouts of ``n``'s ABI; OSError(ENOSYS) for one not described here (x32…)."""
    layout = ABI.get(n.arch)
    if layout is None:
        raise OSError(errno.ENOSYS, f"no {n.arch} layouts")
    return layout


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >> 63 else value


def _wide(n, lo: int, hi: int) -> int:
    """A 64-bit argument split over two registers on i386 (little-endian: low word first)."""
    return (n.args[lo] & 0xFFFFFFFF) | (n.args[hi] & 0xFFFFFFFF) << 32


class MetadataCalls:
    """Mixin for :class:`~.fs.FsHandler`: ``_<syscall>(n, creds, resolver)`` methods (some made from
    the tables at the end of this module)."""

    meta_syscalls = ("chmod", "fchmodat", "fchmodat2", "chown", "lchown", "fchownat", "chown32", "lchown32",
                     "setxattr", "lsetxattr", "getxattr", "lgetxattr", "listxattr", "llistxattr",
                     "removexattr", "lremovexattr", "setxattrat", "getxattrat", "listxattrat", "removexattrat",
                     "truncate", "truncate64", "statfs", "statfs64",
                     "utime", "utimes", "futimesat", "utimensat", "utimensat_time64",
                     "mknod", "mknodat", "getdents", "getdents64", "inotify_add_watch", "fanotify_mark",
                     "name_to_handle_at", "open_by_handle_at", "chdir", "fchdir", "execve", "execveat",
                     "file_getattr", "file_setattr", "open_tree") + REFUSED
    weak_guarantees = WEAK

    # --- helpers
    def _path_args(self, n, spec):
        """(dirfd, path address, at-flags) from a table spec (dirfd index | None, path index,
        flags index | None, fixed flags)."""
        d, p, f, fixed = spec
        return (AT_FDCWD if d is None else signed32(n.args[d]), n.args[p],
                fixed | (0 if f is None else n.args[f] & 0xFFFFFFFF))

    def _object(self, n, creds, resolver, spec, modes):
        """Our checked O_PATH fd (or the target's own fd with AT_EMPTY_PATH) for a spec."""
        dirfd, address, flags = self._path_args(n, spec)
        if flags & ~_AT_PATH_FLAGS:
            raise OSError(errno.EINVAL, "unknown flags")
        return self._lookup(n, creds, resolver, dirfd, address, flags, modes)

    # --- chmod / chown
    def _do_chmod(self, n, creds, resolver, spec):
        mode = n.args[spec[-1]] & 0o7777
        fd = self._object(n, creds, resolver, spec[:-1], ("write",))
        try:
            calls.raw_syscall("fchmodat2", ctypes.c_int(fd), ctypes.c_char_p(b""), ctypes.c_uint(mode),
                             ctypes.c_int(AT_EMPTY_PATH))
        finally:
            os.close(fd)
        return Reply.value(0)

    def _do_chown(self, n, creds, resolver, spec):
        uid, gid = (n.args[i] & 0xFFFFFFFF for i in spec[-2:])
        if n.syscall in abi_layout(n).uid16:   # old_uid_t: 0xFFFF means "unchanged", like -1
            uid, gid = ((v & 0xFFFF) if v & 0xFFFF != 0xFFFF else 0xFFFFFFFF for v in (uid, gid))
        fd = self._object(n, creds, resolver, spec[:-2], ("write",))
        try:
            calls.raw_syscall("fchownat", ctypes.c_int(fd), ctypes.c_char_p(b""), ctypes.c_uint(uid),
                             ctypes.c_uint(gid), ctypes.c_int(AT_EMPTY_PATH))
        finally:
            os.close(fd)
        return Reply.value(0)

    # --- extended attributes
    def _xattr_name(self, n, address) -> bytes:
        try:
            name = read_string(n, address, XATTR_NAME_MAX + 1)
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG:
                raise OSError(errno.ERANGE, "xattr name too long") from None
            raise
        if not name:
            raise OSError(errno.ERANGE, "empty xattr name")
        return name

    @staticmethod
    def _xattr_privileged(creds, name: bytes, write: bool) -> bool:
        """Would the kernel refuse ``name`` to the target for lack of a capability? (The supervisor's
        own capabilities must not decide: it keeps CAP_SYS_ADMIN while acting with the target's fsuid.)"""
        if name.startswith(b"trusted."):
            return not creds.has_cap(CAP_SYS_ADMIN)
        if write and name.startswith(b"security."):
            return not creds.has_cap(CAP_SETFCAP if name == b"security.capability" else CAP_SYS_ADMIN)
        return False

    def _do_xattr(self, n, creds, resolver, spec):
        """One xattr call. ``spec``: (op, path spec, name register, value): value is (buffer, size
        [, flags]) registers, or ("args", struct register, its size register) for *xattrat."""
        op, path_spec, name_at, value_at = spec
        a = n.args
        if path_spec[2] is not None and a[path_spec[2]] & 0xFFFFFFFF & ~_AT_PATH_FLAGS:
            return Reply.errno(errno.EINVAL)
        if op == "list":
            return self._xattr_list(n, creds, resolver, path_spec, a[value_at[0]], a[value_at[1]])
        name = self._xattr_name(n, a[name_at])
        value, size, flags = _xattr_value(n, value_at) if value_at else (0, 0, 0)
        if op == "set":
            if flags & ~(_XATTR_CREATE | _XATTR_REPLACE):
                return Reply.errno(errno.EINVAL)
            if size > XATTR_SIZE_MAX:
                return Reply.errno(errno.E2BIG)
            data = read_exact(n, value, size)
        elif flags:
            return Reply.errno(errno.EINVAL)   # getxattrat: xattr_args.flags must be 0
        write = op != "get"
        fd = self._object(n, creds, resolver, path_spec, ("write",) if write else ("read",))
        try:
            if self._xattr_privileged(creds, name, write):
                return Reply.errno(errno.EPERM if write else errno.ENODATA)
            where = f"/proc/self/fd/{fd}"      # follows to our object itself (never further)
            if op == "set":
                os.setxattr(where, name, data, flags)
                return Reply.value(0)
            if op == "remove":
                os.removexattr(where, name)
                return Reply.value(0)
            got = os.getxattr(where, name)
        finally:
            os.close(fd)
        return self._copy_out(n, value, min(size, XATTR_SIZE_MAX), got)

    def _xattr_list(self, n, creds, resolver, path_spec, buf, size):
        fd = self._object(n, creds, resolver, path_spec, ("read",))
        try:
            names = [os.fsencode(x) for x in os.listxattr(f"/proc/self/fd/{fd}")]
        finally:
            os.close(fd)
        data = b"".join(x + b"\0" for x in names if not self._xattr_privileged(creds, x, False))
        return self._copy_out(n, buf, min(size, XATTR_LIST_MAX), data)

    @staticmethod
    def _copy_out(n, address, size, data):
        """The size-query convention of getxattr/listxattr: size 0 asks for the length."""
        if size == 0:
            return Reply.value(len(data))
        if len(data) > size:
            return Reply.errno(errno.ERANGE)
        write_memory(n, address, data)
        return Reply.value(len(data))

    # --- truncate, statfs
    def _do_truncate(self, n, creds, resolver, length):
        if length < 0:
            return Reply.errno(errno.EINVAL)
        fd = self._lookup(n, creds, resolver, AT_FDCWD, n.args[0], 0, ("write",))
        try:
            mode = os.fstat(fd).st_mode
            if _stat.S_ISDIR(mode):
                return Reply.errno(errno.EISDIR)
            if not _stat.S_ISREG(mode):
                return Reply.errno(errno.EINVAL)   # and a FIFO is never opened
            wfd = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_CLOEXEC | os.O_NOCTTY)
        finally:
            os.close(fd)
        try:
            os.ftruncate(wfd, length)
        finally:
            os.close(wfd)
        return Reply.value(0)

    def _truncate(self, n, creds, resolver):
        length = signed32(n.args[1]) if abi_layout(n).bits32 else _signed64(n.args[1])
        return self._do_truncate(n, creds, resolver, length)

    def _truncate64(self, n, creds, resolver):
        return self._do_truncate(n, creds, resolver, _signed64(_wide(n, 1, 2)))

    def _do_statfs(self, n, creds, resolver, layout, buf):
        fd = self._lookup(n, creds, resolver, AT_FDCWD, n.args[0], 0, ("read",))
        try:
            out = ctypes.create_string_buffer(_STATFS_NATIVE.size)
            calls.raw_syscall("fstatfs", ctypes.c_int(fd), out)
        finally:
            os.close(fd)
        fields = _STATFS_NATIVE.unpack(out.raw)
        if layout is not _STATFS_NATIVE:
            fields = _compat_statfs(fields, wide=layout is abi_layout(n).statfs64)
        write_memory(n, buf, layout.pack(*fields))
        return Reply.value(0)

    def _statfs(self, n, creds, resolver):
        return self._do_statfs(n, creds, resolver, abi_layout(n).statfs, n.args[1])

    def _statfs64(self, n, creds, resolver):
        layout = abi_layout(n).statfs64
        if layout is None:
            return Reply.errno(errno.ENOSYS)
        if n.args[1] != layout.size:
            return Reply.errno(errno.EINVAL)
        return self._do_statfs(n, creds, resolver, layout, n.args[2])

    # --- timestamps
    def _do_utimes(self, n, creds, resolver, spec):
        path_spec, times_at, kind = spec
        dirfd, address, flags = self._path_args(n, path_spec)
        times = _read_times(n, n.args[times_at], kind)
        if times is not None and kind.startswith("timespec"):
            if times[1] == UTIME_OMIT and times[3] == UTIME_OMIT:
                return Reply.value(0)              # the kernel returns before looking at the path
            if not all(0 <= ns < 1_000_000_000 or ns in (UTIME_NOW, UTIME_OMIT) for ns in times[1::2]):
                return Reply.errno(errno.EINVAL)
        arg = None if times is None else (ctypes.c_longlong * 4)(*times)
        if not address and dirfd != AT_FDCWD:    # futimens(dirfd): the target's own fd
            if flags:
                return Reply.errno(errno.EINVAL)
            fd = fetch_fd(n, dirfd, creds)
            path = None
        else:
            if flags & ~_AT_PATH_FLAGS:
                return Reply.errno(errno.EINVAL)
            if not address:
                return Reply.errno(errno.EFAULT)
            fd = self._lookup(n, creds, resolver, dirfd, address, flags, ("write",))
            path, flags = b"", AT_EMPTY_PATH
        try:
            calls.raw_syscall("utimensat", ctypes.c_int(fd), ctypes.c_char_p(path), arg, ctypes.c_int(flags))
        finally:
            os.close(fd)
        return Reply.value(0)

    # --- mknod
    def _mknod(self, n, creds, resolver):
        return self._do_mknod(n, creds, resolver, AT_FDCWD, n.args[0], n.args[1])

    def _mknodat(self, n, creds, resolver):
        return self._do_mknod(n, creds, resolver, signed32(n.args[0]), n.args[1], n.args[2])

    def _do_mknod(self, n, creds, resolver, dirfd, address, mode):
        """Regular files, FIFOs and sockets are created in the checked parent. Device nodes are
        always refused (EPERM, the kernel's answer without CAP_MKNOD): a device node under an
        allowed name opens the device itself (a disk, memory), which no path rule can see."""
        mode &= 0xFFFF
        kind = _stat.S_IFMT(mode)
        if kind in (_stat.S_IFCHR, _stat.S_IFBLK, _stat.S_IFDIR):
            return Reply.errno(errno.EPERM)
        if kind not in (0, _stat.S_IFREG, _stat.S_IFIFO, _stat.S_IFSOCK):
            return Reply.errno(errno.EINVAL)
        perm = (mode & 0o7777) & ~creds.umask
        return self._in_parent(resolver, dirfd, address, n,
                               lambda name, dfd: os.mknod(name, (kind or _stat.S_IFREG) | perm, 0, dir_fd=dfd))

    # --- directory listing
    def _getdents(self, n, creds, resolver):
        return self._do_getdents(n, creds, resolver, "getdents")

    def _getdents64(self, n, creds, resolver):
        return self._do_getdents(n, creds, resolver, "getdents64")

    def _do_getdents(self, n, creds, resolver, name):
        """Check the directory behind the target's fd against the rules (it may predate the
        sandbox, or have come over SCM_RIGHTS). x86_64: list it on our duplicate (same open
        file description, so the offset moves as for the target). i386: a 64-bit supervisor
        would get 64-bit directory hashes (ext4) that a 32-bit caller must not see, so the
        kernel lists (CONTINUE, no memory read; see :data:`WEAK`)."""
        fd, buf, count = signed32(n.args[0]), n.args[1], n.args[2] & 0xFFFFFFFF
        dup = fetch_fd(n, fd, creds)
        try:
            is_dir = _stat.S_ISDIR(os.fstat(dup).st_mode)
            if is_dir and not self.check(resolver, dup, ("read",)):
                return Reply.errno(errno.EACCES)
            if n.arch != abi.native_arch():
                return Reply.continue_()
            out = ctypes.create_string_buffer(max(1, min(count, _DENTS_MAX)))
            where = os.lseek(dup, 0, os.SEEK_CUR) if is_dir else None
            length = calls.raw_syscall(name, ctypes.c_int(dup), out, ctypes.c_uint(min(count, _DENTS_MAX)))
            try:
                write_memory(n, buf, out.raw[:length])
            except OSError:
                if where is not None:
                    os.lseek(dup, where, os.SEEK_SET)   # as if the kernel had failed to copy out
                raise
            return Reply.value(length)
        finally:
            os.close(dup)

    # --- watches
    def _inotify_add_watch(self, n, creds, resolver):
        fd, address, mask = signed32(n.args[0]), n.args[1], n.args[2] & 0xFFFFFFFF
        if not mask & _IN_ALL_BITS or mask & _IN_MASK_ADD and mask & _IN_MASK_CREATE:
            return Reply.errno(errno.EINVAL)
        group = fetch_fd(n, fd, creds)
        try:
            if os.readlink(f"/proc/self/fd/{group}") != "anon_inode:inotify":
                return Reply.errno(errno.EINVAL)
            walk = os.O_PATH | os.O_CLOEXEC | (os.O_NOFOLLOW if mask & _IN_DONT_FOLLOW else 0) | \
                (os.O_DIRECTORY if mask & _IN_ONLYDIR else 0)
            obj = self._checked_open(n, resolver, address, walk)
            try:
                wd = calls.raw_syscall("inotify_add_watch", ctypes.c_int(group),
                                      ctypes.c_char_p(b"/proc/self/fd/%d" % obj),
                                      ctypes.c_uint(mask & ~_IN_DONT_FOLLOW))
            finally:
                os.close(obj)
        finally:
            os.close(group)
        return Reply.value(wd)

    def _fanotify_mark(self, n, creds, resolver):
        a = n.args
        if abi_layout(n).bits32:     # mask split over two registers: (fd, flags, lo, hi, dirfd, path)
            fd, flags, mask, dirfd, address = signed32(a[0]), a[1] & 0xFFFFFFFF, _wide(n, 2, 3), signed32(a[4]), a[5]
        else:
            fd, flags, mask, dirfd, address = signed32(a[0]), a[1] & 0xFFFFFFFF, a[2], signed32(a[3]), a[4]
        if flags & _FAN_MARK_TYPES:
            return Reply.errno(errno.EPERM)    # a mount or filesystem mark sees events of denied paths
        group = fetch_fd(n, fd, creds)
        try:
            if os.readlink(f"/proc/self/fd/{group}") != "anon_inode:[fanotify]":
                return Reply.errno(errno.EINVAL)
            if flags & _FAN_MARK_FLUSH:
                calls.raw_syscall("fanotify_mark", ctypes.c_int(group), ctypes.c_uint(flags),
                                 ctypes.c_uint64(mask), ctypes.c_int(AT_FDCWD), ctypes.c_char_p(None))
                return Reply.value(0)
            walk = os.O_PATH | os.O_CLOEXEC | (os.O_NOFOLLOW if flags & _FAN_MARK_DONT_FOLLOW else 0) | \
                (os.O_DIRECTORY if flags & _FAN_MARK_ONLYDIR else 0)
            if address:
                obj = self._checked_open(n, resolver, address, walk, dirfd)
            elif dirfd == AT_FDCWD:
                return Reply.errno(errno.EBADF)      # the kernel takes no cwd here
            else:                                     # the object behind the target's dirfd
                obj = fetch_fd(n, dirfd, creds)
                if flags & _FAN_MARK_ONLYDIR and not _stat.S_ISDIR(os.fstat(obj).st_mode):
                    os.close(obj)
                    return Reply.errno(errno.ENOTDIR)
                if not fd_is_path(obj) or not self.check(resolver, obj, ("read",)):
                    os.close(obj)
                    return Reply.errno(errno.EACCES)
            try:
                calls.raw_syscall("fanotify_mark", ctypes.c_int(group), ctypes.c_uint(flags & ~_FAN_MARK_DONT_FOLLOW),
                                 ctypes.c_uint64(mask), ctypes.c_int(AT_FDCWD),
                                 ctypes.c_char_p(b"/proc/self/fd/%d" % obj))
            finally:
                os.close(obj)
        finally:
            os.close(group)
        return Reply.value(0)

    def _checked_open(self, n, resolver, address, walk, dirfd=AT_FDCWD) -> int:
        """Our O_PATH fd for a path argument opened with ``walk``, checked for read."""
        obj = resolver.open(dirfd, read_string(n, address), walk)
        if not self.check(resolver, obj, ("read",)):
            os.close(obj)
            raise OSError(errno.EACCES, "denied by the fs rules")
        return obj

    # --- file attributes (FS_IOC_FS[GS]ETXATTR by path, 6.17+)
    def _file_getattr(self, n, creds, resolver):
        return self._do_file_attr(n, creds, resolver, "file_getattr")

    def _file_setattr(self, n, creds, resolver):
        return self._do_file_attr(n, creds, resolver, "file_setattr")

    def _do_file_attr(self, n, creds, resolver, name):
        """``struct file_attr`` by path; the kernel refuses O_PATH fds here, so the call goes to
        ``/proc/self/fd/N`` of our checked fd (which it follows to exactly that object)."""
        a = n.args
        buf, usize, at_flags = a[2], a[3], a[4] & 0xFFFFFFFF
        if at_flags & ~_AT_PATH_FLAGS:
            return Reply.errno(errno.EINVAL)
        if usize > 4096:
            return Reply.errno(errno.E2BIG)
        if usize < _FILE_ATTR_SIZE:
            return Reply.errno(errno.EINVAL)
        setting = name == "file_setattr"
        if setting:
            raw = read_exact(n, buf, usize)
            if any(raw[_FILE_ATTR_SIZE:]):
                return Reply.errno(errno.E2BIG)
        out = ctypes.create_string_buffer(raw[:_FILE_ATTR_SIZE] if setting else _FILE_ATTR_SIZE)
        fd = self._object(n, creds, resolver, (0, 1, 4, 0), ("write",) if setting else ("read",))
        try:
            calls.raw_syscall(name, ctypes.c_int(AT_FDCWD), ctypes.c_char_p(b"/proc/self/fd/%d" % fd), out,
                             ctypes.c_size_t(_FILE_ATTR_SIZE), ctypes.c_uint(0))
        finally:
            os.close(fd)
        if not setting:     # copy_struct_to_user: a larger user struct gets zeros after ours
            write_memory(n, buf, out.raw[:_FILE_ATTR_SIZE] + bytes(min(usize, 4096) - _FILE_ATTR_SIZE))
        return Reply.value(0)

    # --- refused, continued
    def _refused(self, n, creds, resolver):
        return Reply.errno(errno.EPERM)

    def _open_tree(self, n, creds, resolver):
        """Without OPEN_TREE_CLONE, open_tree is an O_PATH open of the path: served as one (so
        the rules apply); a clone of a mount would change what paths name: EPERM."""
        dirfd, address, flags = signed32(n.args[0]), n.args[1], n.args[2] & 0xFFFFFFFF
        if flags & _OPEN_TREE_CLONE:
            return Reply.errno(errno.EPERM)
        oflags = os.O_PATH | (flags & os.O_CLOEXEC) | (os.O_NOFOLLOW if flags & AT_SYMLINK_NOFOLLOW else 0)
        return self._do_open(n, creds, resolver, dirfd, address, oflags, 0, 0)

    def _name_to_handle_at(self, n, creds, resolver):
        return Reply.errno(errno.EOPNOTSUPP)

    def _open_by_handle_at(self, n, creds, resolver):
        return Reply.errno(errno.EPERM)

    def _chdir(self, n, creds, resolver):
        return Reply.continue_()     # nothing read, nothing decided: see the module docstring

    _fchdir = _chdir

    def _execve(self, n, creds, resolver):
        return self._do_exec(n, creds, resolver, AT_FDCWD, n.args[0], 0)

    def _execveat(self, n, creds, resolver):
        flags = n.args[4] & 0xFFFFFFFF
        if flags & ~(_AT_PATH_FLAGS | _AT_EXECVE_CHECK):
            return Reply.errno(errno.EINVAL)
        return self._do_exec(n, creds, resolver, signed32(n.args[0]), n.args[1], flags & _AT_PATH_FLAGS)

    def _do_exec(self, n, creds, resolver, dirfd, address, flags):
        """Refuse a denied binary (EACCES); an allowed one runs by CONTINUE (:data:`WEAK`).
        ``/proc/self/exe`` (a magic link our resolver does not follow) is the target's own binary."""
        path = read_string(n, address) if address else b""
        if resolver.target_path(path) in (b"/proc/%d/exe" % creds.tgid, b"/proc/%d/task/%d/exe" % (creds.tgid, n.pid)):
            fd = os.open(f"/proc/{n.pid}/exe", os.O_PATH | os.O_CLOEXEC)
            n.check_valid()
        elif not path and flags & AT_EMPTY_PATH:
            fd = fetch_fd(n, dirfd, creds)       # fexecve: what the fd is, not where it came from
        else:
            nofollow = os.O_NOFOLLOW if flags & AT_SYMLINK_NOFOLLOW else 0
            fd = resolver.open(dirfd, path, os.O_PATH | os.O_CLOEXEC | nofollow)
        try:
            if fd_is_path(fd) and not self.check(resolver, fd, ("read",)):
                return Reply.errno(errno.EACCES)
        finally:
            os.close(fd)
        return Reply.continue_()


def fd_is_path(fd: int) -> bool:
    """Does our ``fd`` name a filesystem object (not a pipe, socket or anonymous inode)?"""
    return os.readlink(f"/proc/self/fd/{fd}").startswith("/")


def _compat_statfs(fields, wide: bool):
    """Native statfs fields -> an i386 layout (``wide``: statfs64), with the kernel's EOVERFLOW rules."""
    ftype, bsize, blocks, bfree, bavail, files, ffree, fsid0, fsid1, namelen, frsize, flags, *_ = fields
    if wide:
        if (bsize | frsize) & _HIGH32:
            raise OSError(errno.EOVERFLOW, "statfs64 does not fit")
        return [ftype & 0xFFFFFFFF, bsize, blocks, bfree, bavail, files, ffree, fsid0, fsid1, namelen, frsize,
                flags, 0, 0, 0, 0]
    allones = (1 << 64) - 1
    if (blocks | bfree | bavail | bsize | frsize) & _HIGH32 or \
            any(v != allones and v & _HIGH32 for v in (files, ffree)):
        raise OSError(errno.EOVERFLOW, "statfs does not fit")
    return [v & 0xFFFFFFFF for v in (ftype, bsize, blocks, bfree, bavail, files, ffree)] + \
        [fsid0, fsid1] + [v & 0xFFFFFFFF for v in (namelen, frsize, flags)] + [0, 0, 0, 0]


def _xattr_value(n, where):
    """(value address, size, flags) from registers, or from a ``struct xattr_args`` (*xattrat)."""
    if where[0] != "args":
        return n.args[where[0]], n.args[where[1]], (n.args[where[2]] & 0xFFFFFFFF if len(where) > 2 else 0)
    address, usize = n.args[where[1]], n.args[where[2]]
    if usize < _XATTR_ARGS.size:
        raise OSError(errno.EINVAL, "xattr_args too small")
    if usize > 4096:
        raise OSError(errno.E2BIG, "xattr_args larger than a page")
    raw = read_exact(n, address, usize)
    if any(raw[_XATTR_ARGS.size:]):
        raise OSError(errno.E2BIG, "unknown xattr_args fields")
    return _XATTR_ARGS.unpack_from(raw)


def _read_times(n, address, kind):
    """[sec0, nsec0, sec1, nsec1] from the target's times argument (None: now). ``kind``:
    utimbuf, timeval, timespec (ABI longs) or timespec64."""
    if not address:
        return None
    word = "q" if kind == "timespec64" else abi_layout(n).long
    pair = struct.Struct("=" + word * (2 if kind == "utimbuf" else 4))
    values = list(pair.unpack(read_exact(n, address, pair.size)))
    if kind == "utimbuf":
        return [values[0], 0, values[1], 0]
    if kind == "timeval":
        if not all(0 <= us < 1_000_000 for us in values[1::2]):
            raise OSError(errno.EINVAL, "tv_usec out of range")
        return [values[0], values[1] * 1000, values[2], values[3] * 1000]
    if kind == "timespec64" and abi_layout(n).bits32:
        values[1::2] = [v & 0xFFFFFFFF for v in values[1::2]]   # compat: tv_nsec's high half ignored
    return values


def _install_variants():
    """``_<syscall>`` methods for the calls that are variants of one another (tables)."""
    nofollow = AT_SYMLINK_NOFOLLOW
    path_only, link_only, at = (None, 0, None, 0), (None, 0, None, nofollow), (0, 1, 2, 0)
    tables = {
        "_do_chmod": {"chmod": (None, 0, None, 0, 1), "fchmodat": (0, 1, None, 0, 2),
                      "fchmodat2": (0, 1, 3, 0, 2)},
        "_do_chown": {"chown": (*path_only, 1, 2), "chown32": (*path_only, 1, 2),
                      "lchown": (*link_only, 1, 2), "lchown32": (*link_only, 1, 2),
                      "fchownat": (0, 1, 4, 0, 2, 3)},
        "_do_xattr": {"setxattr": ("set", path_only, 1, (2, 3, 4)),
                      "lsetxattr": ("set", link_only, 1, (2, 3, 4)),
                      "getxattr": ("get", path_only, 1, (2, 3)),
                      "lgetxattr": ("get", link_only, 1, (2, 3)),
                      "listxattr": ("list", path_only, None, (1, 2)),
                      "llistxattr": ("list", link_only, None, (1, 2)),
                      "removexattr": ("remove", path_only, 1, None),
                      "lremovexattr": ("remove", link_only, 1, None),
                      "setxattrat": ("set", at, 3, ("args", 4, 5)),
                      "getxattrat": ("get", at, 3, ("args", 4, 5)),
                      "listxattrat": ("list", at, None, (3, 4)),
                      "removexattrat": ("remove", at, 3, None)},
        "_do_utimes": {"utime": (path_only, 1, "utimbuf"), "utimes": (path_only, 1, "timeval"),
                       "futimesat": ((0, 1, None, 0), 2, "timeval"),
                       "utimensat": ((0, 1, 3, 0), 2, "timespec"),
                       "utimensat_time64": ((0, 1, 3, 0), 2, "timespec64")},
    }
    for name in REFUSED:
        setattr(MetadataCalls, "_" + name, MetadataCalls._refused)
    for method, table in tables.items():
        for name, spec in table.items():
            def call(self, n, creds, resolver, _method=method, _spec=spec):
                return getattr(self, _method)(n, creds, resolver, _spec)
            call.__name__ = "_" + name
            setattr(MetadataCalls, "_" + name, call)


_install_variants()
