"""A content-addressed cache of compiled filters, so ``sysgate run --policy P`` of an unchanged
policy launches without loading the policy parser and the compiler.

An entry is the stored filter compiled from one policy text. Its key is the SHA-256 of that text,
the options that change the filter (``--log``), sysgate's version and a fingerprint of its code
and data (the size and mtime of every module and syscall table: an edited compiler never reuses a
filter of the old one), the interpreter and the machine and kernel release. Entries live in
``$XDG_CACHE_HOME/sysgate/filters`` (default ``~/.cache/sysgate/filters``), one file per key,
written atomically (a temporary file renamed into place) with mode 0600 in a 0700 directory.

The cache is used only in a directory reached safely (see :func:`_open_dir`: no directory or
symlink of another user on the way, so root run with ``sudo``'s HOME does not cache there), and
all entry operations are relative to its descriptor. An entry is used only when all of this
holds, else it is ignored (and the next compile replaces it): the file belongs to the effective
user and is not writable by group or others, it is a regular file (not a symlink, FIFO or device)
of sane size, it parses, names this key, and its program has the SHA-256 it records and does not
return USER_NOTIF. ``cli/run.py`` stores
only filters that need nothing but launching: a plain text policy (no ``include``, no
``sandbox:``, no warnings, no notify rules) without Landlock. ``SYSGATE_NO_CACHE=1`` (or ``run
--no-cache``) turns the cache off.

What the cache saves is measured by benchmarks/startup_compile.py.
"""
from __future__ import annotations

import os
import stat

try:                         # hashlib loads OpenSSL, which costs a cached run a tenth of its start-up
    from _sha256 import sha256
except ImportError:          # pragma: no cover (Python builds without the builtin module)
    from hashlib import sha256

FORMAT = "sysgate-filter-cache"
VERSION = 1
#: environment variable that turns the cache off (any value but "" and "0")
DISABLE_ENV = "SYSGATE_NO_CACHE"
#: largest entry read (the kernel's 4096-instruction limit is 32 KiB of BPF, 64 KiB in hex)
MAX_ENTRY = 256 * 1024
_FLAG_NAMES = ("log", "spec_allow", "wait_killable_recv")


def disabled() -> bool:
    """True when the environment turns the cache off."""
    return os.environ.get(DISABLE_ENV, "") not in ("", "0")


def cache_dir() -> str:
    """Where entries live: ``$XDG_CACHE_HOME/sysgate/filters`` (a relative XDG_CACHE_HOME is
    ignored, as the XDG spec says), else ``~/.cache/sysgate/filters``."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "sysgate", "filters")


def code_fingerprint() -> bytes:
    """(name, size, mtime) of every module and data file of the installed sysgate, as bytes."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parts: list[str] = []
    stack = [root]
    while stack:
        directory = stack.pop()
        with os.scandir(directory) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                if entry.is_dir(follow_symlinks=False):
                    if entry.name != "__pycache__":
                        stack.append(entry.path)
                elif entry.name.endswith((".py", ".json")):
                    st = entry.stat()
                    parts.append(f"{entry.path[len(root):]}\0{st.st_size}\0{st.st_mtime_ns}")
    return "\n".join(sorted(parts)).encode("utf-8", "surrogateescape")


