"""Run system calls inside a stopped thread of another process (ptrace code injection).

:class:`Injection` stops one thread with PTRACE_SEIZE + PTRACE_INTERRUPT, saves its
registers, and makes it execute single-stepped system calls at an existing
``syscall`` instruction (the one it was interrupted after, else one in the vDSO or
any executable mapping). Scratch data goes on its stack below the red zone. On
release every register and scratch byte is put back and the thread is detached
at a signal stop, so an interrupted ``read``/``nanosleep``… is restarted by the
kernel exactly as it would have been without us; signals that arrived meanwhile
are held back and delivered on release.

Architecture specifics (register layout, calling convention, the system-call
instruction, the red zone) live in one class per architecture (:data:`ARCHES`);
only x86_64 is implemented.
"""
from __future__ import annotations

import errno
import mmap
import os
import select
import signal
import struct
import time

from . import ptrace
from ..arch import syscalls, table
from ..errors import SysgateError, UnsupportedError
from ..kernel import notify

SYS_SECCOMP = 1  # si_code of a SIGSYS raised by SECCOMP_RET_TRAP
STOP_TIMEOUT = 10.0


class Refused(SysgateError):
    """A call was not made because :attr:`Injection.vet` found it would be fatal to the target."""


class SeizeError(SysgateError):
    """PTRACE_SEIZE was refused; ``errno`` says why (EPERM: not permitted or already traced)."""

    def __init__(self, err: int, message: str):
        self.errno = err
        super().__init__(message)


def _foreign_regsets(arch: str, size: int) -> dict[int, str]:
    """NT_PRSTATUS size -> ABI description, for the compat ABIs of ``arch`` (architecture table)
    whose register set differs from the native one (``size`` bytes): how a refusal names them."""
    return {other.regset_size: f"{other.name} ({other.long_bits}-bit)"
            for other in map(table.get, table.get(arch).compat)
            if other.regset_size and other.regset_size != size}


class X86_64:
    """x86_64 registers (``struct user_regs_struct``) and system-call conventions."""

    name = "x86_64"
    registers = ("r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx",
                 "rdx", "rsi", "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base",
                 "gs_base", "ds", "es", "fs", "gs")
    layout = struct.Struct("<27Q")
    arguments = ("rdi", "rsi", "rdx", "r10", "r8", "r9")
    syscall_insn = b"\x0f\x05"
    insn_align = 1
    red_zone = 128
    #: NT_PRSTATUS sizes of other ABIs this kernel can run, for a clear refusal.
    foreign_regsets = _foreign_regsets(name, layout.size)

    def decode(self, raw: bytes) -> dict[str, int]:
        return dict(zip(self.registers, self.layout.unpack(raw)))

    def encode(self, regs: dict[str, int]) -> bytes:
        return self.layout.pack(*(regs[name] & 0xFFFFFFFFFFFFFFFF for name in self.registers))

    def pc(self, regs: dict[str, int]) -> int:
        return regs["rip"]

    def sp(self, regs: dict[str, int]) -> int:
        return regs["rsp"]

    def syscall_in_progress(self, regs: dict[str, int]) -> bool:
        """The thread stopped on its way out of a system call (which may be restarted)."""
        return _signed(regs["orig_rax"]) >= 0

    def call_regs(self, saved: dict[str, int], site: int, nr: int, args: tuple[int, ...]) -> dict[str, int]:
        """Registers that make the thread execute ``syscall`` at ``site`` as system call ``nr``."""
        regs = dict(saved, rip=site, rax=nr, orig_rax=-1)  # orig_rax -1: nothing to restart
        for name, value in zip(self.arguments, args + (0,) * (6 - len(args))):
            regs[name] = value
        return regs

    def result(self, regs: dict[str, int]) -> int:
        return _signed(regs["rax"])


#: Architectures ``attach`` can inject into, by sysgate's arch name (a subset of the
#: architecture table's; each needs its class of registers and conventions above).
ARCHES = {arch.name: arch for arch in (X86_64(),)}


def _signed(value: int) -> int:
    return value - (1 << 64) if value & (1 << 63) else value


def _executable_mappings(task: str) -> list[tuple[int, int, str]]:
    """(start, end, name) of the readable executable mappings of /proc ``task``, the vDSO first."""
    found = [(start, end, name) for start, end, perms, name in _maps(task) if perms.startswith("r") and "x" in perms]
    return sorted(found, key=lambda m: m[2] != "[vdso]")


def _maps(task: str) -> list[tuple[int, int, str, str]]:
    """(start, end, perms, name) of every mapping of /proc ``task``."""
    found = []
    with open(f"{task}/maps") as f:
        for line in f:
            parts = line.split(maxsplit=5)
            start, end = (int(x, 16) for x in parts[0].split("-"))
            found.append((start, end, parts[1], parts[5].strip() if len(parts) > 5 else ""))
    return found


