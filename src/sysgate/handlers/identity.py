"""Fake identity and reproducible runs: uname/hostname, deterministic clocks and getrandom.

* :class:`IdentityHandler` (``identity``): ``uname`` returns configured fields (the others
  are the supervisor's), and so do i386's ``olduname`` (``struct old_utsname``: the first
  five 65-byte fields) and ``oldolduname`` (``struct oldold_utsname``: five 9-byte fields,
  each cut to 8 bytes and a NUL, as the kernel does); ``sethostname``/``setdomainname`` fail
  with ``EPERM``.
* :class:`TimeHandler` (``time``): ``clock_gettime``, ``gettimeofday`` and ``time`` return a
  clock that starts at ``start`` and advances by ``step`` seconds per call, whatever the
  wall clock does. **The vDSO bypasses seccomp**: glibc answers ``clock_gettime``,
  ``gettimeofday`` and ``time`` in user space without a syscall, so only programs that
  make the real syscall (``syscall(SYS_clock_gettime, ...)``, static binaries without
  vDSO use, some language runtimes) see the fake clock. Opt-in, for reproducible tests.
  Clock ids are validated like the kernel's ``clockid_to_kclock``: unknown ids fail with
  ``EINVAL`` (the alarm clocks too when this machine has no RTC for them); negative ids
  (CPU clocks of a pid or thread, dynamic clocks) name no wall time and are CONTINUEd on
  the id register alone, so the kernel checks and answers them.
* :class:`RandomHandler` (``random``): ``getrandom`` fills the buffer from SHAKE-256 of
  ``seed`` and a call counter: the same seed gives the same bytes in the same order.
  ``/dev/urandom`` reads are not affected. Never use it for anything secret.

These calls return results through an output buffer in target memory, so the handlers
write it (:func:`.target.write_memory`: the target's own output buffer, ID_VALID checked
before and after, the same window the kernel's own copy-out has). Results that fit a
register (``time`` without a pointer) need no write at all.
"""
from __future__ import annotations

import errno
import hashlib
import os
import struct
import threading
import time
from functools import cache

from ..kernel import abi
from ..supervisor import Reply
from .base import ENOSYS, Handler
from .target import signed32, write_memory

EPERM = Reply.errno(errno.EPERM)
_UTS_FIELD = 65
_UTS_FIELDS = ("sysname", "nodename", "release", "version", "machine", "domainname")
_OLD_UTS_LEN = 8                 # struct oldold_utsname: char field[9]
_CLOCKS = frozenset((0, 1, 2, 3, 4, 5, 6, 7, 11))    # REALTIME … BOOTTIME, TAI (10 was SGI_CYCLE)
_ALARM_CLOCKS = (8, 9)                                 # REALTIME_ALARM, BOOTTIME_ALARM: need an RTC
_TIMESPEC = struct.Struct("=qq")
_MAX_RANDOM = 1 << 16


class IdentityHandler(Handler):
    """Fake ``uname`` fields (``nodename`` is the hostname); refuse hostname changes."""

    name = "identity"
    syscalls = ("uname", "olduname", "oldolduname", "sethostname", "setdomainname")

    def __init__(self, *, hostname: str | None = None, domainname: str | None = None, sysname: str | None = None,
                 release: str | None = None, version: str | None = None, machine: str | None = None):
        given = {"nodename": hostname, "domainname": domainname, "sysname": sysname, "release": release,
                 "version": version, "machine": machine}
        for key, value in given.items():
            if value is not None and len(value.encode()) >= _UTS_FIELD:
                raise ValueError(f"{key} longer than {_UTS_FIELD - 1} bytes")
        self.fields = {k: v for k, v in given.items() if v is not None}

    def utsname(self) -> bytes:
        """The 390-byte ``struct utsname`` the target gets."""
        real = os.uname()
        values = {name: getattr(real, name, "") for name in _UTS_FIELDS[:5]}
        values["domainname"] = _read("/proc/sys/kernel/domainname", "(none)")
        values.update(self.fields)
        return b"".join(values[f].encode()[:_UTS_FIELD - 1].ljust(_UTS_FIELD, b"\0") for f in _UTS_FIELDS)

    def handle(self, n):
        if n.syscall in ("sethostname", "setdomainname"):
            return EPERM
        uts = self.utsname()
        if n.syscall == "olduname":                        # struct old_utsname: no domainname
            uts = uts[:5 * _UTS_FIELD]
        elif n.syscall == "oldolduname":
            uts = b"".join(uts[i * _UTS_FIELD:i * _UTS_FIELD + _OLD_UTS_LEN] + b"\0" for i in range(5))
        write_memory(n, n.args[0], uts)
        return Reply.value(0)


