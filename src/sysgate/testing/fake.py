"""Notifications without a kernel: unit-test handlers as any user, on any OS.

:class:`FakeNotification` *is* a :class:`sysgate.supervisor.Notification` (same
decoding of ``syscall``, ``arch``, ``args``, ``arguments``, same single-reply rule);
only what would touch a listener or a process is replaced: target memory comes from
a :class:`FakeMemory` (and writes go there), ``valid()`` is a flag, and replies are
captured::

    n = FakeNotification("openat", (AT_FDCWD, 0x1000, 0), memory={0x1000: "/etc/shadow"})
    handler(n)                    # or run_handler(handler, n) for the supervisor's rules
    assert n.reply_kind == "errno" and n.verdict == Reply.errno("EACCES")

The target *process* is this one unless told otherwise: ``pid`` defaults to ours, so the
built-in handlers resolve paths against our root and working directory and fetch our fds,
and ``credentials`` default to ours (:func:`sysgate.handlers.target.credentials` returns a
notification's own credentials), so they decide as the user running the test, root or not.
"""
from __future__ import annotations

import bisect
import errno as _errno
import itertools
import os

from ..arch import syscalls
from ..errors import SysgateError
from ..kernel import abi
from ..supervisor import Notification, Reply, TargetGone
from ..supervisor.loop import Group, Stats

PATH_MAX = 4096
_ids = itertools.count(0x5EC0_0000)