def private_stack_below(task: str, sp: int) -> int:
    """Lowest address below ``sp`` that only this thread uses, or ``sp`` when that is unknown.

    True of the main thread's ``[stack]`` and of a thread stack with a guard mapping
    (``---p``) right below it, as glibc allocates them. Other stacks (green threads,
    goroutines, stacks on the heap) may share their mapping with live data.
    """
    maps = _maps(task)
    for start, end, _perms, name in maps:
        if start < sp <= end:
            guarded = any(e == start and p.startswith("---") for _s, e, p, _n in maps)
            return start if name == "[stack]" or guarded else sp
    return sp


class Injection:
    """One stopped thread of the target, made to run system calls for us.

    Use as a context manager: entering stops the thread and saves its
    registers, leaving restores every register and scratch byte and lets it go.
    """

    def __init__(self, pid: int, tid: int, arch: X86_64, name: str = ""):
        self.pid, self.tid, self.arch = pid, tid, arch
        self.name = name or f"process {pid}"
        self.task = f"/proc/{pid}/task/{tid}"  # per-thread views work even when the leader has exited
        self.memory: ptrace.Memory | None = None
        self.saved_raw = b""
        self.saved: dict[str, int] = {}
        self.site = 0
        self._scratch: list[tuple[int, bytes]] = []   # (address, original bytes) on the stack
        self._mappings: list[tuple[int, int]] = []    # (address, size) made by mmap()
        self._held_signals: list[int] = []
        self.pending: list[notify.RawNotification] = []  #: other threads' notifications received meanwhile
        self._last_stop: ptrace.Stop | None = None
        self._seized = False
        #: ``vet(name, args, ip)`` -> why the call would be fatal (e.g. a seccomp kill), or None.
        self.vet = None

    # -- stopping and releasing
    def __enter__(self) -> "Injection":
        try:
            self._stop_thread()
            self.saved_raw = ptrace.get_regset(self.tid)
            self._check_regset(self.saved_raw)
            self.saved = self.arch.decode(self.saved_raw)
            self.memory = ptrace.Memory(f"{self.task}/mem")
            self.site = self._find_syscall_site()
        except BaseException:
            self._release()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        problems = self._release()
        if problems:
            message = f"process {self.pid}: thread {self.tid} could not be restored exactly ({'; '.join(problems)})"
            raise SysgateError(f"{exc}; {message}" if exc is not None else message)

    def _stop_thread(self) -> None:
        try:
            ptrace.seize(self.tid)
        except OSError as exc:
            if exc.errno == errno.ESRCH:
                raise SysgateError(f"{self.name} exited") from None
            raise SeizeError(exc.errno, f"cannot ptrace {self.name}: {exc.strerror}") from None
        self._seized = True
        ptrace.interrupt(self.tid)
        while True:
            stop = self._wait()
            if stop.is_interrupt:
                return
            if stop.is_group_stop:
                raise SysgateError(f"{self.name} was stopped by {ptrace.signal_name(stop.signal)} "
                                   f"while sysgate attached; resume it and retry")
            # a signal arrived before our stop: deliver it untouched, the stop is still pending
            ptrace.cont(self.tid, stop.signal)

    def _wait(self, listener: int | None = None) -> ptrace.Stop:
        """The thread's next stop. Meanwhile notifications on ``listener`` are dealt with (see call)."""
        deadline = time.monotonic() + STOP_TIMEOUT
        delay = 0.0005
        poller = select.poll()
        if listener is not None:
            poller.register(listener, select.POLLIN)
        while True:
            pid, status = os.waitpid(self.tid, ptrace.WALL | os.WNOHANG)
            if pid:
                stop = ptrace.Stop(status)
                self._last_stop = stop
                if stop.exited:
                    self._seized = False
                    raise SysgateError(f"process {self.pid}: thread {self.tid} {stop.describe()} during attach")
                return stop
            if time.monotonic() > deadline:
                raise SysgateError(f"process {self.pid}: thread {self.tid} did not stop within "
                                   f"{STOP_TIMEOUT:.0f} s (uninterruptible sleep?)")
            if poller.poll(delay * 1000):
                self._take_notification(listener)
            delay = min(delay * 2, 0.01)

    def _take_notification(self, listener: int) -> None:
        """Our own injected syscall was notified: let it run. Others are kept for the supervisor."""
        try:
            n = notify.recv(listener)
        except OSError:  # ENOENT: the caller is gone or was interrupted
            return
        if n.pid == self.tid:
            notify.try_continue(listener, n.id)
        else:
            self.pending.append(n)

    def _release(self) -> list[str]:
        """Put back the scratch bytes and the registers, detach; returns what could not be restored."""
        problems = []
        if self._mappings and self._seized:  # failed before the caller freed them
            try:
                problems += self.free_scratch()
            except SysgateError as exc:
                problems.append(str(exc))
        if self.memory is not None:
            for address, original in reversed(self._scratch):
                try:
                    self.memory.write(address, original)
                except OSError as exc:
                    problems.append(f"stack bytes at 0x{address:x}: {exc.strerror}")
            self.memory.close()
            self.memory = None
        if self._seized and self.saved_raw:
            try:
                ptrace.set_regset(self.tid, self.saved_raw)
            except OSError as exc:
                problems.append(f"registers: {exc.strerror}")
        if self._seized:
            self._detach()
        return problems

    def _detach(self) -> None:
        """Let the thread go, delivering the signals held back during the injection."""
        held = list(dict.fromkeys(self._held_signals))
        first = held.pop(0) if held and self._last_stop and self._last_stop.is_signal_delivery else 0
        try:
            ptrace.detach(self.tid, first)
        except OSError:
            pass  # the thread died meanwhile
        self._seized = False
        for sig in held:
            os.kill(self.pid, sig)

    def _check_regset(self, raw: bytes) -> None:
        if len(raw) != self.arch.layout.size:
            kind = self.arch.foreign_regsets.get(len(raw), f"a {len(raw)}-byte register set")
            raise UnsupportedError(f"process {self.pid}: thread {self.tid} runs {kind} code; "
                                   f"sysgate attach supports {self.arch.name} threads only")

    # -- where to run and what to write
    def _find_syscall_site(self) -> int:
        """Address of a system-call instruction: the one just executed, else one in the vDSO or any text."""
        insn = self.arch.syscall_insn
        if self.arch.syscall_in_progress(self.saved):
            candidate = self.arch.pc(self.saved) - len(insn)
            if self.memory.read(candidate, len(insn)) == insn:
                return candidate
        for start, end, _name in _executable_mappings(self.task):
            try:
                text = self.memory.read(start, end - start)
            except OSError:
                continue
            offset = text.find(insn)
            while offset >= 0 and (start + offset) % self.arch.insn_align:
                offset = text.find(insn, offset + 1)
            if offset >= 0:
                return start + offset
        raise SysgateError(f"process {self.pid}: no system-call instruction found in its executable mappings")

    def write_scratch(self, data: bytes) -> int:
        """Put ``data`` where the target can read it; returns its address.

        On the thread's own stack below the red zone when that memory is private to the
        thread (the original bytes are put back on release), else in a fresh anonymous
        mapping made with an injected mmap() (to be removed with :meth:`free_scratch`).
        """
        sp = self.arch.sp(self.saved)
        address = (sp - self.arch.red_zone - len(data)) & ~15
        if address >= private_stack_below(self.task, sp):
            self._scratch.append((address, self.memory.read(address, len(data))))
        else:
            size = (len(data) + 4095) & ~4095
            address = self.call("mmap", 0, size, mmap.PROT_READ | mmap.PROT_WRITE,
                                mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
            if address < 0:
                raise SysgateError(f"{self.name}: mmap() of {size} scratch bytes failed: {os.strerror(-address)}")
            self._mappings.append((address, size))
        self.memory.write(address, data)
        return address

    def free_scratch(self, listener: int | None = None) -> list[str]:
        """munmap() the scratch mappings (under the new filter: see :meth:`call`); returns failures."""
        failed = []
        while self._mappings:
            address, size = self._mappings.pop()
            try:
                result = self.call("munmap", address, size, listener=listener)
            except Refused as exc:
                failed.append(f"{exc}; the {size}-byte scratch mapping at 0x{address:x} stays in the target")
                continue
            if result != 0:
                failed.append(f"munmap() of the {size}-byte scratch mapping at 0x{address:x} failed "
                              f"({os.strerror(-result)}); it stays in the target")
        return failed

    # -- running a system call
    def call(self, name: str, *args: int, listener: int | None = None) -> int:
        """Run system call ``name`` in the stopped thread; returns its raw result (-errno on failure).

        Once the new filter is in force it applies to these calls too: pass its ``listener`` so
        a notified call is let through (CONTINUE) instead of waiting for a reply that never comes.
        Notifications of other threads received meanwhile go to :attr:`pending`; a SIGSYS the
        filter raises for our own call is dropped, other signals are held until release.
        Raises :class:`Refused` when :attr:`vet` objects to the call.
        """
        done = self.site + len(self.arch.syscall_insn)
        fatal = self.vet(name, args, done) if self.vet else None
        if fatal:
            raise Refused(f"{self.name}: sysgate did not call {name}() in it: {fatal}")
        regs = self.arch.call_regs(self.saved, self.site, syscalls.number(self.arch.name, name), args)
        ptrace.set_regset(self.tid, self.arch.encode(regs))
        while True:
            ptrace.singlestep(self.tid)
            stop = self._wait(listener)
            if stop.is_signal_delivery and stop.signal == signal.SIGTRAP:
                after = self.arch.decode(ptrace.get_regset(self.tid))
                if self.arch.pc(after) == done:
                    return self.arch.result(after)
            if stop.is_signal_delivery and stop.signal == signal.SIGSYS \
                    and ptrace.siginfo_code(self.tid) == (signal.SIGSYS, SYS_SECCOMP):
                return -errno.ENOSYS  # SECCOMP_RET_TRAP for our call: it did not run
            if stop.is_signal_delivery:
                self._held_signals.append(stop.signal)  # held back until the registers are restored
            # group stops and stray traps: keep stepping (the kernel re-stops a stopped group on detach)
