"""``fs``: path allow/deny rules enforced by emulation, without a TOCTOU window.

How a call is served. The supervisor never lets the kernel act on a path it checked (no
CONTINUE). For each notified call it reads the path argument **once**, resolves it itself
relative to the target's root, cwd or dirfd (``/proc/TID/root``, ``/proc/TID/cwd``,
``/proc/TID/fd/N``) with openat2(2) (``RESOLVE_IN_ROOT`` for absolute paths so ``..`` and
absolute symlinks stay inside the target's root; ``RESOLVE_NO_MAGICLINKS`` always), first as
an ``O_PATH`` fd (no device open side effects), checks the *opened object* against the rules,
and only then reopens that very inode with the requested flags and injects it with
``SECCOMP_ADDFD_FLAG_SEND``. Rewriting the path buffer, symlinks and ``../`` cannot reach a
denied file: the check applies to what was opened, not to what was asked for.

Guaranteed (each is a test running a compiled C attack program, compared with the kernel):

* **The rules see real paths** (as the target sees them, inside its root): symlinks, ``..``,
  dirfds, the cwd, ``openat2`` without RESOLVE flags, i386 ``int $0x80`` calls and a thread
  rewriting the path buffer all end at the object's real path. ``/proc/self`` is rewritten to
  the target; ``/dev/stdin``, ``/dev/fd/N`` and ``/proc/self/fd/N`` reopen the target's own
  fd N (rules apply when it is a file); every other magic link (``/proc/self/root``,
  ``/proc/PID/cwd``…) fails with ``ELOOP``.
* **Deny rules follow objects, not names.** For each deny pattern, its *literal prefix* (the
  path before the first glob character, cut at a ``/``) is taken; at load, the (dev, ino) of
  every existing directory on that prefix and of the prefix itself are recorded
  (:class:`PathRules`). Then rename, renameat2 (also ``RENAME_EXCHANGE``, both ways) and
  link are refused (``EACCES``) when the object moved or linked *is or may hold* something a
  deny rule matches — its real path is matched by a deny rule or is an ancestor of a path one
  could match (:meth:`PathRules.could_contain`; a ``**`` component makes everything below it
  count), or its inode is a recorded one — and when the *new name* is such a path (nothing
  is moved, linked, symlinked or created into or above a denied area, nor replaces a
  protected directory). So glob denies hold after renames exactly as literal ones do.
  Other names of denied objects are denied by inode: the object a wildcard-free deny rule
  names, and everything under the directory ``D`` of a ``D/**`` deny (the opened object's
  ancestors are walked with ``..``, which crosses mounts as the kernel does): hard links
  and bind mounts made before the run do not reach them.
* **The target's credentials decide** every open and change: the worker thread takes the
  target's fsuid, fsgid, supplementary groups *and effective capabilities* (per-thread
  ``capset``; see :func:`.target.acting_as`), so a root target without capabilities, a
  normal user and a user with a supplementary group get the kernel's own answers. A target
  in another user namespace than the supervisor's is refused everything (``EACCES``, fail
  closed): its ids and capabilities cannot be reproduced here.
* **The supervisor never blocks on the target's behalf.** A FIFO or device is opened with
  ``O_NONBLOCK`` (cleared afterwards unless the target asked for it). A FIFO open that must
  wait for the other end is finished by :class:`FifoWaiter` on its own thread, never in a
  pool worker; the waiting reader holds a read end meanwhile (as a blocked reader counts as
  one in the kernel), a waiting writer retries every 20 ms. A signal that interrupts the
  target's call (or its death) cancels the wait within one interval and our end is closed.
* ``O_PATH`` opens work: seccomp's ADDFD cannot install an ``O_PATH`` file (EBADF), so the
  target gets a real read-only fd of the checked directory or regular file, opened with its
  own credentials.
* i386 ``stat``/``lstat``/``oldstat``/``oldlstat``/``stat64``/``lstat64``/``fstatat64`` and
  ``statx`` are emulated with the kernel's compat layouts (:mod:`.statlayout`), byte for
  byte (untouched padding included); other foreign layouts get ``ENOSYS``; x32 is refused.

Calls: ``open``, ``openat``, ``openat2``, ``creat`` (``O_CLOEXEC`` honoured; new files only
at ``<checked parent>/<name>`` with ``O_EXCL|O_NOFOLLOW``, ``O_TRUNC`` applied after the
check); the stat family above; ``access``/``faccessat``/``faccessat2`` (effective ids decide);
``readlink(at)``; ``mkdir(at)``, ``unlink(at)``, ``rmdir``, ``rename(at|at2)``,
``symlink(at)``, ``link(at)`` (the parent directory is resolved and the name checked for
``write``; the supervisor acts on that directory fd and the single last component; a hard
link needs read *and* write on the file, so a new name cannot widen access).

Every other path-taking call (chmod, chown, xattrs, truncate, statfs, utimes, mknod,
getdents, watches, exec, chdir, handles, mount calls…) is served by the mixin in
:mod:`.fsmeta`, whose docstring says how; fd-based calls act on files already opened here.

Not guaranteed (documented differences and open ends):

* The rename guard is conservative: with a ``**`` component every path at or under the
  part before it counts as possibly holding a match (``deny /**/x`` forbids every rename and
  link), and a new file is not created at a path that is, or is above, a possible match.
* Deny patterns whose literal prefix does not exist at load have no recorded inodes; their
  paths are still protected from renames/links/symlinks by name, and the target cannot
  create the denied area itself (``mkdir`` of an ancestor is allowed: it makes the real
  place). Inodes are recorded in the supervisor's own mount namespace. A pattern whose
  literal prefix goes through a symlink never matches (rules match real paths): name the
  real path. Hard links made *before the run* to files under a glob-denied directory are
  separate names (only ``D/**`` directories and literal files are inode-protected); a
  non-directory whose parent cannot be confirmed during the ancestor walk (renamed at that
  moment, or unlinked) is refused.
* An ``O_PATH`` open yields an ``O_RDONLY`` fd (``F_GETFL`` differs, ``read`` works), needs
  read permission where O_PATH would not, and fails with ``EOPNOTSUPP`` for FIFOs, sockets,
  devices and symlinks (``O_PATH|O_NOFOLLOW``).
* FIFOs: a reader waits until a writer is *present* (checked with a non-consuming tee(2));
  a writer that opened and closed between two checks without writing is missed (the
  kernel's blocked reader would have returned). A waiting writer is not counted as a writer
  by the kernel meanwhile. At most 256 opens wait per handler (more: ``EAGAIN``). Devices
  are opened with ``O_NONBLOCK`` (a tty/serial line does not wait for carrier).
* Not decided here: fd-based calls (they act on files already opened through here;
  ``fstat`` of an fd is the kernel's) and io_uring (the sandbox base refuses it); exec,
  chdir, handles and mount calls are the :mod:`.fsmeta` mixin's (its docstring says which
  are emulated, refused or let through, and why).
* Namespace changes act on the checked parent directory's fd: if another thread renames
  that directory meanwhile, the change lands at its new place (which can never be inside or
  above a denied area: such renames are refused), and allow rules were judged on the old one.
* Denied paths fail with ``EACCES``; creating through a dangling symlink fails with
  ``EACCES``; the target's umask applies on top of the supervisor's own.
"""
from __future__ import annotations

