"""The seccompagent-compatible handlers: names an OCI container's listener metadata or the
agent's config selects (``mkdir-deny:EROFS``), each a fixed set of syscalls and a factory
``factory(arg, state) -> handler``. They are entries of :mod:`.registry` (agent form, see
:func:`.registry.register_agent`), which the agent reads; ``arg`` is the text after ``:``.

=================  ==========================================================
``mkdir-deny``     mkdir/mkdirat fail with ``arg`` (errno name/number, EPERM)
``mkdir-emulate``  the agent creates the directory in the container, owned by the
                   caller's fsuid/fsgid, where the caller may write to the parent
                   (:class:`~sysgate.handlers.ContainerHandler`)
``mkdir-suffix``   like mkdir-emulate, ``arg`` appended to the name (seccompagent MKDIR_TMPL)
``mknod-deny``     mknod/mknodat fail with ``arg`` (EPERM)
``mknod-emulate``  the agent creates allow-listed char devices (null, zero, full, random,
                   urandom, tty); other devices EPERM; fifos/sockets/files are created as
                   the caller
``mount-deny``     mount fails with ``arg`` (EPERM)
``mount-emulate``  ``arg``: filesystem types (only ``tmpfs``), separated by ``,`` or ``+``
                   (``+`` inside a metadata ``handlers=`` list), that the agent
                   mounts in the container's mount namespace, on any directory, with
                   ContainerHandler's default flags; other mounts EPERM
=================  ==========================================================

Emulation resolves paths in the caller's root and cwd (or ``dirfd``), so symlinks and
``..`` stay inside the container (see :mod:`.container`). ``proc`` and ``sysfs``
(seccompagent's MOUNT_PROC/MOUNT_SYSFS) are refused: the agent's helper joins only the
mount namespace, so they would show the host's processes and devices. A bad ``arg`` is a
SysgateError.
"""
from __future__ import annotations

import contextlib
import errno
import re

from ..errors import SysgateError
from ..supervisor.notification import Reply, errno_value
from .container import HOST_VIEW_FSTYPES, ContainerHandler

MKDIR = ("mkdir", "mkdirat")
MKNOD = ("mknod", "mknodat")
#: filesystem types mount-emulate may mount: none of them depends on the mounter's
#: pid/net/ipc namespace, which the agent's helper does not share with the container.
MOUNTABLE = ("tmpfs",)


def _errno_arg(arg: str | None, default: int = errno.EPERM) -> int:
    if arg is None or arg == "":
        return default
    try:
        return errno_value(int(arg) if arg.isdigit() else arg)
    except ValueError as exc:
        raise SysgateError(str(exc)) from None


def deny(arg: str | None, state=None):
    """Fail the syscall with errno ``arg`` (default EPERM)."""
    reply = Reply.errno(_errno_arg(arg))

    def deny_handler(n):
        return reply
    return deny_handler


def mkdir_emulate(arg: str | None = None, state=None) -> ContainerHandler:
    """Every mkdir is made by the agent; ``arg`` (if any) is appended to the new name."""
    return CallerMkdir((arg or "").encode())


def mknod_emulate(arg: str | None = None, state=None) -> ContainerHandler:
    """ContainerHandler's default device allow-list."""
    return ContainerHandler()


def mount_emulate(arg: str | None = None, state=None) -> ContainerHandler:
    """Mount the listed filesystem types (``tmpfs``) anywhere in the container."""
    fstypes = [t.strip() for t in re.split(r"[,+]", arg or "") if t.strip()]
    if not fstypes:
        raise SysgateError(f"mount-emulate needs filesystem types (mount-emulate:{','.join(MOUNTABLE)})")
    for fstype in fstypes:
        if fstype in HOST_VIEW_FSTYPES:
            raise SysgateError(f"mount-emulate: {fstype} is not supported (the agent would mount the host's "
                              f"{HOST_VIEW_FSTYPES[fstype]}, not the container's)")
        if fstype not in MOUNTABLE:
            raise SysgateError(f"mount-emulate: unsupported filesystem type {fstype!r} "
                              f"(supported: {', '.join(MOUNTABLE)})")
    return ContainerHandler(devices=(), mounts=fstypes)


class CallerMkdir(ContainerHandler):
    """mkdir of any path, where the caller may write to the parent directory (as the
    kernel would check it), with ``suffix`` appended to the name (seccompagent's MKDIR_TMPL)."""

    def __init__(self, suffix: bytes = b""):
        super().__init__(devices=(), mkdir=["/**"])
        self.suffix = suffix

    def _mkdir(self, n, at: bool = False):
        if self.suffix:
            n = _SuffixedPath(n, n.args[1 if at else 0], self.suffix)
        return super()._mkdir(n, at)

    @contextlib.contextmanager
    def _parent(self, n, at: bool):
        with super()._parent(n, at) as (creds, dfd, *rest):
            self._may_write(creds, dfd)
            yield (creds, dfd, *rest)


class _SuffixedPath:
    """A notification whose path argument reads with ``suffix`` appended to its last component."""

    def __init__(self, n, address: int, suffix: bytes):
        self._n, self._address, self._suffix = n, address, suffix

    def __getattr__(self, name):
        return getattr(self._n, name)

    def read_string(self, address: int, *args, **kwargs) -> bytes:
        text = self._n.read_string(address, *args, **kwargs)
        if address == self._address and text.strip(b"/"):
            text = text.rstrip(b"/") + self._suffix
        return text
