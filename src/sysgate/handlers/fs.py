"""``fs``: path allow/deny rules enforced without a TOCTOU window.

The supervisor never lets the kernel act on a path it checked (no CONTINUE). For each
notified call it reads the path argument **once**, resolves it itself relative to the
target's root, cwd or dirfd (``/proc/TID/root``, ``/proc/TID/cwd``, ``/proc/TID/fd/N``)
with openat2(2) (``RESOLVE_IN_ROOT`` for absolute paths so ``..`` and absolute symlinks
stay inside the target's root; ``RESOLVE_NO_MAGICLINKS`` always), first as an ``O_PATH``
fd (no device open side effects), then checks the *opened object's* real path (and inode,
for denied files named without wildcards) against the rules, and only then reopens that
very inode with the requested flags and injects it with ``SECCOMP_ADDFD_FLAG_SEND``.
Rewriting the path buffer, symlinks and ``../`` cannot reach a denied file: the check
applies to what was opened, not to what was asked for.

Calls and how they are served:

* ``open``, ``openat``, ``openat2``, ``creat``: emulated as above (``O_CLOEXEC`` honoured).
  New files are created only at ``<checked parent>/<name>`` with ``O_EXCL|O_NOFOLLOW``;
  ``O_TRUNC`` is applied after the check.
* ``stat``, ``lstat``, ``newfstatat``, ``statx``: emulated on the checked fd; the kernel
  fills the struct in the supervisor and it is copied into the target's output buffer.
* ``access``, ``faccessat``, ``faccessat2``: emulated (``faccessat2(fd, "", AT_EMPTY_PATH|AT_EACCESS)``
  with the target's fsuid/fsgid, so effective rather than real ids decide).
* ``readlink``, ``readlinkat``: emulated (the link text is copied into the target's buffer).
* ``mkdir(at)``, ``unlink(at)``, ``rmdir``, ``rename(at|at2)``, ``symlink(at)``: the parent
  directory is resolved and the new/removed name checked for ``write``; the supervisor then
  acts on that directory fd and the single last component.
* ``link``, ``linkat``: the existing file must be allowed for read *and* write (a new name
  for it must not widen access), the new name for write.

Every other path-taking call (chmod, chown, xattrs, truncate, statfs, utimes, mknod,
getdents, watches, exec, chdir, handles, mount calls…) is served by the mixin in
:mod:`.fsmeta`, whose docstring says how; fd-based calls act on files already opened here.

Denied paths fail with ``EACCES``. Opening a FIFO blocks a worker thread until the other
end opens, as it would block the target; past the handler deadline (``deadline``, else
the supervisor's ``handler_timeout``) the call fails closed. Work is done with the target's fsuid/fsgid/groups
(a root target keeps the supervisor's capabilities, even if its own were reduced), the
target's umask applies to created files (on top of the supervisor's own umask).
Limits: rules see paths as the target sees them (inside its root); ``/proc/self`` is
rewritten to the target; magic links are not followed, except that ``/dev/stdin``,
``/dev/fd/N`` and ``/proc/self/fd/N`` reopen the target's own fd N (rules apply when it is
a file); other magic links fail with ``ELOOP``. Hard links made before the run are
separate names (rules are path based, as in AppArmor; wildcard-free deny rules also
deny the inode). Creating through a dangling symlink fails with ``EACCES``. Only the
native architecture's stat layout is emulated (other ABIs get ``ENOSYS``).
"""
from __future__ import annotations

import ctypes
import errno
import os
import re
import stat as _stat
import struct
from dataclasses import dataclass

from ..errors import SysgateError
from ..kernel import abi
from ..kernel import sys as ksys
from ..supervisor import Reply, TargetGone
from .base import ENOSYS, Handler, check_default
from .fsmeta import MetadataCalls
from .target import AT_FDCWD, acting_as, credentials, fetch_fd, read_exact, signed32, write_memory