import ctypes
import errno
import os
import re
import stat as _stat
import threading
from dataclasses import dataclass

from ..errors import SysgateError
from ..kernel import abi, notify
from ..kernel import calls
from ..supervisor import Reply, TargetGone
from .base import ENOSYS, Handler, check_default
from . import statlayout
from .fsmeta import MetadataCalls
from .target import (AT_FDCWD, acting_as, as_supervisor, fetch_fd, give_back, read_exact, read_string,
                     same_user_namespace, signed32, take_thread, unchecked_credentials, write_memory)

EACCES = Reply.errno(errno.EACCES)
RESOLVE_BENEATH, RESOLVE_IN_ROOT, RESOLVE_NO_MAGICLINKS, RESOLVE_NO_SYMLINKS = 0x08, 0x10, 0x02, 0x04
AT_EMPTY_PATH, AT_SYMLINK_NOFOLLOW, AT_EACCESS = 0x1000, 0x100, 0x200
_AT_REMOVEDIR, _AT_SYMLINK_FOLLOW, _AT_NO_AUTOMOUNT = 0x200, 0x400, 0x800
_RENAME_EXCHANGE = 0x2
_O_TMPFILE = os.O_TMPFILE
_W_OK = os.W_OK
_STATX_SIZE = 256
#: calls whose method checks ID_VALID before acting on anything :meth:`FsHandler.handle` read by
#: tid: the open family reads its path with a checked read first; the stat, access and readlink
#: families look their path up with :meth:`FsHandler._lookup`, whose every way checks before it
#: resolves anything (a checked path read, :meth:`Resolver.base_fd`, :func:`.target.fetch_fd`).
#: They need no ID_VALID of their own up front (before it, they only reply EINVAL/ENOSYS).
_CHECKED_BY_PATH_READ = frozenset(("open", "openat", "creat", "openat2",
                                   "stat", "lstat", "newfstatat", "statx", "stat64", "lstat64", "fstatat64",
                                   "oldstat", "oldlstat", "access", "faccessat", "faccessat2",
                                   "readlink", "readlinkat"))


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
    """An ordered rule list: the first rule matching (path, mode) decides; else ``default``.

    Deny rules also protect *objects*, not only names (see the module docstring):
    :meth:`could_contain` tells whether a path is, or is an ancestor of, something a deny
    rule matches (such a path must not be moved, linked or replaced), and the (dev, ino)
    of what the deny rules name at load time are kept to deny other names of them.
    """

    def __init__(self, rules=(), default: str = "deny"):
        check_default("fs", default)
        self.rules = [r if isinstance(r, PathRule) else parse_rule(r) for r in rules]
        self.default = default
        self._compiled = [(r.verdict == "allow", r.modes, r.regex) for r in self.rules]
        denies = [r for r in self.rules if r.verdict == "deny"]
        bodies = [b for r in denies for b in _ancestry(r.pattern)]
        self._ancestry = re.compile("(?:" + "|".join(bodies) + r")\Z", re.S) if bodies else None
        self.denied_inodes, self.denied_trees, self.protected_inodes = self._inodes(denies)

    @staticmethod
    def _inodes(denies):
        """(dev, ino) -> denied modes for what deny rules name at load: the object a rule names
        (a literal path, or ``D`` of ``D/**``), and the directories ``D`` of ``D/**`` rules whose
        whole tree is denied; and the (dev, ino) of every existing directory on each deny rule's
        literal prefix (the path before its first glob), which renames and links must not move."""
        denied: dict[tuple[int, int], frozenset] = {}
        trees: dict[tuple[int, int], frozenset] = {}
        protected = set()
        for rule in denies:
            prefix = literal_prefix(rule.pattern)
            path = "/"
            for part in [p for p in prefix.split("/") if p] or [""]:
                path = os.path.join(path, part)
                try:
                    st = os.stat(path)
                except OSError:
                    break
                protected.add((st.st_dev, st.st_ino))
            try:
                st = os.stat(prefix)
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            if rule.regex.match(prefix):
                denied[key] = denied.get(key, frozenset()) | rule.modes
                protected.add(key)
            if rule.pattern == prefix.rstrip("/") + "/**" and _stat.S_ISDIR(st.st_mode):
                trees[key] = trees.get(key, frozenset()) | rule.modes
        return denied, trees, protected

    def allows(self, path: str, modes) -> bool:
        """True when every mode in ``modes`` is allowed for ``path``."""
        for mode in modes:
            if not self._allows_one(path, mode):
                return False
        return True

    def _allows_one(self, path: str, mode: str) -> bool:
        for allow, modes, regex in self._compiled:
            if mode in modes and regex.match(path):
                return allow
        return self.default == "allow"

    def could_contain(self, path: str) -> bool:
        """Is ``path`` matched by a deny rule (any mode), or an ancestor of something one could match?"""
        return self._ancestry is not None and self._ancestry.match(path) is not None

    def inode_denied(self, st: os.stat_result, modes, table=None) -> bool:
        """Is the object ``st`` (in ``table``: default, the objects deny rules name) denied ``modes``?"""
        denied = (self.denied_inodes if table is None else table).get((st.st_dev, st.st_ino))
        return denied is not None and not denied.isdisjoint(modes)