def _read(path: str, default: str) -> str:
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return default


class TimeHandler(Handler):
    """A deterministic clock: ``start`` (Unix seconds) plus ``step`` seconds per call.

    Monotonic and CPU clocks count from ``monotonic_start`` with the same steps.
    """

    name = "time"
    syscalls = ("clock_gettime", "gettimeofday", "time")

    def __init__(self, start: float = 1_700_000_000.0, step: float = 0.001, monotonic_start: float = 1000.0):
        self.start, self.step, self.monotonic_start = start, step, monotonic_start
        self._calls = 0
        self._lock = threading.Lock()

    def _now_ns(self, realtime: bool) -> int:
        with self._lock:
            k = self._calls
            self._calls += 1
        base = self.start if realtime else self.monotonic_start
        return round(base * 1e9) + round(k * self.step * 1e9)

    def handle(self, n):
        a = n.args
        if n.arch != abi.native_arch():
            return ENOSYS        # 32-bit compat layouts of timespec/timeval differ
        if n.syscall == "clock_gettime":
            clock = signed32(a[0])
            if clock < 0:
                return Reply.continue_()     # a pid's or thread's CPU clock: the kernel checks the id
            if clock not in _CLOCKS and not (clock in _ALARM_CLOCKS and _alarm_clocks()):
                return Reply.errno(errno.EINVAL)
            ns = self._now_ns(clock in (0, 5, 8, 11))      # REALTIME(_COARSE), _ALARM, TAI
            write_memory(n, a[1], _TIMESPEC.pack(*divmod(ns, 10**9)))
            return Reply.value(0)
        ns = self._now_ns(True)
        if n.syscall == "gettimeofday":
            sec, rest = divmod(ns, 10**9)
            if a[0]:
                write_memory(n, a[0], _TIMESPEC.pack(sec, rest // 1000))
            if a[1]:
                write_memory(n, a[1], bytes(8))      # struct timezone: UTC, no DST
            return Reply.value(0)
        sec = ns // 10**9
        if a[0]:
            write_memory(n, a[0], struct.pack("=q", sec))
        return Reply.value(sec)


@cache
def _alarm_clocks() -> bool:
    """Does this kernel answer the alarm clocks (they need an RTC device)?"""
    try:
        time.clock_gettime(8)
        return True
    except OSError:
        return False


class RandomHandler(Handler):
    """``getrandom`` from a seeded SHAKE-256 stream (one block per call, deterministic)."""

    name = "random"
    syscalls = ("getrandom",)

    def __init__(self, seed: str | bytes | int = 0):
        self.seed = seed if isinstance(seed, bytes) else str(seed).encode()
        self._calls = 0
        self._lock = threading.Lock()

    def handle(self, n):
        buf, length, flags = n.args[0], n.args[1], n.args[2] & 0xFFFFFFFF
        if flags & ~0x7:                                  # GRND_NONBLOCK | GRND_RANDOM | GRND_INSECURE
            return Reply.errno(errno.EINVAL)
        length = min(length, _MAX_RANDOM)
        with self._lock:
            k = self._calls
            self._calls += 1
        data = hashlib.shake_256(self.seed + b"/" + str(k).encode()).digest(length) if length else b""
        write_memory(n, buf, data)
        return Reply.value(length)