EACCES = Reply.errno(errno.EACCES)
RESOLVE_BENEATH, RESOLVE_IN_ROOT, RESOLVE_NO_MAGICLINKS = 0x08, 0x10, 0x02
AT_EMPTY_PATH, AT_SYMLINK_NOFOLLOW, AT_EACCESS = 0x1000, 0x100, 0x200
_AT_REMOVEDIR, _AT_SYMLINK_FOLLOW = 0x200, 0x400
_O_TMPFILE = os.O_TMPFILE
_W_OK = os.W_OK
_STAT_SIZE = {"x86_64": 144, "aarch64": 128, "riscv64": 128, "s390x": 144, "ppc64le": 144}
_STATX_SIZE = 256
_OPEN_HOW = struct.Struct("=QQQ")
_libc = ctypes.CDLL(None, use_errno=True)


# --- rules ------------------------------------------------------------------------------
@dataclass(frozen=True)
class PathRule:
    """``verdict`` ("allow"/"deny") for ``modes`` (read/write) of paths matching ``pattern``.

    Globs: ``*`` and ``?`` match within one path component, ``**`` any number of them;
    ``/dir/**`` also matches ``/dir`` itself.
    """

    verdict: str
    modes: frozenset
    pattern: str

    @property
    def regex(self) -> re.Pattern:
        return glob_regex(self.pattern)

    def __str__(self) -> str:
        modes = "rw" if self.modes == {"read", "write"} else next(iter(self.modes))
        return f"{self.verdict} {modes} {self.pattern}"


_MODE_WORDS = {"read": {"read"}, "r": {"read"}, "write": {"write"}, "w": {"write"}, "rw": {"read", "write"},
               "readwrite": {"read", "write"}, "all": {"read", "write"}}


def parse_rule(text) -> PathRule:
    """``"allow read /usr/**"``, ``"deny /etc/shadow"`` (both modes), or a dict
    ``{"allow": "read", "path": "/usr/**"}``."""
    if isinstance(text, dict):
        verdicts = [k for k in ("allow", "deny") if k in text]
        if len(verdicts) != 1 or "path" not in text or set(text) - {"allow", "deny", "path"}:
            raise SysgateError(f"fs rule {text!r}: want {{\"allow\"|\"deny\": MODE, \"path\": GLOB}}")
        return _rule(verdicts[0], str(text[verdicts[0]] or "rw"), str(text["path"]), text)
    if not isinstance(text, str):
        raise SysgateError(f"fs rule {text!r}: want a string like 'allow read /usr/**'")
    words = text.split()
    if len(words) == 2 and words[0] in ("allow", "deny"):
        return _rule(words[0], "rw", words[1], text)
    if len(words) == 3 and words[0] in ("allow", "deny"):
        return _rule(words[0], words[1], words[2], text)
    raise SysgateError(f"fs rule {text!r}: want 'allow|deny [read|write|rw] PATH-GLOB'")


def _rule(verdict: str, modes: str, pattern: str, source) -> PathRule:
    if modes not in _MODE_WORDS:
        raise SysgateError(f"fs rule {source!r}: unknown mode {modes!r} (read, write or rw)")
    if not pattern.startswith("/"):
        raise SysgateError(f"fs rule {source!r}: paths must be absolute (as the target sees them)")
    return PathRule(verdict, frozenset(_MODE_WORDS[modes]), pattern.rstrip("/") or "/")


def glob_regex(pattern: str) -> re.Pattern:
    """A regex for a path glob: ``*``/``?`` within one component, ``**`` across them, and
    a trailing ``/**`` that also matches the directory itself."""
    if pattern.endswith("/**"):
        return re.compile(_glob_body(pattern[:-3]) + r"(?:/.*)?\Z", re.S)
    return re.compile(_glob_body(pattern) + r"\Z", re.S)


def _glob_body(pattern: str) -> str:
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)