def literal_prefix(pattern: str) -> str:
    """The directory (or, without wildcards, the path) a pattern names before its first glob."""
    cut = min((i for i in (pattern.find("*"), pattern.find("?")) if i >= 0), default=-1)
    if cut < 0:
        return pattern
    return pattern[:cut].rpartition("/")[0] or "/"


def _ancestry(pattern: str) -> list[str]:
    """Regex bodies matching the paths a deny ``pattern`` matches and all their possible
    ancestors: ``/``, then each leading run of components; a component holding ``**`` can
    span any depth, so everything at or under the part before it counts."""
    parts = [p for p in pattern.split("/") if p]
    out = [re.escape("/")]
    for j, part in enumerate(parts):
        head = "/" + "/".join(parts[:j])
        if "**" in part:
            out.append((_glob_body(head) if j else "") + r"(?:/.*)?")
            return out
        out.append(_glob_body("/" + "/".join(parts[:j + 1])))
    return out


# --- resolution -------------------------------------------------------------------------
class Resolver:
    """Opens paths the way thread ``n.pid`` would see them, but from the supervisor."""

    def __init__(self, n, creds, check: bool = True, directory: int | None = None):
        """``check=False``: no ID_VALID after looking at the thread's root, for a caller that checks
        once before the root fd is used (:meth:`FsHandler.handle`); ``directory``: that caller's fd
        of the thread's ``/proc/TID`` (:func:`.target.take_thread`; else one is opened here)."""
        self.n, self.creds = n, creds
        self._fds = []
        try:
            if directory is None:
                directory = self._keep(os.open(f"/proc/{n.pid}", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))
            self.proc = directory
            own_root, own_identity = _own_root()
            if own_identity is not None and calls.mount_and_inode(directory, b"root") == own_identity:
                # our own root (one look at the thread's: the same directory in the same mount, so
                # the same paths): resolved from our fd of it, nothing to open or read per call
                self.root_fd, self.root_host = own_root, "/"
            else:
                self.root_fd = self._keep(os.open("root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC,
                                                  dir_fd=directory))
                self.root_host = fd_path(self.root_fd)   # of that very fd: a chroot meanwhile cannot split the two
        except (FileNotFoundError, ProcessLookupError):
            self.close()
            raise TargetGone(f"thread {n.pid} is gone") from None
        self.shared_root = self.root_host == "/"
        if check and not n.valid():     # the tid may have been recycled before the open
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
        where = "cwd" if dirfd == AT_FDCWD else f"fd/{dirfd}"
        try:
            with as_supervisor():       # our right to look at the target, not its own rights
                fd = self._keep(os.open(where, os.O_PATH | os.O_CLOEXEC, dir_fd=self.proc))
        except FileNotFoundError:
            if not self.n.valid():
                raise TargetGone(f"notification {self.n.id} is no longer valid") from None
            raise OSError(errno.EBADF, os.strerror(errno.EBADF)) from None
        self.n.check_valid()
        return fd

    def target_path(self, path: bytes) -> bytes:
        """Rewrite ``/proc/self`` and ``/proc/thread-self`` (which would name the supervisor)."""
        if not path.startswith(b"/proc/"):
            return path
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
                return calls.openat2(base, path, flags, mode, resolve)
            inside = self.view(fd_path(base))
            if inside is None:
                raise OSError(errno.EACCES, "directory outside the target's root")
            path = os.fsencode(inside).rstrip(b"/") + b"/" + path
        return calls.openat2(self.root_fd, path, flags, mode, resolve | RESOLVE_IN_ROOT)

    def open_object(self, dirfd: int, path: bytes, flags: int, mode: int = 0,
                    resolve: int = 0) -> tuple[int, str | None]:
        """:meth:`open`, and the object's path as the target sees it when that is known without
        asking the kernel (None: :meth:`FsHandler.check` reads it from the fd). It is known for an
        absolute path of names only (no empty, ``.`` or ``..`` component) opened with
        ``RESOLVE_NO_SYMLINKS`` in the target's root: each component was looked up in the one
        before, from the root, so the path is the object's real path (mounts on the way do not
        change it). A path through a symlink (ELOOP) is opened again the usual way."""
        real = self.target_path(path)
        if resolve & (RESOLVE_BENEATH | RESOLVE_IN_ROOT) or not _plain(real):
            return self.open(dirfd, path, flags, mode, resolve), None
        try:
            fd = calls.openat2(self.root_fd, real, flags, mode, resolve | RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS)
            return fd, os.fsdecode(real)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
        return self.open(dirfd, path, flags, mode, resolve), None

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


def _plain(path: bytes) -> bool:
    """An absolute path whose every component is a name (see :meth:`Resolver.open_object`). Names
    starting with a dot are not told from ``.`` and ``..`` (one test, per call): they are not plain."""
    return path[:1] == b"/" and b"/." not in path and b"//" not in path and path[-1:] != b"/"


