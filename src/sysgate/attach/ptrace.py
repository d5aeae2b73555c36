"""A small ctypes binding of ptrace(2) for stopping one thread and running code in it.

Only what :mod:`sysgate.attach.inject` needs: PTRACE_SEIZE / INTERRUPT / SINGLESTEP /
CONT / DETACH / GETSIGINFO / SECCOMP_GET_FILTER, register sets through
PTRACE_GETREGSET / SETREGSET (the one interface every architecture has),
``waitpid(__WALL)`` decoded into a :class:`Stop`, and target memory through
``/proc/…/mem`` (which, for a tracer, can also write read-only pages and needs
no word-at-a-time PEEK/POKE).

All requests must come from the thread that seized the tracee. Failures raise
``OSError`` with the kernel's errno; callers turn them into user-facing errors.
"""
from __future__ import annotations

import ctypes
import errno
import os
import signal
from dataclasses import dataclass

from ..kernel.calls import IoVec

PTRACE_CONT = 7
PTRACE_SINGLESTEP = 9
PTRACE_DETACH = 17
PTRACE_GETSIGINFO = 0x4202
PTRACE_GETREGSET = 0x4204
PTRACE_SETREGSET = 0x4205
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_SECCOMP_GET_FILTER = 0x420C

PTRACE_EVENT_STOP = 128
NT_PRSTATUS = 1
WALL = 0x40000000  # __WALL: wait for clone children (threads) too

_libc = ctypes.CDLL(None, use_errno=True)
_ptrace = _libc.ptrace
_ptrace.restype = ctypes.c_long
_ptrace.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]


def ptrace(request: int, tid: int, addr: int = 0, data: int = 0) -> int:
    """Raw ptrace(2) for requests that return 0 or a value (not PEEK*)."""
    ret = _ptrace(request, tid, addr, data)
    if ret == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


def seize(tid: int, options: int = 0) -> None:
    """Become the tracer of thread ``tid`` without stopping it."""
    ptrace(PTRACE_SEIZE, tid, 0, options)


def interrupt(tid: int) -> None:
    """Ask a seized thread to stop; it reports a PTRACE_EVENT_STOP."""
    ptrace(PTRACE_INTERRUPT, tid)


def cont(tid: int, sig: int = 0) -> None:
    ptrace(PTRACE_CONT, tid, 0, sig)


def singlestep(tid: int, sig: int = 0) -> None:
    ptrace(PTRACE_SINGLESTEP, tid, 0, sig)


def detach(tid: int, sig: int = 0) -> None:
    """Let the thread go; ``sig`` is delivered if it stopped for a signal."""
    ptrace(PTRACE_DETACH, tid, 0, sig)


def get_regset(tid: int, note: int = NT_PRSTATUS, size: int = 1024) -> bytes:
    """Read register set ``note``; the length of the result tells its layout (and the tracee's ABI)."""
    buf = ctypes.create_string_buffer(size)
    iov = IoVec(ctypes.cast(buf, ctypes.c_void_p), size)
    ptrace(PTRACE_GETREGSET, tid, note, ctypes.addressof(iov))
    return buf.raw[:iov.len]


def set_regset(tid: int, data: bytes, note: int = NT_PRSTATUS) -> None:
    buf = ctypes.create_string_buffer(data, len(data))
    iov = IoVec(ctypes.cast(buf, ctypes.c_void_p), len(data))
    ptrace(PTRACE_SETREGSET, tid, note, ctypes.addressof(iov))


def seccomp_filters(tid: int) -> list[bytes]:
    """The thread's seccomp filters as packed BPF, newest first (needs CAP_SYS_ADMIN; the thread stopped).

    The kernel numbers them the other way: PTRACE_SECCOMP_GET_FILTER index 0 is the
    *oldest* filter (get_nth_filter() walks ``count - index - 1`` links back from the
    newest), whatever ptrace(2) says; tests/test_attach.py checks this on the running kernel.
    """
    filters = []
    while True:
        try:
            count = ptrace(PTRACE_SECCOMP_GET_FILTER, tid, len(filters), 0)
        except OSError as exc:
            if exc.errno == errno.ENOENT:  # no filter at that index
                return filters[::-1]
            raise
        buf = ctypes.create_string_buffer(count * 8)
        ptrace(PTRACE_SECCOMP_GET_FILTER, tid, len(filters), ctypes.addressof(buf))
        filters.append(buf.raw)


def siginfo_code(tid: int) -> tuple[int, int]:
    """(si_signo, si_code) of the signal a thread is stopped for."""
    buf = ctypes.create_string_buffer(128)
    ptrace(PTRACE_GETSIGINFO, tid, 0, ctypes.addressof(buf))
    signo, _errno, code = (int.from_bytes(buf.raw[i:i + 4], "little", signed=True) for i in (0, 4, 8))
    return signo, code


@dataclass(frozen=True)
class Stop:
    """What ``waitpid`` reported for a traced thread."""

    status: int

    @property
    def exited(self) -> bool:
        """The thread is gone (exited or killed); nothing more will be reported."""
        return os.WIFEXITED(self.status) or os.WIFSIGNALED(self.status)

    @property
    def signal(self) -> int:
        """The stop signal (SIGTRAP for traps and PTRACE_INTERRUPT), 0 if not stopped."""
        return os.WSTOPSIG(self.status) if os.WIFSTOPPED(self.status) else 0

    @property
    def event(self) -> int:
        """PTRACE_EVENT_* of an event stop, 0 for a signal-delivery stop."""
        return (self.status >> 16) & 0xFF if os.WIFSTOPPED(self.status) else 0

    @property
    def is_group_stop(self) -> bool:
        return self.event == PTRACE_EVENT_STOP and self.signal != signal.SIGTRAP

    @property
    def is_interrupt(self) -> bool:
        return self.event == PTRACE_EVENT_STOP and self.signal == signal.SIGTRAP

    @property
    def is_signal_delivery(self) -> bool:
        """Stopped because a signal is about to be delivered (the tracer may suppress it)."""
        return os.WIFSTOPPED(self.status) and self.event == 0

    def describe(self) -> str:
        if os.WIFEXITED(self.status):
            return f"exited with status {os.WEXITSTATUS(self.status)}"
        if os.WIFSIGNALED(self.status):
            return f"was killed by {signal_name(os.WTERMSIG(self.status))}"
        return f"stopped by {signal_name(self.signal)} (event {self.event})"


def signal_name(sig: int) -> str:
    """``SIGTERM``, or ``signal 35`` for numbers without a name (real-time signals)."""
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def wait(tid: int) -> Stop:
    """Block until traced thread ``tid`` changes state."""
    _pid, status = os.waitpid(tid, WALL)
    return Stop(status)


class Memory:
    """Read and write another process's memory through its /proc/…/mem file (tracer rights needed)."""

    def __init__(self, path: str):
        self._fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)

    def read(self, address: int, length: int) -> bytes:
        data = os.pread(self._fd, length, address)
        if len(data) != length:
            raise OSError(5, f"short read of target memory at 0x{address:x}")
        return data

    def write(self, address: int, data: bytes) -> None:
        if os.pwrite(self._fd, data, address) != len(data):
            raise OSError(5, f"short write of target memory at 0x{address:x}")

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "Memory":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