def key(text: str, version: str, *, log: bool = False) -> str:
    """The entry name for the filter compiled from policy ``text`` by sysgate ``version`` (``__version__``;
    this layer does not import the package root) with these options."""
    import sys

    uname = os.uname()
    digest = sha256()
    for part in (f"{FORMAT} {VERSION}", version, sys.version, uname.machine, uname.release,
                 "log" if log else "-"):
        digest.update(part.encode("utf-8", "surrogateescape") + b"\0")
    digest.update(sha256(code_fingerprint()).digest())
    digest.update(text.encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


class CachedFilter:
    """A filter read from the cache: what :func:`sysgate.process.run.run_command` launches with
    (the shape of a stored :class:`sysgate.process.filter.Filter`, without a listener)."""

    def __init__(self, program: bytes, arches: list[str], flags: dict[str, bool], name: str = "policy"):
        self.program, self.arches, self.flags, self.name = program, arches, flags, name
        self.group = f"{name}-{os.urandom(6).hex()}"
        self.metadata: dict = {}
        self.policy = None

    notifies = False

    def spawn(self, argv, **options):
        from .launch import spawn

        return spawn(argv, self, listener=False, **options)


_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: a crashed store's temporary file older than this (seconds) is removed by the next store
STALE_TMP = 3600


def _open_dir(directory: str | None, create: bool) -> int | None:
    """A descriptor of the entries' directory, or None when it is missing (and not ``create``d) or
    not safe. Every entry operation is made relative to it: a path checked first and used later
    could be swapped in between (a rename, a symlinked ancestor) and make root read or write
    elsewhere. So the path is opened one component at a time from ``/``, and each directory is
    checked on its descriptor. On the way to the base (the directory holding ``sysgate``): only
    directories of the effective user or root that nobody else may rename entries of (writable by
    others only when sticky, as /tmp), and only symlinks of the user or root are followed (a
    home reached through /home -> /var/home still caches). The base is not writable by others;
    ``sysgate`` and ``filters`` are the user's, not writable by others, not symlinks, made 0700
    when missing. A base of another user (root with ``sudo``'s HOME) is thus not used."""
    if directory is None:
        directory = cache_dir()
        base, tail = os.path.dirname(os.path.dirname(directory)), ("sysgate", "filters")
    else:
        base, last = os.path.split(directory)
        tail = (last,)
    if not os.path.isabs(base) or not all(name and name not in (".", "..") for name in tail):
        return None
    euid = os.geteuid()
    names = base.split("/")[::-1]          # a stack: a symlink's target is pushed onto it
    hops = 0
    try:
        fd = os.open("/", _DIR)
    except OSError:
        return None
    try:
        while names:
            name = names.pop()
            if name in ("", "."):
                continue
            try:
                sub = _subdir(fd, name, create)
            except OSError:                # a symlink? followed if the user's or root's
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                hops += 1
                if not stat.S_ISLNK(st.st_mode) or st.st_uid not in (euid, 0) or hops > 40:
                    raise
                target = os.readlink(name, dir_fd=fd)
                names += target.split("/")[::-1]
                if target.startswith("/"):
                    sub = os.open("/", _DIR)
                    os.close(fd)
                    fd = sub
                continue
            os.close(fd)
            fd = sub
            st = os.fstat(fd)
            if st.st_uid not in (euid, 0) or st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
                raise PermissionError
        st = os.fstat(fd)
        if st.st_uid not in (euid, 0) or st.st_mode & 0o022:
            raise PermissionError
        for name in tail:
            sub = _subdir(fd, name, create)
            os.close(fd)
            fd = sub
            st = os.fstat(fd)
            if st.st_uid != euid or st.st_mode & 0o022:
                raise PermissionError
    except OSError:
        os.close(fd)
        return None
    return fd


def _subdir(fd: int, name: str, create: bool) -> int:
    """Open directory ``name`` in ``fd`` (not a symlink), made 0700 first when missing and ``create``."""
    try:
        return os.open(name, _DIR, dir_fd=fd)
    except FileNotFoundError:
        if not create:
            raise
    os.mkdir(name, 0o700, dir_fd=fd)
    return os.open(name, _DIR, dir_fd=fd)


def lookup(entry_key: str, directory: str | None = None, name: str = "policy") -> CachedFilter | None:
    """The valid entry ``entry_key`` (a filter called ``name``), or None (missing, foreign, unsafe or
    corrupt: ignored). Opened without blocking (a FIFO or a device in its place must not hang the
    run) and checked on its descriptor."""
    if not entry_key.isalnum():
        return None
    dir_fd = _open_dir(directory, False)
    if dir_fd is None:
        return None
    try:
        fd = os.open(entry_key, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC,
                     dir_fd=dir_fd)
    except OSError:
        return None
    finally:
        os.close(dir_fd)
    try:
        st = os.fstat(fd)
        if (not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022
                or st.st_size > MAX_ENTRY):
            return None
        data = os.read(fd, MAX_ENTRY + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    return _parse(data, entry_key, name)


def _parse(data: bytes, entry_key: str, name: str = "policy") -> CachedFilter | None:
    """An entry's lines (not JSON: json imports re, a sixth of a cached run's start-up)::

        sysgate-filter-cache 1
        key <the entry's key>
        arches <name>,...
        flags <name>,...        (of log, spec_allow, wait_killable_recv; may be empty)
        sha256 <of the program>
        program <packed BPF in hex>
    """
    try:
        lines = data.decode("ascii").split("\n")
        if len(lines) != 7 or lines[0] != f"{FORMAT} {VERSION}" or lines[6] != "":
            return None
        fields = dict(line.split(" ", 1) for line in lines[1:6])
        if list(fields) != ["key", "arches", "flags", "sha256", "program"] or fields["key"] != entry_key:
            return None
        program = bytes.fromhex(fields["program"])
        arches = fields["arches"].split(",")
        flags = {name: True for name in fields["flags"].split(",") if name}
    except ValueError:          # also UnicodeDecodeError, a line without a space
        return None
    if (not program or len(program) % 8 or sha256(program).hexdigest() != fields["sha256"]
            or not set(flags) <= set(_FLAG_NAMES) or not all(arches)):
        return None
    if may_notify(program):     # never stored: a filter needing a listener is not launched without one
        return None
    return CachedFilter(program, arches, flags, name)


def may_notify(program: bytes) -> bool:
    """:func:`sysgate.bpf.insn.may_notify` of packed native-order BPF (``RET A`` or ``RET`` of
    USER_NOTIF), without importing bpf.insn: it imports typing, a tenth of a cached run's start-up."""
    import struct

    for code, _, _, k in struct.iter_unpack("=HBBI", program):
        if code & 0x07 == 0x06 and (code & 0x18 or k & 0xFFFF0000 == 0x7FC00000):   # BPF_RET; RVAL != K
            return True
    return False


def store(entry_key: str, filt, directory: str | None = None) -> bool:
    """Write stored filter ``filt`` as entry ``entry_key`` (atomically, 0600); False when the
    cache directory cannot be made or is not safely ours (the run goes on without the cache)."""
    program = bytes(filt.program)
    flags = sorted(name for name, on in filt.flags.items() if on)
    if not entry_key.isalnum() or not set(flags) <= set(_FLAG_NAMES) or may_notify(program):
        return False
    data = (f"{FORMAT} {VERSION}\nkey {entry_key}\narches {','.join(filt.arches)}\nflags {','.join(flags)}\n"
            f"sha256 {sha256(program).hexdigest()}\nprogram {program.hex()}\n").encode("ascii")
    dir_fd = _open_dir(directory, True)
    if dir_fd is None:
        return False
    tmp = f".{entry_key}.{os.getpid()}.tmp"
    try:
        _sweep(dir_fd, tmp)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=dir_fd)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.rename(tmp, entry_key, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except OSError:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
        return False
    finally:
        os.close(dir_fd)
    return True


def _sweep(dir_fd: int, tmp: str) -> None:
    """Remove ``tmp`` (left by a crashed store of a process that had our pid) and the temporary
    files of other stores older than :data:`STALE_TMP` (they crashed: a store takes milliseconds)."""
    import time

    old = time.time() - STALE_TMP
    with os.scandir(dir_fd) as entries:
        for entry in entries:
            if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                try:
                    if entry.name == tmp or entry.stat(follow_symlinks=False).st_mtime < old:
                        os.unlink(entry.name, dir_fd=dir_fd)
                except OSError:
                    pass
