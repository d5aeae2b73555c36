"""Install a seccomp filter into an already running process by ptrace injection.

One thread of the target (the thread-group leader unless it has exited) is
stopped with PTRACE_SEIZE + PTRACE_INTERRUPT and made to run, one
single-stepped ``syscall`` instruction at a time::

    prctl(PR_SET_NO_NEW_PRIVS, 1)
    seccomp(SECCOMP_SET_MODE_FILTER, TSYNC [| NEW_LISTENER | TSYNC_ESRCH], &prog)
    close(listener)          # after sysgate took its own copy with pidfd_getfd

TSYNC gives every thread of the process the filter (and no_new_privs) at once,
threads blocked in system calls included; the kernel refuses atomically when a
thread's filter chain has diverged, so nothing half-installed is left behind.
The ``struct sock_fprog`` and the program are written on the thread's stack
below the red zone; those bytes and every register are put back exactly
before the thread is released. A thread that was inside an interruptible
system call (``read``, ``nanosleep``…) is released at the same kind of stop it
was interrupted at, so the kernel restarts that call just as it would have
without sysgate. Signals that arrive during the injection are held back and
delivered on release.

The architecture-specific part (register layout, syscall numbers and
instruction, red zone) lives in one class per architecture; only x86_64 is
implemented (see :data:`ARCHES`).
"""
from __future__ import annotations

import errno
import os
import select
import signal
import struct
import time
from dataclasses import dataclass, field

from . import ptrace, syscalls
from .bpf import insn as bpf
from .errors import SysgateError, UnsupportedError
from .install import TsyncError, filter_flags, install_error, program_bytes
from .kernel import abi, notify
from .kernel import sys as ksys

PF_KTHREAD = 0x00200000
SYS_SECCOMP = 1  # si_code of a SIGSYS raised by SECCOMP_RET_TRAP
PIDFD_THREAD = os.O_EXCL  # pidfd_open() flag: a pidfd for one thread
STOP_TIMEOUT = 10.0
_FPROG = struct.Struct("=HxxxxxxQ")  # struct sock_fprog on a 64-bit target
_ERESTART = {-512: "ERESTARTSYS", -513: "ERESTARTNOINTR", -514: "ERESTARTNOHAND", -516: "ERESTART_RESTARTBLOCK"}


class X86_64:
    """x86_64 registers (``struct user_regs_struct``) and system-call conventions."""

    name = "x86_64"
    elf = (2, 62)  # ELFCLASS64, EM_X86_64
    registers = ("r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx",
                 "rdx", "rsi", "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base",
                 "gs_base", "ds", "es", "fs", "gs")
    layout = struct.Struct("<27Q")
    arguments = ("rdi", "rsi", "rdx", "r10", "r8", "r9")
    syscall_insn = b"\x0f\x05"
    insn_align = 1
    red_zone = 128
    #: NT_PRSTATUS sizes of other ABIs this kernel can run, for a clear refusal.
    foreign_regsets = {68: "i386 (32-bit)"}

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


#: Architectures ``attach`` can inject into, by sysgate's arch name.
ARCHES = {"x86_64": X86_64()}


def _signed(value: int) -> int:
    return value - (1 << 64) if value & (1 << 63) else value


@dataclass
class AttachedTarget:
    """A process that now runs under the attached filter.

    ``pidfd`` refers to the process; ``listener_fd`` is sysgate's copy of the
    filter's notification fd (None without a listener); ``group`` is the stored
    filter's group (for the supervisor), ``warnings`` what went less than perfectly,
    ``pending`` notifications already received from the listener during the attach
    (the supervisor must answer them first, e.g. ``add_listener(fd, pending=...)``).
    Both fds are owned by this object: :meth:`close` (or ``with``) releases them.
    """

    pid: int
    pidfd: int
    listener_fd: int | None
    group: str = ""
    warnings: list[str] = field(default_factory=list)
    pending: list[notify.RawNotification] = field(default_factory=list)

    def close(self) -> None:
        if self.listener_fd is not None:
            os.close(self.listener_fd)
            self.listener_fd = None
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1

    def __enter__(self) -> "AttachedTarget":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --- looking at the target before touching it ---------------------------------
def _proc_status(path: str) -> dict[str, str]:
    with open(path) as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def _stat_fields(path: str) -> list[str]:
    """Fields of /proc/…/stat from field 3 (state) on; the command name may contain spaces."""
    with open(path) as f:
        text = f.read()
    return text[text.rindex(")") + 2:].split()