class PathRules:
    """An ordered rule list: the first rule matching (path, mode) decides; else ``default``."""

    def __init__(self, rules=(), default: str = "deny"):
        check_default("fs", default)
        self.rules = [r if isinstance(r, PathRule) else parse_rule(r) for r in rules]
        self.default = default
        self._compiled = [(r.verdict == "allow", r.modes, r.regex) for r in self.rules]
        self.denied_inodes = self._literal_denials()

    def _literal_denials(self) -> set[tuple[int, int]]:
        """(dev, ino) of files denied by wildcard-free rules, so other names of them are denied too."""
        found = set()
        for rule in self.rules:
            if rule.verdict == "deny" and not any(c in rule.pattern for c in "*?"):
                try:
                    st = os.stat(rule.pattern)
                except OSError:
                    continue
                if _stat.S_ISREG(st.st_mode):
                    found.add((st.st_dev, st.st_ino))
        return found

    def allows(self, path: str, modes) -> bool:
        """True when every mode in ``modes`` is allowed for ``path``."""
        return all(self._allows_one(path, mode) for mode in modes)

    def _allows_one(self, path: str, mode: str) -> bool:
        for allow, modes, regex in self._compiled:
            if mode in modes and regex.match(path):
                return allow
        return self.default == "allow"


# --- resolution -------------------------------------------------------------------------
class Resolver:
    """Opens paths the way thread ``n.pid`` would see them, but from the supervisor."""

    def __init__(self, n, creds):
        self.n, self.creds = n, creds
        link = f"/proc/{n.pid}/root"
        try:
            self.root_fd = os.open(link, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except (FileNotFoundError, ProcessLookupError):
            raise TargetGone(f"thread {n.pid} is gone") from None
        self._fds = [self.root_fd]
        try:
            self.root_host = os.readlink(link)   # may fail when the thread exits right now
        except OSError:
            self.close()
            if not n.valid():
                raise TargetGone(f"notification {n.id} is no longer valid") from None
            raise
        self.shared_root = self.root_host == "/"
        if not n.valid():               # the tid may have been recycled before the open
            self.close()
            raise TargetGone(f"notification {n.id} is no longer valid")

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []

    def __enter__(self) -> "Resolver":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _keep(self, fd: int) -> int:
        self._fds.append(fd)
        return fd

    def base_fd(self, dirfd: int) -> int:
        where = f"/proc/{self.n.pid}/cwd" if dirfd == AT_FDCWD else f"/proc/{self.n.pid}/fd/{dirfd}"
        try:
            fd = self._keep(os.open(where, os.O_PATH | os.O_CLOEXEC))
        except FileNotFoundError:
            if not self.n.valid():
                raise TargetGone(f"notification {self.n.id} is no longer valid") from None
            raise OSError(errno.EBADF, os.strerror(errno.EBADF)) from None
        self.n.check_valid()
        return fd

    def target_path(self, path: bytes) -> bytes:
        """Rewrite ``/proc/self`` and ``/proc/thread-self`` (which would name the supervisor)."""
        for prefix, repl in ((b"/proc/self", b"/proc/%d" % self.creds.tgid),
                             (b"/proc/thread-self", b"/proc/%d/task/%d" % (self.creds.tgid, self.n.pid))):
            if path == prefix or path.startswith(prefix + b"/"):
                return repl + path[len(prefix):]
        return path

    def open(self, dirfd: int, path: bytes, flags: int, mode: int = 0, resolve: int = 0) -> int:
        """openat2 of ``path`` as the target would resolve it (call inside ``acting_as``)."""
        path = self.target_path(path)
        resolve |= RESOLVE_NO_MAGICLINKS
        if resolve & (RESOLVE_BENEATH | RESOLVE_IN_ROOT) or not path.startswith(b"/"):
            base = self.base_fd(dirfd)
            if self.shared_root or resolve & (RESOLVE_BENEATH | RESOLVE_IN_ROOT):
                return ksys.openat2(base, path, flags, mode, resolve)
            inside = self.view(fd_path(base))
            if inside is None:
                raise OSError(errno.EACCES, "directory outside the target's root")
            path = os.fsencode(inside).rstrip(b"/") + b"/" + path
        return ksys.openat2(self.root_fd, path, flags, mode, resolve | RESOLVE_IN_ROOT)

    def parent(self, dirfd: int, path: bytes, resolve: int = 0) -> tuple[int, bytes, str]:
        """(our O_PATH fd of ``path``'s directory, its last component, the whole path as the target
        sees it). The component may be empty, ``.`` or ``..``: callers reject those. OSError(EACCES)
        when the directory lies outside the target's root."""
        head, name = split_path(path)
        dfd = self.open(dirfd, head, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, 0, resolve)
        view = self.view(fd_path(dfd))
        if view is None:
            os.close(dfd)
            raise OSError(errno.EACCES, "directory outside the target's root")
        return dfd, name, os.path.join(view, os.fsdecode(name))

    def view(self, host_path: str) -> str | None:
        """``host_path`` as the target sees it (None when outside its root)."""
        if self.shared_root:
            return host_path
        root = self.root_host.rstrip("/")
        if host_path == root:
            return "/"
        if host_path.startswith(root + "/"):
            return host_path[len(root):]
        return None


def fd_path(fd: int) -> str:
    """The path the kernel reports for our ``fd`` (without the " (deleted)" suffix of an
    unlinked file; a file really named "x (deleted)" keeps its name)."""
    path = os.readlink(f"/proc/self/fd/{fd}")
    if path.endswith(" (deleted)") and os.fstat(fd).st_nlink == 0:
        return path[:-10]
    return path


# --- the handler ----------------------------------------------------------------------
class FsHandler(MetadataCalls, Handler):
    """Path allow/deny rules for opens, stat/access/readlink and namespace changes, by emulation."""

    name = "fs"
    syscalls = ("open", "openat", "openat2", "creat", "stat", "lstat", "newfstatat", "statx",
                "access", "faccessat", "faccessat2", "readlink", "readlinkat",
                "mkdir", "mkdirat", "unlink", "unlinkat", "rmdir", "rename", "renameat", "renameat2",
                "symlink", "symlinkat", "link", "linkat") + MetadataCalls.meta_syscalls
    blocking = True

    def __init__(self, rules=(), default: str = "deny", *, as_target: bool = True, deadline: float | None = None):
        self.rules = rules if isinstance(rules, PathRules) else PathRules(rules, default)
        self.as_target = as_target
        self.deadline = deadline        # None: the supervisor's handler_timeout

    def handle(self, n):
        creds = credentials(n)          # an OSError becomes the errno reply in Handler.__call__
        with Resolver(n, creds) as resolver, acting_as(creds if self.as_target else None):
            return getattr(self, "_" + n.syscall)(n, creds, resolver)

    # --- checks
    def check(self, resolver: Resolver, fd: int, modes) -> bool:
        """Are ``modes`` allowed on the object behind our ``fd``?"""
        view = resolver.view(fd_path(fd))
        if view is None or not self.rules.allows(view, modes):
            return False
        if self.rules.denied_inodes:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) in self.rules.denied_inodes:
                return False
        return True

    # --- open family
    def _open(self, n, creds, resolver):
        a = n.args
        return self._do_open(n, creds, resolver, AT_FDCWD, a[0], a[1] & 0xFFFFFFFF, a[2] & 0o7777, 0)

    def _openat(self, n, creds, resolver):
        a = n.args
        return self._do_open(n, creds, resolver, signed32(a[0]), a[1], a[2] & 0xFFFFFFFF, a[3] & 0o7777, 0)

    def _creat(self, n, creds, resolver):
        a = n.args
        return self._do_open(n, creds, resolver, AT_FDCWD, a[0], os.O_CREAT | os.O_WRONLY | os.O_TRUNC,
                             a[1] & 0o7777, 0)

    def _openat2(self, n, creds, resolver):
        a = n.args
        size = a[3]
        if size < _OPEN_HOW.size or size > 4096:
            return Reply.errno(errno.EINVAL if size < _OPEN_HOW.size else errno.E2BIG)
        raw = read_exact(n, a[2], size)
        if any(raw[_OPEN_HOW.size:]):
            return Reply.errno(errno.E2BIG)
        flags, mode, resolve = _OPEN_HOW.unpack_from(raw)
        if flags >> 32 or mode & ~0o7777 or resolve & ~0x3F:
            return Reply.errno(errno.EINVAL)
        return self._do_open(n, creds, resolver, signed32(a[0]), a[1], flags, mode, resolve)

    def _do_open(self, n, creds, resolver, dirfd, address, flags, mode, resolve):
        path = n.read_string(address)            # read once; never looked at again
        cloexec = bool(flags & os.O_CLOEXEC)
        fd = self._open_checked(resolver, creds, dirfd, path, flags, mode, resolve)
        if fd is None:
            return EACCES
        try:
            n.inject_fd(fd, send=True, cloexec=cloexec)
        finally:
            os.close(fd)
        return None

    def _open_checked(self, resolver, creds, dirfd, path, flags, mode, resolve) -> int | None:
        """Our fd for the target's open, or None when the rules deny it."""
        modes = _open_modes(flags)
        tmpfile = flags & _O_TMPFILE == _O_TMPFILE
        walk = os.O_PATH | os.O_CLOEXEC | (flags & (os.O_NOFOLLOW | os.O_DIRECTORY))
        if tmpfile:
            walk |= os.O_DIRECTORY
        if flags & os.O_CREAT and flags & os.O_EXCL:
            walk |= os.O_NOFOLLOW
        for _ in range(3):
            try:
                pathfd = resolver.open(dirfd, path, walk, 0, resolve)
            except FileNotFoundError:
                if not flags & os.O_CREAT:
                    raise
                fd = self._create(resolver, creds, dirfd, path, flags, mode, resolve)
                if fd is not False:
                    return fd
                continue                    # appeared meanwhile: open the existing file
            except OSError as exc:
                number = own_fd_number(resolver, path) if exc.errno == errno.ELOOP else None
                if number is None:
                    raise
                return self._reopen_own_fd(resolver, creds, number, flags, modes)
            try:
                if flags & os.O_CREAT and flags & os.O_EXCL:
                    raise OSError(errno.EEXIST, os.strerror(errno.EEXIST))
                if tmpfile:
                    return self._reopen_tmpfile(resolver, pathfd, flags, mode, creds)
                if not self.check(resolver, pathfd, modes):
                    return None
                return _reopen(pathfd, flags)
            finally:
                os.close(pathfd)
        raise OSError(errno.EACCES, "cannot create through a dangling symlink")

    def _create(self, resolver, creds, dirfd, path, flags, mode, resolve):
        """Create a new file at <checked parent>/<name>; False when it exists after all."""
        dfd, name, view = resolver.parent(dirfd, path, resolve)
        try:
            if not name or name in (b".", b".."):
                raise OSError(errno.EISDIR, os.strerror(errno.EISDIR))
            if not self.rules.allows(view, {"write"}):
                return None
            create = (flags & ~(os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC)) | \
                os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY
            try:
                return os.open(name, create, mode & ~creds.umask, dir_fd=dfd)
            except FileExistsError:
                if flags & os.O_EXCL:
                    raise
                return False
        finally:
            os.close(dfd)

    def _reopen_own_fd(self, resolver, creds, number: int, flags: int, modes) -> int | None:
        """``/dev/stdin``, ``/proc/self/fd/N``…: reopen the target's own fd N, as the kernel would."""
        dup = fetch_fd(resolver.n, number, creds)
        try:
            if fd_path(dup).startswith("/") and not self.check(resolver, dup, modes):
                return None                 # a file: the rules apply; pipes and the like are its own
            return _reopen(dup, flags)
        finally:
            os.close(dup)

    def _reopen_tmpfile(self, resolver, dirfd, flags, mode, creds) -> int | None:
        view = resolver.view(fd_path(dirfd))
        if view is None or not self.rules.allows(os.path.join(view, "<tmpfile>"), {"write"}):
            return None
        return os.open(f"/proc/self/fd/{dirfd}", (flags & ~os.O_CLOEXEC) | os.O_CLOEXEC,
                       mode & ~creds.umask)

    # --- metadata family
    def _lookup(self, n, creds, resolver, dirfd, address, flags, modes=("read",)) -> int:
        """Our O_PATH fd for a stat/access/readlink-style path argument; OSError(EACCES) if denied."""
        path = n.read_string(address) if address else b""
        if not path and flags & AT_EMPTY_PATH and dirfd == AT_FDCWD:
            path = b"."     # the cwd is no fd the target holds: chdir (not checked) may have put it anywhere
        if not path and flags & AT_EMPTY_PATH:
            # an fd the target already holds: reading its metadata needs no rule, linking it does
            fd = fetch_fd(n, dirfd, creds)
            if "write" not in modes or not fd_path(fd).startswith("/"):
                return fd
        else:
            walk = os.O_PATH | os.O_CLOEXEC | (os.O_NOFOLLOW if flags & AT_SYMLINK_NOFOLLOW else 0)
            fd = resolver.open(dirfd, path, walk)
        if not self.check(resolver, fd, modes):
            os.close(fd)
            raise OSError(errno.EACCES, "denied by the fs rules")
        return fd

    def _stat(self, n, creds, resolver):
        return self._emulate_stat(n, creds, resolver, AT_FDCWD, n.args[0], n.args[1], 0)

    def _lstat(self, n, creds, resolver):
        return self._emulate_stat(n, creds, resolver, AT_FDCWD, n.args[0], n.args[1], AT_SYMLINK_NOFOLLOW)

    def _newfstatat(self, n, creds, resolver):
        a = n.args
        return self._emulate_stat(n, creds, resolver, signed32(a[0]), a[1], a[2], a[3] & 0xFFFFFFFF)

    def _emulate_stat(self, n, creds, resolver, dirfd, address, buf, flags):
        size = _STAT_SIZE.get(n.arch) if n.arch == abi.native_arch() else None
        if size is None:
            return ENOSYS
        fd = self._lookup(n, creds, resolver, dirfd, address, flags)
        try:
            out = ctypes.create_string_buffer(size)
            ksys.raw_syscall("newfstatat", ctypes.c_int(fd), ctypes.c_char_p(b""), out,
                             ctypes.c_int(AT_EMPTY_PATH))
        finally:
            os.close(fd)
        write_memory(n, buf, out.raw)
        return Reply.value(0)

    def _statx(self, n, creds, resolver):
        a = n.args
        if n.arch != abi.native_arch():
            return ENOSYS
        flags, mask = a[2] & 0xFFFFFFFF, a[3] & 0xFFFFFFFF
        fd = self._lookup(n, creds, resolver, signed32(a[0]), a[1], flags)
        try:
            out = ctypes.create_string_buffer(_STATX_SIZE)
            sync = flags & 0x6000                     # AT_STATX_SYNC_TYPE
            ksys.raw_syscall("statx", ctypes.c_int(fd), ctypes.c_char_p(b""), ctypes.c_int(AT_EMPTY_PATH | sync),
                             ctypes.c_uint(mask), out)
        finally:
            os.close(fd)
        write_memory(n, a[4], out.raw)
        return Reply.value(0)

    def _access(self, n, creds, resolver):
        return self._emulate_access(n, creds, resolver, AT_FDCWD, n.args[0], n.args[1] & 0xFFFFFFFF, 0)

    def _faccessat(self, n, creds, resolver):
        a = n.args
        return self._emulate_access(n, creds, resolver, signed32(a[0]), a[1], a[2] & 0xFFFFFFFF, 0)

    def _faccessat2(self, n, creds, resolver):
        a = n.args
        return self._emulate_access(n, creds, resolver, signed32(a[0]), a[1], a[2] & 0xFFFFFFFF,
                                    a[3] & 0xFFFFFFFF)

    def _emulate_access(self, n, creds, resolver, dirfd, address, mode, flags):
        if mode & ~7:
            return Reply.errno(errno.EINVAL)
        modes = ("read", "write") if mode & _W_OK else ("read",)
        fd = self._lookup(n, creds, resolver, dirfd, address, flags, modes)
        try:
            if mode:
                ksys.raw_syscall("faccessat2", ctypes.c_int(fd), ctypes.c_char_p(b""), ctypes.c_int(mode),
                                 ctypes.c_int(AT_EMPTY_PATH | AT_EACCESS))
        finally:
            os.close(fd)
        return Reply.value(0)

    def _readlink(self, n, creds, resolver):
        a = n.args
        return self._emulate_readlink(n, creds, resolver, AT_FDCWD, a[0], a[1], a[2])

    def _readlinkat(self, n, creds, resolver):
        a = n.args
        return self._emulate_readlink(n, creds, resolver, signed32(a[0]), a[1], a[2], a[3])

    def _emulate_readlink(self, n, creds, resolver, dirfd, address, buf, size):
        if size <= 0 or size >= 1 << 31:
            return Reply.errno(errno.EINVAL)
        fd = self._lookup(n, creds, resolver, dirfd, address, AT_SYMLINK_NOFOLLOW)
        try:
            out = ctypes.create_string_buffer(4096)
            length = ksys.raw_syscall("readlinkat", ctypes.c_int(fd), ctypes.c_char_p(b""), out,
                                      ctypes.c_size_t(4096))
        finally:
            os.close(fd)
        data = out.raw[:min(length, size)]
        write_memory(n, buf, data)
        return Reply.value(len(data))


    # --- namespace changes: checked parent + one component, done by the supervisor as the target
    def _changed(self, resolver, dirfd, address, n):
        """(our parent dir fd, name) for a path the call creates or removes; EACCES when denied."""
        dfd, name, view = resolver.parent(dirfd, n.read_string(address).rstrip(b"/") or b"/")
        if not name or name in (b".", b".."):
            os.close(dfd)
            raise OSError(errno.EBUSY if name else errno.ENOENT, "not a removable or creatable name")
        if not self.rules.allows(view, {"write"}):
            os.close(dfd)
            raise OSError(errno.EACCES, "denied by the fs rules")
        return dfd, name

    def _in_parent(self, resolver, dirfd, address, n, action):
        dfd, name = self._changed(resolver, dirfd, address, n)
        try:
            action(name, dfd)
        finally:
            os.close(dfd)
        return Reply.value(0)

    def _mkdir(self, n, creds, resolver, dirfd=AT_FDCWD, args=None):
        address, mode = (args or n.args)[:2]
        return self._in_parent(resolver, dirfd, address, n,
                               lambda name, dfd: os.mkdir(name, mode & 0o7777 & ~creds.umask, dir_fd=dfd))

    def _mkdirat(self, n, creds, resolver):
        return self._mkdir(n, creds, resolver, signed32(n.args[0]), n.args[1:])

    def _unlink(self, n, creds, resolver):
        return self._in_parent(resolver, AT_FDCWD, n.args[0], n, lambda name, dfd: os.unlink(name, dir_fd=dfd))

    def _rmdir(self, n, creds, resolver):
        return self._in_parent(resolver, AT_FDCWD, n.args[0], n, lambda name, dfd: os.rmdir(name, dir_fd=dfd))

    def _unlinkat(self, n, creds, resolver):
        dirfd, address, flags = signed32(n.args[0]), n.args[1], n.args[2] & 0xFFFFFFFF
        if flags & ~_AT_REMOVEDIR:
            return Reply.errno(errno.EINVAL)
        remove = os.rmdir if flags & _AT_REMOVEDIR else os.unlink
        return self._in_parent(resolver, dirfd, address, n, lambda name, dfd: remove(name, dir_fd=dfd))

    def _rename(self, n, creds, resolver):
        a = n.args
        return self._renameat2(n, creds, resolver, (AT_FDCWD, a[0], AT_FDCWD, a[1], 0))

    def _renameat(self, n, creds, resolver):
        a = n.args
        return self._renameat2(n, creds, resolver, (a[0], a[1], a[2], a[3], 0))

    def _renameat2(self, n, creds, resolver, args=None):
        olddir, old, newdir, new, flags = args or n.args[:5]
        ofd, oname = self._changed(resolver, signed32(olddir), old, n)
        try:
            nfd, nname = self._changed(resolver, signed32(newdir), new, n)
            try:
                ksys.raw_syscall("renameat2", ctypes.c_int(ofd), ctypes.c_char_p(oname), ctypes.c_int(nfd),
                                 ctypes.c_char_p(nname), ctypes.c_uint(flags & 0xFFFFFFFF))
            finally:
                os.close(nfd)
        finally:
            os.close(ofd)
        return Reply.value(0)

    def _symlink(self, n, creds, resolver, dirfd=AT_FDCWD, args=None):
        text_address, address = (args or n.args)[:2]
        text = n.read_string(text_address)        # the link's content: data, not a path we follow
        return self._in_parent(resolver, dirfd, address, n,
                               lambda name, dfd: os.symlink(text, name, dir_fd=dfd))

    def _symlinkat(self, n, creds, resolver):
        a = n.args
        return self._symlink(n, creds, resolver, signed32(a[1]), (a[0], a[2]))

    def _link(self, n, creds, resolver):
        a = n.args
        return self._linkat(n, creds, resolver, (AT_FDCWD, a[0], AT_FDCWD, a[1], 0))

    def _linkat(self, n, creds, resolver, args=None):
        """A new name for an existing file: the file must be allowed for read and write (else a
        hard link would smuggle it under an allowed name)."""
        olddir, old, newdir, new, flags = args or n.args[:5]
        flags &= 0xFFFFFFFF
        if flags & ~(_AT_SYMLINK_FOLLOW | AT_EMPTY_PATH):
            return Reply.errno(errno.EINVAL)
        follow = AT_SYMLINK_NOFOLLOW if not flags & _AT_SYMLINK_FOLLOW else 0
        src = self._lookup(n, creds, resolver, signed32(olddir), old, follow | (flags & AT_EMPTY_PATH),
                           ("read", "write"))
        try:
            self._in_parent(resolver, signed32(newdir), new, n,
                            lambda name, dfd: os.link(f"/proc/self/fd/{src}", name, dst_dir_fd=dfd))
        finally:
            os.close(src)
        return Reply.value(0)


