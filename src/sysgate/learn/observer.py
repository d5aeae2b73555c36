"""Watch a command's syscalls: every call is notified, recorded and CONTINUEd.

This is observation, not enforcement: the command runs as it would unfiltered
(the kernel executes every call after the supervisor has looked at it), except
that clone3 answers ENOSYS by default (see :class:`Observer`).
The notify-all filter is a single ``RET USER_NOTIF``, so it covers every
architecture (an i386 program started from x86_64 is seen too) and, inherited
over fork and clone, every child process and thread.
"""
from __future__ import annotations

import errno
import os
import struct
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

from ..arch import syscalls
from ..supervisor import Reply
from .pins import pins_for

_U64 = struct.Struct("=Q")
CLONE3_REPLY = Reply.errno(errno.ENOSYS)


@dataclass
class Observations:
    """What a learning run saw."""

    counts: Counter = field(default_factory=Counter)        #: (arch, syscall) -> calls
    values: dict = field(default_factory=dict)              #: syscall -> {tuple of pinned argument values}
    unknown: Counter = field(default_factory=Counter)       #: (arch, nr) -> calls without a name in the tables
    tids: set = field(default_factory=set)                  #: threads seen (pid 0 when not visible)
    clone3_flags: set = field(default_factory=set)          #: clone_args.flags of clone3 calls (not filterable)

    def add(self, arch: str, nr: int, args: tuple[int, ...], tid: int = 0) -> str | None:
        """Record one call; returns its name (None when the table does not know ``nr``)."""
        self.tids.add(tid)
        try:
            name = syscalls.name(arch, nr)
        except Exception:   # an architecture without a table
            name = None
        if name is None:
            self.unknown[(arch, nr)] += 1
            return None
        self.counts[(arch, name)] += 1
        pins = pins_for(name)
        if pins:
            self.values.setdefault(name, set()).add(tuple(p.value(args, arch) for p in pins))
        return name

    @property
    def total(self) -> int:
        return sum(self.counts.values()) + sum(self.unknown.values())

    def by_syscall(self) -> Counter:
        """syscall name -> calls, over all architectures."""
        out: Counter = Counter()
        for (_, name), calls in self.counts.items():
            out[name] += calls
        return out

    def arches(self) -> list[str]:
        """Architectures seen, in the syscall tables' order."""
        seen = {arch for arch, _ in self.counts} | {arch for arch, _ in self.unknown}
        return [a for a in syscalls.arches() if a in seen] + sorted(seen - set(syscalls.arches()))


class Progress:
    """A live ``N syscalls, M distinct`` line on a terminal, redrawn at most every ``interval`` s."""

    def __init__(self, stream=None, interval: float = 0.1):
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.next = 0.0
        self.shown = False

    def update(self, obs: Observations, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self.next:
            return
        self.next = now + self.interval
        try:
            self.stream.write(f"\rsysgate learn: {obs.total} syscalls, {len(obs.by_syscall())} distinct\x1b[K")
            self.stream.flush()
            self.shown = True
        except OSError:
            pass

    def close(self) -> None:
        if self.shown:
            try:
                self.stream.write("\r\x1b[K")
                self.stream.flush()
            except OSError:
                pass


class Observer:
    """The supervisor handler of a learning run: record the call, let it run.

    With ``clone3_enosys`` (the default) clone3 fails with ENOSYS instead, as on kernels
    before 5.3: libc then falls back to clone, whose flags a filter can check (clone3
    passes them in memory), so the learned policy can pin them, namespace flags included.
    """

    process_safe = False      # the observations are collected in this process's memory

    def __init__(self, observations: Observations | None = None, progress: Progress | None = None, *,
                 clone3_enosys: bool = True):
        self.observations = observations if observations is not None else Observations()
        self.progress = progress
        self.clone3_enosys = clone3_enosys
        self._continue = Reply.continue_()

    def __call__(self, n) -> Reply:
        args = n.args
        name = self.observations.add(n.arch, n.nr, args, n.pid)
        if self.progress is not None:
            self.progress.update(self.observations)
        if name == "clone3":
            self._clone3(n, args[0])
            if self.clone3_enosys:
                return CLONE3_REPLY
        return self._continue

    def _clone3(self, n, address: int) -> None:
        try:
            flags = _U64.unpack(n.read_memory(address, 8))[0]
        except Exception:   # unreadable or gone: the kernel will say so to the caller
            return
        self.observations.clone3_flags.add(flags)


def notify_all_filter():
    """A stored filter notifying every syscall of every architecture."""
    from ..bpf.insn import ret
    from ..process.filter import Filter
    from ..kernel import abi

    return Filter.from_program([ret(abi.SECCOMP_RET_USER_NOTIF)], name="learn")


def observe(argv, observer: Observer | None = None, *, timeout: float | None = None,
            **spawn_options) -> tuple[Observations, int | None]:
    """Run ``argv`` with every syscall observed; returns (observations, return code).

    The return code is None when ``timeout`` seconds passed first (the command is then
    killed). ``spawn_options`` go to :func:`sysgate.process.launch.spawn` (env, cwd, stdio…).
    """
    from ..supervisor import Supervisor

    observer = observer if observer is not None else Observer()
    target = notify_all_filter().spawn(argv, **spawn_options)
    with target, Supervisor() as sup:
        sup.fallback(observer)
        sup.add_target(target)
        end = None if timeout is None else time.monotonic() + timeout
        while target.returncode is None:
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                break
            sup.run(timeout=left, until=lambda: target.returncode is not None)
    return observer.observations, target.returncode


def kernel_description() -> str:
    """``Linux 6.18.0 x86_64`` for headers."""
    u = os.uname()
    return f"{u.sysname} {u.release} {u.machine}"