def _process_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def _exe_abi(task: str, pid: int) -> tuple[int, int]:
    """(ELF class, e_machine) of the executable of /proc ``task`` (a thread of ``pid``)."""
    with open(f"{task}/exe", "rb") as f:
        header = f.read(20)
    if header[:4] != b"\x7fELF" or len(header) < 20:
        raise UnsupportedError(f"process {pid}: its executable is not an ELF file")
    byteorder = "little" if header[5] == 1 else "big"
    return header[4], int.from_bytes(header[18:20], byteorder)


def _abi_name(elf_class: int, machine: int) -> str:
    known = {(2, 62): "x86_64", (1, 62): "x32", (1, 3): "i386", (2, 183): "aarch64", (1, 40): "arm",
             (2, 243): "riscv64"}
    return known.get((elf_class, machine), f"ELF class {elf_class}, machine {machine}")


def permission_hint(pid: int) -> str:
    """Why ptrace is probably refused, and what to do about it."""
    try:
        with open("/proc/sys/kernel/yama/ptrace_scope") as f:
            scope = int(f.read())
    except (OSError, ValueError):
        scope = 0
    if scope >= 3:
        return "Yama ptrace_scope is 3: no process may be traced until reboot"
    if scope == 2:
        return "Yama ptrace_scope is 2: only a process with CAP_SYS_PTRACE may attach (run as root)"
    try:
        owner = os.stat(f"/proc/{pid}").st_uid
    except OSError:
        owner = -1
    if os.geteuid() != 0 and owner not in (-1, os.geteuid()):
        return f"the target runs as uid {owner} and you are uid {os.geteuid()}: run as root or as that user"
    if scope == 1 and os.geteuid() != 0:
        return ("Yama ptrace_scope is 1: only ancestors may attach; run as root or "
                "set `sysctl kernel.yama.ptrace_scope=0`")
    return ("sysgate lacks CAP_SYS_PTRACE over the target (a container without it, an LSM, or a "
            "non-dumpable target such as a setuid program); run as root on the host")


def _live_threads(pid: int) -> list[int]:
    """Threads of ``pid`` that are not zombies, the thread-group leader first."""
    try:
        tids = sorted((int(t) for t in os.listdir(f"/proc/{pid}/task")), key=lambda t: (t != pid, t))
    except FileNotFoundError:
        raise SysgateError(f"no process with PID {pid}") from None
    live = []
    for tid in tids:
        try:
            if _stat_fields(f"/proc/{pid}/task/{tid}/stat")[0] not in "ZX":
                live.append(tid)
        except (OSError, IndexError):
            continue
    return live


def _check_one_filter_chain(name: str, pid: int, threads: list[int]) -> None:
    """TSYNC needs every thread on the same filter chain; refuse early when the counts already differ."""
    counts = {}
    for tid in threads:
        try:
            counts[tid] = int(_proc_status(f"/proc/{pid}/task/{tid}/status").get("Seccomp_filters", "0"))
        except (OSError, ValueError):
            continue
    if len(set(counts.values())) > 1:
        detail = ", ".join(f"thread {tid}: {n}" for tid, n in sorted(counts.items()))
        raise SysgateError(f"the threads of {name} have different seccomp filters ({detail}); one filter "
                           "can only be synchronised onto threads that share their filter chain")


def _check_not_traced(name: str, pid: int, tid: int) -> None:
    tracer = int(_proc_status(f"/proc/{pid}/task/{tid}/status").get("TracerPid", "0"))
    if tracer:
        raise SysgateError(f"{name} is already traced by process {tracer} ({_process_name(tracer)}); "
                           "a thread can have only one tracer: detach the debugger or strace first")


def check_target(pid: int) -> tuple[int, "X86_64"]:
    """Refuse targets ptrace injection cannot handle; return (thread to inject into, its arch).

    Raises SysgateError with the reason (and a hint) for: no such process,
    sysgate itself, kernel threads, zombies, stopped or already traced
    processes, seccomp strict mode, and unsupported architectures.
    """
    if pid <= 0:
        raise SysgateError(f"invalid PID {pid}")
    if pid == os.getpid():
        raise SysgateError("sysgate cannot attach to itself")
    name = f"process {pid} ({_process_name(pid)})"
    try:
        fields = _stat_fields(f"/proc/{pid}/stat")
        status = _proc_status(f"/proc/{pid}/status")
    except FileNotFoundError:
        raise SysgateError(f"no process with PID {pid}") from None
    if int(fields[6]) & PF_KTHREAD:
        raise SysgateError(f"{name} is a kernel thread; only user-space processes can be filtered")
    threads = _live_threads(pid)  # the leader may have exited while other threads run on
    if not threads:
        raise SysgateError(f"{name} is a zombie (it has exited and waits for its parent to reap it)")
    tid = threads[0]
    _check_not_traced(name, pid, tid)
    if _stat_fields(f"/proc/{pid}/task/{tid}/stat")[0] in "Tt":
        raise SysgateError(f"{name} is stopped; resume it first (kill -CONT {pid})")
    if status.get("Seccomp", "0").strip() == str(abi.SECCOMP_MODE_STRICT):
        raise SysgateError(f"{name} is in seccomp strict mode; it cannot install a filter")
    _check_one_filter_chain(name, pid, threads)
    try:
        elf_class, machine = _exe_abi(f"/proc/{pid}/task/{tid}", pid)
    except PermissionError:
        raise SysgateError(f"not permitted to inspect {name}: {permission_hint(pid)}") from None
    except FileNotFoundError:
        raise SysgateError(f"{name} has no executable (exited, or a kernel thread)") from None
    target_abi = _abi_name(elf_class, machine)
    arch = ARCHES.get(target_abi)
    if arch is None or target_abi != abi.native_arch():
        supported = ", ".join(a for a in ARCHES if a == abi.native_arch()) or "none on this machine"
        raise UnsupportedError(f"{name} runs {target_abi} code; sysgate attach supports: {supported}")
    return tid, arch