def own_fd_number(resolver, path: bytes) -> int | None:
    """N when ``path`` names the target's own fd N through a magic link (/dev/stdin, /dev/fd/N,
    /proc/self/fd/N after rewriting), else None."""
    path = resolver.target_path(path)
    fixed = {b"/dev/stdin": 0, b"/dev/stdout": 1, b"/dev/stderr": 2}
    if path in fixed:
        return fixed[path]
    tgid, tid = resolver.creds.tgid, resolver.n.pid
    for prefix in (b"/dev/fd/", b"/proc/%d/fd/" % tgid, b"/proc/%d/task/%d/fd/" % (tgid, tid)):
        if path.startswith(prefix) and path[len(prefix):].isdigit():
            return int(path[len(prefix):])
    return None


def _open_modes(flags: int) -> set[str]:
    acc = flags & os.O_ACCMODE
    modes = set()
    if acc in (os.O_RDONLY, os.O_RDWR) or flags & os.O_PATH:
        modes.add("read")
    if acc in (os.O_WRONLY, os.O_RDWR) or flags & (os.O_CREAT | os.O_TRUNC | os.O_APPEND):
        modes.add("write")
    return modes


def _reopen(pathfd: int, flags: int) -> int:
    """Open the inode behind our O_PATH fd with the target's flags (the check already passed)."""
    if flags & os.O_PATH:
        return os.dup(pathfd)
    if _stat.S_ISLNK(os.fstat(pathfd).st_mode):
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP))
    keep = flags & ~(os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC)
    return os.open(f"/proc/self/fd/{pathfd}", keep | os.O_CLOEXEC | os.O_NOCTTY)


def split_path(path: bytes) -> tuple[bytes, bytes]:
    """(parent, last component) of ``path``; a trailing slash leaves the name empty."""
    if path.endswith(b"/"):
        return path, b""
    head, _, name = path.rpartition(b"/")
    if not head:
        head = b"/" if path.startswith(b"/") else b"."
    return head, name
