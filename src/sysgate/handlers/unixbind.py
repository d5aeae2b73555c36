"""Bind a unix socket to the target's own path bytes, created in the directory the supervisor checked.

The kernel stores the path a socket is bound with *as given*, and peers see it
(``getsockname``, ``accept``, ``getpeername``). Binding through ``/proc/self/fd/N/name`` would
name the socket that way, and binding the target's path again would look it up again (a
symlink swapped in meanwhile would move the socket elsewhere). So a short-lived child
process pins the lookup instead: it clones our checked directory as a detached mount
(``open_tree``), enters a private mount namespace whose tmpfs holds only the path's
directories with that mount at the path's parent, chroots there and binds the exact bytes.
The only directory the lookup can reach besides the empty skeleton is the checked one.

A bare name (``s.sock``, ``./s.sock``) is simply bound from inside the checked directory.
Paths with ``..`` in their directory part, and supervisors that cannot make mount namespaces
(not root), bind the last component from inside the checked directory: the socket is
created where it was checked, but named by that component only.
"""
from __future__ import annotations

import ctypes
import errno
import os

from ..kernel import calls
from .target import Credentials, run_in_child

_libc = ctypes.CDLL(None, use_errno=True)
_OPEN_TREE_CLONE, _OPEN_TREE_CLOEXEC, _AT_EMPTY_PATH = 1, os.O_CLOEXEC, 0x1000
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_CLONE_NEWNS = 0x00020000
_MS_REC, _MS_PRIVATE = 0x4000, 1 << 18
_SKELETON_AT = (b"/tmp", b"/mnt", b"/dev")


def bind_named(sock: int, dfd: int, path: bytes, name: bytes, creds: Credentials) -> int:
    """``bind(sock, path)`` as ``creds`` with the socket created as ``name`` in our directory
    ``dfd`` (the checked parent of ``path``). Returns 0 or the errno (run in a child process)."""
    head = path.rpartition(b"/")[0] if b"/" in path else b""
    parts = [p for p in head.split(b"/") if p not in (b"", b".")]
    absolute = path.startswith(b"/")

    def bind_here(address: bytes) -> None:
        os.fchdir(dfd)
        _become(creds)
        _bind(sock, address)

    def bind_pinned() -> None:
        tree = calls.raw_syscall("open_tree", ctypes.c_int(dfd), ctypes.c_char_p(b""),
                                ctypes.c_uint(_OPEN_TREE_CLONE | _OPEN_TREE_CLOEXEC | _AT_EMPTY_PATH))
        _check(_libc.unshare(_CLONE_NEWNS))
        _check(_libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None))
        top = _skeleton_base()
        where = top
        for part in parts:
            where += b"/" + part
            os.mkdir(where, 0o755)
        calls.raw_syscall("move_mount", ctypes.c_int(tree), ctypes.c_char_p(b""), ctypes.c_int(-100),
                         ctypes.c_char_p(where), ctypes.c_uint(_MOVE_MOUNT_F_EMPTY_PATH))
        os.chroot(top)
        os.chdir(b"/")
        _become(creds)
        _bind(sock, path)

    if not parts and not absolute:
        return run_in_child(lambda: bind_here(path))
    if b".." not in parts and os.geteuid() == 0:
        result = run_in_child(bind_pinned)
        if result not in (errno.EPERM, errno.ENOSYS, errno.EINVAL, errno.ENOENT):
            return result           # bound, or the kernel's own answer (EADDRINUSE, EACCES…)
    return run_in_child(lambda: bind_here(name))


def _skeleton_base() -> bytes:
    """A private tmpfs to build the path's directories in (mounted over a directory that exists)."""
    for base in _SKELETON_AT:
        if _libc.mount(b"none", base, b"tmpfs", 0, b"mode=0755") == 0:
            return base
    raise OSError(errno.ENOENT, "no directory to mount the skeleton on")


def _become(creds: Credentials) -> None:
    """The target's fs identity and umask (the child is ours alone: process-wide is fine)."""
    os.umask(creds.umask)
    os.setgroups(list(creds.groups))
    calls.raw_syscall("setfsgid", ctypes.c_uint(creds.fsgid))
    calls.raw_syscall("setfsuid", ctypes.c_uint(creds.fsuid))


def _bind(sock: int, path: bytes) -> None:
    address = (ctypes.c_char * (2 + len(path) + 1)).from_buffer_copy(b"\x01\x00" + path + b"\0")
    _check(_libc.bind(sock, address, len(address)))


def _check(result: int) -> None:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


_libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
_libc.unshare.argtypes = (ctypes.c_int,)
_libc.bind.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint32)