# --- the injection -------------------------------------------------------------
def _executable_mappings(task: str) -> list[tuple[int, int, str]]:
    """(start, end, name) of executable mappings of /proc ``task``, the vDSO first."""
    found = []
    with open(f"{task}/maps") as f:
        for line in f:
            parts = line.split(maxsplit=5)
            if len(parts) >= 2 and parts[1].startswith("r") and "x" in parts[1]:
                start, end = (int(x, 16) for x in parts[0].split("-"))
                found.append((start, end, parts[5].strip() if len(parts) > 5 else ""))
    return sorted(found, key=lambda m: m[2] != "[vdso]")


def _mapping_of(task: str, address: int) -> tuple[int, int]:
    with open(f"{task}/maps") as f:
        for line in f:
            start, end = (int(x, 16) for x in line.split(maxsplit=1)[0].split("-"))
            if start <= address < end:
                return start, end
    raise SysgateError(f"{task}: address 0x{address:x} is not mapped")


class Injection:
    """One stopped thread of the target, made to run system calls for us.

    Use as a context manager: entering stops the thread and saves its
    registers, leaving restores every register and scratch byte and lets it go.
    """

    def __init__(self, pid: int, tid: int, arch: X86_64):
        self.pid, self.tid, self.arch = pid, tid, arch
        self.task = f"/proc/{pid}/task/{tid}"  # per-thread views work even when the leader has exited
        self.memory: ptrace.Memory | None = None
        self.saved_raw = b""
        self.saved: dict[str, int] = {}
        self.site = 0
        self._scratch: list[tuple[int, bytes]] = []
        self._held_signals: list[int] = []
        self.pending: list[notify.RawNotification] = []  #: other threads' notifications received meanwhile
        self._last_stop: ptrace.Stop | None = None
        self._seized = False

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
        name = f"process {self.pid} ({_process_name(self.pid)})"
        try:
            ptrace.seize(self.tid)
        except OSError as exc:
            if exc.errno == errno.ESRCH:
                raise SysgateError(f"{name} exited") from None
            if exc.errno == errno.EPERM:
                _check_not_traced(name, self.pid, self.tid)
                raise SysgateError(f"ptrace is not permitted on {name}: {permission_hint(self.pid)}") from None
            raise SysgateError(f"cannot ptrace {name}: {exc.strerror}") from None
        self._seized = True
        ptrace.interrupt(self.tid)
        while True:
            stop = self._wait()
            if stop.is_interrupt:
                return
            if stop.is_group_stop:
                raise SysgateError(f"{name} was stopped by {signal.Signals(stop.signal).name} "
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
            notify.send_continue(listener, n.id)
        else:
            self.pending.append(n)

    def _release(self) -> list[str]:
        """Put back the scratch bytes and the registers, detach; returns what could not be restored."""
        problems = []
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
        """Put ``data`` on the stopped thread's stack below the red zone; returns its address."""
        sp = self.arch.sp(self.saved)
        address = (sp - self.arch.red_zone - len(data)) & ~15
        start, _end = _mapping_of(self.task, sp - 1)
        if address < start:
            raise SysgateError(f"process {self.pid}: not enough stack below the stack pointer of thread "
                               f"{self.tid} for a {len(data)}-byte filter")
        self._scratch.append((address, self.memory.read(address, len(data))))
        self.memory.write(address, data)
        return address

    # -- running a system call
    def call(self, name: str, *args: int, listener: int | None = None) -> int:
        """Run system call ``name`` in the stopped thread; returns its raw result (-errno on failure).

        Once the new filter is in force it applies to these calls too: pass its ``listener`` so
        a notified call is let through (CONTINUE) instead of waiting for a reply that never comes.
        Notifications of other threads received meanwhile go to :attr:`pending`; a SIGSYS the
        filter raises for our own call is dropped, other signals are held until release.
        """
        regs = self.arch.call_regs(self.saved, self.site, syscalls.number(self.arch.name, name), args)
        ptrace.set_regset(self.tid, self.arch.encode(regs))
        done = self.site + len(self.arch.syscall_insn)
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


def _seccomp_failure(result: int, pid: int, flags: int) -> SysgateError:
    """The user-facing error for a failed injected seccomp() that returned ``result``."""
    if result > 0 or -result == errno.ESRCH:  # ESRCH: TSYNC_ESRCH hid the thread
        return TsyncError(result if result > 0 else None,
                          f"it has a seccomp filter that the thread sysgate injected into (in process {pid}) "
                          "lacks; nothing was installed")
    err = install_error(OSError(-result, os.strerror(-result)), flags)
    hint = " (use --no-listener or a policy without notify rules)" if -result == errno.EBUSY else ""
    return SysgateError(f"process {pid}: {err}{hint}")


def attach(pid: int, program, *, listener: bool = True, **options) -> AttachedTarget:
    """Install ``program`` on every thread of process ``pid``.

    ``program`` is a stored :class:`~sysgate.filter.Filter` (its flags and group are
    used) or anything :func:`sysgate.install.program_bytes` takes (packed BPF,
    ``list[Insn]``, a compiled program, a Policy). ``options`` are further filter
    flags (``log``, ``spec_allow``, ``wait_killable_recv``). With ``listener``
    (needed for notify rules) the filter gets a notification fd, which is copied
    into this process with pidfd_getfd and closed in the target. Raises
    SysgateError when the target cannot be attached to; it then runs on as before
    (except that no_new_privs may already be set on one thread).
    """
    from .filter import Filter

    group = ""
    if isinstance(program, Filter):
        options = {**program.flags, **options}
        group, program = program.group, program.program
    if not listener:
        options.pop("wait_killable_recv", None)
    raw = program_bytes(program)
    flags = filter_flags(tsync=True, new_listener=listener, **options)
    tid, arch = check_target(pid)
    try:
        pidfd = ksys.pidfd_open(pid)
    except ProcessLookupError:
        raise SysgateError(f"no process with PID {pid}") from None
    target = AttachedTarget(pid, pidfd, None, group)
    fd_source = pidfd
    try:
        if listener and tid != pid:
            fd_source = _thread_pidfd(pid, tid)
        with Injection(pid, tid, arch) as inj:
            if _proc_status(f"/proc/{pid}/task/{tid}/status").get("NoNewPrivs", "0").strip() != "1":
                result = inj.call("prctl", abi.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
                if result != 0:
                    raise SysgateError(f"process {pid}: prctl(PR_SET_NO_NEW_PRIVS) failed: "
                                       f"{os.strerror(-result)}")
            scratch = inj.write_scratch(bytes(_FPROG.size) + raw)
            inj.memory.write(scratch, _FPROG.pack(len(raw) // abi.SOCK_FILTER.size, scratch + _FPROG.size))
            result = inj.call("seccomp", abi.SECCOMP_SET_MODE_FILTER, flags, scratch)
            if result < 0 or (result > 0 and not listener):
                raise _seccomp_failure(result, pid, flags)
            if listener:
                target.listener_fd = ksys.pidfd_getfd(fd_source, result)
                _close_in_target(inj, result, target)
                target.pending = inj.pending
    except BaseException:
        target.close()
        raise
    finally:
        if fd_source != pidfd:
            os.close(fd_source)
    return target


def _thread_pidfd(pid: int, tid: int) -> int:
    """A pidfd to take fds from thread ``tid`` when the thread-group leader (and its fd table) is gone."""
    try:
        return ksys.pidfd_open(tid, PIDFD_THREAD)
    except OSError as exc:
        raise UnsupportedError(f"process {pid}: its thread-group leader has exited; taking the listener "
                               f"from thread {tid} needs PIDFD_THREAD (Linux 6.9+): {exc.strerror}") from None


def _close_in_target(inj: Injection, fd: int, target: AttachedTarget) -> None:
    """Close the target's own copy of the listener (else it could answer its own notifications).

    The new filter already applies to this close(): a notified close is let through, one
    the filter refuses leaves the copy in place (with a warning), and a filter that kills
    on close() kills the target now rather than at its own next close().
    """
    result = inj.call("close", fd, listener=target.listener_fd)
    if result != 0:
        target.warnings.append(f"the filter refused close({fd}) in the target ({os.strerror(-result)}); "
                               f"the target keeps a copy of the listener as fd {fd}")