def fd_path(fd: int) -> str:
    """The path the kernel reports for our ``fd`` (without the " (deleted)" suffix of an
    unlinked file; a file really named "x (deleted)" keeps its name)."""
    path = os.readlink(str(fd), dir_fd=_own_fds())
    if path.endswith(" (deleted)") and os.fstat(fd).st_nlink == 0:
        return path[:-10]
    return path


def reopen(fd: int, flags: int, mode: int = 0) -> int:
    """Open the object behind our ``fd`` anew with ``flags`` (its /proc/self/fd/N magic link)."""
    return os.open(str(fd), flags, mode, dir_fd=_own_fds())


_fd_dir = -1
_fd_dir_lock = threading.Lock()


def _own_fds() -> int:
    """Our O_PATH fd of ``/proc/self/fd``, opened once per process: :func:`fd_path` and
    :func:`reopen` look fds up from it instead of walking ``/proc/self/fd/N`` (~1 us each, twice
    per open). A forked child (worker processes) must not use its parent's: it opens its own."""
    global _fd_dir
    if _fd_dir < 0:
        with _fd_dir_lock:
            if _fd_dir < 0:
                _fd_dir = os.open("/proc/self/fd", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    return _fd_dir


_root: tuple[int, tuple[int, int] | None] | None = None


def _own_root() -> tuple[int, tuple[int, int] | None]:
    """(our O_PATH fd of our root, its (mount id, inode) or None when the kernel does not tell),
    opened once per process (reopened after fork, as :func:`_own_fds`). A target thread whose
    root is this directory is resolved from it (:class:`Resolver`). The supervisor never chroots."""
    global _root
    if _root is None:
        with _fd_dir_lock:
            if _root is None:
                fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
                _root = (fd, calls.mount_and_inode(fd, b""))
    return _root


def _forget_own_fds() -> None:
    global _fd_dir, _fd_dir_lock, _root
    if _fd_dir >= 0:
        os.close(_fd_dir)
    if _root is not None:
        os.close(_root[0])
    _fd_dir, _fd_dir_lock, _root = -1, threading.Lock(), None


os.register_at_fork(after_in_child=_forget_own_fds)


# --- the handler ----------------------------------------------------------------------
class FsHandler(MetadataCalls, Handler):
    """Path allow/deny rules for opens, stat/access/readlink and namespace changes, by emulation."""

    name = "fs"
    syscalls = ("open", "openat", "openat2", "creat", "stat", "lstat", "newfstatat", "statx",
                "stat64", "lstat64", "fstatat64", "oldstat", "oldlstat",
                "access", "faccessat", "faccessat2", "readlink", "readlinkat",
                "mkdir", "mkdirat", "unlink", "unlinkat", "rmdir", "rename", "renameat", "renameat2",
                "symlink", "symlinkat", "link", "linkat") + MetadataCalls.meta_syscalls
    blocking = True

    def __init__(self, rules=(), default: str = "deny", *, as_target: bool = True, deadline: float | None = None):
        self.rules = rules if isinstance(rules, PathRules) else PathRules(rules, default)
        self.as_target = as_target
        self.deadline = deadline        # None: the supervisor's handler_timeout
        self.waiter = FifoWaiter()

    def close(self) -> None:
        self.waiter.close()

    def handle(self, n):
        # Re-validating ids around reads: everything below reads the target by tid (status,
        # ns/user, root) and the tid may have been recycled. A notification valid at time T was
        # valid from RECV to T (it never becomes valid again) and its thread, waiting in it,
        # kept its tid, so ONE ID_VALID after the last read and before anything takes effect
        # covers all of them. Here it is deferred: the open family reads its path (and
        # openat2 its open_how) with a checked read before using anything read here, and an
        # effect of a decision made on stale reads (an EACCES reply, ADDFD) cannot reach
        # another process: the kernel answers only a still-valid notification. Every other
        # call is checked here, once, before its method runs.
        syscall = n.syscall
        pair, status = take_thread(n)       # the thread's /proc directory, for the whole call
        try:
            creds = unchecked_credentials(n, status)   # an OSError becomes the errno reply in Handler.__call__
            if self.as_target and not same_user_namespace(n, check=False, directory=pair[0]):
                return EACCES               # its ids and capabilities cannot be reproduced here
            resolver = Resolver(n, creds, check=False, directory=pair[0])
            try:
                with acting_as(creds if self.as_target else None):
                    if syscall not in _CHECKED_BY_PATH_READ:
                        n.check_valid()
                    return getattr(self, "_" + syscall)(n, creds, resolver)
            finally:
                resolver.close()
        finally:
            give_back(n, pair)

    # --- checks
    def check(self, resolver: Resolver, fd: int, modes, view: str | None = None) -> bool:
        """Are ``modes`` allowed on the object behind our ``fd``? Its real path decides (``view``
        when :meth:`Resolver.open_object` knows it, else read from the fd), and then its inode
        and, when deny rules name directories, the inodes of its ancestors (other names of a
        denied object: hard links, bind mounts)."""
        if view is None:
            view = resolver.view(fd_path(fd))
        if view is None or not self.rules.allows(view, modes):
            return False
        if not self.rules.denied_inodes:
            return True
        st = os.fstat(fd)
        if self.rules.inode_denied(st, modes):
            return False
        return not self.rules.denied_trees or not self._ancestor_denied(fd, st, modes)

    def _ancestor_denied(self, fd: int, st: os.stat_result, modes) -> bool:
        """Walk up from the object with ``..`` (which crosses mount points as the kernel's walk
        does) and look for the directory of a ``D/**`` deny rule. Fails closed when the parent of a
        non-directory cannot be confirmed (it was renamed during the check)."""
        with as_supervisor():
            if _stat.S_ISDIR(st.st_mode):
                cur = os.open("..", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
            else:
                head, _, name = fd_path(fd).rpartition("/")
                try:
                    cur = os.open(head or "/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
                except OSError:
                    return True
                try:
                    again = os.stat(name, dir_fd=cur, follow_symlinks=False)
                except OSError:
                    again = None
                if again is None or (again.st_dev, again.st_ino) != (st.st_dev, st.st_ino):
                    os.close(cur)
                    return True
            try:
                for _ in range(4096):
                    here = os.fstat(cur)
                    if self.rules.inode_denied(here, modes, self.rules.denied_trees):
                        return True
                    up = os.open("..", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=cur)
                    there = os.fstat(up)
                    os.close(cur)
                    cur = up
                    if (there.st_dev, there.st_ino) == (here.st_dev, here.st_ino):
                        return False
                return True
            finally:
                os.close(cur)

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
        if size < calls.OPEN_HOW.size or size > 4096:
            return Reply.errno(errno.EINVAL if size < calls.OPEN_HOW.size else errno.E2BIG)
        with as_supervisor():
            raw = read_exact(n, a[2], size)
        if any(raw[calls.OPEN_HOW.size:]):
            return Reply.errno(errno.E2BIG)
        flags, mode, resolve = calls.OPEN_HOW.unpack_from(raw)
        if flags >> 32 or mode & ~0o7777 or resolve & ~0x3F:
            return Reply.errno(errno.EINVAL)
        return self._do_open(n, creds, resolver, signed32(a[0]), a[1], flags, mode, resolve)

    def _do_open(self, n, creds, resolver, dirfd, address, flags, mode, resolve):
        path = read_string(n, address)            # read once; never looked at again
        cloexec = bool(flags & os.O_CLOEXEC)
        fd = self._open_checked(resolver, creds, dirfd, path, flags, mode, resolve)
        if fd is None:
            return EACCES
        if isinstance(fd, PendingFifo):
            return self.waiter.take(n, fd, cloexec)
        try:
            n.inject_fd(fd, send=True, cloexec=cloexec)
        finally:
            os.close(fd)
        return None

    def _open_checked(self, resolver, creds, dirfd, path, flags, mode, resolve):
        """Our fd for the target's open (or a :class:`PendingFifo`), or None when the rules deny it."""
        if flags & os.O_PATH:               # the kernel ignores every other flag with O_PATH
            flags &= os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        modes = _open_modes(flags)
        tmpfile = flags & _O_TMPFILE == _O_TMPFILE
        walk = os.O_PATH | os.O_CLOEXEC | (flags & (os.O_NOFOLLOW | os.O_DIRECTORY))
        if tmpfile:
            walk |= os.O_DIRECTORY
        if flags & os.O_CREAT and flags & os.O_EXCL:
            walk |= os.O_NOFOLLOW
        for _ in range(3):
            try:
                pathfd, view = resolver.open_object(dirfd, path, walk, 0, resolve)
            except FileNotFoundError:
                if not flags & os.O_CREAT:
                    raise
                fd = self._create(resolver, creds, dirfd, path, flags, mode, resolve)
                if fd is not False:
                    return fd
                continue                    # appeared meanwhile: open the existing file
            except OSError as exc:
                own = own_fd(resolver, path) if exc.errno == errno.ELOOP else None
                if own is None:
                    raise
                return self._reopen_own_fd(resolver, creds, own, flags, modes)
            try:
                if flags & os.O_CREAT and flags & os.O_EXCL:
                    raise OSError(errno.EEXIST, os.strerror(errno.EEXIST))
                if tmpfile:
                    return self._reopen_tmpfile(resolver, pathfd, flags, mode, creds)
                if not self.check(resolver, pathfd, modes, view):
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
            if not self.rules.allows(view, {"write"}) or self.rules.could_contain(view):
                return None
            create = (flags & ~(os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_PATH)) | \
                os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY
            try:
                return os.open(name, create, mode & ~creds.umask, dir_fd=dfd)
            except FileExistsError:
                if flags & os.O_EXCL:
                    raise
                return False
        finally:
            os.close(dfd)

    def _reopen_own_fd(self, resolver, creds, own: tuple[int, bool], flags: int, modes):
        """``/dev/stdin``, ``/proc/self/fd/N``…: reopen the target's own fd N, as the kernel would."""
        number, leader = own
        dup = fetch_fd(resolver.n, number, creds, leader=leader)
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
        return reopen(dirfd, (flags & ~os.O_CLOEXEC) | os.O_CLOEXEC, mode & ~creds.umask)

    # --- metadata family
    def _lookup(self, n, creds, resolver, dirfd, address, flags, modes=("read",)) -> int:
        """Our O_PATH fd for a stat/access/readlink-style path argument; OSError(EACCES) if denied."""
        path = read_string(n, address) if address else b""
        if not path and flags & AT_EMPTY_PATH and dirfd == AT_FDCWD:
            path = b"."     # the cwd is no fd the target holds: chdir (not checked) may have put it anywhere
        own = (dirfd, False) if not path and flags & AT_EMPTY_PATH else None
        view = None
        if own is None:
            walk = os.O_PATH | os.O_CLOEXEC | (os.O_NOFOLLOW if flags & AT_SYMLINK_NOFOLLOW else 0)
            try:
                fd, view = resolver.open_object(dirfd, path, walk)
            except OSError as exc:
                # /proc/self/fd/N, /dev/stdin...: the kernel follows the magic link to the target's
                # own fd N (glibc's fchmodat with AT_SYMLINK_NOFOLLOW chmods /proc/self/fd/N)
                follows = exc.errno == errno.ELOOP and not flags & AT_SYMLINK_NOFOLLOW
                own = own_fd(resolver, path) if follows else None
                if own is None:
                    raise
        if own is not None:
            # an fd the target already holds: reading its metadata needs no rule, linking it does
            fd = fetch_fd(n, own[0], creds, leader=own[1])
            if "write" not in modes or not fd_path(fd).startswith("/"):
                return fd
        if not self.check(resolver, fd, modes, view):
            os.close(fd)
            raise OSError(errno.EACCES, "denied by the fs rules")
        return fd

    def _stat(self, n, creds, resolver):
        return self._emulate_stat(n, creds, resolver, AT_FDCWD, n.args[0], n.args[1], 0)

    def _lstat(self, n, creds, resolver):
        return self._emulate_stat(n, creds, resolver, AT_FDCWD, n.args[0], n.args[1], AT_SYMLINK_NOFOLLOW)

    _stat64, _lstat64, _oldstat, _oldlstat = _stat, _lstat, _stat, _lstat

    def _newfstatat(self, n, creds, resolver):
        a = n.args
        return self._emulate_stat(n, creds, resolver, signed32(a[0]), a[1], a[2], a[3] & 0xFFFFFFFF)

    _fstatat64 = _newfstatat

    def _emulate_stat(self, n, creds, resolver, dirfd, address, buf, flags):
        """The stat family: the kernel's own bytes for the native layout, a struct built like the
        kernel's compat code for the layouts in :mod:`.statlayout`, ENOSYS for any other."""
        if flags & ~(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH | _AT_NO_AUTOMOUNT):
            return Reply.errno(errno.EINVAL)
        native = n.arch == abi.native_arch()
        size = statlayout.NATIVE_STAT_SIZE.get(n.arch) if native else None
        compat = None if native else statlayout.COMPAT.get((n.arch, n.syscall))
        if size is None and compat is None:
            return ENOSYS
        fd = self._lookup(n, creds, resolver, dirfd, address, flags & ~_AT_NO_AUTOMOUNT)
        try:
            if compat is not None:
                chunks = compat(os.fstat(fd))
            else:
                out = ctypes.create_string_buffer(size)
                calls.raw_syscall("newfstatat", ctypes.c_int(fd), ctypes.c_char_p(b""), out,
                                 ctypes.c_int(AT_EMPTY_PATH))
                chunks = [(0, out.raw)]
        finally:
            os.close(fd)
        for offset, data in chunks:
            write_memory(n, buf + offset, data)
        return Reply.value(0)

    def _statx(self, n, creds, resolver):
        a = n.args
        if n.arch not in statlayout.STATX_ARCHES:
            return ENOSYS
        flags, mask = a[2] & 0xFFFFFFFF, a[3] & 0xFFFFFFFF
        fd = self._lookup(n, creds, resolver, signed32(a[0]), a[1], flags & (AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH))
        try:
            out = ctypes.create_string_buffer(_STATX_SIZE)
            sync = flags & 0x6000                     # AT_STATX_SYNC_TYPE
            calls.raw_syscall("statx", ctypes.c_int(fd), ctypes.c_char_p(b""), ctypes.c_int(AT_EMPTY_PATH | sync),
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
                calls.raw_syscall("faccessat2", ctypes.c_int(fd), ctypes.c_char_p(b""), ctypes.c_int(mode),
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
            length = calls.raw_syscall("readlinkat", ctypes.c_int(fd), ctypes.c_char_p(b""), out,
                                      ctypes.c_size_t(4096))
        finally:
            os.close(fd)
        data = out.raw[:min(length, size)]
        write_memory(n, buf, data)
        return Reply.value(len(data))


    # --- namespace changes: checked parent + one component, done by the supervisor as the target
    def _changed(self, resolver, dirfd, address, n):
        """(our parent dir fd, name, the path as the target sees it) for a path the call creates or
        removes; EACCES when denied."""
        dfd, name, view = resolver.parent(dirfd, read_string(n, address).rstrip(b"/") or b"/")
        if not name or name in (b".", b".."):
            os.close(dfd)
            raise OSError(errno.EBUSY if name else errno.ENOENT, "not a removable or creatable name")
        if not self.rules.allows(view, {"write"}):
            os.close(dfd)
            raise OSError(errno.EACCES, "denied by the fs rules")
        return dfd, name, view

    def _in_parent(self, resolver, dirfd, address, n, action):
        dfd, name, _ = self._changed(resolver, dirfd, address, n)
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
        """Both names are checked for write; the moved object must not be, nor hold, anything a
        deny rule matches (by path and by the inodes recorded at load), and the new name must not
        be, nor lie above, anything a deny rule could match (RENAME_EXCHANGE moves both ways)."""
        olddir, old, newdir, new, flags = args or n.args[:5]
        flags &= 0xFFFFFFFF
        ofd, oname, oview = self._changed(resolver, signed32(olddir), old, n)
        try:
            nfd, nname, nview = self._changed(resolver, signed32(newdir), new, n)
            try:
                self._may_move(ofd, oname, oview)
                self._may_place(nfd, nname, nview)
                if flags & _RENAME_EXCHANGE:
                    self._may_move(nfd, nname, nview)
                    self._may_place(ofd, oname, oview)
                calls.raw_syscall("renameat2", ctypes.c_int(ofd), ctypes.c_char_p(oname), ctypes.c_int(nfd),
                                 ctypes.c_char_p(nname), ctypes.c_uint(flags))
            finally:
                os.close(nfd)
        finally:
            os.close(ofd)
        return Reply.value(0)

    def _may_move(self, dfd: int, name: bytes, view: str) -> None:
        """OSError(EACCES) unless the object at ``view`` may get another name."""
        if self.rules.could_contain(view):
            raise OSError(errno.EACCES, "it is, or holds, what a deny rule protects")
        if self.rules.protected_inodes:
            try:
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            except FileNotFoundError:
                return
            if (st.st_dev, st.st_ino) in self.rules.protected_inodes:
                raise OSError(errno.EACCES, "it is, or holds, what a deny rule protects")

    def _may_place(self, dfd: int, name: bytes, view: str) -> None:
        """OSError(EACCES) unless something may appear at ``view`` (replacing what is there)."""
        self._may_move(dfd, name, view)   # the same two tests: the path, and what it replaces

    def _symlink(self, n, creds, resolver, dirfd=AT_FDCWD, args=None):
        text_address, address = (args or n.args)[:2]
        text = read_string(n, text_address)        # the link's content: data, not a path we follow
        dfd, name, view = self._changed(resolver, dirfd, address, n)
        try:
            self._may_place(dfd, name, view)      # a symlink there would redirect a protected path
            os.symlink(text, name, dir_fd=dfd)
        finally:
            os.close(dfd)
        return Reply.value(0)

    def _symlinkat(self, n, creds, resolver):
        a = n.args
        return self._symlink(n, creds, resolver, signed32(a[1]), (a[0], a[2]))

    def _link(self, n, creds, resolver):
        a = n.args
        return self._linkat(n, creds, resolver, (AT_FDCWD, a[0], AT_FDCWD, a[1], 0))

    def _linkat(self, n, creds, resolver, args=None):
        """A new name for an existing file: the file must be allowed for read and write (else a
        hard link would smuggle it under an allowed name) and be nothing a deny rule protects;
        the new name must be allowed for write and not be a protected path."""
        olddir, old, newdir, new, flags = args or n.args[:5]
        flags &= 0xFFFFFFFF
        if flags & ~(_AT_SYMLINK_FOLLOW | AT_EMPTY_PATH):
            return Reply.errno(errno.EINVAL)
        follow = AT_SYMLINK_NOFOLLOW if not flags & _AT_SYMLINK_FOLLOW else 0
        src = self._lookup(n, creds, resolver, signed32(olddir), old, follow | (flags & AT_EMPTY_PATH),
                           ("read", "write"))
        try:
            view = resolver.view(fd_path(src))
            st = os.fstat(src)
            if view is None or self.rules.could_contain(view) or (st.st_dev, st.st_ino) in self.rules.protected_inodes:
                return EACCES
            dfd, name, nview = self._changed(resolver, signed32(newdir), new, n)
            try:
                self._may_place(dfd, name, nview)
                os.link(f"/proc/self/fd/{src}", name, dst_dir_fd=dfd)
            finally:
                os.close(dfd)
        finally:
            os.close(src)
        return Reply.value(0)


def own_fd(resolver, path: bytes) -> tuple[int, bool] | None:
    """``(N, leader)`` when ``path`` names the target's own fd N through a magic link, else None:
    /dev/stdin, /dev/fd/N and /proc/self/fd/N (after rewriting) name the thread-group leader's
    fd table (leader True, as proc shows it), /proc/thread-self/fd/N the calling thread's."""
    path = resolver.target_path(path)
    fixed = {b"/dev/stdin": 0, b"/dev/stdout": 1, b"/dev/stderr": 2}
    if path in fixed:
        return fixed[path], True
    tgid, tid = resolver.creds.tgid, resolver.n.pid
    for prefix, leader in ((b"/dev/fd/", True), (b"/proc/%d/fd/" % tgid, True),
                           (b"/proc/%d/task/%d/fd/" % (tgid, tid), False)):
        if path.startswith(prefix) and path[len(prefix):].isdigit():
            return int(path[len(prefix):]), leader
    return None


def _open_modes(flags: int) -> frozenset:
    """The modes an open with ``flags`` needs (read, write, or both; shared sets, nothing built per call)."""
    acc = flags & os.O_ACCMODE
    read = acc in (os.O_RDONLY, os.O_RDWR) or bool(flags & os.O_PATH)
    write = acc in (os.O_WRONLY, os.O_RDWR) or bool(flags & (os.O_CREAT | os.O_TRUNC | os.O_APPEND))
    return _MODES[read, write]


_MODES = {(False, False): frozenset(), (True, False): frozenset(("read",)), (False, True): frozenset(("write",)),
          (True, True): frozenset(("read", "write"))}


def _reopen(pathfd: int, flags: int):
    """Open the inode behind our O_PATH fd with the target's flags (the check already passed).

    Never blocks: a FIFO or device is opened with O_NONBLOCK (the flag is then cleared
    unless the target asked for it); a FIFO open that would wait for the other end becomes a
    :class:`PendingFifo`, finished by the :class:`FifoWaiter`. ``O_PATH`` is served with a
    real open (see :func:`_path_substitute`)."""
    st = os.fstat(pathfd)
    if flags & os.O_PATH:
        return _path_substitute(pathfd, st)
    if _stat.S_ISLNK(st.st_mode):
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP))
    keep = flags & ~(os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC)
    if not (_stat.S_ISFIFO(st.st_mode) or _stat.S_ISCHR(st.st_mode) or _stat.S_ISBLK(st.st_mode)) \
            or flags & os.O_NONBLOCK:
        return reopen(pathfd, keep | os.O_CLOEXEC | os.O_NOCTTY)
    fifo = _stat.S_ISFIFO(st.st_mode)
    try:
        fd = reopen(pathfd, keep | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as exc:
        if not (fifo and exc.errno == errno.ENXIO):
            raise
        return PendingFifo(os.dup(pathfd), keep, None)     # a writer with no reader yet
    if fifo and keep & os.O_ACCMODE == os.O_RDONLY and fd_path(pathfd).startswith("/") \
            and not _fifo_has_writer(fd):                  # (an anonymous pipe never waits)
        return PendingFifo(None, keep, fd)                 # a reader with no writer yet
    _clear_nonblock(fd)
    return fd


def _clear_nonblock(fd: int) -> None:
    os.set_blocking(fd, True)


def _path_substitute(pathfd: int, st: os.stat_result) -> int:
    """Our fd for an ``O_PATH`` open. seccomp's ADDFD cannot install O_PATH files (the
    kernel's fget() skips them: EBADF), so a directory is opened ``O_RDONLY|O_DIRECTORY`` and
    a regular file ``O_RDONLY``, with the target's credentials: the target gets an fd it
    could have opened itself, for an object the rules allow it to read. Other objects
    (FIFOs, sockets, devices, symlinks with O_NOFOLLOW) cannot be opened without side
    effects: EOPNOTSUPP."""
    if _stat.S_ISDIR(st.st_mode):
        extra = os.O_DIRECTORY
    elif _stat.S_ISREG(st.st_mode):
        extra = os.O_NOCTTY
    else:
        raise OSError(errno.EOPNOTSUPP, "O_PATH of a special file cannot be emulated")
    return reopen(pathfd, os.O_RDONLY | os.O_CLOEXEC | extra)


_SPLICE_F_NONBLOCK = 0x02


def _fifo_has_writer(fd: int) -> bool:
    """Would a blocking read-only open of this FIFO have returned? True when a writer is there
    (or data is waiting). tee(2) of one byte into a scratch pipe tells without consuming:
    > 0 data, EAGAIN empty with a writer, 0 empty without one."""
    r, w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        return calls.raw_syscall("tee", ctypes.c_int(fd), ctypes.c_int(w), ctypes.c_size_t(1),
                                ctypes.c_uint(_SPLICE_F_NONBLOCK)) > 0
    except BlockingIOError:
        return True
    finally:
        os.close(r)
        os.close(w)


class PendingFifo:
    """A FIFO open that must wait for the other end: ``reader`` is our open O_NONBLOCK read
    end (we count as a reader while waiting, as a blocked reader does in the kernel), or
    ``pathfd`` an O_PATH fd of a FIFO a writer is waiting to open (retried O_NONBLOCK, which
    fails with ENXIO and no side effect while there is no reader)."""

    __slots__ = ("pathfd", "flags", "reader", "n", "cloexec")

    def __init__(self, pathfd, flags, reader):
        self.pathfd, self.flags, self.reader = pathfd, flags, reader

    def ready(self) -> int | None:
        """Our blocking-mode fd for the target once the other end is there, else None."""
        if self.reader is not None:
            if not _fifo_has_writer(self.reader):
                return None
            fd, self.reader = self.reader, None
        else:
            try:
                fd = reopen(self.pathfd, self.flags | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno == errno.ENXIO:
                    return None
                raise
        _clear_nonblock(fd)
        return fd

    def close(self) -> None:
        for fd in (self.pathfd, self.reader):
            if fd is not None:
                os.close(fd)
        self.pathfd = self.reader = None


class FifoWaiter:
    """Finishes FIFO opens that wait for the other end, on its own thread, never in a worker
    of the supervisor's pool (a few FIFOs without a writer would otherwise wedge the pool).

    The worker that checked the open claims the notification (so neither the loop's default
    verdict nor its deadline answers it) and hands it here. Every ``interval`` seconds each
    waiting open is retried; it ends when the other end comes (the fd is injected with
    ADDFD|SEND), when the target's call is no longer pending (ID_VALID: a signal or its death
    cancelled it; our end is closed, as the kernel drops an interrupted opener's), or when
    the supervisor is gone. At most ``limit`` opens wait at once (more fail with EAGAIN).
    """

    interval = 0.02
    limit = 256

    def __init__(self):
        self._cond = threading.Condition()
        self._waits: list[PendingFifo] = []
        self._thread: threading.Thread | None = None
        self._closed = False

    def take(self, n, pending: PendingFifo, cloexec: bool):
        """Own ``n`` until ``pending`` completes (called in the worker that checked the open)."""
        with self._cond:
            full = len(self._waits) >= self.limit or self._closed
            claimed = not full and n.try_claim()    # False: a missed deadline already answered it
            if claimed:
                pending.n, pending.cloexec = n, cloexec
                self._waits.append(pending)
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="sysgate-fs-fifo", daemon=True)
                    self._thread.start()
                self._cond.notify()
        if not claimed:
            pending.close()
            return Reply.errno(errno.EAGAIN) if full else None
        return None

    def _run(self) -> None:
        """The waiter thread owns every taken open: only it steps and closes them, so
        :meth:`close` racing a step cannot close an fd twice."""
        while True:
            with self._cond:
                while not self._waits and not self._closed:
                    self._cond.wait()
                if self._closed:
                    waits, self._waits = self._waits, []
                    break
                waits = list(self._waits)
            done = [w for w in waits if self._step(w)]
            for w in done:
                w.close()
            with self._cond:
                self._waits = [w for w in self._waits if w not in done]
                if self._waits and not self._closed:
                    self._cond.wait(self.interval)
        for w in waits:
            w.close()

    @staticmethod
    def _step(w: PendingFifo) -> bool:
        """One attempt; True when ``w`` is finished (answered or abandoned)."""
        n = w.n
        try:
            if n.listener.fd < 0 or not n.valid():
                return True
            fd = w.ready()
            if fd is None:
                return False
            try:
                notify.addfd(n.listener.fd, n.id, fd, cloexec=w.cloexec, send=True)
            except OSError:
                pass                        # gone meanwhile (ENOENT/ESRCH) or cannot take it
            finally:
                os.close(fd)
            return True
        except OSError as exc:
            _send_errno(n, exc.errno or errno.EIO)
            return True

    def close(self) -> None:
        """Stop waiting; every waiting open's fds are closed when this returns."""
        with self._cond:
            self._closed = True
            thread = self._thread
            self._cond.notify()
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)


def _send_errno(n, error: int) -> None:
    """Answer a notification the :class:`FifoWaiter` owns (it was claimed by the worker)."""
    try:
        n._send(0, error, 0)
    except OSError:
        pass


def split_path(path: bytes) -> tuple[bytes, bytes]:
    """(parent, last component) of ``path``; a trailing slash leaves the name empty."""
    if path.endswith(b"/"):
        return path, b""
    head, _, name = path.rpartition(b"/")
    if not head:
        head = b"/" if path.startswith(b"/") else b"."
    return head, name