class FakeMemory:
    """Sparse target memory: ``{address: bytes}`` segments (a ``str`` is stored UTF-8 encoded
    with its terminating NUL; where segments overlap, the one starting later wins; touching
    segments are one mapping). Reads outside every segment fail with EFAULT, like unmapped
    memory; ``faults`` makes reads starting at an address fail with a chosen errno.
    ``misses`` lists (address, length) of reads that hit no segment."""

    def __init__(self, segments: dict | None = None, faults: dict | None = None):
        runs: list[list] = []       # [start, bytearray]: overlapping or touching segments joined
        for address, data in sorted((segments or {}).items()):
            _check_address(address)
            data = data.encode() + b"\0" if isinstance(data, str) else bytes(data)
            if runs and address <= runs[-1][0] + len(runs[-1][1]):
                start, buf = runs[-1]
                buf[address - start:address - start + len(data)] = data
            else:
                runs.append([address, bytearray(data)])
        self._starts = [start for start, _ in runs]
        self._segments = {start: buf for start, buf in runs}
        self.faults = dict(faults or {})
        self.misses: list[tuple[int, int]] = []
        self.writes: list[tuple[int, bytes]] = []

    def _segment(self, address: int) -> tuple[int, bytearray] | None:
        i = bisect.bisect_right(self._starts, address) - 1
        if i >= 0:
            start = self._starts[i]
            data = self._segments[start]
            if address < start + len(data):
                return start, data
        return None

    def read(self, address: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``address``: a read ends where its segment ends."""
        if address in self.faults:
            err = self.faults[address]
            raise OSError(err, os.strerror(err))
        if length <= 0:
            return b""
        found = self._segment(address)
        if found is None:
            self.misses.append((address, length))
            raise OSError(_errno.EFAULT, os.strerror(_errno.EFAULT))
        start, data = found
        return bytes(data[address - start:address - start + length])

    def write(self, address: int, data: bytes) -> None:
        """Store ``data`` at ``address``, which must lie wholly inside one segment (EFAULT
        otherwise, like a copy-out to unmapped memory); ``writes`` records each write."""
        if address in self.faults:
            err = self.faults[address]
            raise OSError(err, os.strerror(err))
        found = self._segment(address)
        if found is None or address + len(data) > found[0] + len(found[1]):
            raise OSError(_errno.EFAULT, os.strerror(_errno.EFAULT))
        start, buf = found
        buf[address - start:address - start + len(data)] = data
        self.writes.append((address, bytes(data)))

    def read_cstring(self, address: int, limit: int = PATH_MAX) -> bytes | None:
        """The NUL-terminated string at ``address`` without the NUL; None when no NUL occurs in
        ``limit`` bytes; EFAULT when memory ends first (the contract of supervisor.memory)."""
        data = self.read(address, limit)
        end = data.find(b"\0")
        if end >= 0:
            return data[:end]
        if len(data) < limit:
            raise OSError(_errno.EFAULT, os.strerror(_errno.EFAULT))
        return None


def _check_address(address) -> None:
    if not isinstance(address, int) or not 0 <= address < 1 << 64:
        raise SysgateError(f"fake memory address must be an unsigned 64-bit int, not {address!r}")


class FakeListener:
    """Stands in for a supervisor :class:`~sysgate.supervisor.Listener` (no fd)."""

    fd = -1
    pidfd = None
    target = None

    def __init__(self, group: str = "default", state: dict | None = None):
        self.group = Group(group, state if state is not None else {})
        self.stats = Stats()


class FakeNotification(Notification):
    """A notification built from ``(syscall, args, memory)`` instead of a listener.

    ``syscall`` is a name or a number of ``arch`` (default: native); ``args`` up to six
    ints (negative ones are stored two's complement); ``memory`` a :class:`FakeMemory`
    or its ``{address: bytes|str}`` segments. After a reply, ``reply_kind`` is
    ``"value"``, ``"errno"``, ``"continue"`` or ``"inject_fd"`` and ``verdict`` the
    :class:`Reply` the kernel would have got. ``alive = False`` makes every access raise
    :class:`TargetGone` and replies report the target gone (False), as after ENOENT.
    ``injected`` lists the ``inject_fd`` calls; ``fd_numbers`` the numbers they return.
    ``pid`` (default: this process) is the thread whose root, cwd and fds handlers use;
    ``credentials`` (a :class:`sysgate.handlers.target.Credentials`, default: this
    process's) are what the handlers decide with.
    """

    __slots__ = ("memory", "alive", "reply_kind", "verdict", "injected", "fd_numbers", "credentials")

    def __init__(self, syscall: str | int, args=(), *, arch: str | None = None, memory=None, pid: int | None = None,
                 id: int | None = None, instruction_pointer: int = 0, group: str = "default",
                 state: dict | None = None, listener=None, alive: bool = True, fd_numbers=None, credentials=None):
        pid = os.getpid() if pid is None else pid
        arch = syscalls.arch_name(arch)
        nr = syscall if isinstance(syscall, int) else syscalls.resolve(arch, syscall)
        if len(args) > 6:
            raise SysgateError(f"a syscall has at most 6 arguments, got {len(args)}")
        regs = [a & 0xFFFF_FFFF_FFFF_FFFF for a in (*args, *(0,) * (6 - len(args)))]
        nid = next(_ids) if id is None else id
        data = abi.SECCOMP_DATA.pack(nr, abi.AUDIT_ARCH[arch], instruction_pointer, *regs)
        raw = bytearray(abi.SECCOMP_NOTIF.pack(nid, pid, 0, data))
        super().__init__(listener if listener is not None else FakeListener(group, state), raw, nid, pid)
        self.memory = memory if isinstance(memory, FakeMemory) else FakeMemory(memory)
        self.alive = alive
        self.reply_kind = None
        self.verdict = None
        self.injected: list[dict] = []
        self.fd_numbers = iter(fd_numbers) if fd_numbers is not None else itertools.count(3)
        self.credentials = credentials if credentials is not None else own_credentials()

    # --- what touched the kernel ---------------------------------------------------
    def valid(self) -> bool:
        return self.alive

    def read_memory(self, address: int, length: int) -> bytes:
        self._check_valid()
        data = self.memory.read(address, length)
        self._check_valid()
        return data

    def read_string(self, address: int, max: int = PATH_MAX) -> bytes:
        self._check_valid()
        data = self.memory.read_cstring(address, max)
        self._check_valid()
        if data is None:
            raise OSError(_errno.ENAMETOOLONG, "string argument longer than the limit")
        return data

    def write_memory(self, address: int, data: bytes) -> None:
        """What :func:`sysgate.handlers.target.write_memory` does for a fake: into ``memory``."""
        self._check_valid()
        self.memory.write(address, data)
        self._check_valid()

    def _send(self, val: int, error: int, flags: int) -> bool:
        self.verdict = Reply(val, error, flags)
        self.reply_kind = "continue" if flags else ("errno" if error else "value")
        if not self.alive:
            self.listener.stats.gone += 1
        return self.alive

    def inject_fd(self, fd: int, target_fd: int | None = None, send: bool = True, cloexec: bool = False) -> int:
        """Checks ``fd`` is open here (EBADF otherwise, as ADDFD would) and records the call."""
        os.fstat(fd)
        if not self.alive:
            raise TargetGone(f"notification {self.id}: target gone during ADDFD")
        if send:
            self._claim()
        number = target_fd if target_fd is not None else next(self.fd_numbers)
        self.injected.append({"fd": fd, "target_fd": target_fd, "send": send, "cloexec": cloexec,
                              "result": number})
        if send:
            self.verdict = Reply.value(number)
            self.reply_kind = "inject_fd"
        return number


def own_credentials():
    """This process's credentials, read the way the handlers read a target's."""
    from types import SimpleNamespace

    from ..handlers.target import credentials

    me = os.getpid()
    return credentials(SimpleNamespace(pid=me, id=0, credentials=None, valid=lambda: True, check_valid=lambda: None))
